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
    ct mr mri pet spect mg us xr cr dx nm pt rf xa ot sr seg rtstruct rtplan rtdose tomo dbt cbct angio
    head brain skull neck chest thorax thoracic lung lungs abdomen abd abdominal pelvis pelvic spine cervical
    lumbar thoracolumbar breast breasts liver kidney kidneys renal pancreas prostate colon rectum bladder
    heart cardiac bone bones whole body wb extremity knee hip shoulder orbit orbits sinus sinuses larynx
    stomach esophagus oesophagus ovary ovaries uterus cervix testis thyroid lymph node nodes mediastinum
    left right bilateral lt rt l r bil cc mlo lcc rcc lmlo rmlo ml lm xccl spot mag view views implant
    axial ax coronal cor sagittal sag oblique obl transverse tra 2d 3d mip minip mpr vr recon reconstruction
    t1 t2 t1w t2w pd flair dwi adc dti swi gre se tse fse spgr mprage vibe space stir dixon tof pc dce dsc
    perfusion diffusion fat sat fs water inphase opphase in out phase pre post contrast gad gd iv oral rectal
    with without w wo and or of the a an for to plus non enhanced unenhanced native arterial venous portal
    delayed late early phase dynamic multiphase routine standard protocol screening diagnostic staging
    restaging follow up fu followup surveillance baseline biopsy guided tumor tumour lesion lesions nodule
    nodules mass masses cancer carcinoma oncology metastasis metastases met mets lymphoma primary recurrence
    response therapy treatment radiotherapy planning plan scout localizer localiser topogram surview
    scanogram survey series image images slice slices thin thick soft tissue lung window mediastinal kernel
    sharp smooth high resolution hr low dose ld ldct ultra cta ctpa hrct mrcp mra pet-ct petct fdg psma
    tomosynthesis synthesized synthetic digital full field cad calcification density dense score birads
    lirads pirads lungrads mm cm s ms sec kv kvp mas ma slice thickness increment pitch gated ecg breath
    hold free breathing respiratory navigator sequence acquisition calibration phantom qa test derived
    primary secondary original subtraction sub map maps mip cine loop study exam examination report
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
