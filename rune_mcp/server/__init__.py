"""`rune serve`: the MCP server through which Claude Code, Cursor and other agents use Rune.

The server must start fast (each editor window starts its own), never block an agent on a
long training (remembering only queues a job; one worker per library trains), and treat
every argument as untrusted: paths are checked by `rune_mcp.server.safety`, and every foreseeable
failure comes back as an `isError` result of one sentence, with no traceback and no internal
path. Heavy modules (torch, llama.cpp, Chroma) are imported only when a tool needs them.

stdout carries nothing but JSON-RPC: the SDK diverts file descriptor 1 to stderr while it
serves, and Rune logs to stderr and `RUNE_HOME/logs/rune.log`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlparse

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult, TextContent
from pydantic import BaseModel, Field, ValidationError

from rune_mcp import __version__
from rune_mcp.config import Settings
from rune_mcp.distill.queue import Job, JobQueue, start_worker_thread
from rune_mcp.errors import InputError, RuneError
from rune_mcp.server.safety import (
    check_identifier,
    check_size,
    check_text_arg,
    find_session_transcript,
    resolve_transcript,
)

log = logging.getLogger(__name__)

NAME = "rune"
MAX_TASK_CHARS = 4000
MAX_LIMIT = 500
INTERNAL_ERROR = "Rune hit an internal error in {tool}; the details are in Rune's log file."

INSTRUCTIONS = """\
Rune is a memory for coding agents that lives in LoRA weights: each finished session is \
distilled into a small adapter that a local model can load later.
- remember_session: call it when a session solved something worth keeping (a bug fixed after \
several attempts, a project-specific procedure). It queues the transcript and returns a job \
id at once; training runs in the background. Pass transcript_path, or session_id for a Claude \
Code / Codex / Cursor session, or text.
- recall_adapter: before starting a task that resembles earlier work, to see which remembered \
sessions match and what they taught.
- run_with_memory: to ask the local model, with the best-matching adapter loaded, how this \
project handled a similar problem. Its answers come from a small local model: check them.
- list_adapters, forget, memory_status: browse, delete (by adapter or by session) and check \
the queue, the library size and the model in use.
Resources: rune://status and rune://adapters/{adapter_id} (an adapter's manifest)."""


# --- results -----------------------------------------------------------------------------


class JobInfo(BaseModel):
    job_id: str
    state: Literal["queued", "running", "done", "failed"]
    adapter_id: str | None = None
    reused: bool | None = None
    lessons: int | None = None
    seconds: float | None = None
    error: str | None = None
    progress: str | None = None
    message: str


class AdapterHit(BaseModel):
    adapter_id: str
    similarity: float
    task: str
    lessons: str = Field(description="What the adapter learned, in short.")
    lesson_count: int | None = None
    project: str | None = None
    session_id: str | None = None
    created: str | None = None


class RecallResult(BaseModel):
    task: str
    adapters: list[AdapterHit]


class RunResult(BaseModel):
    text: str
    adapter_id: str | None
    similarity: float | None
    timings: dict[str, float]


class AdapterSummary(BaseModel):
    adapter_id: str
    task: str
    project: str | None = None
    session_id: str | None = None
    agent: str | None = None
    created: str | None = None
    method: str | None = None
    size_bytes: int | None = None


class AdapterList(BaseModel):
    adapters: list[AdapterSummary]
    count: int


class ForgetResult(BaseModel):
    removed: list[str]
    cancelled_jobs: list[str]
    message: str


class StatusResult(BaseModel):
    version: str
    adapters: int | None
    jobs: dict[str, int]
    running: list[dict[str, Any]]
    queued: list[dict[str, Any]]
    recent_failures: list[dict[str, Any]]
    worker_active: bool
    base_model: dict[str, Any] | None
    backend: str
    problems: list[str]


