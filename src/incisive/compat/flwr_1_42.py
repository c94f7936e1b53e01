"""Flower 1.42 internals that incisive's node runtime and ServerApp reach into (tests: ``tests/compat``).

Why: Flower 1.42 hard-codes its polling on the node (3 s between fleet pulls when nothing came, 0.5 s per check
while the ClientApp works, in ``flwr.supernode.start_client_internal``) and a 1 s first back-off (10 s cap) for
objects that are not stored yet (``flwr.supercore.inflatable.inflatable_utils.pull_objects``, called with its
defaults by the SuperNode's fleet loop and by the ServerApp's ``http_grid``). Both are pure latency on every phase
of every round. Flower 1.42 has no public option for either (``flower-supernode --help``: only
``--max-wait-time`` / ``--max-retries`` for reconnecting; ``PULL_INITIAL_BACKOFF`` / ``PULL_BACKOFF_CAP`` are
module constants, not read from the environment). A later Flower adds ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``
(flwrlabs/flower#8041) for SuperExec's task polls only, which incisive's executor replaces anyway.

Measured (3 nodes, tabular-risk, 2 cores; commit c4e1267, together with the SuperLink's in-memory state, see
:class:`incisive.federated.deploy.Federation`, which is a plain Flower option: no ``--database``): 2.3-3.1 s per
round before, 1.0-1.3 s after (median 1.13 s; in-memory SuperLink alone 1.6 s); 10 nodes 7.7-8.5 s -> 3.7-4.2 s.

Patches:

* :func:`install_fast_polls`: replaces ``start_client_internal.time`` (a proxy: only ``sleep`` differs) and
  wraps ``start_client_internal._push_messages`` (to note when the node last replied);
* :func:`install_quick_object_pulls`: replaces ``pull_objects`` in the modules given
  (``start_client_internal``, ``flwr.superlink.grid.http_grid``) by the same function with a 20 ms first
  back-off;
* :func:`pull_task_input`: ``flwr.supernode.runtime.run_clientapp.pull_task_input`` step for step (sets the
  ``TaskIdentity`` class attributes and the message id in ``message.metadata.__dict__["_message_id"]``, as
  ``flwr-clientapp`` does) with the quick object back-off; used by the node's warm ClientApp executor.

The two ``install_*`` functions do nothing unless the installed Flower is 1.42 (:func:`applies`) and the
attribute exists; :func:`pull_task_input` is the executor's only way to take a task, so it is not gated: on
another Flower, ``tests/compat/test_flwr_1_42.py`` says what moved.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

RELEASE = ("1", "42")
# first retry, cap (Flower: 1 s, 10 s): a message is announced before its objects land in the store, so with
# Flower's 1 s first back-off every phase waited 1-3 s
OBJECT_PULL_BACKOFF_S = (0.02, 0.5)


def applies() -> bool:
    """Whether the installed Flower is the release these patches were written for (1.42.x)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return tuple(version("flwr").split(".")[:2]) == RELEASE
    except PackageNotFoundError:
        return False


def install_fast_polls(local: Callable[[float], float], fleet: Callable[[float], float],
                       active_window_s: float) -> bool:
    """Shorten the SuperNode's hard-coded sleeps while a job is active; ``False`` if Flower was left alone.

    ``start_client_internal`` sleeps 3 s after every empty pull from the SuperLink and 0.5 s per check while the
    ClientApp works (``_push_messages``: reply in the node state, its objects in the store). Only that module's
    ``time`` is replaced (everything but ``sleep`` delegates to the real module) and its ``_push_messages`` is
    wrapped to note when the node last sent a reply. Sleeps are told apart by their length, as Flower 1.42 codes
    them:

    * under 1 s (local checks: reply ready, objects stored; in-process, cheap): at most ``local(s)``, ``s`` the
      seconds since the reply wait began;
    * 1 s or more (empty pull from the SuperLink) within ``active_window_s`` of the node's last reply: at most
      ``fleet(s)``, ``s`` the seconds since that reply;
    * otherwise (no job active): Flower's own 3 s."""
    from flwr.supernode import start_client_internal as sci

    if not applies() or not hasattr(sci, "time") or not callable(getattr(sci, "_push_messages", None)):
        return False  # another Flower, or one without these module attributes: leave its timing alone
    real: Any = sci.__dict__["time"]
    push_messages = sci._push_messages
    last_reply = [-1e9]  # monotonic time the node last sent a reply (end of _push_messages)
    wait_started = [0.0]  # start of the current reply wait

    class _Time:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            now = real.monotonic()
            if seconds < 1:  # waiting for the ClientApp's reply (or its objects): local checks
                seconds = min(seconds, local(now - wait_started[0]))
            elif now - last_reply[0] < active_window_s:  # empty pull from the SuperLink during a job
                seconds = min(seconds, fleet(now - last_reply[0]))
            real.sleep(seconds)

    def _push_messages(*args: Any, **kwargs: Any) -> None:
        wait_started[0] = real.monotonic()
        try:
            push_messages(*args, **kwargs)
        finally:
            last_reply[0] = real.monotonic()

    setattr(sci, "time", _Time())  # noqa: B010 (a module attribute mypy does not see as exported)
    setattr(sci, "_push_messages", _push_messages)  # noqa: B010
    return True


def install_quick_object_pulls(*modules: Any) -> list[Any]:
    """Retry objects that are not in the store yet after :data:`OBJECT_PULL_BACKOFF_S` (20 ms, doubling, at most
    0.5 s) instead of Flower's 1 s first back-off, in each module given that has ``pull_objects`` (the SuperNode's
    fleet loop, the ServerApp's grid); only on Flower 1.42. Returns the modules patched."""
    from flwr.supercore.inflatable import inflatable_utils

    if not applies():
        return []
    fast = functools.partial(inflatable_utils.pull_objects, initial_backoff=OBJECT_PULL_BACKOFF_S[0],
                             backoff_cap=OBJECT_PULL_BACKOFF_S[1])
    patched = []
    for module in modules:
        if hasattr(module, "pull_objects"):
            setattr(module, "pull_objects", fast)  # noqa: B010
            patched.append(module)
    return patched


def pull_task_input(client: Any) -> tuple[Any, Any, Any]:
    """``run_clientapp.pull_task_input`` with quick object retries: (message, context, fab) of the task the
    Runtime API ``client`` (a ``RuntimeHttpClient`` holding the task's token) was given."""
    from flwr.app import Message
    from flwr.common.serde import context_from_proto, fab_from_proto
    from flwr.proto.node_pb2 import Node
    from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
    from flwr.supercore.task_identity import TaskIdentity

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = (res.task_id, res.run.run_id,
                                                                       res.context.node_id)
    context = context_from_proto(res.context)
    msgs = client.PullMessages(PullAppMessagesRequest())
    if not msgs.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node = Node(node_id=context.node_id)
    tree = msgs.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message, initial_backoff=OBJECT_PULL_BACKOFF_S[0], backoff_cap=OBJECT_PULL_BACKOFF_S[1])
    message.metadata.__dict__["_message_id"] = tree.object_id  # as flwr-clientapp does: not in the deflated one
    return message, context, fab_from_proto(res.fab)
