"""One error root for everything a user can cause or fix.

Every foreseeable failure is a `RuneError` whose message is one sentence saying what is wrong
and what to do. The CLI prints it as `rune: <sentence>`; the MCP server returns it as an
`isError` result. Anything else is a bug and keeps its traceback (shown with `--debug`).
"""

from __future__ import annotations


class RuneError(Exception):
    """Root of Rune's errors; `str(err)` is the one sentence shown to the user."""

    exit_code = 1


class UsageError(RuneError):
    """The command line or a tool call was malformed."""

    exit_code = 2


class ConfigError(RuneError):
    """`rune.toml` or a `RUNE_*` variable holds something invalid."""


class ModelError(RuneError):
    """A base model or embedding model is missing, corrupt or unusable."""


class ParseError(RuneError):
    """A transcript could not be turned into a trajectory."""


class LibraryError(RuneError):
    """The adapter library is unreadable, locked, or from a newer format."""


class AdapterNotFoundError(LibraryError):
    """No adapter has the requested id."""


class IntegrityError(LibraryError):
    """An adapter's files do not match their recorded digests, or it is for another base."""


class TrainingError(RuneError):
    """Distillation could not produce an adapter (too little to learn, divergence, interrupt)."""


class BackendError(RuneError):
    """An inference backend failed to load, swap or generate."""


class InputError(RuneError):
    """A tool argument is unsafe or out of bounds (path outside the allowed roots, too large)."""
