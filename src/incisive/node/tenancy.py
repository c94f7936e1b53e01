"""What only a provider may do to its node, refused on a Central Node tenant's directory.

A tenant's directory (``central/tenants/<id>``) is a node directory on the operator's machine. The operator runs
that machine but is a processor: it may serve, back up, check and erase a tenant, never read its data or change
its policy. The node commands that would (``node ls``, ``node token create``, ``node policy set | approve |
revoke``, a local ``fl`` or ``infer`` on it) call :func:`provider_only` first: on a tenant it writes an
``operator.refused`` entry to the tenant's own audit chain and refuses with the way the provider does it instead
(the tenant API, ``incisive central tenant …`` with the manager token). Root on the machine can still read files;
the point is that no incisive command offers it, and every attempt through one is on record.
"""

from __future__ import annotations

from incisive.common.audit_log import NodeAudit
from incisive.common.errors import InputError
from incisive.node.home import Node


class ProviderOnly(InputError):
    """A command a Central Node's operator may not run on a tenant (the provider's, through the tenant API)."""


def provider_only(node: Node, action: str, instead: str) -> None:
    """Refuse ``action`` on a Central Node tenant (audited in its chain); nothing on a provider's own node."""
    if not node.settings.tenant_of:
        return
    NodeAudit(node.home).append("operator", "operator.refused", target=action, node=node.settings.node_id,
                                outcome="refused", details={"reason": "a tenant's data and policy are its provider's"})
    raise ProviderOnly(f"this node directory is a Central Node tenant: '{action}' is its provider's to do, "
                       f"not the operator's ({instead})")
