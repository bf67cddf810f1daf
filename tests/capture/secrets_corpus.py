"""Generated secrets of many types, each with the exact value that must disappear."""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"


def _r(rng: random.Random, n: int, chars: str = ALNUM) -> str:
    out = "".join(rng.choice(chars) for _ in range(n))
    # Real keys mix letters and digits; make sure a short random draw does too.
    return out[:-2] + rng.choice(string.digits) + rng.choice(string.ascii_uppercase)


def _jwt(rng: random.Random) -> str:
    def seg(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return f"{seg({'alg': 'HS256', 'typ': 'JWT'})}.{seg({'sub': _r(rng, 8)})}.{_r(rng, 43)}"


def _private_key(rng: random.Random) -> tuple[str, str]:
    body = "\n".join(_r(rng, 64, B64) for _ in range(5))
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----", body


# type -> generator of (text as it appears, secret value that must be gone)
Gen = Callable[[random.Random], tuple[str, str]]


def _same(fn: Callable[[random.Random], str]) -> Gen:
    def gen(rng: random.Random) -> tuple[str, str]:
        value = fn(rng)
        return value, value
    return gen


def _wrapped(fmt: str, fn: Callable[[random.Random], str]) -> Gen:
    def gen(rng: random.Random) -> tuple[str, str]:
        value = fn(rng)
        return fmt.format(value), value
    return gen


GENERATORS: dict[str, Gen] = {
    "anthropic-api-key": _same(lambda r: f"sk-ant-api03-{_r(r, 93, ALNUM + '-_')}AA"),
    "openai-api-key": _same(lambda r: r.choice([f"sk-proj-{_r(r, 48, ALNUM + '-_')}",
                                                f"sk-{_r(r, 20)}T3BlbkFJ{_r(r, 20)}"])),
    "aws-access-key": _same(lambda r: "AKIA" + _r(r, 16, string.ascii_uppercase + "234567")),
    "aws-secret-key": _wrapped("aws_secret_access_key = {}", lambda r: _r(r, 40, B64)),
    "github-token": _same(lambda r: r.choice(["ghp_", "gho_", "ghs_"]) + _r(r, 36)),
    "github-fine-grained": _same(lambda r: "github_pat_" + _r(r, 22) + "_" + _r(r, 59)),
    "gitlab-token": _same(lambda r: "glpat-" + _r(r, 20)),
    "slack-token": _same(lambda r: f"xoxb-{r.randint(10**10, 10**11)}-"
                                   f"{r.randint(10**10, 10**11)}-{_r(r, 24)}"),
    "slack-webhook": _same(lambda r: "https://hooks.slack.com/services/T" + _r(r, 8).upper()
                           + "/B" + _r(r, 8).upper() + "/" + _r(r, 24)),
    "stripe-key": _same(lambda r: r.choice(["sk_live_", "rk_live_", "sk_test_"]) + _r(r, 24)),
    "google-api-key": _same(lambda r: "AIza" + _r(r, 35, ALNUM + "-_")),
    "google-oauth-token": _same(lambda r: "ya29." + _r(r, 60, ALNUM + "-_")),
    "jwt": _same(_jwt),
    "private-key": _private_key,
    "connection-string-password": _wrapped(
        "postgres://app_user:{}@db.internal:5432/orders", lambda r: _r(r, 14, ALNUM + "!*")),
    "password-env": _wrapped("DB_PASSWORD={}", lambda r: _r(r, 12, ALNUM + "!#%")),
    "password-code": _wrapped('password = "{}"', lambda r: _r(r, 12, ALNUM + "!#%")),
    "secret-yaml": _wrapped("client_secret: {}", lambda r: _r(r, 24)),
    "authorization-header": _wrapped('-H "Authorization: Bearer {}"', lambda r: _r(r, 40)),
    "basic-auth-header": _wrapped("Authorization: Basic {}",
                                  lambda r: base64.b64encode(_r(r, 18).encode()).decode()),
    "huggingface-token": _same(lambda r: "hf_" + _r(r, 34)),
    "npm-token": _same(lambda r: "npm_" + _r(r, 36)),
    "pypi-token": _same(lambda r: "pypi-AgEIcHlwaS5vcmc" + _r(r, 60, ALNUM + "-_")),
    "sendgrid-api-key": _same(lambda r: f"SG.{_r(r, 22)}.{_r(r, 43)}"),
    "twilio-api-key": _same(lambda r: "SK" + "".join(r.choice("0123456789abcdef")
                                                     for _ in range(32))),
    "telegram-bot-token": _same(lambda r: f"{r.randint(10**8, 10**9)}:AA{_r(r, 33)}"),
    "azure-storage-key": _wrapped("DefaultEndpointsProtocol=https;AccountName=acme;"
                                  "AccountKey={}==;", lambda r: _r(r, 86, B64)),
    "curl-user-password": _wrapped("curl -sf -u deploy:{} https://ci.internal/api/jobs",
                                   lambda r: _r(r, 14, ALNUM + "!%")),
    "sshpass-password": _wrapped("sshpass -p {} ssh ops@10.0.0.7 uptime",
                                 lambda r: _r(r, 12, ALNUM + "!%")),
    "mysql-password": _wrapped("mysql -h db.internal -u app -p{} orders",
                               lambda r: _r(r, 12, ALNUM + "!%")),
    "redis-empty-user": _wrapped("redis://:{}@cache.internal:6379/0",
                                 lambda r: _r(r, 16, ALNUM)),
    "hex-key": _wrapped("SIGNING_KEY={}", lambda r: "".join(r.choice("0123456789abcdef")
                                                             for _ in range(64))),
    "high-entropy": _wrapped("SIGNING_SALT_VALUE {}", lambda r: _r(r, 40, B64)),
}

# Where a secret can stand in a session.
CONTEXTS = ("user", "command", "output", "edit", "diff", "assistant", "write")


def corpus(n: int, seed: int = 7) -> list[tuple[str, str, str, str]]:
    """n (type, context, text, secret) tuples cycling over every type and context."""
    rng = random.Random(seed)
    kinds = sorted(GENERATORS)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        text, secret = GENERATORS[kind](rng)
        out.append((kind, CONTEXTS[(i // len(kinds)) % len(CONTEXTS)], text, secret))
    return out