def _result(model: BaseModel, text: str) -> CallToolResult:
    """Structured content for programs, one readable paragraph for the agent."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=model.model_dump(mode="json"),
    )


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


# --- the services behind the tools ------------------------------------------------------


class Rune:
    """Library, queue and runtime for one server process, each opened on first use."""

    def __init__(
        self, settings: Settings, roots: Sequence[Path] = (), start_worker: bool = True
    ) -> None:
        self.settings = settings
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        self.start_worker = start_worker
        self._queue: JobQueue | None = None
        self._library: Any = None
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._base: dict[str, Any] | None = None
        self._base_lock = threading.Lock()
        self.run_lock = anyio.Lock()

    def base_model(self) -> dict[str, Any]:
        """The base model's description, read once: it hashes and parses a GGUF file."""
        with self._base_lock:  # concurrent first calls would each parse the whole file
            if self._base is None:
                from rune_mcp.basemodel import resolve_base

                info = resolve_base(self.settings)
                self._base = {"name": info.name, "architecture": info.architecture,
                              "fingerprint": info.fingerprint[:16], "embedded": info.embedded}
            return self._base

    def queue(self) -> JobQueue:
        with self._lock:
            if self._queue is None:
                self._queue = JobQueue(self.settings)
            return self._queue

    def library(self) -> Any:
        with self._lock:
            if self._library is None:
                from rune_mcp.library import Library

                self._library = Library.open(self.settings)
            return self._library

    def kick_worker(self) -> None:
        """Start a worker thread unless one is alive here (another process may hold the lock,
        in which case the thread exits at once and that process takes the job)."""
        if not self.start_worker:
            return
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = start_worker_thread(self.settings)


async def _client_roots(ctx: Context[Any, Any]) -> list[Path]:
    """The workspace folders the client announced (file:// roots), or none."""
    try:
        caps = ctx.client_capabilities
    except Exception:
        return []
    if caps is None or getattr(caps, "roots", None) is None:
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # roots are deprecated in newer protocol versions
            with anyio.fail_after(3):
                listed = await ctx.session.list_roots()
    except Exception:  # a client that advertises roots but does not answer
        log.debug("the client did not list its roots", exc_info=True)
        return []
    paths = []
    for root in listed.roots:
        uri = urlparse(str(root.uri))
        if uri.scheme == "file" and uri.path:
            paths.append(Path(unquote(uri.path)))
    return paths


def _job_info(job: Job, message: str | None = None) -> JobInfo:
    result = job.result or {}
    progress = None
    if job.state == "running" and job.progress_total:
        progress = f"{job.progress_step}/{job.progress_total} {job.progress_message or ''}".strip()
    if message is None:
        message = {
            "queued": f"Job {job.id} is queued; training runs in the background "
            "(memory_status shows its progress).",
            "running": f"Job {job.id} is running ({progress or 'starting'}).",
            "done": f"Job {job.id} is done: adapter {str(job.adapter_id)[:12]}"
            + (" (already remembered)." if job.reused else "."),
            "failed": f"Job {job.id} failed: {job.error}",
        }[job.state]
    return JobInfo(
        job_id=job.id,
        state=job.state,
        adapter_id=job.adapter_id,
        reused=job.reused,
        lessons=result.get("lessons"),
        seconds=result.get("seconds"),
        error=job.error,
        progress=progress,
        message=message,
    )


def _hit(hit: Any) -> AdapterHit:
    record = hit.record
    manifest = record.manifest
    embed_text = str(manifest.get("embed_text") or "")
    task = record.task
    lessons = embed_text[len(task):].strip() if embed_text.startswith(task) else embed_text
    return AdapterHit(
        adapter_id=record.adapter_id,
        similarity=round(float(hit.similarity), 4),
        task=task[:500],
        lessons=lessons[:400],
        lesson_count=manifest.get("lesson_count"),
        project=record.project,
        session_id=record.session_id,
        created=record.created_at or None,
    )


def _summary(record: Any) -> AdapterSummary:
    row = record.summary()
    return AdapterSummary(
        adapter_id=row["adapter_id"],
        task=str(row["task"])[:500],
        project=row.get("project"),
        session_id=row.get("session_id"),
        agent=row.get("agent"),
        created=row.get("created_at") or None,
        method=row.get("method"),
        size_bytes=row.get("size_bytes"),
    )


# --- the server --------------------------------------------------------------------------


