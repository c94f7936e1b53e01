"""Declared outputs only: what a hostile bundle returns is refused ("output rejected: …") before anyone uses it."""

from __future__ import annotations

import io
import math
import re
import zipfile

import numpy as np
import pytest

from incisive.federated.sandbox import OutputRejected
from incisive.federated.sandbox.validate import check_arrays, check_metrics, check_scores
from incisive.federated.sandbox.wire import decode_arrays
from tests.federated.sandbox.conftest import SMALL, SandboxFactory, record

TABULAR_STATE = [("weight", (1, 30), "float32"), ("bias", (1,), "float32")]


def expect_tabular(result: dict[str, object], arrays: dict[str, np.ndarray]) -> None:
    check_arrays(arrays, TABULAR_STATE)


@pytest.mark.parametrize(("bundle", "what", "reason"), [
    ("huge", "return a 64 MB array", f"reply of 64 MB exceeds the output limit of {SMALL.max_output_mb} MB"),
    ("string", "return a string as an array", "an array has the non-numeric dtype 'U'"),
    ("shape", "return a wrong shape", "array weight has shape (1, 29), declared (1, 30)"),
    ("nan", "return NaN", "array weight holds NaN or infinite values"),
    ("forged", "forge a frame claiming a 1 TiB body",
     f"reply of 1048576 MB exceeds the output limit of {SMALL.max_output_mb} MB"),
    ("garbage", "write garbage instead of a frame", "malformed reply (bad frame)"),
])
def test_hostile_output_is_rejected(make_sandbox: SandboxFactory, bundle: str, what: str, reason: str) -> None:
    box = make_sandbox(bundle)
    with box, pytest.raises(OutputRejected) as err:
        box.call("state", {}, expect=expect_tabular)
    record(bundle, what, str(err.value))
    assert str(err.value) == f"output rejected: {reason}"
    with make_sandbox("chatty", job="job-2") as again:  # the runner stays usable
        assert again.call("state", {}, expect=expect_tabular)[0] == {"names": ["weight", "bias"]}


def test_check_arrays() -> None:
    good = {"weight": np.zeros((1, 30), np.float32), "bias": np.zeros(1, np.float32)}
    check_arrays(good, TABULAR_STATE)
    cases = {
        "missing array(s) bias": {"weight": good["weight"]},
        "1 undeclared array(s)": {**good, "extra": np.zeros(1, np.float32)},
        "array bias has dtype <f8, declared <f4": {**good, "bias": np.zeros(1)},
        "array weight holds NaN or infinite values": {**good, "weight": np.full((1, 30), np.inf, np.float32)},
    }
    for reason, got in cases.items():
        with pytest.raises(OutputRejected, match=f"^{re.escape('output rejected: ' + reason)}$"):
            check_arrays(got, TABULAR_STATE)


def test_check_arrays_narrower_floats_only_when_asked_and_never_wider() -> None:
    """SecAgg+ sends the global model as float64 from round 2; the bundle trains in float32 and answers so."""
    wide = [("weight", (1, 30), "float64"), ("bias", (1,), "float64")]
    narrow = {"weight": np.zeros((1, 30), np.float32), "bias": np.zeros(1, np.float32)}
    check_arrays(narrow, wide, narrower_floats=True)
    with pytest.raises(OutputRejected, match="dtype <f4, declared <f8"):
        check_arrays(narrow, wide)
    wider = {"weight": np.zeros((1, 30), np.float64), "bias": np.zeros(1, np.float64)}
    with pytest.raises(OutputRejected, match="dtype <f8, declared <f4"):
        check_arrays(wider, TABULAR_STATE, narrower_floats=True)  # more bits than were sent: refused
    ints = {"weight": np.zeros((1, 30), np.int16), "bias": np.zeros(1, np.int16)}
    with pytest.raises(OutputRejected, match="dtype <i2, declared <f4"):
        check_arrays(ints, TABULAR_STATE, narrower_floats=True)  # another kind: refused


@pytest.mark.parametrize("value", ["0.9", [0.9], None, True, math.nan, math.inf, {"a": 1}])
def test_check_metrics_refuses_non_numbers(value: object) -> None:
    with pytest.raises(OutputRejected, match=r"^output rejected: metric accuracy is "):
        check_metrics({"accuracy": value}, ["accuracy", "loss"])


def test_check_metrics() -> None:
    assert check_metrics({"accuracy": 0.9, "n": 12}, ["accuracy", "n", "loss"]) == {"accuracy": 0.9, "n": 12}
    with pytest.raises(OutputRejected, match=r"^output rejected: 1 undeclared metric"):
        check_metrics({"accuracy": 0.9, "the-key-is-abc": 1}, ["accuracy"])


def test_check_scores() -> None:
    check_scores(np.zeros(4, np.float32), 4)
    check_scores(np.zeros((4, 1)), 4)
    for bad, reason in [(np.zeros(5), "shape"), (np.zeros(4, np.int64), "dtype"),
                        (np.array([0.1, np.nan, 0, 0]), "NaN")]:
        with pytest.raises(OutputRejected, match=reason):
            check_scores(bad, 4)


def test_decode_refuses_pickles_and_lying_headers() -> None:
    """The trusted side parses .npy members itself: no object arrays, no header claiming more than the member."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        member = io.BytesIO()
        np.save(member, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        z.writestr("obj.npy", member.getvalue())
    with pytest.raises(OutputRejected, match="non-numeric dtype 'O'"):
        decode_arrays(buf.getvalue(), 1 << 20)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (1 << 30,)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("big.npy", head.getvalue())  # claims 8 GiB, holds none
    with pytest.raises(OutputRejected, match=r"not a valid \.npz"):
        decode_arrays(buf.getvalue(), 1 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:  # a zip bomb: 64 MB of zeros
        z.writestr("w.npy", b"\0" * (64 << 20))
    with pytest.raises(OutputRejected, match="exceed the output limit of 8 MB"):
        decode_arrays(buf.getvalue(), 8 << 20)
