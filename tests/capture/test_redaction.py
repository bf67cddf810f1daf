"""Redaction targets: >= 99% of 1,000+ planted secrets of 15+ types removed wherever they
stand; <= 2% of clean lines (real transcripts, this project's source) touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from capture.builders import ClaudeSession
from capture.secrets_corpus import GENERATORS, corpus
from rune_mcp.capture import parse_text
from rune_mcp.capture.redact import Redactor, redact_text
from rune_mcp.trajectory import Trajectory

REPO = Path(__file__).resolve().parents[2]


def _plant(session: ClaudeSession, context: str, text: str) -> None:
    if context == "user":
        session.user(f"Use this for the deploy: {text} thanks")
    elif context == "command":
        session.bash(f"export DEPLOY_VALUE='{text}' && ./deploy.sh", "deployed")
    elif context == "output":
        session.bash("env", f"PATH=/usr/bin\n{text}\nHOME=/home/dev")
    elif context == "edit":
        session.edit("/home/dev/acme/settings.py", "CONFIG = {}", f"CONFIG = {{}}\n{text}\n")
    elif context == "diff":
        session.bash("git diff", f"diff --git a/.env b/.env\n--- a/.env\n+++ b/.env\n+{text}\n")
    elif context == "write":
        session.call("Write", {"file_path": "/home/dev/acme/.env", "content": f"{text}\n"}, "ok")
    else:
        session.say(f"I found {text} in the logs; rotate it.")


def _strings(traj: Trajectory) -> str:
    parts: list[str] = [traj.task]

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for step in traj.steps:
        walk([step.text, step.input, step.output])
    return "\n".join(parts)


def test_planted_secret_corpus_is_redacted() -> None:
    planted = corpus(1_120)
    assert len(GENERATORS) >= 15
    missed: list[tuple[str, str]] = []
    redacted = 0
    for start in range(0, len(planted), 40):  # 40 secrets per session
        session = ClaudeSession()
        session.user("Set up the deployment")
        chunk = planted[start : start + 40]
        for _, context, text, _ in chunk:
            _plant(session, context, text)
        traj = parse_text(session.text())
        everything = _strings(traj)
        for kind, context, _, secret in chunk:
            if secret in everything:
                missed.append((kind, context))
            else:
                redacted += 1
    rate = redacted / len(planted)
    assert rate >= 0.99, f"redacted {rate:.2%}; missed {missed[:20]}"


def test_placeholders_are_typed_and_counted() -> None:
    text, counts = redact_text("AKIAIOSFODNN7EXAMPL3 and ghp_" + "a1B2" * 9)
    assert text == "[REDACTED:aws-access-key] and [REDACTED:github-token]"
    assert counts == {"aws-access-key": 1, "github-token": 1}


def test_code_and_ordinary_values_are_left_alone() -> None:
    for line in ["token = tokenizer.encode(text)", "total_tokens: 43179",
                 "password = getpass.getpass()", "api_key = os.environ['API_KEY']",
                 "secret_key = settings.SECRET_KEY", "commit 9f2c3a1b4d5e6f708192a3b4c5d6e7f8091a2b3c",
                 "id: 550e8400-e29b-41d4-a716-446655440000", "/home/me/projects/app/src/main.py",
                 'password: ""', "DB_PASSWORD=${DB_PASSWORD}"]:
        assert redact_text(line)[0] == line, line


def _clean_lines(transcripts: Path) -> list[str]:
    """Every line of text the real transcripts carry, plus this project's source code."""
    lines: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            lines.extend(value.splitlines())
        elif isinstance(value, dict):
            for k, v in value.items():
                if k not in ("signature", "id", "tool_use_id"):
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in sorted(transcripts.rglob("*.jsonl")):
        for raw in path.read_text("utf-8").splitlines():
            rec = json.loads(raw)
            message = rec.get("message") or rec.get("payload")
            if isinstance(message, dict):
                walk(message.get("content"))
    for path in sorted((REPO / "rune_mcp").rglob("*.py")):
        lines.extend(path.read_text("utf-8").splitlines())
    return [line for line in lines if line.strip()]


def test_clean_lines_are_rarely_touched(transcripts_dir: Path) -> None:
    lines = _clean_lines(transcripts_dir)
    assert len(lines) > 10_000
    redactor = Redactor()
    touched = [line for line in lines if redactor.redact(line) != line]
    rate = len(touched) / len(lines)
    assert rate <= 0.02, f"{rate:.2%} of clean lines touched, e.g. {touched[:10]}"


def test_command_line_passwords_are_redacted() -> None:
    # Regression: these passed redaction although every common secret format was caught.
    cases = {
        "curl -u admin:Hunter2pass https://ci.internal/api": "Hunter2pass",
        "curl --user=ops:s3cretPw! https://x.internal": "s3cretPw!",
        "sshpass -p 'Tr0ub4dor' ssh ops@host uptime": "Tr0ub4dor",
        "mysql -h db -u app -pW1ldCard orders": "W1ldCard",
        "redis-cli -u redis://:Sup3rSecret@cache:6379/0 ping": "Sup3rSecret",
        "export SIGNING_KEY=" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08":
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    }
    for line, secret in cases.items():
        text, counts = redact_text(line)
        assert secret not in text, line
        assert counts, line


def test_command_line_lookalikes_are_left_alone() -> None:
    for line in ["mysql -h db -u app -p orders", "mysql -P 3306 -u app", "curl -u $USER:$PASS",
                 "curl -sf https://example.org/api", "sshpass -p \"$PW\" ssh host",
                 "primary_key = 12", "cache_key: abc"]:
        assert redact_text(line)[0] == line, line