class RuneServer(MCPServer[Any]):
    """MCPServer whose tool failures are always one sentence, never a traceback."""

    def __init__(self, rune: Rune, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rune = rune

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        log.debug("tools/call %s with %s", name[:60], sorted(str(k)[:40] for k in arguments))
        refusal = self._precheck(name, arguments)
        if refusal is not None:
            log.info("refused %s: %s", name, refusal)
            return _error(refusal)
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, RuneError):
                log.info("%s: %s", name, cause)
                return _error(str(cause))
            log.error("%s failed", name, exc_info=cause or exc)
            return _error(INTERNAL_ERROR.format(tool=name))
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                return _error(_validation_sentence(name, cause))
            if isinstance(cause, ToolError | RuneError):
                return _error(str(cause))
            return _error(str(exc))

    def _precheck(self, name: str, arguments: dict[str, Any]) -> str | None:
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            return f"there is no tool named {name[:60]!r}; call tools/list to see Rune's tools."
        try:
            size = len(json.dumps(arguments, default=str, ensure_ascii=False).encode("utf-8"))
        except (TypeError, ValueError):
            return f"{name}: the arguments are not valid JSON values."
        limit = self.rune.settings.max_request_bytes
        if size > limit:
            return f"{name}: the arguments are larger than the {limit} bytes Rune accepts."
        allowed = set(tool.parameters.get("properties", {}))
        extra = sorted(k for k in arguments if k not in allowed)
        if extra:
            return (
                f"{name}: unknown argument {str(extra[0])[:60]!r}; it takes "
                f"{', '.join(sorted(allowed)) or 'no arguments'}."
            )
        return None


def _validation_sentence(tool: str, exc: ValidationError) -> str:
    """`k: Input should be a valid integer` -> one sentence naming the argument, not its value."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "arguments"
    if err["type"] == "missing":
        return f"{tool}: argument '{field}' is required."
    message = str(err["msg"]).rstrip(".")
    message = message[0].lower() + message[1:] if message else "is invalid"
    return f"{tool}: argument '{field}' is invalid ({message}); see the tool's input schema."


def build_server(
    settings: Settings, roots: Sequence[Path] = (), start_worker: bool = True
) -> RuneServer:
    """The MCP server with Rune's six tools and two resources."""
    rune = Rune(settings, roots, start_worker)
    server = RuneServer(
        rune,
        name=NAME,
        title="Rune",
        description="Memory for coding agents, stored in LoRA weights.",
        instructions=INSTRUCTIONS,
        version=__version__,
        # The SDK puts a rich handler on the root logger at this level; Rune's own logger
        # (stderr and the log file) carries Rune's debug output, and rendering every
        # library's debug record through rich made 1,000 calls take minutes.
        log_level="WARNING",
    )
    _add_remember(server, rune)
    _add_recall(server, rune)
    _add_run(server, rune)
    _add_list(server, rune)
    _add_forget(server, rune)
    _add_status(server, rune)
    _add_resources(server, rune)
    for tool in server._tool_manager.list_tools():
        # The SDK decodes any string argument that looks like JSON when the parameter is not
        # plain `str` (so `str | None` too): a transcript passed as `text` would arrive as a
        # dict. None of Rune's parameters takes a list or an object, so turn that off.
        object.__setattr__(tool.fn_metadata, "pre_parse_json", _keep_arguments)
    return server


def _keep_arguments(data: dict[str, Any]) -> dict[str, Any]:
    return data


async def _in_thread(fn: Callable[[], Any]) -> Any:
    """Blocking library work off the event loop, so one slow call never stalls the others."""
    return await anyio.to_thread.run_sync(fn)


