"""The agent protocol, one module for both sides: job types (:class:`JobType`), the job the platform sends
(:class:`Job`) and the reply envelope a node sends back (:class:`Result`); the platform creates jobs and validates
replies with these models, the node parses jobs and builds replies with them.

Result bodies, as the platform checks them before combining anything.

A node's answer is data from outside: its types, ranges and its consistency with the job it answers are
checked here (strict integers, never bools or floats; string cell keys of the job's arity; counts between 0 and
the node's own reported population, itself bounded; the node's k at least the job's; noise applied when the job
asked for it, over the declared domain). :func:`check_count` and :func:`check_summary` return the validated
model or raise :class:`ProtocolViolation`, whose one-line message names the field and the problem but never
echoes the value sent.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from incisive.common.query_spec import DOMAINS, MAX_FILTER_VALUE, MAX_GROUP_FIELDS, RULES

MAX_UNITS = 100_000_000  # no node holds more units than this
MAX_K = 1000  # the node policy's upper bound for min_cell_count
MAX_CELLS = 10_000

Count = Annotated[StrictInt, Field(ge=0, le=MAX_UNITS)]
Value = Annotated[StrictStr, Field(max_length=MAX_FILTER_VALUE + 40)]


class JobType(StrEnum):
    """Every job type a platform may send a node's agent."""

    COUNT = "count"  # federated aggregate: a k-safe (optionally noisy) contingency table
    SUMMARY = "summary"  # federated aggregate: n / sum / sum of squares of one metric
    FL_SUPERNODE = "fl-supernode"  # start a Flower SuperNode for an FL job (node/fl/supernodes.py)
    FL_STOP = "fl-stop"  # stop that SuperNode
    INFER = "infer"  # score the node's data with a trained model; results stay at the node


QUERY_JOB_TYPES = (JobType.COUNT, JobType.SUMMARY)
# the types a node policy's ``job_types`` accepts or not; fl-stop only ever stops what the node started
POLICY_JOB_TYPES = tuple(t.value for t in JobType if t is not JobType.FL_STOP)
RESULT_STATUSES = ("ok", "refused", "error")


class UnknownJobType(ValueError):
    """A job whose type this software does not know (refused by the node, never guessed at)."""

    def __init__(self, job_type: str) -> None:
        super().__init__(f"unknown job type {job_type[:40]!r}; this node runs "
                         f"{', '.join(t.value for t in JobType)}")


class Job(BaseModel):
    """One job as the platform hands it to a node's agent."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(default="", max_length=64)
    type: str = Field(max_length=64)  # a str, so that an unknown type is parsed and then refused by name
    payload: dict[str, Any] = Field(default_factory=dict)
    expires_at: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Job:
        return cls.model_validate(data)

    def kind(self) -> JobType:
        """The job's type; :class:`UnknownJobType` when this software does not know it."""
        try:
            return JobType(self.type)
        except ValueError:
            raise UnknownJobType(self.type) from None

    def wire(self) -> dict[str, Any]:
        return self.model_dump()


class Result(BaseModel):
    """A node's reply to one job: ``status`` and either the ``result`` body or an ``error`` (and, for a refusal
    by a named rule, that ``rule``). The same model builds the reply at the node and validates it at the
    platform."""

    status: Literal["ok", "refused", "error"]
    result: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=500)
    rule: str | None = Field(default=None, max_length=32)  # the rule of a refusal (count jobs)

    @classmethod
    def ok(cls, result: dict[str, Any]) -> Result:
        return cls(status="ok", result=result)

    @classmethod
    def refused(cls, reason: str, rule: str | None = None) -> Result:
        return cls(status="refused", error=reason[:500], rule=rule)

    @classmethod
    def failed(cls, reason: str) -> Result:
        return cls(status="error", error=reason[:500])

    def body(self) -> dict[str, Any]:
        """The reply as sent and stored: ``rule`` only when a refusal names one."""
        return self.model_dump(exclude={"rule"} if self.rule is None else set())


