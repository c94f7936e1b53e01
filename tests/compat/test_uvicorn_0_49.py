"""Every uvicorn 0.49 internal that :mod:`incisive.compat.uvicorn_0_49` overrides or reads: each test names the
attribute and fails when an upgrade removes it or changes its shape. Behaviour over real connections:
``tests/node/api/test_limits.py`` and ``tests/platform/test_limits.py``."""

from __future__ import annotations

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from incisive.compat import uvicorn_0_49 as compat
from tests.compat.conftest import attr, keyword_params, params

PORT = "incisive.compat.uvicorn_0_49"


def test_installed_uvicorn_is_the_patched_release() -> None:
    assert compat.applies(), f"uvicorn {uvicorn.__version__} is installed, the protocol mirrors 0.49: port {PORT}"


def test_overridden_methods_keep_their_shape() -> None:
    assert params(attr(H11Protocol, "connection_made", PORT)) == ["self", "transport"]
    assert params(attr(H11Protocol, "connection_lost", PORT)) == ["self", "exc"]
    assert params(attr(H11Protocol, "on_response_complete", PORT)) == ["self"]


def test_data_received_still_drops_the_keep_alive_timer() -> None:
    """The hole the header timer closes: the first byte of a request cancels the only timer uvicorn has."""
    names = set(attr(H11Protocol, "data_received", PORT).__code__.co_names)
    assert "_unset_keepalive_if_required" in names
    assert {"conn", "loop", "cycle", "timeout_keep_alive"} <= set(H11Protocol.__init__.__code__.co_names)
    assert "transport" in H11Protocol.connection_made.__code__.co_names
    assert hasattr(h11, "IDLE")


def test_config_takes_a_protocol_class_and_the_limits() -> None:
    names = keyword_params(uvicorn.Config.__init__)
    for name in ("http", "timeout_keep_alive", "h11_max_incomplete_event_size", "limit_concurrency"):
        assert name in names, f"uvicorn.Config has no {name}: port {PORT}"
    options = compat.server_options(3.0, 4.0, 5)
    config = uvicorn.Config(lambda *_: None, **options)
    config.load()
    assert issubclass(config.http_protocol_class, compat.HeaderTimeoutH11Protocol)
    assert config.http_protocol_class.header_timeout_s == 3.0  # type: ignore[attr-defined]
    assert (config.timeout_keep_alive, config.limit_concurrency) == (4.0, 5)
