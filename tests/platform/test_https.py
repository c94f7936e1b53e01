"""Platform HTTPS built in (issue 18 item 2): ``platform init --ca``, ``platform serve --tls-cert/--tls-key`` (real
uvicorn with TLS on a free loopback port), HSTS, and the agent's verification of the platform's certificate:
pinned CA at enrolment, a self-signed certificate refused with its reason, verification off only on loopback."""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from typer.testing import CliRunner

from incisive.cli import app as cli_app
from incisive.common import signing, tls
from incisive.common.errors import ConfigError
from incisive.node.agent_link import AgentSettings, LinkError, SignedClient, agent_key_path, enrol, flower_key_path
from incisive.node.home import Node
from incisive.platform import pki
from incisive.platform.home import Platform
from incisive.platform.server import ThreadedServer
from tests.platform.conftest import invite, make_platform


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sans(cert: Path) -> set[str]:
    ext = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)}


def test_platform_init_ca_makes_a_ca_and_a_server_certificate(tmp_path: Path) -> None:
    home = tmp_path / "platform"
    result = CliRunner().invoke(cli_app, ["platform", "init", str(home), "--ca", "--name", "platform.example.org",
                                          "--name", "10.1.2.3"])
    assert result.exit_code == 0, result.output
    assert _mode(home / "ca" / "ca.key") == 0o600 and _mode(home / "tls" / "server.key") == 0o600
    assert _sans(home / "tls" / "server.pem") == {"platform.example.org", "10.1.2.3", "127.0.0.1", "localhost"}
    ca = x509.load_pem_x509_certificate((home / "ca" / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    written = tomllib.loads((home / "platform.toml").read_text())
    assert written["tls_cert"] == str(home / "tls" / "server.pem")
    assert written["tls_key"] == str(home / "tls" / "server.key")
    again = CliRunner().invoke(cli_app, ["platform", "init", str(tmp_path / "p2"), "--ca"])
    assert again.exit_code == 0  # a second platform gets its own CA
    assert (tmp_path / "p2" / "ca" / "ca.pem").read_bytes() != (home / "ca" / "ca.pem").read_bytes()


@pytest.fixture
def https_platform(tmp_path: Path) -> Iterator[tuple[Platform, ThreadedServer]]:
    p = make_platform(tmp_path / "platform")
    p.settings = pki.init_ca(p.settings, ["localhost"])
    server = ThreadedServer(p.settings, p.db).start()
    yield p, server
    server.stop()
    p.db.dispose()


def test_https_with_hsts_and_an_agent_pinning_the_platform_ca(https_platform: tuple[Platform, ThreadedServer],
                                                              tmp_path: Path) -> None:
    p, server = https_platform
    assert server.url.startswith("https://127.0.0.1:")
    ca = p.home / "ca" / "ca.pem"
    r = httpx.get(server.url + "/health", verify=tls.client_context(ca), timeout=30)
    assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"

    node = Node.init(tmp_path / "node", provider="Hospital A")
    data = enrol(node, server.url, invite(p), ca_file=ca)
    assert data["node_id"] == node.settings.node_id
    settings = AgentSettings.load(node.home)
    pinned = node.home / "agent" / "platform-ca.pem"
    assert settings.ca_file == str(pinned) and pinned.read_bytes() == ca.read_bytes()
    # both private keys stay at the node, 0600; the Flower public key went to the platform
    assert _mode(agent_key_path(node)) == 0o600 and _mode(flower_key_path(node.home)) == 0o600
    assert pki.node_key(p.settings, node.settings.node_id) == tls.flower_public_key(flower_key_path(node.home))
    # the CA the SuperLink's certificate chains to came back over the verified call and is pinned
    assert (node.home / "agent" / "superlink-ca.pem").read_text() == pki.superlink_ca_pem(p.settings)
    client = SignedClient(settings, signing.read_private_key(agent_key_path(node)))
    try:  # signed requests over the pinned HTTPS link
        client.request("POST", "/agent/v1/heartbeat", {"version": "t"})
        assert client.request("GET", "/agent/v1/jobs?wait=0") is not None
    finally:
        client.close()
    node.catalogue.dispose()


def test_agent_refuses_a_certificate_it_does_not_trust_and_names_the_reason(tmp_path: Path) -> None:
    p = make_platform(tmp_path / "platform")
    pair = tls.self_signed(tmp_path / "self" / "server.pem", tmp_path / "self" / "server.key", ["127.0.0.1"])
    p.settings = p.settings.model_copy(update={"tls_cert": str(pair.cert), "tls_key": str(pair.key)})
    server = ThreadedServer(p.settings, p.db).start()
    try:
        node = Node.init(tmp_path / "node", provider="Hospital A")
        token = invite(p)
        with pytest.raises(LinkError) as refused:  # system store: does not know this issuer
            enrol(node, server.url, token)
        assert "not trusted (self-signed certificate)" in str(refused.value)
        other = tls.create_ca(tmp_path / "other-ca")  # a pinned CA that did not issue it: refused too
        with pytest.raises(LinkError) as pinned:
            enrol(node, server.url, token, ca_file=other.cert)
        assert "not trusted" in str(pinned.value)
        assert not (node.home / "agent" / "agent.toml").exists()
        # given that very certificate as the CA: enrolment goes through (the refusals did not spend the invite)
        assert enrol(node, server.url, token, ca_file=pair.cert)["node_id"] == node.settings.node_id
        node.catalogue.dispose()
    finally:
        server.stop()
        p.db.dispose()


def test_turning_verification_off_is_refused_unless_the_platform_is_on_loopback() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        tls.httpx_verify("https://platform.example.org", False)
    with pytest.raises(ConfigError, match="https"):
        tls.httpx_verify("http://platform.example.org", True)
    assert tls.httpx_verify("https://127.0.0.1:8443", False) is False
    assert tls.httpx_verify("https://localhost:8443", False) is False
    assert tls.httpx_verify("https://platform.example.org", True) is True
    settings = AgentSettings(platform_url="https://platform.example.org", node_id="n", verify_tls=False)
    with pytest.raises(ConfigError, match="loopback"):
        SignedClient(settings, signing.generate_private_key())


def test_a_bad_flower_key_is_refused_before_the_invite_is_spent(tmp_path: Path) -> None:
    p = make_platform(tmp_path / "platform")
    server = ThreadedServer(p.settings, p.db).start()
    try:
        token = invite(p)
        agent_key = signing.public_key_b64(signing.generate_private_key())
        body = {"token": token, "node_id": "hospital-x", "public_key": agent_key,
                "fl_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDs1 not-ec"}
        r = httpx.post(server.url + "/agent/v1/enrol", json=body, timeout=30)
        assert r.status_code == 422 and "fl_public_key" in r.json()["detail"], r.text
        body["fl_public_key"] = tls.new_flower_key(tmp_path / "k.key")
        assert httpx.post(server.url + "/agent/v1/enrol", json=body, timeout=30).status_code == 200
    finally:
        server.stop()
        p.db.dispose()
