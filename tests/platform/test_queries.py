"""Federated queries through the API with hand-driven fake nodes: validation, injection strings, body limits,
a node that never answers, the protocol check and combining of node answers, privacy budget."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from incisive.common.protocol import ProtocolViolation, check_count, check_summary
from incisive.node.agent import run_job
from incisive.node.home import Node
from incisive.platform.services import disclosure
from tests.platform.conftest import Api, FakeNode, enrol_fake
from tests.platform.federation import fill_attack_cohort

INJECTION = ["modality; DROP TABLE job;--", "' OR '1'='1", "modality\" --", "label.x'); DELETE FROM node;--"]


def table(cells: dict[str, int], k: int = 5, **extra: Any) -> dict[str, Any]:
    """A node's count result by modality, as the agent protocol has it."""
    return {"by": ["modality"], "unit": "patients", "k": k, "population": sum(cells.values()),
            "cells": [{"key": [m], "count": n} for m, n in sorted(cells.items())], "margins": {},
            "total": sum(cells.values()), "suppressed": 0, **extra}


def answer_jobs(fake: FakeNode, result: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]],
                stop: threading.Event) -> threading.Thread:
    """A fake agent: long-polls and answers every job with ``result`` (or ``result(job payload)``)."""

    def loop() -> None:
        while not stop.is_set():
            r = fake.send("GET", "/agent/v1/jobs?wait=0.2")
            for job in r.json().get("jobs", []) if r.status_code == 200 else []:
                body = result(job["payload"]) if callable(result) else result
                fake.send("POST", f"/agent/v1/jobs/{job['id']}/result", {"status": "ok", "result": body})

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
    thread = answer_jobs(talker, table({"CT": 7}), stop)
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
    assert body["cells"] == [{"key": ["CT"], "count": 7}] and body["total"] == 7 and body["complete"]


def test_offline_and_named_nodes(api: Api) -> None:
    enrol_fake(api, "never")  # enrolled, never seen: not asked, reported offline
    r = count(api, {"by": ["sex"], "timeout_s": 0.5})
    assert r.json()["nodes"] == {"never": "offline"}
    assert count(api, {"by": ["sex"], "nodes": ["ghost"]}).status_code == 422


JOB = {"by": ["modality"], "unit": "patients", "k": 5, "epsilon": None}


@pytest.mark.parametrize("change,problem", [
    ({"k": "abc"}, "k"), ({"k": 1e9}, "k"), ({"k": 1000 + 1}, "k"), ({"k": 3}, "below the job's k"),
    ({"cells": [{"key": 7, "count": 9}]}, "cells.0.key"), ({"cells": [{"key": [7], "count": 9}]}, "cells.0.key"),
    ({"cells": [{"key": ["CT"], "count": 10**30}]}, "cells.0.count"),
    ({"cells": [{"key": ["CT"], "count": 3}]}, "below the node's k"),
    ({"cells": [{"key": ["CT"], "count": True}]}, "cells.0.count"),
    ({"cells": [{"key": ["CT"], "count": 9.0}]}, "cells.0.count"),
    ({"cells": [{"key": ["CT"], "count": 30}]}, "population"),
    ({"cells": [{"key": ["CT", "F"], "count": 9}]}, "wrong length"),
    ({"cells": [{"key": ["CT"], "count": 9}, {"key": ["CT"], "count": 9}]}, "repeated"),
    ({"total": -1}, "total"), ({"population": 10**9}, "population"), ({"by": ["sex"]}, "by/unit"),
    ({"dp": {"mechanism": "laplace", "epsilon": 1.0}}, "not asked for"), ({"withheld_by": ["made-up"]}, "rule"),
    ({"margins": {"sex": []}}, "margins"),
])
def test_protocol_violations_are_named_without_the_value(change: dict[str, Any], problem: str) -> None:
    good = table({"CT": 9, "MR": 12})
    assert check_count(good, JOB).cells[0].count == 9
    with pytest.raises(ProtocolViolation) as caught:
        check_count({**good, **change}, JOB)
    assert problem in str(caught.value) and "10000000000" not in str(caught.value)


def test_protocol_rounding_and_noise() -> None:
    rounded = table({"CT": 10, "MR": 15}, rounding=5)
    assert check_count({**rounded, "cells": [{"key": ["CT"], "count": 0}]}, JOB).cells[0].count == 0
    with pytest.raises(ProtocolViolation, match="multiple"):
        check_count({**rounded, "cells": [{"key": ["CT"], "count": 12}]}, JOB)
    noisy = {**table({"CT": 7}), "cells": [{"key": ["CT"], "count": 9}, {"key": ["MR"], "count": None}],
             "total": None, "suppressed": None, "dp": {"mechanism": "laplace", "epsilon": 0.5}}
    assert check_count(noisy, {**JOB, "epsilon": 0.5}).dp is not None
    with pytest.raises(ProtocolViolation, match="missing"):
        check_count(table({"CT": 7}), {**JOB, "epsilon": 0.5})
    with pytest.raises(ProtocolViolation, match="domain"):
        check_count({**noisy, "cells": [{"key": ["XRAY-9"], "count": 9}]}, {**JOB, "epsilon": 0.5})
    with pytest.raises(ProtocolViolation, match="epsilon"):
        check_count(noisy, {**JOB, "epsilon": 0.25})


