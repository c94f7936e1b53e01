"""The node's FastAPI application: health plus DICOMweb (STOW-RS, QIDO-RS, WADO-RS).

Request bodies are bounded (:class:`incisive.common.asgi_limits.BodyLimit`): STOW-RS up to ``stow_max_bytes``,
64 KiB elsewhere, 413 beyond; a body idle for ``http_header_timeout_s`` gets 408. The server's own limits
(header and keep-alive timeouts, concurrency) are set in :mod:`incisive.node.serve`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from incisive import __version__
from incisive.common.asgi_limits import BodyLimit
from incisive.common.errors import CatalogueUnavailable
from incisive.common.logging import get_logger
from incisive.node.api.dicomweb import router as dicomweb_router
from incisive.node.home import Node

log = get_logger("api")
STOW_PATH = "/dicom-web/studies"
OTHER_BODY_BYTES = 64 * 1024


def create_app(node: Node) -> FastAPI:
    app = FastAPI(title="incisive node", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.node = node
    app.include_router(dicomweb_router)
    # STOW-RS bodies up to stow_max_bytes; no other route takes a body
    app.add_middleware(BodyLimit, max_bytes=OTHER_BODY_BYTES, per_path={STOW_PATH: node.settings.stow_max_bytes},
                       idle_s=node.settings.http_header_timeout_s)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "node_id": node.settings.node_id, "version": __version__}

    @app.exception_handler(CatalogueUnavailable)
    async def unavailable(_request: Request, exc: CatalogueUnavailable) -> JSONResponse:
        log.error("catalogue unavailable during an API request")
        return JSONResponse({"detail": "catalogue unavailable; retry later"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": "invalid request parameters"}, status_code=400)

    return app
