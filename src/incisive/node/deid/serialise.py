"""Fast Part 10 serialisation of a de-identified dataset (PS3.10 7.1, PS3.5 7.1.2).

De-identification leaves most attributes untouched, and pydicom keeps those as raw elements that remember
where their value sits in the source bytes. When the source and target encodings are the same (explicit or
implicit VR little endian, not deflated), we copy each untouched element's bytes straight from the source
and let pydicom encode only what changed. Anything unusual (big endian, deflate, encoding mismatch, a raw
element whose bounds do not check out) falls back to :func:`pydicom.dcmwrite`. Tests compare both paths
element by element on pydicom's vendor files and the synthetic cohort.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, MutableSequence
from typing import BinaryIO

from pydicom import dcmwrite
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, PersonName

UNDEFINED = 0xFFFFFFFF
_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_LONG_HEADER = {str(vr) for vr in EXPLICIT_VR_LENGTH_32}


_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_ITEM = b"\xfe\xff\x00\xe0"


class _Fallback(Exception):
    pass


def _header(tag: int, vr: str, length: int, implicit: bool) -> bytes:
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, length)
    if vr in _LONG_HEADER:
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
    if length > 0xFFFF:
        raise _Fallback
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)


def _text(value: object, vr: str) -> bytes:
    if value is None or value == "":
        return b""
    values = list(value) if isinstance(value, MutableSequence) else [value]
    texts: list[str] = []
    for v in values:
        if isinstance(v, PersonName):
            v = str(v)
        if not (type(v) is str or isinstance(v, UID)):
            raise _Fallback  # numbers-as-strings (DS/IS) keep pydicom's formatting rules
        texts.append(v)
    text = "\\".join(texts)
    if not text.isascii():
        raise _Fallback  # let pydicom apply the dataset's character set
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


def _encode(elem: DataElement, implicit: bool, write: Callable[[bytes], object]) -> None:
    """Explicit/implicit VR little endian encoding of the element kinds de-identification produces."""
    vr, tag = str(elem.VR), int(elem.tag)
    if vr == "SQ":
        body = bytearray()
        for item in elem.value:
            content = bytearray()
            for item_tag in sorted(item._dict):
                _element(item, item_tag, implicit, content.extend)
            body += _ITEM + struct.pack("<I", len(content)) + content
        write(_header(tag, vr, len(body), implicit) + body)
        return
    if vr in _TEXT_VRS:
        data = _text(elem.value, vr)
    elif vr in _NUMBER_FORMATS:
        value = elem.value
        values = list(value) if isinstance(value, MutableSequence) else ([] if value is None else [value])
        data = struct.pack("<" + _NUMBER_FORMATS[vr] * len(values), *values)
    else:
        raise _Fallback
    write(_header(tag, vr, len(data), implicit) + data)


def _element(ds: Dataset, tag: int, implicit: bool, write: Callable[[bytes], object]) -> None:
    elem = ds._dict[tag]  # type: ignore[index]
    if isinstance(elem, RawDataElement):
        if elem.value is None or elem.length == UNDEFINED or elem.VR is None or elem.is_implicit_VR != implicit:
            raise _Fallback
        write(_header(tag, str(elem.VR), len(elem.value), implicit) + elem.value)
    else:
        _encode(elem, implicit, write)


def _span(elem: RawDataElement, implicit: bool, size: int) -> tuple[int, int]:
    """[start, end) of a raw element's bytes (header included) in the source."""
    if elem.value_tell is None:
        raise _Fallback
    header = 8 if implicit or str(elem.VR) not in _LONG_HEADER else 12
    start = elem.value_tell - header
    if elem.value is None:  # a large value left unread (deferred): copied from the source by its declared length
        if elem.length == UNDEFINED:
            raise _Fallback
        end = elem.value_tell + elem.length
    else:
        end = elem.value_tell + (len(elem.value) + 8 if elem.length == UNDEFINED else elem.length)
        if len(elem.value) != (elem.length if elem.length != UNDEFINED else len(elem.value)):
            raise _Fallback
    if start < 0 or end > size:
        raise _Fallback
    return start, end


_PREAMBLE = b"\x00" * 128 + b"DICM"
_REQUIRED_META = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID",
                  "FileMetaInformationVersion", "ImplementationClassUID")


