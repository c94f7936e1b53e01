"""Roles and the explicit permission matrix. Every user endpoint names one permission; nothing else grants access.

| permission      | admin | dp-manager | researcher | auditor | what it allows                               |
|-----------------|:-----:|:----------:|:----------:|:-------:|----------------------------------------------|
| users:manage    |   x   |            |            |         | add/disable users, revoke (never make) tokens|
| tokens:own      |   x   |     x      |     x      |    x    | list, make and revoke one's own tokens       |
| users:read      |   x   |     x      |            |    x    | list users and roles                         |
| nodes:manage    |   x   |            |            |         | invite (enrolment tokens) and revoke nodes   |
| nodes:read      |   x   |     x      |     x      |    x    | node list: status, heartbeat, health summary |
| queries:run     |       |            |     x      |         | federated counts and numeric summaries       |
| budgets:manage  |       |     x      |            |         | set a researcher's privacy (epsilon) budget  |
| budgets:read    |   x   |     x      |     x      |    x    | read privacy budgets (researchers: their own)|
| audit:read      |   x   |            |            |    x    | export and verify the platform audit log     |
| models:manage   |   x   |            |            |         | register model bundles (code + sha256)       |
| models:read     |   x   |     x      |     x      |    x    | list bundles and trained models (provenance) |
| fl:run          |       |            |     x      |         | start FL training / evaluation, inference    |
| fl:read         |   x   |     x      |     x      |    x    | FL job / inference status, rounds, metrics   |

Nobody makes a token for another user: a new account gets a one-time activation secret, which its owner spends
on their first token (``POST /api/v1/activate``, no bearer token, throttled). Admins run the platform but do not
query data, and a person holding an admin account never holds a researcher account; data-provider managers govern
disclosure (budgets); auditors read the log. Nodes are not users: they authenticate with their Ed25519 key (see
:mod:`incisive.common.signing`).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    admin = "admin"
    dp_manager = "dp-manager"
    researcher = "researcher"
    auditor = "auditor"


PERMISSIONS: dict[str, frozenset[Role]] = {
    "users:manage": frozenset({Role.admin}),
    "users:read": frozenset({Role.admin, Role.dp_manager, Role.auditor}),
    "tokens:own": frozenset({Role.admin, Role.dp_manager, Role.researcher, Role.auditor}),
    "nodes:manage": frozenset({Role.admin}),
    "nodes:read": frozenset({Role.admin, Role.dp_manager, Role.researcher, Role.auditor}),
    "queries:run": frozenset({Role.researcher}),
    "budgets:manage": frozenset({Role.dp_manager}),
    "budgets:read": frozenset({Role.admin, Role.dp_manager, Role.researcher, Role.auditor}),
    "audit:read": frozenset({Role.admin, Role.auditor}),
    "models:manage": frozenset({Role.admin}),
    "models:read": frozenset({Role.admin, Role.dp_manager, Role.researcher, Role.auditor}),
    "fl:run": frozenset({Role.researcher}),
    "fl:read": frozenset({Role.admin, Role.dp_manager, Role.researcher, Role.auditor}),
}


def allowed(role: str, permission: str) -> bool:
    try:
        return Role(role) in PERMISSIONS[permission]
    except (ValueError, KeyError):
        return False
