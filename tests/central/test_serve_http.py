"""``incisive central serve``, HTTP side: a real Central Node with two tenants served on free ports, real requests.

The instances are de-identified by our own engine: a synthetic cohort per provider goes through a plain node
(``incisive node import`` in a subprocess, so this process's de-identifier state stays the tenants' verify door)
and the stored objects are uploaded. The world built here (:func:`build_world`) is shared with test_dimse.py and
test_isolation_walk.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from sqlalchemy import func, select

from incisive.central.app import BAD_TOKEN, OPERATOR_REFUSED
from incisive.central.dimse import CONGESTION
from incisive.central.erase import erase_tenant
from incisive.central.home import Central, create_operator_token
from incisive.central.serve import CentralServices
from incisive.central.tenants import add_tenant
from incisive.common.audit_log import NodeAudit
from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.federated.bundle import RegisteredBundle, Registry, shipped_bundle
from incisive.node.catalogue.models import ClinicalRecord
from incisive.node.home import Node
from incisive.node.policy import load_policy
from tests.node.serve_process import read_lines

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


# --- de-identified cohorts, one per provider -----------------------------------------------------------------
@dataclass
class Cohort:
    files: list[Path]  # de-identified Part 10 files, as a provider's `incisive upload` would send them
    identified: list[Path]  # the originals (fake PHI): the door must refuse them
    studies: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    sops: list[str] = field(default_factory=list)
    pseudonyms: list[str] = field(default_factory=list)

    def markers(self) -> set[str]:
        """Strings only this provider's data holds: no response to another tenant may contain one."""
        return set(self.studies) | set(self.series) | set(self.sops) | set(self.pseudonyms)


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "incisive", *args], check=True, env=ENV, capture_output=True,
                   timeout=300)


def make_cohort(root: Path, provider: str, seed: int) -> Cohort:
    generate_cohort(root / "cohort", CohortSpec(patients=3, seed=seed, size=32, ct_slices=3, mr_slices=2))
    _cli("node", "init", str(root / "plain"), "--provider", provider)
    _cli("node", "import", str(root / "cohort" / "dicom"), "--home", str(root / "plain"), "--workers", "1")
    files = sorted(p for p in (root / "plain" / "store" / "objects").rglob("*") if p.is_file())
    cohort = Cohort(files, sorted(p for p in (root / "cohort" / "dicom").rglob("*") if p.is_file()))
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == "YES"
        for values, value in ((cohort.studies, ds.StudyInstanceUID), (cohort.series, ds.SeriesInstanceUID),
                              (cohort.sops, ds.SOPInstanceUID), (cohort.pseudonyms, ds.PatientID)):
            if str(value) not in values:
                values.append(str(value))
    return cohort


@pytest.fixture(scope="session")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Cohort]:
    root = tmp_path_factory.mktemp("providers")
    return {"a": make_cohort(root / "a", "Hospital A", 31), "b": make_cohort(root / "b", "Hospital B", 32)}


# --- HTTP helpers ------------------------------------------------------------------------------------------
BOUNDARY = "incisive-test-boundary"


def stow_body(files: list[Path]) -> bytes:
    parts = [b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + f.read_bytes() + b"\r\n"
             for f in files]
    return b"".join(parts) + b"--" + BOUNDARY.encode() + b"--\r\n"


STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def stow(url: str, token: str, files: list[Path]) -> httpx.Response:
    return httpx.post(f"{url}/dicom-web/studies", content=stow_body(files), timeout=60,
                      headers={**bearer(token), "Content-Type": STOW_TYPE})


# --- a served Central Node -----------------------------------------------------------------------------------
@dataclass
class Side:
    id: str
    ae_title: str
    calling_ae: str
    manager: str
    cohort: Cohort
    uploader: str = ""
    viewer: str = ""


@dataclass
class World:
    central: Central
    services: CentralServices
    url: str
    dicom_port: int
    operator: str
    a: Side
    b: Side
    registry: Registry

    def node(self, side: Side) -> Node:
        return self.central.tenant_node(side.id)

    def markers_of(self, side: Side) -> set[str]:
        return side.cohort.markers() | {side.id, f"label-of-{side.id}", f"researcher-of-{side.id}"}