def _add_remember(server: RuneServer, rune: Rune) -> None:
    @server.tool(name="remember_session")
    async def remember_session(
        ctx: Context[Any, Any],
        transcript_path: Annotated[
            str | None, Field(description="Path of the transcript file to remember.")
        ] = None,
        session_id: Annotated[
            str | None,
            Field(description="A Claude Code, Codex or Cursor session id, looked up in the "
                  "agents' transcript folders."),
        ] = None,
        agent: Annotated[
            str, Field(description="Transcript format: auto, or one of Rune's parsers.")
        ] = "auto",
        text: Annotated[
            str | None, Field(description="A raw transcript (JSONL, Markdown, generic JSON).")
        ] = None,
        wait: Annotated[
            bool, Field(description="Wait for training to finish and return the adapter.")
        ] = False,
    ) -> Annotated[CallToolResult, JobInfo]:
        """Queue a finished session to be distilled into a LoRA adapter; returns a job id at
        once (or, with wait=true, the adapter when training is done)."""
        given = [v is not None for v in (transcript_path, session_id, text)]
        if sum(given) != 1:
            raise InputError("give exactly one of transcript_path, session_id or text.")
        fmt = _check_format(agent)
        settings = rune.settings
        if transcript_path is not None:
            workspace = [*rune.roots, *await _client_roots(ctx)]
            raw = transcript_path
            path = await _in_thread(lambda: resolve_transcript(raw, settings, workspace))
            job = await _in_thread(
                lambda: rune.queue().enqueue(path=path, fmt=fmt, source="mcp")
            )
        elif session_id is not None:
            path = await _in_thread(lambda: find_session_transcript(session_id, settings))
            job = await _in_thread(
                lambda: rune.queue().enqueue(
                    path=path, fmt=fmt, source="mcp", session_id=session_id
                )
            )
        else:
            assert text is not None
            check_size(text, settings, "text")
            if not text.strip():
                raise InputError("text is empty; pass the transcript's content.")
            job = await _in_thread(lambda: rune.queue().enqueue(text=text, fmt=fmt, source="mcp"))
        if not job.terminal:
            rune.kick_worker()
        if wait and not job.terminal:
            job = await _wait_for(rune, job, ctx)
        info = _job_info(job)
        return _result(info, info.message)


async def _wait_for(rune: Rune, job: Job, ctx: Context[Any, Any]) -> Job:
    """Poll the queue until the job ends, reporting progress to the client."""
    deadline = time.monotonic() + rune.settings.train_time_budget_s + 600
    queue = rune.queue()
    last: tuple[Any, ...] = ()
    job_id = job.id
    while not job.terminal and time.monotonic() < deadline:
        state = (job.state, job.progress_step, job.progress_total, job.progress_message)
        if state != last:
            last = state
            total = float(job.progress_total) if job.progress_total else None
            await ctx.report_progress(
                float(job.progress_step or 0), total, job.progress_message or job.state
            )
        await anyio.sleep(0.5)
        job = await _in_thread(lambda: queue.get(job_id))
        if job.state == "queued" and job.error:
            rune.kick_worker()  # a retry is waiting: make sure someone will run it
    return job


def _check_format(agent: str) -> str:
    from rune_mcp.capture import FORMATS

    if agent != "auto" and agent not in FORMATS:
        raise InputError(
            f"agent must be auto or one of {', '.join(sorted(FORMATS))}; got an unknown format."
        )
    return agent


def _add_recall(server: RuneServer, rune: Rune) -> None:
    @server.tool(name="recall_adapter")
    async def recall_adapter(
        task: Annotated[str, Field(description="The task at hand, in a sentence or two.")],
        k: Annotated[int, Field(ge=1, le=20, description="How many adapters to return.")] = 3,
        project: Annotated[
            str | None, Field(description="Only adapters learned in this project.")
        ] = None,
    ) -> Annotated[CallToolResult, RecallResult]:
        """Find the remembered sessions most similar to a task: adapter ids, similarity, the
        lessons each carries, project, session and date."""
        check_text_arg(task, rune.settings, "task", MAX_TASK_CHARS)
        if project is not None:
            check_text_arg(project, rune.settings, "project", 1000)
        hits = await _in_thread(lambda: rune.library().recall(task, k=k, project=project))
        result = RecallResult(task=task[:500], adapters=[_hit(h) for h in hits])
        if not result.adapters:
            text = "No remembered session is similar enough to this task."
        else:
            lines = [
                f"{i}. {a.adapter_id[:12]} (similarity {a.similarity:.2f}): {a.task[:160]}"
                + (f" — {a.lessons[:200]}" if a.lessons else "")
                for i, a in enumerate(result.adapters, 1)
            ]
            text = "\n".join(lines)
        return _result(result, text)


