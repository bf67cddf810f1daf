"""A transcript file read once, through one checked descriptor.

Whatever Rune learns from a file must come from the bytes it checked: a path checked now and
opened again later can be swapped in between (a regular file replaced by a symlink to
`~/.ssh/id_rsa`, a hard link to a file elsewhere). So a transcript is resolved, checked and
opened once, and everything downstream (the parser, the queue, training) works from the bytes
read through that descriptor:

- the path is resolved (every symlink followed) and its real location must lie inside the
  given roots, decided before existence so a refusal never tells which outside files exist;
- it is opened component by component with `O_NOFOLLOW` (where the platform has `dir_fd`), so
  no part of the real path can turn into a link between the check and the open; elsewhere the
  opened file must still be the one at the checked location;
- the open descriptor must be a regular file (no FIFO, device, socket or directory; those are
  refused before opening, so opening one never blocks or has side effects), with one name only
  when roots are given (a hard link's other names may lie outside them), and no larger than the
  limit, decided from `fstat` before a byte is read or hashed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from rune_mcp.errors import InputError, RuneError

MAX_FILE_BYTES = 512 * 1024 * 1024
_CHUNK = 1 << 20
_HEAD = 64  # enough of a file's start to recognise a database

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_FLAGS = (
    os.O_RDONLY
    | _NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the check must not block open
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
# Walking the real path with dir_fd and O_NOFOLLOW leaves no component to swap (POSIX).
_WALK = bool(_NOFOLLOW and _DIRECTORY) and os.open in os.supports_dir_fd


@dataclass(frozen=True)
class TranscriptFile:
    """What was read: the real location, the bytes (only the first ones of a database,
    which its reader opens itself), their SHA-256 and the file's identity."""

    path: Path
    data: bytes
    sha256: str
    size: int
    identity: tuple[int, int]
    complete: bool = True

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Opened:
    """A checked, open descriptor on a regular file at `path`, with its `fstat`, and the
    checks it passed (`name` is how refusals call the file)."""

    fd: int
    path: Path
    stat: os.stat_result
    name: str
    max_bytes: int
    error: type[RuneError]


class Checks(TypedDict, total=False):
    """The keyword options of `open_checked` (and of `read_transcript`, which passes them on)."""

    label: str | None
    max_bytes: int
    error: type[RuneError]


