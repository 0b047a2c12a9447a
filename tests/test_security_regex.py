"""The regex tool: one planted secret per family with its exact span, the look-alikes it must
leave alone, idempotence, bounded time on adversarial input, and its false positives on the
real corpus.

Every token is built at runtime from a prefix and seeded random characters, so the repository
holds nothing that looks like a live credential.
"""

from __future__ import annotations

import base64
import json
import random
import string
import time
import uuid
from collections.abc import Callable
from urllib.parse import quote

import pytest

from opentraces.security import Context, load_tools, sanitize
from opentraces.security.regex import SPECS, RegexTool
from tests.conftest import CORPUS

ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "_-"
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"
UPPER = string.ascii_uppercase + string.digits


def pick(rng: random.Random, alphabet: str, n: int) -> str:
    """``n`` characters of ``alphabet`` that mix cases and digits, like a real token."""
    while True:
        out = "".join(rng.choice(alphabet) for _ in range(n))
        kinds = (any(c.islower() for c in out) + any(c.isupper() for c in out)
                 + any(c.isdigit() for c in out))
        if kinds >= min(2, len({c.isdigit() or c.isupper() for c in alphabet})) and \
                "xxxx" not in out.lower() and "fake" not in out.lower():
            return out


def b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def b64url(data: str) -> str:
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def pem(rng: random.Random, label: str, headers: str = "") -> str:
    lines = [pick(rng, B64, 64) for _ in range(6)]
    return (f"-----BEGIN {label}PRIVATE KEY-----\n{headers}" + "\n".join(lines)
            + f"\n-----END {label}PRIVATE KEY-----")


#: (family, case name, build(rng) -> (text, secret value))
Case = tuple[str, str, Callable[[random.Random], tuple[str, str]]]


def _shaped(template: str, make: Callable[[random.Random], str]
            ) -> Callable[[random.Random], tuple[str, str]]:
    def build(rng: random.Random) -> tuple[str, str]:
        value = make(rng)
        return template.format(v=value), value
    return build


def _jwt(rng: random.Random) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}))
    body = b64url(json.dumps({"sub": pick(rng, ALNUM, 12), "iat": rng.randrange(10**9)}))
    return f"{head}.{body}.{pick(rng, B64URL, 43)}"


def _discord(rng: random.Random) -> str:
    bot_id = str(rng.randrange(10**17, 10**18))
    return f"{b64url(bot_id)}.{pick(rng, B64URL, 6)}.{pick(rng, B64URL, 27)}"


def _gcp(rng: random.Random) -> tuple[str, str]:
    doc = json.dumps({"type": "service_account", "project_id": "p",
                      "private_key_id": pick(rng, HEX, 40),
                      "private_key": pem(rng, "") + "\n", "client_email": "sa@p.iam"})
    start = doc.index("-----BEGIN")
    end = doc.index('"', start)
    return doc, doc[start:end]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128)))


