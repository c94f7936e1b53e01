"""Durable, atomic writes of the small files that hold state, and the one TOML writer.

Every file whose loss or tearing would change what a node or the platform does (settings, node policy, bundle
approvals, keys, backup manifests, agent configuration, job state, the audit head) is written with
:func:`atomic_write_bytes` / :func:`atomic_write_text`:

1. a temporary file in the same directory (same file system, so the rename is atomic), created exclusively, its
   mode set before any byte is written (``mode=0o600`` for secrets; else the mode of the file it replaces, else
   the umask's default);
2. the data written, flushed and ``fsync``'d;
3. renamed over the target (``exclusive=True``: linked to it instead, which fails if the target exists, so a key
   is never overwritten and never seen half-written);
4. the directory ``fsync``'d, so the rename itself survives a power cut.

After a crash the target is the old version or the new one, never a mix; at worst a ``.<name>.<hex>.tmp`` file is
left beside it. The content-addressed object store keeps its own write order (:mod:`incisive.node.store`) and
shares only :func:`fsync_dir`.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "fsync_dir", "toml_document", "toml_value", "write_toml"]

_NO_HARDLINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV}


def fsync_dir(path: Path) -> None:
    """Commit a directory's entries (a rename, a new or removed file) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _existing_mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return None


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None, exclusive: bool = False) -> None:
    """Replace ``path`` with ``data``: whole or not at all after a crash, durable once this returns.

    ``mode``: the file's permission bits, set on the temporary file before any data is written (default: those
    of the file being replaced, else ``0o666`` less the umask). ``exclusive``: refuse with
    :class:`FileExistsError` when ``path`` already exists (key files are created once, never overwritten).
    """
    path = Path(path)
    directory = path.parent
    if exclusive and path.exists():
        raise FileExistsError(errno.EEXIST, "file exists", str(path))
    keep = mode if mode is not None else _existing_mode(path)
    tmp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666 if keep is None else 0o600)
    try:
        try:
            if keep is not None:
                os.fchmod(fd, keep)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            _link_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def _link_exclusive(tmp: Path, path: Path) -> None:
    """Put the complete ``tmp`` at ``path`` unless ``path`` exists (``link`` is atomic and never replaces)."""
    try:
        os.link(tmp, path)
    except OSError as exc:
        if exc.errno not in _NO_HARDLINKS:
            raise  # FileExistsError among them
        # A file system without hard links: the rename is still atomic; only a race with another creator
        # between this check and the rename is no longer refused.
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def atomic_write_text(path: Path, text: str, *, mode: int | None = None, exclusive: bool = False,
                      encoding: str = "utf-8") -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded (UTF-8 by default; newlines are written as given)."""
    atomic_write_bytes(path, text.encode(encoding), mode=mode, exclusive=exclusive)


def toml_value(value: Any) -> str:
    """A TOML literal for a bool, int, float, string or list of them (strings as basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)  # 0.5, 1e-05, inf, -inf: all TOML floats
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_document(items: Mapping[str, Any] | Iterable[tuple[str, Any]], header: str = "") -> str:
    """Top-level ``key = value`` lines (no tables), after an optional ``# header`` comment line."""
    pairs = items.items() if isinstance(items, Mapping) else items
    lines = [f"# {header}"] if header else []
    lines += [f"{name} = {toml_value(value)}" for name, value in pairs]
    return "\n".join(lines) + "\n"


def write_toml(path: Path, items: Mapping[str, Any], header: str = "", *, mode: int | None = None) -> None:
    """:func:`toml_document` written with :func:`atomic_write_text`."""
    atomic_write_text(path, toml_document(items, header), mode=mode)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (created 0600) for the block: other processes and
    threads taking the same lock wait. Closing the descriptor releases it, whatever ends the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
