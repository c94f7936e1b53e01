"""The agent protocol's job and reply models (incisive.common.protocol), shared by platform and node."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from incisive.common.protocol import POLICY_JOB_TYPES, Job, JobType, Result, UnknownJobType


def test_job_types_cover_every_wire_string() -> None:
    assert [t.value for t in JobType] == ["count", "summary", "fl-supernode", "fl-stop", "infer"]
    assert POLICY_JOB_TYPES == ("count", "summary", "fl-supernode", "infer")  # fl-stop always runs


def test_job_parses_the_platform_wire_shape_and_names_an_unknown_type() -> None:
    job = Job.parse({"id": "a1", "type": "count", "payload": {"by": ["modality"]}, "expires_at": "t",
                     "extra": 1})
    assert job.kind() is JobType.COUNT and job.wire() == {"id": "a1", "type": "count",
                                                          "payload": {"by": ["modality"]}, "expires_at": "t"}
    with pytest.raises(UnknownJobType, match="unknown job type 'train-anything'"):
        Job.parse({"id": "a2", "type": "train-anything"}).kind()


def test_result_bodies_keep_their_wire_shape() -> None:
    assert Result.ok({"n": 1}).body() == {"status": "ok", "result": {"n": 1}, "error": None}
    assert Result.refused("no", rule="k").body() == {"status": "refused", "result": None, "error": "no", "rule": "k"}
    assert "rule" not in Result.refused("no").body()
    assert Result.failed("x" * 900).error == "x" * 500
    with pytest.raises(ValidationError):
        Result.model_validate({"status": "maybe"})
