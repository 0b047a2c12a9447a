"""Credentials found by their shape: provider tokens, keys, connection strings and keyword
assignments, each replaced by ``[REDACTED:<family>]``.

How it stays fast and bounded (docs: security-reliability.md, sections 0 and 2):

- Every rule hangs from lowercase anchor literals (``ghp_``, ``://``, ``password``). One
  combined pattern of all anchors rejects most strings before any rule runs; a string that
  has an anchor runs only the rules whose anchors it holds, and each rule is matched at its
  anchor's positions (``pattern.match(text, pos)``), never slid over the whole string.
- Repetition is bounded (``{1,500}``, never ``+``) and no quantifier is nested inside another
  over overlapping characters, so one attempt costs at most its bound. A left-boundary check
  runs before the match, so a long run of the anchor (``eyJeyJeyJ…``) costs one step each.
- A few rules need a context word instead (Twilio SIDs, Discord tokens, ``.pgpass`` lines:
  their text has no literal of its own); they run only when that word is in the string.

Spans cover the secret value only: not the key, the quotes or a JSON escape's backslash.
Placeholders (``${VAR}``, ``<YOUR_KEY>``, ``xxxx``, ``changeme``, the documented AWS example
key, earlier ``[REDACTED:…]``) are left alone, so sanitizing an output again finds nothing.
A value cut by a line wrap (``fold``, a terminal, a diff hunk) is followed onto the next line,
so no half survives: a prefixed token only when the joined text is still a valid token, any
other value when its line is long or the next line's start looks like the rest of a secret.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from collections.abc import Callable
from typing import ClassVar, NamedTuple

from opentraces.security.base import Match, Rule, Tool

ALNUM = string.ascii_letters + string.digits
#: characters that may not sit just before a token (it would be part of a longer word)
WORD = frozenset(ALNUM + "_")
WORD_DASH = frozenset(ALNUM + "_-")
#: a wrapped token's continuation must end at one of these (or at the end of the text)
_WRAP_END = frozenset(" \t\r\n\"'`\\,;)]}>")
#: shortest line that counts as filled up to a terminal's wrap column
_WRAP_LINE = 60

#: (start, end) of the secret for a rule's match at a position, or None to reject it
Handler = Callable[[str, re.Match[str]], "tuple[int, int] | None"]


class Spec(NamedTuple):
    rule_id: str
    family: str
    description: str
    #: lowercase literals; the rule is tried where one occurs (or, with ``context``, run over
    #: the whole string when one occurs anywhere in it)
    anchors: tuple[str, ...]
    pattern: re.Pattern[str]
    #: characters that may not come just before the anchor
    left: frozenset[str] = frozenset()
    #: the token's alphabet (prefix included): set for tokens a line wrap can split
    alphabet: frozenset[str] | None = None
    context: bool = False
    handler: Handler | None = None
    #: match from the end of the anchor (a keyword), not from its start
    after: bool = False


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# -- value filters ------------------------------------------------------------------------------

_DUMMY_WORDS = (
    "password passwd pass secret token changeme none null nil true false undefined string str "
    "test testing admin root 1234 12345 123456 12345678 123456789 qwerty letmein foobar foo bar "
    "baz value key apikey api_key secretkey mysecret mypassword mytoken default empty required "
    "optional env x-oauth-basic bearer basic your_token your_password your_api_key unset hidden "
    "masked sensitive")
_DUMMIES = frozenset(_DUMMY_WORDS.split())
_DUMMY_PARTS = ("example", "changeme", "change_me", "change-me", "placeholder", "your_", "your-",
                "yourkey", "yourtoken", "yourpass", "dummy", "redacted", "replace_me", "replaceme",
                "insert_", "xxxx", "****", "...", "…", "<", ">", "{{", "}}", "fake", "notreal")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,200}(?:\.[A-Za-z_$][A-Za-z0-9_$]{0,200}){0,20}")


def is_placeholder(value: str) -> bool:
    """True for a value that only stands for a secret: empty, a variable, a template, a run of
    one or two characters, an obvious dummy, or something already redacted."""
    if not value or value[0] in "$<[{" or (value[0] == "%" and value[-1] == "%"):
        return True
    lower = value.lower()
    if lower in _DUMMIES or len(set(lower)) <= 2 or any(p in lower for p in _DUMMY_PARTS):
        return True
    return value.startswith("sk-...") or lower.startswith("process.env")


def _classes(value: str) -> int:
    """How many of lowercase, uppercase and digits the value mixes."""
    return (any(c.islower() for c in value) + any(c.isupper() for c in value)
            + any(c.isdigit() for c in value))


def _mixed_letters(value: str) -> bool:
    """Letters in random case (``OnOzrwuDuDGd…``), not camelCase (``resolvedApiKey``)."""
    upper = sum(c.isupper() for c in value)
    return len(value) >= 12 and value.isalpha() and 0.3 <= upper / len(value) <= 0.7


def _random_looking(value: str) -> bool:
    return _classes(value) >= 2


# -- handlers for rules that need more than a regex -------------------------------------------


def _group(m: re.Match[str]) -> tuple[int, int] | None:
    start, end = m.span("v")
    value = m.string[start:end]
    return None if is_placeholder(value) else (start, end)


def _mixed(m: re.Match[str]) -> tuple[int, int] | None:
    """A prefixed token whose body mixes character classes (a word after a prefix does not)."""
    span = _group(m)
    return span if span and _random_looking(m.string[span[0] + 4:span[1]]) else None


def _stripe(m: re.Match[str]) -> tuple[int, int] | None:
    # publishable test keys are meant to be public and fill every tutorial
    return None if m.group("v").startswith("pk_test_") else _mixed(m)


def _openai(m: re.Match[str]) -> tuple[int, int] | None:
    return None if m.group("v").startswith("sk-ant-") else _mixed(m)


def _aws_key(m: re.Match[str]) -> tuple[int, int] | None:
    return None if "EXAMPLE" in m.group("v") else _group(m)


def _discord(m: re.Match[str]) -> tuple[int, int] | None:
    # the first part is the bot's numeric id in base64: checking it keeps random
    # dotted identifiers out
    head = m.group("v").split(".", 1)[0]
    try:
        decoded = base64.b64decode(head + "=" * (-len(head) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None
    return _group(m) if decoded.isdigit() else None


def _docker_auth(m: re.Match[str]) -> tuple[int, int] | None:
    """base64 of ``user:password`` (docker ``auths``, HTTP Basic)."""
    value = m.group("v")
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    user, colon, password = decoded.partition(":")
    shaped = colon and user and password and decoded.isprintable()
    return _group(m) if shaped else None


def _twilio(m: re.Match[str]) -> tuple[int, int] | None:
    return _group(m) if _random_looking(m.group("v")[2:]) else None


_PEM_END = re.compile(r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=\s\\:,.-]{0,20000}")
_PEM_TRUNCATED = re.compile(r"[A-Za-z0-9+/=\s\\]{0,20000}")


def _pem(m: re.Match[str]) -> tuple[int, int] | None:
    """BEGIN through END; a block cut short (``head``, a truncated output) up to where its
    base64 stops, so the part that is there is still redacted."""
    text, start = m.string, m.start()
    # the first dash run after BEGIN must be the END line; looking no further keeps a run
    # of BEGIN lines from costing a long search each
    stop = text.find("-----", m.end(), m.end() + 20000)
    if stop >= 0 and _PEM_BODY.fullmatch(text, m.end(), stop):
        end = _PEM_END.match(text, stop)
        if end is not None:
            return start, end.end()
    cut = _PEM_TRUNCATED.match(text, m.end())
    assert cut is not None
    stop = cut.end()
    while stop > m.end() and text[stop - 1] in " \t\r\n\\":
        stop -= 1
    return (start, stop) if stop - m.end() >= 32 else None


def _gcp(m: re.Match[str]) -> tuple[int, int] | None:
    start, end = m.span("v")
    while end > start and m.string[end - 1] == "\\":  # the closing quote's JSON escape
        end -= 1
    return start, end


_DB_SCHEMES = frozenset({"postgres", "postgresql", "mysql", "mariadb", "mongodb", "mongodb+srv",
                         "redis", "rediss", "amqp", "amqps", "mssql", "sqlserver", "oracle",
                         "cockroachdb", "clickhouse", "couchdb", "neo4j", "memcached"})
_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+.-")


def _scheme(text: str, at: int) -> str:
    start = at
    while start > 0 and at - start < 32 and text[start - 1] in _SCHEME_CHARS:
        start -= 1
    return text[start:at].lower()


def _userinfo(db: bool) -> Handler:
    def handler(text: str, m: re.Match[str]) -> tuple[int, int] | None:
        scheme = _scheme(text, m.start())
        if not scheme or (scheme in _DB_SCHEMES) != db:
            return None
        value = m.group("v")
        if value.isdigit() and len(value) <= 5:  # host:port@… is not a password
            return None
        return _group(m)
    return handler


def _netrc_like(m: re.Match[str]) -> tuple[int, int] | None:
    return _group(m)


# -- generic keyword assignments ------------------------------------------------------------

#: keyword -> family; a keyword found inside an identifier (``DB_PASSWORD``, ``githubToken``)
#: counts, the tail after it decides (``token_count`` is no secret, ``tokens`` are counted)
_KEYWORDS = {
    "password": "password", "passwd": "password", "passphrase": "password", "pass": "password",
    "secret": "generic-secret", "token": "generic-secret", "api_key": "generic-secret",
    "api-key": "generic-secret", "apikey": "generic-secret", "access_key": "generic-secret",
    "access-key": "generic-secret", "accesskey": "generic-secret",
    "private_key": "generic-secret", "private-key": "generic-secret",
    "privatekey": "generic-secret", "credential": "generic-secret", "auth_key": "generic-secret",
}
#: what may follow a keyword inside the key name, separators and digits removed
_TAILS = frozenset({"", "key", "accesskey", "value", "str", "string", "b64", "base64", "hash",
                    "secret", "token", "plain", "plaintext", "raw", "hex", "keybase"})
_ASSIGN = _c(
    r"""(?P<tail>[A-Za-z0-9_.-]{0,30}+)\\?["'`]?\]?"""
    r"""(?P<sep>[ \t]{0,5}(?::=|=>|=(?!=)|:(?!:))[ \t]{0,5}|[ \t]{1,5})"""
    r"""(?:(?P<q>\\?["'`])(?P<qv>[^\s"'`\\]{1,1000})|(?P<uv>[^\s"'`\\,;&|<>(){}\[\]]{1,1000}))""")
