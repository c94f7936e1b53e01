"""Which instances may carry burned-in identifying text in their pixels (PS3.15 E.3.1 Clean Pixel Data).

We do not OCR pixels at the door. Instances flagged here are de-identified in their header but held in the
node's quarantine, not the store, until a person reviews them.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset

# Secondary Capture family and ultrasound SOP classes, which routinely carry annotations in the pixels.
_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture (incl. multi-frame variants .7.1-.7.4)
    "1.2.840.10008.5.1.4.1.1.6.",  # Ultrasound image / multi-frame
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound multi-frame
)


def quarantine_reason(ds: Dataset, modalities: Iterable[str]) -> str | None:
    """A PHI-free reason when ``ds`` must go to quarantine, else None. Call before de-identification."""
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "BurnedInAnnotation is YES"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality in {m.upper() for m in modalities}:
        return f"modality {modality} often carries burned-in text"
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if any(sop_class.startswith(prefix) for prefix in _SOP_PREFIXES):
        return f"SOP class {sop_class} often carries burned-in text"
    return None