def local_bundles(registry: Registry) -> Any:
    """A bundle source for POST /tenant/v1/approvals: a local registry instead of the platform download."""
    def source(_node: Node, name: str, version: str, _dest: Path) -> RegisteredBundle:
        return registry.get(name, version)
    return source


def new_token(url: str, manager: str, role: str, label: str) -> str:
    r = httpx.post(f"{url}/tenant/v1/tokens", json={"role": role, "label": label}, headers=bearer(manager))
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def build_world(central: Central, root: Path, cohorts: dict[str, Cohort], upload: bool = True) -> Iterator[World]:
    """``central`` (a conftest fixture) with tenants A and B (their cohorts uploaded over STOW-RS unless not
    ``upload``), served on 127.0.0.1 free ports."""
    # each Receiver carries its own node's door (receive.node_worker): nothing process-wide to reset between tests
    operator = create_operator_token(central, "tests")
    sides = {}
    for key, name in (("a", "Hospital A"), ("b", "Hospital B")):
        calling = f"PACS{key.upper()}"
        record, manager = add_tenant(central, name, "IT", f"it@{key}.example", allowed_aes=[calling])
        sides[key] = Side(record.id, record.ae_title, calling, manager, cohorts[key])
    registry = Registry(root / "registry")
    registry.register(shipped_bundle("tabular-risk"))
    services = CentralServices(central, host="127.0.0.1", dicom_port=0, http_port=0,
                               bundle_source=local_bundles(registry))
    bound = services.start()
    url = f"http://127.0.0.1:{bound.http_port}"
    try:
        for side in sides.values():
            side.uploader = new_token(url, side.manager, "uploader", f"label-of-{side.id}")
            side.viewer = new_token(url, side.manager, "viewer", f"label-of-{side.id}")
            if upload:
                r = stow(url, side.uploader, side.cohort.files)
                assert r.status_code == 200, r.text
            r = httpx.put(f"{url}/tenant/v1/policy", json={"researchers": [f"researcher-of-{side.id}"]},
                          headers=bearer(side.manager))
            assert r.status_code == 200, r.text
        yield World(central, services, url, bound.dicom_port, operator, sides["a"], sides["b"], registry)
    finally:
        services.stop()


@pytest.fixture
def world(central: Central, tmp_path: Path, cohorts: dict[str, Cohort]) -> Iterator[World]:
    yield from build_world(central, tmp_path, cohorts)


def get(w: World, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{w.url}{path}", headers=bearer(token), timeout=30, **kwargs)


def audit_actions(home: Path) -> list[dict[str, Any]]:
    return list(NodeAudit(home).entries())


# --- tests -------------------------------------------------------------------------------------------------
def test_token_routes_to_its_tenant(world: World) -> None:
    a, b = world.a, world.b
    for side, other in ((a, b), (b, a)):
        studies = get(world, "/dicom-web/studies", side.viewer).json()
        found = {s["0020000D"]["Value"][0] for s in studies}
        assert found == set(side.cohort.studies) and not found & set(other.cohort.studies)
    # the manager satisfies every role of its tenant: QIDO as well as STOW
    assert get(world, "/dicom-web/studies", a.manager).status_code == 200
    assert stow(world.url, a.manager, a.cohort.files[:1]).status_code == 200
    # the narrower roles keep their limits
    assert get(world, "/dicom-web/studies", a.uploader).status_code == 403
    assert stow(world.url, a.viewer, a.cohort.files[:1]).status_code == 403
    r = httpx.post(f"{world.url}/tenant/v1/tokens", json={"role": "viewer"}, headers=bearer(a.viewer))
    assert r.status_code == 403
    r = httpx.post(f"{world.url}/tenant/v1/tokens", json={"role": "manager"}, headers=bearer(a.manager))
    assert r.status_code == 400 and "uploader" in r.json()["detail"]


def test_bad_tokens_are_401_without_naming_a_tenant(world: World) -> None:
    a = world.a
    cases = {
        "none": None,
        "malformed": "not-a-token",
        "node token": "inc_abcdefabcdef",
        "unknown tenant": "inc_hospital-z.secret",
        "forged secret": f"inc_{a.id}.forged-secret",
        "another tenant's secret under this prefix": f"inc_{a.id}.{world.b.manager.partition('.')[2]}",
    }
    paths = ("/dicom-web/studies", "/tenant/v1/usage", "/tenant/v1/policy")
    for number, (label, token) in enumerate(cases.items()):  # fewer than 5 failures per throttle: no 429 yet
        path = paths[number % len(paths)]
        r = get(world, path, token)
        assert r.status_code == 401, (label, path, r.text)
        assert "hospital-b" not in r.text and "Hospital" not in r.text, (label, r.text)
        if label == "unknown tenant":
            assert r.json()["detail"] == BAD_TOKEN
    # a forged secret under a real tenant's prefix is refused by that tenant's own store and audited there
    refused = [e for e in audit_actions(world.node(a).home) if e["action"] == "api.auth"]
    assert refused and all(e["outcome"] == "refused" for e in refused)
    assert not [e for e in audit_actions(world.node(world.b).home) if e["action"] == "api.auth"]
    # unknown tenants and malformed tokens land in the central chain
    assert [e for e in audit_actions(world.central.dir) if e["action"] == "api.auth"]


def test_failed_tokens_are_throttled(world: World) -> None:
    statuses = [get(world, "/dicom-web/studies", f"inc_nobody-{i}.x").status_code for i in range(7)]
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:]
    blocked = get(world, "/dicom-web/studies", world.a.viewer)  # this source is in back-off, valid token or not
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1