_KEY_CHARS = frozenset(ALNUM + "_-.")


def _bare(name: str) -> str:
    """``name`` lowercased without separators: ``API_KEY`` and ``apiKey`` are one name."""
    return name.lower().replace("_", "").replace("-", "").replace(".", "")


def _keyword(keyword: str) -> Handler:
    family = _KEYWORDS[keyword]

    def handler(text: str, m: re.Match[str]) -> tuple[int, int] | None:
        tail = m.group("tail").lower().rstrip("0123456789").replace("_", "").replace("-", "")
        if tail.replace(".", "") not in _TAILS:
            return None
        if keyword == "pass" and tail:
            return None
        flag = m.group("sep").strip() == ""
        if flag:  # `--password value`: only a command-line flag
            start = m.start() - len(keyword)
            while start > 0 and text[start - 1] in _KEY_CHARS:
                start -= 1
            if not text.startswith("-", start):
                return None
        # a word after `=` is a literal in a shell or .env line (`DB_PASSWORD=hunter`), a
        # variable in code (`password=password`, `API_KEY = apiKeyValue`)
        key = text[m.start() - len(keyword):m.start()]
        shell = flag or (m.group("sep") == "=" and key.isupper())
        quoted = m.group("q") is not None
        start, end = m.span("qv") if quoted else m.span("uv")
        value = text[start:end]
        if quoted:
            close = m.group("q")[-1]
            if not (text.startswith(close, end) or text.startswith("\\" + close, end)):
                return None
        else:
            code = _IDENT.fullmatch(value) and not any(c.isdigit() for c in value) \
                and not _mixed_letters(value)
            if (code and not (shell and "." not in value)) or text[end:end + 1] in ("(", "["):
                return None  # code: a call, a subscript, a variable or attribute
            if value.startswith(("/", "~", "./")) and value.count("/") >= 2:
                return None  # a path
        if is_placeholder(value) or value.isdigit() or _bare(keyword) in _bare(value):
            return None
        if family == "password":
            return (start, end) if len(value) >= 4 else None
        return (start, end) if len(value) >= 8 and _random_looking(value) else None
    return handler


