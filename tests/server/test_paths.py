"""A checked transcript stays checked: read once through one descriptor, never opened again.

Every way a path handed to Rune (by a tool call, a hook or the watcher) could lead somewhere it
must not: links swapped in before or after queueing, hard links, `..`, NUL bytes, relative
paths, FIFOs, devices, sockets, folders, files too large to read. And no answer of a tool or
resource names a path of Rune's own, even when an adapter's manifest is damaged.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from watch.sessions import claude_lines, write_lines

from rune_mcp.capture import transcript_file
from rune_mcp.capture.transcript_file import read_transcript
from rune_mcp.config import Settings
from rune_mcp.distill.queue import JobQueue
from rune_mcp.errors import InputError, ParseError
from rune_mcp.server.hooks import run_hook
from rune_mcp.server.public import public_text
from rune_mcp.server.safety import open_transcript
from server.conftest import generic_transcript, text_of

SECRET = "sk-outside-the-roots-0000"


def _outside_text() -> str:
    """A transcript outside every allowed root; its words must never reach the library."""
    return generic_transcript(77).replace("3 passed", f"3 passed {SECRET}")


@pytest.fixture
def folder(settings: Settings) -> Path:
    """A project folder of Claude Code's, inside the allowed roots."""
    path = settings.claude_dir / "projects" / "-home-dev-app"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def inside(folder: Path) -> Path:
    path = folder / "s-1.jsonl"
    path.write_text(generic_transcript(1))
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "private" / "other.json"
    path.parent.mkdir()
    path.write_text(_outside_text())
    return path


def _refused(raw: str, settings: Settings, match: str, workspace: list[Path] | None = None) -> str:
    with pytest.raises(InputError, match=match) as info:
        open_transcript(raw, settings, workspace or [])
    message = str(info.value)
    assert "\n" not in message and SECRET not in message
    return message


# --- what open_transcript accepts ------------------------------------------------------------


def test_a_regular_file_inside_is_read_once_with_its_digest(settings: Settings, inside: Path) -> None:
    import hashlib

    file = open_transcript(str(inside), settings)
    assert file.path == inside.resolve() and file.data == inside.read_bytes()
    assert file.sha256 == hashlib.sha256(inside.read_bytes()).hexdigest()


def test_a_symlink_inside_the_roots_to_a_file_inside_is_allowed(
    settings: Settings, folder: Path, inside: Path
) -> None:
    other = folder.parent / "-home-dev-other"
    other.mkdir()
    link = other / "link.jsonl"
    link.symlink_to(inside)
    assert open_transcript(str(link), settings).path == inside.resolve()


def test_a_folder_symlink_inside_the_roots_to_a_folder_inside_is_allowed(
    settings: Settings, folder: Path, inside: Path
) -> None:
    alias = folder.parent / "alias"
    alias.symlink_to(folder, target_is_directory=True)
    assert open_transcript(str(alias / inside.name), settings).path == inside.resolve()


