"""Output as valid as the input (issue 12 item 5): dicom3tools' dciodvfy finds no new error in a de-identified copy.

Every pydicom test file the node accepts goes through the real per-file path (``process_bytes``); dciodvfy checks
the original and the stored bytes, and any error *kind* the copy has that the original lacks fails the test.
Messages quote values, value indices, UIDs, lengths and counts that legitimately differ between the two, so each
error is reduced to a kind (attribute + problem, no values) by :func:`error_kind` before the comparison. Only
errors count, not warnings. Failure messages name files, attributes and kinds, never values.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.config
import pydicom.filereader
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from incisive.node.ingest import dicom_file

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DCIODVFY = Path("/usr/bin/dciodvfy")
TIMEOUT_S = 30  # per dciodvfy run; the slowest pydicom file takes well under a second
WORKERS = 2
MIN_COMPARED = 50  # guard against a run that silently compares (almost) nothing; 94 with pydicom 3.0.2
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# ---------------------------------------------------------------------------------------------------------------
# dciodvfy output → error kinds
# ---------------------------------------------------------------------------------------------------------------

# dciodvfy writes one message per line on stderr: "Error - ..." / "Warning - ...", or, for problems met while
# reading an element, "(0xgggg,0xeeee) VR Name Error - ..." (the tag first). Lines that match neither are IOD
# names, continuation lines of a multi-line value it quotes, or assertion text when it aborts.
_TAGGED = re.compile(r"^(\(0x[0-9a-fA-F]{4},0x[0-9a-fA-F]{4}\).*?)\s+(?:-\s+)?(?=(?:Error|Warning) - )")
_SEVERITY = re.compile(r"(Error|Warning) - ")
# a quoted value: "= <value>" up to the last '>' that is followed only by an optional " - reason" (values may
# contain '>' and ' - '); a value whose closing '>' is on a later line (multi-line text) runs to the line's end
_VALUE_CLOSED = re.compile(r"\s+=\s+<.*>(?=(?:\s+-\s+[^<>]*)?$)")  # " = <": "Element=<Name>" is no value
_VALUE_OPEN = re.compile(r"\s+=\s+<.*$")
_QUOTED_CHAR = re.compile(r"\s+=\s+'[^']*'(?:\s*\(0x[0-9a-fA-F]+\))?")  # "= ':' (0x3a)": the offending character
_QUOTED = re.compile(r'"[^"]*"')
_INDEX = re.compile(r"\s*\[\d+\]")  # value multiplicity index, "UI [2]"
# "<...>" names an attribute, module or macro after these words; anywhere else it is a value (enumerated value,
# defined term, UID)
_NAMED = re.compile(r"(Element=|Module=|Macro=|[Aa]ttribute )<([^<>]*)>")
_ANGLED = re.compile(r"<[^<>]*>")
_UID = re.compile(r"\b\d+(?:\.\d+)+\b")
_UID_NAMED = re.compile(r"(UID )\d[\d.]*")  # "... ReferencedSOPInstanceUID 0": a UID with no dot is a UID too
_NUMBER = re.compile(r"(?<!Type )(?<![\w.])\d+(?![\w.])")  # keeps "Type 1", "Type 2C", tags (0x0008,...)
_SPACES = re.compile(r"\s+")


def error_messages(output: str) -> list[str]:
    """The error messages in dciodvfy's output, each with the tag that prefixes it when it has one."""
    messages: list[str] = []
    for line in output.splitlines():
        prefix = ""
        tagged = _TAGGED.match(line)
        if tagged:
            prefix, line = tagged.group(1).strip(), line[tagged.end() :]
        if not _SEVERITY.match(line):
            continue
        # dciodvfy sometimes omits the newline between two messages ("... not foundError - ..."); split only
        # after the values are gone so that a value containing "Error - " cannot fake a message
        parts = _SEVERITY.split(_strip_values(line))
        for severity, text in zip(parts[1::2], parts[2::2], strict=True):
            if severity == "Error":
                messages.append(f"{text.strip()} @ {prefix}" if prefix else text.strip())
    return messages


def _strip_values(text: str) -> str:
    text = _VALUE_CLOSED.sub("", text)
    text = _VALUE_OPEN.sub("", text)
    text = _QUOTED_CHAR.sub("", text)
    return _QUOTED.sub('"…"', text)


def error_kind(message: str) -> str:
    """Reduce one error message to attribute + problem: no values, UIDs, indices, lengths or counts."""
    text = _strip_values(message)
    text = _INDEX.sub("", text)
    text = _NAMED.sub(lambda m: f"{m.group(1)}«{m.group(2)}»", text)  # protect names from the next step
    text = _ANGLED.sub("<…>", text)
    text = text.replace("«", "<").replace("»", ">")
    text = _UID_NAMED.sub(r"\1<uid>", text)
    text = _UID.sub("<uid>", text)
    text = _NUMBER.sub("#", text)
    return _SPACES.sub(" ", text).strip()


