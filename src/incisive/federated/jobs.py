"""Job records on disk: one directory per job (the platform's job API keeps the same fields).

```
<jobs>/<job>/job.json        spec + status + provenance (written by the launcher)
<jobs>/<job>/server.json     phase/round/finished, written by the ServerApp
<jobs>/<job>/rounds.jsonl    one line per round and phase: per-node metrics, failures, pooled metrics
<jobs>/<job>/received.jsonl  what the server received from each node: array shapes/bytes + metric names
<jobs>/<job>/model.npz       final global parameters
```
"""

from __future__ import annotations

import io
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from incisive.common.errors import InputError
from incisive.common.fsio import atomic_write_bytes, atomic_write_text


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def _append(path: Path, data: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(data, default=str) + "\n")
        fh.flush()


class Job:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def spec(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / "job.json").read_text(encoding="utf-8"))
        return data

    def update(self, **changes: Any) -> dict[str, Any]:
        spec = self.spec
        spec.update(changes)
        _write_json(self.path / "job.json", spec)
        return spec

    def server_state(self) -> dict[str, Any]:
        p = self.path / "server.json"
        data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}
        return data

    def set_server_state(self, **state: Any) -> None:
        current = self.server_state()
        current.update(state, updated_at=now())
        _write_json(self.path / "server.json", current)

    def add_round(self, record: dict[str, Any]) -> None:
        _append(self.path / "rounds.jsonl", {**record, "at": now()})

    def add_received(self, record: dict[str, Any]) -> None:
        _append(self.path / "received.jsonl", record)

    def _lines(self, name: str) -> list[dict[str, Any]]:
        p = self.path / name
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]

    def rounds(self) -> list[dict[str, Any]]:
        return self._lines("rounds.jsonl")

    def received(self) -> list[dict[str, Any]]:
        return self._lines("received.jsonl")

    @property
    def model_path(self) -> Path:
        return self.path / "model.npz"

    def save_model(self, weights: list[np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, *weights)
        atomic_write_bytes(self.model_path, buffer.getvalue())

    def load_model(self) -> list[np.ndarray]:
        if not self.model_path.exists():
            raise InputError(f"job {self.id} has no final model")
        return load_weights(self.model_path)


def load_weights(source: Path | IO[bytes]) -> list[np.ndarray]:
    """The parameter arrays of a ``model.npz`` (a path, or its bytes as a file object), in order."""
    with np.load(source) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, spec: dict[str, Any]) -> Job:
        self.root.mkdir(parents=True, exist_ok=True)
        job_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        path = self.root / job_id
        path.mkdir()
        _write_json(path / "job.json", {"id": job_id, "created_at": now(), "status": "created", **spec})
        return Job(path)

    def get(self, job_id: str) -> Job:
        path = self.root / job_id
        if not job_id or "/" in job_id or not (path / "job.json").is_file():
            raise InputError(f"no job {job_id!r}")
        return Job(path)

    def list(self) -> list[Job]:
        return [Job(p.parent) for p in sorted(self.root.glob("*/job.json"))]
