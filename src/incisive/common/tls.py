"""A small private certificate authority (``cryptography``) and the TLS helpers both sides share.

For federations without a corporate PKI: ``incisive platform init --ca`` makes the platform's CA and its HTTPS
certificate; the platform issues its Flower SuperLink's certificate from the same CA. Keys are ECDSA P-256, written
0600 through :mod:`incisive.common.fsio`; certificates are PEM. The node pins the CA it was given at enrolment
(``--ca-file``, or the SuperLink CA the platform sends back over the verified enrolment call).

```
<platform>/ca/ca.pem, ca.key              the CA (10 years; keep ca.key offline once the certificates exist)
<platform>/tls/server.pem, server.key     platform HTTPS (SAN: 127.0.0.1, localhost + the names given)
<platform>/tls/superlink.pem, .key        the Flower SuperLink (SAN: 127.0.0.1, localhost + its public name)
```

Flower SuperNode authentication keys (:func:`new_flower_key`) are EC P-384 in OpenSSH format, the format
``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from incisive.common.errors import ConfigError
from incisive.common.fsio import atomic_write_bytes

CA_DIR, TLS_DIR = "ca", "tls"
LOCAL_NAMES = ("127.0.0.1", "localhost")
CA_DAYS, LEAF_DAYS = 3650, 825


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key on disk (and the CA that issued it, when known)."""

    cert: Path
    key: Path
    ca: Path | None = None


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, pem, mode=0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "incisive federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_ca(directory: Path, common_name: str = "incisive platform CA") -> CertPair:
    """A new self-signed CA in ``directory`` (``ca.pem``, ``ca.key`` 0600); refuses to overwrite one."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() or key_path.exists():
        raise ConfigError(f"a CA already exists in {directory}")
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    _write_key(key_path, key)
    atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return CertPair(cert_path, key_path, cert_path)


def ensure_ca(directory: Path) -> CertPair:
    """The CA in ``directory``, created on first use."""
    if (directory / "ca.pem").exists():
        return CertPair(directory / "ca.pem", directory / "ca.key", directory / "ca.pem")
    return create_ca(directory)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(n.strip() for n in names if n.strip()):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def issue(ca: CertPair, cert_path: Path, key_path: Path, names: list[str], days: int = LEAF_DAYS) -> CertPair:
    """A server certificate signed by ``ca`` for ``names`` (always also 127.0.0.1 and localhost)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{ca.key} is not an EC private key")
    all_names = [*names, *LOCAL_NAMES]
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(_name(all_names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_san(all_names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    _write_key(key_path, key)
    atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return CertPair(cert_path, key_path, ca.cert)


def self_signed(cert_path: Path, key_path: Path, names: list[str], days: int = LEAF_DAYS) -> CertPair:
    """A self-signed server certificate, as ``openssl req -x509`` makes (what an agent must refuse unless given
    it as its CA file)."""
    all_names = [*names, *LOCAL_NAMES]
    key = ec.generate_private_key(ec.SECP256R1())
    name, now = _name(all_names[0]), _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_san(all_names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)
    atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return CertPair(cert_path, key_path, cert_path)


def read_pem_certificates(path: Path) -> bytes:
    """The PEM bytes of ``path`` if it holds at least one certificate, else a :class:`ConfigError`."""
    try:
        data = path.read_bytes()
        x509.load_pem_x509_certificates(data)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a PEM certificate file ({type(exc).__name__})") from None
    return data


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verifying client context: the system store, or only ``ca_file`` when given (pinned)."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else ssl.create_default_context()


def check_server(address: str, ca_file: Path | None, timeout_s: float = 10.0) -> str | None:
    """TLS handshake with ``host:port`` verifying against ``ca_file`` (or the system store); None when it
    verifies, else the reason (certificate errors named as OpenSSL names them)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock, \
                client_context(ca_file).wrap_socket(sock, server_hostname=host):
            return None
    except ssl.SSLCertVerificationError as exc:
        return f"certificate verify failed: {exc.verify_message}"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc.reason or exc}"
    except (OSError, ValueError) as exc:
        return f"cannot connect ({type(exc).__name__})"


def is_loopback_host(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_flower_key(private_path: Path) -> str:
    """A new Flower SuperNode key (EC P-384, OpenSSH private key 0600); returns the OpenSSH public key line."""
    key = ec.generate_private_key(ec.SECP384R1())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(private_path, key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.OpenSSH,
                                                       serialization.NoEncryption()), mode=0o600)
    return flower_public_key(private_path)


def flower_public_key(private_path: Path) -> str:
    key = serialization.load_ssh_private_key(private_path.read_bytes(), None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode("ascii")


def check_flower_public_key(text: str) -> str:
    """``text`` if it is an OpenSSH EC public key on a NIST curve (what the SuperLink accepts), else ValueError."""
    key = serialization.load_ssh_public_key(text.strip().encode("ascii"))
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in ("secp256r1", "secp384r1",
                                                                                 "secp521r1"):
        raise ValueError("not an EC public key on a NIST curve")
    return text.strip()


def transport_reason(exc: BaseException) -> str:
    """One line for a failed HTTPS call: a certificate problem named as OpenSSL names it, else the error type."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"the platform's TLS certificate is not trusted ({seen.verify_message})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS handshake failed ({seen.reason or seen})"
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        reason = text.split("certificate verify failed:")[-1].split("(_ssl")[0].strip()
        return f"the platform's TLS certificate is not trusted ({reason})"
    return type(exc).__name__


def httpx_verify(url: str, verify_tls: bool, ca_file: str | Path = "") -> ssl.SSLContext | bool:
    """What the agent's HTTP client verifies the platform with: the pinned ``ca_file``, else the system store.
    Turning verification off is refused unless the platform URL is on this machine (loopback)."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if not url.startswith("https://") and not is_loopback_host(host):
        raise ConfigError(f"the platform URL must be https:// (plain http:// only to this machine, not {host})")
    if not verify_tls:
        if not is_loopback_host(host):
            raise ConfigError(f"TLS verification may be turned off only for a loopback platform URL, not {host} "
                              "(give the platform's CA with --ca-file instead)")
        return False
    return client_context(Path(ca_file)) if ca_file else True
