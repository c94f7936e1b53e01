"""Issue 13's hostile researcher, attack by attack in the order reported, against a real platform (HTTP) and real
node agents, on SQLite and on PostgreSQL (platform database and node catalogues alike).

The node holds the 38 patients of :mod:`tests.platform.federation` (k = 5). Each test is one attack; each failed
on the code before disclosure control was reworked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from incisive.common.audit_log import NodeAudit
from incisive.node.agent import Agent, run_job
from incisive.node.home import Node
from tests.conftest import temp_pg_database
from tests.node.test_agent import wait_for
from tests.platform.federation import PATIENTS, federation, node_ids

pytestmark = pytest.mark.slow
Urls = Callable[[int], tuple[str, list[str]]]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Urls]:
    """``urls(n)``: a platform database URL and n catalogue URLs on the backend under test."""
    with contextlib.ExitStack() as stack:
        def make(n: int) -> tuple[str, list[str]]:
            if request.param == "sqlite":
                return "", [f"sqlite:///{tmp_path / f'catalogue{i}.db'}" for i in range(n)]
            if not request.getfixturevalue("pg_available"):
                pytest.skip("PostgreSQL not reachable")
            return (stack.enter_context(temp_pg_database()),
                    [stack.enter_context(temp_pg_database()) for _ in range(n)])
        yield make


def cells(result: dict[str, Any]) -> dict[tuple[str, ...], int | None]:
    return {tuple(c["key"]): c["count"] for c in result["cells"]}


def test_differencing_a_query_and_its_filtered_copy(tmp_path: Path, urls: Urls) -> None:
    """count by cancer type (unknown = 6), then the same with sex=F (unknown = 5): one man with an unknown
    cancer type; then the filter on him alone. The 5 is withheld (it differs from the answered 6 by one patient)
    and the filter on one patient is refused, saying which rule refused it."""
    platform_url, catalogues = urls(1)
    with federation(tmp_path, platform_url, catalogues, require_dp=False) as fed:
        (node,) = node_ids(fed)
        first = fed.ok(["cancer_type"])
        assert cells(first)[("unknown",)] == 6

        second = fed.ok(["cancer_type"], where={"sex": "F"})
        assert second["nodes"] == {node: "ok"}
        assert ("unknown",) not in cells(second)  # 6 - 5 would be the one man
        assert cells(second)[("breast",)] == 10  # the same ten women as before: nothing new, still shown
        assert "overlap" in second["withheld_by"]

        third = fed.count(["age_band", "modality"], where={"sex": "M", "cancer_type": "unknown"})
        assert third.status_code == 200, third.text
        body = third.json()
        assert body["nodes"] == {node: "refused"} and body["cells"] == []
        assert body["refusals"][node]["rule"] == "min_subset"
        assert "10" in body["refusals"][node]["message"]  # says what the threshold is


def test_which_combinations_exist_is_not_listed(tmp_path: Path, urls: Urls) -> None:
    """A four-field query whose every combination is below k lists no combination at all: one suppressed total."""
    platform_url, catalogues = urls(1)
    with federation(tmp_path, platform_url, catalogues, require_dp=False) as fed:
        result = fed.ok(["modality", "cancer_type", "sex", "age_band"])
        assert result["cells"] == []
        assert result["suppressed"] == PATIENTS  # rounded when the node rounds; here exact (>= k)
        assert result["complete"] is False
        assert "min_cell_count" in result["withheld_by"]
        for rows in result["margins"].values():  # a margin row is itself a one-field cell: >= k or not listed
            assert all(r["count"] is not None and r["count"] >= 5 for r in rows)


def test_dp_lists_the_declared_domain_and_a_spent_budget_stops_every_answer(tmp_path: Path, urls: Urls) -> None:
    """With ε the cells come from the declared domain (empty and small look alike); once the project's budget is
    spent nothing more is answered for it, exact or not, until a data-provider manager adds budget."""
    from incisive.common.query_spec import DOMAINS  # (here, so that the older code fails the test, not the import)

    platform_url, catalogues = urls(1)
    with federation(tmp_path, platform_url, catalogues, budget=1.0, require_dp=False) as fed:
        noisy = fed.ok(["cancer_type"], epsilon=0.5, project="p1")
        assert set(cells(noisy)) == {(v,) for v in DOMAINS["cancer_type"]}  # melanoma etc.: nobody has them
        assert noisy["dp"]["epsilon"] == 0.5 and noisy["dp"]["project"] == "p1"
        assert noisy["total"] is None and noisy["margins"] == {}
        fed.ok(["cancer_type"], epsilon=0.5, project="p1")

        for attempt in ({"epsilon": 0.5}, {}):  # the budget is used up: no more, and never the exact counts
            refused = fed.count(["cancer_type"], project="p1", **attempt)
            assert refused.status_code == 403, refused.text
            assert "budget" in refused.json()["detail"] and "p1" in refused.json()["detail"]
        summary = fed.post("/api/v1/queries/summary", {"metric": "rows", "project": "p1"})
        assert summary.status_code == 403
        assert fed.count(["cancer_type"], project="p2", epsilon=0.5).status_code == 200  # budgets are per project

        put = fed.post("/api/v1/budgets/rita", {"budget": 2.0, "project": "p1"}, user="dora", method="PUT")
        assert put.status_code == 200, put.text
        assert fed.ok(["cancer_type"], epsilon=0.5, project="p1")["dp"]["budget_left"] == pytest.approx(0.5)
        entries = fed.audit()
        assert any(e["action"] == "budget.set" and e["actor"] == "dora" and e["details"].get("project") == "p1"
                   for e in entries)
        refusals = [e for e in entries if e["action"].startswith("query.") and e["outcome"] == "refused"]
        assert refusals and all(e["details"]["rule"] == "budget" for e in refusals)
        assert {e["details"]["query"]["project"] for e in refusals} == {"p1"}


def test_dp_required_by_default_on_new_platforms(tmp_path: Path, urls: Urls) -> None:
    from incisive.common.query_spec import DOMAINS

    platform_url, catalogues = urls(1)
    with federation(tmp_path, platform_url, catalogues, budget=2.0, require_dp=True) as fed:
        result = fed.ok(["sex"])  # no ε asked: the platform's default ε is applied and charged
        assert result["dp"] is not None and result["dp"]["default"] is True
        assert set(cells(result)) == {(v,) for v in DOMAINS["sex"]}


def _poisoned(poison: Callable[[dict[str, Any]], None]) -> type[Agent]:
    class Poisoned(Agent):
        """An enrolled node that tampers with its own answers before they go out."""

        def handle(self, job: dict[str, Any]) -> None:
            job_id = str(job["id"])
            if self.state.begin(job_id, str(job.get("type")), 0.0):
                result = run_job(self.node, job)
                if result.get("status") == "ok":
                    poison(result["result"])
                self.state.finish(job_id, result)

    return Poisoned


POISONS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("k is a string", lambda r: r.update(k="abc")),
    ("cell key is an integer", lambda r: r["cells"][0].update(key=7)),
    ("cell key holds an integer", lambda r: r["cells"][0].update(key=[7])),
    ("count of 10^30", lambda r: r["cells"][0].update(count=10**30)),
    ("k of 1e9", lambda r: r.update(k=1e9)),
    ("negative count", lambda r: r["cells"][0].update(count=-3)),
    ("k below the job's", lambda r: r.update(k=1)),
]


@pytest.mark.parametrize("what,poison", POISONS, ids=[p[0] for p in POISONS])
def test_a_poisoned_node_is_dropped_and_the_others_answer(tmp_path: Path, what: str,
                                                          poison: Callable[[dict[str, Any]], None]) -> None:
    """(SQLite only: the validation is in the platform, not the database.)"""
    with federation(tmp_path, "", [f"sqlite:///{tmp_path / f'c{i}.db'}" for i in range(3)],
                    agent_class=[Agent, Agent, _poisoned(poison)], require_dp=False) as fed:
        good_a, good_b, bad = node_ids(fed)
        r = fed.count(["cancer_type"])
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["nodes"] == {good_a: "ok", good_b: "ok", bad: "invalid result"}
        assert result["refusals"][bad]["rule"] == "protocol"
        assert cells(result) == {("breast",): 20, ("lung",): 24, ("prostate",): 16, ("unknown",): 12}
        entry = [e for e in fed.audit() if e["action"] == "query.count"][-1]
        assert entry["details"]["nodes"][bad] == "invalid result"
        assert entry["details"]["refusals"][bad]["rule"] == "protocol"


def test_the_audit_records_the_whole_question(tmp_path: Path, urls: Urls) -> None:
    """by, where, unit, ε and project in the platform's and the node's audit entries, and refusals with their rule."""
    platform_url, catalogues = urls(1)
    with federation(tmp_path, platform_url, catalogues, require_dp=False) as fed:
        node: Node = fed.nodes[0]
        fed.ok(["cancer_type"], where={"sex": "F"}, unit="patients", project="p9")
        fed.ok(["age_band"], where={"sex": "M", "cancer_type": "unknown"}, project="p9")  # refused at the node
        queries = [e for e in fed.audit() if e["action"] == "query.count"]
        asked = queries[-2]["details"]["query"]
        assert asked == {"by": ["cancer_type"], "where": {"sex": "F"}, "unit": "patients", "epsilon": None,
                         "project": "p9", "nodes": None}
        assert queries[-1]["details"]["query"]["where"] == {"sex": "M", "cancer_type": "unknown"}
        assert queries[-1]["details"]["refusals"][node.settings.node_id]["rule"] == "min_subset"

        def jobs() -> list[dict[str, Any]]:
            return [e for e in NodeAudit(node.home).entries() if e["action"] == "job.count"]

        wait_for(lambda: len(jobs()) >= 2, 15, "the node's audit entries")
        done, refused = jobs()[-2:]
        assert done["details"]["query"]["where"] == {"sex": "F"} and done["details"]["query"]["project"] == "p9"
        assert done["details"]["query"]["unit"] == "patients" and done["details"]["query"]["by"] == ["cancer_type"]
        assert refused["outcome"] == "refused" and refused["details"]["rule"] == "min_subset"
        assert refused["details"]["query"]["where"] == {"sex": "M", "cancer_type": "unknown"}


def test_the_researcher_is_told_what_was_refused_and_why(tmp_path: Path) -> None:
    """``incisive query count`` (plain and --json) names the rule and the reason; a budget stop is one line, exit 2."""
    import json

    from typer.testing import CliRunner

    from incisive.cli import app
    from incisive.common.errors import IncisiveError

    runner = CliRunner()
    with federation(tmp_path, "", [f"sqlite:///{tmp_path / 'c.db'}"], budget=0.5, require_dp=False) as fed:
        (node,) = node_ids(fed)
        base = ["query", "count", "--url", fed.server.url, "--token", fed.tokens["rita"]]
        r = runner.invoke(app, [*base, "--by", "age_band", "--where", "sex=M", "--where", "cancer_type=unknown"])
        assert r.exit_code == 0, r.output
        assert f"{node} refused (min_subset): refused by rule min_subset" in r.output
        r = runner.invoke(app, [*base, "--by", "modality,cancer_type,sex,age_band"])
        assert "not listed: 38 patients in no shown cell; withheld by: min_cell_count" in r.output
        r = runner.invoke(app, [*base, "--by", "age_band", "--where", "sex=M", "--where", "cancer_type=unknown",
                                "--json"])
        assert json.loads(r.stdout)["refusals"][node]["rule"] == "min_subset"
        r = runner.invoke(app, [*base, "--by", "sex", "--epsilon", "0.5", "--project", "p1", "--where", "sex=M",
                                "--where", "cancer_type=unknown", "--json"])
        assert json.loads(r.stdout)["dp"]["refunded"] is True  # every node refused: nothing released, ε back
        r = runner.invoke(app, [*base, "--by", "sex", "--epsilon", "0.5", "--project", "p1"])
        assert r.exit_code == 0 and "Laplace noise at each node, ε=0.5" in r.output
        r = runner.invoke(app, [*base, "--by", "sex", "--project", "p1"])
        assert isinstance(r.exception, IncisiveError) and r.exception.exit_code == 2  # (main() exits with it)
        assert "refused by rule budget" in str(r.exception)
        assert "\n" not in str(r.exception)