# ---------------------------------------------------------------------------------------------------------------
# running dciodvfy
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    errors: frozenset[str]  # error kinds
    aborted: str = ""  # why dciodvfy gave no verdict (crash, timeout); errors are then incomplete


def dciodvfy(executable: Path, path: Path) -> Verdict:
    try:
        done = subprocess.run(
            [str(executable), str(path)], stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return Verdict(frozenset(), f"timed out after {TIMEOUT_S} s")
    output = (done.stdout + done.stderr).decode("latin-1")  # values it quotes need not be UTF-8
    errors = frozenset(error_kind(m) for m in error_messages(output))
    if done.returncode not in (0, 1):  # 0: no errors, 1: errors; a signal (assertion → SIGABRT) is negative
        return Verdict(errors, f"exit status {done.returncode}")
    return Verdict(errors)


def reencoded(data: bytes, *, inflate: bool, drop_pixels: bool) -> bytes:
    """The same instance rewritten by pydicom around a dciodvfy limitation; applied alike to original and copy.

    ``inflate``: dciodvfy cannot read Deflated Explicit VR Little Endian (it parses the compressed stream as
    elements, so the garbage it reports differs with the compressed bytes); write Explicit VR Little Endian.
    ``drop_pixels``: dciodvfy aborts (SIGABRT, an assertion in attrothr.cc) on 32-bit pixel data (RT Dose).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if inflate:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if drop_pixels:
            for keyword in PIXEL_KEYWORDS:
                if keyword in ds:
                    delattr(ds, keyword)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def _deflated(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            meta = pydicom.filereader.read_file_meta_info(path)
        except Exception:
            return False
    return str(meta.get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian


@dataclass(frozen=True)
class Comparison:
    name: str
    new_errors: frozenset[str]
    unverifiable: str = ""  # why original and copy could not be compared
    note: str = ""  # how they were compared, when not as they are


def compare(executable: Path, name: str, original: Path, copy: Path) -> Comparison:
    inflate = _deflated(original) or _deflated(copy)
    before = dciodvfy(executable, original) if not inflate else Verdict(frozenset())
    after = dciodvfy(executable, copy) if not inflate else Verdict(frozenset())
    notes = []
    if inflate:
        notes.append("deflated: compared inflated (dciodvfy cannot inflate)")
    if before.aborted:
        notes.append(f"dciodvfy aborted on the original ({before.aborted}): compared without pixel data")
    if inflate or before.aborted:
        variants = []
        for path, label in ((original, "original"), (copy, "copy")):
            variant = copy.with_name(f"{copy.stem}.{label}.reencoded.dcm")  # copy lies in the temp dir
            variant.write_bytes(reencoded(path.read_bytes(), inflate=inflate, drop_pixels=bool(before.aborted)))
            variants.append(variant)
        before, after = dciodvfy(executable, variants[0]), dciodvfy(executable, variants[1])
        if before.aborted:
            return Comparison(name, frozenset(), f"dciodvfy gives no verdict on the original ({before.aborted})")
    new = after.errors - before.errors
    if after.aborted:
        new |= {f"dciodvfy gives no verdict on the copy ({after.aborted})"}
    return Comparison(name, frozenset(new), note="; ".join(notes))


# ---------------------------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_worker() -> Iterator[None]:
    """The node's per-file worker, initialised as an import worker would be; its process-wide settings restored."""
    saved_state = dict(dicom_file._state)
    saved_mode = pydicom.config.settings.writing_validation_mode
    log = logging.getLogger("pydicom")
    saved_level, saved_propagate = log.level, log.propagate
    with warnings.catch_warnings():
        dicom_file.init_worker(dicom_file.WorkerConfig(key=bytes(range(32))))
        yield
    dicom_file._state.clear()
    dicom_file._state.update(saved_state)
    pydicom.config.settings.writing_validation_mode = saved_mode
    log.setLevel(saved_level)
    log.propagate = saved_propagate


def _executable() -> Path:
    if DCIODVFY.exists():
        return DCIODVFY
    pytest.skip(f"dicom3tools' dciodvfy is not installed at {DCIODVFY} (apt-get install dicom3tools)")


def test_deidentified_copy_has_no_new_dciodvfy_errors(node_worker: None, tmp_path: Path) -> None:
    executable = _executable()
    jobs: list[tuple[str, Path, Path]] = []
    for source in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
        outcome = dicom_file.process_bytes(source.read_bytes())  # rejects what pydicom cannot read
        if outcome.status == "rejected" or not outcome.data:
            continue
        name = source.relative_to(TEST_FILES).as_posix()
        copy = tmp_path / f"{len(jobs):03d}.dcm"
        copy.write_bytes(outcome.data)
        jobs.append((name, source, copy))
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda job: compare(executable, *job), jobs))

    compared = [r for r in results if not r.unverifiable]
    assert len(compared) >= MIN_COMPARED, f"only {len(compared)} of {len(jobs)} files could be compared"
    failures = [r for r in results if r.new_errors]
    lines = [f"{r.name}: {kind}" for r in failures for kind in sorted(r.new_errors)]
    context = [f"{r.name}: {r.note or r.unverifiable}" for r in results if r.note or r.unverifiable]
    assert not failures, (
        f"dciodvfy finds errors in {len(failures)} of {len(compared)} de-identified copies that their originals "
        "do not have:\n  "
        + "\n  ".join(lines)
        + "\n(compared differently or not at all:\n  "
        + "\n  ".join(context)
        + ")"
    )


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            "Value invalid for this VR - (0x0008,0x1155) UI Referenced SOP Instance UID  UI [2] = <1.2.3.04> - "
            "Leading zeroes in embedded numeric component(s)",
            "Value invalid for this VR - (0x0008,0x1155) UI Referenced SOP Instance UID UI - "
            "Leading zeroes in embedded numeric component(s)",
        ),
        (
            "Value invalid for this VR - (0x0008,0x0030) TM Study Time  TM [1] = <12:30:00> - "
            "Character invalid for this VR = ':' (0x3a)",
            "Value invalid for this VR - (0x0008,0x0030) TM Study Time TM - Character invalid for this VR",
        ),
        (
            'Value invalid for this VR - (0x0019,0x1060)  ?  UT [1] = <<?xml version="1.0"?>',
            "Value invalid for this VR - (0x0019,0x1060) ? UT",
        ),
        (
            "Empty attribute (no value) Type 1 Required Element=<RTPlanLabel> Module=<RTGeneralPlan>",
            "Empty attribute (no value) Type 1 Required Element=<RTPlanLabel> Module=<RTGeneralPlan>",
        ),
        (
            "Unrecognized enumerated value <YBR_FULL> for value 1 of attribute <Photometric Interpretation>",
            "Unrecognized enumerated value <…> for value # of attribute <Photometric Interpretation>",
        ),
        (
            "StudyInstanceUID has same value as FrameOfReferenceUID <2.25.1234>",
            "StudyInstanceUID has same value as FrameOfReferenceUID <…>",
        ),
        (
            "Referenced SOP Instance is not listed in CurrentRequestedProcedureEvidenceSequence or "
            "PertinentOtherEvidenceSequence but have IMAGE ReferencedSOPInstanceUID 1.2.3.4.5",
            "Referenced SOP Instance is not listed in CurrentRequestedProcedureEvidenceSequence or "
            "PertinentOtherEvidenceSequence but have IMAGE ReferencedSOPInstanceUID <uid>",
        ),
        (
            "Referenced SOP Instance is not listed in CurrentRequestedProcedureEvidenceSequence or "
            "PertinentOtherEvidenceSequence but have IMAGE ReferencedSOPInstanceUID 0",
            "Referenced SOP Instance is not listed in CurrentRequestedProcedureEvidenceSequence or "
            "PertinentOtherEvidenceSequence but have IMAGE ReferencedSOPInstanceUID <uid>",
        ),
        (
            'Illegal root for UID - "9.8.7.6" in (0x0008,0x1155) Referenced SOP Instance UID',
            'Illegal root for UID - "…" in (0x0008,0x1155) Referenced SOP Instance UID',
        ),
        (
            "PixelData has incorrect value length - expected 8192 dec - got 8320 dec",
            "PixelData has incorrect value length - expected # dec - got # dec",
        ),
    ],
)
def test_error_kind_drops_values_keeps_attribute_and_problem(message: str, kind: str) -> None:
    assert error_kind(message) == kind


def test_error_messages_reads_tagged_and_run_together_lines() -> None:
    output = "\n".join(
        [
            "Warning - Value dubious for this VR - (0x0010,0x0010) PN Patient's Name  PN [1] = <SMITH^J> - Retired",
            "(0x0008,0x0008) CS Image Type Error - Tag read failed - Implicit VR encoding even though supposed to be "
            "explicit",
            "(0xdded,0x6ecf)  ?  - Warning - Private tag without owner",
            "Error - Information Object Not foundError - MediaStorageSOPInstanceUID different from SOPInstanceUID",
            "Error - Value invalid for this VR - (0x0019,0x1060)  ?  UT [1] = <first line of a text",
            "Error - in a value's second line",  # indistinguishable from a message; dciodvfy quotes few such values
            "RTPlan",
        ]
    )
    assert error_messages(output) == [
        "Tag read failed - Implicit VR encoding even though supposed to be explicit @ (0x0008,0x0008) CS Image Type",
        "Information Object Not found",
        "MediaStorageSOPInstanceUID different from SOPInstanceUID",
        "Value invalid for this VR - (0x0019,0x1060)  ?  UT [1]",
        "in a value's second line",
    ]
