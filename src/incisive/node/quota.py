"""Storage quotas of a node (``quota_bytes``, ``quota_instances`` in its settings; 0 = no limit).

Set per tenant by a Central Node (``incisive central tenant add --quota-bytes … --quota-instances …``) and
enforced at the door: :func:`record_outcomes <incisive.node.ingest.dicom_import.record_outcomes>` asks
:func:`enforce_quota` before it writes a batch, so an upload past the limit is refused with a clear reason and
nothing of the batch is stored. Bytes count what the catalogue records per instance (the instance's size).

The totals come from one aggregate query, cached for :data:`CACHE_S` per catalogue; a check that passes adds its
batch to the cached totals at once, so batches arriving within that second are counted too (a batch that then
fails counts until the cache expires: the check errs on the side of refusing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from sqlalchemy import func, select

from incisive.common.errors import InputError
from incisive.node.catalogue.models import Instance
from incisive.node.home import Node

__all__ = ["CACHE_S", "QuotaExceeded", "enforce_quota", "over_quota", "stored_totals"]

CACHE_S = 1.0
_cache: dict[str, tuple[float, int, int]] = {}  # catalogue URL -> (monotonic time, instances, bytes)
_lock = threading.Lock()


class QuotaExceeded(InputError):
    """Storing would pass the node's quota of bytes or instances."""


def stored_totals(node: Node) -> tuple[int, int]:
    """(instances, bytes) the catalogue holds now (no cache)."""
    with node.catalogue.session() as s:
        count, size = s.execute(select(func.count(Instance.id), func.coalesce(func.sum(Instance.size), 0))).one()
    return int(count), int(size)


def over_quota(node: Node, adding_bytes: int, adding_instances: int) -> str | None:
    """Why adding this much would pass the node's quota, or ``None`` when it fits (or there is no quota)."""
    quota_bytes, quota_instances = node.settings.quota_bytes, node.settings.quota_instances
    if not (quota_bytes or quota_instances) or (adding_bytes <= 0 and adding_instances <= 0):
        return None
    key = node.settings.effective_catalogue_url
    with _lock:
        cached = _cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            at, count, size = cached
        else:
            at = time.monotonic()
            count, size = stored_totals(node)
        if quota_instances and count + adding_instances > quota_instances:
            _cache[key] = (at, count, size)
            return (f"quota exceeded: {count} of {quota_instances} instances stored, {adding_instances} more "
                    "refused; ask the operator for a larger quota")
        if quota_bytes and size + adding_bytes > quota_bytes:
            _cache[key] = (at, count, size)
            return (f"quota exceeded: {size} of {quota_bytes} bytes stored, {adding_bytes} more refused; ask the "
                    "operator for a larger quota")
        _cache[key] = (at, count + adding_instances, size + adding_bytes)
    return None


def enforce_quota(node: Node, sizes: Iterable[int]) -> None:
    """:class:`QuotaExceeded` when storing instances of these sizes would pass the quota (the door's one call)."""
    sizes = list(sizes)
    reason = over_quota(node, sum(sizes), len(sizes))
    if reason is not None:
        raise QuotaExceeded(reason)


def forget(node: Node) -> None:
    """Drop the cached totals of a node (after its quota or contents changed outside the door)."""
    with _lock:
        _cache.pop(node.settings.effective_catalogue_url, None)
