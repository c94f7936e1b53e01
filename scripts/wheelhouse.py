"""Finish a wheelhouse for the offline install (``make wheelhouse``; docs/deployment.md "Offline install").

Checks that every file is a wheel, that PyTorch is the CPU build and that no CUDA wheel came along, then writes
``requirements.txt``: one ``name==version --hash=sha256:...`` line per wheel, the input of
``pip install --no-index --require-hashes`` in scripts/install-offline.sh.

    python scripts/wheelhouse.py WHEELHOUSE
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(folder: Path) -> int:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in ("requirements.txt",
                                                                                 "constraints.txt"))
    problems = [f"{p.name}: not a wheel" for p in files if p.suffix != ".whl"]
    lines = ["# incisive offline wheelhouse: pip install --no-index --require-hashes -r requirements.txt"]
    seen: dict[str, str] = {}
    for path in (p for p in files if p.suffix == ".whl"):
        match = WHEEL.match(path.name)
        if not match:
            problems.append(f"{path.name}: not a wheel file name")
            continue
        name = re.sub(r"[-_.]+", "-", match["name"]).lower()
        version = match["version"]
        if name.startswith("nvidia-") and name != "nvidia-ml-py":
            problems.append(f"{path.name}: a CUDA wheel; the node installs the CPU build of PyTorch")
        if name == "torch" and not version.endswith("+cpu"):
            problems.append(f"{path.name}: PyTorch must be the CPU build (2.13.0+cpu)")
        if name in seen:
            problems.append(f"{path.name}: a second version of {name} (also {seen[name]})")
        seen[name] = version
        lines.append(f"{name}=={version} --hash=sha256:{sha256(path)}")
    if "torch" not in seen or "incisive" not in seen:
        problems.append("torch and incisive must both be in the wheelhouse")
    if problems:
        print("wheelhouse refused:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    (folder / "requirements.txt").write_text("\n".join(lines) + "\n")
    print(f"{folder}: {len(seen)} wheels, {sum(p.stat().st_size for p in files) / 1e6:.0f} MB, "
          f"hashes in {folder / 'requirements.txt'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
