"""The operator runs the machine, not the tenants: the node commands that would read a tenant's data or change
its policy refuse on a tenant directory, each attempt in the tenant's own audit chain; on a provider's own node
they work as ever."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.central.home import Central
from incisive.central.tenants import add_tenant
from incisive.cli import app
from incisive.common.audit_log import NodeAudit
from incisive.node.home import Node
from incisive.node.tenancy import ProviderOnly

runner = CliRunner()
REFUSED = [
    ["node", "token", "create", "--role", "viewer"],
    ["node", "ls", "studies"],
    ["node", "policy", "set", "--k", "2"],
    ["node", "policy", "revoke", "tabular-risk:1"],
    ["node", "policy", "approve", "tabular-risk:1"],
]


@pytest.mark.parametrize("argv", REFUSED, ids=lambda a: " ".join(a[:3]))
def test_operator_commands_on_a_tenant_are_refused_and_audited(central: Central, argv: list[str]) -> None:
    record, _ = add_tenant(central, "Hospital D", "IT", "it@d.example")
    home = central.tenant_dir(record.id)
    before = (home / "policy.toml").read_bytes() if (home / "policy.toml").exists() else None
    r = runner.invoke(app, [*argv, "--home", str(home)])
    assert isinstance(r.exception, ProviderOnly), r.output  # `incisive` prints it in one line, exit code 2
    assert ProviderOnly.exit_code == 2 and "Central Node tenant" in str(r.exception)
    refused = [e for e in NodeAudit(home).entries() if e["action"] == "operator.refused"]
    assert [e["target"] for e in refused] == [" ".join(argv[:3]) if argv[1] != "ls" else "node ls"]
    after = (home / "policy.toml").read_bytes() if (home / "policy.toml").exists() else None
    assert after == before


def test_the_same_commands_work_on_a_providers_own_node(tmp_path: Path) -> None:
    node = Node.init(tmp_path / "node", provider="Hospital A")
    node.catalogue.dispose()
    for argv in (["node", "token", "create", "--role", "viewer"], ["node", "ls", "studies"],
                 ["node", "policy", "set", "--k", "6"]):
        r = runner.invoke(app, [*argv, "--home", str(node.home)])
        assert r.exit_code == 0, (argv, r.output)
