"""WADO-RS (PS3.18 10.4): instances as multipart/related application/dicom, metadata as DICOM JSON.

Objects are sent as stored (their own transfer syntax; nothing is decoded). A request for a specific
transfer syntax other than the stored one gets 406. Metadata leaves out bulk data (pixel data and other
binary values over 1 KiB) and points to nothing: rendered frames and bulk data are not offered.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from sqlalchemy import select

from incisive.node.catalogue.models import Instance, Series, Study
from incisive.node.home import Node

BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


class NotFound(LookupError):
    pass


class NotAcceptable(ValueError):
    pass


@dataclass
class Stored:
    sop_uid: str
    transfer_syntax: str
    digest: str


def locate(node: Node, study: str, series: str | None = None, instance: str | None = None) -> list[Stored]:
    q = (select(Instance.sop_uid, Instance.transfer_syntax, Instance.object_hash)
         .join(Series, Series.id == Instance.series_id).join(Study, Study.id == Series.study_id)
         .where(Study.study_uid == study).order_by(Series.series_number, Series.id, Instance.instance_number,
                                                    Instance.id))
    if series is not None:
        q = q.where(Series.series_uid == series)
    if instance is not None:
        q = q.where(Instance.sop_uid == instance)
    with node.catalogue.session() as s:
        rows = [Stored(u, t or "", d) for u, t, d in s.execute(q)]
    if not rows:
        raise NotFound("no such " + ("instance" if instance else "series" if series else "study"))
    return rows


def accepted_syntaxes(accept: str) -> set[str] | None:
    """Transfer syntaxes the Accept header allows for application/dicom; ``None`` = any."""
    if not accept or accept.strip() in ("*/*", "*", "multipart/related"):
        return None
    found: set[str] = set()
    for option in accept.split(","):
        lowered = option.lower()
        if "multipart/related" not in lowered and "*/*" not in lowered:
            continue
        if 'type="application/dicom"' not in lowered and "type=application/dicom" not in lowered \
                and "*/*" not in lowered:
            continue
        ts = None
        for param in option.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "transfer-syntax":
                ts = value.strip().strip('"')
        if ts is None or ts == "*":
            return None
        found.add(ts)
    if not found:
        raise NotAcceptable('only multipart/related; type="application/dicom" is offered')
    return found


def multipart(node: Node, items: list[Stored], accept: str) -> tuple[Iterator[bytes], str]:
    allowed = accepted_syntaxes(accept)
    if allowed is not None:
        wrong = [i for i in items if i.transfer_syntax not in allowed]
        if wrong:
            raise NotAcceptable(f"stored as transfer syntax {wrong[0].transfer_syntax}; transcoding is not "
                                "offered (ask for transfer-syntax=*)")
    boundary = secrets.token_hex(16)

    def parts() -> Iterator[bytes]:
        for item in items:
            data = node.store.get(item.digest)
            yield (f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={item.transfer_syntax}"
                   f"\r\nContent-Length: {len(data)}\r\n\r\n").encode()
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return parts(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _bulk(element: Any) -> str:
    return ""


def _strip_bulk(doc: dict[str, Any]) -> dict[str, Any]:
    for tag, value in doc.items():
        if "BulkDataURI" in value:
            doc[tag] = {"vr": value["vr"]}
        elif value.get("vr") == "SQ":
            for item in value.get("Value", []):
                _strip_bulk(item)
    return doc


def metadata(node: Node, items: list[Stored]) -> list[dict[str, Any]]:
    """DICOM JSON of each instance without bulk data (binary values over 1 KiB are given as VR only)."""
    out = []
    for item in items:
        ds = dcmread(io.BytesIO(node.store.get(item.digest)))
        out.append(_strip_bulk(ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=_bulk)))
    return out
