"""Secret redaction: nothing that looks like a credential leaves the capture stage.

A trajectory is stored, embedded and trained on, so a key pasted into a prompt or printed by
`env` would end up in weights. Every string of a trajectory passes through `Redactor.redact`,
which replaces each secret with a typed placeholder (`[REDACTED:aws-access-key]`) and counts
it per type.

Speed matters (a large transcript must parse and redact within the target of
docs/trajectory.md#speed), so each rule carries cheap "needles": substrings that must occur
before its regex runs at all. Most text contains none of them, so most rules cost one
substring search per string. Provider formats
that detect-secrets maintains (SendGrid, Twilio, Mailchimp, Square, Telegram, Discord, Azure,
Artifactory, npm) reuse that library's regexes; the rest are Rune's own rules, plus a
high-entropy scan for random-looking tokens no rule names.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

PLACEHOLDER = "[REDACTED:{}]"

# Values that sit where a secret would but are clearly not one.
_NOT_SECRETS = frozenset(
    {
        "none", "null", "nil", "true", "false", "undefined", "required", "optional", "str",
        "string", "int", "bool", "bytes", "self", "env", "os", "redacted", "xxx", "xxxx",
        "xxxxxx", "xxxxxxxx", "****", "******", "********", "<secret>", "<password>", "<token>",
        "secret", "password", "token", "example", "dummy", "placeholder", "default", "value",
        "input", "field", "type", "text", "process.env", "getpass", "environ", "config",
        "settings", "options", "params", "args", "kwargs", "data", "auth", "any", "object",
    }
)
_IDENT = re.compile(r"[A-Za-z_]\w*")
_WORD = re.compile(r"[A-Za-z][a-z-]{3,}")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


@dataclass(frozen=True)
class Rule:
    """One secret type: `pattern` finds it, `group` is the part replaced.

    The pattern only runs where one of `needles` occurs (searched in the lower-cased text
    when `lower`): it is matched from `back` characters before the needle to `span`
    characters after it. A rule with `gates` (keyword rules) is skipped unless one of them
    occurs in the lower-cased text; a rule without (token formats) unless one of its needles
    occurs in the text's long runs of non-space characters, where any token secret lives.
    `boundary` rejects a match that directly follows a letter or digit; `check` can veto a
    match (placeholders, code).
    """

    kind: str
    pattern: re.Pattern[str]
    needles: tuple[str, ...]
    lower: bool = False
    group: int | str = 0
    check: Callable[[re.Match[str]], bool] | None = None
    back: int = 0
    span: int = 600
    boundary: bool = False
    gates: tuple[str, ...] = ()


def _value_is_secret(match: re.Match[str]) -> bool:
    """For `NAME = value` rules: reject placeholders, references and code expressions."""
    value = match.group("val")
    bare = value.strip("\"'`")
    if len(bare) < 4 or bare.lower() in _NOT_SECRETS or bare.startswith("[REDACTED"):
        return False
    if bare[0] in "$<{%@&*" or bare.startswith(("os.", "process.env", "env(", "getenv")):
        return False
    quoted = bool(match.group("q"))
    if not quoted and ("(" in bare or "[" in bare):
        return False  # a call or a type: `tokens: list[int]`, `SECRETS = frozenset(`
    env_style = match.group("name").isupper()
    if quoted or env_style:
        return not bare.startswith(("http://", "https://", "/"))
    # Unquoted lower-case names are usually code (`token = tokenizer.encode(x)`) or counts.
    if bare.replace(".", "").replace("_", "").isdigit():
        return False
    if "(" in bare or _DOTTED.fullmatch(bare):
        return False
    if _IDENT.fullmatch(bare):  # a variable unless it carries digits: `password=hunter2`
        return any(c.isdigit() for c in bare) and any(c.isalpha() for c in bare)
    return True


def _literal(match: re.Match[str]) -> bool:
    """For command-line rules: a literal value, not a reference (`$PASS`, `${PW}`, `<pw>`)."""
    value = match.group(1)
    return value[0] not in "$<{%*" and value.lower() not in _NOT_SECRETS


def _entropy(token: str) -> float:
    """Shannon entropy in bits per character: `"aaaa"` -> 0.0, 32 random base64 chars -> ~4.6."""
    counts = Counter(token)
    n = len(token)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _high_entropy(tok: str) -> bool:
    """A random-looking token: mixed case and digits, not a path or a hash label, high entropy."""
    if tok.startswith(("sha1-", "sha256-", "sha384-", "sha512-", "REDACTED")):
        return False
    if not (any(c.isdigit() for c in tok) and any(c.isupper() for c in tok)
            and any(c.islower() for c in tok)):
        return False
    if tok.count("/") >= 2 and sum(1 for p in tok.split("/") if _WORD.fullmatch(p)) >= 2:
        return False  # a path such as /home/me/projects/app/migrations/20260211
    if tok.count("_") + tok.count("-") >= 4 and max(len(p) for p in re.split(r"[_-]", tok)) < 16:
        return False  # a long identifier such as test_parse_case_2_with_SubAgents
    return _entropy(tok) >= (4.2 if len(tok) < 48 else 4.5)


def _c(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


_ASSIGN_NAMES = (
    r"(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
    r"private[_-]?key|client[_-]?secret|auth[_-]?key|credentials?)"
)
_ASSIGN = (
    r"(?P<name>" + _ASSIGN_NAMES + r"\w*)[\"']?\s*(?::=|=>|=|:)\s*(?P<q>[\"']?)"
    r"(?P<val>[^\s\"'`,;)}\]]{4,200})"
)

OWN_RULES: tuple[Rule, ...] = (
    Rule(
        "private-key",
        _c(r"-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY(?: BLOCK)?-----"
           r"(?:[\s\S]{0,12000}?-----END[A-Z0-9 ]{0,40} PRIVATE KEY(?: BLOCK)?-----"
           r"|[A-Za-z0-9+/=\s:,-]*)"),
        ("-----BEGIN",), span=16_000, gates=("-----begin",),
    ),
    Rule("anthropic-api-key", _c(r"sk-ant-[A-Za-z0-9_-]{16,}"), ("sk-ant-",), boundary=True),
    Rule(
        "openai-api-key",
        _c(r"sk-(?:proj-|svcacct-|admin-|None-)?(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{32,}"),
        ("sk-",), boundary=True,
    ),
    Rule("aws-access-key", _c(r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
         ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA"), boundary=True),
    Rule(
        "aws-secret-key",
        _c(r"(?i)aws\w{0,20}?(?:secret|sk)\w{0,20}[\"']?\s*(?::=|=>|=|:)\s*[\"']?"
           r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"),
        ("aws",), lower=True, group=1, gates=("aws",),
    ),
    Rule("github-token", _c(r"gh[pousr]_[A-Za-z0-9]{30,}"),
         ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), boundary=True),
    Rule("github-token", _c(r"github_pat_[A-Za-z0-9_]{22,}"), ("github_pat_",)),
    Rule("gitlab-token", _c(r"glpat-[A-Za-z0-9_-]{20,}"), ("glpat-",), boundary=True),
    Rule("slack-webhook",
         _c(r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,}"),
         ("https://hooks.slack.com",)),
    Rule("slack-token", _c(r"xox[abposr]-[A-Za-z0-9-]{10,}"), ("xox",), boundary=True),
    Rule("stripe-key", _c(r"[srp]k_(?:live|test)_[A-Za-z0-9]{16,}"),
         ("sk_live_", "sk_test_", "rk_live_", "rk_test_", "pk_live_", "pk_test_"),
         boundary=True),
    Rule("google-api-key", _c(r"AIza[0-9A-Za-z_-]{35}"), ("AIza",), boundary=True),
    Rule("google-oauth-token", _c(r"ya29\.[0-9A-Za-z_-]{20,}"), ("ya29.",), boundary=True),
    Rule("google-oauth-secret", _c(r"GOCSPX-[0-9A-Za-z_-]{20,}"), ("GOCSPX-",)),
    Rule("huggingface-token", _c(r"hf_[A-Za-z0-9]{30,}"), ("hf_",), boundary=True),
    Rule("pypi-token", _c(r"pypi-AgE[A-Za-z0-9_-]{40,}"), ("pypi-AgE",), boundary=True),
    Rule("npm-token", _c(r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"), ("npm_",), boundary=True),
    Rule("jwt", _c(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
         ("eyJ",), boundary=True, span=8_000),
    Rule(
        "connection-string-password",
        _c(r"[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s:/@\"'<>]{0,64}:([^\s@\"'<>/]{1,128})@"),
        ("://",), group=1, back=21, span=200, gates=("://",),
    ),
    # Passwords given to a command on its command line (`curl -u user:pw`, `sshpass -p pw`,
    # `mysql -ppw`): no keyword names them, only the command and its flag.
    Rule(
        "command-line-password",
        _c(r"(?i)curl\b[^\n|;&]{0,300}?\s(?:-u|--user)(?:\s+|=)?[\"']?[^\s:\"']{0,64}:"
           r"([^\s\"']{1,128})"),
        ("curl",), lower=True, group=1, check=_literal, boundary=True, span=420, gates=("curl",),
    ),
    Rule("command-line-password", _c(r"(?i)sshpass\s+-p\s*[\"']?([^\s\"']{1,128})"),
         ("sshpass",), lower=True, group=1, check=_literal, boundary=True, gates=("sshpass",)),
    Rule(
        "command-line-password",
        # case-sensitive on purpose: `-P 3306` is the port, `-p` with no space the password
        _c(r"(?:mysql|mysqldump|mysqladmin|mariadb)\b[^\n|;&]{0,300}?\s-p[\"']?"
           r"([^\s\"'-][^\s\"']{0,127})"),
        ("mysql", "mariadb"), group=1, check=_literal, boundary=True, span=440,
        gates=("mysql", "mariadb"),
    ),
    # A long hex value assigned to a *KEY* name (`SIGNING_KEY=9f86d0...`): no mixed case, so the
    # entropy scan misses it, and the generic assignment rule does not know every *_KEY name.
    Rule(
        "hex-key",
        _c(r"(?i)\b(?P<name>\w*key\w*)[\"']?\s*(?::=|=>|=|:)\s*[\"']?([0-9a-f]{32,128})"
           r"(?![0-9a-z])"),
        ("key",), lower=True, group=2, back=60, span=200, gates=("key",),
    ),
    Rule(
        "authorization-header",
        _c(r"(?i)authorization\b[\"']?\s*[:=]\s*[\"']?"
           r"(?:(?:bearer|basic|token|bot|digest|apikey)\s+)?([A-Za-z0-9._~+/=:-]{8,})"),
        ("authorization",), lower=True, group=1, gates=("authorization",),
    ),
    Rule("bearer-token", _c(r"(?i)bearer\s+([A-Za-z0-9._~+/-]{16,}=*)"), ("bearer",),
         lower=True, group=1, boundary=True, gates=("bearer",)),
    Rule("password", _c(r"(?i)(?P<name>(?:password|passwd|passphrase|pwd)\w*)[\"']?\s*"
                        r"(?::=|=>|=|:)\s*(?P<q>[\"']?)(?P<val>[^\s\"'`,;)}\]]{4,200})"),
         ("password", "passwd", "passphrase", "pwd"), lower=True, group="val",
         check=_value_is_secret, gates=("pass", "pwd")),
    Rule("secret", _c(r"(?i)" + _ASSIGN),
         ("secret", "token", "api_key", "api-key", "apikey", "access_key", "access-key",
          "private_key", "private-key", "auth_key", "auth-key", "credential"),
         lower=True, group="val", check=_value_is_secret,
         gates=("secret", "token", "key", "credential")),
)

# detect-secrets plugin class -> how to run its regexes: (type, needles, back, span).
# Only plugins specific enough to run over whole transcripts without false positives.
_DETECT_SECRETS_PLUGINS: dict[str, tuple[str, tuple[str, ...], int, int]] = {
    "sendgrid.SendGridDetector": ("sendgrid-api-key", ("SG.",), 0, 80),
    "twilio.TwilioKeyDetector": ("twilio-api-key", ("AC", "SK"), 0, 40),
    "mailchimp.MailchimpDetector": ("mailchimp-api-key", ("-us",), 32, 8),
    "square_oauth.SquareOAuthDetector": ("square-oauth-secret", ("sq0csp-",), 0, 60),
    "telegram_token.TelegramBotTokenDetector": ("telegram-bot-token", (":AA",), 11, 40),
    "azure_storage_key.AzureStorageKeyDetector": ("azure-storage-key", ("AccountKey=",), 0, 110),
    "artifactory.ArtifactoryDetector": ("artifactory-token", ("AKC", "AP"), 1, 120),
    "npm.NpmDetector": ("npm-token", ("_authToken",), 300, 300),
}

_LONG_RUN = re.compile(r"\S{32,}")
_TOKEN_RUN = re.compile(r"\S{16,}")
_TOKEN = re.compile(r"[A-Za-z0-9+/_=-]{32,}")


def _library_rules() -> tuple[Rule, ...]:
    """Rules built from detect-secrets' maintained regexes (none if the package is absent)."""
    import importlib

    rules: list[Rule] = []
    for dotted, (kind, needles, back, span) in _DETECT_SECRETS_PLUGINS.items():
        module_name, cls_name = dotted.rsplit(".", 1)
        try:
            module = importlib.import_module(f"detect_secrets.plugins.{module_name}")
        except ImportError:
            continue
        denylist: Iterable[re.Pattern[str]] = getattr(getattr(module, cls_name), "denylist", ())
        gates = tuple(n.lower() for n in needles if len(n) > 6)  # AccountKey=, _authToken
        rules.extend(Rule(kind, pattern, needles, back=back, span=span, boundary=not back,
                          gates=gates) for pattern in denylist)
    return tuple(rules)


