"""Platform settings: one pydantic-settings model, read from ``<platform>/platform.toml`` and
``INCISIVE_PLATFORM_*`` environment variables (environment wins). No secrets live here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    SettingsConfigDict,
)

from incisive.common.errors import ConfigError
from incisive.common.fsio import toml_document
from incisive.common.settings import TomlSettings

PLATFORM_CONFIG = "platform.toml"
PLATFORM_HOME_ENV = "INCISIVE_PLATFORM"


class PlatformSettings(TomlSettings):
    model_config = SettingsConfigDict(env_prefix="INCISIVE_PLATFORM_", extra="ignore")

    home: Path = Field(description="Platform directory")
    db_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite platform.db in the directory")
    host: str = Field(default="127.0.0.1", description="Address `platform serve` binds to")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port; 0 = any free port")
    invite_ttl_s: int = Field(default=24 * 3600, gt=0, description="Lifetime of a node invite token")
    signature_window_s: int = Field(default=120, ge=5, le=3600, description="Accepted clock skew of agent requests")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Larger request bodies are refused (413)")
    http_max_connections: int = Field(default=512, ge=1, le=65536, description="HTTP connections or tasks at "
                                      "once (agents' long polls included); 503 beyond")
    http_header_timeout_s: float = Field(default=10.0, gt=0, le=600, description="A request's headers must "
                                         "arrive within this long, or the connection is closed")
    http_keep_alive_s: float = Field(default=5.0, gt=0, le=600, description="Idle keep-alive between requests")
    long_poll_s: float = Field(default=20.0, gt=0, le=120, description="Longest wait of an agent's job poll")
    redeliver_s: float = Field(default=30.0, gt=0, description="Offer an unanswered job again after this long")
    query_timeout_s: float = Field(default=15.0, gt=0, le=600, description="A query waits this long for nodes")
    node_offline_s: float = Field(default=90.0, gt=0, description="No contact for this long = node offline")
    min_cell_count: int = Field(default=5, ge=1, description="Platform-wide minimum k (nodes may demand more)")
    default_dp_budget: float = Field(default=10.0, ge=0, description="Privacy budget (sum of epsilon) a researcher "
                                     "starts with in each project")
    require_dp: bool = Field(default=False, description="Every count is noisy: a count without epsilon gets "
                             "default_epsilon (on in platforms created by 'platform init')")
    default_epsilon: float = Field(default=0.5, gt=0, le=10, description="Epsilon of a count that names none, "
                                   "when require_dp is on")
    fl_superlink_address: str = Field(default="", description="host:port SuperNodes dial for the platform's "
                                      "Flower SuperLink; empty = 127.0.0.1 and the port it got")
    tls_cert: str = Field(default="", description="PEM certificate chain `platform serve` serves HTTPS with "
                          "(empty: plain HTTP, for loopback or behind a TLS-terminating proxy)")
    tls_key: str = Field(default="", description="PEM private key of tls_cert")
    hsts_max_age_s: int = Field(default=31536000, ge=0, description="Strict-Transport-Security max-age sent "
                                "over HTTPS (0: no header)")
    fl_insecure: bool = Field(default=False, description="Plaintext Flower without SuperNode authentication "
                              "(loopback tests and benchmarks only; nodes refuse it for a remote SuperLink)")
    fl_tls_cert: str = Field(default="", description="The SuperLink's TLS certificate (empty: issued from the "
                             "platform CA)")
    fl_tls_key: str = Field(default="", description="Private key of fl_tls_cert")
    fl_tls_ca: str = Field(default="", description="CA of fl_tls_cert, sent to nodes at enrolment")
    fl_start_timeout_s: float = Field(default=300.0, gt=0, description="FL job: wait this long for the nodes' "
                                      "agents to accept or refuse, and for training to start")
    fl_job_timeout_s: float = Field(default=6 * 3600.0, gt=0, description="FL job: longest run; then it is stopped")
    infer_timeout_s: float = Field(default=3600.0, gt=0, description="Inference request: offered to the node's "
                                   "agent for this long, then it expires")
    token_ttl_days: int = Field(default=90, ge=1, le=3650, description="Lifetime of a user's API token")
    activation_ttl_s: int = Field(default=7 * 24 * 3600, gt=0, description="Lifetime of a new account's one-time "
                                  "activation secret")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses of reverse proxies whose "
                                       "X-Forwarded-For names the real source (for throttling and audit)")
    auth_window_s: float = Field(default=60.0, gt=0, description="Failed authentication: failures are counted, "
                                 "and audited as one entry per source, per window of this length")
    auth_free_failures: int = Field(default=5, ge=1, description="Failures (per source or account) before "
                                    "exponential back-off (429 with Retry-After) starts")
    auth_backoff_max_s: float = Field(default=300.0, gt=0, description="Longest back-off after a failure")
    auth_lockout_failures: int = Field(default=30, ge=2, description="Failures (per source or account) that lock "
                                       "it out for auth_lockout_s")
    auth_lockout_s: float = Field(default=900.0, gt=0, description="Length of a lockout")


    @property
    def effective_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'platform.db'}"

    @classmethod
    def load(cls, home: Path, **overrides: Any) -> PlatformSettings:
        home = home.expanduser().resolve()
        path = home / PLATFORM_CONFIG
        if not path.is_file():
            raise ConfigError(f"{home} is not an incisive platform (no {PLATFORM_CONFIG}); "
                              "run 'incisive platform init'")
        return cls.from_file(path, home=home, **overrides)

    def to_toml(self) -> str:
        return toml_document(self.model_dump(exclude={"home"}), "incisive platform configuration; "
                             "INCISIVE_PLATFORM_<NAME> environment variables override it")


def resolve_platform_home(home: Path | None) -> Path:
    if home is not None:
        return home
    env = os.environ.get(PLATFORM_HOME_ENV)
    return Path(env) if env else Path.cwd()
