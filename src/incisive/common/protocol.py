"""The agent protocol's result bodies, as the platform checks them before combining anything.

A node's answer is data from outside: its types, ranges and its consistency with the job it answers are
checked here (strict integers, never bools or floats; string cell keys of the job's arity; counts between 0 and
the node's own reported population, itself bounded; the node's k at least the job's; noise applied when the job
asked for it, over the declared domain). :func:`check_count` and :func:`check_summary` return the validated
model or raise :class:`ProtocolViolation`, whose one-line message names the field and the problem but never
echoes the value sent.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from incisive.common.federated import DOMAINS, MAX_FILTER_VALUE, MAX_GROUP_FIELDS, RULES

MAX_UNITS = 100_000_000  # no node holds more units than this
MAX_K = 1000  # the node policy's upper bound for min_cell_count
MAX_CELLS = 10_000

Count = Annotated[StrictInt, Field(ge=0, le=MAX_UNITS)]
Value = Annotated[StrictStr, Field(max_length=MAX_FILTER_VALUE + 40)]


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
