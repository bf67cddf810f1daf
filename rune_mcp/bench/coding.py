"""General coding questions, answered and run: can the model still write working code?

`rune_mcp/data/general_coding.json` holds small, generic programming questions (no project of
this repository in them), each with a few `assert` lines. An answer passes when its first
fenced code block (```python, or any fence; an unclosed fence runs to the end) defines what
the tests call and every assert holds. The code runs in a child interpreter:

- isolated (`python -I -S`: no user site, no environment paths, no site packages), in an
  empty temporary folder, with stdin closed and an environment of `PATH` only;
- without network: the child's `socket` module refuses to create or resolve sockets before the
  answer runs, and no proxy is in its environment;
- bounded: `TIMEOUT_S` of wall time (the whole process group is killed), and on POSIX a CPU
  time, memory and file-size limit set by the child on itself before the answer runs;
- judged by a random marker the harness prints after the last assert: an answer that exits
  early (`sys.exit(0)`) has not passed.

The answer's code runs under the module name `__answer__`, so its `if __name__ == "__main__":`
demo is not run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rune_mcp.errors import UsageError

TIMEOUT_S = 10.0
CPU_S = 20
MEMORY_BYTES = 1 << 30
FILE_BYTES = 16 << 20
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PRELUDE = '''\
try:
    import resource as _resource
except ImportError:  # not POSIX
    _resource = None
if _resource is not None:
    for _limit, _value in ((_resource.RLIMIT_CPU, {cpu}), (_resource.RLIMIT_AS, {memory}),
                           (_resource.RLIMIT_FSIZE, {files}), (_resource.RLIMIT_CORE, 0)):
        try:
            _resource.setrlimit(_limit, (_value, _value))
        except (ValueError, OSError):
            pass
import socket as _socket


class _NoNetwork(_socket.socket):
    def __init__(self, *args, **kwargs):
        raise OSError("network access is disabled in the coding check")


def _refuse(*args, **kwargs):
    raise OSError("network access is disabled in the coding check")


_socket.socket = _NoNetwork
_socket.create_connection = _refuse
_socket.getaddrinfo = _refuse
_socket.socketpair = _refuse
del _socket, _NoNetwork, _refuse, _resource
'''
_RUNNER = '''
import sys
_answer = dict(__name__="__answer__")
exec(compile(open("answer.py", encoding="utf-8").read(), "answer.py", "exec"), _answer)
exec(compile(open("tests.py", encoding="utf-8").read(), "tests.py", "exec"), _answer)
print({marker!r})
'''


@dataclass(frozen=True)
class Question:
    """A coding question and the asserts its answer must pass."""

    id: str
    prompt: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str  # "passed", "no code block", "timeout", or the last line of the error

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason}


def load_questions(path: Path | None = None) -> list[Question]:
    """The bundled coding questions (or those of `path`, the same format)."""
    source = path or Path(str(resources.files("rune_mcp") / "data" / "general_coding.json"))
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
        return [Question(str(q["id"]), str(q["prompt"]), tuple(str(t) for t in q["tests"]))
                for q in raw["questions"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read coding questions from {source} ({exc}); give a JSON file "
                         'of {"questions": [{"id", "prompt", "tests"}]}.') from exc


def extract_code(answer: str) -> str | None:
    """The first fenced code block of `answer`, or None when it has none."""
    match = _FENCE.search(answer)
    if match is None or not match.group(1).strip():
        return None
    return match.group(1)


def run_tests(code: str, tests: Sequence[str], timeout: float = TIMEOUT_S) -> Outcome:
    """Run `code` then `tests` in a child interpreter (see the module's docstring)."""
    marker = f"tests-passed-{secrets.token_hex(8)}"
    with tempfile.TemporaryDirectory(prefix="rune-coding-") as tmp:
        folder = Path(tmp)
        (folder / "answer.py").write_text(code, encoding="utf-8")
        (folder / "tests.py").write_text("\n".join(tests) + "\n", encoding="utf-8")
        prelude = _PRELUDE.format(cpu=CPU_S, memory=MEMORY_BYTES, files=FILE_BYTES)
        (folder / "run.py").write_text(prelude + _RUNNER.format(marker=marker), encoding="utf-8")
        posix = os.name == "posix"
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", "run.py"], cwd=folder, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": os.defpath},
            start_new_session=posix,  # its own process group, killed whole on timeout
        )
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(child, posix)
            child.communicate()
            return Outcome(False, "timeout")
    if child.returncode == 0 and marker in out.decode("utf-8", "replace"):
        return Outcome(True, "passed")
    lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    return Outcome(False, lines[-1][:200] if lines else f"exit status {child.returncode}")


def _kill(child: subprocess.Popen[bytes], posix: bool) -> None:
    if posix:
        try:
            os.killpg(child.pid, signal.SIGKILL)
            return
        except OSError:
            pass
    child.kill()


def check_answer(answer: str, question: Question, timeout: float = TIMEOUT_S) -> Outcome:
    """An answer's code block run against the question's tests."""
    code = extract_code(answer)
    if code is None:
        return Outcome(False, "no code block")
    return run_tests(code, question.tests, timeout)
