"""The platform's certificates: its HTTPS certificate from its own small CA (``platform init --ca``), and its
side of Flower's TLS and SuperNode authentication: the SuperLink's certificate, the CA nodes are told to trust
for it, and the nodes' Flower public keys.

* HTTPS: :func:`init_ca` makes ``<platform>/ca`` and ``<platform>/tls/server.pem`` (SAN 127.0.0.1, localhost and
  the names given) and sets ``tls_cert`` / ``tls_key``; nodes enrol with ``--ca-file <platform>/ca/ca.pem``.

* Certificate: the operator's (``fl_tls_cert`` / ``fl_tls_key`` / ``fl_tls_ca``) or, by default, one issued from
  the platform's CA (``<platform>/ca``, created on first use; ``platform init --ca`` makes it up front) for
  127.0.0.1, localhost and the host of ``fl_superlink_address``.
* Trust: the enrolment answer carries that CA (``superlink_ca``, PEM); the node pins it and its SuperNodes
  verify the SuperLink with it (``--root-certificates``). It travels over the enrolment call, which is itself
  verified against the platform's HTTPS certificate.
* Keys: each node sends its Flower EC public key (OpenSSH) at enrolment; it is kept (public, not a secret) at
  ``<platform>/fl/supernode-keys/<node-id>.pub``. The FL runner registers the keys of active nodes with its
  SuperLink and unregisters a node's key once the node is revoked (:mod:`incisive.platform.fl_runner`).
* ``fl_insecure = true``: plaintext Flower, no SuperNode authentication; for loopback tests and benchmarks only
  (nodes refuse a plaintext SuperLink that is not on their own machine).
"""

from __future__ import annotations

from pathlib import Path

from incisive.common import tls
from incisive.common.errors import ConfigError
from incisive.common.fsio import atomic_write_text
from incisive.federated.deploy import FlowerTls
from incisive.platform.settings import PlatformSettings

KEYS_DIR = Path("fl") / "supernode-keys"


def ca_dir(settings: PlatformSettings) -> Path:
    return settings.home / tls.CA_DIR


def init_ca(settings: PlatformSettings, names: list[str]) -> PlatformSettings:
    """Create the platform CA and its HTTPS certificate; returns the settings with ``tls_cert``/``tls_key`` set
    (the caller writes them)."""
    ca = tls.create_ca(ca_dir(settings))
    out = settings.home / tls.TLS_DIR
    server = tls.issue(ca, out / "server.pem", out / "server.key", names)
    return settings.model_copy(update={"tls_cert": str(server.cert), "tls_key": str(server.key)})


def superlink_tls(settings: PlatformSettings) -> FlowerTls | None:
    """The SuperLink's certificate (issued on first use from the platform CA), or None when ``fl_insecure``."""
    if settings.fl_insecure:
        return None
    if settings.fl_tls_cert or settings.fl_tls_key:
        if not (settings.fl_tls_cert and settings.fl_tls_key and settings.fl_tls_ca):
            raise ConfigError("fl_tls_cert, fl_tls_key and fl_tls_ca go together (the CA is sent to the nodes)")
        return FlowerTls(Path(settings.fl_tls_cert), Path(settings.fl_tls_key), Path(settings.fl_tls_ca))
    out = settings.home / tls.TLS_DIR
    ca = tls.ensure_ca(ca_dir(settings))
    if (out / "superlink.pem").exists() and (out / "superlink.key").exists():
        return FlowerTls(out / "superlink.pem", out / "superlink.key", ca.cert)
    host = settings.fl_superlink_address.rpartition(":")[0].strip("[]")
    return FlowerTls.issue(ca_dir(settings), out, [host] if host else [])


def superlink_ca_pem(settings: PlatformSettings) -> str:
    """What an enrolling node is told to trust for the SuperLink ("" when Flower runs in plaintext)."""
    if settings.fl_insecure:
        return ""
    if settings.fl_tls_ca:
        return tls.read_pem_certificates(Path(settings.fl_tls_ca)).decode("ascii")
    return tls.ensure_ca(ca_dir(settings)).cert.read_text(encoding="ascii")


def key_path(settings: PlatformSettings, node_id: str) -> Path:
    return settings.home / KEYS_DIR / f"{node_id}.pub"


def record_key(settings: PlatformSettings, node_id: str, public_key: str) -> None:
    path = key_path(settings, node_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, public_key.strip() + "\n")


def node_key(settings: PlatformSettings, node_id: str) -> str | None:
    try:
        return key_path(settings, node_id).read_text(encoding="ascii").strip() or None
    except OSError:
        return None