CASES: list[Case] = [
    ("aws-access-key", "id", _shaped("aws_access_key_id = {v}\n",
                                     lambda r: "AKIA" + pick(r, string.ascii_uppercase + "234567",
                                                             16))),
    ("aws-secret-key", "ini", _shaped("[default]\naws_secret_access_key = {v}\n",
                                      lambda r: pick(r, B64, 40))),
    ("github", "ghp", _shaped("export GITHUB_TOKEN={v}", lambda r: "ghp_" + pick(r, ALNUM, 36))),
    ("github", "gho", _shaped('{{"oauth": "{v}"}}', lambda r: "gho_" + pick(r, ALNUM, 36))),
    ("github", "ghu", _shaped("x {v} y", lambda r: "ghu_" + pick(r, ALNUM, 36))),
    ("github", "ghs", _shaped("origin https://x-access-token:{v}@github.com/o/r.git (fetch)",
                              lambda r: "ghs_" + pick(r, ALNUM, 36))),
    ("github", "ansi", _shaped("\x1b[32m{v}\x1b[0m", lambda r: "ghp_" + pick(r, ALNUM, 36))),
    ("github", "ghr", _shaped("refresh={v}", lambda r: "ghr_" + pick(r, ALNUM, 36))),
    ("github", "pat", _shaped("gh auth login --with-token <<< {v}",
                              lambda r: f"github_pat_{pick(r, ALNUM, 22)}_{pick(r, ALNUM, 59)}")),
    ("gitlab", "glpat", _shaped("git clone https://oauth2:{v}@gitlab.com/g/p.git",
                                lambda r: "glpat-" + pick(r, B64URL, 20))),
    ("slack", "bot", _shaped("SLACK_BOT_TOKEN={v}", lambda r: (
        f"xoxb-{r.randrange(10**10, 10**11)}-{r.randrange(10**12, 10**13)}-"
        f"{pick(r, ALNUM, 24)}"))),
    ("slack-webhook", "hook", _shaped("curl -X POST https://hooks.slack.com/services/{v} -d x",
                                      lambda r: f"T{pick(r, UPPER, 8)}/B{pick(r, UPPER, 10)}"
                                      f"/{pick(r, ALNUM, 24)}")),
    ("stripe", "live", _shaped("stripe.api_key = '{v}'",
                               lambda r: "sk_live_" + pick(r, ALNUM, 24))),
    ("stripe", "test", _shaped("STRIPE={v}", lambda r: "sk_test_" + pick(r, ALNUM, 24))),
    ("stripe", "restricted", _shaped("k: {v}", lambda r: "rk_live_" + pick(r, ALNUM, 24))),
    ("openai", "legacy", _shaped("OPENAI_API_KEY={v}", lambda r: "sk-" + pick(r, ALNUM, 48))),
    ("openai", "proj", _shaped('client = OpenAI(api_key="{v}")',
                               lambda r: "sk-proj-" + pick(r, B64URL, 120))),
    ("anthropic", "api03", _shaped("ANTHROPIC_API_KEY={v}",
                                   lambda r: "sk-ant-api03-" + pick(r, B64URL, 93) + "AA")),
    ("google-api-key", "aiza", _shaped("https://maps.googleapis.com/x?key={v}&q=1",
                                       lambda r: "AIza" + pick(r, B64URL, 35))),
    ("gcp-service-account", "json", _gcp),
    ("huggingface", "hf", _shaped("HF_TOKEN={v}", lambda r: "hf_" + pick(r, string.ascii_letters,
                                                                       34))),
    ("npm", "npmrc", _shaped("//registry.npmjs.org/:_authToken={v}",
                             lambda r: "npm_" + pick(r, ALNUM, 36))),
    ("npm", "json-escaped", _shaped('{{"cmd": "echo token=\\"{v}\\""}}',
                                    lambda r: "npm_" + pick(r, ALNUM, 36))),
    ("pypi", "pypirc", _shaped("[pypi]\nusername = __token__\npassword = {v}\n",
                               lambda r: "pypi-AgEIcHlwaS5vcmc" + pick(r, B64URL, 70))),
    ("sendgrid", "sg", _shaped("SENDGRID={v}",
                               lambda r: f"SG.{pick(r, B64URL, 22)}.{pick(r, B64URL, 43)}")),
    ("twilio", "sk", _shaped("client = Twilio('{v}', auth)", lambda r: "SK" + pick(r, HEX, 32))),
    ("discord", "bot", _shaped("import discord\nclient.run('{v}')", _discord)),
    ("telegram", "bot", _shaped("bot = Bot('{v}')", lambda r: (
        f"{r.randrange(10**9, 10**10)}:AA{pick(r, B64URL, 33)}"))),
    ("azure-storage", "conn", _shaped(
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={v};"
        "EndpointSuffix=core.windows.net", lambda r: pick(r, B64, 86) + "==")),
    ("mailgun", "key", _shaped("MG={v}", lambda r: "key-" + pick(r, HEX, 32))),
    ("mailchimp", "key", _shaped("mc: {v}", lambda r: pick(r, HEX, 32) + "-us6")),
    ("shopify", "shpat", _shaped("X-Shopify-Access-Token: {v}",
                                 lambda r: "shpat_" + pick(r, HEX, 32))),
    ("digitalocean", "dop", _shaped("doctl auth init -t {v}",
                                    lambda r: "dop_v1_" + pick(r, HEX, 64))),
    ("heroku", "uuid", _shaped("HEROKU_API_KEY={v}", _uuid)),
    ("datadog", "dd", _shaped("DD_API_KEY={v}", lambda r: pick(r, HEX, 32))),
    ("jwt", "header", _shaped("cookie: session={v}; path=/", _jwt)),
    ("private-key", "rsa", _shaped("$ cat id_rsa\n{v}\n$ ls", lambda r: pem(r, "RSA "))),
    ("private-key", "ec", _shaped("{v}", lambda r: pem(r, "EC "))),
    ("private-key", "dsa", _shaped("key:\n{v}\n", lambda r: pem(r, "DSA "))),
    ("private-key", "openssh", _shaped("{v}\n", lambda r: pem(r, "OPENSSH "))),
    ("private-key", "pkcs8-encrypted", _shaped("x\n{v}", lambda r: pem(r, "ENCRYPTED "))),
    ("private-key", "legacy-encrypted", _shaped("{v}", lambda r: pem(
        r, "RSA ", "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,"
        + pick(r, HEX, 32).upper() + "\n\n"))),
    ("url-userinfo", "https", _shaped("git remote add o https://deploy:{v}@git.internal.corp/r.git",
                                      lambda r: pick(r, ALNUM, 16))),
    ("db-connection-string", "postgres", _shaped(
        "DATABASE_URL=postgres://app:{v}@db.internal:5432/app", lambda r: pick(r, ALNUM, 16))),
    ("db-connection-string", "mysql", _shaped("mysql://root:{v}@127.0.0.1/x",
                                              lambda r: pick(r, ALNUM, 12))),
    ("db-connection-string", "mongodb-srv", _shaped(
        'uri = "mongodb+srv://bob:{v}@cluster0.ab12.mongodb.net/?retryWrites=true"',
        lambda r: pick(r, ALNUM, 14))),
    ("db-connection-string", "redis", _shaped("REDIS_URL=redis://:{v}@cache:6379/0",
                                              lambda r: pick(r, ALNUM, 20))),
    ("db-connection-string", "amqp", _shaped("amqp://guest:{v}@mq.internal//",
                                             lambda r: pick(r, ALNUM, 12))),
    ("auth-header", "bearer", _shaped("curl -H 'Authorization: Bearer {v}' https://api",
                                      lambda r: pick(r, B64URL, 40))),
    ("auth-header", "basic", _shaped('{{"Authorization": "Basic {v}"}}',
                                     lambda r: b64("bob:" + pick(r, ALNUM, 12)))),
    ("auth-header", "basic-env", _shaped('AUTH_HEADER="Basic {v}"',
                                         lambda r: b64("admin:" + pick(r, ALNUM, 12)))),
    ("netrc", "diff", _shaped("+machine api.internal.corp\n+  login bob\n+  password {v}\n",
                              lambda r: pick(r, ALNUM, 16))),
    ("netrc", "multiline", _shaped("machine api.internal.corp\n  login bob\n  password {v}\n",
                                   lambda r: pick(r, ALNUM, 16))),
    ("netrc", "one-line", _shaped("machine h.corp login bob password {v}",
                                  lambda r: pick(r, ALNUM, 16))),
    ("pgpass", "line", _shaped("$ cat ~/.pgpass\ndb.internal:5432:appdb:bob:{v}\n",
                               lambda r: pick(r, ALNUM, 16))),
    ("docker-auth", "config", _shaped(
        '{{"auths": {{"registry.corp": {{"auth": "{v}"}}}}}}',
        lambda r: b64("bob:" + pick(r, ALNUM, 16)))),
    ("password", "yaml", _shaped('db:\n  password: "{v}"\n', lambda r: pick(r, ALNUM, 12))),
    ("password", "env", _shaped("DB_PASSWORD={v}\n", lambda r: pick(r, ALNUM, 12))),
    ("password", "yaml-bare", _shaped("passwd: {v}\n", lambda r: pick(r, ALNUM, 12))),
    ("password", "flag", _shaped("mysql -u root --password {v} app", lambda r: pick(r, ALNUM, 12))),
    ("password", "json", _shaped('{{"password": "{v}"}}', lambda r: pick(r, ALNUM + "!@#%^", 14))),
    ("generic-secret", "json-api-key", _shaped('{{"api_key": "{v}"}}', lambda r: pick(r, HEX, 32))),
    ("generic-secret", "env-api-key", _shaped("API_KEY={v}", lambda r: pick(r, ALNUM, 32))),
    ("generic-secret", "toml", _shaped('[oauth]\nclient_secret = "{v}"\n',
                                       lambda r: pick(r, B64URL, 40))),
    ("generic-secret", "ini-token", _shaped("[auth]\ntoken={v}\n", lambda r: pick(r, ALNUM, 24))),
    ("generic-secret", "apikey-code", _shaped("const apiKey = '{v}';",
                                              lambda r: pick(r, ALNUM, 32))),
    ("generic-secret", "access-key", _shaped("access_key: {v}", lambda r: pick(r, ALNUM, 20))),
    ("generic-secret", "private-key", _shaped("PRIVATE_KEY={v}", lambda r: pick(r, HEX, 64))),
    ("generic-secret", "escaped-json", _shaped('{{\\"secret\\": \\"{v}\\"}}',
                                               lambda r: pick(r, ALNUM, 24))),
]


