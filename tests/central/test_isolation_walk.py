"""The isolation walk (issue 19 "Must show"): every HTTP route and every DIMSE service of ``central serve`` ×
{own tenant, other tenant, no tenant} finds only the caller's own data.

* The HTTP routes are enumerated from the app itself (the central app's own routes and every route a tenant
  token can reach in a tenant's apps), so a new route fails :func:`test_every_route_has_a_case` until it gets a
  case here. Each tenant route is probed with tenant A's token and A's identifiers (own), A's token and tenant
  B's Study/Series/SOP UIDs, pseudonyms, token ids or bundle (other), no token, a forged secret under A's
  prefix, the manager token of an erased tenant C, and the operator token (403, audited). No response to A
  holds a string only B's data holds; B's state is the same after the walk.
* The DIMSE services are read from the listening AE's presentation contexts (a new one fails the walk):
  C-ECHO, C-STORE and C-FIND (Study and Patient Root) × own AE, the other tenant's AE (calling AE not on its
  list), an unknown AE, the erased tenant's AE; C-FIND at A's AE with B's UIDs finds nothing.

Runs on SQLite (one file per tenant) and PostgreSQL (one schema per tenant).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from sqlalchemy import func, select

from incisive.central.app import BAD_TOKEN, OPERATOR_REFUSED, tenant_path
from incisive.central.dimse import CALLED_NOT_RECOGNISED, CALLING_NOT_RECOGNISED
from incisive.central.erase import erase_tenant
from incisive.central.home import Central
from incisive.central.tenants import add_tenant
from incisive.common.audit_log import NodeAudit
from incisive.common.throttle import Throttle
from incisive.federated.bundle import shipped_bundle
from incisive.node.api.tokens import list_tokens
from incisive.node.catalogue.models import ClinicalRecord, Instance
from incisive.node.fl import approval
from incisive.node.policy import load_policy
from tests.central.test_dimse import associate, find, rejection
from tests.central.test_serve_http import (  # noqa: F401 - cohorts is a fixture
    STOW_TYPE,
    Cohort,
    Side,
    World,
    bearer,
    build_world,
    clinical_rows,
    cohorts,
    new_token,
    stow_body,
)

UNREACHABLE = {"/health"}  # a tenant node app's own route that the central app answers itself


@dataclass
class Walk:
    world: World
    erased_manager: str  # tenant C's manager token; C was erased
    erased_ae: str
    revocable_id: int  # a token of A's the walk may revoke
    b_only_token_id: int  # a token id that exists in B's store only
    erasable: str  # a pseudonym of A's whose data the walk may erase (not the patient of A's sample instance)
    erased_studies: set[str]
    b_state: dict[str, Any] = field(default_factory=dict)

    @property
    def a(self) -> Side:
        return self.world.a

    @property
    def b(self) -> Side:
        return self.world.b


def _count(w: World, side: Side) -> int:
    with w.node(side).catalogue.session() as s:
        return int(s.scalar(select(func.count(Instance.id))) or 0)


def _b_state(w: World) -> dict[str, Any]:
    node = w.node(w.b)
    with node.catalogue.session() as s:
        instances = s.scalar(select(func.count(Instance.id)))
        clinical = s.scalar(select(func.count(ClinicalRecord.id)))
    return {"instances": instances, "clinical": clinical, "policy": load_policy(node.home).model_dump(),
            "approvals": approval.approvals(node.home),
            "tokens": [(t["id"], t["role"], t["revoked_at"]) for t in list_tokens(node)]}


@pytest.fixture
def walk(central_db: Central, tmp_path: Path, cohorts: dict[str, Cohort]) -> Iterator[Walk]:  # noqa: F811
    for world in build_world(central_db, tmp_path, cohorts):
        w, a, b = world, world.a, world.b
        w.registry.register(shipped_bundle("lesion-cnn"))
        lesion = w.registry.get("lesion-cnn", "1")
        r = httpx.post(f"{w.url}/tenant/v1/approvals", headers=bearer(b.manager),
                       json={"name": "lesion-cnn", "version": "1", "sha256": lesion.digest,
                             "reviewer": f"reviewer-of-{b.id}"})
        assert r.status_code == 201, r.text
        assert httpx.post(f"{w.url}/tenant/v1/clinical", json={"rows": clinical_rows(b.cohort)},
                          headers=bearer(b.manager)).status_code == 200
        for n in range(5):  # B's token ids run past A's
            new_token(w.url, b.manager, "viewer", f"label-of-{b.id}-{n}")
        new_token(w.url, a.manager, "viewer", "revocable")
        a_ids = {t["label"]: t["id"] for t in list_tokens(w.node(a))}
        b_max = max(t["id"] for t in list_tokens(w.node(b)))
        record, c_manager = add_tenant(central_db, "Hospital C", "FR", "it@c", allowed_aes=["PACSC"])
        r = httpx.post(f"{w.url}/tenant/v1/erase-request", headers=bearer(c_manager))
        assert r.status_code == 202, r.text
        erase_tenant(central_db, record.id, r.json()["request_id"])
        # the throttle has its own tests (test_serve_http.py); here it would answer 429 before the routes
        generous = {"free": 100_000, "lockout_failures": 100_000}
        w.services.app.throttle = Throttle(**generous)
        for side in (a, b):
            apps = w.services.app.apps(side.id)
            apps.dicomweb.state.auth_throttle = apps.tenant.state.auth_throttle = Throttle(**generous)
        sample = pydicom.dcmread(a.cohort.files[0], stop_before_pixels=True)
        erasable = next(p for p in a.cohort.pseudonyms if p != str(sample.PatientID))
        erased = {str(d.StudyInstanceUID) for d in map(lambda f: pydicom.dcmread(f, stop_before_pixels=True),
                                                        a.cohort.files) if str(d.PatientID) == erasable}
        yield Walk(w, c_manager, record.ae_title, a_ids["revocable"], b_max, erasable, erased, _b_state(w))


# --- the cases, one per route ------------------------------------------------------------------------------
@dataclass
class Probe:
    path: str
    status: set[int]
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    empty: bool = False  # a 200 must be an empty list


@dataclass
class Case:
    own: Callable[[Walk], Probe]
    other: Callable[[Walk], Probe] | str  # str: why the route takes nothing that names another tenant's data


def _ids(side: Side, n: int = 0) -> tuple[str, str, str]:
    """(study, series, sop) of one stored instance of the side's cohort."""
    ds = pydicom.dcmread(side.cohort.files[n], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _uids(template: str, side: Side) -> str:
    study, series, sop = _ids(side)
    return template.format(study=study, series=series, instance=sop)


def qido(template: str, query: Callable[[Side], str] | None = None) -> Case:
    """A QIDO-RS route: own UIDs find A's data; B's UIDs (in the path or as a match key) find nothing."""
    def own(w: Walk) -> Probe:
        return Probe(_uids(template, w.a), {200})

    def other(w: Walk) -> Probe:
        path = _uids(template, w.b) if "{" in template else template + (query(w.b) if query else "")
        return Probe(path, {200, 404}, empty=True)
    return Case(own, other)


def wado(template: str) -> Case:
    """A WADO-RS route: A's UIDs retrieve, B's are 404."""
    return Case(lambda w: Probe(_uids(template, w.a), {200}), lambda w: Probe(_uids(template, w.b), {404}))


NOTHING_OF_B = "answers for the caller's own tenant and names nothing; the walk's body check covers it"
STORES_OWN = "what a token stores or files goes to its own tenant; B's state is compared after the walk"

CASES: dict[tuple[str, str], Case] = {
    ("POST", "/dicom-web/studies"): Case(
        lambda w: Probe("/dicom-web/studies", {200}, content=stow_body(w.a.cohort.files[:2]),
                        headers={"Content-Type": STOW_TYPE}), STORES_OWN),
    ("GET", "/dicom-web/studies"): qido("/dicom-web/studies", lambda b: f"?StudyInstanceUID={_ids(b)[0]}"),
    ("GET", "/dicom-web/series"): qido("/dicom-web/series", lambda b: f"?SeriesInstanceUID={_ids(b)[1]}"),
    ("GET", "/dicom-web/instances"): qido("/dicom-web/instances", lambda b: f"?SOPInstanceUID={_ids(b)[2]}"),
    ("GET", "/dicom-web/studies/{study}/series"): qido("/dicom-web/studies/{study}/series"),
    ("GET", "/dicom-web/studies/{study}/instances"): qido("/dicom-web/studies/{study}/instances"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances"):
        qido("/dicom-web/studies/{study}/series/{series}/instances"),
    ("GET", "/dicom-web/studies/{study}"): wado("/dicom-web/studies/{study}"),
    ("GET", "/dicom-web/studies/{study}/series/{series}"): wado("/dicom-web/studies/{study}/series/{series}"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}"):
        wado("/dicom-web/studies/{study}/series/{series}/instances/{instance}"),
    ("GET", "/dicom-web/studies/{study}/metadata"): wado("/dicom-web/studies/{study}/metadata"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/metadata"):
        wado("/dicom-web/studies/{study}/series/{series}/metadata"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata"):
        wado("/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata"),
    ("GET", "/tenant/v1/usage"): Case(lambda w: Probe("/tenant/v1/usage", {200}), NOTHING_OF_B),
    ("GET", "/tenant/v1/tokens"): Case(lambda w: Probe("/tenant/v1/tokens", {200}), NOTHING_OF_B),
    ("POST", "/tenant/v1/tokens"): Case(
        lambda w: Probe("/tenant/v1/tokens", {201}, json={"role": "viewer", "label": "walk"}), STORES_OWN),
    ("DELETE", "/tenant/v1/tokens/{token_id}"): Case(
        lambda w: Probe(f"/tenant/v1/tokens/{w.revocable_id}", {200}),
        lambda w: Probe(f"/tenant/v1/tokens/{w.b_only_token_id}", {404})),
    ("GET", "/tenant/v1/policy"): Case(lambda w: Probe("/tenant/v1/policy", {200}), NOTHING_OF_B),
    ("PUT", "/tenant/v1/policy"): Case(
        lambda w: Probe("/tenant/v1/policy", {200}, json={"min_cell_count": 6}), STORES_OWN),
    ("GET", "/tenant/v1/approvals"): Case(lambda w: Probe("/tenant/v1/approvals", {200}), NOTHING_OF_B),
    ("POST", "/tenant/v1/approvals"): Case(
        lambda w: Probe("/tenant/v1/approvals", {201}, json={
            "name": "tabular-risk", "version": "1", "sha256": w.world.registry.get("tabular-risk", "1").digest,
            "reviewer": "walk"}),
        "a bundle is the platform's (the same for every tenant), approved into the caller's tenant only"),
    ("DELETE", "/tenant/v1/approvals/{name}/{version}"): Case(
        lambda w: Probe("/tenant/v1/approvals/tabular-risk/1", {200, 404}),
        lambda w: Probe("/tenant/v1/approvals/lesion-cnn/1", {404})),  # approved by B only
    ("POST", "/tenant/v1/clinical"): Case(
        lambda w: Probe("/tenant/v1/clinical", {200}, json={"rows": clinical_rows(w.a.cohort)}), STORES_OWN),
    ("POST", "/tenant/v1/erase-request"): Case(lambda w: Probe("/tenant/v1/erase-request", {202}), STORES_OWN),
    ("GET", "/tenant/v1/subjects/{pseudonym}"): Case(
        lambda w: Probe(f"/tenant/v1/subjects/{w.a.cohort.pseudonyms[0]}", {200}),
        lambda w: Probe(f"/tenant/v1/subjects/{w.b.cohort.pseudonyms[0]}", {404})),
    ("POST", "/tenant/v1/subjects/{pseudonym}/erase"): Case(
        lambda w: Probe(f"/tenant/v1/subjects/{w.erasable}/erase", {200}, json={"reason": "walk"}),
        lambda w: Probe(f"/tenant/v1/subjects/{w.b.cohort.pseudonyms[0]}/erase", {404}, json={"reason": "walk"})),
}
LAST = ("DELETE", "/tenant/v1/subjects/{pseudonym}/erase")  # probes that remove A's data run after the rest
OPERATOR_CASES = {("GET", "/health"), ("GET", "/central/v1/tenants"), ("GET", "/central/v1/usage")}


def test_every_route_has_a_case(walk: Walk) -> None:
    w, app = walk.world, walk.world.services.app
    tenant_routes, operator_routes = set(app.tenant_endpoints(w.a.id)), set(app.endpoints())
    assert tenant_routes == set(CASES), ("routes without a case", tenant_routes - set(CASES),
                                         "cases without a route", set(CASES) - tenant_routes)
    assert len(tenant_routes) >= 24
    assert operator_routes == OPERATOR_CASES
    assert not any(tenant_path(path) for _, path in operator_routes)
    hidden = {path for _, path in app.tenant_endpoints(w.a.id, reachable=False) if not tenant_path(path)}
    assert hidden == UNREACHABLE


def _request(w: World, method: str, probe: Probe, token: str | None) -> httpx.Response:
    return httpx.request(method, f"{w.url}{probe.path}", headers={**bearer(token), **probe.headers},
                         json=probe.json, content=probe.content, timeout=60)


def _no_marker(text: bytes, markers: set[str], what: str) -> None:
    found = sorted(m for m in markers if m.encode() in text)
    assert not found, (what, found)


def test_http_walk(walk: Walk) -> None:
    w, a, b = walk.world, walk.a, walk.b
    b_markers = w.markers_of(b)
    refused_before = sum(1 for e in NodeAudit(w.central.dir).entries() if e["action"] == "operator.refused")
    probes = 0
    for (method, path), case in sorted(CASES.items(), key=lambda item: item[0][0] in LAST or item[0][1] in LAST):
        own = case.own(walk)
        label = f"{method} {path}"
        # no tenant, a forged secret, an erased tenant's manager: 401 before anything of a tenant is read
        for token in (None, f"inc_{a.id}.forged-secret", walk.erased_manager):
            r = _request(w, method, own, token)
            assert r.status_code == 401, (label, token, r.status_code, r.text)
            _no_marker(r.content, b_markers | w.markers_of(a), label)
        r = _request(w, method, own, walk.erased_manager)
        assert r.json()["detail"] == BAD_TOKEN
        r = _request(w, method, own, w.operator)
        assert r.status_code == 403 and r.json()["detail"] == OPERATOR_REFUSED, (label, r.text)
        if isinstance(case.other, str):
            assert case.other, label
        else:
            other = case.other(walk)
            r = _request(w, method, other, a.manager)
            assert r.status_code in other.status, (label, "other", r.status_code, r.text)
            if other.empty and r.status_code == 200:
                assert r.json() == [], (label, r.text)
            _no_marker(r.content, b_markers, f"{label} (B's identifiers)")
        r = _request(w, method, own, a.manager)
        assert r.status_code in own.status, (label, "own", r.status_code, r.text)
        _no_marker(r.content, b_markers, f"{label} (own)")
        probes += 6
    refused = sum(1 for e in NodeAudit(w.central.dir).entries() if e["action"] == "operator.refused")
    assert refused - refused_before == len(CASES)
    # own data was there to find: the QIDO and WADO own probes answered with A's UIDs
    studies = httpx.get(f"{w.url}/dicom-web/studies", headers=bearer(a.viewer)).json()
    assert {s["0020000D"]["Value"][0] for s in studies} == set(a.cohort.studies) - walk.erased_studies
    assert _b_state(w) == walk.b_state  # nothing the walk did as A changed B
    assert probes >= 6 * len(CASES)


def test_operator_routes_walk(walk: Walk) -> None:
    w = walk.world
    data_markers = w.a.cohort.markers() | w.b.cohort.markers()
    r = httpx.get(f"{w.url}/health")
    assert r.status_code == 200 and w.a.id not in r.text and w.b.id not in r.text
    for path in ("/central/v1/tenants", "/central/v1/usage"):
        for token in (None, w.a.manager, w.b.viewer, walk.erased_manager, f"inc_{w.a.id}.forged"):
            assert httpx.get(f"{w.url}{path}", headers=bearer(token)).status_code == 401, (path, token)
        r = httpx.get(f"{w.url}{path}", headers=bearer(w.operator))
        assert r.status_code == 200
        _no_marker(r.content, data_markers, path)  # registry entries and counts, never a tenant's data


def test_dimse_walk(walk: Walk) -> None:
    w, a, b = walk.world, walk.a, walk.b
    port = w.dicom_port
    server = w.services.dicom._server
    assert server is not None
    storage = {cx.abstract_syntax for cx in AllStoragePresentationContexts}
    services = {cx.abstract_syntax for cx in server.ae.supported_contexts} - storage
    assert services == {Verification, StudyRootQueryRetrieveInformationModelFind,
                        PatientRootQueryRetrieveInformationModelFind}, "a new DIMSE service needs a walk case"
    sample = pydicom.dcmread(a.cohort.files[0])
    contexts = [Verification, StudyRootQueryRetrieveInformationModelFind,
                PatientRootQueryRetrieveInformationModelFind, sample.SOPClassUID]
    # other tenant's AE (A's PACS is not on B's list), no tenant's AE, the erased tenant's AE: refused
    for called, expected in ((b.ae_title, CALLING_NOT_RECOGNISED), ("NO-SUCH-AE", CALLED_NOT_RECOGNISED),
                             (walk.erased_ae, CALLED_NOT_RECOGNISED)):
        assert rejection(associate(port, a.calling_ae, called, contexts)) == expected, called
    assert rejection(associate(port, "PACSC", walk.erased_ae, contexts)) == CALLED_NOT_RECOGNISED
    # own: every service works on A's data only
    a_before = _count(w, a)
    assoc = associate(port, a.calling_ae, a.ae_title, contexts)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        # A already holds this instance (STOW-RS); over C-STORE its file meta is the DICOM stack's, so the door
        # sees other bytes for the same SOP instance: kept the first, warning B000. Either way it is A's.
        assert assoc.send_c_store(a.cohort.files[0]).Status in (0x0000, 0xB000)
    finally:
        assoc.release()
    assert _count(w, a) == a_before == len(a.cohort.files)
    for model, level in ((StudyRootQueryRetrieveInformationModelFind, "STUDY"),
                         (PatientRootQueryRetrieveInformationModelFind, "PATIENT")):
        found = find(port, a, a.ae_title, level, model)
        keys = {str(d.StudyInstanceUID if level == "STUDY" else d.PatientID) for d in found}
        assert keys == set(a.cohort.studies if level == "STUDY" else a.cohort.pseudonyms), level
        # A's AE with B's identifiers: nothing
        assert find(port, a, a.ae_title, level, model, PatientID=b.cohort.pseudonyms[0]) == []
    for keyword, values in (("StudyInstanceUID", b.cohort.studies), ("SeriesInstanceUID", b.cohort.series),
                            ("SOPInstanceUID", b.cohort.sops)):
        level = {"StudyInstanceUID": "STUDY", "SeriesInstanceUID": "SERIES", "SOPInstanceUID": "IMAGE"}[keyword]
        keys = {keyword: values[0]}
        if level != "STUDY":
            keys["StudyInstanceUID"] = b.cohort.studies[0]
        assert find(port, a, a.ae_title, level, **keys) == [], keyword
    assert _b_state(w) == walk.b_state
