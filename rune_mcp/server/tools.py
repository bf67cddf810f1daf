"""Rune's six MCP tools: their arguments, checks, and the one-sentence answers to bad calls.

Every argument is untrusted: paths go through `rune_mcp.server.safety`, text is size-checked,
and blocking library work runs off the event loop (`in_thread`), so one slow call never stalls
the others. A tool only queues training; the worker trains in the background.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlparse

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult
from pydantic import Field, ValidationError

from rune_mcp.distill.queue import Job
from rune_mcp.errors import InputError
from rune_mcp.server.models import (
    AdapterList,
    DamagedAdapter,
    ForgetResult,
    JobInfo,
    RecallResult,
    RunResult,
    ScaledAdapter,
    StatusResult,
    adapter_hit,
    adapter_summary,
    composition_info,
    damaged_adapter,
    job_info,
    tool_result,
)
from rune_mcp.server.safety import (
    check_identifier,
    check_size,
    check_text_arg,
    open_session_transcript,
    open_transcript,
)
from rune_mcp.server.service import Rune, in_thread, status_text

log = logging.getLogger(__name__)

MAX_TASK_CHARS = 4000
MAX_LIMIT = 500
MAX_COMPOSITION_CHARS = 4000
_COMPOSE_HELP = ("project (the project's stored merge, or all its adapters at equal scales), "
                 "or adapter ids with scales: 'id1:0.5,id2:0.5' or a JSON list")


def add_tools(server: MCPServer[Any], rune: Rune) -> None:
    """Register the six tools, in the order tools/list shows them."""
    _add_remember(server, rune)
    _add_recall(server, rune)
    _add_run(server, rune)
    _add_list(server, rune)
    _add_forget(server, rune)
    _add_status(server, rune)
    for tool in server._tool_manager.list_tools():
        # The SDK decodes any string argument that looks like JSON when the parameter is not
        # plain `str` (so `str | None` too): a transcript passed as `text` would arrive as a
        # dict. None of Rune's parameters takes a list or an object, so turn that off.
        object.__setattr__(tool.fn_metadata, "pre_parse_json", _keep_arguments)


def _keep_arguments(data: dict[str, Any]) -> dict[str, Any]:
    return data


def validation_sentence(tool: str, exc: ValidationError) -> str:
    """`k: Input should be a valid integer` -> one sentence naming the argument, not its value."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "arguments"
    if err["type"] == "missing":
        return f"{tool}: argument '{field}' is required."
    message = str(err["msg"]).rstrip(".")
    message = message[0].lower() + message[1:] if message else "is invalid"
    return f"{tool}: argument '{field}' is invalid ({message}); see the tool's input schema."


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


def _add_remember(server: MCPServer[Any], rune: Rune) -> None:
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
            # Read once here and queued parsed: the worker never opens the path again.
            file = await in_thread(lambda: open_transcript(raw, settings, workspace))
            job = await in_thread(
                lambda: rune.queue().enqueue(path=file, fmt=fmt, source="mcp")
            )
        elif session_id is not None:
            found = await in_thread(lambda: open_session_transcript(session_id, settings))
            job = await in_thread(
                lambda: rune.queue().enqueue(
                    path=found, fmt=fmt, source="mcp", session_id=session_id
                )
            )
        else:
            assert text is not None
            check_size(text, settings, "text")
            if not text.strip():
                raise InputError("text is empty; pass the transcript's content.")
            job = await in_thread(lambda: rune.queue().enqueue(text=text, fmt=fmt, source="mcp"))
        if not job.terminal:
            rune.kick_worker()
        if wait and not job.terminal:
            job = await _wait_for(rune, job, ctx)
        info = job_info(job)
        return tool_result(info, info.message)


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
        job = await in_thread(lambda: queue.get(job_id))
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