def _specs() -> list[Spec]:
    b64url = frozenset(ALNUM + "_-")
    specs = [
        Spec("gcp-service-account", "gcp-service-account",
             "private_key of a Google Cloud service-account JSON", ('"private_key',),
             _c(r'"private_key\\?"[ \t]{0,5}:[ \t]{0,5}\\?"(?P<v>-----BEGIN[^"]{0,20000})"'),
             handler=lambda _t, m: _gcp(m)),
        Spec("pem-private-key", "private-key", "PEM/OpenSSH/PGP private key block",
             ("-----begin",), _c(r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"),
             handler=lambda _t, m: _pem(m)),
        Spec("aws-access-key-id", "aws-access-key", "AWS access key id (AKIA/ASIA/ABIA/ACCA)",
             ("akia", "asia", "abia", "acca"),
             _c(r"(?P<v>(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})(?![A-Za-z0-9])"), WORD,
             frozenset(string.ascii_uppercase + "234567"), handler=lambda _t, m: _aws_key(m)),
        Spec("aws-secret-access-key", "aws-secret-key",
             "AWS secret access key after an aws_secret…/secret_access_key name",
             ("secret_access_key", "secretaccesskey", "secret-access-key", "aws_secret",
              "aws-secret"),
             _c(r"""[A-Za-z0-9_.-]{0,30}+\\?["']?[ \t]{0,5}(?:=|:|=>)[ \t]{0,5}\\?["']?"""
                r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"), handler=lambda _t, m: _aws_key(m),
             after=True),
        Spec("github-token", "github", "GitHub token (ghp_/gho_/ghu_/ghs_/ghr_)",
             ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
             _c(r"(?P<v>gh[pousr]_[A-Za-z0-9]{36,251})(?![A-Za-z0-9_])"), WORD,
             frozenset(ALNUM + "_"), handler=lambda _t, m: _mixed(m)),
        Spec("github-fine-grained", "github", "GitHub fine-grained token (github_pat_)",
             ("github_pat_",), _c(r"(?P<v>github_pat_[A-Za-z0-9_]{36,244})(?![A-Za-z0-9_])"),
             WORD, frozenset(ALNUM + "_"), handler=lambda _t, m: _mixed(m)),
        Spec("gitlab-token", "gitlab", "GitLab token (glpat-, gldt-, glrt-, glptt-)",
             ("glpat-", "gldt-", "glrt-", "glptt-"),
             _c(r"(?P<v>gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_-]{20,80})(?![A-Za-z0-9_-])"), WORD,
             b64url, handler=lambda _t, m: _mixed(m)),
        Spec("slack-token", "slack", "Slack token (xox?-, xapp-)",
             ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xoxe-", "xapp-"),
             _c(r"(?P<v>(?:xox[abposre]|xapp)-[0-9][A-Za-z0-9-]{9,250})(?![A-Za-z0-9_-])"), WORD,
             frozenset(ALNUM + "-"), handler=lambda _t, m: _mixed(m)),
        Spec("slack-webhook", "slack-webhook", "Slack incoming-webhook path", ("hooks.slack.com/",),
             _c(r"hooks\.slack\.com/(?:services|workflows|triggers)/"
                r"(?P<v>[A-Za-z0-9_/+-]{20,200})(?![A-Za-z0-9_/+-])"),
             alphabet=frozenset(ALNUM + "_/+-."), handler=lambda _t, m: _group(m)),
        Spec("stripe-key", "stripe", "Stripe live key (sk/rk/pk), secret test key",
             ("sk_live_", "rk_live_", "pk_live_", "sk_test_", "rk_test_"),
             _c(r"(?P<v>[spr]k_(?:live|test)_[A-Za-z0-9]{16,247})(?![A-Za-z0-9])"), WORD,
             frozenset(ALNUM + "_"), handler=lambda _t, m: _stripe(m)),
        Spec("stripe-webhook-secret", "stripe", "Stripe webhook signing secret (whsec_)",
             ("whsec_",), _c(r"(?P<v>whsec_[A-Za-z0-9]{24,64})(?![A-Za-z0-9])"), WORD,
             frozenset(ALNUM + "_"), handler=lambda _t, m: _mixed(m)),
        Spec("anthropic-key", "anthropic", "Anthropic API key (sk-ant-)", ("sk-ant-",),
             _c(r"(?P<v>sk-ant-[A-Za-z0-9_-]{20,250})(?![A-Za-z0-9_-])"), WORD_DASH, b64url,
             handler=lambda _t, m: _mixed(m)),
        Spec("openai-key", "openai", "OpenAI API key (sk-, sk-proj-, sk-svcacct-)", ("sk-",),
             _c(r"(?P<v>sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250})(?![A-Za-z0-9_-])"),
             WORD_DASH, b64url, handler=lambda _t, m: _openai(m)),
        Spec("google-api-key", "google-api-key", "Google API key (AIza…)", ("aiza",),
             _c(r"(?P<v>AIza[A-Za-z0-9_-]{35})(?![A-Za-z0-9_-])"), WORD_DASH, b64url,
             handler=lambda _t, m: _group(m)),
        Spec("huggingface-token", "huggingface", "Hugging Face token (hf_ and letters)", ("hf_",),
             _c(r"(?P<v>hf_[A-Za-z]{30,40})(?![A-Za-z0-9_])"), WORD,
             frozenset(string.ascii_letters + "_"), handler=lambda _t, m: _hf(m)),
        Spec("npm-token", "npm", "npm access token (npm_)", ("npm_",),
             _c(r"(?P<v>npm_[A-Za-z0-9]{36})(?![A-Za-z0-9])"), WORD, frozenset(ALNUM + "_"),
             handler=lambda _t, m: _mixed(m)),
        Spec("pypi-token", "pypi", "PyPI upload token (pypi-AgE…)", ("pypi-age",),
             _c(r"(?P<v>pypi-AgE[A-Za-z0-9_-]{50,1000})(?![A-Za-z0-9_-])"), WORD_DASH, b64url,
             handler=lambda _t, m: _group(m)),
        Spec("sendgrid-key", "sendgrid", "SendGrid API key (SG.x.y)", ("sg.",),
             _c(r"(?P<v>SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])"), WORD_DASH,
             frozenset(ALNUM + "_-."), handler=lambda _t, m: _group(m)),
        Spec("twilio-sid", "twilio", "Twilio API key or account SID (SK/AC + 32 hex) near 'twilio'",
             ("twilio",), _c(r"(?<![A-Za-z0-9])(?P<v>(?:SK|AC)[0-9a-f]{32})(?![A-Za-z0-9])"),
             context=True, handler=lambda _t, m: _twilio(m)),
        Spec("discord-bot-token", "discord", "Discord bot token (id.timestamp.hmac) near 'discord'",
             ("discord",),
             _c(r"(?<![A-Za-z0-9_-])(?P<v>[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\."
                r"[A-Za-z0-9_-]{27,38})(?![A-Za-z0-9_-])"),
             context=True, handler=lambda _t, m: _discord(m)),
        Spec("telegram-bot-token", "telegram", "Telegram bot token (digits:AA + 33)", (":aa",),
             _c(r"(?<![0-9])(?P<v>[0-9]{8,10}:AA[A-Za-z0-9_-]{33})(?![A-Za-z0-9_-])"),
             context=True, handler=lambda _t, m: _group(m)),
        Spec("azure-storage-key", "azure-storage",
             "Azure AccountKey=/SharedAccessKey= in a connection string",
             ("accountkey=", "sharedaccesskey="),
             _c(r"(?:AccountKey|SharedAccessKey)=(?P<v>[A-Za-z0-9+/]{20,200}={0,2})"
                r"(?![A-Za-z0-9+/=])"), handler=lambda _t, m: _group(m)),
        Spec("mailgun-key", "mailgun", "Mailgun API key (key- + 32 hex)", ("key-",),
             _c(r"(?P<v>key-[0-9a-f]{32})(?![A-Za-z0-9])"), WORD, handler=lambda _t, m: _group(m)),
        Spec("mailchimp-key", "mailchimp", "Mailchimp API key (32 hex -usN)", ("-us",),
             _c(r"(?<![A-Za-z0-9])(?P<v>[0-9a-f]{32}-us[0-9]{1,2})(?![A-Za-z0-9])"),
             context=True, handler=lambda _t, m: _group(m)),
        Spec("shopify-token", "shopify", "Shopify access token (shpat_/shpca_/shppa_/shpss_)",
             ("shpat_", "shpca_", "shppa_", "shpss_"),
             _c(r"(?P<v>shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32})(?![A-Za-z0-9])"), WORD,
             handler=lambda _t, m: _group(m)),
        Spec("digitalocean-token", "digitalocean", "DigitalOcean token (dop_v1_/doo_v1_/dor_v1_)",
             ("dop_v1_", "doo_v1_", "dor_v1_"),
             _c(r"(?P<v>do[opr]_v1_[a-f0-9]{64})(?![A-Za-z0-9])"), WORD,
             frozenset("0123456789abcdef_dopv"), handler=lambda _t, m: _group(m)),
        Spec("heroku-key", "heroku", "Heroku API key (UUID after a heroku name, or HRKU-)",
             ("heroku",),
             _c(r"""[A-Za-z0-9_.-]{0,30}+\\?["']?[ \t]{0,5}(?:=|:|=>)[ \t]{0,5}\\?["']?"""
                r"(?P<v>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                r"[0-9a-fA-F]{12})(?![A-Za-z0-9-])"), handler=lambda _t, m: _group(m), after=True),
        Spec("heroku-token", "heroku", "Heroku platform token (HRKU-)", ("hrku-",),
             _c(r"(?P<v>HRKU-[A-Za-z0-9_-]{20,100})(?![A-Za-z0-9_-])"), WORD, b64url,
             handler=lambda _t, m: _mixed(m)),
        Spec("datadog-key", "datadog", "Datadog API/app key (32/40 hex after a datadog/dd_ name)",
             ("datadog", "dd_api", "dd_app", "dd-api", "dd-app", "dd_client"),
             _c(r"""[A-Za-z0-9_.-]{0,30}+\\?["']?[ \t]{0,5}(?:=|:|=>)[ \t]{0,5}\\?["']?"""
                r"(?P<v>[0-9a-f]{40}|[0-9a-f]{32})(?![A-Za-z0-9])"),
             handler=lambda _t, m: _group(m), after=True),
        Spec("jwt", "jwt", "JSON Web Token (eyJ….eyJ….signature)", ("eyj",),
             _c(r"(?P<v>eyJ[A-Za-z0-9_-]{5,4000}\.eyJ[A-Za-z0-9_-]{2,8000}\.[A-Za-z0-9_-]{10,4000})"
                r"(?![A-Za-z0-9_-])"), WORD_DASH, frozenset(ALNUM + "_-."),
             handler=lambda _t, m: _group(m)),
        Spec("db-connection-string", "db-connection-string",
             "password in a database URL (postgres, mysql, mongodb(+srv), redis, amqp, …)",
             ("://",), _c(r"""://[^\s:/?#@"'\\]{0,200}:(?P<v>[^\s/?#@"'\\]{1,500})@"""
                          r"(?=[A-Za-z0-9\[_.-])"), handler=_userinfo(db=True)),
        Spec("url-userinfo", "url-userinfo", "password in scheme://user:password@host",
             ("://",), _c(r"""://[^\s:/?#@"'\\]{0,200}:(?P<v>[^\s/?#@"'\\]{1,500})@"""
                          r"(?=[A-Za-z0-9\[_.-])"), handler=_userinfo(db=False)),
        Spec("authorization-header", "auth-header",
             "Authorization: Bearer/Basic/Token credentials", ("authorization",),
             _c(r"""(?i:authorization)\\?["']?[ \t]{0,5}[:=][ \t]{0,5}\\?["']?"""
                r"(?i:bearer|basic|token|digest)[ \t]{1,5}"
                r"(?P<v>[A-Za-z0-9._~+/-]{8,4000}={0,2})(?![A-Za-z0-9._~+/=-])"),
             handler=lambda _t, m: _bearer(m)),
        Spec("bearer-token", "auth-header", "a Bearer token outside a header", ("bearer",),
             _c(r"(?i:bearer)[ \t]{1,5}(?P<v>[A-Za-z0-9._~+/-]{16,4000}={0,2})"
                r"(?![A-Za-z0-9._~+/=-])"), WORD, handler=lambda _t, m: _bearer(m)),
        Spec("basic-credentials", "auth-header", "Basic base64(user:password) outside a header",
             ("basic",), _c(r"(?i:basic)[ \t]{1,5}(?P<v>[A-Za-z0-9+/]{8,4000}={0,2})"
                            r"(?![A-Za-z0-9+/=])"), WORD, handler=lambda _t, m: _docker_auth(m)),
        Spec("netrc-password", "netrc", ".netrc machine … login … password …", ("machine",),
             # a diff hunk puts `+` before each line
             _c(r"machine[ \t]{1,10}[^\s]{1,253}(?:\s{1,20}[+-]?[ \t]{0,10}(?:login|account)"
                r"[ \t]{1,10}[^\s]{1,200}){0,2}\s{1,20}[+-]?[ \t]{0,10}password[ \t]{1,10}"
                r"(?P<v>[^\s]{1,500})"), WORD,
             handler=lambda _t, m: _netrc_like(m)),
        Spec("pgpass-line", "pgpass", ".pgpass host:port:database:user:password line",
             (":5432:", ":*:", "pgpass"),
             _c(r"""(?<![^\s"'>])[A-Za-z0-9_.*\[\]-]{1,253}:(?:[0-9]{1,5}|\*):[^\s:]{1,100}:"""
                r"""[^\s:]{1,100}:(?P<v>[^\s:"'\\]{1,500})(?=[\s"'\\]|$)"""),
             context=True, handler=lambda _t, m: _netrc_like(m)),
        Spec("docker-config-auth", "docker-auth", 'docker config.json "auth": base64(user:pass)',
             ('"auth',), _c(r'"auth\\?"[ \t]{0,5}:[ \t]{0,5}\\?"(?P<v>[A-Za-z0-9+/]{8,2000}={0,2})'
                            r'\\?"'), handler=lambda _t, m: _docker_auth(m)),
    ]
    for keyword, family in _KEYWORDS.items():
        specs.append(Spec(f"keyword-{keyword}", family,
                          f"a value assigned to a {keyword!r} name (env, YAML, JSON, TOML, INI, "
                          "code, --flag)", (keyword,), _ASSIGN, handler=_keyword(keyword),
                          after=True))
    return specs


def _hf(m: re.Match[str]) -> tuple[int, int] | None:
    span = _group(m)
    return span if span and _classes(m.group("v")[3:]) == 2 else None


def _bearer(m: re.Match[str]) -> tuple[int, int] | None:
    value = m.group("v")
    return _group(m) if _random_looking(value) and len(value) >= 8 else None


SPECS = _specs()
#: longest run of a token's alphabet followed across a line wrap
_RUN = 1200
_RUNS = {s.rule_id: re.compile(f"[{''.join(map(re.escape, sorted(s.alphabet)))}]{{0,{_RUN}}}")
         for s in SPECS if s.alphabet is not None}


def _trie(words: list[str]) -> str:
    """One alternation of ``words`` with shared prefixes merged, so the engine tries a few
    branches per position instead of every word."""
    tree: dict[str, dict] = {}
    for word in words:
        node = tree
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        if "" in node:
            return f"(?:{body})?"
        return body
    return emit(tree)


_ANCHORS = sorted({a for s in SPECS for a in s.anchors})
_ANY = re.compile(_trie(_ANCHORS))
#: anchor matched at a position -> the anchors that start there too (its prefixes)
_PREFIXES = {a: [b for b in _ANCHORS if a.startswith(b)] for a in _ANCHORS}
_BY_ANCHOR: dict[str, list[int]] = {}
for _i, _spec in enumerate(SPECS):
    for _a in _spec.anchors:
        _BY_ANCHOR.setdefault(_a, []).append(_i)
#: shortest string worth looking at ("pass=abcd")
_MIN_LEN = 8


def _lower(text: str) -> str:
    """``text`` lowercased with offsets kept: a character whose lowercase is longer stays."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


class RegexTool(Tool):
    name = "regex"
    kind = "inline"
    scope = "row"
    description = "credentials by shape: provider tokens, keys, connection strings, assignments"
    default_enabled = True
    _rules: ClassVar[list[Rule]] = [Rule(s.rule_id, s.family, s.description) for s in SPECS]

    def rules(self) -> list[Rule]:
        return list(self._rules)

    def scan(self, path: str, text: str) -> list[Match]:
        if len(text) < _MIN_LEN:
            return []
        low = text.lower()
        if len(low) != len(text):
            low = _lower(text)
        m = _ANY.search(low)
        if m is None:
            return []
        positions: dict[int, list[int]] = {}  # spec index -> anchor positions
        while m is not None:
            # searching again from the next character, not after the match, so anchors that
            # overlap (`key-` in `…key-us1`) are all seen
            for anchor in _PREFIXES[m.group()]:
                for i in _BY_ANCHOR[anchor]:
                    positions.setdefault(i, []).append(m.start())
            m = _ANY.search(low, m.start() + 1)
        taken: list[tuple[int, int]] = []
        found: list[Match] = []
        for i in sorted(positions):
            spec = SPECS[i]
            for start, end in _spans(spec, text, low, positions[i]):
                if any(start < e and s < end for s, e in taken):
                    continue  # an earlier (more specific) rule has it
                taken.append((start, end))
                found.append(Match(start, end, spec.rule_id, spec.family,
                                   f"[REDACTED:{spec.family}]"))
        found.sort()
        return found


def _spans(spec: Spec, text: str, low: str, at: list[int]) -> list[tuple[int, int]]:
    handler = spec.handler or (lambda _t, m: _group(m))
    out: list[tuple[int, int]] = []
    if spec.context:
        for m in spec.pattern.finditer(text):
            span = handler(text, m)
            if span:
                out.append(span)
        return out
    done = run_end = -1
    run = _RUNS.get(spec.rule_id)
    for pos in sorted(set(at)):
        if pos < done or (pos and text[pos - 1] in spec.left and not _ansi_before(text, pos)):
            continue
        start = pos + max(len(a) for a in spec.anchors if low.startswith(a, pos)) \
            if spec.after else pos
        m = spec.pattern.match(text, start)
        span = handler(text, m) if m else None
        if m is not None and spec.after:
            done = m.end()  # a value holds no key: anchors inside it are not tried again
        if spec.rule_id not in _NO_WRAP and (span is None or _at_break(text, span[1])):
            if run is not None and pos >= run_end:  # anchors in one run share its end
                run_end = run.match(text, pos).end()  # type: ignore[union-attr]
            span = _wrapped(spec, text, pos, start, run_end if run else -1, span)
        if span:
            out.append(span)
            done = max(done, span[1])
    return out


#: rules whose secret spans lines anyway
_NO_WRAP = frozenset({"pem-private-key", "gcp-service-account"})
#: what continues a cut value on the next line, for rules without an alphabet of their own
_VALUE_RUN = re.compile(r"""[^\s"'`\\,;)\]}>]{0,1200}""")
_ANSI_END = re.compile(r"\x1b\[[0-9;]{0,12}m\Z")


def _ansi_before(text: str, pos: int) -> bool:
    """A terminal colour code (``ESC[32m``) ends in a letter but is no part of the token."""
    return text[pos - 1] == "m" and _ANSI_END.search(text, max(0, pos - 16), pos) is not None


def _at_break(text: str, pos: int) -> bool:
    return text.startswith(("\n", "\r\n"), pos)


def _continuation(spec: Spec, text: str, brk: int) -> tuple[int, int] | None:
    """(start, end) of what goes on after the line break at ``brk``, if it looks like the rest
    of a cut value: a run of the value's characters ending at a space, a quote or the end.
    In a diff hunk both lines carry the same ``+``/``-`` marker, which is skipped."""
    rest = brk + (2 if text.startswith("\r\n", brk) else 1)
    line = text.rfind("\n", 0, brk) + 1
    if text[line:line + 1] in ("+", "-") and text.startswith(text[line], rest):
        rest += 1
    pattern = _RUNS.get(spec.rule_id, _VALUE_RUN)
    end = pattern.match(text, rest).end()  # type: ignore[union-attr]
    if end == rest or end - rest >= _RUN or (end < len(text) and text[end] not in _WRAP_END):
        return None
    # after a short line, a word is more likely a new line than the rest of a value (`TOKEN=…`
    # then `fi`, `export …`): wrapped text fills its line, and half a token looks random
    alone = end == len(text) or text[end] in "\r\n\"'`\\"
    piece = text[rest:end]
    if brk - line >= _WRAP_LINE or (_random_looking(piece) and len(piece) >= (4 if alone else 8)):
        return rest, end
    return None


def _wrapped(spec: Spec, text: str, pos: int, start: int, run_end: int,
             span: tuple[int, int] | None) -> tuple[int, int] | None:
    """``span`` extended over the rest of a value that a line break cut, or the span found
    once the two lines are joined when the first half alone did not match."""
    if span is not None:
        if not _at_break(text, span[1]):
            return span
        cont = _continuation(spec, text, span[1])
        if cont is None:
            return span
        if spec.alphabet is not None and not spec.pattern.fullmatch(
                text[pos:span[1]] + text[cont[0]:cont[1]]):
            return span  # the token is whole: a longer one would not be valid
        return span[0], cont[1]
    if spec.alphabet is not None:
        brk = run_end  # the token's run must reach the line break
        if not _at_break(text, brk):
            return None
    else:
        brk = text.find("\n", start, start + _RUN)
        if brk < 0:
            return None
        if brk and text[brk - 1] == "\r":
            brk -= 1
    cont = _continuation(spec, text, brk)
    if cont is None:
        return None
    # the two halves joined, with a little text before for the handler's look-behind
    base = max(0, pos - 64)
    cut = brk - base
    # …and the two characters after, so a closing quote is still seen
    joined = text[base:brk] + text[cont[0]:cont[1] + 2]
    m = spec.pattern.match(joined, start - base)
    handler = spec.handler or (lambda _t, m: _group(m))
    found = handler(joined, m) if m else None
    if found is None or not found[0] < cut < found[1]:  # a value cut in two, not moved
        return None
    rest = cont[0]

    def back(i: int) -> int:
        return base + i if i < cut else rest + i - cut
    return back(found[0]), back(found[1])
