"""Model bundles and the model registry.

A bundle is a directory::

    manifest.json   name, version, job types, inputs it reads, hyper-parameters
    task.py         load_data(source, manifest, split) / build_model(manifest): the contract in
                    :mod:`incisive.federated.task` (the only incisive module it may import)

Its identity is the sha256 over every file (sorted relative path + NUL + bytes), so a node that approved a hash
runs exactly that code. The registry keeps ``<registry>/<name>/<version>/bundle/`` plus ``record.json``
(digest, registration time) and, per training job, the final parameters with their provenance.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from incisive.common.errors import ConfigError, InputError
from incisive.common.fsio import atomic_write_bytes, atomic_write_text, fsync_dir

MANIFEST = "manifest.json"
TASK = "task.py"
JOB_TYPES = ("train", "evaluate", "infer")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,31}$")
SHIPPED = Path(__file__).parent / "bundles"
IGNORED = ("__pycache__", ".pyc", ".DS_Store")


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    kind: str  # tabular | image
    job_types: list[str]
    inputs: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        try:
            m = cls(name=str(data["name"]), version=str(data["version"]), kind=str(data["kind"]),
                    job_types=list(data["job_types"]), inputs=dict(data["inputs"]),
                    params=dict(data.get("params", {})), description=str(data.get("description", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"invalid bundle manifest: missing or bad field {exc}") from None
        if not NAME_RE.match(m.name) or not VERSION_RE.match(m.version):
            raise InputError("invalid bundle manifest: name must be lower-case [a-z0-9-], version [A-Za-z0-9.+-]")
        unknown = sorted(set(m.job_types) - set(JOB_TYPES))
        if unknown:
            raise InputError(f"invalid bundle manifest: unknown job type(s) {', '.join(unknown)}")
        return m

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


def bundle_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and not any(i in p.as_posix() for i in IGNORED))


def bundle_digest(path: Path) -> str:
    """sha256 over the bundle's files: relative path, NUL, length, NUL, bytes — for each file in order."""
    h = hashlib.sha256()
    for f in bundle_files(path):
        data = f.read_bytes()
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()


def read_manifest(path: Path) -> Manifest:
    mf = path / MANIFEST
    if not mf.is_file() or not (path / TASK).is_file():
        raise InputError(f"{path} is not a model bundle (needs {MANIFEST} and {TASK})")
    try:
        return Manifest.from_dict(json.loads(mf.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid bundle manifest: {exc}") from None


def load_task(path: Path, digest: str) -> ModuleType:
    """Import ``task.py`` of a bundle under a name unique to its digest (two versions never collide)."""
    name = f"incisive_bundle_{digest[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path / TASK)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {TASK} from the bundle")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def parse_ref(ref: str) -> tuple[str, str, str | None]:
    """``name:version[@job]`` → (name, version, job)."""
    job = None
    if "@" in ref:
        ref, job = ref.split("@", 1)
    if ":" not in ref:
        raise InputError("model must be NAME:VERSION (optionally @JOB)")
    name, version = ref.split(":", 1)
    return name, version, job


@dataclass(frozen=True)
class RegisteredBundle:
    manifest: Manifest
    digest: str
    path: Path
    registered_at: str


class Registry:
    """Model registry on disk (the platform's model registry keeps the same layout and records)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, name: str, version: str) -> Path:
        if not NAME_RE.match(name) or not VERSION_RE.match(version):
            raise InputError("invalid model name or version")
        return self.root / name / version

    def register(self, src: Path, name: str | None = None, version: str | None = None) -> RegisteredBundle:
        src = src.expanduser().resolve()
        manifest = read_manifest(src)
        if (name and name != manifest.name) or (version and version != manifest.version):
            raise InputError(f"--name/--version do not match the bundle manifest ({manifest.ref})")
        target = self._dir(manifest.name, manifest.version)
        digest = bundle_digest(src)
        if target.exists():
            existing = self.get(manifest.name, manifest.version)
            if existing.digest != digest:
                raise InputError(f"{manifest.ref} is already registered with another hash; bump the version")
            return existing
        tmp = target.with_name(f".{manifest.version}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp / "bundle", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        record = {"name": manifest.name, "version": manifest.version, "sha256": digest,
                  "registered_at": datetime.now(UTC).isoformat(timespec="seconds")}
        atomic_write_text(tmp / "record.json", json.dumps(record, indent=2))  # durable before it is published
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(target)
        fsync_dir(target.parent)
        return self.get(manifest.name, manifest.version)

    def get(self, name: str, version: str) -> RegisteredBundle:
        d = self._dir(name, version)
        if not (d / "record.json").is_file():
            raise InputError(f"model {name}:{version} is not registered")
        record = json.loads((d / "record.json").read_text())
        path = d / "bundle"
        digest = bundle_digest(path)
        if digest != record["sha256"]:
            raise InputError(f"model {name}:{version} in the registry does not match its recorded hash")
        return RegisteredBundle(read_manifest(path), digest, path, record["registered_at"])

    def list(self) -> list[RegisteredBundle]:
        out = []
        for rec in sorted(self.root.glob("*/*/record.json")):
            out.append(self.get(rec.parent.parent.name, rec.parent.name))
        return out

    def trained_path(self, name: str, version: str, job: str) -> Path:
        return self._dir(name, version) / "trained" / f"{job}.npz"

    def add_trained(self, name: str, version: str, job: str, model: Path, provenance: dict[str, Any]) -> Path:
        target = self.trained_path(name, version, job)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, model.read_bytes())  # never a torn model under its final name
        atomic_write_text(target.with_suffix(".json"), json.dumps(provenance, indent=2, default=str))
        return target


def shipped_bundle(name: str) -> Path:
    path = SHIPPED / name.replace("-", "_")
    if not (path / MANIFEST).is_file():
        raise InputError(f"no shipped bundle {name!r}")
    return path
