"""Bearer-token check for the node API: 401 without/with an unknown token, 403 for the wrong role."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request

from incisive.common.logging import get_logger
from incisive.node.api.tokens import token_role
from incisive.node.home import Node

log = get_logger("api.auth")


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def require(*roles: str) -> Callable[[Request], str]:
    def check(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing bearer token (create one with 'incisive node token create')",
                                headers={"WWW-Authenticate": "Bearer"})
        role = token_role(node_of(request), token.strip())
        if role is None:
            log.warning("API request refused: invalid or revoked token (%s %s)", request.method,
                        request.url.path.split("/")[1] if "/" in request.url.path else "")
            raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
        if role not in roles:
            raise HTTPException(403, f"a {role} token cannot do this; needs {' or '.join(roles)}")
        return role

    return check
