"""Federated queries: validate, check the privacy budget, queue one job per node, combine what comes back.

The waiting itself is in :mod:`incisive.platform.routes.queries` (async, on the event loop); everything here is
synchronous and runs in one short database transaction per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from incisive.common.federated import METRICS, UNITS, parse_fields, parse_where
from incisive.platform.errors import BadRequest, Forbidden
from incisive.platform.models import Query, User
from incisive.platform.services import audit, disclosure, jobs, new_id, nodes, utcnow
from incisive.platform.settings import PlatformSettings


@dataclass
class Started:
    query_id: str
    kind: str
    params: dict[str, Any]
    k: int
    waiting: list[str]
    status: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)


def _targets(s: Session, wanted: list[str] | None, offline_s: float) -> tuple[list[str], dict[str, str]]:
    active = {n.node_id: n for n in nodes.active_nodes(s)}
    if wanted:
        unknown = [n for n in wanted if n not in active]
        if unknown:
            raise BadRequest(f"unknown or revoked node(s): {', '.join(sorted(unknown)[:10])[:300]}")
    chosen = list(dict.fromkeys(wanted)) if wanted else sorted(active)
    if not chosen:
        raise BadRequest("no enrolled nodes to ask")
    status = {n: "offline" for n in chosen if nodes.status(active[n], offline_s) != "online"}
    return [n for n in chosen if n not in status], status


def start(s: Session, user: User, kind: str, params: dict[str, Any], settings: PlatformSettings,
          handed: set[str] | frozenset[str] = frozenset()) -> Started:
    try:
        if kind == "count":
            by = parse_fields(params.get("by") or [])
            where = parse_where(params.get("where"))
            if params.get("unit", "patients") not in UNITS:
                raise ValueError(f"unknown unit; allowed: {', '.join(UNITS)}")
            payload: dict[str, Any] = {"by": by, "where": where, "unit": params.get("unit", "patients")}
        else:
            if params.get("metric") not in METRICS:
                raise ValueError(f"unknown metric; allowed: {', '.join(METRICS)}")
            payload = {"metric": params["metric"]}
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    epsilon = params.get("epsilon")
    if epsilon is not None:
        if kind != "count" or not 0 < float(epsilon) <= 10:
            raise BadRequest("epsilon must be in (0, 10] and is available for counts only")
        if user.dp_spent + float(epsilon) > user.dp_budget + 1e-9:
            audit.append(s, user.username, f"query.{kind}", outcome="budget-exhausted", details={"epsilon": epsilon})
            raise Forbidden(f"privacy budget exhausted ({user.dp_budget - user.dp_spent:.3g} of "
                            f"{user.dp_budget:.3g} left)")
        user.dp_spent += float(epsilon)
    waiting, status = _targets(s, params.get("nodes"), settings.node_offline_s)
    k = settings.min_cell_count
    payload.update({"k": k, "requester": user.username, "project": params.get("project")})
    query_id = new_id()
    recorded = {**payload, "epsilon": epsilon, "nodes": params.get("nodes")}
    s.add(Query(id=query_id, user_id=user.id, kind=kind, params=recorded, created_at=utcnow()))
    s.flush()
    created = jobs.create(s, query_id, kind, payload, waiting, settings.query_timeout_s, handed)
    return Started(query_id, kind, recorded, k, waiting, status, created)


def finish(s: Session, started: Started, user: User) -> dict[str, Any]:
    answers = jobs.results(s, started.query_id)
    jobs.expire_unanswered(s, started.query_id)
    status = dict(started.status)
    usable: dict[str, dict[str, Any]] = {}
    for node_id in started.waiting:
        body = answers.get(node_id)
        if body is None:
            status[node_id] = "missing"
        elif body.get("status") == "ok" and isinstance(body.get("result"), dict):
            status[node_id] = "ok"
            usable[node_id] = body["result"]
        else:
            status[node_id] = "refused" if body.get("status") == "refused" else "error"
    k = max([started.k, *(int(a.get("k") or 0) for a in usable.values())])
    epsilon = started.params.get("epsilon")
    out: dict[str, Any] = {"query_id": started.query_id, "kind": started.kind, "k": k,
                           "nodes": dict(sorted(status.items()))}
    if started.kind == "count":
        combined = disclosure.combine_counts(started.params["by"], usable, k)
        if epsilon is not None:
            combined = disclosure.add_noise(combined, float(epsilon))
        out.update({"by": started.params["by"], "unit": started.params["unit"], **combined,
                    "dp": None if epsilon is None else {"mechanism": "laplace", "epsilon": epsilon,
                                                        "budget_left": round(user.dp_budget - user.dp_spent, 6)}})
    else:
        out.update({"metric": started.params["metric"], **disclosure.combine_summary(usable, k)})
    query = s.get(Query, started.query_id)
    if query is not None:
        query.finished_at, query.result = utcnow(), out
    audit.append(s, user.username, f"query.{started.kind}", target=started.query_id,
                 outcome="ok" if usable else "no-answers",
                 details={"by": started.params.get("by"), "metric": started.params.get("metric"),
                          "epsilon": epsilon, "nodes": status})
    return out