def _add_recall(server: MCPServer[Any], rune: Rune) -> None:
    @server.tool(name="recall_adapter")
    async def recall_adapter(
        task: Annotated[str, Field(description="The task at hand, in a sentence or two.")],
        k: Annotated[int, Field(ge=1, le=20, description="How many adapters to return.")] = 3,
        project: Annotated[
            str | None, Field(description="Only adapters learned in this project.")
        ] = None,
        compose: Annotated[
            str | None, Field(description=f"Also resolve a composition: {_COMPOSE_HELP}.")
        ] = None,
    ) -> Annotated[CallToolResult, RecallResult]:
        """Find the remembered sessions most similar to a task: adapter ids, similarity, the
        lessons each carries, project, session and date; with compose, also the adapters a
        composition applies and their scales."""
        check_text_arg(task, rune.settings, "task", MAX_TASK_CHARS)
        if project is not None:
            check_text_arg(project, rune.settings, "project", 1000)
        if compose is not None:
            _check_composition(compose, rune, "compose")
        found = await in_thread(
            lambda: rune.library().recall_checked(task, k=k, project=project)
        )
        composition = None
        if compose is not None:
            spec = compose
            composition = await in_thread(lambda: _compose(rune, spec, task, project))
        result = RecallResult(task=task[:500], adapters=[adapter_hit(h) for h in found.hits],
                              skipped=[damaged_adapter(d) for d in found.skipped],
                              composition=composition)
        if not result.adapters:
            lines = ["No remembered session is similar enough to this task."]
        else:
            lines = [
                f"{i}. {a.adapter_id[:12]} (similarity {a.similarity:.2f}"
                + ("" if a.text_verified else ", unverified text") + f"): {a.task[:160]}"
                + (f" — {a.lessons[:200]}" if a.lessons else "")
                + (f" [first: {a.reason}]" if a.reason else "")
                for i, a in enumerate(result.adapters, 1)
            ]
        return tool_result(result, "\n".join(lines + _skipped_lines(result.skipped)
                                               + _composition_lines(result)))


def _check_composition(value: str, rune: Rune, what: str) -> None:
    from rune_mcp.runtime.compose import PROJECT, is_composition, parse_parts

    check_text_arg(value, rune.settings, what, MAX_COMPOSITION_CHARS)
    if not is_composition(value):
        check_identifier(value, what)  # one adapter id: a composition of one
    elif value.strip() != PROJECT:
        parse_parts(value)  # a malformed list is refused before anything is loaded


def _compose(rune: Rune, value: str, task: str, project: str | None) -> Any:
    from rune_mcp.runtime.compose import compose, is_composition

    spec = value if is_composition(value) else f"{value}:1"
    lib = rune.library()
    return composition_info(compose(lib, spec, lib.base_fingerprint(), task, project))


def _composition_lines(result: RecallResult) -> list[str]:
    found = result.composition
    if found is None:
        return []
    parts = ", ".join(f"{a.adapter_id[:12]} x{a.scale:.3g}" for a in found.adapters)
    return [f"Composition ({found.kind}): {parts}. Use adapter={found.adapter!r} in "
            "run_with_memory."]


def _skipped_lines(skipped: list[DamagedAdapter]) -> list[str]:
    return [f"Skipped: {d.problem}" for d in skipped]


