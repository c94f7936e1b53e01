"""Cleaning of free-text descriptors (PS3.15 E.3.5 Clean Descriptors Option).

The option asks to replace descriptors "with values of similar meaning known not to contain identifying
information". A deny-list (names, ids) cannot be complete, so cleaning here is an **allow-list**: a descriptor
keeps only tokens from an imaging vocabulary and short measurement-like tokens (``5mm``, ``3.0``, ``T2``);
everything else is dropped. "CT THORAX f/u J. Smith 12/03/2021" becomes "CT THORAX F U".
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

_VOCABULARY: Final = frozenset(
    """
    2d 3d a abd abdomen abdominal acquisition adc an and angio arterial ax axial baseline bil bilateral biopsy
    birads bladder body bone bones brain breast breasts breath breathing cad calcification calibration cancer
    carcinoma cardiac cbct cc cervical cervix chest cine cm colon contrast cor coronal cr ct cta ctpa dbt dce
    delayed dense density derived diagnostic diffusion digital dixon dose dsc dti dwi dx dynamic early ecg
    enhanced esophagus exam examination extremity fat fdg field flair follow followup for free fs fse fu full gad
    gated gd gre guided head heart high hip hold hr hrct image images implant in increment inphase iv kernel
    kidney kidneys knee kv kvp l larynx late lcc ld ldct left lesion lesions lirads liver lm lmlo localiser
    localizer loop low lt lumbar lung lungrads lungs lymph lymphoma ma mag map maps mas mass masses mediastinal
    mediastinum met metastases metastasis mets mg minip mip ml mlo mm mpr mprage mr mra mrcp mri ms multiphase
    native navigator neck nm node nodes nodule nodules non obl oblique oesophagus of oncology opphase or oral
    orbit orbits original ot out ovaries ovary pancreas pc pd pelvic pelvis perfusion pet pet-ct petct phantom
    phase pirads pitch plan planning plus portal post pre primary prostate protocol psma pt qa r radiotherapy rcc
    recon reconstruction rectal rectum recurrence renal report resolution respiratory response restaging rf right
    rmlo routine rt rtdose rtplan rtstruct s sag sagittal sat scanogram score scout screening se sec secondary seg
    sequence series sharp shoulder sinus sinuses skull slice slices smooth soft space spect spgr spine spot sr
    staging standard stir stomach study sub subtraction surveillance survey surview swi synthesized synthetic t1
    t1w t2 t2w test testis the therapy thick thickness thin thoracic thoracolumbar thorax thyroid tissue to tof
    tomo tomosynthesis topogram tra transverse treatment tse tumor tumour ultra unenhanced up us uterus venous
    vibe view views vr w water wb whole window with without wo xa xccl xr
    """.split()
)

_TOKEN = re.compile(r"[A-Za-z0-9.+-]+")
# dates and times written in free text ("12/03/2021", "2021-03-12", "12.03.21", "10:42") go first
_DATEISH = re.compile(r"\d{1,4}\s*[/.:-]\s*\d{1,2}\s*[/.:-]\s*\d{1,4}|\d{1,4}\s*[/:]\s*\d{1,4}")
_YEAR = re.compile(r"(?:19|20)\d\d")
# short numbers and measurements, but never date- or id-like digit runs (5+ digits)
_MEASURE = re.compile(r"(?:[0-9]{1,4}(?:\.[0-9]{1,3})?(?:mm|cm|ms|s|kv|kvp|mas|ma|t|x|%)?|[tb][0-9]{1,4})")


@lru_cache(maxsize=16384)
def clean_text(value: str) -> str:
    """Keep allow-listed tokens only, upper-cased, single-spaced."""
    kept: list[str] = []
    for token in _TOKEN.findall(_DATEISH.sub(" ", value)):
        low = token.lower().strip(".+-")
        if not low:
            continue
        if low in _VOCABULARY or (_MEASURE.fullmatch(low) and not _YEAR.fullmatch(low)):
            kept.append(low.upper())
        else:
            # split compound tokens like "T2-FLAIR" or "CHEST+ABD" and keep their known parts
            parts = [p for p in re.split(r"[.+-]", low) if p]
            if len(parts) > 1:
                kept.extend(p.upper() for p in parts if p in _VOCABULARY)
    return " ".join(kept)