def _cases() -> list[tuple[str, str, str]]:
    rng = random.Random(20260601)
    out = []
    for family, name, build in CASES:
        text, value = build(rng)
        out.append((family, name, text, value))
    return [(f"{f}-{n}", t, v) for f, n, t, v in out]


BUILT = _cases()
FAMILY = {f"{f}-{n}": f for f, n, _ in CASES}


def test_rules_cover_the_families() -> None:
    rules = RegexTool().rules()
    assert len({r.rule_id for r in rules}) == len(rules)
    assert len({r.family for r in rules}) >= 32
    assert {f for f, _, _ in CASES} == {r.family for r in rules}  # every family is tested
    tool = RegexTool()
    assert (tool.name, tool.kind, tool.scope, tool.default_enabled) == \
        ("regex", "inline", "row", True)


@pytest.mark.parametrize(("case", "text", "value"), BUILT, ids=[c for c, _, _ in BUILT])
def test_each_family_is_redacted_with_the_exact_span(case: str, text: str, value: str) -> None:
    found = RegexTool().scan("text", text)
    assert [(text[m.start:m.end], m.family) for m in found] == [(value, FAMILY[case])]
    assert found[0].replacement == f"[REDACTED:{FAMILY[case]}]"
    out = sanitize(text, [RegexTool()]).output
    assert value not in out
    assert RegexTool().scan("text", out) == [], "sanitizing the output again finds nothing"


