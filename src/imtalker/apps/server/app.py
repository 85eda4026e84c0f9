"""The HTTP API: `create_app(settings, pipeline)` -> a FastAPI app; run it with uvicorn (`imtalker serve`).

    POST   /v1/portraits          multipart: portrait [, crop, face_index] -> 201 {"id": ...} (encoded and cached)
    POST   /v1/videos             multipart: portrait | portrait_id, audio [, cfg_scale, nfe, seed, crop,
                                  paste_back, face_index, pose, gaze, cam, stream] -> 202 {"id": ...};
                                  stream=true: 200 fragmented MP4 (pose/gaze/cam: descriptions, docs/conditions.md)
    GET    /v1/videos/{id}        status and progress
    GET    /v1/videos/{id}/video  the mp4 (while it is made, for stream jobs)
    DELETE /v1/videos/{id}        cancel and delete
    WS     /v1/stream             live: PCM in, frames out (imtalker.apps.server.stream, docs/streaming.md)
    POST   /v1/webrtc             JSON SDP offer -> answer: the always-on live session as WebRTC tracks (`webrtc` extra)
    GET    /live                  a page for a live avatar over WS /v1/stream (microphone or a file in, face out)
    GET    /healthz, /metrics

Errors are JSON `{"error": code, "message": text}` with a 4xx/5xx status. Work runs on the job manager's workers;
request handlers only check inputs (decode, find the face) so a bad request is refused before it takes a worker.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...data.synthetic.demo_inputs import demo_asset
from ...errors import InputError
from ...pipelines import AudioDrivenPipeline
from .errors import ApiError
from .guards import ConnectionLimit, HostGuard, KeyGuard
from .inputs import load_uploaded_audio, parse_bool, parse_options
from .jobs import DONE, Job, JobManager, QueueFull
from .metrics import Metrics, return_free_memory
from .render import VIDEO_NAME, VideoRequest, run_video_job
from .settings import ServerSettings
from .sources import SourceCache, resolve_portrait
from .state import ServerState, busy

logger = logging.getLogger(__name__)

LIVE_PAGE = Path(__file__).with_name("live.html")
TAIL_POLL_SECONDS = 0.05  # how often a video being streamed is checked for new bytes
UPLOAD_COPY_BYTES = 1 << 20
INTAKE_THREADS = 2  # requests decoded, faces found and PCM converted at once (the memory bound counts them)


def create_app(settings: ServerSettings, pipeline: AudioDrivenPipeline) -> FastAPI:
    """The API around one loaded pipeline; workers start with the app (lifespan) and stop with it."""
    state = ServerState(settings, pipeline, SourceCache(pipeline, settings.source_cache_size), Metrics())
    webrtc_peers: set = set()  # the WebRTC callers connected now (imtalker.apps.server.webrtc)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        root = Path(tempfile.mkdtemp(prefix="imtalker-server-", dir=settings.temp_dir))
        state.jobs = JobManager(settings.workers, settings.max_queue, root, settings.job_ttl_seconds,
                                settings.max_jobs_kept, when_idle=return_free_memory)
        state.jobs.start()
        state.intake_pool = ThreadPoolExecutor(INTAKE_THREADS, thread_name_prefix="imtalker-intake")
        try:
            yield
        finally:
            if webrtc_peers:
                from .webrtc import close_peers

                await close_peers(webrtc_peers)
            await run_in_threadpool(state.jobs.shutdown)
            state.intake_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="imtalker", summary="Talking-face video from a portrait and speech", lifespan=lifespan)
    app.state.server = state
    app.state.webrtc_peers = webrtc_peers
    # the last added runs first: connection count, Host, CORS (its preflights carry no key), API key, body size
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    if settings.api_key is not None:
        app.add_middleware(KeyGuard, authorize=state.authorize)
    if settings.allow_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.allow_origins), allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["X-Job-Id"])
    app.add_middleware(HostGuard, allows_host=settings.allows_host)
    app.add_middleware(ConnectionLimit, max_connections=settings.max_connections)
    _add_error_handlers(app)
    _add_routes(app, state, webrtc_peers)
    return app


# -- errors ---------------------------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    async def input_error(request: Request, err: InputError) -> JSONResponse:
        return await api_error(request, ApiError.from_input(err))

    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(err.status_code, "bad_request")
        return JSONResponse({"error": code, "message": str(err.detail)}, status_code=err.status_code)

    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "bad_request", "message": str(err.errors())}, status_code=400)

    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"error": "internal", "message": f"{type(err).__name__}: {err}"}, status_code=500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(InputError, input_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with 413, counting as they arrive (Content-Length
    is checked first, chunked bodies are cut off when they pass the limit)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = ApiError(413, "too_large", f"the request body is larger than the limit of {self.max_bytes} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = JSONResponse(too_large.body(), status_code=413, headers={"Connection": "close"})
                return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message

        return await self.app(scope, counted, send)


# -- routes ---------------------------------------------------------------------------------------------------


def _add_routes(app: FastAPI, state: ServerState, webrtc_peers: set) -> None:
    settings = state.settings

    @app.get("/healthz")
    async def healthz():
        """Liveness: no key needed, no work done."""
        return {"status": "ok"}

    @app.post("/v1/webrtc")
    async def webrtc_offer(request: Request):
        """An SDP offer -> the answer; the live session then runs as the peer's tracks (docs/streaming.md)."""
        state.check_origin(request.headers)
        state.authorize(request.headers)
        try:
            from .webrtc import answer_offer  # aiortc is an optional extra
        except ImportError:
            raise ApiError(501, "not_installed", "WebRTC needs the webrtc extra: pip install 'imtalker[webrtc]'"
                           ) from None
        try:
            offer = await request.json()
        except ValueError:
            raise ApiError(400, "bad_request", "the body must be a JSON SDP offer") from None
        return await answer_offer(state, offer, webrtc_peers)

    @app.get("/live")
    async def live_page():
        """The live avatar page (no key needed to load it; the stream asks for one)."""
        return HTMLResponse(LIVE_PAGE.read_text(encoding="utf-8"))

    @app.get("/live/portrait.png")
    async def live_portrait():
        """The bundled demo portrait, the page's face until the user picks one."""
        return FileResponse(demo_asset("demo_portrait.png"), media_type="image/png")

    @app.get("/metrics")
    async def metrics(request: Request):
        """Queue length, active jobs and streams, frames rendered and the recent frame rate, memory."""
        state.authorize(request.headers)
        jobs = state.jobs.stats()
        return {**state.metrics.snapshot(), "queue_length": jobs["queued"], "active_jobs": jobs["running"],
                "jobs": jobs, "sources": state.sources.stats()}

    @app.post("/v1/portraits", status_code=201)
    async def upload_portrait(request: Request):
        """Check, crop and encode a portrait once; its id (a content hash) can stand in for the image later."""
        state.authorize(request.headers)
        state.check_origin(request.headers)
        _check_room(state)
        async with request.form(max_files=1, max_fields=4) as form:
            fields = _text_fields(form, files=("portrait",))
            options, _ = parse_options(fields)
            upload = form.get("portrait")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "bad_request", "the form needs a 'portrait' image file")
            data = await upload.read()
        portrait = await state.offload(resolve_portrait, state.sources, options, settings.max_image_pixels, data)
        if portrait.source is None:  # encoding is rendering work: it takes a worker like any job
            job = _submit(state, Job("portrait", lambda job: portrait.prepare(state.sources)))
            while not job.finished:
                await asyncio.sleep(0.02)
            state.jobs.forget(job.id)
            if job.error is not None:
                raise ApiError(job.error_status or 500, "bad_input" if job.error_status == 422 else "internal",
                               job.error)
        width, height = portrait.size
        return {"id": portrait.key[0], "width": width, "height": height, "crop": options.crop}

    @app.post("/v1/videos", status_code=202)
    async def create_video(request: Request):
        """Queue a video job (202 + id), or with stream=true answer with the video as it is made (200)."""
        state.authorize(request.headers)
        state.check_origin(request.headers)
        _check_room(state)
        folder = state.jobs.new_folder()
        try:
            async with request.form(max_files=2, max_fields=16) as form:
                fields = _text_fields(form, files=("portrait", "audio"))
                options, extra = parse_options(fields, extra=("stream", "portrait_id"))
                stream = parse_bool(extra.get("stream"), "stream", False)
                audio, portrait = form.get("audio"), form.get("portrait")
                if not isinstance(audio, UploadFile):
                    raise ApiError(400, "bad_request", "the form needs an 'audio' file")
                data = await portrait.read() if isinstance(portrait, UploadFile) else None
                await state.offload(_save_upload, audio, folder / "audio")  # a server-made name, never theirs
            checked = await state.offload(resolve_portrait, state.sources, options, settings.max_image_pixels, data,
                                          extra.get("portrait_id"))
            waveform = await state.offload(load_uploaded_audio, folder / "audio", settings.max_audio_seconds)
            (folder / "audio").unlink()
            video = VideoRequest(checked, waveform, options, stream, settings.batch_size)
            job = Job("video", lambda job: run_video_job(job, video, state.pipeline, state.sources, state.metrics),
                      folder=folder, streamed=stream)
            job.frames_total = video.num_frames
            _submit(state, job)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if stream:
            return StreamingResponse(_tail(job, request, owner=True), media_type="video/mp4",
                                     headers={"X-Job-Id": job.id, "Cache-Control": "no-store"})
        return JSONResponse(_job_body(job), status_code=202)

    @app.get("/v1/videos/{job_id}")
    async def video_status(job_id: str, request: Request):
        state.authorize(request.headers)
        return _job_body(_video_job(state, job_id))

    @app.get("/v1/videos/{job_id}/video")
    async def video_file(job_id: str, request: Request):
        """The finished mp4; for a stream job still running, the fragmented MP4 so far and then as it grows."""
        state.authorize(request.headers)
        job = _video_job(state, job_id)
        if job.status == DONE and job.result is not None and Path(job.result).is_file():
            return FileResponse(job.result, media_type="video/mp4", filename=f"imtalker-{job.id}.mp4")
        if job.streamed and not job.finished:
            return StreamingResponse(_tail(job, request, owner=False), media_type="video/mp4",
                                     headers={"Cache-Control": "no-store"})
        detail = f" ({job.error})" if job.error else ""
        raise ApiError(409, "not_ready", f"the video is not available: the job is {job.status}{detail}")

    @app.delete("/v1/videos/{job_id}")
    async def delete_video(job_id: str, request: Request):
        """Cancel a queued or running job (its worker stops within a render batch) and delete its files."""
        state.authorize(request.headers)
        state.check_origin(request.headers)
        job = _video_job(state, job_id)
        was_active = not job.finished
        state.jobs.forget(job.id)
        return {"id": job.id, "status": "cancelled" if was_active else "deleted"}

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket):
        from .stream import serve_stream

        await serve_stream(websocket, state)


