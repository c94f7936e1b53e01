"""Cleaning of free-text descriptors (PS3.15 E.3.5 Clean Descriptors Option).

The option asks to replace descriptors "with values of similar meaning known not to contain identifying
information". A deny-list (names, ids) cannot be complete, so cleaning here is an **allow-list**: a descriptor
keeps only tokens from an imaging vocabulary and short measurement-like tokens (``5mm``, ``3.0``, ``T2``);
everything else is dropped. "CT THORAX f/u J. Smith 12/03/2021" becomes "CT THORAX". Numbers are where ids,
phone numbers and dates hide: a run of three or more digits survives only as a measurement with its unit
("120 kV", "512mm"); e-mail addresses, URLs and written dates go before anything else, and the names of the
patient and of any person the instance names are dropped even where they are also imaging words.
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

_TOKEN = re.compile(r"[A-Za-z0-9.+%-]+")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
# what goes before tokenising: e-mail addresses, URLs, and dates and times in any common written form
# ("12/03/2021", "2021-03-12", "12.03.21", "10:42", "12 March 2021", "March 12th, 2021", "Mar 2021")
_STRIP = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|(?:https?|ftp|file)://\S+|www\.\S+"
    r"|\d{1,4}\s*[/.:-]\s*\d{1,2}\s*[/.:-]\s*\d{1,4}|\d{1,4}\s*[/:]\s*\d{1,4}"
    rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s*(?:of\s+)?{_MONTH}(?:,?\s*\d{{2,4}})?\b"
    rf"|\b{_MONTH}\s*\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s*\d{{2,4}})?\b"
    rf"|\b{_MONTH}\s*(?:19|20)\d\d\b",
    re.IGNORECASE,
)
_UNITS = frozenset("mm cm m ms s sec min kv kvp mas ma t x % ml mgy gy hu deg mhz".split())
_UNIT_SUFFIX = "|".join(sorted((u for u in _UNITS if u != "%"), key=len, reverse=True))
# a measurement written as one token: a number with its unit ("5mm", "120kV", "2.5%"), at most 4 digits a run
_WITH_UNIT = re.compile(rf"[0-9]{{1,4}}(?:\.[0-9]{{1,3}})?(?:{_UNIT_SUFFIX}|%)")
# a bare number or a sequence weight: no run of 3 or more digits (ids, phone numbers, dates hide there)
_SHORT = re.compile(r"[0-9]{1,2}(?:\.[0-9]{1,2})?|t[0-9]{1,2}|b[0-9]{1,4}")
_BARE_NUMBER = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,3})?")


@lru_cache(maxsize=4096)
def name_parts(person_name: str) -> frozenset[str]:
    """Lower-cased parts of a PN value (``Doe^Jane^^Mrs`` → doe, jane, mrs) for the cleaner to drop."""
    return frozenset(p for p in re.split(r"[\^=\s,.]+", person_name.lower()) if len(p) >= 2)


def clean_text(value: str, names: frozenset[str] = frozenset()) -> str:
    """Keep allow-listed tokens and measurements only, upper-cased, single-spaced; ``names`` never survive."""
    kept = _clean_tokens(value)
    if names:
        kept = tuple(token for token in kept if token.lower() not in names)
    return " ".join(kept)


@lru_cache(maxsize=16384)
def _clean_tokens(value: str) -> tuple[str, ...]:
    """The tokens :func:`clean_text` keeps, before names are dropped (cached: names differ per patient)."""
    tokens = _TOKEN.findall(_STRIP.sub(" ", value))
    kept: list[str] = []
    for index, token in enumerate(tokens):
        low = token.lower().strip(".+-")
        if not low:
            continue
        if low in _VOCABULARY or _SHORT.fullmatch(low) or _WITH_UNIT.fullmatch(low):
            kept.append(low.upper())
        elif _BARE_NUMBER.fullmatch(low):
            # "120 kV", "5 mm": a longer number survives only as a measurement with its unit
            following = tokens[index + 1].lower() if index + 1 < len(tokens) else ""
            if following in _UNITS:
                kept.append(low.upper())
        elif low in _UNITS and kept and _BARE_NUMBER.fullmatch(kept[-1].lower()):
            if low == "%":
                kept[-1] += "%"
            else:
                kept.append(low.upper())
        else:
            # split compound tokens like "T2-FLAIR" or "CHEST+ABD" and keep their known parts
            parts = [p for p in re.split(r"[.+-]", low) if p]
            if len(parts) > 1:
                kept.extend(p.upper() for p in parts if p in _VOCABULARY)
    return tuple(kept)
