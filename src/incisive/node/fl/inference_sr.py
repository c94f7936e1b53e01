"""Node-local inference results as DICOM Comprehensive 3D SR (highdicom), stored and catalogued at the node.

One SR per scored series: a TID 1500 Measurement Report whose first measurement group holds the series-level
result (the highest slice probability and a lesion present/absent evaluation at the model's threshold) over
all scored slices, followed by one group per scored slice. Every group names the algorithm (model
``NAME:VERSION``, the approved bundle's sha256 and the training job as parameters) and references its source
images; the observer is the model as a device.

The SR is built only from instances already de-identified at the door (``PatientIdentityRemoved = YES``);
its patient and study attributes are copied from them by highdicom, and :func:`check_no_identifiers` makes
sure nothing else identifying was added. It is written into the content-addressed store like any imported
instance and catalogued (modality ``SR``) so QIDO-RS/WADO-RS and C-FIND serve it, and ``node fsck`` checks it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from sqlalchemy.orm import Session

from incisive.node.catalogue.writer import CatalogueWriter
from incisive.node.home import Node
from incisive.node.ingest.dicom_file import facts

LESION_PROBABILITY = hd.sr.CodedConcept("LESION-PROB", "99INCISIVE", "Lesion probability")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
SR_SERIES_NUMBER = 9900
MANUFACTURER = "incisive"
# attributes a de-identified source carries that the SR repeats, so it is marked de-identified as well
DEID_KEYWORDS = ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
                 "LongitudinalTemporalInformationModified")
# identifying attributes that must be empty or absent in the SR unless they equal the source's pseudonymised value
PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames",
                    "AccessionNumber", "ReferringPhysicianName", "InstitutionName", "StudyID")


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    digest: str  # the approved bundle's sha256
    job: str

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


class NotDeidentified(ValueError):
    """A source instance is not marked de-identified: no SR is built from it."""


def _algorithm(model: ModelRef, threshold: float) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version,
        parameters=[f"bundle-sha256={model.digest}", f"job={model.job}", f"threshold={threshold:g}"])


def _group(label: str, score: float, threshold: float, model: ModelRef,
           sources: Sequence[Dataset]) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = _algorithm(model, threshold)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label),
        finding_type=codes.SCT.Lesion,
        algorithm_id=algorithm,
        measurements=[hd.sr.Measurement(name=LESION_PROBABILITY, value=round(float(score), 6), unit=NO_UNITS,
                                        algorithm_id=algorithm)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            name=codes.SCT.Lesion, value=codes.SCT.Present if score >= threshold else codes.SCT.Absent)],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources],
    )


def build_sr(sources: Sequence[Dataset], scores: Sequence[float], model: ModelRef, threshold: float,
             series_uid: str, sop_uid: str) -> Dataset:
    """The SR for one scored series: ``sources[i]`` (header only is enough) scored ``scores[i]``."""
    if not sources or len(sources) != len(scores):
        raise ValueError("one score per source instance, at least one")
    for ds in sources:
        if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
            raise NotDeidentified("source instance is not de-identified; no SR is written")
    if len({str(ds.SeriesInstanceUID) for ds in sources}) != 1:
        raise ValueError("all sources of one SR must belong to one series")
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(), name=model.ref, manufacturer_name=MANUFACTURER, model_name=model.name,
        serial_number=model.digest[:64])
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    groups = [_group("series", max(scores), threshold, model, sources)]
    groups += [_group(f"instance {ds.get('InstanceNumber', i + 1)}", s, threshold, model, [ds])
               for i, (ds, s) in enumerate(zip(sources, scores, strict=True))]
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ImagingProcedure,
                                     imaging_measurements=groups)
    with warnings.catch_warnings():  # pseudonyms are single-component person names, on purpose
        warnings.filterwarnings("ignore", message=".*intended person name.*", category=UserWarning)
        sr = hd.sr.Comprehensive3DSR(
            evidence=list(sources), content=report, series_instance_uid=series_uid,
            series_number=SR_SERIES_NUMBER, sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER,
            is_complete=True, series_description=f"AI {model.ref}"[:64])
    for keyword in DEID_KEYWORDS:
        if keyword in sources[0]:
            setattr(sr, keyword, sources[0].data_element(keyword).value)  # type: ignore[union-attr]
    check_no_identifiers(sr, sources[0])
    return sr


def check_no_identifiers(sr: Dataset, source: Dataset) -> None:
    """Every identifying attribute of the SR is empty or equals the (pseudonymised) source's value."""
    for keyword in PATIENT_KEYWORDS:
        value = str(sr.get(keyword, "") or "")
        if value and value != str(source.get(keyword, "") or ""):
            raise NotDeidentified(f"SR attribute {keyword} does not come from the de-identified source")
    if str(sr.get("PatientIdentityRemoved", "")).upper() != "YES":
        raise NotDeidentified("SR is not marked de-identified")


def encode(sr: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, sr, enforce_file_format=True)
    return buf.getvalue()


def store_sr(node: Node, session: Session, sr: Dataset) -> str:
    """Write the SR durably into the store and add its catalogue row to ``session`` (the caller commits)."""
    data = encode(sr)
    digest, _ = node.store.put(data)
    parsed = pydicom.dcmread(io.BytesIO(data))
    f: dict[str, Any] = facts(parsed)
    CatalogueWriter(session).add_instance(f, digest, len(data), None)
    return str(f["sop_uid"])


def read_sources(node: Node, digests: Sequence[str]) -> list[Dataset]:
    """Headers (no pixel data) of stored, de-identified instances."""
    return [pydicom.dcmread(io.BytesIO(node.store.get(d)), stop_before_pixels=True) for d in digests]
