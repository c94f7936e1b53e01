"""DICOMweb routes (thin: parse the request, call the service, shape the response)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from incisive.node.api import qido, stow, wado
from incisive.node.api.auth import node_of, require
from incisive.node.net.query import QueryError

DICOM_JSON = "application/dicom+json"
router = APIRouter(prefix="/dicom-web", tags=["dicomweb"])
viewer = Depends(require("viewer"))
uploader = Depends(require("uploader"))


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicom-web"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON, headers=headers)


def _check_json_accept(request: Request) -> None:
    accept = request.headers.get("accept", "")
    if accept and not any(t in accept for t in ("application/dicom+json", "application/json", "*/*")):
        raise HTTPException(406, "only application/dicom+json is offered")


@router.post("/studies", dependencies=[uploader])
async def store_instances(request: Request) -> Response:
    try:  # streamed: the body is parsed and spooled as it arrives, never held whole (stow.MultipartSpool)
        result = await stow.stow(node_of(request), request.headers.get("content-type", ""), request.stream(),
                                 _base(request))
    except stow.StowError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return _json(result.body, result.status)


async def _search(request: Request, resource: str, path: dict[str, str]) -> Response:
    _check_json_accept(request)
    try:
        q = qido.parse(qido.LEVEL[resource], request.query_params.multi_items(), path)
        rows = await run_in_threadpool(qido.run, node_of(request), q, _base(request))
    except (qido.QidoError, QueryError) as exc:
        raise HTTPException(400, str(exc)) from None
    return _json(rows, headers={"Warning": q.warnings[0]} if q.warnings else None)


@router.get("/studies", dependencies=[viewer])
async def search_studies(request: Request) -> Response:
    return await _search(request, "studies", {})


@router.get("/series", dependencies=[viewer])
async def search_all_series(request: Request) -> Response:
    return await _search(request, "series", {})


@router.get("/studies/{study}/series", dependencies=[viewer])
async def search_series(request: Request, study: str) -> Response:
    return await _search(request, "series", {"StudyInstanceUID": study})


@router.get("/instances", dependencies=[viewer])
async def search_all_instances(request: Request) -> Response:
    return await _search(request, "instances", {})


@router.get("/studies/{study}/instances", dependencies=[viewer])
async def search_study_instances(request: Request, study: str) -> Response:
    return await _search(request, "instances", {"StudyInstanceUID": study})


@router.get("/studies/{study}/series/{series}/instances", dependencies=[viewer])
async def search_instances(request: Request, study: str, series: str) -> Response:
    return await _search(request, "instances", {"StudyInstanceUID": study, "SeriesInstanceUID": series})


async def _retrieve(request: Request, study: str, series: str | None = None,
                    instance: str | None = None) -> Response:
    node = node_of(request)
    try:
        items = await run_in_threadpool(wado.locate, node, study, series, instance)
        parts, media_type = wado.multipart(node, items, request.headers.get("accept", ""))
    except wado.NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except wado.NotAcceptable as exc:
        raise HTTPException(406, str(exc)) from None
    return StreamingResponse(parts, media_type=media_type)


async def _metadata(request: Request, study: str, series: str | None = None,
                    instance: str | None = None) -> Response:
    _check_json_accept(request)
    node = node_of(request)
    try:
        items = await run_in_threadpool(wado.locate, node, study, series, instance)
    except wado.NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return _json(await run_in_threadpool(wado.metadata, node, items))


@router.get("/studies/{study}", dependencies=[viewer])
async def retrieve_study(request: Request, study: str) -> Response:
    return await _retrieve(request, study)


@router.get("/studies/{study}/series/{series}", dependencies=[viewer])
async def retrieve_series(request: Request, study: str, series: str) -> Response:
    return await _retrieve(request, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}", dependencies=[viewer])
async def retrieve_instance(request: Request, study: str, series: str, instance: str) -> Response:
    return await _retrieve(request, study, series, instance)


@router.get("/studies/{study}/metadata", dependencies=[viewer])
async def study_metadata(request: Request, study: str) -> Response:
    return await _metadata(request, study)


@router.get("/studies/{study}/series/{series}/metadata", dependencies=[viewer])
async def series_metadata(request: Request, study: str, series: str) -> Response:
    return await _metadata(request, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata", dependencies=[viewer])
async def instance_metadata(request: Request, study: str, series: str, instance: str) -> Response:
    return await _metadata(request, study, series, instance)