def within(path: Path, roots: Sequence[Path]) -> bool:
    """Whether `path` is one of `roots` or lies below one (no resolving: give real paths)."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def read_transcript(
    path: Path,
    roots: Sequence[Path] | None = None,
    *,
    database_magic: Sequence[bytes] = (),
    **checks: Unpack[Checks],
) -> TranscriptFile:
    """Read the transcript at `path` once, with the checks of the module docstring (as
    `open_checked` makes them). A file starting with one of `database_magic` is hashed but
    its bytes are not kept.
    """
    with open_checked(path, roots, **checks) as opened:
        return _read(opened, tuple(database_magic))


@contextmanager
def open_checked(
    path: Path,
    roots: Sequence[Path] | None = None,
    *,
    label: str | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    error: type[RuneError] = InputError,
) -> Iterator[Opened]:
    """The checked descriptor of `path`, closed on leaving the `with`.

    `roots` None skips the location and hard-link checks (a path the user typed on the
    command line); `label` is how refusals name the file (default: the path as given).
    """
    name = label or str(path)
    real = _locate(Path(path), roots, name, error)
    _refuse_special(real, name, error)
    try:
        fd = _open(real)
    except OSError as exc:
        raise _open_error(exc, name, error) from None
    try:
        st = _check_open(fd, real, roots, name, max_bytes, error)
        yield Opened(fd, real, st, name, max_bytes, error)
    finally:
        os.close(fd)


def still_names(opened: Opened | TranscriptFile) -> bool:
    """Whether the checked location still holds the file that was opened (for a reader
    that must open the path itself, such as SQLite)."""
    identity = (
        opened.identity
        if isinstance(opened, TranscriptFile)
        else (opened.stat.st_dev, opened.stat.st_ino)
    )
    return _still_at(opened.path, identity)


def _still_at(path: Path, identity: tuple[int, int]) -> bool:
    try:
        now = os.lstat(path)
        # lstat follows links in the folders above; realpath shows one swapped in there.
        moved = os.path.realpath(path) != str(path)
    except OSError:
        return False
    return stat.S_ISREG(now.st_mode) and not moved and (now.st_dev, now.st_ino) == identity


def read_range(opened: Opened, start: int, length: int) -> bytes:
    """`length` bytes (fewer at the end of the file) from offset `start` of a checked file."""
    os.lseek(opened.fd, start, os.SEEK_SET)
    chunks: list[bytes] = []
    while length > 0 and (chunk := os.read(opened.fd, min(length, _CHUNK))):
        chunks.append(chunk)
        length -= len(chunk)
    return b"".join(chunks)


def _locate(
    path: Path, roots: Sequence[Path] | None, name: str, error: type[RuneError]
) -> Path:
    try:
        # strict=False still follows every symlink that exists; checking the roots before
        # existence keeps a refusal from telling which files exist outside them.
        real = path.expanduser().resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise error(f"{name} cannot be resolved (a symbolic link loop?); check the path.") from exc
    if roots is not None and not within(real, roots):
        raise error(
            f"{name} is outside the folders Rune may read (the agents' transcript folders, the "
            "workspace roots and allowed_roots); add its folder to allowed_roots."
        )
    return real


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a special file"


def _refuse_special(real: Path, name: str, error: type[RuneError]) -> None:
    """Refuse what is not a regular file before opening it: opening a FIFO blocks, opening a
    device may act on it."""
    try:
        mode = os.lstat(real).st_mode
    except FileNotFoundError:
        raise error(f"no transcript at {name}: the file does not exist; check the path.") from None
    except OSError as exc:
        raise error(f"cannot read {name} ({exc.strerror or exc}); check its permissions.") from None
    kind = _kind(mode)
    if kind is not None:
        raise error(f"{name} is {kind}, not a regular file; give the path of a transcript file.")


def _open(real: Path) -> int:
    if not _WALK:
        return os.open(real, _FLAGS)
    parts = real.parts
    folder = os.open(parts[0], os.O_RDONLY | _DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts[1:-1]:
            inner = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=folder)
            os.close(folder)
            folder = inner
        return os.open(parts[-1], _FLAGS, dir_fd=folder)
    finally:
        os.close(folder)


def _open_error(exc: OSError, name: str, error: type[RuneError]) -> RuneError:
    import errno

    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
        # ELOOP/ENOTDIR: a component became a symlink after the path was resolved.
        return error(f"{name} changed while Rune opened it (a link was swapped in); "
                     "give the file's real path and try again.")
    return error(f"cannot read {name} ({exc.strerror or exc}); check its permissions.")


def _check_open(
    fd: int, real: Path, roots: Sequence[Path] | None, name: str, max_bytes: int,
    error: type[RuneError],
) -> os.stat_result:
    st = os.fstat(fd)
    kind = _kind(st.st_mode)
    if kind is not None:
        raise error(f"{name} is {kind}, not a regular file; give the path of a transcript file.")
    if not _WALK and not _still_at(real, (st.st_dev, st.st_ino)):
        raise error(f"{name} changed while Rune opened it (a link was swapped in); "
                    "give the file's real path and try again.")
    if roots is not None and st.st_nlink > 1:
        raise error(
            f"{name} has {st.st_nlink} hard links, so where its other names lie cannot be "
            "checked; copy the file instead of linking it."
        )
    if st.st_size > max_bytes:
        raise error(f"{name} is {st.st_size // 2**20} MiB, over the {max_bytes // 2**20} MiB a "
                    "transcript may have; split it or pass a smaller file.")
    return st


def _read(opened: Opened, magic: tuple[bytes, ...]) -> TranscriptFile:
    name, max_bytes, error = opened.name, opened.max_bytes, opened.error
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    total = 0
    keep = True
    try:
        while chunk := os.read(opened.fd, _CHUNK):
            if not total and magic and chunk[:_HEAD].startswith(magic):
                keep = False
                chunks.append(chunk[:_HEAD])
            total += len(chunk)
            if total > max_bytes:  # it grew past the limit while being read
                raise error(f"{name} is over the {max_bytes // 2**20} MiB a transcript may "
                            "have; split it or pass a smaller file.")
            digest.update(chunk)
            if keep:
                chunks.append(chunk)
    except OSError as exc:
        raise error(f"cannot read {name} ({exc.strerror or exc}); check its permissions.") from None
    return TranscriptFile(
        path=opened.path, data=b"".join(chunks), sha256=digest.hexdigest(), size=total,
        identity=(opened.stat.st_dev, opened.stat.st_ino), complete=keep,
    )