class ProtocolViolation(ValueError):
    """A node result that does not follow the protocol (message: field and problem, never the value)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Cell(_Model):
    key: list[Value] = Field(min_length=1, max_length=MAX_GROUP_FIELDS)
    count: Count | None


class MarginRow(_Model):
    value: Value
    count: Count


class Noise(_Model):
    mechanism: StrictStr
    epsilon: Annotated[StrictFloat | StrictInt, Field(gt=0, le=10)]


class CountResult(_Model):
    by: list[StrictStr] = Field(min_length=1, max_length=MAX_GROUP_FIELDS)
    unit: StrictStr
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)]
    population: Count
    rounding: Annotated[StrictInt, Field(ge=0, le=100)] = 0
    cells: list[Cell] = Field(max_length=MAX_CELLS)
    margins: dict[StrictStr, list[MarginRow]] = Field(default_factory=dict, max_length=MAX_GROUP_FIELDS)
    total: Count | None = None
    suppressed: Count | None = None
    withheld_by: list[StrictStr] = Field(default_factory=list, max_length=len(RULES))
    dp: Noise | None = None


class SummaryResult(_Model):
    metric: StrictStr
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)]
    n: Count | None
    sum: StrictFloat | StrictInt | None = None
    sumsq: StrictFloat | StrictInt | None = None


def _parse(model: type[_Model], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part)[:24] for part in error["loc"]) or "result"
        raise ProtocolViolation(f"{where}: {error['msg'][:120]}") from None


def check_count(body: Any, job: dict[str, Any]) -> CountResult:
    """A count result, checked against the job it answers (``by``, ``unit``, ``k``, ``epsilon``)."""
    result: CountResult = _parse(CountResult, body)
    if result.by != list(job["by"]) or result.unit != job["unit"]:
        raise ProtocolViolation("by/unit: not the fields or unit the job asked for")
    if result.k < int(job["k"]):
        raise ProtocolViolation("k: below the job's k")
    unknown = set(result.withheld_by) - set(RULES)
    if unknown:
        raise ProtocolViolation("withheld_by: names a rule that does not exist")
    epsilon = job.get("epsilon")
    # noisy counts may exceed the population by the noise: Laplace(1/ε) passes 40/ε with probability e^-40 / 2
    bound = result.population + result.rounding + (math.ceil(40 / float(epsilon)) if epsilon else 0)

    def in_range(n: int | None, what: str, null_ok: bool = True) -> None:
        if n is None:
            if not null_ok:
                raise ProtocolViolation(f"{what}: missing")
            return
        if n > bound:
            raise ProtocolViolation(f"{what}: more than the node's own population")
        if result.rounding >= 2:
            if n % result.rounding:
                raise ProtocolViolation(f"{what}: not a multiple of the node's rounding base")
        elif n < result.k and not (what == "suppressed" and n == 0):
            raise ProtocolViolation(f"{what}: below the node's k")

    if (epsilon is None) != (result.dp is None):
        raise ProtocolViolation("dp: noise " + ("missing" if result.dp is None else "not asked for"))
    if result.dp is not None and not math.isclose(float(result.dp.epsilon), float(epsilon or 0)):
        raise ProtocolViolation("dp.epsilon: not the job's epsilon")
    seen: set[tuple[str, ...]] = set()
    for i, cell in enumerate(result.cells):
        key = tuple(cell.key)
        if len(key) != len(result.by) or key in seen:
            raise ProtocolViolation(f"cells.{i}.key: wrong length or repeated")
        if result.dp is not None and any(v not in DOMAINS.get(f, ()) for f, v in zip(result.by, key, strict=True)):
            raise ProtocolViolation(f"cells.{i}.key: outside the declared domain")
        seen.add(key)
        in_range(cell.count, f"cells.{i}.count", null_ok=result.dp is not None)
    if set(result.margins) - set(result.by):
        raise ProtocolViolation("margins: a field the job did not group by")
    for name, rows in result.margins.items():
        for j, row in enumerate(rows):
            in_range(row.count, f"margins.{name[:24]}.{j}.count", null_ok=False)
    in_range(result.total, "total")
    in_range(result.suppressed, "suppressed")
    return result


def check_summary(body: Any, job: dict[str, Any]) -> SummaryResult:
    result: SummaryResult = _parse(SummaryResult, body)
    if result.metric != job["metric"] or result.k < int(job["k"]):
        raise ProtocolViolation("metric/k: not the job's metric, or k below the job's")
    if result.n is not None:
        if result.n < result.k:
            raise ProtocolViolation("n: below the node's k")
        if result.sum is None or result.sumsq is None or not all(map(math.isfinite, (result.sum, result.sumsq))):
            raise ProtocolViolation("sum/sumsq: missing or not finite")
        if result.sumsq < 0 or result.sum * result.sum > result.n * result.sumsq * (1 + 1e-9) + 1e-9:
            raise ProtocolViolation("sum/sumsq: impossible for n values (Cauchy-Schwarz)")
    return result
