"""The node runtime's FAB check (``incisive.node.fl.runtime._check_fab``): the executor runs a task only if its
Flower App Bundle names incisive's installed ClientApp. FABs are built the way every job's is: a copy of
``deploy.APP_DIR`` (``Federation.submit``), built by ``flwr run``'s ``build_fab_from_disk`` into a ``Fab``, and
carried to the executor as the protobuf the Runtime API sends."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flwr.cli.build import build_fab_from_disk
from flwr.common.serde import fab_from_proto, fab_to_proto
from flwr.supercore.fab import Fab

from incisive.federated.deploy import APP_DIR
from incisive.node.fl import runtime as node_runtime

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pathspec")

OURS = 'clientapp = "incisive.node.fl.client_app:client_app"'


def _fab(content: bytes) -> Any:
    """What the executor's ``pull_task_input`` hands to the check: the Fab after the wire."""
    return fab_from_proto(fab_to_proto(Fab(hashlib.sha256(content).hexdigest(), content, {})))


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """The job's copy of the app, as ``Federation.submit`` makes it."""
    path = tmp_path / "app"
    shutil.copytree(APP_DIR, path, ignore=shutil.ignore_patterns("__pycache__"))
    return path


@pytest.fixture
def build(app: Path) -> Callable[[], Any]:
    return lambda: _fab(build_fab_from_disk(app))


def test_our_fab_is_accepted(build: Callable[[], Any]) -> None:
    assert OURS in (APP_DIR / "pyproject.toml").read_text()
    node_runtime._check_fab(build())  # no exception


def test_our_clientapp_with_another_serverapp_is_accepted(app: Path, build: Callable[[], Any]) -> None:
    """The node only cares which ClientApp it would run; the ServerApp runs at the platform."""
    toml = app / "pyproject.toml"
    toml.write_text(toml.read_text().replace('serverapp = "incisive.federated.server_app:server_app"',
                                             'serverapp = "elsewhere:server_app"'))
    node_runtime._check_fab(build())


@pytest.mark.parametrize("ref", ["evil:client_app", "incisive.federated.server_app:server_app",
                                 "incisive.node.fl.client_app:client_app_v2",
                                 "incisive_fl_app:client_app"])  # the FAB's own module, re-exporting ours
def test_fab_with_other_clientapp_is_refused(app: Path, build: Callable[[], Any], ref: str) -> None:
    (app / "evil.py").write_text("import os\n\nos.system('echo pwned')\nclient_app = None\n")
    toml = app / "pyproject.toml"
    toml.write_text(toml.read_text().replace(OURS, f'clientapp = "{ref}"'))
    fab = build()
    assert "evil.py" in zipfile.ZipFile(io.BytesIO(fab.content)).namelist()  # the other code is in the FAB
    refused = f"this node runs only {node_runtime.CLIENT_APP_REF}, not {ref!r}"
    with pytest.raises(PermissionError, match=f"^{re.escape(refused)}$"):
        node_runtime._check_fab(fab)


def _zip(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return out.getvalue()


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "BadZipFile"),  # what `flwr run` sends for a remote app: no bundle at all
    (b"not a zip", "BadZipFile"),
    (_zip({"incisive_fl_app.py": ""}), "pyproject.toml"),  # no pyproject.toml in the archive
    (_zip({"pyproject.toml": "[tool.flwr.app\n"}), "Invalid TOML"),
    (_zip({"pyproject.toml": '[project]\nname = "x"\n'}), "Missing \\[tool.flwr.app\\] section"),
], ids=["empty", "not-a-zip", "no-pyproject", "bad-toml", "no-flwr-app"])  # zip bytes hold a time: not an id
def test_malformed_fab_is_refused_with_a_clear_error(content: bytes, reason: str) -> None:
    with pytest.raises(PermissionError, match=rf"^malformed FAB refused: .*{reason}"):
        node_runtime._check_fab(_fab(content))


def test_truncated_fab_is_refused(build: Callable[[], Any]) -> None:
    whole = build().content
    with pytest.raises(PermissionError, match=r"^malformed FAB refused: BadZipFile"):
        node_runtime._check_fab(_fab(whole[: len(whole) // 2]))


def test_fab_without_clientapp_is_refused(build: Callable[[], Any]) -> None:
    """Our FAB with the ClientApp line taken out of its pyproject.toml (``flwr build`` itself refuses to make
    one, a hand-made FAB can still arrive)."""
    with zipfile.ZipFile(io.BytesIO(build().content)) as z:
        files = {name: z.read(name).decode() for name in z.namelist()}
    files["pyproject.toml"] = files["pyproject.toml"].replace(OURS + "\n", "")
    with pytest.raises(PermissionError, match=r'^malformed FAB refused: .*"clientapp" missing'):
        node_runtime._check_fab(_fab(_zip(files)))
