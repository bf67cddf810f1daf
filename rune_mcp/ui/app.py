"""`rune ui`: the routes of the local dashboard and the server that runs them.

Every handler does its library, queue or model work in a thread (the event loop keeps
serving the live job stream meanwhile) and answers with a whole server-rendered page; a
failure is one sentence on the page, whatever it was.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rune_mcp.capture.control import capture_state
from rune_mcp.config import Settings
from rune_mcp.errors import AdapterNotFoundError, InputError, RuneError, UsageError
from rune_mcp.library import Library
from rune_mcp.ui import bench, jobs, memory, playground, views
from rune_mcp.ui.guard import Guard, check_post
from rune_mcp.ui.html import el
from rune_mcp.ui.layout import error_page, notice, page, plural

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DEFAULT_PORT = 8787
Handler = Callable[["Dashboard", Request], Awaitable[Response]]


@dataclass
class UiOptions:
    """How the dashboard runs: its port and token, where benchmark results are, and (for
    tests) how long a job stream lasts and which backend answers the playground."""

    port: int = DEFAULT_PORT
    token: str | None = None
    bench_paths: list[Path] = field(default_factory=list)
    stream_seconds: float = 300.0
    poll_seconds: float = 1.0
    backend: Any = None


class Dashboard:
    """The state one dashboard process keeps: its library handle, verdicts, form token."""

    def __init__(self, settings: Settings, options: UiOptions) -> None:
        self.settings = settings
        self.options = options
        self.csrf = secrets.token_urlsafe(32)  # embedded in every form this process serves
        self.verifier = memory.Verifier()
        self._library: Library | None = None
        self._lock = threading.Lock()

    def library(self) -> Library:
        with self._lock:
            if self._library is None:
                self._library = Library.open(self.settings)
            return self._library


def html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})


def status_of(exc: RuneError) -> int:
    if isinstance(exc, AdapterNotFoundError):
        return 404
    return 400 if isinstance(exc, UsageError | InputError) else 500


def handler(fn: Handler) -> Callable[[Dashboard, Request], Awaitable[Response]]:
    """Turn any failure into its one sentence on a page; a bug is logged with its traceback
    for whoever reads the log, and the page names it in one line."""

    @functools.wraps(fn)
    async def wrapped(dash: Dashboard, request: Request) -> Response:
        try:
            return await fn(dash, request)
        except RuneError as exc:
            return html(error_page(str(exc)), status_of(exc))
        except Exception as exc:
            log.exception("the dashboard failed on %s", request.url.path)
            return html(error_page(f"Internal error ({type(exc).__name__}: {exc}); the "
                                   "server's log has the details."), 500)

    return wrapped


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await anyio.to_thread.run_sync(fn)


@handler
async def home(dash: Dashboard, request: Request) -> Response:
    views_ = await in_thread(lambda: memory.adapter_views(dash.library(), dash.verifier))
    groups = memory.project_groups(views_)
    capture = views.capture_notice(capture_state(dash.settings))
    return html(views.library_page(groups, dash.csrf, len(views_), capture))


@handler
async def adapter(dash: Dashboard, request: Request) -> Response:
    adapter_id = request.path_params["adapter_id"]
    view = await in_thread(lambda: memory.find_view(dash.library(), dash.verifier, adapter_id))
    return html(views.adapter_page(view, dash.csrf))


@handler
async def verify(dash: Dashboard, request: Request) -> Response:
    lib = dash.library()
    problems = await in_thread(lib.verify)
    return html(views.verify_page(problems, len(lib.store.ids())))


@handler
async def jobs_page(dash: Dashboard, request: Request) -> Response:
    status, recent = await in_thread(lambda: jobs.snapshot(dash.settings))
    return html(jobs.jobs_page(status, recent))


@handler
async def job_events(dash: Dashboard, request: Request) -> Response:
    events = jobs.stream(dash.settings, request.is_disconnected,
                         poll=dash.options.poll_seconds, duration=dash.options.stream_seconds)
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _threshold(dash: Dashboard) -> float:
    return dash.settings.recall_min_similarity


@handler
async def recall_form(dash: Dashboard, request: Request) -> Response:
    return html(playground.playground_page(dash.csrf, threshold=_threshold(dash)))


@handler
async def recall_run(dash: Dashboard, request: Request) -> Response:
    form = await request.form()
    task = str(form.get("task") or "").strip()[: playground.MAX_TEXT]
    question = str(form.get("question") or "").strip()[: playground.MAX_TEXT]
    try:
        tokens = int(str(form.get("max_tokens") or playground.DEFAULT_TOKENS))
    except ValueError:
        tokens = 0

    def answer(status: int = 200, error: str = "",
               comparison: playground.Comparison | None = None) -> Response:
        return html(playground.playground_page(
            dash.csrf, comparison=comparison, error=error, task=task, question=question,
            max_tokens=tokens or playground.DEFAULT_TOKENS, threshold=_threshold(dash)), status)

    refused = check_post(request, form.get("csrf"), dash.csrf)
    if refused:
        return answer(403, refused)
    if not 1 <= tokens <= playground.MAX_TOKENS:
        return answer(400, f"The answer length must be between 1 and {playground.MAX_TOKENS} "
                           "tokens.")
    if not question:
        return answer(400, "Write a question for the model to answer.")
    try:
        result = await in_thread(lambda: playground.compare(
            dash.settings, task, question, tokens, dash.options.backend))
    except RuneError as exc:
        return answer(status_of(exc), str(exc))
    return answer(comparison=result)


@handler
async def bench_page(dash: Dashboard, request: Request) -> Response:
    files = await in_thread(lambda: bench.find_files(dash.options.bench_paths))
    loaded = await in_thread(lambda: [bench.load(p) for p in files])
    if not loaded:
        where = ", ".join(str(p) for p in dash.options.bench_paths) or "no folder"
        body: list[object] = [notice(f"No benchmark results found (looked in {where}); run "
                                     "`rune bench memory --json OUT` or `rune bench perf`, then "
                                     "`rune ui --bench-json OUT`.")]
    else:
        body = [el("p", f"{plural(len(loaded), 'result file')}, drawn from their JSON.",
                   class_="lead"),
                *[bench.render(b) for b in loaded]]
    return html(page("Benchmarks", "bench", *body))


async def _forget_form(dash: Dashboard, request: Request) -> tuple[dict[str, str], str | None]:
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in ("adapter_id", "session_id", "confirm")}
    return values, check_post(request, form.get("csrf"), dash.csrf)


@handler
async def forget_ask(dash: Dashboard, request: Request) -> Response:
    values, refused = await _forget_form(dash, request)
    if refused:
        return html(error_page(refused, "Refused"), 403)
    plan = await in_thread(lambda: memory.plan_forget(
        dash.settings, dash.library(), values["adapter_id"], values["session_id"]))
    return html(views.confirm_page(plan, dash.csrf))


@handler
async def forget_do(dash: Dashboard, request: Request) -> Response:
    values, refused = await _forget_form(dash, request)
    if refused:
        return html(error_page(refused, "Refused"), 403)
    if values["confirm"] != "yes":
        return html(error_page("Nothing was forgotten: forgetting needs its confirmation step; "
                               "use a Forget button and confirm on the page it opens.",
                               "Not confirmed"), 400)
    lib = dash.library()

    def run() -> tuple[list[str], list[str]]:
        plan = memory.plan_forget(dash.settings, lib, values["adapter_id"], values["session_id"])
        return memory.forget(dash.settings, lib, plan)

    removed, cancelled = await in_thread(run)
    return html(views.forgotten_page(removed, cancelled))


async def not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    sentence = ("There is no page at this address; the memory, jobs, playground and benchmarks "
                "are linked at the top." if status == 404 else
                f"This address does not accept that request (HTTP {status}).")
    return html(error_page(sentence, "Not found" if status == 404 else "Not allowed"), status)


def create_app(settings: Settings, options: UiOptions | None = None) -> Any:
    """The dashboard as an ASGI app, guarded (Host/Origin, token, body size)."""
    from mcp.server.transport_security import RequestBodyLimitMiddleware

    dash = Dashboard(settings, options or UiOptions())

    def bind(fn: Callable[[Dashboard, Request], Awaitable[Response]]) -> Any:
        async def endpoint(request: Request) -> Response:
            return await fn(dash, request)

        return endpoint

    routes = [
        Route("/", bind(home)),
        Route("/adapters/{adapter_id}", bind(adapter)),
        Route("/verify", bind(verify)),
        Route("/jobs", bind(jobs_page)),
        Route("/jobs/events", bind(job_events)),
        Route("/recall", bind(recall_form), methods=["GET"]),
        Route("/recall", bind(recall_run), methods=["POST"]),
        Route("/bench", bind(bench_page)),
        Route("/forget", bind(forget_ask), methods=["POST"]),
        Route("/forget/confirm", bind(forget_do), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.dashboard = dash
    guarded = Guard(app, options.token if options else None)
    return RequestBodyLimitMiddleware(guarded, settings.max_request_bytes)


def serve_ui(settings: Settings, options: UiOptions) -> None:
    """Serve the dashboard on 127.0.0.1 until the process is stopped."""
    import uvicorn

    app = create_app(settings, options)
    config = uvicorn.Config(app, host="127.0.0.1", port=options.port, log_level="warning",
                            lifespan="off")
    uvicorn.Server(config).run()