def test_operator_token_lists_tenants_and_nothing_else(world: World) -> None:
    r = get(world, "/central/v1/tenants", world.operator)
    assert r.status_code == 200 and {t["id"] for t in r.json()} == {world.a.id, world.b.id}
    r = get(world, "/central/v1/usage", world.operator)
    assert r.status_code == 200 and sum(u["objects"] for u in r.json()) == len(world.a.cohort.files) + len(
        world.b.cohort.files)
    for token in (None, world.a.manager, "incop_forged"):
        assert get(world, "/central/v1/tenants", token).status_code == 401
    for path in ("/dicom-web/studies", "/tenant/v1/policy", f"/dicom-web/studies/{world.a.cohort.studies[0]}"):
        r = get(world, path, world.operator)
        assert r.status_code == 403 and r.json()["detail"] == OPERATOR_REFUSED
    r = httpx.put(f"{world.url}/tenant/v1/policy", json={"min_cell_count": 1}, headers=bearer(world.operator))
    assert r.status_code == 403
    refused = [e for e in audit_actions(world.central.dir) if e["action"] == "operator.refused"]
    assert len(refused) == 4 and all(e["details"]["reason"] == OPERATOR_REFUSED for e in refused)
    # the route, never what follows it (a tenant's UIDs, a pseudonym): the central chain is the operator's
    assert [e["target"] for e in refused] == ["/dicom-web/studies", "/tenant/v1/policy", "/dicom-web/studies",
                                              "/tenant/v1/policy"]
    assert world.a.cohort.studies[0] not in (world.central.dir / "audit" / "audit.jsonl").read_text()
    assert load_policy(world.node(world.a).home).min_cell_count == 5


def test_policy_set_validated_and_audited_per_tenant(world: World) -> None:
    a, b = world.a, world.b
    r = httpx.put(f"{world.url}/tenant/v1/policy", json={"min_cell_count": 11, "rounding": 5},
                  headers=bearer(a.manager))
    assert r.status_code == 200 and r.json()["min_cell_count"] == 11
    assert load_policy(world.node(a).home).min_cell_count == 11
    assert load_policy(world.node(b).home).min_cell_count == 5
    for bad, status in (({"min_cell_count": 0}, 400), ({"rounding": 1}, 400), ({"no_such": 1}, 400),
                        ({"sandbox": {"mode": "off"}}, 403), ({"sandbox_mode": "off"}, 403)):
        r = httpx.put(f"{world.url}/tenant/v1/policy", json=bad, headers=bearer(a.manager))
        assert r.status_code == status, (bad, r.text)
    assert httpx.put(f"{world.url}/tenant/v1/policy", json={"min_cell_count": 3},
                     headers=bearer(a.viewer)).status_code == 403
    sets = [e for e in audit_actions(world.node(a).home) if e["action"] == "policy.set"]
    assert sets[-1]["details"]["min_cell_count"] == 11 and sets[-1]["actor"].startswith("token:")
    assert all(e["details"]["min_cell_count"] == 5 for e in audit_actions(world.node(b).home)
               if e["action"] == "policy.set")
    assert get(world, "/tenant/v1/policy", a.viewer).json()["min_cell_count"] == 11


