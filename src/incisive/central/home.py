"""A Central Node directory and what it opens: settings, master key, tenant registry, tenant nodes, audit.

```
<central>/central.toml              CentralSettings (no secrets)
<central>/secrets/master.key        the operator's master key (or master.scrypt: passphrase parameters), 0600
<central>/secrets/master.check      probes wrapped under the master key: a wrong key is refused at open
<central>/secrets/operator-tokens   sha256 of the operator's tokens (list tenants and usage, nothing else)
<central>/keys/<tenant>.json        each tenant's wrapped data-key ring: never in the tenant dir, never backed up
<central>/tenants.json              the registry (incisive.central.registry)
<central>/tenants/<tenant>/         a node home per tenant (door = verify, store sealed under its ring)
<central>/erase/<tenant>.json       erase journals (incisive.central.erase)
<central>/audit/                    the operator's audit chain
```
:meth:`Central.open` reads and checks before it writes anything: the settings, the master key (missing, loose
mode, wrong passphrase, or a key that does not unwrap ``master.check``), an interrupted key rotation. Any of these
is a :class:`MasterKeyError` (or :class:`ConfigError`) that says why, and no file has changed. Only then does it
finish the erase journals it finds (:func:`incisive.central.erase.resume_erases`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from incisive.central.erase import resume_erases
from incisive.central.registry import Registry, TenantRecord, UnknownTenant, utc_now
from incisive.central.settings import CENTRAL_CONFIG, CentralSettings, check_country
from incisive.common.audit_log import NodeAudit
from incisive.common.db import make_engine, safe_url
from incisive.common.errors import CatalogueUnavailable, ConfigError
from incisive.common.fsio import atomic_write_text
from incisive.common.keyring import FileMasterKey, KeyProvider, MasterKeyError, PassphraseMasterKey, master_key
from incisive.node.home import Node

__all__ = ["OPERATOR_PREFIX", "Central", "MasterKeyError", "UnknownTenant", "create_operator_token",
           "operator_token_ok", "write_probe"]

OPERATOR_PREFIX = "incop_"
PROBE = b"incisive central master key probe v1"
PROBE_AAD = b"incisive central master check"
NEXT_KEY = "master-next"  # a rotation's new key, beside the old one (incisive.central.rotate)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_probe(path: Path, providers: list[KeyProvider]) -> None:
    """``master.check``: one probe wrapped under each provider (two only while a rotation is under way)."""
    atomic_write_text(path, json.dumps({"probes": [_b64(p.wrap(PROBE, PROBE_AAD)) for p in providers]}) + "\n",
                      mode=0o600)


def probe_ok(path: Path, provider: KeyProvider) -> bool:
    try:
        probes = json.loads(path.read_text())["probes"]
    except (OSError, ValueError, KeyError, TypeError):
        raise MasterKeyError(f"{path} is missing or damaged; restore it with the master key") from None
    for probe in probes:
        try:
            if provider.unwrap(base64.b64decode(probe), PROBE_AAD) == PROBE:
                return True
        except (MasterKeyError, ValueError):
            continue
    return False


@dataclass
class Central:
    settings: CentralSettings
    provider: KeyProvider
    registry: Registry = field(init=False, repr=False)
    _nodes: dict[str, Node] = field(default_factory=dict, repr=False)
    _nodes_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.registry = Registry(self.dir)

    @property
    def dir(self) -> Path:
        return self.settings.home

    @property
    def secrets_dir(self) -> Path:
        return self.dir / "secrets"

    @property
    def audit(self) -> NodeAudit:
        return NodeAudit(self.dir)

    def tenant_dir(self, tenant_id: str) -> Path:
        return self.dir / "tenants" / tenant_id

    def ring_path(self, tenant_id: str) -> Path:
        return self.dir / "keys" / f"{tenant_id}.json"

    def erase_journal(self, tenant_id: str) -> Path:
        return self.dir / "erase" / f"{tenant_id}.json"

    # --- creating and opening -------------------------------------------------------------------------------
    @classmethod
    def init(cls, dir: Path, country: str, provider: str, region: str, catalogue_url: str = "",
             passphrase: str | None = None, name: str = "central") -> Central:
        """Create a Central Node directory (refuses a non-empty one) with a new master key.

        ``passphrase``: the master key is scrypt of it (``master.scrypt``; later runs read
        ``$INCISIVE_MASTER_PASSPHRASE``); else a random key file ``master.key``.
        """
        home = dir.expanduser().resolve()
        if home.exists() and (not home.is_dir() or any(home.iterdir())):
            raise ConfigError(f"{home} exists and is not empty; a Central Node needs a new directory")
        country = check_country(country)
        if not provider.strip():
            raise ConfigError("--provider must not be empty")
        if catalogue_url:
            _check_base_url(catalogue_url)
        secrets_dir = home / "secrets"
        key_path = secrets_dir / ("master.scrypt" if passphrase is not None else "master.key")
        spec = f"{'passphrase' if passphrase is not None else 'file'}:{key_path}"
        settings = CentralSettings(home=home, name=name, provider=provider.strip(), country=country,
                                   region=region.strip(), catalogue_url=catalogue_url, master_key=spec)
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)
        for sub in ("secrets", "keys", "tenants", "erase", "logs"):
            (home / sub).mkdir(mode=0o700, exist_ok=True)
        key: KeyProvider = (PassphraseMasterKey.create(key_path, passphrase) if passphrase is not None
                            else FileMasterKey.create(key_path))
        write_probe(secrets_dir / "master.check", [key])
        atomic_write_text(home / CENTRAL_CONFIG, settings.to_toml())
        central = cls(settings, key)
        central.registry.update(lambda records: None)  # an empty registry
        central.audit.append("operator", "central.init", home.name,
                             details={"country": country, "region": settings.region, "provider": settings.provider,
                                      "catalogue": "postgresql" if catalogue_url else "sqlite",
                                      "master_key": key.name})
        return central

    @classmethod
    def open(cls, dir: Path, *, resume: bool = True, rotation_ok: bool = False) -> Central:
        """Open a Central Node; refuses (and writes nothing) when the master key is missing or wrong.

        ``rotation_ok``: open although a master key rotation is unfinished (only ``keys rotate`` does, to
        finish it). ``resume``: finish interrupted erases (the default; a test may look at the state first).
        """
        settings = CentralSettings.load(dir)
        provider = master_key(settings.master_key)
        check = settings.home / "secrets" / "master.check"
        if not probe_ok(check, provider):
            raise MasterKeyError(f"the master key ({settings.master_key.partition(':')[0]}) does not match this "
                                 f"Central Node ({check} does not open): wrong key file or passphrase")
        pending = sorted(p.name for p in (settings.home / "secrets").glob(f"{NEXT_KEY}.*"))
        if pending and not rotation_ok:
            raise MasterKeyError("a master key rotation was interrupted (secrets/" + pending[0] + " exists); "
                                 "run 'incisive central keys rotate' to finish it before serving")
        central = cls(settings, provider)
        if resume:
            resume_erases(central)
        return central

    # --- tenants --------------------------------------------------------------------------------------------
    def tenants(self, include_erased: bool = False) -> list[TenantRecord]:
        records = self.registry.all().values()
        return [r for r in records if include_erased or r.state == "active"]

    def tenant(self, tenant_id: str) -> TenantRecord:
        """An active tenant; :class:`UnknownTenant` for an unknown, erased or erasing one (re-read each time)."""
        record = self.registry.get(tenant_id)
        if record is None or record.state != "active":
            self.forget_node(tenant_id)
            raise UnknownTenant(f"no active tenant {tenant_id[:64]!r}")
        return record

    def tenant_node(self, tenant_id: str) -> Node:
        """The tenant's node (opened once, cached; thread-safe); refused as soon as the tenant is no longer active."""
        self.tenant(tenant_id)
        with self._nodes_lock:
            node = self._nodes.get(tenant_id)
            if node is None:
                node = self._nodes[tenant_id] = Node.open(self.tenant_dir(tenant_id))
            return node

    def forget_node(self, tenant_id: str) -> None:
        """Close the cached node of a tenant (its catalogue's connections)."""
        with self._nodes_lock:
            node = self._nodes.pop(tenant_id, None)
        if node is not None and "catalogue" in node.__dict__:
            node.catalogue.dispose()

    def reload(self) -> None:
        """Re-read the registry now and close the nodes of tenants no longer active (the registry is also re-read
        by every :meth:`tenant` call whose file changed)."""
        self.registry.forget()
        active = {r.id for r in self.tenants()}
        for tenant_id in [t for t in list(self._nodes) if t not in active]:
            self.forget_node(tenant_id)

    def close(self) -> None:
        for tenant_id in list(self._nodes):
            self.forget_node(tenant_id)

    def tenant_catalogue_url(self, tenant_id: str) -> str:
        """SQLite file in the tenant's directory, or the base PostgreSQL URL with the tenant's schema."""
        if not self.settings.catalogue_url:
            return f"sqlite:///{self.tenant_dir(tenant_id) / 'catalogue.db'}"
        url = make_url(self.settings.catalogue_url).update_query_dict(
            {"options": f"-csearch_path={tenant_schema(tenant_id)}"})
        return url.render_as_string(hide_password=False)


