"""Federated queries through the API with hand-driven fake nodes: validation, injection strings, body limits,
a node that never answers, disclosure control when combining, privacy budget."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from incisive.common.federated import suppress
from incisive.platform.services import disclosure
from tests.platform.conftest import Api, FakeNode, enrol_fake

INJECTION = ["modality; DROP TABLE job;--", "' OR '1'='1", "modality\" --", "label.x'); DELETE FROM node;--"]


def answer_jobs(fake: FakeNode, result: dict[str, Any], stop: threading.Event) -> threading.Thread:
    """A fake agent: long-polls and answers every job with ``result``."""

    def loop() -> None:
        while not stop.is_set():
            r = fake.send("GET", "/agent/v1/jobs?wait=0.2")
            for job in r.json().get("jobs", []) if r.status_code == 200 else []:
                fake.send("POST", f"/agent/v1/jobs/{job['id']}/result", {"status": "ok", "result": result})

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def online(fake: FakeNode) -> None:
    assert fake.send("POST", "/agent/v1/heartbeat", {"version": "x"}).status_code == 200


def count(api: Api, body: dict[str, Any], role: str = "researcher") -> Any:
    return api.client.post("/api/v1/queries/count", json=body, headers=api.h(role))


@pytest.mark.parametrize("by", [["nope"], ["modality", "modality"], [], ["a"] * 5, ["label."], ["label.X"],
                                *[[s] for s in INJECTION]])
def test_unknown_grouping_fields_are_4xx(sqlite_api: Api, by: list[str]) -> None:
    enrol_fake(sqlite_api)
    r = count(sqlite_api, {"by": by})
    assert 400 <= r.status_code < 500, r.text
    assert "DROP" not in r.text and "DELETE" not in r.text


def test_injection_strings_elsewhere_are_harmless(api: Api) -> None:
    fake = enrol_fake(api)
    online(fake)
    assert count(api, {"by": ["modality"], "nodes": INJECTION[:2]}).status_code == 422
    assert count(api, {"by": ["modality"], "where": {INJECTION[0]: "x"}}).status_code == 422
    r = count(api, {"by": ["modality"], "where": {"cancer_type": INJECTION[1]}, "project": INJECTION[0],
                    "timeout_s": 0.3})
    assert r.status_code == 200
    r = api.client.get("/api/v1/budgets/" + "x%27%20OR%201%3D1", headers=api.h("admin"))
    assert r.status_code in (404, 422)
    assert api.client.get("/api/v1/nodes", headers=api.h("admin")).json()[0]["node_id"] == fake.node_id


def test_oversized_bodies_refused(sqlite_api: Api) -> None:
    limit = sqlite_api.platform.settings.max_body_bytes
    big = {"by": ["modality"], "project": "x" * (limit + 10)}
    assert count(sqlite_api, big).status_code == 413
    fake = enrol_fake(sqlite_api)
    assert fake.send("POST", "/agent/v1/heartbeat", {"pad": "y" * (limit + 10)}).status_code == 413

    def chunks() -> Any:  # no Content-Length: counted while streaming
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024

    r = sqlite_api.client.post("/api/v1/queries/count", content=chunks(), headers=sqlite_api.h("researcher"))
    assert r.status_code == 413


def test_node_that_never_answers_is_missing_within_timeout(api: Api) -> None:
    quiet = enrol_fake(api, "quiet")
    online(quiet)
    talker = enrol_fake(api, "talker")
    online(talker)
    stop = threading.Event()
    cells = {"cells": [{"key": ["CT"], "count": 7}], "margins": {}, "total": 7, "k": 5}
    thread = answer_jobs(talker, cells, stop)
    try:
        started = time.monotonic()
        r = count(api, {"by": ["modality"], "timeout_s": 4})
        assert time.monotonic() - started < 20
    finally:
        stop.set()
        thread.join(5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["nodes"] == {"quiet": "missing", "talker": "ok"}
    assert body["cells"] == [{"key": ["CT"], "count": 7, "complete": True, "suppressed_nodes": 0}]


def test_offline_and_named_nodes(api: Api) -> None:
    enrol_fake(api, "never")  # enrolled, never seen: not asked, reported offline
    r = count(api, {"by": ["sex"], "timeout_s": 0.5})
    assert r.json()["nodes"] == {"never": "offline"}
    assert count(api, {"by": ["sex"], "nodes": ["ghost"]}).status_code == 422


def test_platform_suppresses_below_its_own_k_and_never_adds_hidden_parts() -> None:
    a = suppress({("CT", "lung"): 9, ("CT", "breast"): 2, ("MR", "lung"): 6}, ["modality", "cancer_type"],
                 [{"CT": 11, "MR": 6}, {"lung": 12, "breast": 2}], 13, 5)
    assert [c["count"] for c in a["cells"]] == [None, 9, 6]  # sorted: (CT,breast), (CT,lung), (MR,lung)
    assert a["total"] is None  # would reveal the hidden (CT, breast)
    assert a["margins"]["modality"] == [{"value": "CT", "count": None}, {"value": "MR", "count": 6}]
    assert a["margins"]["cancer_type"] == [{"value": "breast", "count": None}, {"value": "lung", "count": 12}]
    b = suppress({("CT", "lung"): 20, ("CT", "breast"): 8}, ["modality", "cancer_type"],
                 [{"CT": 28}, {"lung": 20, "breast": 8}], 28, 5)
    b["cells"][0]["count"] = 3  # a misbehaving node sending a small number: the platform drops it
    combined = disclosure.combine_counts(["modality", "cancer_type"], {"a": a, "b": b}, 5)
    cells = {tuple(c["key"]): c for c in combined["cells"]}
    assert cells[("CT", "breast")] == {"key": ["CT", "breast"], "count": None, "complete": False,
                                       "suppressed_nodes": 2}
    assert cells[("CT", "lung")]["count"] == 29 and cells[("CT", "lung")]["complete"]
    assert combined["total"] is None
    margins = {m["value"]: m["count"] for m in combined["margins"]["cancer_type"]}
    assert margins == {"breast": None, "lung": 32}


def test_summary_pooling() -> None:
    answers = {"a": {"n": 10, "sum": 20.0, "sumsq": 50.0}, "b": {"n": 2, "sum": 1.0, "sumsq": 1.0},
               "c": {"n": 5, "sum": 10.0, "sumsq": 25.0}}
    pooled = disclosure.combine_summary(answers, 5)
    assert pooled["n"] == 15 and pooled["suppressed_nodes"] == 1
    assert pooled["mean"] == pytest.approx(2.0)
    assert pooled["sd"] == pytest.approx(((75.0 - 15 * 4.0) / 14) ** 0.5)


def test_laplace_noise_and_budget(api: Api) -> None:
    talker = enrol_fake(api, "talker")
    online(talker)
    stop = threading.Event()
    result = {"cells": [{"key": ["CT"], "count": 1000}], "margins": {}, "total": 1000, "k": 5}
    thread = answer_jobs(talker, result, stop)
    try:
        r = count(api, {"by": ["modality"], "epsilon": 0.5})  # the researcher's budget is 1.0
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dp"]["epsilon"] == 0.5 and body["dp"]["budget_left"] == pytest.approx(0.5)
        assert body["total"] is None and abs(body["cells"][0]["count"] - 1000) < 100
        assert count(api, {"by": ["modality"], "epsilon": 0.5}).status_code == 200
        over = count(api, {"by": ["modality"], "epsilon": 0.1})
        assert over.status_code == 403 and "budget" in over.json()["detail"]
        put = api.client.put("/api/v1/budgets/researcher", json={"budget": 2.0}, headers=api.h("dp-manager"))
        assert put.status_code == 200
        assert count(api, {"by": ["modality"], "epsilon": 0.1}).status_code == 200
        own = api.client.get("/api/v1/budgets/researcher", headers=api.h("researcher")).json()
        assert own["spent"] == pytest.approx(1.1)
        assert api.client.get("/api/v1/budgets/admin", headers=api.h("researcher")).status_code == 403
    finally:
        stop.set()
        thread.join(5)


def test_laplace_scale() -> None:
    samples = [disclosure.laplace(2.0) for _ in range(20000)]
    mean_abs = sum(abs(x) for x in samples) / len(samples)
    assert mean_abs == pytest.approx(2.0, rel=0.1)  # E|Lap(b)| = b


def test_openapi_served(sqlite_api: Api) -> None:
    r = sqlite_api.client.get("/openapi.json")
    assert r.status_code == 200
    assert "/api/v1/queries/count" in r.json()["paths"]
    assert sqlite_api.client.get("/docs").status_code == 200
