"""The node's identity towards the platform: Ed25519 key, ``agent.toml``, enrolment and signed HTTP requests.

```
<node>/secrets/agent.key   Ed25519 private key (PEM, 0600): made at enrolment, never leaves the node
<node>/agent/agent.toml    platform URL and the node id the platform knows
<node>/agent/state.db      job idempotency keys and undelivered results (see agent_state)
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from incisive.common import signing
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import ConfigError, IncisiveError, InputError
from incisive.common.fsio import atomic_write_text, toml_document
from incisive.common.settings import TomlSettings
from incisive.node.home import Node

AGENT_DIR = "agent"
AGENT_CONFIG = "agent.toml"


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
    verify_tls: bool = Field(default=True, description="Verify the platform's TLS certificate")


    @classmethod
    def load(cls, home: Path) -> AgentSettings:
        path = home / AGENT_DIR / AGENT_CONFIG
        if not path.is_file():
            raise ConfigError("this node is not enrolled with a platform; run 'incisive node enrol URL --token …'")
        return cls.from_file(path, "agent settings")


def agent_key_path(node: Node) -> Path:
    return node.home / "secrets" / "agent.key"


class LinkError(IncisiveError):
    """The platform refused or could not be reached; ``status`` is the HTTP status (0 = no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def enrol(node: Node, url: str, token: str, timeout_s: float = 30.0, verify_tls: bool = True) -> dict[str, Any]:
    """Create the node's key pair, register the public key with the invite token, write ``agent.toml``."""
    if not url.startswith(("http://", "https://")):
        raise InputError("the platform URL must start with https:// (or http:// for a local test)")
    config = node.home / AGENT_DIR / AGENT_CONFIG
    if config.exists():
        raise ConfigError("this node is already enrolled (remove agent/agent.toml and secrets/agent.key to redo)")
    key_path = agent_key_path(node)
    key = signing.read_private_key(key_path) if key_path.exists() else signing.generate_private_key()
    body = {"token": token, "node_id": node.settings.node_id, "provider": node.settings.provider,
            "public_key": signing.public_key_b64(key)}
    try:
        response = httpx.post(url.rstrip("/") + "/agent/v1/enrol", json=body, timeout=timeout_s, verify=verify_tls)
    except httpx.HTTPError as exc:
        raise LinkError(f"cannot reach the platform: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise LinkError(f"enrolment refused ({response.status_code}): {_detail(response)}", response.status_code)
    if not key_path.exists():
        signing.write_private_key(key_path, key)
    config.parent.mkdir(parents=True, exist_ok=True)
    data = response.json()
    atomic_write_text(config, toml_document({"platform_url": url.rstrip("/"), "node_id": data["node_id"]},
                                            "written by 'incisive node enrol'; INCISIVE_AGENT_<NAME> variables "
                                            "override it"))
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
        self.client = httpx.Client(base_url=settings.platform_url, timeout=timeout_s, verify=settings.verify_tls)

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
            raise LinkError(f"platform unreachable: {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise LinkError(f"platform answered {response.status_code}: {_detail(response)}", response.status_code)
        return response.json() if response.content else None

    def close(self) -> None:
        self.client.close()