def _add_run(server: RuneServer, rune: Rune) -> None:
    @server.tool(name="run_with_memory")
    async def run_with_memory(
        prompt: Annotated[str, Field(description="What to ask the local model.")],
        task: Annotated[
            str | None, Field(description="Task used to pick the adapter (default: prompt).")
        ] = None,
        adapter: Annotated[
            str, Field(description="auto (recall the best match), none, or an adapter id.")
        ] = "auto",
        max_tokens: Annotated[int, Field(ge=1, le=4096, description="Answer length cap.")] = 512,
    ) -> Annotated[CallToolResult, RunResult]:
        """Answer with the local model, with the most relevant remembered adapter loaded;
        says which adapter (or none) was used and how long each stage took."""
        settings = rune.settings
        check_text_arg(prompt, settings, "prompt")
        if task is not None:
            check_text_arg(task, settings, "task", MAX_TASK_CHARS)
        if adapter not in ("auto", "none"):
            check_identifier(adapter, "adapter")

        def run() -> Any:
            from rune_mcp.runtime.run import run_with_memory as run_fn

            return run_fn(settings, prompt, task=task, adapter=adapter, max_tokens=max_tokens)

        async with rune.run_lock:  # one generation at a time per process: the model is shared
            res = await _in_thread(run)
        result = RunResult(
            text=res.text,
            adapter_id=res.adapter_id,
            similarity=None if res.similarity is None else round(float(res.similarity), 4),
            timings={str(k): round(float(v), 4) for k, v in dict(res.timings).items()},
        )
        used = (
            f"[adapter {result.adapter_id[:12]}]" if result.adapter_id else "[no adapter]"
        )
        return _result(result, f"{used}\n{result.text}")


def _add_list(server: RuneServer, rune: Rune) -> None:
    @server.tool(name="list_adapters")
    async def list_adapters(
        project: Annotated[
            str | None, Field(description="Only adapters learned in this project.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Most adapters.")] = 50,
    ) -> Annotated[CallToolResult, AdapterList]:
        """The adapters in the library, newest first."""
        if project is not None:
            check_text_arg(project, rune.settings, "project", 1000)
        records = await _in_thread(lambda: rune.library().list(project=project, limit=limit))
        result = AdapterList(adapters=[_summary(r) for r in records], count=len(records))
        if not result.adapters:
            text = "The library has no adapters yet."
        else:
            text = "\n".join(
                f"{a.adapter_id[:12]}  {a.created or ''}  {a.project or '-'}  {a.task[:100]}"
                for a in result.adapters
            )
        return _result(result, text)


def _add_forget(server: RuneServer, rune: Rune) -> None:
    @server.tool(name="forget")
    async def forget(
        adapter_id: Annotated[str | None, Field(description="The adapter to delete.")] = None,
        session_id: Annotated[
            str | None, Field(description="Delete every adapter learned from this session.")
        ] = None,
    ) -> Annotated[CallToolResult, ForgetResult]:
        """Delete one adapter, or every adapter learned from a session (and its queued jobs).
        The base model is untouched; the other adapters are unaffected."""
        if (adapter_id is None) == (session_id is None):
            raise InputError("give exactly one of adapter_id or session_id.")
        if adapter_id is not None:
            check_identifier(adapter_id, "adapter_id")
            aid = adapter_id

            def remove_one() -> list[str]:
                lib = rune.library()
                full = lib.get(aid).adapter_id
                lib.remove(full)
                return [full]

            removed = await _in_thread(remove_one)
            cancelled: list[str] = []
        else:
            assert session_id is not None
            sid = check_identifier(session_id, "session_id")
            cancelled = await _in_thread(lambda: rune.queue().cancel_session(sid))
            removed = await _in_thread(lambda: list(rune.library().forget_session(sid)))
        if removed:
            message = f"Removed {len(removed)} adapter(s): {', '.join(r[:12] for r in removed)}."
        else:
            message = "No adapter matched; nothing was removed."
        if cancelled:
            message += f" Cancelled {len(cancelled)} queued job(s)."
        result = ForgetResult(removed=removed, cancelled_jobs=cancelled, message=message)
        return _result(result, message)


def _status(rune: Rune) -> StatusResult:
    """Library size, jobs, base model and backend; a part that fails is reported, not raised."""
    settings = rune.settings
    problems: list[str] = []
    queue = rune.queue().status()
    adapters: int | None = None
    try:
        adapters = len(rune.library().list())
    except RuneError as exc:
        problems.append(str(exc))
    base: dict[str, Any] | None = None
    try:
        base = rune.base_model()
    except RuneError as exc:
        problems.append(str(exc))
    return StatusResult(
        version=__version__,
        adapters=adapters,
        jobs=queue["counts"],
        running=queue["running"],
        queued=queue["queued"],
        recent_failures=queue["recent_failures"],
        worker_active=queue["worker"]["active"],
        base_model=base,
        backend=settings.backend,
        problems=problems,
    )