@dataclass
class Redactor:
    """Replaces secrets with typed placeholders and keeps `counts` per type.

    `Redactor().redact("key AKIAIOSFODNN7EXAMPLE")` -> `"key [REDACTED:aws-access-key]"`.
    """

    entropy: bool = True
    counts: Counter[str] = field(default_factory=Counter)
    rules: tuple[Rule, ...] = field(default_factory=lambda: _all_rules())  # noqa: PLW0108

    def redact(self, text: str) -> str:
        if len(text) < 8:
            return text
        lower = _lower(text)
        gates, needles = _gates_of(self.rules)
        present = {g for g in gates if g in lower}
        runs = "\n".join(_TOKEN_RUN.findall(text)) if len(text) > 64 else text
        present.update(n for n in needles if n in runs)
        for rule in self.rules:
            if present.isdisjoint(rule.gates or rule.needles):
                continue
            spans = self._find(rule, text, lower if rule.lower else text)
            if spans:
                text = _splice(text, spans)
                lower = _lower(text)
        if self.entropy and _LONG_RUN.search(text):
            text = self._entropy_pass(text)
        return text

    def _find(self, rule: Rule, text: str, hay: str) -> list[tuple[int, int, str]]:
        """(start, end, replacement) of each match of `rule`, looked for at its needles."""
        found: list[tuple[int, int, str]] = []
        done = 0
        for needle in rule.needles:
            i = hay.find(needle)
            while i != -1:
                lo = max(done if found else 0, i - rule.back)
                hi = min(len(text), i + len(needle) + rule.span)
                m = (rule.pattern.search(text, lo, hi) if rule.back
                     else rule.pattern.match(text, i, hi))
                if m is not None and m.start() <= i and self._accept(rule, m, text):
                    found.append((*m.span(rule.group), PLACEHOLDER.format(rule.kind)))
                    self.counts[rule.kind] += 1
                    done = m.end()
                    i = hay.find(needle, max(m.end(), i + 1))
                else:
                    i = hay.find(needle, i + 1)
        return found

    @staticmethod
    def _accept(rule: Rule, match: re.Match[str], text: str) -> bool:
        start = match.start()
        if rule.boundary and start > 0 and text[start - 1].isalnum():
            return False
        return rule.check is None or rule.check(match)

    def _entropy_pass(self, text: str) -> str:
        spans = []
        for start, end in _token_spans(text):
            tok = text[start:end]
            if _high_entropy(tok):
                # `key=VALUE`: keep the name, replace the value
                inner = tok.rstrip("=").rfind("=") + 1
                spans.append((start + inner, end, PLACEHOLDER.format("high-entropy")))
                self.counts["high-entropy"] += 1
        return _splice(text, spans) if spans else text


