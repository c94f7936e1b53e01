"""The platform path of ``incisive model`` / ``incisive fl`` / ``incisive infer``: the platform's model registry,
FL job and inference API over HTTP with a user's API token (``--platform URL --token …`` or
``$INCISIVE_PLATFORM_URL`` / ``$INCISIVE_TOKEN``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from incisive.common.api_client import ApiClient
from incisive.common.errors import InputError
from incisive.federated.archive import pack
from incisive.federated.bundle import read_manifest

FINAL = ("completed", "failed")
INFER_PENDING = ("queued", "running")


class Platform(ApiClient):
    """The model registry, FL job and inference API."""

    def register(self, bundle: Path, name: str | None, version: str | None) -> dict[str, Any]:
        manifest = read_manifest(bundle.expanduser().resolve())
        if (name and name != manifest.name) or (version and version != manifest.version):
            raise InputError(f"--name/--version do not match the bundle manifest ({manifest.ref})")
        data: dict[str, Any] = self.call("POST", "/api/v1/models", content=pack(bundle.expanduser().resolve()),
                                         params={"name": manifest.name, "version": manifest.version},
                                         headers={"Content-Type": "application/octet-stream"})
        return data

    def models(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.call("GET", "/api/v1/models")
        return data

    def start(self, op: str, model: str, nodes: list[str] | None, **params: Any) -> dict[str, Any]:
        body = {"op": op, "model": model, "nodes": nodes, **{k: v for k, v in params.items() if v is not None}}
        data: dict[str, Any] = self.call("POST", "/api/v1/fl/jobs", json=body)
        return data

    def job(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.call("GET", f"/api/v1/fl/jobs/{job_id}")
        return data

    def follow(self, job_id: str, on_update: Callable[[dict[str, Any]], None] | None = None,
               interval: float = 1.0, timeout: float = 24 * 3600) -> dict[str, Any]:
        """Poll the job until it completed or failed."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update:
                on_update(job)
            if job["status"] in FINAL or time.monotonic() > deadline:
                return job
            time.sleep(interval)


    def infer(self, model: str, node: str, series: list[str] | None, project: str | None = None) -> dict[str, Any]:
        body = {"model": model, "node": node, "series": series or None, "project": project}
        data: dict[str, Any] = self.call("POST", "/api/v1/inference", json=body)
        return data

    def inference(self, request_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.call("GET", f"/api/v1/inference/{request_id}")
        return data

    def wait_inference(self, request_id: str, timeout: float, interval: float = 1.0,
                       on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll an inference request until the node answered, it expired, or ``timeout`` passed (then it is
        returned as it stands: queued or running)."""
        deadline = time.monotonic() + timeout
        while True:
            request = self.inference(request_id)
            if on_update:
                on_update(request)
            if request["status"] not in INFER_PENDING or time.monotonic() + interval > deadline:
                return request
            time.sleep(interval)


def nodes_arg(text: str | None) -> list[str] | None:
    """``all`` (or nothing) = every enrolled node; else comma-separated node ids."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    return None if not items or items == ["all"] else items
