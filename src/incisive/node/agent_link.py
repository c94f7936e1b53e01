"""The node's identity towards the platform: Ed25519 key, ``agent.toml``, enrolment and signed HTTP requests.

```
<node>/secrets/agent.key   Ed25519 private key (PEM, 0600): made at enrolment, never leaves the node
<node>/secrets/flower-supernode.key   Flower SuperNode EC key (OpenSSH, 0600): made at enrolment, never leaves
                           the node; its public half is registered with the platform's SuperLink
<node>/agent/agent.toml    platform URL, the node id the platform knows, the pinned CA file (if any)
<node>/agent/platform-ca.pem   the CA given with ``enrol --ca-file`` (pinned: the platform is verified with it only)
<node>/agent/superlink-ca.pem  the CA the platform named for its SuperLink (SuperNodes verify with it)
<node>/agent/state.db      job idempotency keys and undelivered results (see agent_state)
```
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from incisive.common import signing, tls
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import ConfigError, IncisiveError, InputError
from incisive.common.fsio import atomic_write_text, toml_document
from incisive.common.settings import TomlSettings
from incisive.node.home import Node

AGENT_DIR = "agent"
AGENT_CONFIG = "agent.toml"
PLATFORM_CA = "platform-ca.pem"
SUPERLINK_CA = "superlink-ca.pem"


class AgentSettings(TomlSettings):
    """Link settings: ``agent.toml`` plus ``INCISIVE_AGENT_*`` environment variables (environment wins)."""

    model_config = SettingsConfigDict(env_prefix="INCISIVE_AGENT_", extra="ignore")

    platform_url: str = Field(description="Base URL of the platform")
    node_id: str = Field(description="This node's id at the platform")
    heartbeat_s: float = Field(default=30.0, gt=0, description="Seconds between heartbeats")
    poll_wait_s: float = Field(default=20.0, gt=0, le=120, description="Long-poll wait asked of the platform")
    backoff_base_s: float = Field(default=1.0, gt=0, description="First reconnect delay (doubles, with jitter)")
    backoff_max_s: float = Field(default=60.0, gt=0, description="Longest reconnect delay")
    readiness_interval_s: float = Field(default=3600.0, ge=0, description="Re-run the readiness check (0 = never)")
    verify_tls: bool = Field(default=True, description="Verify the platform's TLS certificate (false: only for "
                             "a loopback platform URL)")
    ca_file: str = Field(default="", description="CA the platform's certificate must chain to (pinned at "
                         "enrolment); empty = the system store")


    @classmethod
    def load(cls, home: Path) -> AgentSettings:
        path = home / AGENT_DIR / AGENT_CONFIG
        if not path.is_file():
            raise ConfigError("this node is not enrolled with a platform; run 'incisive node enrol URL --token …'")
        return cls.from_file(path, "agent settings")


def agent_key_path(node: Node) -> Path:
    return node.home / "secrets" / "agent.key"


def flower_key_path(home: Path) -> Path:
    return home / "secrets" / "flower-supernode.key"


def superlink_ca_path(home: Path) -> Path:
    return home / AGENT_DIR / SUPERLINK_CA


class LinkError(IncisiveError):
    """The platform refused or could not be reached; ``status`` is the HTTP status (0 = no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def check_platform_url(url: str) -> None:
    """Refuse a platform URL that is not https://, except http:// to this machine (loopback tests, demos):
    the invite token and everything after it would cross the network in clear."""
    parsed = urlsplit(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme != "http" or not parsed.hostname:
        raise InputError("the platform URL must start with https:// (http:// only to this machine, for a test)")
    host = parsed.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InputError(f"refusing plain http:// to {host}: the invite token and the agent's requests would "
                         "cross the network unencrypted; use https:// (http:// is allowed only to 127.0.0.1, "
                         "::1 or localhost)")


def enrol(node: Node, url: str, token: str, timeout_s: float = 30.0, verify_tls: bool = True,
          ca_file: Path | None = None) -> dict[str, Any]:
    """Create the node's key pairs (Ed25519 for the agent, EC for its Flower SuperNodes), register both public
    keys with the invite token, pin the CAs, write ``agent.toml``.

    ``ca_file``: the CA the platform's certificate must chain to (copied to ``agent/platform-ca.pem``, and from
    then on the only one trusted); without it the system store. The CA the platform names for its SuperLink is
    written to ``agent/superlink-ca.pem``."""
    check_platform_url(url)
    config = node.home / AGENT_DIR / AGENT_CONFIG
    if config.exists():
        raise ConfigError("this node is already enrolled (remove agent/agent.toml and secrets/agent.key to redo)")
    ca_pem = tls.read_pem_certificates(ca_file) if ca_file else None
    pinned = node.home / AGENT_DIR / PLATFORM_CA
    if ca_pem is not None:
        pinned.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(pinned, ca_pem.decode("ascii"))
    verify = tls.httpx_verify(url, verify_tls, pinned if ca_pem is not None else "")
    key_path, fl_key = agent_key_path(node), flower_key_path(node.home)
    key = signing.read_private_key(key_path) if key_path.exists() else signing.generate_private_key()
    fl_public = tls.flower_public_key(fl_key) if fl_key.exists() else tls.new_flower_key(fl_key)
    body = {"token": token, "node_id": node.settings.node_id, "provider": node.settings.provider,
            "public_key": signing.public_key_b64(key), "fl_public_key": fl_public}
    try:
        response = httpx.post(url.rstrip("/") + "/agent/v1/enrol", json=body, timeout=timeout_s, verify=verify)
    except httpx.HTTPError as exc:
        raise LinkError(f"cannot reach the platform: {tls.transport_reason(exc)}") from None
    if response.status_code != 200:
        raise LinkError(f"enrolment refused ({response.status_code}): {_detail(response)}", response.status_code)
    if not key_path.exists():
        signing.write_private_key(key_path, key)
    config.parent.mkdir(parents=True, exist_ok=True)
    data = response.json()
    if data.get("superlink_ca"):
        atomic_write_text(superlink_ca_path(node.home), str(data["superlink_ca"]))
    settings: dict[str, Any] = {"platform_url": url.rstrip("/"), "node_id": data["node_id"]}
    if ca_pem is not None:
        settings["ca_file"] = str(pinned)
    atomic_write_text(config, toml_document(settings, "written by 'incisive node enrol'; INCISIVE_AGENT_<NAME> "
                                                      "variables override it"))
    NodeAudit(node.home).append("local", "node.enrol", target=url.rstrip("/"), node=data["node_id"])
    return {"node_id": data["node_id"], "name": data.get("name"), "platform_url": url.rstrip("/")}


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))[:200]
    except ValueError:
        return response.text[:200]


class SignedClient:
    """httpx client that signs every request with the node's key."""

    def __init__(self, settings: AgentSettings, key: Ed25519PrivateKey, timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.key = key
        verify = tls.httpx_verify(settings.platform_url, settings.verify_tls, settings.ca_file)
        self.client = httpx.Client(base_url=settings.platform_url, timeout=timeout_s, verify=verify)

    def request(self, method: str, path: str, body: Any = None, timeout_s: float | None = None) -> Any:
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        request = self.client.build_request(method, path, content=content,
                                            headers={"Content-Type": "application/json"} if content else {})
        signed_path = request.url.raw_path.decode("ascii")
        request.headers.update(signing.sign_headers(self.key, self.settings.node_id, method, signed_path, content))
        if timeout_s is not None:
            request.extensions["timeout"] = httpx.Timeout(timeout_s).as_dict()
        try:
            response = self.client.send(request)
        except httpx.HTTPError as exc:
            raise LinkError(f"platform unreachable: {tls.transport_reason(exc)}") from None
        if response.status_code >= 300:
            raise LinkError(f"platform answered {response.status_code}: {_detail(response)}", response.status_code)
        return response.json() if response.content else None

    def close(self) -> None:
        self.client.close()