def test_combining_adds_listed_parts_only() -> None:
    a = check_count({**table({"CT": 9, "MR": 6}), "total": None, "suppressed": None,
                     "withheld_by": ["min_cell_count"]}, JOB)
    b = check_count(table({"CT": 20, "US": 8}), JOB)
    combined = disclosure.combine_counts(["modality"], {"a": a, "b": b})
    assert combined["cells"] == [{"key": ["CT"], "count": 29}, {"key": ["MR"], "count": 6},
                                 {"key": ["US"], "count": 8}]
    assert combined["total"] is None and combined["suppressed"] is None  # a withheld its own
    assert combined["complete"] is False and combined["withheld_by"] == ["min_cell_count"]
    both = disclosure.combine_counts(["modality"], {"b": b, "c": b})
    assert both["total"] == 56 and both["suppressed"] == 0 and both["complete"]


def test_combined_margins_only_where_every_node_gave_one() -> None:
    job = {**JOB, "by": ["modality", "sex"]}

    def node(rows: dict[str, int]) -> Any:
        return check_count({"by": ["modality", "sex"], "unit": "patients", "k": 5, "population": 40,
                            "cells": [{"key": ["CT", "F"], "count": 9}],
                            "margins": {"sex": [{"value": v, "count": n} for v, n in rows.items()]},
                            "total": None, "suppressed": None}, job)

    combined = disclosure.combine_counts(["modality", "sex"], {"a": node({"F": 9, "M": 7}), "b": node({"F": 12})})
    assert combined["margins"] == {"modality": [], "sex": [{"value": "F", "count": 21}]}


def test_summary_pooling() -> None:
    job = {"metric": "rows", "k": 5}
    answers = {"a": {"metric": "rows", "k": 5, "n": 10, "sum": 20.0, "sumsq": 50.0},
               "b": {"metric": "rows", "k": 5, "n": None, "sum": None, "sumsq": None},
               "c": {"metric": "rows", "k": 5, "n": 5, "sum": 10.0, "sumsq": 25.0}}
    pooled = disclosure.combine_summary({name: check_summary(a, job) for name, a in answers.items()})
    assert pooled["n"] == 15 and pooled["suppressed_nodes"] == 1
    assert pooled["mean"] == pytest.approx(2.0)
    assert pooled["sd"] == pytest.approx(((75.0 - 15 * 4.0) / 14) ** 0.5)
    for bad in ({"n": 2}, {"sum": float("inf")}, {"sum": 100.0}, {"k": 2}, {"n": 10**12}):
        with pytest.raises(ProtocolViolation):
            check_summary({**answers["a"], **bad}, job)


def noisy_table(payload: dict[str, Any]) -> dict[str, Any]:
    eps = payload.get("epsilon")
    return {**table({"CT": 1000}), "total": None, "suppressed": None,
            "dp": None if eps is None else {"mechanism": "laplace", "epsilon": eps}}


def test_budget_per_project(api: Api) -> None:
    talker = enrol_fake(api, "talker")
    online(talker)
    stop = threading.Event()
    thread = answer_jobs(talker, noisy_table, stop)
    try:
        r = count(api, {"by": ["modality"], "epsilon": 0.5})  # the researcher's budget is 1.0
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dp"]["epsilon"] == 0.5 and body["dp"]["budget_left"] == pytest.approx(0.5)
        assert body["nodes"] == {"talker": "ok"} and body["cells"] == [{"key": ["CT"], "count": 1000}]
        assert count(api, {"by": ["modality"], "epsilon": 0.5}).status_code == 200
        over = count(api, {"by": ["modality"], "epsilon": 0.1})
        assert over.status_code == 403 and "budget" in over.json()["detail"]
        exact = count(api, {"by": ["modality"]})  # spent: not even an exact count for queries without a project
        assert exact.status_code == 403 and "until a data-provider manager adds budget" in exact.json()["detail"]
        assert count(api, {"by": ["modality"], "project": "other"}).status_code == 200
        put = api.client.put("/api/v1/budgets/researcher", json={"budget": 2.0}, headers=api.h("dp-manager"))
        assert put.status_code == 200 and put.json()["exhausted"] is False
        assert count(api, {"by": ["modality"], "epsilon": 0.1}).status_code == 200
        own = api.client.get("/api/v1/budgets/researcher", headers=api.h("researcher")).json()
        assert own["spent"] == pytest.approx(1.1) and own["budget"] == 2.0
        assert [p["project"] for p in own["projects"]] == [None, "other"]
        assert api.client.get("/api/v1/budgets/admin", headers=api.h("researcher")).status_code == 403
        assert api.client.put("/api/v1/budgets/researcher", json={"budget": 9.0},
                              headers=api.h("researcher")).status_code == 403
    finally:
        stop.set()
        thread.join(5)


