"""One node's Flower runtime: a ``flower-supernode`` in ``--isolation process`` mode plus a warm ClientApp
executor beside it, started together by :func:`incisive.federated.deploy.supernode_argv`'s command line.

Why: with Flower's default ``--isolation subprocess``, every message (each fit, evaluate and SecAgg+ stage) starts
a new ``flwr-clientapp`` process that imports torch, Flower and the bundle again: seconds per phase and node. Here
one long-lived executor per SuperNode imports all of that once, then takes each task from the SuperNode's
Runtime API (the same ``AcquireTask`` / ``PullTaskInput`` / ``PushMessages`` / ``PushTaskOutput`` calls that
``flower-superexec`` + ``flwr-clientapp`` make) and runs it in-process, so per-node caches (data read from the
catalogue) survive across the rounds of a job. The executor only ever runs the installed incisive ClientApp: a
FAB that names any other component is refused, and no code from the FAB is imported.

Flower 1.42 also hard-codes polling sleeps on the node (3 s between fleet pulls when idle, 0.5 s while waiting
for a reply) and a 1 s first back-off for objects not stored yet. While a job is active the sleeps adapt
(:func:`poll_interval`: short right after a message, backing off to a cap; see :func:`_fast_polling`) and object
pulls retry after 20 ms (:func:`quicker_object_pulls`). Patches replace module attributes of
``flwr.supernode.start_client_internal`` (``time``, ``_push_messages``, ``pull_objects``) and, in the ServerApp,
``flwr.superlink.grid.http_grid.pull_objects``; they apply only on flwr 1.42 (:func:`flwr_patchable`) and only
where the attribute exists, otherwise Flower keeps its own timing. 3 nodes, tabular-risk, 2 cores: 2.5-3.1 s per
round before, 1.1 s with these polls and the SuperLink's in-memory state (:class:`incisive.federated.deploy.
Federation`).

``python -m incisive.federated.node_runtime [flower-supernode args]``  starts both (the executor follows the
SuperNode's lifetime); ``python -m incisive.federated.node_runtime --executor ADDRESS PARENT_PID`` is the executor.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from logging import DEBUG, ERROR, INFO, WARNING
from typing import Any

CLIENT_APP_REF = "incisive.federated.flower_app:client_app"
# While a job is active every poll interval adapts (poll_interval): short right after a message, growing by
# POLL_GROWTH of the time since, capped.
POLL_GROWTH = 0.1
LOCAL_POLL_S = 0.02  # first local poll: executor → Runtime API, SuperNode's reply checks
ACTIVE_POLL_S = 0.1  # cap of the local polls while a job is active
# SuperNode → SuperLink pulls while a job is active: every node's pull costs the SuperLink CPU (10 nodes at a fixed
# 0.1 s kept a 2-core SuperLink host busy), so they start at 0.05 s after the node's reply and back off to
# FLEET_POLL_S (INCISIVE_FL_FLEET_POLL_S overrides)
FLEET_FIRST_POLL_S = 0.05
FLEET_POLL_S = float(os.environ.get("INCISIVE_FL_FLEET_POLL_S", "0.5"))
IDLE_POLL_S = 1.0  # executor task polls when no task came for ACTIVE_WINDOW_S
ACTIVE_WINDOW_S = 120.0
OBJECT_PULL_BACKOFF_S = (0.02, 0.5)  # first retry, cap: a message's objects land in the store just after it
PRELOAD = ("numpy", "torch", "sklearn.metrics", "sqlalchemy", "opacus", "pydicom", "monai.transforms",
           "monai.networks.blocks", "incisive.federated.flower_app", "incisive.federated.data",
           "incisive.node.home", "incisive.common.settings")


# ---------------------------------------------------------------- SuperNode side
def flwr_patchable() -> bool:
    """The timing patches here replace module attributes of Flower 1.42 (checked to exist as well): another
    Flower version keeps its own timing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flwr").split(".")[:2] == ["1", "42"]
    except PackageNotFoundError:
        return False