def tenant_schema(tenant_id: str) -> str:
    return "tenant_" + tenant_id.replace("-", "_")


def _check_base_url(url: str) -> None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"--db is not a valid SQLAlchemy URL: {safe_url(url)}") from None
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError("--db must be a PostgreSQL URL (tenants get one schema each); leave it out for "
                          "one SQLite file per tenant")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        raise CatalogueUnavailable(f"cannot reach {safe_url(url)}: {reason}") from None
    finally:
        engine.dispose()


# --- operator tokens ----------------------------------------------------------------------------------------
def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _operator_file(central: Central) -> Path:
    return central.secrets_dir / "operator-tokens"


def _operator_tokens(central: Central) -> list[dict[str, Any]]:
    try:
        data = json.loads(_operator_file(central).read_text())
    except FileNotFoundError:
        return []
    except ValueError:
        raise ConfigError(f"{_operator_file(central)} is damaged") from None
    return list(data["tokens"])


def create_operator_token(central: Central, label: str = "operator") -> str:
    """A new operator token (shown once; only its sha256 is kept): it may list tenants and usage, nothing else."""
    token = OPERATOR_PREFIX + secrets.token_urlsafe(32)
    with central.registry.locked():
        tokens = _operator_tokens(central)
        tokens.append({"hash": _token_hash(token), "label": label[:64], "created_at": utc_now()})
        atomic_write_text(_operator_file(central), json.dumps({"tokens": tokens}, indent=1) + "\n", mode=0o600)
    central.audit.append("operator", "operator-token.create", label[:64])
    return token


def operator_token_ok(central: Central, token: str) -> bool:
    """Whether ``token`` is one of the operator's tokens."""
    if not token.startswith(OPERATOR_PREFIX) or len(token) > 128:
        return False
    digest = _token_hash(token)
    return any(hmac.compare_digest(digest, t["hash"]) for t in _operator_tokens(central))