def test_openapi_served(sqlite_api: Api) -> None:
    r = sqlite_api.client.get("/openapi.json")
    assert r.status_code == 200
    assert "/api/v1/queries/count" in r.json()["paths"]
    assert sqlite_api.client.get("/docs").status_code == 200


def test_new_platforms_require_dp(tmp_path: Any) -> None:
    from incisive.platform.home import Platform
    from incisive.platform.settings import PlatformSettings

    created = Platform.init(tmp_path / "new")
    assert created.settings.require_dp and "require_dp = true" in (tmp_path / "new" / "platform.toml").read_text()
    created.db.dispose()
    assert PlatformSettings(home=tmp_path).require_dp is False  # a platform.toml from before keeps exact counts


def laplace_bins(scale: float, edge: int = 3) -> dict[int, float]:
    """P(round(L) = j) for L ~ Laplace(0, scale), j in -edge..edge, the two ends holding their tails."""
    def cdf(x: float) -> float:
        return 0.5 * math.exp(x / scale) if x < 0 else 1 - 0.5 * math.exp(-x / scale)
    probs = {j: cdf(j + 0.5) - cdf(j - 0.5) for j in range(-edge + 1, edge)}
    probs[-edge], probs[edge] = cdf(-edge + 0.5), 1 - cdf(edge - 0.5)
    return probs


def chi2_sf_6(x: float) -> float:
    """P(X > x) for a chi-square with 6 degrees of freedom (closed form for an even df)."""
    h = x / 2
    return math.exp(-h) * (1 + h + h * h / 2)


def test_noisy_answers_follow_the_laplace_scale_and_spend_the_budget(tmp_path: Any, api: Api) -> None:
    """200 noisy counts of the same question, answered by the node's own code (policy, catalogue, Laplace noise)
    over the platform's API: the answers vary, the noise of 400 cells matches round(Laplace(1/ε)) by a chi-square
    test and by its variance, every answer spent ε and each query is in the audit log with its ε."""
    node = Node.init(tmp_path / "node", provider="Test Hospital")
    fill_attack_cohort(node)  # sex: 20 F, 18 M (far above k = 5 for ε = 1: a hidden cell has p ~ 1e-6)
    fake = enrol_fake(api, "dp-node")
    online(fake)
    eps, runs, truth = 1.0, 200, {"F": 20, "M": 18}
    put = api.client.put("/api/v1/budgets/researcher", json={"budget": runs * eps + 0.5}, headers=api.h("dp-manager"))
    assert put.status_code == 200
    stop = threading.Event()
    thread = answer_jobs(fake, lambda payload: run_job(node, {"id": "d" * 32, "type": "count", "payload": payload})
                         ["result"], stop)
    noise: list[int] = []
    try:
        for _ in range(runs):
            r = count(api, {"by": ["sex"], "epsilon": eps})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["nodes"] == {"dp-node": "ok"} and body["dp"]["epsilon"] == eps
            cells = {c["key"][0]: c["count"] for c in body["cells"]}
            noise += [cells[sex] - n for sex, n in truth.items()]
    finally:
        stop.set()
        thread.join(5)
        node.catalogue.dispose()
    assert len(set(noise)) >= 5, "repeated noisy answers barely vary"
    scale = 1 / eps
    variance = sum(x * x for x in noise) / len(noise)
    assert 0.7 * 2 * scale**2 < variance < 1.4 * (2 * scale**2 + 1 / 12)  # Var Lap(b) = 2b² (+ rounding)
    observed: Counter[int] = Counter(max(-3, min(3, x)) for x in noise)
    chi2 = sum((observed[j] - len(noise) * p) ** 2 / (len(noise) * p) for j, p in laplace_bins(scale).items())
    assert chi2_sf_6(chi2) > 1e-5, f"noise does not follow round(Laplace({scale})): chi2 = {chi2:.1f}"
    own = api.client.get("/api/v1/budgets/researcher", headers=api.h("researcher")).json()
    assert own["spent"] == pytest.approx(runs * eps)
    export = [json.loads(line) for line in
              api.client.get("/api/v1/audit/export", headers=api.h("auditor")).text.splitlines() if line.strip()]
    audited = [e for e in export if e.get("action") == "query.count" and e.get("outcome") == "ok"]
    assert len(audited) == runs
    assert all(e["details"]["query"]["epsilon"] == eps for e in audited)
