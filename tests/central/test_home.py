"""A Central Node directory: init, settings, and an open that refuses a missing or wrong master key and touches
nothing while it does."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.central.home import Central, create_operator_token, operator_token_ok
from incisive.central.settings import CentralSettings, check_country
from incisive.central.tenants import add_tenant
from incisive.cli.central import app
from incisive.common.errors import ConfigError, InputError
from incisive.common.keyring import PASSPHRASE_ENV, FileMasterKey, KeyRing, MasterKeyError
from tests.central.conftest import make_central

runner = CliRunner()


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``root``: its mode and, for a file, its bytes."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, path.read_bytes() if path.is_file() else None)
    return out


def test_init_lays_out_a_private_directory(central: Central) -> None:
    d = central.dir
    for sub in ("secrets", "keys", "tenants", "erase", "audit", "logs"):
        assert (d / sub).is_dir()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for secret in ("master.key", "master.check"):
        assert stat.S_IMODE((d / "secrets" / secret).stat().st_mode) == 0o600
    settings = CentralSettings.load(d)
    assert (settings.country, settings.provider, settings.region) == ("DE", "Hosting GmbH", "eu-central")
    assert settings.master_key == f"file:{d / 'secrets' / 'master.key'}"
    assert central.tenants() == [] and (d / "tenants.json").is_file()
    assert [e["action"] for e in central.audit.entries()] == ["central.init"]
    assert central.audit.verify().ok


def test_init_refuses_an_existing_directory_and_a_bad_country(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        make_central(busy)
    assert sorted(p.name for p in busy.iterdir()) == ["something"]
    with pytest.raises(InputError, match="ISO 3166-1 alpha-2"):
        make_central(tmp_path / "c", country="XX")
    assert not (tmp_path / "c").exists()
    assert check_country("el") == "GR" and check_country(" it ") == "IT"
    make_central(tmp_path / "empty-is-fine")


def test_settings_round_trip_with_backup_locations(central: Central) -> None:
    s = central.settings.model_copy(update={"backup_locations": {"nas": "DE", "offsite": "NO"}, "transfer_scc": True})
    (central.dir / "central.toml").write_text(s.to_toml())
    again = CentralSettings.load(central.dir)
    assert again.backup_locations == {"nas": "DE", "offsite": "NO"} and again.transfer_scc is True
    (central.dir / "central.toml").write_text(s.to_toml().replace('"NO"', '"ZZ"'))
    with pytest.raises(ConfigError, match="backup_locations"):
        CentralSettings.load(central.dir)


def test_open_refuses_a_missing_key_and_changes_nothing(central: Central, tmp_path: Path) -> None:
    add_tenant(central, "Hospital D", "IT", "it@d.example")
    central.close()
    key = central.dir / "secrets" / "master.key"
    key.rename(tmp_path / "master.key.away")
    before = snapshot(central.dir)
    with pytest.raises(MasterKeyError, match="not found"):
        Central.open(central.dir)
    assert snapshot(central.dir) == before
    (tmp_path / "master.key.away").rename(key)
    assert [t.id for t in Central.open(central.dir).tenants()] == ["hospital-d"]


def test_open_refuses_a_wrong_key_or_loose_mode_and_changes_nothing(central: Central, tmp_path: Path) -> None:
    add_tenant(central, "Hospital D", "IT", "it@d.example")
    central.close()
    key = central.dir / "secrets" / "master.key"
    right = key.read_bytes()
    key.unlink()
    FileMasterKey.create(key)  # a valid key file, but another key
    before = snapshot(central.dir)
    with pytest.raises(MasterKeyError, match="does not match"):
        Central.open(central.dir)
    assert snapshot(central.dir) == before
    key.write_bytes(right)
    key.chmod(0o644)
    before = snapshot(central.dir)
    with pytest.raises(MasterKeyError, match="group/other"):
        Central.open(central.dir)
    assert snapshot(central.dir) == before
    key.chmod(0o600)
    Central.open(central.dir)


def test_passphrase_master_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = make_central(tmp_path / "c", passphrase="correct horse battery staple")
    assert c.settings.master_key.startswith("passphrase:") and (c.dir / "secrets" / "master.scrypt").is_file()
    record, _ = add_tenant(c, "Hospital D", "IT", "it@d.example")
    c.close()
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    before = snapshot(c.dir)
    with pytest.raises(MasterKeyError, match=PASSPHRASE_ENV):
        Central.open(c.dir)
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(MasterKeyError, match="wrong passphrase"):
        Central.open(c.dir)
    assert snapshot(c.dir) == before
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    opened = Central.open(c.dir)
    assert opened.tenant_node(record.id).keyring is not None
    KeyRing.open(opened.ring_path(record.id), record.id, opened.provider)
    opened.close()


def test_open_refuses_an_unfinished_rotation(central: Central) -> None:
    FileMasterKey.create(central.dir / "secrets" / "master-next.key")
    with pytest.raises(MasterKeyError, match="rotation was interrupted"):
        Central.open(central.dir)
    Central.open(central.dir, rotation_ok=True)


def test_not_a_central_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an incisive Central Node"):
        Central.open(tmp_path)


def test_operator_tokens(central: Central) -> None:
    token = create_operator_token(central, "ops")
    assert token.startswith("incop_") and "." not in token
    assert operator_token_ok(central, token)
    assert not operator_token_ok(central, token + "x") and not operator_token_ok(central, "inc_x.y")
    assert token not in (central.dir / "secrets" / "operator-tokens").read_text()


def test_cli_init_prints_the_operator_token_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "central"
    args = ["init", str(target), "--country", "DE", "--provider", "Hosting GmbH", "--region", "eu-central", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["country"] == "DE" and info["master_key"] == "file"
    assert operator_token_ok(Central.open(target), info["operator_token"])
    r = runner.invoke(app, args)
    assert isinstance(r.exception, ConfigError) and "not empty" in str(r.exception)
    r = runner.invoke(app, ["init", str(tmp_path / "c2"), "--country", "QQ", "--provider", "P"])
    assert isinstance(r.exception, InputError) and "ISO 3166" in str(r.exception)
    monkeypatch.setenv(PASSPHRASE_ENV, "a passphrase")
    r = runner.invoke(app, ["init", str(tmp_path / "c3"), "--country", "NO", "--provider", "P", "--passphrase-env"])
    assert r.exit_code == 0, r.output
    assert "operator token" in r.stdout and (tmp_path / "c3" / "secrets" / "master.scrypt").exists()
    monkeypatch.setenv("INCISIVE_CENTRAL", str(tmp_path / "c3"))
    r = runner.invoke(app, ["tenant", "ls", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    assert os.environ["INCISIVE_CENTRAL"]
