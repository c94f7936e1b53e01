"""Agent endpoints for federated learning: a node downloads a bundle's code, or the trained model of an inference
job it was given (signed requests); it re-hashes both."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from sqlalchemy.orm import Session

from incisive.platform.routes.agent import signed
from incisive.platform.routes.deps import get_db, get_settings
from incisive.platform.services import audit, inference, models
from incisive.platform.services.nodes import NodeRef

router = APIRouter(prefix="/agent/v1", tags=["agent"])


@router.get("/models/{name}/{version}/bundle")
async def bundle(name: Annotated[str, Path(min_length=1, max_length=63)],
                 version: Annotated[str, Path(min_length=1, max_length=32)], request: Request) -> dict[str, Any]:
    """The bundle archive (base64 tar.gz) and the sha256 the platform recorded; the node verifies both."""
    db, settings = get_db(request), get_settings(request)

    def then(s: Session, node: NodeRef) -> dict[str, Any]:
        row = models.get(s, name, version)
        audit.append(s, f"node:{node.node_id}", "model.download", target=f"{name}:{version}", node=node.node_id,
                     details={"sha256": row.sha256})
        return {"name": row.name, "version": row.version, "sha256": row.sha256,
                "archive": base64.b64encode(row.archive).decode("ascii")}
    return await signed(request, db, settings.signature_window_s, then)


@router.get("/infer/{job_id}/model")
async def trained_model(job_id: Annotated[str, Path(min_length=1, max_length=64)], request: Request) -> dict[str, Any]:
    """The trained model an open ``infer`` job of this node names (base64 .npz) and its recorded sha256."""
    db, settings = get_db(request), get_settings(request)

    def then(s: Session, node: NodeRef) -> dict[str, Any]:
        source, digest, weights = inference.trained_for(s, node.node_id, job_id)
        return {"job": source, "sha256": digest, "weights": base64.b64encode(weights).decode("ascii")}
    return await signed(request, db, settings.signature_window_s, then)