def test_a_token_cut_by_a_line_wrap_is_redacted_on_both_lines() -> None:
    rng = random.Random(7)
    token = "ghp_" + pick(rng, ALNUM, 36)
    for cut in (10, 30, 38):  # anywhere, even two characters from the end
        wrapped = "x" * 50 + " " + token[:cut] + "\n" + token[cut:] + '" rest'
        out = sanitize(wrapped, [RegexTool()]).output
        assert token[:cut] not in out and token[cut:] not in out, cut
        assert out.endswith('" rest')
    # any value: a command line cut by `fold`, a diff hunk whose lines both carry `+`
    secret = pick(rng, ALNUM, 24)
    for text in (f"export API_KEY={secret[:12]}\n{secret[12:]} && npm run deploy",
                 f"+DB_PASSWORD={secret[:12]}\n+{secret[12:]}\n PORT=3000",
                 f'{{"secret": "{secret[:12]}\n{secret[12:]}"}}'):
        out = sanitize(text, [RegexTool()]).output
        assert secret[:12] not in out and secret[12:] not in out, text
    # a short line that ends in a whole token: the next line is a new word, not more token
    (m,) = RegexTool().scan("t", "API_KEY=abc123def456\nexport NEXT=1")
    assert (m.start, m.end) == (8, 20)
    text = f"{token}\nexport X=1"
    (m,) = RegexTool().scan("t", text)
    assert text[m.start:m.end] == token


