"""Every Flower 1.42 internal that :mod:`incisive.compat.flwr_1_42` patches or repeats, and the Runtime API the
node's warm executor calls: each test names the attribute and fails when an upgrade removes it or changes its
shape (then port the compat module; a new release gets a new one)."""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import time
from typing import Any

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.superlink.grid import http_grid as _http_grid
from flwr.supernode import start_client_internal as _sci

from incisive.compat import flwr_1_42
from tests.compat.conftest import attr, keyword_params, params

PORT = "incisive.compat.flwr_1_42"
sci: Any = _sci  # module attributes mypy does not see as exported
http_grid: Any = _http_grid


def test_installed_flower_is_the_patched_release() -> None:
    installed = importlib.metadata.version("flwr")
    assert flwr_1_42.applies(), f"flwr {installed} is installed, the patches are for 1.42: port {PORT}"


# ---------------------------------------------------------------- install_fast_polls
def test_start_client_internal_time_is_the_time_module() -> None:
    """The patch replaces ``start_client_internal.time``: it must be the module global the loops sleep through."""
    assert attr(sci, "time", PORT) is time, "flwr.supernode.start_client_internal.time is no longer the time module"


def test_start_client_internal_push_messages_shape() -> None:
    push = attr(sci, "_push_messages", PORT)
    assert callable(push)
    assert params(push) == ["state", "object_store", "send", "push_object"], \
        "flwr.supernode.start_client_internal._push_messages changed its parameters"
    assert "_push_messages(" in inspect.getsource(sci.start_client_internal), \
        "start_client_internal no longer calls the module's _push_messages (the wrapper would not see replies)"


def test_start_client_internal_sleep_lengths() -> None:
    """The patched ``sleep`` tells Flower's sleeps apart by length: 3 s after an empty fleet pull, 0.5 s per
    local check while the ClientApp works."""
    loop = inspect.getsource(attr(sci, "start_client_internal", PORT))
    push = inspect.getsource(attr(sci, "_push_messages", PORT))
    assert "time.sleep(3)" in loop, "start_client_internal: the 3 s sleep after an empty pull changed"
    assert push.count("time.sleep(0.5)") == 2, "_push_messages: the 0.5 s reply/object checks changed"


