"""``node enrol`` refuses plain http:// except to this machine (issue 16 item 6), as a real CLI process."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from incisive.common.exit_codes import ExitCode
from incisive.node.agent_link import check_platform_url
from incisive.node.home import Node


def _enrol(home: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "incisive", "node", "enrol", url, "--token", "invite-x",
                           "--home", str(home)], capture_output=True, text=True, timeout=120)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_enrol_refuses_http_to_another_machine(tmp_path: Path) -> None:
    Node.init(tmp_path / "node", provider="Enrol Hospital").catalogue.dispose()
    r = _enrol(tmp_path / "node", "http://10.20.30.40:8000")
    assert r.returncode == ExitCode.INVALID, r.stderr
    assert "refusing plain http:// to 10.20.30.40" in r.stderr and "https://" in r.stderr
    assert not (tmp_path / "node" / "agent").exists() or not any((tmp_path / "node" / "agent").iterdir())


def test_enrol_allows_http_to_loopback(tmp_path: Path) -> None:
    """Loopback http:// passes the check and fails only because nothing listens there."""
    Node.init(tmp_path / "node", provider="Enrol Hospital").catalogue.dispose()
    r = _enrol(tmp_path / "node", f"http://127.0.0.1:{_closed_port()}")
    assert "refusing" not in r.stderr
    assert "cannot reach the platform" in r.stderr, r.stderr


@pytest.mark.parametrize("url", ["https://platform.example:8000", "http://127.0.0.1:8000", "http://[::1]:8000",
                                 "http://localhost:8000", "http://127.5.6.7"])
def test_allowed_urls(url: str) -> None:
    check_platform_url(url)


@pytest.mark.parametrize("url", ["http://platform.example:8000", "http://192.168.1.5", "http://[2001:db8::1]",
                                 "ftp://127.0.0.1", "platform.example", "https://", "http://"])
def test_refused_urls(url: str) -> None:
    from incisive.common.errors import InputError

    with pytest.raises(InputError):
        check_platform_url(url)