def _check_room(state: ServerState) -> None:
    """429 before reading the request when no worker or queue place is free (the request would be refused)."""
    if not state.jobs.has_room():
        raise busy(state)


def _submit(state: ServerState, job: Job) -> Job:
    try:
        return state.jobs.submit(job)
    except QueueFull:
        raise busy(state) from None


def _text_fields(form, files: tuple[str, ...]) -> dict[str, str]:
    """The form's text fields; a repeated field or a file where text belongs is refused."""
    fields = {}
    for name, value in form.multi_items():
        if name in files:
            continue
        if isinstance(value, UploadFile):
            raise ApiError(400, "bad_request", f"form field {name!r} must be text, not a file")
        if name in fields:
            raise ApiError(400, "bad_request", f"form field {name!r} is given twice")
        fields[name] = value
    return fields


def _save_upload(upload: UploadFile, path: Path) -> None:
    with open(path, "wb") as out:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, out, UPLOAD_COPY_BYTES)


def _video_job(state: ServerState, job_id: str) -> Job:
    job = state.jobs.get(job_id)
    if job is None or job.kind != "video":
        raise ApiError(404, "not_found", f"no video job {job_id!r} (finished jobs are kept for "
                                         f"{state.settings.job_ttl_seconds:g} s)")
    return job


def _job_body(job: Job) -> dict:
    body = job.describe()
    body.update(status_url=f"/v1/videos/{job.id}", video_url=f"/v1/videos/{job.id}/video")
    return body


async def _tail(job: Job, request: Request, owner: bool):
    """The bytes of a job's video file as they are written, until the job ends.

    The owner is the client whose POST made the job: when it goes away early the job is cancelled, so its worker
    is freed; other readers just stop reading.
    """
    path = job.folder / VIDEO_NAME
    handle = None
    try:
        while True:
            if handle is None and path.exists():
                handle = open(path, "rb")
            data = handle.read(1 << 16) if handle is not None else b""
            if data:
                yield data
                continue
            if job.finished:
                if handle is not None:
                    rest = handle.read()
                    if rest:
                        yield rest
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(TAIL_POLL_SECONDS)
    finally:
        if handle is not None:
            handle.close()
        if owner and not job.finished:
            job.cancel()
