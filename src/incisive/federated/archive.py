"""Bundle archives: a bundle directory as a deterministic tar.gz (what the platform stores and nodes download).

The archive is only a container: a bundle's identity stays :func:`incisive.federated.bundle.bundle_digest` over
its files, so whoever unpacks an archive re-hashes the files before trusting them. Unpacking refuses links,
devices, absolute or ``..`` paths and anything over :data:`MAX_BYTES` (the ``data`` extraction filter).
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from incisive.common.errors import InputError
from incisive.federated.bundle import bundle_files

MAX_BYTES = 8 << 20
MAX_MEMBERS = 200


def pack(path: Path) -> bytes:
    """tar.gz of the bundle's files (sorted, mtime/owner zeroed: the same directory always packs the same)."""
    buf = io.BytesIO()
    # gzip's header carries a timestamp too: zero it, or the same bundle packs differently every second
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for f in bundle_files(path):
            data = f.read_bytes()
            info = tarfile.TarInfo(f.relative_to(path).as_posix())
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> Path:
    """Extract an archive made by :func:`pack` into ``dest`` (created); InputError on anything unexpected."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            if len(members) > MAX_MEMBERS or sum(m.size for m in members) > MAX_BYTES:
                raise InputError("bundle archive too large")
            for m in members:
                name = Path(m.name)
                if not (m.isfile() or m.isdir()) or name.is_absolute() or ".." in name.parts:
                    raise InputError("bundle archive holds an unsafe entry")
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"not a bundle archive ({type(exc).__name__})") from None
    return dest
