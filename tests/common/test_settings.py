from pathlib import Path

import pytest

from incisive.common.errors import ConfigError
from incisive.common.settings import NodeSettings


def _write(home: Path, extra: str = "") -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "incisive.toml").write_text(f'provider = "Hospital A"\nnode_id = "hospital-a"\n{extra}')


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "import_workers = 3\n")
    s = NodeSettings.load(tmp_path)
    assert s.provider == "Hospital A" and s.import_workers == 3 and s.home == tmp_path.resolve()
    assert s.effective_catalogue_url == f"sqlite:///{tmp_path.resolve() / 'catalogue.db'}"
    monkeypatch.setenv("INCISIVE_IMPORT_WORKERS", "1")
    monkeypatch.setenv("INCISIVE_CATALOGUE_URL", "postgresql+psycopg://u@h/db")
    s = NodeSettings.load(tmp_path)
    assert s.import_workers == 1 and s.effective_catalogue_url == "postgresql+psycopg://u@h/db"


def test_round_trip_to_toml(tmp_path: Path) -> None:
    s = NodeSettings(home=tmp_path, provider='A "quoted" name', node_id="a", safe_private_tags=["X:0029,1010"])
    (tmp_path / "incisive.toml").write_text(s.to_toml())
    again = NodeSettings.load(tmp_path)
    assert again.provider == s.provider and again.safe_private_tags == ["X:0029,1010"]


def test_missing_and_invalid_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an incisive node"):
        NodeSettings.load(tmp_path / "nowhere")
    _write(tmp_path, "import_workers = -4\n")
    with pytest.raises(ConfigError, match="import_workers"):
        NodeSettings.load(tmp_path)
    (tmp_path / "incisive.toml").write_text('provider = "x"\nnode_id = "Bad Id!"\n')
    with pytest.raises(ConfigError, match="node_id"):
        NodeSettings.load(tmp_path)