# Byte table: token characters -> "a", everything else -> " ". Translating ASCII text with it
# and searching for 32 "a"s finds candidate tokens far faster than a regex would.
_TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_=-"
_TABLE = bytes(ord("a") if i in _TOKEN_CHARS else ord(" ") for i in range(256))
_MIN_RUN = b"a" * 32


def _token_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every run of 32+ token characters: `"x " + "A1" * 20` -> [(2, 42)]."""
    if not text.isascii():
        return [m.span() for m in _TOKEN.finditer(text)]
    mapped = text.encode("ascii").translate(_TABLE)
    spans = []
    i = mapped.find(_MIN_RUN)
    while i != -1:
        j = mapped.find(b" ", i)
        j = len(mapped) if j == -1 else j
        spans.append((i, j))
        i = mapped.find(_MIN_RUN, j)
    return spans


def _lower(text: str) -> str:
    """Lower-cased text with the same length, so positions found in it hold in `text`."""
    lower = text.lower()
    if len(lower) != len(text):  # a few characters (such as "İ") grow when lower-cased
        lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return lower


_GATES_CACHE: dict[int, tuple[frozenset[str], frozenset[str]]] = {}


def _gates_of(rules: tuple[Rule, ...]) -> tuple[frozenset[str], frozenset[str]]:
    """The keyword gates (searched in lower-cased text) and the token needles of `rules`."""
    key = id(rules)
    if key not in _GATES_CACHE:
        gates = frozenset(g for r in rules for g in r.gates)
        needles = frozenset(n for r in rules if not r.gates for n in r.needles)
        _GATES_CACHE[key] = (gates, needles)
    return _GATES_CACHE[key]


def _splice(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Apply non-overlapping replacements: `("abcdef", [(1, 3, "X")])` -> `"aXdef"`."""
    out, pos = [], 0
    for start, end, repl in sorted(spans):
        if start < pos:
            continue  # overlaps a replacement already made
        out += [text[pos:start], repl]
        pos = end
    out.append(text[pos:])
    return "".join(out)


_RULES_CACHE: list[tuple[Rule, ...]] = []


def _all_rules() -> tuple[Rule, ...]:
    """Own rules first (they name types precisely), then detect-secrets' provider rules."""
    if not _RULES_CACHE:
        own = OWN_RULES[:-2]
        assignments = OWN_RULES[-2:]  # generic NAME=value rules go last: they are the fallback
        _RULES_CACHE.append(own + _library_rules() + assignments)
    return _RULES_CACHE[0]


def redact_text(text: str) -> tuple[str, dict[str, int]]:
    """One-shot helper: `("token ghp_...", )` -> `("token [REDACTED:github-token]", {...})`."""
    redactor = Redactor()
    return redactor.redact(text), dict(redactor.counts)
