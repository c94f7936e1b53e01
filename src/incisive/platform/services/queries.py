"""Federated queries: validate, check the project's privacy budget, queue one job per node, check and combine
what comes back.

The waiting itself is in :mod:`incisive.platform.routes.queries` (async, on the event loop); everything here is
synchronous and runs in one short database transaction per step. Every query is audited with its whole question
(``by``, ``where``, ``unit``, ε, project, nodes), each node's outcome, and the rule of every refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from incisive.common.protocol import CountResult, ProtocolViolation, SummaryResult, check_count, check_summary
from incisive.common.query_spec import METRICS, RULES, UNITS, parse_fields, parse_where
from incisive.platform.errors import BadRequest, Forbidden
from incisive.platform.models import Query, User
from incisive.platform.services import audit, disclosure, jobs, new_id, nodes, users, utcnow
from incisive.platform.settings import PlatformSettings

INVALID = "invalid result"
EPS = 1e-9
MIN_EPSILON, MAX_EPSILON = 1e-3, 10.0  # a sane range: below 1e-3 the noise (scale 1/ε) drowns every count


class QueryRefused(Forbidden):
    """Refused by a platform rule; audited (and the budget marked spent) after the transaction is rolled back."""

    def __init__(self, rule: str, message: str, spec: dict[str, Any]) -> None:
        super().__init__(message)
        self.rule, self.spec = rule, spec


@dataclass
class Started:
    query_id: str
    kind: str
    params: dict[str, Any]
    k: int
    waiting: list[str]
    status: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    dp: dict[str, Any] | None = None


def spec_of(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The whole question, as audited."""
    if kind == "count":
        return {"by": params.get("by"), "where": params.get("where"), "unit": params.get("unit", "patients"),
                "epsilon": params.get("epsilon"), "project": params.get("project"), "nodes": params.get("nodes")}
    return {"metric": params.get("metric"), "project": params.get("project"), "nodes": params.get("nodes")}


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


