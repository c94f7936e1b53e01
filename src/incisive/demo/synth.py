"""Synthetic cancer-imaging cohort: valid DICOM (CT, MR, MG, some US/SC) and a clinical CSV.

Every patient carries realistic, entirely fake PHI everywhere a hospital export has it: standard tags,
private tags, nested sequences, free-text descriptors and folder names. ``phi_manifest.json`` lists every
PHI string written, so tests can scan a node's bytes for any of them. A labelled subset (``lesion=1``) has
a bright, roughly spherical lesion in its pixel data that a small CNN can learn.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
MG_IMAGE = "1.2.840.10008.5.1.4.1.1.1.2"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
ROOT = "1.2.826.0.1.3680043.10.1234."  # synthetic org root, never a real hospital's

FIRST = [
    "Maria",
    "Jan",
    "Sofia",
    "Lukas",
    "Elena",
    "Pieter",
    "Anna",
    "Giorgos",
    "Laura",
    "Mateo",
    "Ines",
    "Johan",
    "Chiara",
    "Nikos",
    "Ewa",
    "Tomasz",
    "Ana",
    "Hugo",
    "Lea",
    "Marco",
]
LAST = [
    "Papadopoulos",
    "Jansen",
    "Rossi",
    "Kowalski",
    "Garcia",
    "Muller",
    "Dubois",
    "Silva",
    "Novak",
    "Andersson",
    "Costa",
    "Moreau",
    "Vlachou",
    "Bianchi",
    "Fischer",
    "Nowak",
    "Romero",
    "Lindqvist",
    "Ferreira",
    "Horvath",
]
STREETS = ("Kifisias Avenue", "Calle Mayor", "Via Roma", "Hauptstrasse", "Rue de Rivoli", "Kerkstraat")
CANCERS = ("breast", "lung", "prostate", "colorectal")
DIAGNOSES = {
    "breast": "invasive ductal carcinoma",
    "lung": "non-small cell lung cancer",
    "prostate": "prostate adenocarcinoma",
    "colorectal": "colorectal adenocarcinoma",
}


@dataclass(frozen=True)
class CohortSpec:
    patients: int = 20
    seed: int = 7
    size: int = 64
    ct_slices: int = 8
    mr_slices: int = 6


@dataclass
class FakePatient:
    name: str
    family: str
    given: str
    mrn: str
    birth: date
    sex: str
    address: str
    phone: str
    cancer: str
    lesion: bool
    folder: str


def _uid(rng: np.random.Generator) -> str:
    return ROOT + ".".join(str(int(x)) for x in rng.integers(1, 10**9, size=3))


def _patient(i: int, rng: np.random.Generator) -> FakePatient:
    given, family = str(rng.choice(FIRST)), str(rng.choice(LAST))
    cancer = str(rng.choice(CANCERS))
    sex = "F" if cancer == "breast" else ("M" if cancer == "prostate" else str(rng.choice(["F", "M"])))
    birth = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 50)))
    mrn = f"MRN{7000000 + i * 7919 % 1000000:07d}"
    return FakePatient(
        name=f"{family}^{given}",
        family=family,
        given=given,
        mrn=mrn,
        birth=birth,
        sex=sex,
        address=f"{int(rng.integers(1, 200))} {rng.choice(STREETS)}, {int(rng.integers(10000, 99999))}",
        phone=f"+30 210 {int(rng.integers(1000000, 9999999))}",
        cancer=cancer,
        lesion=bool(rng.random() < 0.45),
        folder=f"{family.upper()}_{given.upper()}_{mrn}",
    )


def _pixels(rng: np.random.Generator, size: int, lesion: bool, base: int, spread: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    body = ((yy - size / 2) ** 2 / (0.42 * size) ** 2 + (xx - size / 2) ** 2 / (0.38 * size) ** 2) < 1
    img = base + body * spread * 0.4 + rng.normal(0, spread * 0.05, (size, size))
    if lesion:
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        r = size * rng.uniform(0.06, 0.1)
        img += spread * 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    out: np.ndarray = np.clip(img, 0, 65535).astype(np.uint16)
    return out


def _base(p: FakePatient, study: dict[str, Any], sop_class: str, modality: str, rng: np.random.Generator) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.PatientName = p.name
    ds.PatientID = p.mrn
    ds.IssuerOfPatientID = "ATHENS GENERAL"
    ds.PatientBirthDate = p.birth.strftime("%Y%m%d")
    ds.PatientSex = p.sex
    ds.PatientAge = f"{(study['date'] - p.birth).days // 365:03d}Y"
    ds.PatientAddress = p.address
    ds.PatientTelephoneNumbers = p.phone
    other = Dataset()
    other.PatientID = p.mrn.replace("MRN", "NHS")
    other.IssuerOfPatientID = "NATIONAL REGISTRY"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.InstitutionName = "Athens General Hospital"
    ds.InstitutionAddress = "12 Vasilissis Sofias, Athens"
    ds.ReferringPhysicianName = study["referrer"]
    ds.PerformingPhysicianName = study["referrer"]
    ds.OperatorsName = "Tech^Nikolaou"
    ds.StationName = "ATH-CT-02"
    ds.DeviceSerialNumber = "SN-448812"
    ds.Manufacturer = "SynthMed"
    ds.AccessionNumber = study["accession"]
    ds.StudyID = study["accession"][-6:]
    ds.StudyInstanceUID = study["uid"]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study["date"].strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = "101530"
    ds.StudyDescription = f"{modality} {study['region']} staging for {p.given} {p.family}"
    request = Dataset()
    request.RequestedProcedureID = study["accession"]
    request.ScheduledProcedureStepDescription = f"{study['region']} {p.family} urgent"
    request.ScheduledProcedureStepID = f"SPS{study['accession'][-5:]}"
    ds.RequestAttributesSequence = Sequence([request])
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = study["uid"]
    ds.ReferencedStudySequence = Sequence([ref])
    ds.BodyPartExamined = study["region"]
    ds.add_new(0x00290010, "LO", "ACME HOSPITAL PACS")
    ds.add_new(0x00291010, "LO", p.name)
    ds.add_new(0x00291011, "LO", p.mrn)
    inner = Dataset()
    inner.add_new(0x00290010, "LO", "ACME HOSPITAL PACS")
    inner.add_new(0x00291020, "LT", f"Reviewed by Dr. {study['referrer']} for {p.name}")
    ds.add_new(0x00291012, "SQ", Sequence([inner]))
    return ds


def _image(ds: Dataset, arr: np.ndarray, spacing: float, thickness: float | None) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [spacing, spacing]
    if thickness is not None:
        ds.SliceThickness = thickness
    ds.PixelData = arr.tobytes()


def _write(ds: Dataset, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(folder / name, enforce_file_format=True)


def generate_cohort(out: Path, spec: CohortSpec) -> dict[str, Any]:
    """Write ``out/dicom/…``, ``out/clinical.csv`` and ``out/phi_manifest.json``; return a summary."""
    rng = np.random.default_rng(spec.seed)
    out.mkdir(parents=True, exist_ok=True)
    phi: set[str] = set()
    rows: list[dict[str, Any]] = []
    instances = 0
    for i in range(spec.patients):
        p = _patient(i, rng)
        study_date = date(2019, 1, 1) + timedelta(days=int(rng.integers(0, 1500)))
        referrer = f"Dr^{rng.choice(LAST)}"
        phi.update(
            {
                p.name,
                p.family,
                p.given,
                p.mrn,
                p.mrn.replace("MRN", "NHS"),
                p.birth.strftime("%Y%m%d"),
                p.address,
                p.phone,
                "Athens General Hospital",
                "12 Vasilissis Sofias, Athens",
                referrer,
                referrer.split("^")[1],
                "Tech^Nikolaou",
                "Nikolaou",
                "ATH-CT-02",
                "SN-448812",
                study_date.strftime("%Y%m%d"),
            }
        )
        region = {"breast": "BREAST", "lung": "CHEST", "prostate": "PELVIS", "colorectal": "ABDOMEN"}[p.cancer]
        accession = f"ACC{int(rng.integers(10**8, 10**9))}"
        phi.add(accession)
        study = {"uid": _uid(rng), "date": study_date, "region": region, "accession": accession, "referrer": referrer}
        folder = out / "dicom" / p.folder
        if p.cancer == "breast":
            instances += _mg_study(p, study, rng, spec, folder)
        elif i % 2:
            instances += _mr_study(p, study, rng, spec, folder)
        else:
            instances += _ct_study(p, study, rng, spec, folder)
        if i % 9 == 4:  # an ultrasound with burned-in annotation, for quarantine
            ds = _base(p, study, US_IMAGE, "US", rng)
            ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SeriesNumber, ds.InstanceNumber = _uid(rng), _uid(rng), 90, 1
            ds.BurnedInAnnotation = "YES"
            _image(ds, _pixels(rng, spec.size, False, 20, 200), 0.2, None)
            _write(ds, folder, "us_0001.dcm")
            instances += 1
        if i % 7 != 3:  # a few patients have no clinical record
            rows.append(
                {
                    "patient_id": p.mrn,
                    "patient_name": p.name.replace("^", " "),
                    "age": (study_date - p.birth).days // 365,
                    "sex": p.sex,
                    "diagnosis": DIAGNOSES[p.cancer],
                    "cancer_type": p.cancer,
                    "stage": str(rng.choice(["I", "II", "III", "IV", ""])),
                    "diagnosis_date": (study_date - timedelta(days=20)).isoformat(),
                    "lesion": int(p.lesion),
                }
            )
            phi.add(p.name.replace("^", " "))
    for extra in range(max(1, spec.patients // 10)):  # clinical-only patients (imaging still to come)
        q = _patient(spec.patients + extra, rng)
        rows.append(
            {
                "patient_id": q.mrn,
                "patient_name": q.name.replace("^", " "),
                "age": 61,
                "sex": q.sex,
                "diagnosis": DIAGNOSES[q.cancer],
                "cancer_type": q.cancer,
                "stage": "",
                "diagnosis_date": "2021-05-04",
                "lesion": int(q.lesion),
            }
        )
        phi.update({q.mrn, q.name.replace("^", " ")})
    csv_path = out / "clinical.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "phi_manifest.json").write_text(json.dumps(sorted(phi), indent=0))
    return {
        "patients": spec.patients,
        "instances": instances,
        "clinical_rows": len(rows),
        "clinical_csv": str(csv_path),
        "dicom": str(out / "dicom"),
        "phi_values": len(phi),
    }


def _series(
    p: FakePatient,
    study: dict[str, Any],
    sop_class: str,
    modality: str,
    rng: np.random.Generator,
    number: int,
    description: str,
) -> Dataset:
    ds = _base(p, study, sop_class, modality, rng)
    ds.SeriesInstanceUID = _uid(rng)
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.FrameOfReferenceUID = _uid(rng)
    ds.ImageComments = f"Pt {p.given} {p.family} ({p.mrn}) seen {study['date']:%d/%m/%Y}"
    return ds


def _volume(
    p: FakePatient,
    study: dict[str, Any],
    rng: np.random.Generator,
    spec: CohortSpec,
    folder: Path,
    sop_class: str,
    modality: str,
    number: int,
    description: str,
    slices: int,
    base: int,
    spread: int,
) -> int:
    template = _series(p, study, sop_class, modality, rng, number, description)
    previous: str | None = None
    for k in range(slices):
        ds = Dataset()
        ds.update(template)
        ds.file_meta = FileMetaDataset(template.file_meta)
        ds.SOPInstanceUID = _uid(rng)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k * 2.5)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        if previous:
            src = Dataset()
            src.ReferencedSOPClassUID = sop_class
            src.ReferencedSOPInstanceUID = previous
            ds.SourceImageSequence = Sequence([src])
        lesion_here = p.lesion and slices // 4 <= k < slices - slices // 4
        _image(ds, _pixels(rng, spec.size, lesion_here, base, spread), 0.7, 2.5)
        _write(ds, folder / f"{modality}{number}", f"img{k + 1:04d}.dcm")
        previous = ds.SOPInstanceUID
    return slices


def _ct_study(p: FakePatient, study: dict[str, Any], rng: np.random.Generator, spec: CohortSpec, folder: Path) -> int:
    desc = f"{study['region']} 2.5mm for {p.family} {study['date']:%d.%m.%Y}"
    return _volume(p, study, rng, spec, folder, CT_IMAGE, "CT", 2, desc, spec.ct_slices, 900, 600)


def _mr_study(p: FakePatient, study: dict[str, Any], rng: np.random.Generator, spec: CohortSpec, folder: Path) -> int:
    n = _volume(p, study, rng, spec, folder, MR_IMAGE, "MR", 3, "T1 AX pre", spec.mr_slices, 100, 900)
    return n + _volume(p, study, rng, spec, folder, MR_IMAGE, "MR", 4, f"T2 AX {p.given}", spec.mr_slices, 100, 1200)


def _mg_study(p: FakePatient, study: dict[str, Any], rng: np.random.Generator, spec: CohortSpec, folder: Path) -> int:
    count = 0
    for n, view in enumerate(("RCC", "LCC", "RMLO", "LMLO"), start=1):
        ds = _series(p, study, MG_IMAGE, "MG", rng, n, f"{view} screening {p.family}")
        ds.SOPInstanceUID = _uid(rng)
        ds.InstanceNumber = 1
        ds.ViewPosition = view[1:]
        ds.ImageLaterality = view[0]
        _image(ds, _pixels(rng, spec.size * 2, p.lesion and n % 2 == 1, 200, 3000), 0.1, None)
        _write(ds, folder / f"MG{n}", "img0001.dcm")
        count += 1
    return count
