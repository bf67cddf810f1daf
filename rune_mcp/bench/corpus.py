"""A fixed general corpus nobody here wrote: a seeded sample of the Python standard library.

The general-ability guard (`rune_mcp.bench.general`) measures how much an adapter changes the
model's likelihood of ordinary text. The text must be the same on every machine, need no
download and owe nothing to this project, so it is read from the running interpreter: the
source (with its docstrings) of the top-level functions and classes, and the module docstrings,
of the modules in `MODULES`, found under `sysconfig.get_paths()["stdlib"]`. Those modules were
picked because they rarely change within a Python minor version.

Which pieces are taken does not depend on how many there are: each piece is ranked by the
SHA-256 of `SEED:module:name`, and pieces of at most `PIECE_CHARS` characters (command-line
entry points left out: their help texts change in bugfix releases) are taken in that order
until `SAMPLE_CHARS` characters, so a function added in a bugfix release moves nothing else.
The sample's SHA-256 is compared with `REFERENCE`, the digest measured for each Python minor
version (for 3.11 the same on 3.11.2 and 3.11.7); a machine whose standard library differs (a
patched distribution, a bugfix release that changed one of these pieces) is told so, and its
figures carry that note.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SEED = 20_251
SAMPLE_CHARS = 76_000  # about 20k tokens of a byte-pair vocabulary (SmolLM2's: 3.8 a token)
PIECE_CHARS = 6_000  # longer pieces (whole large classes) are left out, for variety
MODULES = (
    "base64", "bisect", "calendar", "cmd", "copy", "difflib", "filecmp", "fileinput",
    "fnmatch", "fractions", "getopt", "gettext", "glob", "graphlib", "heapq", "linecache",
    "numbers", "optparse", "pprint", "quopri", "reprlib", "sched", "shlex", "statistics",
    "string", "tabnanny", "textwrap", "wave", "zipapp",
)
# What training may hold the adapter to the base on (`anchor_code_tokens`): other modules of
# the same library, none of the guard's, so the guard measures text the anchor never saw.
ANCHOR_MODULES = (
    "ast", "colorsys", "contextlib", "dataclasses", "enum", "functools", "ipaddress",
    "keyword", "operator", "queue", "secrets", "selectors", "shutil", "tokenize", "uuid",
    "weakref",
)
ANCHOR_SEED = 20_252
# command-line entry points: their help texts change in bugfix releases
_SCRIPTS = frozenset({"main", "_main", "test", "_test"})
# SHA-256 of the sample per Python minor version, measured on CPython's own sources.
REFERENCE = {
    "3.11": "0f155ff883fd71151d0b84b19597bd3b9dcb14f6573a91c54d8f609036448129",  # 3.11.2, 3.11.7
}


@dataclass(frozen=True)
class Sample:
    """The corpus text, where it came from and whether it is the reference sample."""

    text: str
    sha256: str
    python: str  # major.minor.micro of the interpreter it was read from
    pieces: int
    check: str  # one sentence: matches the reference, differs, or no reference

    @property
    def matches(self) -> bool | None:
        reference = REFERENCE.get(minor_version())
        return None if not reference else reference == self.sha256

    def to_dict(self) -> dict[str, object]:
        return {"sha256": self.sha256, "python": self.python, "chars": len(self.text),
                "pieces": self.pieces, "matches_reference": self.matches, "check": self.check}


def minor_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _pieces(name: str) -> list[tuple[str, str]]:
    """(name, text) of a module's docstring and of each function and class defined in it
    whose source the interpreter can show (C implementations have none)."""
    module = importlib.import_module(name)
    out = [("__doc__", module.__doc__)] if module.__doc__ else []
    for attr, obj in sorted(vars(module).items()):
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != name:
            continue
        if attr in _SCRIPTS:
            continue
        try:
            out.append((attr, inspect.getsource(obj)))
        except (OSError, TypeError):
            continue
    return out


def _rank(module: str, name: str, seed: int = SEED) -> str:
    return hashlib.sha256(f"{seed}:{module}:{name}".encode()).hexdigest()


def stdlib_sample(chars: int = SAMPLE_CHARS, modules: tuple[str, ...] = MODULES,
                  seed: int = SEED) -> Sample:
    """The seeded sample of the standard library (see the module's docstring); other
    `modules` and `seed` give another sample taken the same way (the anchor's)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    pool: list[tuple[str, str, str]] = []
    for name in modules:
        try:
            module_file = Path(inspect.getfile(importlib.import_module(name))).resolve()
        except (ImportError, TypeError):
            log.warning("the standard library has no module %s here; the corpus differs", name)
            continue
        if stdlib not in module_file.parents:
            continue  # shadowed by another file on sys.path: not the standard library's text
        pool += [(_rank(name, attr, seed), f"# {name}.{attr}\n", text)
                 for attr, text in _pieces(name)]
    taken: list[str] = []
    size = 0
    for _, header, text in sorted(pool):
        if size >= chars:
            break
        if len(text) > PIECE_CHARS:
            continue
        taken.append(header + text.rstrip() + "\n\n")
        size += len(taken[-1])
    text = "".join(taken)
    digest = hashlib.sha256(text.encode()).hexdigest()
    check = _check(digest) if modules == MODULES and seed == SEED else "not the guard's sample"
    return Sample(text, digest, _micro(), len(taken), check)


def _micro() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])


def _check(digest: str) -> str:
    minor = minor_version()
    reference = REFERENCE.get(minor)
    if not reference:
        return f"no reference digest for Python {minor}: these figures compare only with this machine's"
    if reference == digest:
        return f"the sample matches the reference of Python {minor}"
    log.warning("the standard-library sample differs from Python %s's reference", minor)
    return (f"the sample differs from the reference of Python {minor} (this interpreter's "
            "standard library is not CPython's own): figures compare only with this machine's")