def poll_interval(since: float, first: float, cap: float) -> float:
    """Adaptive poll interval: ``first`` right after the last message, growing by :data:`POLL_GROWTH` of the time
    since then, at most ``cap``; the expected wait for the next message stays ~``POLL_GROWTH`` of the time it took
    to come, and a node waiting long (or idle) polls no more often than before."""
    return min(cap, first + POLL_GROWTH * max(0.0, since))


def _fast_polling() -> None:
    """Shorten Flower's hard-coded SuperNode sleeps while a job is active (a message in the last two minutes).

    ``start_client_internal`` sleeps 3 s after every empty pull from the SuperLink and 0.5 s per check while the
    ClientApp works (``_push_messages``: reply in the node state, its objects in the store); both are pure latency
    on every phase of every round. Only that module's ``time`` is replaced (everything else delegates to the real
    module) and its ``_push_messages`` is wrapped to note when the node last sent a reply:

    * local checks (reply ready, objects stored; in-process, cheap): :func:`poll_interval` from
      :data:`LOCAL_POLL_S` up to :data:`ACTIVE_POLL_S` since the reply wait began;
    * pulls from the SuperLink (cost SuperLink CPU per node): :func:`poll_interval` from :data:`FLEET_FIRST_POLL_S`
      up to :data:`FLEET_POLL_S` since the node's last reply: the next phase's message usually comes within a
      second of it, so it is picked up in ~0.05-0.15 s instead of up to 0.5 s, while a node waiting for slower
      nodes backs off to the 0.5 s that keeps a SuperLink with 10 nodes unloaded;
    * no reply for :data:`ACTIVE_WINDOW_S`: Flower's own 3 s between pulls."""
    from flwr.supernode import start_client_internal as sci

    if not flwr_patchable() or not hasattr(sci, "time") or not callable(getattr(sci, "_push_messages", None)):
        return  # another Flower, or one without these module attributes: leave its timing alone
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
                seconds = min(seconds, poll_interval(now - wait_started[0], LOCAL_POLL_S, ACTIVE_POLL_S))
            elif now - last_reply[0] < ACTIVE_WINDOW_S:  # empty pull from the SuperLink during a job
                seconds = min(seconds, poll_interval(now - last_reply[0], FLEET_FIRST_POLL_S, FLEET_POLL_S))
            real.sleep(seconds)

    def _push_messages(*args: Any, **kwargs: Any) -> None:
        wait_started[0] = real.monotonic()
        try:
            push_messages(*args, **kwargs)
        finally:
            last_reply[0] = real.monotonic()

    setattr(sci, "time", _Time())  # noqa: B010 (a module attribute mypy does not see as exported)
    setattr(sci, "_push_messages", _push_messages)  # noqa: B010


def _runtime_address(argv: list[str]) -> str:
    host, port = "127.0.0.1", "9094"
    for i, arg in enumerate(argv[:-1]):
        if arg == "--host":
            host = argv[i + 1]
        elif arg == "--port":
            port = argv[i + 1]
    return f"{host}:{port}"


def _keep_executor(address: str) -> None:
    """Run the executor beside this SuperNode and restart it if it dies (it exits when this process does)."""
    args = [sys.executable, "-m", "incisive.federated.node_runtime", "--executor", address, str(os.getpid())]

    def loop() -> None:
        failures = 0
        while failures < 5:
            started = time.monotonic()
            code = subprocess.call(args)
            failures = failures + 1 if time.monotonic() - started < 30 else 0
            print(f"incisive ClientApp executor exited with {code}; restarting", file=sys.stderr, flush=True)
            time.sleep(1)

    threading.Thread(target=loop, name="incisive-executor", daemon=True).start()


def run_supernode(argv: list[str]) -> None:
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    if "--isolation" in argv:  # always process isolation: the executor below is the only one taking tasks
        i = argv.index("--isolation")
        argv = argv[:i] + argv[i + 2:]
    argv = [*argv, "--isolation", "process"]

    _keep_executor(_runtime_address(argv))
    _fast_polling()
    quicker_object_pulls(start_client_internal)
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


# ---------------------------------------------------------------- executor side
def _preload() -> None:
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _client(address: str, component: str, token: str | None = None) -> Any:
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(server_address=address, insecure=True, root_certificates=None,
                                                 interceptors=interceptors,
                                                 retry_invoker=make_simple_http_retry_invoker())


