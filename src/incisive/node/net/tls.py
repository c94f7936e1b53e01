"""TLS for the node's listeners: DICOM (PS3.15 Annex B secure transport connection profiles) and DICOMweb.

* :func:`dicom_context` builds the server-side :class:`ssl.SSLContext` the DIMSE SCP hands to pynetdicom
  (``AE.start_server(ssl_context=...)``): TLS 1.2 or newer only (the BCP 195 profile of PS3.15 B.9 and the
  non-downgrading profile of B.10), the node's certificate and key, and — when a CA file is given — client
  certificates *required* and verified against that CA (``CERT_REQUIRED``), so only modalities and PACS holding a
  certificate from the hospital's CA can associate at all. The AE-title allow-list still applies on top.
* pynetdicom wraps each accepted socket in its accept loop; a peer that connects and then sends nothing would hold
  that loop in the TLS handshake. :class:`DeferredHandshakeContext` therefore wraps without handshaking
  (``do_handshake_on_connect=False``) and gives the socket a timeout: the handshake runs on the association's own
  thread, at its first read, and a silent or plain-TCP peer only ever stalls itself.
* :func:`http_options` checks the DICOMweb certificate pair and returns uvicorn's ``ssl_*`` options.

Every problem with the files (missing, unreadable, key not matching the certificate, not PEM) is a
:class:`ConfigError` naming the file, never a traceback at start-up.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from incisive.common.errors import ConfigError

HANDSHAKE_TIMEOUT_S = 30.0  # also bounds any later read that stalls mid-PDU (pynetdicom reads only when ready)


@dataclass(frozen=True)
class TlsFiles:
    """A certificate chain and its key (PEM), and optionally the CA bundle that client certificates must chain to."""

    cert: Path
    key: Path
    ca: Path | None = None

    @classmethod
    def from_options(cls, what: str, cert: str | Path | None, key: str | Path | None,
                     ca: str | Path | None = None) -> TlsFiles | None:
        """``None`` when neither certificate nor key is set; a :class:`ConfigError` when only one is."""
        if not cert and not key:
            if ca:
                raise ConfigError(f"{what}: a CA file was given without a certificate and key")
            return None
        if not cert or not key:
            raise ConfigError(f"{what}: give both the certificate and the key (one of them is missing)")
        files = cls(Path(cert).expanduser(), Path(key).expanduser(), Path(ca).expanduser() if ca else None)
        for label, path in (("certificate", files.cert), ("key", files.key), ("CA file", files.ca)):
            if path is not None and not path.is_file():
                raise ConfigError(f"{what}: {label} {path} does not exist or is not a file")
        return files


class DeferredHandshakeContext(ssl.SSLContext):
    """An SSL context whose server-side sockets handshake at their first read, with a timeout."""

    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        sock.settimeout(self.handshake_timeout_s)
        return super().wrap_socket(sock, *args, **kwargs)


def _load_chain(ctx: ssl.SSLContext, what: str, files: TlsFiles) -> None:
    try:
        ctx.load_cert_chain(str(files.cert), str(files.key))
    except ssl.SSLError as exc:
        raise ConfigError(f"{what}: cannot use certificate {files.cert} with key {files.key} "
                          f"({exc.reason or 'not a PEM certificate/key pair, or the key does not match'})") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {files.cert} / {files.key}: {exc.strerror or exc}") from None
    if files.ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(files.ca))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{what}: cannot read CA file {files.ca} as PEM certificates ({exc})") from None


def dicom_context(files: TlsFiles) -> ssl.SSLContext:
    """The DIMSE SCP's server context: TLS >= 1.2, client certificate required when ``files.ca`` is set."""
    ctx = DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(ctx, "DICOM TLS", files)
    ctx.verify_mode = ssl.CERT_REQUIRED if files.ca is not None else ssl.CERT_NONE
    return ctx


def http_options(files: TlsFiles) -> dict[str, Any]:
    """uvicorn ``Config`` keyword arguments serving DICOMweb over HTTPS (the pair is checked first)."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(probe, "DICOMweb TLS", files)  # a clear error here instead of inside uvicorn's start-up
    options: dict[str, Any] = {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}
    if files.ca is not None:
        options.update(ssl_ca_certs=str(files.ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options



def handshake(sock: ssl.SSLSocket) -> str | None:
    """Run the deferred server handshake on ``sock``; ``None`` on success, else why it failed (no PHI: the
    OpenSSL reason code, e.g. ``CERTIFICATE_VERIFY_FAILED``, ``PEER_DID_NOT_RETURN_A_CERTIFICATE``,
    ``WRONG_VERSION_NUMBER`` for a plain-TCP peer). The socket is closed when it fails."""
    try:
        sock.do_handshake()
        return None
    except ssl.SSLError as exc:
        reason = str(exc.reason or type(exc).__name__)
    except TimeoutError:
        reason = f"no handshake within {HANDSHAKE_TIMEOUT_S:g} s"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    with contextlib.suppress(OSError):
        sock.close()
    return reason
