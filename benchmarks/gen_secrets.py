"""Seeded generator of planted fake secrets inside real agent transcripts, for the security bench.

Every token is built at run time from its family's shape with ``random.Random(seed)``, so the
repository holds no credential-shaped literal and no real secret. Each planted instance is a
(family, context, encoding) triple:

- **families** (39): provider tokens (AWS, GitHub, GitLab, Slack, Stripe, OpenAI, Anthropic,
  Google, HF, npm, PyPI, SendGrid, Twilio, Discord, Telegram, Azure, Shopify, DigitalOcean,
  Datadog), JWT, PEM/OpenSSH private keys, passwords in URLs and connection strings, bearer and
  basic auth headers, ``.netrc``, docker ``auths``, generic ``password=`` / ``api_key:``
  assignments and an opaque high-entropy ``secret:`` value;
- **contexts** (6): prose (user/assistant text), a shell command (tool input ``command``), a JSON
  document in a tool input, file content printed by ``cat`` (a tool result), a diff hunk, log or
  traceback output;
- **encodings** (5): raw; JSON-escaped (the snippet serialized inside a JSON document, so quotes
  appear as ``\\"``); URL-encoded (the carrier line in a query string); base64 (the carrier line
  base64-encoded); split (the secret cut at its middle by a newline, as ``fold`` does).

The snippet is inserted at a random line boundary of a string value of a real transcript line
from ``shared/corpus`` (read in place), so what surrounds it is real. Ground truth is exact: for
each instance, the field path (in the pipeline's notation, e.g. ``message.content[0].text``)
and every piece of the value as it appears in that field, with offsets. Clean negatives (hashes,
UUIDs, digests, integrity strings, images, minified JS, lockfiles, placeholders, the documented
AWS example key) are planted the same way.

    python benchmarks/gen_secrets.py OUT --seed 1 --reps 2   # writes records.jsonl, truth.jsonl
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import string
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
CONTEXTS = ("prose", "command", "json_input", "file_output", "diff", "log")
ENCODINGS = ("raw", "json", "url", "base64", "split")

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
PASSWORD = ALNUM + "_-!*."

# -- families -------------------------------------------------------------------------------


@dataclass
class Plant:
    """A secret in its natural carrier: ``kind`` assign (``key{sep}secret``), header, url
    (``text`` is a URL holding the secret) or block (``text`` is a file's content)."""

    secret: str
    kind: str
    key: str
    text: str
    prefix: str = ""  # public, constant part of the secret (never counted as a leak)
    sep: str = "="


def _c(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _pw(rng: random.Random) -> str:
    # mixed classes, as password managers make them; at least one digit so it is not a word
    return _c(rng, PASSWORD, rng.randint(13, 20)) + rng.choice(string.digits)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _assign(key: str, prefix: str, body: str, sep: str = "=") -> Plant:
    secret = prefix + body
    return Plant(secret, "assign", key, f"{key}{sep}{secret}", prefix, sep)


def _pem(rng: random.Random, label: str, lines: int, width: int, lead: str = "") -> Plant:
    raw = lead + _c(rng, B64, lines * width - len(lead))
    body = "\n".join(raw[i:i + width] for i in range(0, len(raw), width))
    text = f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"
    return Plant(body, "block", "id_key.pem", text, lead)


def _url(key: str, secret: str, template: str) -> Plant:
    return Plant(secret, "url", key, template.format(secret))


def _jwt(rng: random.Random) -> Plant:
    head = _b64url(json.dumps({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}).encode())
    claims = {"sub": str(rng.randint(10**6, 10**9)), "iat": rng.randint(17 * 10**8, 18 * 10**8),
              "scope": rng.choice(["read write", "admin", "deploy"])}
    token = f"{head}.{_b64url(json.dumps(claims).encode())}.{_b64url(rng.randbytes(32))}"
    return _assign("AUTH_JWT", "", token)


def _docker(rng: random.Random) -> Plant:
    auth = _b64(f"ci-bot:{_pw(rng)}")
    text = json.dumps({"auths": {"registry.example.com": {"auth": auth}}}, indent=2)
    return Plant(auth, "block", ".docker/config.json", text)


def _netrc(rng: random.Random) -> Plant:
    pw = _pw(rng)
    return Plant(pw, "block", ".netrc", f"machine api.example.com\n  login deploy\n  password {pw}")


def _azure(rng: random.Random) -> Plant:
    key = _c(rng, B64, 86) + "=="
    text = (f"DefaultEndpointsProtocol=https;AccountName=st{_c(rng, string.ascii_lowercase, 8)}"
            f";AccountKey={key};EndpointSuffix=core.windows.net")
    return Plant(key, "assign", "AZURE_STORAGE_CONNECTION_STRING",
                 f"AZURE_STORAGE_CONNECTION_STRING={text}")


def _slack_webhook(rng: random.Random) -> Plant:
    pre = "https://hooks.slack.com/services/"
    secret = (pre + "T" + _c(rng, string.ascii_uppercase + string.digits, 10) + "/B"
              + _c(rng, string.ascii_uppercase + string.digits, 10) + "/" + _c(rng, ALNUM, 24))
    return Plant(secret, "url", "SLACK_WEBHOOK_URL", secret, pre)


def _digits(rng: random.Random, lo: int, hi: int) -> str:
    return str(rng.randint(10 ** (lo - 1), 10**hi - 1))


FAMILIES: dict[str, Callable[[random.Random], Plant]] = {
    "aws-access-key-id": lambda r: _assign("AWS_ACCESS_KEY_ID", "AKIA",
                                           _c(r, string.ascii_uppercase + "234567", 16)),
    "aws-secret-key": lambda r: _assign("AWS_SECRET_ACCESS_KEY", "", _c(r, B64, 40)),
    "github-ghp": lambda r: _assign("GITHUB_TOKEN", "ghp_", _c(r, ALNUM, 36)),
    "github-gho": lambda r: _assign("GH_OAUTH_TOKEN", "gho_", _c(r, ALNUM, 36)),
    "github-ghs": lambda r: _assign("GH_APP_TOKEN", "ghs_", _c(r, ALNUM, 36)),
    "github-pat": lambda r: _assign("GH_TOKEN", "github_pat_",
                                    _c(r, ALNUM, 22) + "_" + _c(r, ALNUM, 59)),
    "gitlab-pat": lambda r: _assign("GITLAB_TOKEN", "glpat-", _c(r, B64URL, 20)),
    "slack-bot": lambda r: _assign("SLACK_BOT_TOKEN", "xoxb-",
                                   f"{_digits(r, 11, 12)}-{_digits(r, 12, 13)}-{_c(r, ALNUM, 24)}"),
    "slack-user": lambda r: _assign("SLACK_USER_TOKEN", "xoxp-",
                                    f"{_digits(r, 11, 12)}-{_digits(r, 12, 13)}-"
                                    f"{_digits(r, 12, 13)}-{_c(r, HEX, 32)}"),
    "slack-webhook": _slack_webhook,
    "stripe-live": lambda r: _assign("STRIPE_SECRET_KEY", "sk_live_",
                                     _c(r, ALNUM, r.choice([24, 99]))),
    "openai-project": lambda r: _assign("OPENAI_API_KEY", "sk-proj-",
                                        _c(r, B64URL, 74) + "T3BlbkFJ" + _c(r, B64URL, 74)),
    "anthropic": lambda r: _assign("ANTHROPIC_API_KEY", "sk-ant-api03-",
                                   _c(r, B64URL, 93) + "AA"),
    "google-api-key": lambda r: _assign("GOOGLE_API_KEY", "AIza", _c(r, B64URL, 35)),
    "huggingface": lambda r: _assign("HF_TOKEN", "hf_", _c(r, string.ascii_letters, 34)),
    "npm": lambda r: _assign("NPM_TOKEN", "npm_", _c(r, ALNUM, 36)),
    "pypi": lambda r: _assign("TWINE_PASSWORD", "pypi-AgEIcHlwaS5vcmc", _c(r, B64URL, 150)),
    "sendgrid": lambda r: _assign("SENDGRID_API_KEY", "SG.",
                                  _c(r, B64URL, 22) + "." + _c(r, B64URL, 43)),
    "twilio": lambda r: _assign("TWILIO_API_KEY", "SK", _c(r, HEX, 32)),
    "discord-bot": lambda r: _assign("DISCORD_BOT_TOKEN", "",
                                     r.choice("MN") + _c(r, B64URL, 25) + "." + _c(r, B64URL, 6)
                                     + "." + _c(r, B64URL, 38)),
    "telegram-bot": lambda r: _assign("TELEGRAM_BOT_TOKEN", "",
                                      f"{_digits(r, 9, 10)}:AA{_c(r, B64URL, 33)}"),
    "azure-storage": _azure,
    "shopify": lambda r: _assign("SHOPIFY_ACCESS_TOKEN", "shpat_", _c(r, HEX, 32)),
    "digitalocean": lambda r: _assign("DIGITALOCEAN_TOKEN", "dop_v1_", _c(r, HEX, 64)),
    "datadog": lambda r: _assign("DD_API_KEY", "", _c(r, HEX, 32)),
    "jwt": _jwt,
    "pem-rsa": lambda r: _pem(r, "RSA PRIVATE KEY", 25, 64, "MIIE"),
    "pem-ec": lambda r: _pem(r, "EC PRIVATE KEY", 3, 64, "MHcCAQEE"),
    "pem-openssh": lambda r: _pem(r, "OPENSSH PRIVATE KEY", 7, 70,
                                  "b3BlbnNzaC1rZXktdjEAAAAA"),
    "url-userinfo": lambda r: _url("GIT_REMOTE", _pw(r),
                                   "https://deploy:{}@git.example.com/acme/infra.git"),
    "conn-postgres": lambda r: _url("DATABASE_URL", _pw(r),
                                    "postgres://app:{}@db.internal:5432/app?sslmode=require"),
    "conn-mongodb": lambda r: _url("MONGO_URI", _pw(r),
                                   "mongodb+srv://admin:{}@cluster0.x7k2p.mongodb.net/prod"),
    "bearer-header": lambda r: (lambda t: Plant(t, "header", "Authorization",
                                                f"Authorization: Bearer {t}"))(_c(r, B64URL, 40)),
    "basic-auth-header": lambda r: (lambda t: Plant(t, "header", "Authorization",
                                                    f"Authorization: Basic {t}"))(
        _b64(f"admin:{_pw(r)}")),
    "netrc": _netrc,
    "docker-auths": _docker,
    "generic-password": lambda r: _assign(r.choice(["password", "DB_PASSWORD", "db_pass"]), "",
                                          _pw(r), r.choice(["=", ": "])),
    "generic-api-key": lambda r: _assign(r.choice(["api_key", "apiKey", "API_KEY"]), "",
                                         _c(r, ALNUM, r.randint(24, 40)), r.choice([": ", "="])),
    "opaque-secret": lambda r: _assign("secret", "", _c(r, B64URL, 40), ": "),
}

# -- contexts -------------------------------------------------------------------------------

ENV_FILLER = ["NODE_ENV=production", "PORT=3000", "LOG_LEVEL=debug", "DATABASE_HOST=localhost",
              "FEATURE_FLAGS=search,export", "TZ=UTC", "WORKERS=4"]
PROSE_LEAD = ["I set this in my shell and the deploy still fails with 401:",
              "Here's what my config has right now:", "Can you check why this doesn't work?",
              "FYI the staging credentials are below, use them for the test run:",
              "The CI job prints this before it dies:"]
PROSE_TAIL = ["Any idea what's wrong?", "Please wire it into the settings module.",
              "It worked yesterday.", "Don't commit it, obviously."]


@dataclass
class Payload:
    """What the context wraps: the carrier itself, or its URL-encoded / base64 form."""

    kind: str  # assign | header | url | block | b64
    key: str
    value: str  # what a JSON document or an env line holds
    text: str  # the line as written
    sep: str = "="


def _prose(p: Payload, rng: random.Random) -> str:
    lead, tail = rng.choice(PROSE_LEAD), rng.choice(PROSE_TAIL)
    if p.kind == "block":
        return f"{lead}\n\n```\n{p.text}\n```\n\n{tail}"
    return f"{lead} `{p.text}` {tail}"


def _command(p: Payload, rng: random.Random) -> str:
    if p.kind == "assign" and p.sep == "=":
        return f"export {p.text} && npm run deploy -- --env staging"
    if p.kind == "assign":
        return f"echo '{p.text}' >> config/settings.yaml && make reload"
    if p.kind == "header":
        return f'curl -sS -H "{p.text}" https://api.example.com/v1/me | jq .'
    if p.kind == "url":
        return rng.choice([f'curl -fsS "{p.text}"', f'git remote set-url origin "{p.text}"'])
    if p.kind == "b64":
        return f"echo {p.text} | base64 -d > .env && source .env"
    return f"mkdir -p ~/.ssh && cat > ~/{p.key} <<'EOF'\n{p.text}\nEOF\nchmod 600 ~/{p.key}"


def _json_input(p: Payload, rng: random.Random) -> str:
    section = {"assign": "env", "header": "headers", "url": "endpoints", "block": "files",
               "b64": "data"}[p.kind]
    doc = {"name": "deploy-staging", "version": rng.randint(1, 9), section: {p.key: p.value},
           "retries": 3}
    return json.dumps(doc, indent=2)


def _env_line(p: Payload) -> str:
    if p.kind == "assign":
        return p.text
    if p.kind == "header":
        return f'AUTH_HEADER="{p.value}"'
    return f"{p.key}={p.value}"


def _file_output(p: Payload, rng: random.Random) -> str:
    if p.kind == "block":
        return p.text
    lines = rng.sample(ENV_FILLER, 4)
    lines.insert(rng.randint(0, 4), _env_line(p))
    return "\n".join(lines) + "\n"


def _diff(p: Payload, rng: random.Random) -> str:
    name = p.key if p.kind == "block" else ".env"
    added = "\n".join("+" + line for line in (p.text if p.kind == "block" else _env_line(p))
                      .split("\n"))
    index = f"{_c(rng, HEX, 7)}..{_c(rng, HEX, 7)}"
    return (f"diff --git a/{name} b/{name}\nindex {index} 100644\n--- a/{name}\n+++ b/{name}\n"
            f"@@ -1,3 +1,{3 + added.count(chr(10)) + 1} @@\n NODE_ENV=production\n{added}\n"
            f" PORT=3000\n LOG_LEVEL=info\n")


def _log(p: Payload, rng: random.Random) -> str:
    stamp = f"2026-03-{rng.randint(10, 28)} 10:{rng.randint(10, 59)}:17,481"
    if p.kind == "header":
        return (f"DEBUG:urllib3.connectionpool:Starting new HTTPS connection (1): "
                f"api.example.com:443\nsend: b'GET /v1/me HTTP/1.1\\r\\nHost: api.example.com"
                f"\\r\\n{p.text}\\r\\n\\r\\n'\nreply: 'HTTP/1.1 401 Unauthorized\\r\\n'")
    if p.kind == "url":
        return (f"{stamp} ERROR worker: request failed\nTraceback (most recent call last):\n"
                f'  File "/app/sync.py", line 88, in push\n    resp.raise_for_status()\n'
                f"requests.exceptions.HTTPError: 403 Client Error: Forbidden for url: {p.text}")
    if p.kind == "block":
        return (f"Traceback (most recent call last):\n  File \"deploy.py\", line 12, in <module>"
                f"\n    key = load_key(path)\nValueError: could not parse key file contents:\n"
                f"{p.text}")
    return (f"{stamp} DEBUG settings: loaded {_env_line(p)}\n"
            f"{stamp} ERROR client: 401 Unauthorized (check credentials)")


CONTEXT_RENDER: dict[str, Callable[[Payload, random.Random], str]] = {
    "prose": _prose, "command": _command, "json_input": _json_input,
    "file_output": _file_output, "diff": _diff, "log": _log}
#: for the JSON-escaped encoding: the document the snippet is serialized into
JSON_WRAP = {"prose": "event", "command": "script", "json_input": "payload",
             "file_output": "stdout", "diff": "patch", "log": "log"}
#: the transcript fields each context is planted in (see :func:`_role`)
CONTEXT_ROLE = {"prose": "prose", "command": "command", "json_input": "tool_input",
                "file_output": "tool_result", "diff": "tool_result", "log": "tool_result"}


def _split(secret: str) -> list[str]:
    m = len(secret) // 2
    return [secret[:m], secret[m:]]


def render(plant: Plant, context: str, encoding: str, rng: random.Random
           ) -> tuple[str, list[str]]:
    """(snippet, pieces): every piece occurs in the snippet, in order, exactly as written."""
    text, value = plant.text, plant.secret
    pieces = [plant.secret]
    if encoding == "split":
        pieces = _split(plant.secret)
        value = "\n".join(pieces)
        text = text.replace(plant.secret, value)
    if plant.kind == "assign":
        value = text[len(plant.key) + len(plant.sep):]
    elif plant.kind == "header":
        value = text.split(": ", 1)[1]
    elif plant.kind in ("url", "block"):
        value = text
    payload = Payload(plant.kind, plant.key, value, text, plant.sep)
    if encoding == "url":
        url = (f"https://hooks.example.com/ingest?state={_c(rng, ALNUM, 8)}"
               f"&cfg={quote(text, safe='')}&v=2")
        payload = Payload("url", "CALLBACK_URL", url, url)
        pieces = [quote(p, safe="") for p in pieces]
    elif encoding == "base64":
        run = _b64(text + "\n")
        payload = Payload("b64", "CONFIG_B64", run, run)
        pieces = [run]
    snippet = CONTEXT_RENDER[context](payload, rng)
    if context == "diff" and payload.kind == "block":  # each line of the block starts with +
        pieces = [line for p in pieces for line in p.split("\n") if line]
    if context == "json_input":
        pieces = [_escape(p) for p in pieces]
    if encoding == "json":
        doc = {"type": "tool_output", JSON_WRAP[context]: snippet, "exit_code": 1}
        snippet = ("Here is the raw event: " if context == "prose" else "") + json.dumps(doc)
        pieces = [_escape(p) for p in pieces]
    return snippet, pieces


def _escape(text: str) -> str:
    return json.dumps(text)[1:-1]


# -- negatives ------------------------------------------------------------------------------


def _aws_example() -> str:
    # AWS's documented example pair, assembled so the literal is not in the repository
    return (f"AWS_ACCESS_KEY_ID={'AKIA' + 'IOSFODNN7' + 'EXAMPLE'}\n"
            f"AWS_SECRET_ACCESS_KEY={'wJalrXUtnFEMI/K7MDENG/' + 'bPxRfiCY' + 'EXAMPLEKEY'}")


def _minified_js(rng: random.Random) -> str:
    names = [_c(rng, string.ascii_letters, rng.randint(1, 2)) for _ in range(40)]
    parts = []
    for _ in range(rng.randint(60, 200)):
        a, b, c = rng.sample(names, 3)
        parts.append(rng.choice([
            f"function {a}({b},{c}){{return {b}&&{c}.{a}?{b}[{c}]:void 0}}",
            f"var {a}={b}.prototype.hasOwnProperty,{c}=Object.assign||function(t){{return t}};",
            f'{a}.exports={{default:{b},__esModule:!0,"{_c(rng, HEX, 8)}":{c}}};',
            f"{a}=({b}=>{b}.map(({c})=>{c}*{rng.randint(2, 999)}))({a});"]))
    return "!function(e,t){" + "".join(parts) + "}(this,window);"


def _lockfile(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(3, 8)):
        name = _c(rng, string.ascii_lowercase, rng.randint(4, 10))
        ver = f"{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 30)}"
        out.append(f'    "node_modules/{name}": {{\n      "version": "{ver}",\n'
                   f'      "resolved": "https://registry.npmjs.org/{name}/-/{name}-{ver}.tgz",\n'
                   f'      "integrity": "sha512-{_b64(_c(rng, ALNUM, 64))[:86]}=="\n    }}')
    return "{\n  \"packages\": {\n" + ",\n".join(out) + "\n  }\n}"


NEGATIVES: dict[str, Callable[[random.Random], str]] = {
    "git-sha": lambda r: "\n".join(f"{_c(r, HEX, 40)} {w}" for w in
                                   ("Fix flaky test", "Bump deps", "Merge branch 'main'")),
    "git-log": lambda r: f"commit {_c(r, HEX, 40)}\nAuthor: CI <ci@example.com>\n\n    release",
    "sha256": lambda r: f"{_c(r, HEX, 64)}  dist/app-1.2.0.tar.gz",
    "sha512": lambda r: f"SHA512 (build.zip) = {_c(r, HEX, 128)}",
    "uuid": lambda r: " ".join("-".join(_c(r, HEX, n) for n in (8, 4, 4, 4, 12))
                               for _ in range(4)),
    "docker-digest": lambda r: f"FROM python:3.11-slim@sha256:{_c(r, HEX, 64)}",
    "npm-integrity": lambda r: f'"integrity": "sha512-{_b64(_c(r, ALNUM, 64))[:86]}=="',
    "base64-image": lambda r: "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA"
                              + base64.b64encode(r.randbytes(r.randint(2000, 6000))).decode(),
    "minified-js": _minified_js,
    "lockfile": _lockfile,
    "placeholders": lambda r: r.choice([
        "API_KEY=<YOUR_API_KEY>", "export GITHUB_TOKEN=${TOKEN}", "OPENAI_API_KEY=sk-...",
        "password: ${DB_PASSWORD}", "api_key: your-api-key-here", "token = \"xxxxxxxxxxxxxxxx\"",
        "Authorization: Bearer <token>", "postgres://user:password@localhost:5432/db",
        "SECRET_KEY=changeme", "apiKey: process.env.API_KEY"]),
    "aws-example": lambda r: _aws_example(),
}

# -- the corpus -----------------------------------------------------------------------------

Path_ = tuple[str | int, ...]
_COMMAND = re.compile(r"(?:^|\.)(?:input|arguments|args)\.(?:command|cmd)$")
_TOOL_INPUT = re.compile(r"(?:^|\.)(?:input|arguments|args)\.(?:content|new_string|newText)$")
_RESULT = re.compile(r"^message\.content\[\]\.content(?:\[\]\.text)?$|^toolUseResult\.stdout$"
                     r"|^payload\.(?:output|aggregated_output)$|response\.output$")
_TEXT = re.compile(r"^message\.content(?:\[\]\.text)?$|^payload\.content\[\]\.text$")
MAX_FIELD = 40_000  # keep planted records small enough that the bench stays fast
MAX_LINE = 300_000


def dotted(path: Path_) -> str:
    """The pipeline's notation for a field: ``a.b[2].c``."""
    out = ""
    for part in path:
        out = f"{out}[{part}]" if isinstance(part, int) else (f"{out}.{part}" if out else part)
    return out


def strings(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, (*path, i))


def get(value: Any, path: Path_) -> Any:
    for part in path:
        value = value[part]
    return value


def _set(value: Any, path: Path_, new: str) -> None:
    get(value, path[:-1])[path[-1]] = new


def corpus_records(corpus: Path = CORPUS) -> Iterator[tuple[str, Any]]:
    """(``file:line`` id, parsed value) of every transcript record under ``corpus``; a line
    holding two concatenated records (a real pi writer artifact) gives both."""
    decoder = json.JSONDecoder()
    for f in sorted(corpus.rglob("*")):
        rel = f.relative_to(corpus).as_posix()
        if f.suffix == ".json":
            yield rel, json.loads(f.read_text(encoding="utf-8"))
        elif f.suffix == ".jsonl":
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                pos, k = 0, 0
                while pos < len(line.rstrip()):
                    try:
                        obj, pos = decoder.raw_decode(line, pos)
                    except json.JSONDecodeError:
                        yield f"{rel}:{n}", line  # kept as text: still corpus text to scan
                        break
                    yield (f"{rel}:{n}" if k == 0 else f"{rel}:{n}#{k}"), obj
                    k += 1


def _role(obj: Any, path: Path_) -> str | None:
    norm = "".join("[]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    if _COMMAND.search(norm):
        return "command"
    if _TOOL_INPUT.search(norm):
        return "tool_input"
    if _RESULT.search(norm):
        return "tool_result"
    if _TEXT.search(norm) and isinstance(obj, dict):
        holder = obj.get("message") or obj.get("payload") or {}
        role = holder.get("role") if isinstance(holder, dict) else None
        if role in ("user", "assistant"):
            return "prose"
        if role == "toolResult":
            return "tool_result"
    return None


@dataclass
class Slot:
    source: str
    obj_json: str
    path: Path_


def corpus_slots(corpus: Path = CORPUS) -> dict[str, list[Slot]]:
    """String fields of real records, by role (prose, command, tool_input, tool_result)."""
    slots: dict[str, list[Slot]] = {"prose": [], "command": [], "tool_input": [],
                                    "tool_result": []}
    for source, obj in corpus_records(corpus):
        if not isinstance(obj, dict):
            continue
        line = None
        for path, text in strings(obj):
            role = _role(obj, path)
            if role is None or not 0 < len(text) <= MAX_FIELD:
                continue
            line = line or json.dumps(obj)
            if len(line) <= MAX_LINE:
                slots[role].append(Slot(source, line, path))
    return slots


# -- planting -------------------------------------------------------------------------------


@dataclass
class Instance:
    """One planted value: ``pieces`` are (start, end, text) in the field at ``path``."""

    record: int
    record_id: str
    path: str
    family: str
    context: str
    encoding: str
    secret: str
    prefix: str
    pieces: list[tuple[int, int, str]] = field(default_factory=list)
    source: str = ""
    #: (offset, length) of the text inserted into the real field
    inserted: tuple[int, int] = (0, 0)


@dataclass
class Generated:
    records: list[Any]
    instances: list[Instance]
    negatives: list[Any]
    negative_instances: list[Instance]


def _plant(slot: Slot, snippet: str, pieces: list[str], rng: random.Random
           ) -> tuple[Any, Path_, list[tuple[int, int, str]], tuple[int, int]]:
    obj = json.loads(slot.obj_json)
    text = get(obj, slot.path)
    pos = rng.randint(0, len(text))
    newline = text.find("\n", pos)
    pos = len(text) if newline < 0 else newline + 1  # at a line boundary, as pasted text is
    before = "" if pos == 0 or text[pos - 1] == "\n" else "\n"
    start = pos + len(before)
    inserted = before + snippet + "\n"
    _set(obj, slot.path, text[:pos] + inserted + text[pos:])
    found, at = [], 0
    for piece in pieces:
        i = snippet.find(piece, at)
        if i < 0:
            raise AssertionError(f"piece not in snippet: {piece!r}")
        found.append((start + i, start + i + len(piece), piece))
        at = i + len(piece)
    return obj, slot.path, found, (pos, len(inserted))


def generate(seed: int = 1, reps: int = 2, negatives: int = 20,
             corpus: Path = CORPUS, families: list[str] | None = None) -> Generated:
    """``reps`` instances of every (family, context, encoding), ``negatives`` of every clean
    kind, each in its own copy of a real record."""
    rng = random.Random(seed)
    slots = corpus_slots(corpus)
    records: list[Any] = []
    instances: list[Instance] = []
    for family in families or list(FAMILIES):
        for context in CONTEXTS:
            for encoding in ENCODINGS:
                for _ in range(reps):
                    plant = FAMILIES[family](rng)
                    snippet, pieces = render(plant, context, encoding, rng)
                    slot = rng.choice(slots[CONTEXT_ROLE[context]])
                    obj, path, found, inserted = _plant(slot, snippet, pieces, rng)
                    rid = f"pos-{len(records):05d}"
                    instances.append(Instance(len(records), rid, dotted(path), family, context,
                                              encoding, plant.secret, plant.prefix, found,
                                              slot.source, inserted))
                    records.append(obj)
    neg_records: list[Any] = []
    neg_instances: list[Instance] = []
    for kind, make in NEGATIVES.items():
        for n in range(negatives):
            snippet = make(rng)
            role = "prose" if n % 3 == 0 else "tool_result"
            slot = rng.choice(slots[role])
            obj, path, found, inserted = _plant(slot, snippet, [snippet], rng)
            rid = f"neg-{len(neg_records):05d}"
            neg_instances.append(Instance(len(neg_records), rid, dotted(path), kind, role,
                                          "raw", snippet, "", found, slot.source, inserted))
            neg_records.append(obj)
    return Generated(records, instances, neg_records, neg_instances)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--negatives", type=int, default=20)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    gen = generate(args.seed, args.reps, args.negatives, args.corpus)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "records.jsonl").open("w") as f:
        for inst, rec in [*zip(gen.instances, gen.records, strict=True),
                          *zip(gen.negative_instances, gen.negatives, strict=True)]:
            f.write(json.dumps({"id": inst.record_id, "record": rec}) + "\n")
    with (args.out / "truth.jsonl").open("w") as f:
        for inst in [*gen.instances, *gen.negative_instances]:
            f.write(json.dumps(asdict(inst)) + "\n")
    print(f"{len(gen.instances)} planted, {len(gen.negative_instances)} negatives -> {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