def _negatives() -> list[str]:
    rng = random.Random(3)
    image = base64.b64encode(bytes(rng.randrange(256) for _ in range(3000))).decode()
    return [
        f"commit {pick(rng, HEX, 40)}\nAuthor: a",
        f"sha256:{pick(rng, HEX, 64)}",
        f"docker pull img@sha256:{pick(rng, HEX, 64)}",
        f"id: {uuid.UUID(int=rng.getrandbits(128))}",
        '"integrity": "sha512-' + base64.b64encode(rng.randbytes(64)).decode() + '"',
        f"data:image/png;base64,{image}",
        "API_KEY=${API_KEY}", "token: $TOKEN", "api_key=<YOUR_KEY>", "password=xxxxxxxx",
        "secret: '****'", "password=changeme", "OPENAI_API_KEY=sk-...", 'password=""',
        "ANTHROPIC_API_KEY=sk-ant-...", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        '"token": "[REDACTED:github]"', "password=<user-1234abcd>", "password: <user-1234abcd>",
        "postgres://app:[REDACTED:db-connection-string]@db/app", "redis://:${REDIS_PW}@h:6379",
        "https://user:****@host/x", "http://localhost:8080@x", "machine h login u password $PW",
        'password = os.environ["DB_PASSWORD"]', "token = get_token(request)",
        "max_tokens=4096", "secret: str", '"token_count": 1234', "password: Optional[str] = None",
        "tokenizer: bert-base-uncased", "api_key_env: OPENAI_API_KEY", "token_type: bearer",
        'function(e,t){var n=e.token=t.apiKey||"";return n.password=e.secret}',
        '!function(e){var t={};function n(r){if(t[r])return t[r].exports;var o=t[r]={i:r,'
        'l:!1,exports:{}};return e[r].call(o.exports,o,o.exports,n),o.l=!0,o.exports}}([])',
        "Authorization: Bearer $TOKEN", "use a Bearer authentication scheme",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n"
        "-----END PUBLIC KEY-----",
        "sk-learn and sk-proj are prefixes", "task-runner-1234567890abcdefghij",
        "ghp_ is the prefix of a GitHub token", "### pypdf - Basic Operations\n",
        "apiKey: env.CODEMIE_API_KEY,", "const apiKeyValue = env.CODEMIE_API_KEY || '';",
        "153:export ANTHROPIC_API_KEY=\nsk-ant-...\n300:**Manual:**",
        "const resolvedApiKey =\npackages/ai/src/agent/agent-loop.ts:195:",

    ]


@pytest.mark.parametrize("text", _negatives())
def test_look_alikes_and_placeholders_are_left_alone(text: str) -> None:
    assert [(text[m.start:m.end], m.rule_id) for m in RegexTool().scan("t", text)] == []


#: what an anchor looks like in real text (anchors are kept lowercase)
_CASED = {"akia": "AKIA", "asia": "ASIA", "abia": "ABIA", "acca": "ACCA", "aiza": "AIza",
          "eyj": "eyJ", "pypi-age": "pypi-AgE", "sg.": "SG.", "hrku-": "HRKU-", ":aa": ":AA",
          "accountkey=": "AccountKey=", "sharedaccesskey=": "SharedAccessKey=",
          "-----begin": "-----BEGIN PRIVATE KEY-----"}
MB = 1_000_000


