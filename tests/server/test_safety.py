"""Input checks: allowed roots with symlinks followed, `..`, NUL bytes, sizes, ids (the
transcript file checks in depth, with links swapped after queueing: test_paths.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rune_mcp.config import Settings
from rune_mcp.errors import InputError
from rune_mcp.server.safety import (
    allowed_roots,
    check_identifier,
    check_size,
    find_session_transcript,
    open_transcript,
)


def resolve_transcript(raw: str, settings: Settings, workspace: list[Path] | None = None) -> Path:
    """Where the checked transcript was read from."""
    return open_transcript(raw, settings, workspace or []).path


@pytest.fixture
def inside(settings: Settings) -> Path:
    path = settings.claude_dir / "projects" / "-home-dev-app" / "abc.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("{}\n")
    return path


def test_transcript_inside_the_agent_folder_is_accepted(settings: Settings, inside: Path) -> None:
    assert resolve_transcript(str(inside), settings) == inside.resolve()


def test_dotdot_is_refused_even_when_it_lands_inside(settings: Settings, inside: Path) -> None:
    sneaky = inside.parent / ".." / inside.parent.name / inside.name
    with pytest.raises(InputError, match=r"'\.\.'"):
        resolve_transcript(str(sneaky), settings)


def test_outside_roots_is_refused_without_saying_whether_it_exists(
    settings: Settings, tmp_path: Path
) -> None:
    real = tmp_path / "secret.txt"
    real.write_text("x")
    messages = set()
    for candidate in (real, tmp_path / "missing.txt", Path("/etc/passwd")):
        with pytest.raises(InputError) as info:
            resolve_transcript(str(candidate), settings)
        messages.add(str(info.value))
    assert len(messages) == 1 and "outside the folders" in messages.pop()


def test_symlink_out_of_an_allowed_root_is_refused(
    settings: Settings, inside: Path, tmp_path: Path
) -> None:
    target = tmp_path / "private" / "id_rsa"
    target.parent.mkdir()
    target.write_text("key")
    link = inside.parent / "link.jsonl"
    os.symlink(target, link)
    with pytest.raises(InputError, match="outside"):
        resolve_transcript(str(link), settings)
    dir_link = inside.parent / "dirlink"
    os.symlink(target.parent, dir_link)
    with pytest.raises(InputError, match="outside"):
        resolve_transcript(str(dir_link / "id_rsa"), settings)


def test_workspace_and_configured_roots(settings: Settings, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "logs").mkdir(parents=True)
    (workspace / "logs" / "t.jsonl").write_text("{}\n")
    with pytest.raises(InputError):
        resolve_transcript(str(workspace / "logs" / "t.jsonl"), settings)
    got = resolve_transcript("logs/t.jsonl", settings, [workspace])
    assert got == (workspace / "logs" / "t.jsonl").resolve()
    configured = settings.with_overrides(allowed_roots=[workspace])
    assert resolve_transcript(str(workspace / "logs" / "t.jsonl"), configured)
    assert workspace.resolve() in allowed_roots(configured)
    with pytest.raises(InputError, match="relative"):
        resolve_transcript("logs/t.jsonl", settings)


@pytest.mark.parametrize("raw", ["a\x00b", "", "   ", "x" * 5000, "a\nb", "/tmp/\x1b[31m"])
def test_malformed_paths_are_refused(settings: Settings, raw: str) -> None:
    with pytest.raises(InputError):
        resolve_transcript(raw, settings)


def test_directory_is_not_a_transcript(settings: Settings, inside: Path) -> None:
    with pytest.raises(InputError, match="is a directory, not a regular file"):
        resolve_transcript(str(inside.parent), settings)


def test_sizes_and_identifiers(settings: Settings) -> None:
    small = settings.with_overrides(max_request_bytes=1024)
    assert check_size("é" * 512, small) == "é" * 512
    with pytest.raises(InputError, match="larger than the 1024 bytes"):
        check_size("é" * 513, small)  # 1026 bytes in UTF-8
    assert check_identifier("1af7fc5e-8455", "session_id") == "1af7fc5e-8455"
    for bad in ["", "../x", "a/b", "..", "x" * 200, "a\x00", "-rf", "a b"]:
        with pytest.raises(InputError):
            check_identifier(bad, "session_id")


def test_session_lookup(settings: Settings, inside: Path) -> None:
    assert find_session_transcript("abc", settings) == inside.resolve()
    with pytest.raises(InputError, match="no transcript for session"):
        find_session_transcript("nothere", settings)
    with pytest.raises(InputError):
        find_session_transcript("../abc", settings)