def test_bundle_approval_by_sha256(world: World) -> None:
    a, b = world.a, world.b
    bundle = world.registry.get("tabular-risk", "1")
    url = f"{world.url}/tenant/v1/approvals"
    wrong = {"name": "tabular-risk", "version": "1", "sha256": "0" * 64}
    r = httpx.post(url, json=wrong, headers=bearer(a.manager))
    assert r.status_code == 409 and bundle.digest in r.json()["detail"]
    right = {**wrong, "sha256": bundle.digest, "reviewer": "dpo@a"}
    assert httpx.post(url, json=right, headers=bearer(a.viewer)).status_code == 403
    r = httpx.post(url, json=right, headers=bearer(a.manager))
    assert r.status_code == 201 and r.json()["sha256"] == bundle.digest
    assert [e["sha256"] for e in get(world, "/tenant/v1/approvals", a.viewer).json()] == [bundle.digest]
    assert get(world, "/tenant/v1/approvals", b.viewer).json() == []
    assert [e for e in audit_actions(world.node(a).home) if e["action"] == "bundle.approve"]
    assert httpx.delete(f"{url}/tabular-risk/1", headers=bearer(b.manager)).status_code == 404
    assert httpx.delete(f"{url}/tabular-risk/1", headers=bearer(a.manager)).status_code == 200
    assert get(world, "/tenant/v1/approvals", a.viewer).json() == []


def test_approval_needs_the_tenant_enrolled(central: Central) -> None:
    """Without an injected source the bundle comes from the platform, signed by the tenant's agent identity: a
    tenant not enrolled yet gets a clear 409."""
    _, manager = add_tenant(central, "Hospital A", "IT", "it@a")
    services = CentralServices(central, host="127.0.0.1", dicom_port=0, http_port=0)
    bound = services.start()
    try:
        r = httpx.post(f"http://127.0.0.1:{bound.http_port}/tenant/v1/approvals", headers=bearer(manager),
                       json={"name": "tabular-risk", "version": "1", "sha256": "0" * 64})
        assert r.status_code == 409, r.text
        assert "enrol" in r.json()["detail"]
    finally:
        services.stop()


def test_identified_dicom_over_stow_is_refused_with_the_reason(world: World) -> None:
    before = get(world, "/tenant/v1/usage", world.a.viewer).json()["objects"]
    r = stow(world.url, world.a.uploader, world.a.cohort.identified[:2])
    assert r.status_code == 400 and "not de-identified" in r.json()["detail"], r.text
    assert "nothing stored" in r.json()["detail"]
    assert get(world, "/tenant/v1/usage", world.a.viewer).json()["objects"] == before


def clinical_rows(cohort: Cohort) -> list[dict[str, Any]]:
    return [{"patient_id": p, "diagnosis": "C50", "age_band": "50-59", "lesion": 1} for p in cohort.pseudonyms]


def clinical_count(node: Node) -> int:
    with node.catalogue.session() as s:
        return int(s.scalar(select(func.count(ClinicalRecord.id))) or 0)


