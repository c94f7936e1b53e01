"""Safe recursive discovery of candidate files under an import root.

Directory symlinks are never followed (no loops, no escaping the root); a file symlink is accepted only when
it resolves to a regular file inside the root. Anything else is reported, with a reason, not raised.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Candidate:
    path: Path
    rel: str
    problem: str | None = None  # set when the entry cannot be imported


def walk(root: Path) -> Iterator[Candidate]:
    """Yield every file under ``root`` (or ``root`` itself if it is a file), sorted for reproducibility."""
    root = root.resolve()
    if root.is_file():
        yield Candidate(root, root.name)
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in [d for d in dirnames if (here / d).is_symlink()]:
            yield Candidate(here / name, str((here / name).relative_to(root)), "directory symlink not followed")
        for name in sorted(filenames):
            path = here / name
            rel = str(path.relative_to(root))
            yield Candidate(path, rel, _problem(path, root))


def _problem(path: Path, root: Path) -> str | None:
    try:
        if path.is_symlink():
            target = path.resolve(strict=True)
            if not target.is_relative_to(root):
                return "symlink points outside the import folder"
        st = path.stat()
    except FileNotFoundError:
        return "broken symlink"
    except RuntimeError:
        return "symlink loop"
    except OSError as exc:
        return f"cannot stat: {exc.strerror or 'error'}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None