def _add_run(server: MCPServer[Any], rune: Rune) -> None:
    @server.tool(name="run_with_memory")
    async def run_with_memory(
        prompt: Annotated[str, Field(description="What to ask the local model.")],
        task: Annotated[
            str | None, Field(description="Task used to pick the adapter (default: prompt).")
        ] = None,
        adapter: Annotated[
            str, Field(description="auto (recall the best match), none, an adapter id, or a "
                       f"composition: {_COMPOSE_HELP}.")
        ] = "auto",
        max_tokens: Annotated[int, Field(ge=1, le=4096, description="Answer length cap.")] = 512,
        project: Annotated[
            str | None, Field(description="The project for adapter=project (default: the "
                              "project of the adapter recalled for the task).")
        ] = None,
    ) -> Annotated[CallToolResult, RunResult]:
        """Answer with the local model, with the most relevant remembered adapter loaded (or
        the composition asked for); says which adapters (or none) were used and how long each
        stage took."""
        settings = rune.settings
        check_text_arg(prompt, settings, "prompt")
        if task is not None:
            check_text_arg(task, settings, "task", MAX_TASK_CHARS)
        if project is not None:
            check_text_arg(project, settings, "project", 1000)
        if adapter not in ("auto", "none"):
            _check_composition(adapter, rune, "adapter")

        def run() -> Any:
            from rune_mcp.runtime.run import run_with_memory as run_fn

            return run_fn(settings, prompt, task=task, adapter=adapter, max_tokens=max_tokens,
                          project=project)

        async with rune.run_lock:  # one generation at a time per process: the model is shared
            res = await in_thread(run)
        result = RunResult(
            text=res.text,
            adapter_id=res.adapter_id,
            similarity=None if res.similarity is None else round(float(res.similarity), 4),
            timings={str(k): round(float(v), 4) for k, v in dict(res.timings).items()},
            skipped=[damaged_adapter(d) for d in res.skipped],
            adapters=[ScaledAdapter(adapter_id=i, scale=s) for i, s in res.adapters],
        )
        used = (
            f"[adapter {result.adapter_id[:12]}]" if result.adapter_id else "[no adapter]"
        )
        if result.adapters and not result.adapter_id:
            used = "[adapters " + ", ".join(f"{a.adapter_id[:12]} x{a.scale:.3g}"
                                            for a in result.adapters) + "]"
        return tool_result(result, "\n".join([used, *_skipped_lines(result.skipped),
                                               result.text]))


def _add_list(server: MCPServer[Any], rune: Rune) -> None:
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
        found = await in_thread(lambda: rune.library().inventory(project=project, limit=limit))
        result = AdapterList(adapters=[adapter_summary(r) for r in found.records],
                             count=len(found.records),
                             damaged=[damaged_adapter(d) for d in found.damaged])
        if result.adapters:
            lines = [
                f"{a.adapter_id[:12]}  {a.created or ''}  {a.project or '-'}  {a.task[:100]}"
                + ("" if a.text_verified else "  (unverified text)")
                for a in result.adapters
            ]
        elif result.damaged:
            lines = ["The library has no usable adapters."]
        else:
            lines = ["The library has no adapters yet."]
        lines += [f"Damaged: {d.problem}" for d in result.damaged]
        return tool_result(result, "\n".join(lines))


def _add_forget(server: MCPServer[Any], rune: Rune) -> None:
    @server.tool(name="forget")
    async def forget(
        adapter_id: Annotated[str | None, Field(description="The adapter to delete.")] = None,
        session_id: Annotated[
            str | None, Field(description="Delete every adapter learned from this session.")
        ] = None,
    ) -> Annotated[CallToolResult, ForgetResult]:
        """Delete one adapter, or every adapter learned from a session (and its queued jobs),
        and every merge made from them. The base model is untouched; the other adapters are
        unaffected."""
        if (adapter_id is None) == (session_id is None):
            raise InputError("give exactly one of adapter_id or session_id.")
        if adapter_id is not None:
            check_identifier(adapter_id, "adapter_id")
            aid = adapter_id

            def remove_one() -> list[str]:
                # Not `get`: that verifies, and a damaged adapter must be removable too.
                return list(rune.library().remove_cascade(aid))

            removed = await in_thread(remove_one)
            cancelled: list[str] = []
        else:
            assert session_id is not None
            sid = check_identifier(session_id, "session_id")
            cancelled = await in_thread(lambda: rune.queue().cancel_session(sid))
            removed = await in_thread(lambda: list(rune.library().forget_session(sid)))
        if removed:
            message = f"Removed {len(removed)} adapter(s): {', '.join(r[:12] for r in removed)}."
        else:
            message = "No adapter matched; nothing was removed."
        if cancelled:
            message += f" Cancelled {len(cancelled)} queued job(s)."
        result = ForgetResult(removed=removed, cancelled_jobs=cancelled, message=message)
        return tool_result(result, message)


def _add_status(server: MCPServer[Any], rune: Rune) -> None:
    @server.tool(name="memory_status")
    async def memory_status() -> Annotated[CallToolResult, StatusResult]:
        """Library size, queued and running jobs with progress, base model and backend."""
        status = await in_thread(rune.status)
        return tool_result(status, status_text(status))