def test_clinical_rows_stored_idempotently_in_the_own_tenant(world: World) -> None:
    a, b = world.a, world.b
    url = f"{world.url}/tenant/v1/clinical"
    rows = clinical_rows(a.cohort)
    assert httpx.post(url, json={"rows": rows}, headers=bearer(a.viewer)).status_code == 403
    r = httpx.post(url, json={"rows": rows}, headers=bearer(a.uploader))
    assert r.status_code == 200 and r.json() == {"stored": len(rows), "duplicates": 0}, r.text
    r = httpx.post(url, json={"rows": rows}, headers=bearer(a.manager))
    assert r.json() == {"stored": 0, "duplicates": len(rows)}
    bad = [*rows, {"patient_id": rows[0]["patient_id"], "patient_name": "x"}]
    r = httpx.post(url, json={"rows": bad}, headers=bearer(a.uploader))
    assert r.status_code == 400 and "identifier" in r.json()["detail"]
    r = httpx.post(url, json={"rows": [{"patient_id": "Doe^John"}]}, headers=bearer(a.uploader))
    assert r.status_code == 400 and "Doe" not in r.text
    assert httpx.post(url, json={"rows": "nope"}, headers=bearer(a.uploader)).status_code == 400
    assert clinical_count(world.node(a)) == len(rows) and clinical_count(world.node(b)) == 0


def test_tokens_listed_and_revoked(world: World) -> None:
    a = world.a
    extra = new_token(world.url, a.manager, "viewer", "short-lived")
    listed = get(world, "/tenant/v1/tokens", a.manager).json()
    assert {t["role"] for t in listed} == {"manager", "uploader", "viewer"}
    assert not any("token" in t for t in listed)  # ids, roles, labels, dates: never a token or its hash
    mine = next(t["id"] for t in listed if t["label"] == "short-lived")
    manager_id = next(t["id"] for t in listed if t["role"] == "manager")
    assert httpx.delete(f"{world.url}/tenant/v1/tokens/{manager_id}", headers=bearer(a.manager)).status_code == 403
    assert httpx.delete(f"{world.url}/tenant/v1/tokens/{mine}", headers=bearer(a.manager)).status_code == 200
    assert get(world, "/dicom-web/studies", extra).status_code == 401
    assert get(world, "/tenant/v1/usage", a.viewer).json()["objects"] == len(a.cohort.files)


def test_erase_request_then_erase_locks_the_manager_out(world: World) -> None:
    b = world.b
    r = httpx.post(f"{world.url}/tenant/v1/erase-request", headers=bearer(b.viewer))
    assert r.status_code == 403
    r = httpx.post(f"{world.url}/tenant/v1/erase-request", headers=bearer(b.manager))
    assert r.status_code == 202, r.text
    request_id = r.json()["request_id"]
    assert get(world, "/dicom-web/studies", b.manager).status_code == 200  # a request alone changes nothing
    erase_tenant(world.central, b.id, request_id)
    probes = ((b.manager, "/dicom-web/studies"), (b.manager, "/tenant/v1/usage"),
              (b.viewer, f"/dicom-web/studies/{b.cohort.studies[0]}"), (b.uploader, "/tenant/v1/policy"))
    for token, path in probes:  # 4 failures: below the throttle's back-off
        r = get(world, path, token)
        assert r.status_code == 401 and r.json()["detail"] == BAD_TOKEN
    assert get(world, "/dicom-web/studies", world.a.viewer).status_code == 200


def test_a_tenant_whose_key_ring_does_not_open_is_unavailable_alone(world: World) -> None:
    from tests.central.test_dimse import associate, rejection

    record, manager = add_tenant(world.central, "Hospital C", "FR", "it@c", allowed_aes=["PACSC"])
    ring = world.central.ring_path(record.id)
    ring.write_text('{"damaged": true}')  # added while serving, its ring damaged before its first request
    r = get(world, "/tenant/v1/usage", manager)
    assert r.status_code == 503 and "hospital" not in r.text.lower(), r.text
    assert rejection(associate(world.dicom_port, "PACSC", record.ae_title)) == CONGESTION
    assert get(world, "/tenant/v1/usage", world.a.viewer).status_code == 200
    assert "cannot be served" in (world.central.tenant_dir(record.id) / "logs" / "incisive.log").read_text()


