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
(:func:`poll_interval`: short right after a message, backing off to a cap) and object pulls retry after 20 ms.
The patches that do this, and the executor's copy of ``flwr-clientapp``'s task-input step, live in
:mod:`incisive.compat.flwr_1_42` (applied only on flwr 1.42 and where the attribute exists, otherwise Flower keeps
its own timing); this module only sets the intervals. 3 nodes, tabular-risk, 2 cores: 2.5-3.1 s per round
before, 1.1 s with these polls and the SuperLink's in-memory state (:class:`incisive.federated.deploy.Federation`).

``python -m incisive.node.fl.runtime [flower-supernode args]``  starts both (the executor follows the
SuperNode's lifetime); ``python -m incisive.node.fl.runtime --executor ADDRESS PARENT_PID`` is the executor.
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

from incisive.common.exit_codes import ExitCode
from incisive.compat import flwr_1_42

CLIENT_APP_REF = "incisive.node.fl.client_app:client_app"
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
PRELOAD = ("numpy", "torch", "sklearn.metrics", "sqlalchemy", "opacus", "pydicom", "monai.transforms",
           "monai.networks.blocks", "incisive.node.fl.client_app", "incisive.node.fl.data",
           "incisive.node.home", "incisive.common.settings")


# ---------------------------------------------------------------- SuperNode side
def poll_interval(since: float, first: float, cap: float) -> float:
    """Adaptive poll interval: ``first`` right after the last message, growing by :data:`POLL_GROWTH` of the time
    since then, at most ``cap``; the expected wait for the next message stays ~``POLL_GROWTH`` of the time it took
    to come, and a node waiting long (or idle) polls no more often than before."""
    return min(cap, first + POLL_GROWTH * max(0.0, since))


def _local_poll(since: float) -> float:
    """SuperNode's local checks (reply ready, objects stored) ``since`` seconds into the reply wait."""
    return poll_interval(since, LOCAL_POLL_S, ACTIVE_POLL_S)


def _fleet_poll(since: float) -> float:
    """SuperNode → SuperLink pulls ``since`` seconds after the node's last reply (during a job): the next phase's
    message usually comes within a second of it, so it is picked up in ~0.05-0.15 s instead of up to 0.5 s, while
    a node waiting for slower nodes backs off to the 0.5 s that keeps a SuperLink with 10 nodes unloaded."""
    return poll_interval(since, FLEET_FIRST_POLL_S, FLEET_POLL_S)


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
    args = [sys.executable, "-m", "incisive.node.fl.runtime", "--executor", address, str(os.getpid())]

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
    flwr_1_42.install_fast_polls(local=_local_poll, fleet=_fleet_poll, active_window_s=ACTIVE_WINDOW_S)
    flwr_1_42.install_quick_object_pulls(start_client_internal)
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
    """Refuse a task whose FAB names any ClientApp but the installed :data:`CLIENT_APP_REF` (nothing from the FAB
    is imported either way), or whose FAB cannot be read (not a zip, no ``pyproject.toml``, no valid
    ``[tool.flwr.app.components]``): ``PermissionError``, reported to the server as the task's error."""
    from flwr.common.config import get_fab_config

    try:
        ref = get_fab_config(fab.content)["tool"]["flwr"]["app"]["components"]["clientapp"]
    except Exception as exc:  # any unreadable FAB is refused; the reason goes back to the server
        raise PermissionError(f"malformed FAB refused: {type(exc).__name__}: {exc}") from None
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


def run_task(address: str, token: str) -> None:
    """Execute one ClientApp task in this process (what ``flwr-clientapp --token`` does, minus process start-up
    and FAB code loading)."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore import log
    from flwr.supercore.heartbeat import HeartbeatSender
    from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

    from incisive.node.fl.client_app import client_app

    started = time.monotonic()
    client = _client(address, "flwr-clientapp", token)
    heartbeat = HeartbeatSender(_heartbeat(client))
    heartbeat.start()
    message = context = reply = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        message, context, fab = flwr_1_42.pull_task_input(client)
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
    # Flower's client retries a refused connection on its own (back-off, no limit): when the SuperNode exits by
    # itself (e.g. its SuperLink refused it), the loop below would never see it. A watchdog ends the executor.
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True, name="parent-watch").start()
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


def _exit_with_parent(pid: int, interval_s: float = 1.0) -> None:
    while _alive(pid):
        time.sleep(interval_s)
    os._exit(ExitCode.OK)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--executor"]:
        serve_tasks(argv[1], int(argv[2]))
    else:
        run_supernode(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