@pytest.fixture
def restore_sci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test installs into the real flwr modules is undone after it."""
    for module in (sci, http_grid):
        for name in ("time", "_push_messages", "pull_objects"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(module, name))


@pytest.mark.usefixtures("restore_sci")
def test_install_fast_polls_shortens_the_real_module_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    pushed: list[Any] = []
    monkeypatch.setattr(sci, "_push_messages", lambda *a, **k: pushed.append(a))
    assert flwr_1_42.install_fast_polls(local=lambda s: 0.02, fleet=lambda s: 0.05, active_window_s=120)
    monkeypatch.setattr(time, "sleep", slept.append)  # what the proxy delegates to
    assert sci.time.monotonic is time.monotonic  # everything but sleep is the real module
    sci.time.sleep(3)  # no reply yet: not during a job, Flower's own 3 s
    sci._push_messages("state", "store", "send", "push")
    sci.time.sleep(3)  # empty pull right after a reply: fleet interval
    sci.time.sleep(0.5)  # local check: local interval
    assert pushed == [("state", "store", "send", "push")]
    assert slept == [3, 0.05, 0.02]


@pytest.mark.usefixtures("restore_sci")
def test_other_flower_release_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.43.0")
    before = (sci.time, sci._push_messages, sci.pull_objects, http_grid.pull_objects)
    assert not flwr_1_42.install_fast_polls(local=lambda s: 0.0, fleet=lambda s: 0.0, active_window_s=1)
    assert flwr_1_42.install_quick_object_pulls(sci, http_grid) == []
    assert (sci.time, sci._push_messages, sci.pull_objects, http_grid.pull_objects) == before


# ---------------------------------------------------------------- install_quick_object_pulls
@pytest.mark.parametrize("module", [sci, http_grid], ids=lambda m: m.__name__)
def test_module_pulls_objects_through_its_own_pull_objects(module: Any) -> None:
    """Both modules import ``pull_objects`` by name and call it with the defaults: replacing their attribute is
    what changes the back-off."""
    assert attr(module, "pull_objects", PORT) is inflatable_utils.pull_objects, \
        f"{module.__name__}.pull_objects is not inflatable_utils.pull_objects"
    assert "pull_objects(" in inspect.getsource(module)


def test_pull_objects_backoff_keywords() -> None:
    kw = keyword_params(attr(inflatable_utils, "pull_objects", PORT))
    for name in ("initial_backoff", "backoff_cap"):
        assert name in kw, f"flwr.supercore.inflatable.inflatable_utils.pull_objects lost {name}="
        assert kw[name].default > flwr_1_42.OBJECT_PULL_BACKOFF_S[0], f"pull_objects {name} default is already short"


@pytest.mark.usefixtures("restore_sci")
def test_install_quick_object_pulls_replaces_both_modules() -> None:
    assert flwr_1_42.install_quick_object_pulls(sci, http_grid) == [sci, http_grid]
    for module in (sci, http_grid):
        fast = module.pull_objects
        assert isinstance(fast, functools.partial) and fast.func is inflatable_utils.pull_objects
        assert fast.keywords == {"initial_backoff": 0.02, "backoff_cap": 0.5}


# ---------------------------------------------------------------- pull_task_input (the executor's task input)
def test_run_clientapp_pull_task_input_is_what_compat_repeats() -> None:
    """``flwr-clientapp``'s own step, which :func:`flwr_1_42.pull_task_input` repeats with a quick back-off: if
    Flower changes what it does (a new field, another identity to set), the copy must follow."""
    from flwr.supernode.runtime import run_clientapp

    fn = attr(run_clientapp, "pull_task_input", PORT)
    assert params(fn) == ["client"]
    assert set(fn.__code__.co_names) == {
        "ConfirmMessageReceived", "Message", "Node", "PullAppMessagesRequest", "PullMessages", "PullObject",
        "PullTaskInput", "PullTaskInputRequest", "RuntimeError", "TaskIdentity", "__dict__", "context",
        "context_from_proto", "fab", "fab_from_proto", "make_confirm_message_received_fn_protobuf",
        "make_pull_object_fn_protobuf", "message_object_trees", "messages_list", "metadata", "node_id",
        "object_id", "pull_and_inflate_object_from_tree", "run", "run_from_proto", "run_id", "task_id",
    }, "flwr.supernode.runtime.run_clientapp.pull_task_input changed: compare it with " + PORT
    assert '__dict__["_message_id"] = object_tree.object_id' in inspect.getsource(fn)


@pytest.mark.parametrize("name", ["task_id", "run_id", "node_id"])
def test_task_identity_is_settable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    prop = type(TaskIdentity).__dict__.get(name)
    assert isinstance(prop, property) and prop.fset is not None, f"TaskIdentity.{name} is no longer settable"
    monkeypatch.setattr(TaskIdentity, f"_{name}", None)  # restored after the test
    setattr(TaskIdentity, name, 7)
    assert getattr(TaskIdentity, name) == 7


def test_message_id_lives_in_metadata_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.app import Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)
    message = Message(RecordDict(), dst_node_id=2, message_type="train")
    assert "_message_id" in message.metadata.__dict__, "flwr Metadata no longer keeps _message_id in __dict__"
    message.metadata.__dict__["_message_id"] = "tree-object-id"
    assert message.metadata.message_id == "tree-object-id"


def test_task_input_protos() -> None:
    from flwr.proto.runtime_pb2 import PullAppMessagesResponse, PullTaskInputResponse

    assert {"task_id", "run", "context", "fab"} <= set(PullTaskInputResponse.DESCRIPTOR.fields_by_name)
    assert {"messages_list", "message_object_trees"} <= set(PullAppMessagesResponse.DESCRIPTOR.fields_by_name)


def test_pull_and_inflate_object_from_tree_shape() -> None:
    fn = attr(inflatable_utils, "pull_and_inflate_object_from_tree", PORT)
    assert params(fn)[:3] == ["object_tree", "pull_object_fn", "confirm_object_received_fn"]
    assert {"return_type", "initial_backoff", "backoff_cap"} <= set(keyword_params(fn))


# ---------------------------------------------------------------- the rest of the Runtime API the executor calls
def _runtime(name: str) -> Any:
    """``name`` (module path, then attributes), failing on the first attribute that is gone."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for part in parts[i:]:
            obj = attr(obj, part, "incisive.node.fl.runtime (executor)")
        return obj
    raise AssertionError(f"{name}: no such module")


@pytest.mark.parametrize(("name", "expected"), [
    ("flwr.supercore.runtime.RuntimeHttpClient.from_server_address",
     ["server_address", "insecure", "root_certificates", "interceptors", "retry_invoker"]),
    ("flwr.supercore.interceptors.RuntimeVersionHttpInterceptor", ["component_name"]),
    ("flwr.supercore.interceptors.RuntimeTokenHttpInterceptor", ["token"]),
    ("flwr.supercore.retry.make_simple_http_retry_invoker", []),
    ("flwr.supercore.heartbeat.HeartbeatSender", ["heartbeat_fn"]),
    ("flwr.supernode.runtime.run_clientapp.push_message", ["client", "message", "context"]),
    ("flwr.supernode.runtime.run_clientapp.push_task_output", ["client", "context", "sub_status", "details"]),
    ("flwr.common.serde.context_from_proto", ["context_proto"]),
    ("flwr.common.serde.fab_from_proto", ["fab"]),
    ("flwr.common.config.get_fab_config", ["fab_file"]),
])
def test_executor_calls(name: str, expected: list[str]) -> None:
    assert params(_runtime(name)) == expected, f"{name} changed its parameters"


def test_executor_runtime_api() -> None:
    from flwr.proto.runtime_pb2 import AcquireTaskRequest, AcquireTaskResponse
    from flwr.supercore.constant import TaskType
    from flwr.supercore.runtime import RuntimeHttpClient

    for rpc in ("AcquireTask", "PullTaskInput", "PullMessages", "PullObject", "ConfirmMessageReceived",
                "SendTaskHeartbeat", "PushMessages", "PushTaskOutput"):
        attr(RuntimeHttpClient, rpc, "incisive.node.fl.runtime (executor)")
    assert "supported_task_types" in AcquireTaskRequest.DESCRIPTOR.fields_by_name
    assert {"task", "token"} <= set(AcquireTaskResponse.DESCRIPTOR.fields_by_name)
    assert str(TaskType.CLIENT_APP) == "flwr-clientapp"
    _runtime("flwr.supernode.cli.flower_supernode")
    _runtime("flwr.proto.runtime_pb2.SendTaskHeartbeatRequest")
