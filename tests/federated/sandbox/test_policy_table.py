"""``[sandbox]`` in the node policy: defaults = Limits, a table in policy.toml, ``node policy set --sandbox off``
audited, bad values refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.cli import app
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import ConfigError, InputError
from incisive.federated.sandbox import Limits
from incisive.node.home import Node
from incisive.node.policy import POLICY_FILE, load_policy

runner = CliRunner()


def test_defaults_are_the_sandbox_limits(sqlite_node: Node) -> None:
    table = load_policy(sqlite_node.home).sandbox
    assert table.mode == "bwrap" and table.limits() == Limits()


def test_table_in_policy_toml(sqlite_node: Node) -> None:
    (sqlite_node.home / POLICY_FILE).write_text('min_cell_count = 7\n\n[sandbox]\nmode = "off"\n'
                                               'wall_seconds = 600\nprocesses = 128\ngpu = true\n')
    table = load_policy(sqlite_node.home).sandbox
    assert table.mode == "off"
    assert table.limits() == Limits(wall_seconds=600, processes=128, gpu=True)
    for bad in ('[sandbox]\nmode = "docker"\n', "[sandbox]\nprocesses = 0\n", "[sandbox]\nnetwork = true\n"):
        (sqlite_node.home / POLICY_FILE).write_text(bad)
        with pytest.raises(ConfigError, match="invalid node policy"):
            load_policy(sqlite_node.home)


def test_set_sandbox_off_is_audited_and_round_trips(sqlite_node: Node) -> None:
    home = str(sqlite_node.home)
    r = runner.invoke(app, ["node", "policy", "set", "--home", home, "--sandbox", "off", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sandbox"]["mode"] == "off"
    text = Path(home, POLICY_FILE).read_text()
    assert '\n[sandbox]\nmode = "off"\n' in text
    entry = list(NodeAudit(sqlite_node.home).entries())[-1]
    assert entry["action"] == "policy.set" and entry["details"]["sandbox"]["mode"] == "off"
    r = runner.invoke(app, ["node", "policy", "set", "--home", home, "--k", "9"])
    assert r.exit_code == 0 and load_policy(sqlite_node.home).sandbox.mode == "off"  # other changes keep it
    assert "mode=off" in runner.invoke(app, ["node", "policy", "show", "--home", home]).stdout
    r = runner.invoke(app, ["node", "policy", "set", "--home", home, "--sandbox", "none"])
    assert isinstance(r.exception, InputError)