def test_logs_are_per_tenant_and_hold_no_token_or_data(world: World) -> None:
    a, b = world.a, world.b
    offsets = {p: p.stat().st_size for p in (world.central.dir / "logs" / "central.log",
                                             world.node(a).log_dir / "incisive.log",
                                             world.node(b).log_dir / "incisive.log")}
    get(world, "/dicom-web/studies", f"inc_{a.id}.forged")
    get(world, "/dicom-web/studies", f"inc_{b.id}.forged")
    stow(world.url, a.uploader, a.cohort.identified[:1])
    stow(world.url, b.uploader, b.cohort.files[:1])
    texts = {}
    for path, offset in offsets.items():
        with path.open("rb") as fh:
            fh.seek(offset)
            texts[path] = fh.read().decode()
    central_log, a_log, b_log = texts.values()
    assert "tenant=" + a.id in central_log and "tenant=" + b.id in central_log
    assert a_log.count("invalid or revoked token") == 1 and b_log.count("invalid or revoked token") == 1
    assert "STOW-RS" in b_log and "STOW-RS" not in a_log
    secrets = [world.operator, a.manager, a.uploader, a.viewer, b.manager, b.uploader, b.viewer]
    everything = "".join(p.read_text() for p in offsets)
    for secret in secrets:
        assert secret not in everything and secret.rpartition(".")[2] not in everything
    for marker in a.cohort.markers() | b.cohort.markers():
        assert marker not in everything


def _start_cli(central_dir: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    import queue
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "incisive", "central", "serve", "--central", str(central_dir),
                             "--host", "127.0.0.1", "--dicom-port", "0", "--http-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if line is None:
            break
        if line.startswith("{") and json.loads(line).get("event") == "listening":
            return proc, json.loads(line)
    proc.kill()
    raise AssertionError(f"central serve did not start: {proc.stderr.read() if proc.stderr else ''}")


def test_central_serve_process_starts_and_stops_cleanly(central: Central, cohorts: dict[str, Cohort]) -> None:
    record, manager = add_tenant(central, "Hospital A", "IT", "it@a")
    central.close()
    proc, info = _start_cli(central.dir)
    try:
        assert info["tenants"] == 1 and info["tls"] == {"dicom": "off", "http": "off"}
        assert json.loads((central.dir / "run" / "serve.json").read_text())["http_port"] == info["http_port"]
        assert (central.dir / "tenants" / record.id / "run" / "serve.pid").read_text().strip() == str(proc.pid)
        url = f"http://127.0.0.1:{info['http_port']}"
        assert stow(url, manager, cohorts["a"].files).status_code == 200
        assert get_url(url, "/tenant/v1/usage", manager).json()["objects"] == len(cohorts["a"].files)
        again = subprocess.run([sys.executable, "-m", "incisive", "central", "serve", "--central", str(central.dir),
                                "--dicom-port", "0", "--http-port", "0"], capture_output=True, text=True, env=ENV,
                               timeout=120)
        assert again.returncode != 0 and "already being served" in again.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert not (central.dir / "run" / "serve.pid").exists()
    assert not (central.dir / "tenants" / record.id / "run" / "serve.pid").exists()


def get_url(url: str, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers=bearer(token), timeout=30)


@pytest.mark.parametrize("fault", ["missing", "wrong"])
def test_central_serve_refuses_a_bad_master_key_before_listening(central: Central, fault: str) -> None:
    add_tenant(central, "Hospital A", "IT", "it@a")
    central.close()
    key = central.dir / "secrets" / "master.key"
    if fault == "missing":
        key.unlink()
    else:
        key.write_text(os.urandom(32).hex() + "\n")
        key.chmod(0o600)
    before = {p: p.stat().st_mtime_ns for p in central.dir.rglob("*") if p.is_file()}
    r = subprocess.run([sys.executable, "-m", "incisive", "central", "serve", "--central", str(central.dir),
                        "--host", "127.0.0.1", "--dicom-port", "0", "--http-port", "0"], capture_output=True,
                       text=True, env=ENV, timeout=120)
    assert r.returncode != 0 and "listening" not in r.stdout
    assert "master key" in r.stderr.replace("\n", " "), r.stderr
    assert not (central.dir / "run").exists()
    after = {p: p.stat().st_mtime_ns for p in central.dir.rglob("*") if p.is_file()}
    assert after == before  # touched nothing
