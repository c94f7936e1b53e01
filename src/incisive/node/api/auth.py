"""Bearer-token check for the node API: 401 without/with an unknown token, 403 for the wrong role.

A ``manager`` token (a Central Node tenant's, :mod:`incisive.node.api.tokens`) satisfies every role of its node:
it may do whatever its tenant can (STOW, QIDO/WADO, and the routes that ask for ``manager`` itself).

Failed token checks are throttled per source (:mod:`incisive.common.throttle`, its defaults: back-off from the
5th failure, lockout at 30 for 15 min): a source in back-off gets 429 with Retry-After before its token is looked
at, and the node's audit log gets one aggregated ``api.auth`` entry per source and minute, not one per guess."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from fastapi import HTTPException, Request

from incisive.common.audit_log import NodeAudit
from incisive.common.logging import get_logger
from incisive.common.throttle import Report, Throttle
from incisive.node.api.tokens import token_role
from incisive.node.home import Node

log = get_logger("api.auth")
MANAGER = "manager"  # satisfies every role of its own node
_made = threading.Lock()


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def throttle_of(request: Request) -> Throttle:
    """The app's throttle, made on first use (one per app)."""
    state = request.app.state
    with _made:
        if getattr(state, "auth_throttle", None) is None:
            state.auth_throttle = Throttle()
    throttle: Throttle = state.auth_throttle
    return throttle


def _audit(node: Node, reports: Iterable[Report]) -> None:
    for r in reports:
        try:
            NodeAudit(node.home).append("anonymous", "api.auth", target=r.source, outcome="refused",
                                        details=r.details())
        except OSError:
            log.exception("could not audit failed API authentication")


def require(*roles: str) -> Callable[[Request], str]:
    def check(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing bearer token (create one with 'incisive node token create')",
                                headers={"WWW-Authenticate": "Bearer"})
        node, throttle = node_of(request), throttle_of(request)
        source = request.client.host if request.client else "unknown"
        wait = throttle.retry_after(source)
        if wait is not None:
            _audit(node, throttle.throttled(source, "token"))
            raise HTTPException(429, f"too many failed authentication attempts; retry in {wait} s",
                                headers={"Retry-After": str(wait)})
        role = token_role(node, token.strip())
        if role is None:
            log.warning("API request refused: invalid or revoked token (%s %s)", request.method,
                        request.url.path.split("/")[1] if "/" in request.url.path else "")
            _audit(node, throttle.failed(source, "token", reason="invalid or revoked token"))
            raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
        _audit(node, throttle.flush())  # windows that are over get their summary (scanned once a second at most)
        if role not in roles and role != MANAGER:
            raise HTTPException(403, f"a {role} token cannot do this; needs {' or '.join(roles)}")
        return role

    return check
