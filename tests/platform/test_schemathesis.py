"""Property-based run of the served OpenAPI schema (schemathesis): no input makes the platform answer 5xx.

Bounded: a few examples per operation against a live SQLite platform (well under a minute)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from incisive.platform.app import create_app
from incisive.platform.server import ThreadedServer
from incisive.platform.settings import PlatformSettings
from tests.platform.conftest import make_platform, role_tokens

schema = schemathesis.openapi.from_dict(create_app(PlatformSettings(home=Path("/nonexistent"))).openapi())


class Live:
    def __init__(self, url: str, tokens: dict[str, str]) -> None:
        self.url, self.tokens = url, tokens


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    platform = make_platform(tmp_path_factory.mktemp("st") / "platform", query_timeout_s=0.5)
    tokens = role_tokens(platform)
    server = ThreadedServer(platform.settings, platform.db).start()
    yield Live(server.url, tokens)
    server.stop()
    platform.db.dispose()


def role_for(method: str, path: str) -> str:
    if path.startswith("/api/v1/queries") or path.startswith("/api/v1/fl"):
        return "researcher"
    if path.startswith("/api/v1/budgets") and method == "PUT":
        return "dp-manager"
    return "admin"


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case: schemathesis.Case, live: Live) -> None:
    token = live.tokens[role_for(case.method, case.path)]
    case.call_and_validate(base_url=live.url, headers={"Authorization": f"Bearer {token}"},
                           checks=[not_a_server_error], timeout=30)