def file_meta_bytes(meta: FileMetaDataset) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (PS3.10 7.1), explicit VR little endian.

    Same bytes as pydicom's ``write_file_meta_info(enforce_standard=True)`` (a test compares them), about five
    times faster: it runs twice per received instance. A group that pydicom would complete (missing version or
    implementation elements) or refuse (missing Type 1 elements, other groups) is left to pydicom.
    """
    if any(not meta.get(kw) for kw in _REQUIRED_META) or "ImplementationVersionName" not in meta \
            or any(tag >> 16 != 2 for tag in meta._dict):
        return _pydicom_meta(meta)
    body = bytearray()
    try:
        for tag in sorted(meta._dict):
            if tag == 0x00020000:
                continue
            elem = meta._dict[tag]
            if tag == 0x00020001 and not isinstance(elem, RawDataElement):
                value = bytes(elem.value)
                body += _header(tag, "OB", len(value), False) + value
                continue
            _element(meta, tag, False, body.extend)
    except _Fallback:
        return _pydicom_meta(meta)
    return _PREAMBLE + _header(0x00020000, "UL", 4, False) + struct.pack("<I", len(body)) + body


def _pydicom_meta(meta: FileMetaDataset) -> bytes:
    fp = DicomBytesIO()
    fp.write(_PREAMBLE)
    write_file_meta_info(fp, meta, enforce_standard=True)
    return fp.getvalue()


class SourceChanged(ValueError):
    """The source file holds fewer bytes than when it was parsed (changed while being de-identified)."""


_COPY_CHUNK = 1 << 20


def _source_size(source: bytes | BinaryIO) -> int:
    if isinstance(source, bytes):
        return len(source)
    return os.fstat(source.fileno()).st_size


def _read(source: bytes | BinaryIO, start: int, end: int) -> bytes:
    if isinstance(source, bytes):
        return source[start:end]
    source.seek(start)
    data = source.read(end - start)
    if len(data) != end - start:
        raise SourceChanged("the source file changed while it was de-identified")
    return data


def _copy(source: bytes | BinaryIO, out: DicomBytesIO, start: int, end: int) -> None:
    """``source[start:end]`` into ``out``: from bytes through a memoryview (no copy of the slice), from a file in
    1 MiB reads (pixel data spooled to disk is never held whole twice)."""
    if isinstance(source, bytes):
        out.write(memoryview(source)[start:end])
        return
    source.seek(start)
    left = end - start
    while left:
        chunk = source.read(min(left, _COPY_CHUNK))
        if not chunk:
            raise SourceChanged("the source file changed while it was de-identified")
        out.write(chunk)
        left -= len(chunk)


def serialise(ds: Dataset, source: bytes | BinaryIO) -> bytes:
    """Part 10 bytes of ``ds`` (already de-identified, with a fresh ``file_meta``), its untouched elements copied
    from ``source``: the bytes it was read from, or the open file (seekable) it was read from."""
    try:
        return _splice(ds, source)
    except _Fallback:
        out = io.BytesIO()
        dcmwrite(out, ds, enforce_file_format=True)
        return out.getvalue()


def _splice(ds: Dataset, source: bytes | BinaryIO) -> bytes:
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    original = ds.original_encoding
    if not ts or ts.is_deflated or not ts.is_little_endian or original != (ts.is_implicit_VR, True):
        raise _Fallback
    implicit = ts.is_implicit_VR
    fp = DicomBytesIO()
    fp.write(file_meta_bytes(ds.file_meta))
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    encodings = ds._character_set
    size = _source_size(source)
    for tag in sorted(ds._dict):
        elem = ds._dict[tag]
        if isinstance(elem, RawDataElement):
            if elem.is_implicit_VR != implicit and elem.VR is not None:
                raise _Fallback
            start, end = _span(elem, implicit, size)
            if elem.length == UNDEFINED and _read(source, end - 8, end) != _DELIMITER:
                raise _Fallback
            _copy(source, fp, start, end)  # pixel data is most of an instance: never copied twice
            continue
        buffer = bytearray()
        try:
            _encode(elem, implicit, buffer.extend)
        except _Fallback:  # anything our encoder does not do: pydicom encodes this element
            write_data_element(fp, elem, encodings)
        else:
            fp.write(buffer)
    return fp.getvalue()