def test_relative_path_is_anchored_at_the_first_workspace_root(
    settings: Settings, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    (workspace / "logs").mkdir(parents=True)
    (workspace / "logs" / "t.json").write_text(generic_transcript(2))
    file = open_transcript("logs/t.json", settings, [workspace])
    assert file.path == (workspace / "logs" / "t.json").resolve()


def test_a_configured_root_is_readable(settings: Settings, tmp_path: Path) -> None:
    extra = tmp_path / "exports"
    extra.mkdir()
    (extra / "t.json").write_text(generic_transcript(3))
    configured = settings.with_overrides(allowed_roots=[extra])
    assert open_transcript(str(extra / "t.json"), configured).data


# --- what it refuses -------------------------------------------------------------------------


def test_symlink_to_a_file_outside_is_refused(
    settings: Settings, folder: Path, outside: Path
) -> None:
    (folder / "link.jsonl").symlink_to(outside)
    _refused(str(folder / "link.jsonl"), settings, "outside the folders")


def test_symlink_chain_leading_outside_is_refused(
    settings: Settings, folder: Path, outside: Path
) -> None:
    (folder / "b.jsonl").symlink_to(outside)
    (folder / "a.jsonl").symlink_to(folder / "b.jsonl")
    _refused(str(folder / "a.jsonl"), settings, "outside the folders")


def test_folder_symlink_leading_outside_is_refused(
    settings: Settings, folder: Path, outside: Path
) -> None:
    (folder / "dir").symlink_to(outside.parent, target_is_directory=True)
    _refused(str(folder / "dir" / outside.name), settings, "outside the folders")


def test_hard_link_to_a_file_outside_is_refused(
    settings: Settings, folder: Path, outside: Path
) -> None:
    os.link(outside, folder / "hard.jsonl")
    _refused(str(folder / "hard.jsonl"), settings, "2 hard links")


def test_hard_link_between_two_files_inside_is_refused_too(
    settings: Settings, folder: Path, inside: Path
) -> None:
    """Only the name is checked, so a file with several names is refused wherever they are."""
    os.link(inside, folder / "twin.jsonl")
    _refused(str(inside), settings, "hard links")


def test_symlink_loop_is_refused(settings: Settings, folder: Path) -> None:
    (folder / "a.jsonl").symlink_to(folder / "b.jsonl")
    (folder / "b.jsonl").symlink_to(folder / "a.jsonl")
    _refused(str(folder / "a.jsonl"), settings, "cannot be resolved")


def test_dangling_symlink_inside_is_refused(settings: Settings, folder: Path) -> None:
    (folder / "gone.jsonl").symlink_to(folder / "never-written.jsonl")
    _refused(str(folder / "gone.jsonl"), settings, "does not exist")


def test_missing_file_inside_is_refused(settings: Settings, folder: Path) -> None:
    _refused(str(folder / "nothing.jsonl"), settings, "does not exist")


def test_outside_refusal_does_not_tell_whether_the_file_exists(
    settings: Settings, outside: Path
) -> None:
    messages = {
        _refused(str(p), settings, "outside the folders")
        for p in (outside, outside.parent / "missing.json", Path("/etc/passwd"))
    }
    assert len(messages) == 1


def test_dotdot_is_refused_even_when_it_lands_inside(settings: Settings, inside: Path) -> None:
    _refused(str(inside.parent / ".." / inside.parent.name / inside.name), settings, r"'\.\.'")


def test_relative_dotdot_is_refused(settings: Settings, tmp_path: Path) -> None:
    _refused("../ws/t.json", settings, r"'\.\.'", [tmp_path / "ws"])


def test_relative_path_without_a_workspace_is_refused(settings: Settings) -> None:
    _refused("logs/t.json", settings, "relative")


def test_relative_path_leading_out_of_the_workspace_by_a_link_is_refused(
    settings: Settings, tmp_path: Path, outside: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "t.json").symlink_to(outside)
    _refused("t.json", settings, "outside the folders", [workspace])


@pytest.mark.parametrize("raw", ["a\x00b", "/tmp/x\x00.jsonl", "", "  ", "x" * 5000, "a\nb",
                                 "/tmp/\x1b[31m", "/tmp/\x7f"])
def test_malformed_paths_are_refused(settings: Settings, raw: str) -> None:
    with pytest.raises(InputError):
        open_transcript(raw, settings)


def test_a_directory_is_refused(settings: Settings, folder: Path) -> None:
    _refused(str(folder), settings, "is a directory, not a regular file")


def test_a_fifo_is_refused_without_being_opened(
    settings: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.mkfifo(folder / "pipe.jsonl")
    opened: list[Any] = []
    monkeypatch.setattr(transcript_file, "_open", opened.append)
    _refused(str(folder / "pipe.jsonl"), settings, "is a FIFO")
    assert opened == []  # opening a FIFO with no writer would block


def test_a_device_is_refused(settings: Settings) -> None:
    devices = settings.with_overrides(allowed_roots=[Path("/dev")])
    _refused("/dev/null", devices, "is a device")


def test_a_symlink_to_a_device_is_refused(settings: Settings, folder: Path) -> None:
    (folder / "null.jsonl").symlink_to("/dev/null")
    _refused(str(folder / "null.jsonl"), settings, "outside the folders")
    devices = settings.with_overrides(allowed_roots=[Path("/dev")])
    _refused(str(folder / "null.jsonl"), devices, "is a device")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a socket's path has about 100 bytes at most."""
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        yield Path(name).resolve()


def test_a_socket_is_refused(settings: Settings, short_dir: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(short_dir / "s.jsonl"))
        configured = settings.with_overrides(allowed_roots=[short_dir])
        _refused(str(short_dir / "s.jsonl"), configured, "is a socket")
    finally:
        server.close()


def test_a_sparse_two_gib_file_is_refused_from_its_size_before_a_byte_is_read(
    settings: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = folder / "huge.jsonl"
    with big.open("wb") as fh:
        fh.truncate(2 * 2**30)  # sparse: no data blocks, st_size says 2 GiB
    assert big.stat().st_size == 2 * 2**30

    def no_read(*args: Any) -> bytes:
        raise AssertionError("read before the size was checked")

    monkeypatch.setattr(os, "read", no_read)  # the module reads through os.read
    message = _refused(str(big), settings, "2048 MiB, over the 512 MiB")
    assert "split it" in message


def test_a_file_over_a_smaller_limit_is_refused(folder: Path, inside: Path) -> None:
    with pytest.raises(InputError, match="over the 0 MiB"):
        read_transcript(inside, [folder.resolve()], max_bytes=10)


def _swap_after_check(monkeypatch: pytest.MonkeyPatch, swap: Callable[[Path], None]) -> None:
    """Run `swap` (given the checked real path) between the path checks and the open."""
    real = transcript_file._refuse_special

    def checked_then_swapped(path: Path, name: str, error: Any) -> None:
        real(path, name, error)
        swap(path)

    monkeypatch.setattr(transcript_file, "_refuse_special", checked_then_swapped)


def test_a_file_swapped_for_a_symlink_after_the_check_is_not_opened(
    settings: Settings, folder: Path, inside: Path, outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race itself: the path is resolved and checked, then swapped before the open."""

    def swap(path: Path) -> None:
        path.unlink()
        path.symlink_to(outside)

    _swap_after_check(monkeypatch, swap)
    _refused(str(inside), settings, "changed while Rune opened it")


def _folder_to_link(folder: Path, target: Path) -> Callable[[Path], None]:
    """A swap that moves `folder` away and leaves a symlink to `target` in its place."""

    def swap(path: Path) -> None:
        folder.rename(folder.with_name("moved"))
        folder.symlink_to(target, target_is_directory=True)

    return swap


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_opened(
    settings: Settings, folder: Path, inside: Path, outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (outside.parent / inside.name).write_text(_outside_text())
    _swap_after_check(monkeypatch, _folder_to_link(folder, outside.parent))
    _refused(str(inside), settings, "changed while Rune opened it")


def test_without_dir_fd_a_swap_is_caught_by_the_identity_check(
    settings: Settings, folder: Path, inside: Path, outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the platform cannot open beneath a folder (Windows), the opened file must still
    be the one at the checked location."""
    (outside.parent / inside.name).write_text(_outside_text())
    monkeypatch.setattr(transcript_file, "_WALK", False)
    _swap_after_check(monkeypatch, _folder_to_link(folder, outside.parent))
    _refused(str(inside), settings, "changed while Rune opened it")


# --- swaps between queueing and training -----------------------------------------------------


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The trajectories the worker hands to training (training itself is replaced)."""
    seen: list[Any] = []

    def remember(settings: Settings, traj: Any, method: Any = None, progress: Any = None) -> Any:
        from rune_mcp.distill.remember import RememberResult

        seen.append(traj)
        return RememberResult(adapter_id="e" * 64, trajectory_id=traj.id, lessons=1, examples=1,
                              seconds=0.0, final_loss=None, method="lora", reused=False)

    monkeypatch.setattr("rune_mcp.distill.remember.remember_trajectory", remember)
    return seen


def _queue_bytes(settings: Settings) -> bytes:
    return b"".join(p.read_bytes() for p in settings.home.glob("jobs.sqlite3*"))


def _swap_for_symlink(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def _swap_for_hard_link(path: Path, target: Path) -> None:
    path.unlink()
    os.link(target, path)


@pytest.mark.parametrize("swap", [_swap_for_symlink, _swap_for_hard_link])
def test_a_swap_after_queueing_never_reaches_training(
    settings: Settings, inside: Path, outside: Path, trained: list[Any], swap: Any
) -> None:
    queue = JobQueue(settings)
    job = queue.enqueue(path=open_transcript(str(inside), settings), source="mcp")
    swap(inside, outside)
    assert queue.work(nice=0) == 1
    assert queue.get(job.id).state == "done"
    [traj] = trained
    assert traj.session_id == "generic-1"  # what was checked and read when it was queued
    assert SECRET not in traj.to_json() and SECRET.encode() not in _queue_bytes(settings)


@pytest.mark.parametrize("swap", [_swap_for_symlink, _swap_for_hard_link])
def test_a_hook_firing_again_after_a_swap_is_refused_and_the_job_keeps_what_was_read(
    settings: Settings, inside: Path, outside: Path, trained: list[Any], swap: Any
) -> None:
    write_lines(inside, claude_lines("fix the build", session="s-1"))
    write_lines(outside, claude_lines(f"leak {SECRET}", session="s-1"))
    event = json.dumps({"session_id": "s-1", "transcript_path": str(inside),
                        "hook_event_name": "Stop", "cwd": "/home/dev/app"})
    assert run_hook("claude-code", io.StringIO(event), settings, spawn=False) == 0
    [job] = JobQueue(settings).recent()
    swap(inside, outside)
    assert run_hook("claude-code", io.StringIO(event), settings, spawn=False) == 0
    [same] = JobQueue(settings).recent()
    assert same.id == job.id and same.trajectory_id == job.trajectory_id
    with sqlite3.connect(settings.home / "jobs.sqlite3") as conn:
        conn.execute("UPDATE jobs SET not_before = 0")
    assert JobQueue(settings).work(nice=0) == 1
    assert [t.task for t in trained] == ["fix the build"]
    assert SECRET.encode() not in _queue_bytes(settings)


@pytest.mark.parametrize("swap", [_swap_for_symlink, _swap_for_hard_link])
def test_a_swap_before_queueing_is_refused_and_nothing_is_queued(
    settings: Settings, inside: Path, outside: Path, swap: Any
) -> None:
    swap(inside, outside)
    event = json.dumps({"session_id": "s-1", "transcript_path": str(inside),
                        "hook_event_name": "SessionEnd", "reason": "other"})
    assert run_hook("claude-code", io.StringIO(event), settings, spawn=False) == 0
    assert JobQueue(settings).recent() == []


@pytest.mark.anyio
async def test_remember_session_refuses_links_out_and_queues_nothing(
    client: Any, settings: Settings, folder: Path, outside: Path
) -> None:
    (folder / "sym.jsonl").symlink_to(outside)
    os.link(outside, folder / "hard.jsonl")
    for name in ("sym.jsonl", "hard.jsonl"):
        result = await client.call_tool("remember_session",
                                        {"transcript_path": str(folder / name)})
        assert result.is_error and SECRET not in text_of(result)
    assert JobQueue(settings).recent() == []
    listed = await client.call_tool("list_adapters", {})
    assert listed.structured_content["count"] == 0


@pytest.mark.anyio
async def test_remember_session_swap_after_queueing_lists_nothing_of_the_outside_file(
    client: Any, settings: Settings, inside: Path, outside: Path, trained: list[Any]
) -> None:
    queued = await client.call_tool("remember_session", {"transcript_path": str(inside)})
    assert not queued.is_error, text_of(queued)
    _swap_for_symlink(inside, outside)
    assert JobQueue(settings).work(nice=0) == 1
    assert all(SECRET not in t.to_json() for t in trained)
    status = await client.call_tool("memory_status", {})
    assert SECRET not in text_of(status) + json.dumps(status.structured_content)


def test_the_cli_queue_reads_a_path_once_too(settings: Settings, inside: Path,
                                             outside: Path, trained: list[Any]) -> None:
    queue = JobQueue(settings)
    queue.enqueue(path=inside, source="cli")
    _swap_for_symlink(inside, outside)
    assert queue.work(nice=0) == 1
    assert [t.session_id for t in trained] == ["generic-1"]


def test_a_queue_given_roots_refuses_a_link_out(settings: Settings, folder: Path,
                                                outside: Path) -> None:
    (folder / "sym.jsonl").symlink_to(outside)
    with pytest.raises(InputError, match="outside the folders"):
        JobQueue(settings).enqueue(path=folder / "sym.jsonl", roots=[folder.resolve()])


def test_an_unparsable_transcript_is_refused_when_queued(settings: Settings, folder: Path) -> None:
    bad = folder / "bad.jsonl"
    bad.write_text("not a transcript\n")
    with pytest.raises(ParseError):
        JobQueue(settings).enqueue(path=open_transcript(str(bad), settings))
    assert JobQueue(settings).recent() == []


def test_the_watcher_does_not_read_a_session_swapped_for_a_link(
    settings: Settings, tmp_path: Path
) -> None:
    from rune_mcp.watch import Watcher

    calls: list[dict[str, Any]] = []

    def fake(**kw: Any) -> str:
        calls.append(kw)
        return "job"

    watched = settings.with_overrides(idle_seconds=60.0, min_session_steps=2)
    path = write_lines(watched.claude_dir / "projects" / "-p" / "s1.jsonl",
                       claude_lines("task s1", session="s1"))
    secret = tmp_path / "secret.jsonl"
    write_lines(secret, claude_lines(f"leak {SECRET}", session="s1"))
    watcher = Watcher(watched, enqueue=fake, train=False)
    watcher.files.scan()
    _swap_for_symlink(path, secret)
    watcher.tracker.settle(time.time() + 3600)
    assert calls == []
    [row] = watcher.db.conn.execute("SELECT state, reason FROM sessions").fetchall()
    assert row["state"] == "skipped" and "outside the folders" in row["reason"]


def test_a_claude_subagent_file_linked_out_of_the_session_folder_is_not_read(
    settings: Settings, folder: Path, tmp_path: Path
) -> None:
    from rune_mcp.capture import parse_path

    main = write_lines(folder / "s9.jsonl", claude_lines("main task", session="s9"))
    subagents = folder / "s9" / "subagents"
    subagents.mkdir(parents=True)
    secret = write_lines(tmp_path / "agent-x.jsonl", claude_lines(f"leak {SECRET}", session="s9"))
    (subagents / "agent-x.jsonl").symlink_to(secret)
    traj = parse_path(main)
    assert SECRET not in traj.to_json() and traj.stats.get("subagents_unreadable") == 1


# --- no internal path in any answer ----------------------------------------------------------

_ABSOLUTE = re.compile(r"(?<![\w.~:/-])/[\w.-]+/")


def _no_paths(text: str, settings: Settings, projects: tuple[str, ...] = ()) -> None:
    """No RUNE_HOME and no absolute path; `projects` are the sessions' project folders, which
    list_adapters and recall_adapter show on purpose (the user's data, not Rune's paths)."""
    assert str(settings.home) not in text and str(settings.home.resolve()) not in text
    for project in projects:
        text = text.replace(project, "<project>")
    assert not _ABSOLUTE.search(text), text


def test_public_text_maps_library_paths_to_adapter_ids(settings: Settings) -> None:
    home = settings.home
    adapter = "4f1c2e9a0b7d" + "0" * 52
    cases = {
        f"{home}/adapters/{adapter}/manifest.json is not readable JSON (line 1).":
            "adapter 4f1c2e9a0b7d's manifest.json is not readable JSON (line 1).",
        f"adapter folder {home}/adapters/{adapter} has no manifest.json.":
            "adapter 4f1c2e9a0b7d's folder has no manifest.json.",
        f"the job queue {home}/jobs.sqlite3 is locked.": "the job queue RUNE_HOME/jobs.sqlite3 "
                                                         "is locked.",
        "cannot tell the format of /home/u/.claude/projects/-a/s.jsonl; pass --format.":
            "cannot tell the format of s.jsonl; pass --format.",
        "see rune://status, a/b and HTTP/1.1": "see rune://status, a/b and HTTP/1.1",
        "file:///home/u/x.jsonl (or C:\\Users\\u\\x.jsonl)": "x.jsonl (or x.jsonl)",
    }
    for raw, expected in cases.items():
        assert public_text(raw, home) == expected


@pytest.fixture
def damaged(library_with_adapters: list[str], settings: Settings) -> str:
    """An adapter whose manifest is no longer JSON."""
    adapter = library_with_adapters[0]
    (settings.home / "adapters" / adapter / "manifest.json").write_text("{ damaged")
    return adapter


@pytest.mark.anyio
async def test_no_answer_about_a_damaged_manifest_names_a_path(
    client: Any, settings: Settings, damaged: str
) -> None:
    from mcp.shared.exceptions import MCPError

    texts: list[str] = []
    for tool, args in [
        ("run_with_memory", {"prompt": "Say hello.", "adapter": damaged, "max_tokens": 4}),
        ("run_with_memory", {"prompt": "Say hello.", "adapter": damaged[:12], "max_tokens": 4}),
        ("forget", {"adapter_id": damaged}),
        ("list_adapters", {}),
        ("recall_adapter", {"task": "fix the failing login test after the cookie rename"}),
        ("memory_status", {}),
    ]:
        result = await client.call_tool(tool, args)
        texts += [text_of(result), json.dumps(result.structured_content)]
        if tool == "run_with_memory":
            assert result.is_error and damaged[:12] in text_of(result)
    with pytest.raises(MCPError) as info:
        await client.read_resource(f"rune://adapters/{damaged}")
    texts.append(str(info.value))
    status = await client.read_resource("rune://status")
    texts.append(status.contents[0].text)
    for text in texts:
        _no_paths(text, settings, projects=("/home/dev/tidewater",))


@pytest.mark.anyio
async def test_a_parse_error_names_the_file_but_not_where_it_lies(
    client: Any, settings: Settings, folder: Path
) -> None:
    bad = folder / "bad.jsonl"
    bad.write_text("not a transcript\n")
    result = await client.call_tool("remember_session", {"transcript_path": str(bad)})
    assert result.is_error and "bad.jsonl" in text_of(result)
    _no_paths(text_of(result), settings)
    assert str(folder) not in text_of(result)


@pytest.mark.anyio
async def test_a_library_error_naming_its_files_is_mapped_at_the_boundary(
    client: Any, settings: Settings, library_with_adapters: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Library messages may name files (`rune` on the command line shows them); whatever
    they say, the server's answers carry the adapter id instead."""
    from mcp.shared.exceptions import MCPError

    from rune_mcp.errors import LibraryError
    from rune_mcp.library.store import AdapterStore

    adapter = library_with_adapters[0]
    original = AdapterStore.read

    def read(self: AdapterStore, adapter_id: str) -> Any:
        if adapter_id == adapter:
            raise LibraryError(f"{settings.home.resolve()}/adapters/{adapter}/manifest.json is "
                               "not readable JSON (Expecting value: line 1 column 1).")
        return original(self, adapter_id)

    monkeypatch.setattr(AdapterStore, "read", read)
    result = await client.call_tool(
        "run_with_memory", {"prompt": "Say hello.", "adapter": adapter, "max_tokens": 4})
    assert result.is_error
    texts = [text_of(result)]
    with pytest.raises(MCPError) as info:
        await client.read_resource(f"rune://adapters/{adapter}")
    texts.append(str(info.value))
    for text in texts:
        assert f"adapter {adapter[:12]}'s manifest.json is not readable JSON" in text, text
        _no_paths(text, settings)