def _adversarial() -> list[tuple[str, str]]:
    out = [("a-run", "a" * MB), ("equals", "=" * MB), ("colons", ":" * MB), ("spaces", " " * MB),
           ("digits", "7" * MB), ("hex", "ab12" * (MB // 4)),
           ("password=", "password=" * (MB // 9)), ("password: a", "password: a" * (MB // 11)),
           ("token=x", ("token=" + "x" * 90 + "\n") * (MB // 97)),
           ("scheme", "://" + "a" * MB), ("userinfo", "://a:" * (MB // 5)),
           ("pem", "-----BEGIN PRIVATE KEY-----\n" + "A" * MB),
           ("pem-repeat", "-----BEGIN PRIVATE KEY-----" * (MB // 27)),
           ("jwt", "eyJ" + "a" * MB), ("jwt-dots", "eyJa." * (MB // 5)),
           ("netrc", "machine h login u " * (MB // 18)), ("pgpass", "a:5432:" * (MB // 7)),
           ("discord", "discord " + "M" * MB), ("twilio", "twilio " + "SK" + "a" * MB),
           ("telegram", "1234567890:AA" * (MB // 13))]
    for anchor in sorted({a for s in SPECS for a in s.anchors}):
        real = _CASED.get(anchor, anchor)
        body = "A1b2" * (MB // 4)
        out.append((f"{anchor}+run", real + body))
        out.append((f"{anchor}*", real * (MB // len(real))))
        if any(s.after for s in SPECS if anchor in s.anchors):  # keywords: `key=` runs too
            out.append((f"{anchor}=*", (real + "=a") * (MB // (len(real) + 2))))
    return out


def test_adversarial_input_scans_in_bounded_time() -> None:
    tool = RegexTool()
    slow = []
    for name, text in _adversarial():
        start = time.perf_counter()
        tool.scan("t", text)
        took = time.perf_counter() - start
        if took > 2.0:
            slow.append((name, round(took, 2)))
    assert slow == []


def _corpus_strings() -> list[str]:
    out: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in sorted(CORPUS.rglob("*.json*")):
        text = path.read_text("utf-8", "replace")
        lines = text.splitlines() if path.suffix == ".jsonl" else [text]
        for line in lines:
            try:
                walk(json.loads(line))
            except ValueError:
                continue
    return out


def test_false_positives_on_the_real_corpus_stay_under_one_per_mb() -> None:
    strings = _corpus_strings()
    size = sum(len(s.encode("utf-8", "surrogatepass")) for s in strings) / MB
    assert size > 10, "the corpus is where it should be"
    tool = RegexTool()
    start = time.perf_counter()
    found = [(s[m.start:m.end], m.rule_id) for s in strings for m in tool.scan("t", s)]
    took = time.perf_counter() - start
    assert len(found) / size <= 1.0, found[:20]
    # the doc's fast-path floor, far under what it does alone (~29 MB/s), for a shared machine
    assert size / took >= 5.0


def test_the_pipeline_finds_tokens_behind_encodings() -> None:
    rng = random.Random(11)
    tools = load_tools(["regex"], Context())
    password = pick(rng, ALNUM, 16)
    hook = f"T{pick(rng, ALNUM, 8)}/B{pick(rng, ALNUM, 10)}/{pick(rng, ALNUM, 24)}"
    token = "ghp_" + pick(rng, ALNUM, 36)
    planted = {
        # JSON inside a string: the escape hides the closing quote
        "json": (json.dumps({"env": f'PASSWORD="{password}"'}), password),
        # percent-encoded: the raw text has no `://` or `hooks.slack.com/`
        "percent": ("open https://x/?next=" + quote(f"postgres://app:{password}@db/x", safe=""),
                    password),
        "percent-hook": ("r=" + quote(f"https://hooks.slack.com/services/{hook}", safe=""),
                         hook.rsplit("/", 1)[-1]),
        # base64 of a config line: nothing of the token is visible until decoded
        "base64": (f"echo {b64(f'export GITHUB_TOKEN={token} # ci')} | base64 -d", token),
    }
    for name, (text, secret) in planted.items():
        if name != "json":  # only the decoded view shows these
            assert RegexTool().scan("t", text) == [], name
        result = sanitize({"text": text}, tools, kind="row")
        out = result.output["text"]
        assert secret not in out and quote(secret, safe="") not in out, name
        assert "[REDACTED:" in out, name
        assert result.redactions >= 1
        again = sanitize(result.output, tools, kind="row")
        assert again.findings == [], (name, again.findings)
    encoded = planted["base64"][0]
    assert sanitize({"text": encoded}, tools, kind="row").output["text"] == \
        "echo [REDACTED:github] | base64 -d"