def _check_fab(fab: Any) -> None:
    from flwr.common.config import get_fab_config

    ref = get_fab_config(fab.content)["tool"]["flwr"]["app"]["components"]["clientapp"]
    if ref != CLIENT_APP_REF:
        raise PermissionError(f"this node runs only {CLIENT_APP_REF}, not {ref!r}")


def _heartbeat(client: Any) -> Callable[[], bool]:
    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    def beat() -> bool:
        try:
            client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
            return True
        except httpx.HTTPError:
            return False

    return beat


def quicker_object_pulls(*modules: Any) -> None:
    """Retry objects that are not in the store yet after 20 ms (doubling, at most 0.5 s) instead of Flower's
    1 s first back-off: a message is announced before its objects land, so every phase used to wait 1-3 s.
    Applied to the modules that pull with the defaults (the SuperNode's fleet loop, the ServerApp's grid); only
    on flwr 1.42 and where the module has ``pull_objects``."""
    import functools

    from flwr.supercore.inflatable import inflatable_utils

    if not flwr_patchable():
        return
    fast = functools.partial(inflatable_utils.pull_objects, initial_backoff=OBJECT_PULL_BACKOFF_S[0],
                             backoff_cap=OBJECT_PULL_BACKOFF_S[1])
    for module in modules:
        if hasattr(module, "pull_objects"):
            setattr(module, "pull_objects", fast)  # noqa: B010


def _pull_task_input(client: Any) -> tuple[Any, Any, Any]:
    """``run_clientapp.pull_task_input`` with quick object retries: (message, context, fab)."""
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
    message.metadata.__dict__["_message_id"] = tree.object_id  # as flwr-clientapp does
    return message, context, fab_from_proto(res.fab)


def run_task(address: str, token: str) -> None:
    """Execute one ClientApp task in this process (what ``flwr-clientapp --token`` does, minus process start-up
    and FAB code loading)."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore import log
    from flwr.supercore.heartbeat import HeartbeatSender
    from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

    from incisive.federated.flower_app import client_app

    started = time.monotonic()
    client = _client(address, "flwr-clientapp", token)
    heartbeat = HeartbeatSender(_heartbeat(client))
    heartbeat.start()
    message = context = reply = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        message, context, fab = _pull_task_input(client)
        _check_fab(fab)
        reply = client_app(message=message, context=context)
        status, details = SubStatus.COMPLETED, ""
    except Exception as exc:  # reported to the server as an error reply, like flwr-clientapp does
        log(ERROR, "ClientApp raised an exception", exc_info=exc)
        details = f"{type(exc)}:<'{exc}'>"
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            heartbeat.stop()
            push_task_output(client=client, context=context, sub_status=status, details=details)
            client.close()
            log(DEBUG, "incisive ClientApp task %s in %.2fs", status, time.monotonic() - started)


def serve_tasks(address: str, parent_pid: int) -> None:
    """Poll the SuperNode's Runtime API for ClientApp tasks until the SuperNode process is gone."""
    import httpx
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore import log
    from flwr.supercore.constant import TaskType

    _preload()
    client = _client(address, "SuperExec")
    log(INFO, "incisive ClientApp executor ready (Runtime API %s)", address)
    last_task = time.monotonic()
    while _alive(parent_pid):
        try:
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[str(TaskType.CLIENT_APP)]))
        except httpx.HTTPError as exc:
            log(WARNING, "Runtime API not reachable yet: %s", exc)
            time.sleep(IDLE_POLL_S)
            continue
        if res.HasField("task") and res.token:
            run_task(address, res.token)
            last_task = time.monotonic()
            continue
        since = time.monotonic() - last_task
        time.sleep(poll_interval(since, LOCAL_POLL_S, ACTIVE_POLL_S) if since < ACTIVE_WINDOW_S else IDLE_POLL_S)


def _alive(pid: int) -> bool:
    return os.getppid() == pid  # re-parented: the SuperNode is gone


def main(argv: list[str]) -> None:
    if argv[:1] == ["--executor"]:
        serve_tasks(argv[1], int(argv[2]))
    else:
        run_supernode(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