def _status_text(status: StatusResult) -> str:
    jobs = status.jobs
    base = status.base_model["name"] if status.base_model else "unavailable"
    lines = [
        f"Rune {status.version}: {status.adapters if status.adapters is not None else '?'} "
        f"adapter(s); jobs queued {jobs['queued']}, running {jobs['running']}, "
        f"done {jobs['done']}, failed {jobs['failed']}; base model {base}; "
        f"backend {status.backend}.",
    ]
    for job in status.running:
        lines.append(f"running {job['id']}: {job.get('message') or ''}")
    lines += [f"problem: {p}" for p in status.problems]
    return "\n".join(lines)


def _add_status(server: RuneServer, rune: Rune) -> None:
    @server.tool(name="memory_status")
    async def memory_status() -> Annotated[CallToolResult, StatusResult]:
        """Library size, queued and running jobs with progress, base model and backend."""
        status = await _in_thread(lambda: _status(rune))
        return _result(status, _status_text(status))


def _add_resources(server: RuneServer, rune: Rune) -> None:
    @server.resource("rune://status", name="status", mime_type="application/json")
    async def status_resource() -> str:
        """Rune's status: library size, jobs, base model, backend."""
        status: StatusResult = await _in_thread(lambda: _status(rune))
        return status.model_dump_json(indent=2)

    @server.resource(
        "rune://adapters/{adapter_id}", name="adapter", mime_type="application/json"
    )
    async def adapter_resource(adapter_id: str) -> str:
        """One adapter's manifest: task, source session, training settings, file digests."""
        try:
            check_identifier(adapter_id, "adapter_id")
            record = await _in_thread(lambda: rune.library().get(adapter_id))
        except RuneError as exc:
            raise ResourceError(str(exc)) from exc
        return json.dumps(record.manifest, indent=2, sort_keys=True, default=str)


# --- transports --------------------------------------------------------------------------


class BearerTokenMiddleware:
    """Refuse HTTP requests without `Authorization: Bearer <token>` (constant-time compare)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                from starlette.responses import JSONResponse

                response = JSONResponse(
                    {"error": "a valid bearer token is required"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="rune"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(server: RuneServer, settings: Settings, host: str) -> Any:
    """The streamable HTTP app: Host/Origin checks on (the SDK's DNS-rebinding protection),
    the request size limit, and the bearer token when one is set."""
    from mcp.server.transport_security import TransportSecuritySettings

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:*" for h in _local_names(host)] + _local_names(host),
        allowed_origins=[f"http://{h}:*" for h in _local_names(host)],
    )
    app: Any = server.streamable_http_app(
        max_request_body_size=settings.max_request_bytes,
        transport_security=security,
        host=host,
    )
    if settings.auth_token:
        app = BearerTokenMiddleware(app, settings.auth_token)
    return app


def _local_names(host: str) -> list[str]:
    names = ["127.0.0.1", "localhost", "[::1]"]
    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        names.append(host)
    return names


def serve(
    settings: Settings,
    http: bool = False,
    host: str | None = None,
    port: int | None = None,
    roots: Sequence[Path] = (),
) -> int:
    """Run the server until the client disconnects (stdio) or the process is stopped (HTTP)."""
    server = build_server(settings, roots)
    if server.rune.queue().counts()["queued"]:
        server.rune.kick_worker()  # jobs left by a closed editor or a hook: pick them up
    if not http:
        log.info("rune serve: stdio")
        server.run("stdio")
        return 0
    import uvicorn

    host = host or settings.http_host
    port = port or settings.http_port
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.auth_token:
        raise InputError(
            f"serving on {host} exposes Rune beyond this machine; set RUNE_AUTH_TOKEN first."
        )
    app = http_app(server, settings, host)
    log.info("rune serve: http://%s:%d/mcp", host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    uvicorn.Server(config).run()
    return 0
