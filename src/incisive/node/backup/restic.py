"""Encrypted, deduplicated off-site copies through the ``restic`` command (Debian package ``restic``).

restic encrypts everything with a repository password that the data provider keeps: a password file named at
``target add --password-file`` or ``RESTIC_PASSWORD_FILE`` / ``RESTIC_PASSWORD`` in the environment — never
this repository, never the node settings. Each run backs up ``store/objects``, ``quarantine/objects`` and a
staging folder holding the catalogue dump, config and the manifest (same format as a directory target).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from incisive.common.errors import ConfigError, IncisiveError, InputError
from incisive.common.fsio import atomic_write_bytes
from incisive.common.logging import get_logger
from incisive.node.backup.config import Target
from incisive.node.backup.manifest import MANIFEST, Manifest, new_snapshot_id
from incisive.node.backup.replica import RunReport, plan
from incisive.node.backup.restore import RestoreReport, restore_layout
from incisive.node.backup.stage import stage
from incisive.node.backup.verify import Problem, VerifyReport
from incisive.node.home import Node

log = get_logger("backup")
Progress = Callable[[int, int, int, int], None]
STAGE = Path("backup") / "stage"
TAG = "incisive"


@dataclass
class Restic:
    target: Target

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RESTIC_REPOSITORY"}
        env["RESTIC_REPOSITORY"] = self.target.location
        if self.target.password_file:
            env["RESTIC_PASSWORD_FILE"] = self.target.password_file
            env.pop("RESTIC_PASSWORD", None)
        elif not (env.get("RESTIC_PASSWORD_FILE") or env.get("RESTIC_PASSWORD")):
            raise ConfigError(f"restic target {self.target.name!r} has no password: give --password-file or set "
                              "RESTIC_PASSWORD_FILE")
        env.setdefault("RESTIC_CACHE_DIR", str(Path(tempfile.gettempdir()) / "incisive-restic-cache"))
        return env

    @staticmethod
    def binary() -> str:
        path = shutil.which("restic")
        if path is None:
            raise ConfigError("restic not found; install it (Debian: apt-get install restic)")
        return path

    def run(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary(), *args], env=self.env(), cwd=cwd, capture_output=True, text=True,
                              check=False)
        if check and proc.returncode != 0:
            raise IncisiveError(f"restic {args[0]} failed: {_last_line(proc.stderr)}")
        return proc

    def stream(self, *args: str, cwd: Path | None = None) -> Iterator[dict[str, Any]]:
        """Run with ``--json`` and yield each JSON message as it arrives."""
        with subprocess.Popen([self.binary(), *args, "--json"], env=self.env(), cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            for line in proc.stdout:
                if line.startswith("{"):
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
            err = proc.stderr.read()
            if proc.wait() != 0:
                raise IncisiveError(f"restic {args[0]} failed: {_last_line(err)}")

    def ensure_repository(self) -> bool:
        """Initialise the repository if it does not exist; True when it was created."""
        if self.run("cat", "config", check=False).returncode == 0:
            return False
        self.run("init")
        return True

    def snapshots(self, node_id: str | None = None) -> list[dict[str, Any]]:
        args = ["snapshots", "--json", "--tag", TAG]
        if node_id:
            args += ["--host", node_id]
        data: list[dict[str, Any]] = json.loads(self.run(*args).stdout or "[]") or []
        return sorted(data, key=lambda s: str(s["time"]))

    def resolve(self, ref: str, node_id: str | None = None) -> dict[str, Any]:
        snaps = self.snapshots(node_id)
        if not snaps:
            raise InputError(f"no snapshot in restic repository {self.target.location}")
        if ref == "latest":
            return snaps[-1]
        matches = [s for s in snaps if str(s["id"]).startswith(ref) or _tag(s, "snapshot") == ref]
        if len(matches) != 1:
            raise InputError(f"no snapshot {ref!r}" if not matches else f"snapshot {ref!r} is ambiguous")
        return matches[0]

    def manifest(self, snapshot: dict[str, Any]) -> Manifest:
        proc = self.run("dump", str(snapshot["id"]), f"/{STAGE.as_posix()}/{MANIFEST}")
        return Manifest.from_json(proc.stdout.encode())


def _tag(snapshot: dict[str, Any], name: str) -> str | None:
    for tag in snapshot.get("tags") or []:
        if str(tag).startswith(name + ":"):
            return str(tag)[len(name) + 1:]
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def run_restic(node: Node, target: Target, passphrase: str | None = None,
               progress: Progress | None = None) -> tuple[RunReport, Manifest]:
    started = time.monotonic()
    restic = Restic(target)
    restic.ensure_repository()
    folder = node.home / STAGE
    shutil.rmtree(folder, ignore_errors=True)
    try:
        created = datetime.now(UTC)
        staged = stage(node, folder, passphrase)
        entries, _todo, missing = plan(node, staged.catalogue.refs, None)
        totals = {"objects": sum(len(v) for v in entries.values()),
                  "bytes": sum(s for v in entries.values() for _, s in v), "missing_in_store": missing}
        manifest = Manifest(id=new_snapshot_id(created), created=created.isoformat(), node_id=node.settings.node_id,
                            provider=node.settings.provider, catalogue=staged.catalogue_entry, objects=entries,
                            files=staged.files, key_included=staged.key_included, totals=totals)
        atomic_write_bytes(folder / MANIFEST, manifest.to_json())
        paths = [p for p in ("store/objects", "quarantine/objects") if (node.home / p).is_dir()]
        summary: dict[str, Any] = {}
        for msg in restic.stream("backup", "--host", node.settings.node_id, "--tag", TAG,
                                 "--tag", f"snapshot:{manifest.id}", "--tag", f"objects:{totals['objects']}",
                                 "--tag", f"bytes:{totals['bytes']}", *paths, STAGE.as_posix(), cwd=node.home):
            if msg.get("message_type") == "status" and progress:
                progress(int(msg.get("files_done", 0)), int(msg.get("total_files", 0)),
                         int(msg.get("bytes_done", 0)), int(msg.get("total_bytes", 0)))
            elif msg.get("message_type") == "summary":
                summary = msg
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not summary.get("snapshot_id"):
        raise IncisiveError("restic backup reported no snapshot")
    new = int(summary.get("files_new", 0)) + int(summary.get("files_changed", 0))
    report = RunReport(target.name, str(summary["snapshot_id"]), totals["objects"], totals["bytes"], new,
                       int(summary.get("data_added", 0)), int(summary.get("files_unmodified", 0)), missing, 0,
                       round(time.monotonic() - started, 3), staged.key_included)
    log.info("backup run (restic): target=%s snapshot=%s objects=%d new_files=%d", target.name,
             report.snapshot, totals["objects"], new)
    return report, manifest


def list_restic(target: Target, node_id: str | None) -> list[dict[str, Any]]:
    out = []
    for s in Restic(target).snapshots(node_id):
        out.append({"id": str(s["short_id"]), "time": str(s["time"]), "objects": int(_tag(s, "objects") or 0),
                    "bytes": int(_tag(s, "bytes") or 0), "manifest": _tag(s, "snapshot"), "host": s.get("hostname")})
    return out


def verify_restic(target: Target, node_id: str | None, ref: str | None, full: bool) -> VerifyReport:
    """``restic check`` (``--read-data`` when full) and every manifest object present with its size."""
    restic = Restic(target)
    report = VerifyReport(target.name, full)
    proc = restic.run("check", *(["--read-data"] if full else []), check=False)
    if proc.returncode != 0:
        report.problems.append(Problem("repository-damaged", target.location, _last_line(proc.stderr or proc.stdout)))
        return report  # reading snapshots from a damaged repository makes restic retry for minutes
    snaps = [restic.resolve(ref, node_id)] if ref else restic.snapshots(node_id)
    for snap in snaps:
        sid = str(snap["short_id"])
        report.snapshots.append(sid)
        try:
            manifest = restic.manifest(snap)
        except (IncisiveError, ValueError, TypeError):
            report.problems.append(Problem("manifest-unreadable", MANIFEST, "manifest cannot be read", [sid]))
            continue
        sizes = {str(m["path"]): int(m.get("size", 0)) for m in _ls(restic, snap) if m.get("type") == "file"}
        for area, entries in manifest.objects.items():
            for digest, size in entries:
                path = f"/{area}/objects/{digest[:2]}/{digest[2:4]}/{digest}"
                report.objects_checked += 1
                report.bytes_checked += size
                if path not in sizes:
                    report.problems.append(Problem("missing-object", digest, "object is missing from the snapshot",
                                                   [sid]))
                elif sizes[path] != size:
                    report.problems.append(Problem("truncated-object", digest,
                                                   f"object has {sizes[path]} bytes, expected {size}", [sid]))
        for rel, meta in manifest.files.items():
            path = f"/{STAGE.as_posix()}/{rel}"
            if sizes.get(path) != int(meta["size"]):
                report.problems.append(Problem("missing-file" if path not in sizes else "truncated-file", rel,
                                               "snapshot file missing or of the wrong size", [sid]))
    return report


def _ls(restic: Restic, snap: dict[str, Any]) -> list[dict[str, Any]]:
    lines = restic.run("ls", "--json", str(snap["id"])).stdout.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and '"struct_type":"node"' in line]


def restore_restic(target: Target, node_id: str | None, ref: str, to: Path, catalogue_url: str = "",
                   passphrase: str | None = None, progress: Progress | None = None) -> RestoreReport:
    restic = Restic(target)
    snap = restic.resolve(ref, node_id)
    to = to.expanduser().resolve()
    to.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".incisive-restore-", dir=to.parent) as tmp:
        restic.run("restore", str(snap["id"]), "--target", tmp)
        root = Path(tmp)
        manifest = Manifest.from_json((root / STAGE / MANIFEST).read_bytes())
        return restore_layout(manifest, root / STAGE,
                              lambda area, d: root / area / "objects" / d[:2] / d[2:4] / d,
                              to, catalogue_url, passphrase, progress)


def prune_restic(target: Target, node_id: str | None, keep_last: int, keep_monthly: int,
                 dry_run: bool = False) -> dict[str, Any]:
    if keep_last == 0 and keep_monthly == 0:
        raise InputError("refusing to remove every snapshot; keep at least one")
    args = ["forget", "--json", "--tag", TAG, "--keep-last", str(keep_last), "--keep-monthly", str(keep_monthly)]
    if node_id:
        args += ["--host", node_id]
    args += ["--dry-run"] if dry_run else ["--prune"]
    out = Restic(target).run(*args).stdout
    groups = [json.loads(line) for line in out.splitlines() if line.startswith("[")]
    kept = [str(s["short_id"]) for g in (groups[0] if groups else []) for s in g.get("keep") or []]
    removed = [str(s["short_id"]) for g in (groups[0] if groups else []) for s in g.get("remove") or []]
    return {"kept": kept, "removed": removed, "dry_run": dry_run}