def _payload(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        if kind == "count":
            unit = params.get("unit", "patients")
            if unit not in UNITS:
                raise ValueError(f"unknown unit; allowed: {', '.join(UNITS)}")
            return {"by": parse_fields(params.get("by") or []), "where": parse_where(params.get("where")),
                    "unit": unit}
        if params.get("metric") not in METRICS:
            raise ValueError(f"unknown metric; allowed: {', '.join(METRICS)}")
        return {"metric": params["metric"]}
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _budget_message(project: str, left: float, budget: float) -> str:
    which = f"project {project!r}" if project else "queries without a project"
    return (f"refused by rule budget: the privacy budget for {which} is used up ({max(0.0, left):.3g} of "
            f"{budget:.3g} left); no more answers for it, exact or noisy, until a data-provider manager adds budget")


def start(s: Session, user: User, kind: str, params: dict[str, Any], settings: PlatformSettings,
          handed: set[str] | frozenset[str] = frozenset()) -> Started:
    payload = _payload(kind, params)
    epsilon, default = params.get("epsilon"), False
    if epsilon is not None and kind != "count":
        raise BadRequest("epsilon is available for counts only")
    if kind == "count" and epsilon is None and settings.require_dp:
        epsilon, default = settings.default_epsilon, True
    if epsilon is not None and not MIN_EPSILON <= float(epsilon) <= MAX_EPSILON:  # 1e-310: 1/ε overflows
        raise BadRequest(f"epsilon must be between {MIN_EPSILON} and {MAX_EPSILON}")
    project = params.get("project") or ""
    spec = spec_of(kind, {**params, "epsilon": epsilon})
    account = users.budget_account(s, user, project)
    left = account.budget - account.spent
    if account.exhausted or (epsilon is not None and float(epsilon) > left + EPS):
        raise QueryRefused("budget", _budget_message(project, left, account.budget), spec)
    dp = None
    if epsilon is not None:
        account.spent += float(epsilon)
        user.dp_spent += float(epsilon)
        account.updated_at = utcnow()
        if account.budget - account.spent <= EPS:
            account.exhausted = True  # spent: the next query of this project is refused, whatever it asks
        dp = {"mechanism": "laplace", "epsilon": float(epsilon), "default": default, "project": project or None,
              "budget_left": round(max(0.0, account.budget - account.spent), 6)}
    waiting, status = _targets(s, params.get("nodes"), settings.node_offline_s)
    k = settings.min_cell_count
    payload.update({"k": k, "requester": user.username, "project": params.get("project"), "epsilon": epsilon})
    query_id = new_id()
    recorded = {**payload, "nodes": params.get("nodes")}
    s.add(Query(id=query_id, user_id=user.id, kind=kind, params=recorded, created_at=utcnow()))
    s.flush()
    created = jobs.create(s, query_id, kind, payload, waiting, settings.query_timeout_s, handed)
    return Started(query_id, kind, recorded, k, waiting, status, created, dp)


def record_refusal(s: Session, user: User, kind: str, refusal: QueryRefused) -> None:
    """After a refused start was rolled back: audit it, and stop the project when it was the budget."""
    if refusal.rule == "budget":
        account = users.budget_account(s, user, refusal.spec.get("project"))
        account.exhausted, account.updated_at = True, utcnow()
    audit.append(s, user.username, f"query.{kind}", outcome="refused",
                 details={"rule": refusal.rule, "query": refusal.spec})


def _reason(body: dict[str, Any]) -> dict[str, str]:
    rule = str(body.get("rule") or "")
    return {"rule": rule if rule in RULES else "node", "message": str(body.get("error") or "")[:300]}


def _check(started: Started, body: Any) -> CountResult | SummaryResult:
    job = started.params
    return check_count(body, job) if started.kind == "count" else check_summary(body, job)


def finish(s: Session, started: Started, user: User) -> dict[str, Any]:
    answers = jobs.results(s, started.query_id)
    jobs.expire_unanswered(s, started.query_id)
    status = dict(started.status)
    refusals: dict[str, dict[str, str]] = {}
    usable: dict[str, Any] = {}
    for node_id in started.waiting:
        body = answers.get(node_id)
        if body is None:
            status[node_id] = "missing"
        elif body.get("status") == "ok":
            try:
                usable[node_id] = _check(started, body.get("result"))
                status[node_id] = "ok"
            except ProtocolViolation as exc:  # a bad node is dropped; the others still answer
                status[node_id] = INVALID
                refusals[node_id] = {"rule": "protocol", "message": f"invalid result from the node: {exc}"}
        else:
            status[node_id] = "refused" if body.get("status") == "refused" else "error"
            refusals[node_id] = _reason(body)
    if started.dp is not None and not usable:  # nothing was answered: nothing was released, ε is given back
        account = users.budget_account(s, user, started.params.get("project"))
        account.spent = max(0.0, account.spent - started.dp["epsilon"])
        user.dp_spent = max(0.0, user.dp_spent - started.dp["epsilon"])
        account.exhausted, account.updated_at = account.budget - account.spent <= EPS, utcnow()
        started.dp = {**started.dp, "refunded": True,
                      "budget_left": round(max(0.0, account.budget - account.spent), 6)}
    out: dict[str, Any] = {"query_id": started.query_id, "kind": started.kind, "k": started.k,
                           "nodes": dict(sorted(status.items())), "refusals": dict(sorted(refusals.items()))}
    if started.kind == "count":
        out.update({"by": started.params["by"], "where": started.params["where"], "unit": started.params["unit"],
                    "project": started.params.get("project"),
                    **disclosure.combine_counts(started.params["by"], usable), "dp": started.dp})
    else:
        out.update({"metric": started.params["metric"], **disclosure.combine_summary(usable)})
    query = s.get(Query, started.query_id)
    if query is not None:
        query.finished_at, query.result = utcnow(), out
    audit.append(s, user.username, f"query.{started.kind}", target=started.query_id,
                 outcome="ok" if usable else "no-answers",
                 details={"query": spec_of(started.kind, started.params), "k": started.k, "nodes": status,
                          "refusals": refusals, "withheld_by": out.get("withheld_by", []),
                          "dp_default": bool(started.dp and started.dp["default"])})
    return out
