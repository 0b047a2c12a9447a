"""Deterministic generator of realistic Claude Code 2.1 transcripts, for the import benchmark.

Writes ``<out>/-home-dev-proj-N/<session uuid>.jsonl`` files shaped like the real ones in
``shared/corpus/claude-code/`` (see ``shared/docs/transcript-formats.md`` §1):

- a ``summary`` line and ``file-history-snapshot`` lines (no envelope);
- user prompts with string content (``thinkingMetadata``, ``todos``, ``permissionMode``);
- assistant responses written one content block per line (thinking, text, tool_use) sharing
  ``message.id`` and ``requestId``, with ``usage`` on every line and ``output_tokens`` growing
  across the lines of one response;
- tool calls (Read, Bash, Edit, Grep, Write) with realistic inputs, and their ``user``
  ``tool_result`` lines carrying the structured ``toolUseResult`` (Read: the file's content,
  several KiB of plausible Python; Bash: stdout of varied length, some 20-60 KiB; Edit:
  ``oldString``/``newString``/``originalFile``/``structuredPatch``; Write: ``create``);
- ``progress`` lines (``hook_progress`` Pre/PostToolUse, ``bash_progress``) hanging off the
  tool_use line, ``system`` ``stop_hook_summary``/``turn_duration`` at the end of a turn;
- the ``parentUuid`` chain, timestamps, ``cwd``, ``version`` "2.1.39", ``gitBranch``,
  ``sessionId``, ``slug``; ``sourceToolAssistantUUID`` on tool results.

Each session has its own small source tree that its Edits and Writes really change, so later
Reads show the edited text. All randomness comes from ``random.Random`` seeded from
(``seed``, session number): the same arguments always give byte-identical files, and session
``i`` is the same whatever ``sessions`` is (a 100-session corpus is a prefix of a 400 one).
Text is made of a programming and English vocabulary (not a repeated character), so zlib
ratios are close to real transcripts: 0.17 for the default corpus, against 0.10-0.22 for the
long real sessions in ``shared/corpus/claude-code/``. The default 200 × 200 corpus is ~75 MB
(Read results: median ~3 KiB of code; 4.5 % of Bash calls print 20-60 KiB).

    python benchmarks/gen_claude_sessions.py OUT --sessions 200 --entries 200 --seed 1
    python benchmarks/gen_claude_sessions.py OUT --shape edit-heavy      # or subagent-heavy
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import uuid
from pathlib import Path
from typing import Any

VERSION = "2.1.39"
MODEL = "claude-opus-4-6"
PROJECTS = 20  # sessions are spread over this many project folders
#: Corpus shapes. ``default`` is what earlier figures were measured on (byte-identical for a
#: seed); ``edit-heavy`` makes about twice as many Edit and more Write calls (Trace Trails
#: patches); ``subagent-heavy`` adds Task calls, each with its sub-agent's transcript in
#: ``<session>/subagents/agent-<id>.jsonl`` as Claude Code 2.1 writes it.
SHAPES = ("default", "edit-heavy", "subagent-heavy")
#: Upper bounds of a draw in [0, 1) for Read, Bash, Edit, Write (the rest is Grep), by shape.
TOOL_MIX = {"default": (0.26, 0.60, 0.82, 0.90), "edit-heavy": (0.16, 0.36, 0.82, 0.92),
            "subagent-heavy": (0.26, 0.60, 0.82, 0.90)}
TASK_SHARE = 0.15  # of the subagent-heavy shape's tool calls
BASE58 = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz123456789"

# -- vocabulary -------------------------------------------------------------------------------

NOUNS = [
    "account", "adapter", "address", "agent", "alias", "anchor", "archive", "artifact", "attempt",
    "batch", "blob", "bucket", "buffer", "cache", "call", "channel", "checkpoint", "chunk",
    "client", "column", "command", "commit", "config", "connection", "context", "counter",
    "cursor", "dataset", "deadline", "digest", "document", "draft", "entry", "event", "export",
    "field", "file", "filter", "fingerprint", "folder", "format", "frame", "generation", "handler",
    "header", "history", "hook", "identity", "image", "import", "index", "input", "invoice",
    "item", "job", "journal", "key", "label", "layer", "ledger", "limit", "line", "listener",
    "lock", "log", "manifest", "mapper", "marker", "message", "metric", "model", "module", "node",
    "notice", "offset", "option", "order", "owner", "packet", "page", "parser", "patch", "path",
    "payload", "peer", "pipeline", "policy", "pool", "position", "prefix", "profile", "project",
    "projection", "prompt", "queue", "quota", "range", "reader", "record", "region", "registry",
    "release", "report", "request", "resource", "response", "result", "retry", "revision", "role",
    "route", "row", "rule", "runner", "schema", "scope", "segment", "selector", "session",
    "settings", "shard", "signal", "snapshot", "source", "span", "state", "step", "store",
    "stream", "summary", "symbol", "table", "tag", "task", "template", "tenant", "token", "tool",
    "trace", "tracker", "transaction", "transcript", "trigger", "upload", "usage", "user", "value",
    "version", "view", "watcher", "window", "worker", "workspace"
]
VERBS = [
    "accept", "add", "apply", "assert", "attach", "build", "bump", "cache", "cancel", "check",
    "clean", "clear", "close", "collect", "compact", "compare", "compute", "convert", "copy",
    "count", "create", "decode", "delete", "detect", "diff", "dispatch", "drain", "emit", "encode",
    "ensure", "enqueue", "expand", "export", "extract", "fetch", "filter", "find", "flush",
    "format", "freeze", "gather", "group", "hash", "import", "index", "inspect", "invalidate",
    "join", "keep", "list", "load", "lock", "log", "lookup", "map", "mark", "match", "merge",
    "migrate", "normalize", "open", "parse", "patch", "plan", "poll", "prepare", "prune",
    "publish", "push", "read", "rebuild", "record", "refresh", "register", "reject", "reload",
    "remove", "rename", "render", "repair", "replay", "report", "request", "reset", "resolve",
    "restore", "resume", "retry", "rewind", "route", "run", "sanitize", "save", "scan", "schedule",
    "seal", "select", "send", "serialize", "split", "start", "stop", "store", "stream",
    "summarize", "sync", "tail", "track", "transform", "trim", "truncate", "unlock", "update",
    "upsert", "validate", "verify", "walk", "watch", "wrap", "write"
]
ADJS = [
    "active", "async", "atomic", "batched", "broken", "cached", "clean", "closed", "cold",
    "compact", "current", "dirty", "durable", "empty", "expired", "external", "fresh", "frozen",
    "full", "hidden", "idle", "incremental", "initial", "internal", "invalid", "large", "last",
    "latest", "lazy", "legacy", "local", "locked", "missing", "nested", "new", "next", "old",
    "open", "partial", "pending", "primary", "private", "public", "raw", "readonly", "recent",
    "remote", "safe", "sealed", "shared", "short", "slow", "sorted", "stale", "strict",
    "temporary", "unique", "unknown", "valid", "warm"
]
TYPES = ["str", "int", "bool", "float", "bytes", "Path", "list[str]", "dict[str, Any]",
         "Iterator[Record]", "Sequence[int]", "Optional[str]", "tuple[int, int]", "None"]
EXCEPTIONS = ["ValueError", "KeyError", "RuntimeError", "TimeoutError", "OSError",
              "PermissionError", "LookupError", "StoreError", "ConfigError", "DecodeError"]
ENGLISH = [
    "the", "a", "an", "this", "that", "these", "each", "every", "some", "any", "all", "of", "to",
    "in", "on", "for", "with", "from", "by", "at", "as", "into", "after", "before", "when",
    "while", "because", "so", "but", "and", "or", "not", "only", "also", "then", "still", "just",
    "now", "here", "there", "which", "what", "where", "why", "how", "it", "its", "we", "our",
    "you", "your", "they", "their", "is", "are", "was", "were", "be", "been", "has", "have", "had",
    "do", "does", "did", "can", "could", "should", "would", "will", "may", "might", "must", "need",
    "needs", "want", "looks", "seems", "means", "makes", "keeps", "takes", "gives", "uses", "runs",
    "reads", "writes", "calls", "returns", "checks", "fails", "passes", "breaks", "fixes",
    "changes", "adds", "removes", "moves", "handles", "expects", "depends", "happens", "first",
    "second", "next", "last", "new", "old", "same", "other", "different", "whole", "single",
    "several", "few", "many", "more", "less", "most", "least", "enough", "already", "again",
    "instead", "actually", "probably", "likely", "clearly", "simply", "carefully", "quickly",
    "correctly", "properly", "exactly", "file", "test", "code", "function", "method", "class",
    "module", "line", "value", "case", "error", "result", "change", "bug", "fix", "issue",
    "reason", "way", "point", "place", "part", "side", "time", "step", "call", "path", "test",
    "suite", "branch", "commit", "import", "output", "input", "data"
]
OPENERS = ["Let me", "Now I'll", "I need to", "Next, I should", "First, let me",
           "Good, now I'll", "I see. Let me", "OK, I'll", "Looking at this, I'll",
           "The test is failing because", "It seems", "This means", "To fix this, I'll",
           "I think", "The problem is that", "Let me check whether"]
USER_ASKS = [
    "Implement {t} in {f} and add tests for the edge cases",
    "The {n} {n2} is {a} after a restart, can you find out why and fix it?",
    "Refactor {f} so that {v} and {v2} share one code path",
    "Add a --{n} option to the {n2} command that {v}s the {a} {n3}s",
    "Tests in test_{m}.py are flaky on CI, please investigate",
    "Why does {v}_{n} return {a} {n2}s when the {n3} is {a2}? Fix it and keep the API",
    "Please review the changes in {f} and tighten the error handling",
    "Make {v}_{n} incremental: it should only {v2} the {a} {n2}s since the last {n3}",
    "Write a benchmark for {v}_{n} and tell me where the time goes",
    "continue",
    "yes, go ahead",
    "Can you also update the docs for the {n} {n2}?",
]


def _sentence(rng: random.Random, lo: int = 8, hi: int = 22) -> str:
    words = [rng.choice(ENGLISH) for _ in range(rng.randint(lo, hi))]
    # sprinkle code identifiers, like real assistant prose does
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(words))
        words[i] = rng.choice([f"`{rng.choice(VERBS)}_{rng.choice(NOUNS)}()`",
                               f"`{rng.choice(NOUNS)}`", f"`{_camel(rng)}`",
                               f"`{rng.choice(NOUNS)}.py`"])
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", ":", "?"])


def _prose(rng: random.Random, sentences: int) -> str:
    out = [f"{rng.choice(OPENERS)} {_sentence(rng, 5, 14)}"]
    out += [_sentence(rng) for _ in range(sentences - 1)]
    paras, cur = [], []
    for s in out:
        cur.append(s)
        if rng.random() < 0.3:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n\n".join(paras)


def _camel(rng: random.Random) -> str:
    return (rng.choice(ADJS) + rng.choice(NOUNS)).title().replace("_", "")


def _ident(rng: random.Random) -> str:
    return f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"


# -- a session's source tree ------------------------------------------------------------------


def _function(rng: random.Random, indent: str = "") -> list[str]:
    name = _ident(rng)
    args = [f"{rng.choice(NOUNS)}: {rng.choice(TYPES[:-1])}" for _ in range(rng.randint(0, 3))]
    if indent:
        args.insert(0, "self")
    ret = rng.choice(TYPES)
    i1, i2 = indent + "    ", indent + "        "
    lines = [f"{indent}def {name}({', '.join(args)}) -> {ret}:",
             f'{i1}"""{_sentence(rng, 6, 14)}"""']
    var = rng.choice(NOUNS)
    for _ in range(rng.randint(2, 7)):
        kind = rng.random()
        other = rng.choice(NOUNS)
        if kind < 0.25:
            lines.append(f"{i1}{var} = {_ident(rng)}({other}, {rng.choice(NOUNS)}="
                         f"{rng.choice(['None', 'True', 'False', str(rng.randint(0, 4096))])})")
        elif kind < 0.45:
            lines += [f"{i1}if {var} is None or not {other}.{rng.choice(ADJS)}:",
                      f"{i2}raise {rng.choice(EXCEPTIONS)}(f\"{rng.choice(NOUNS)} {{{other}!r}} "
                      f"is {rng.choice(ADJS)}\")"]
        elif kind < 0.65:
            lines += [f"{i1}for {other} in {var}.{rng.choice(NOUNS)}s:",
                      f"{i2}if {other}.{rng.choice(NOUNS)} {rng.choice(['>', '<', '==', '!='])} "
                      f"{rng.randint(0, 100)}:",
                      f"{i2}    {var}.{rng.choice(VERBS)}({other})"]
        elif kind < 0.8:
            lines += [f"{i1}try:", f"{i2}{other} = self._{_ident(rng)}({var})"
                      if indent else f"{i2}{other} = {_ident(rng)}({var})",
                      f"{i1}except {rng.choice(EXCEPTIONS)} as e:",
                      f"{i2}log.warning(\"{_sentence(rng, 3, 7)[:-1]}: %s\", e)"]
        else:
            lines.append(f"{i1}# {_sentence(rng, 5, 12)}")
    lines.append(f"{i1}return {var}" if ret != "None" else f"{i1}{var}.{rng.choice(VERBS)}()")
    return lines


def _module(rng: random.Random, name: str, target_bytes: int) -> str:
    lines = [f'"""{_sentence(rng, 8, 16)}', "", _sentence(rng), '"""', "",
             "from __future__ import annotations", ""]
    lines += sorted({f"import {rng.choice(['os', 'json', 'time', 're', 'zlib', 'hashlib'])}"
                     for _ in range(3)})
    lines += [f"from {rng.choice(['collections.abc', 'typing'])} import Any, Iterator, Sequence",
              "from pathlib import Path", "",
              f"from {name.split('/')[0]}.{rng.choice(NOUNS)} import {_camel(rng)}, "
              f"{_ident(rng)}", "", "log = logging.getLogger(__name__)", "",
              f"{rng.choice(NOUNS).upper()}_{rng.choice(NOUNS).upper()} = {rng.randint(1, 9999)}",
              ""]
    size = sum(len(x) + 1 for x in lines)
    while size < target_bytes:
        if rng.random() < 0.35:
            block = ["", "", f"class {_camel(rng)}:",
                     f'    """{_sentence(rng, 6, 16)}"""', ""]
            for _ in range(rng.randint(1, 4)):
                block += [*_function(rng, "    "), ""]
        else:
            block = ["", "", *_function(rng)]
        lines += block
        size += sum(len(x) + 1 for x in block)
    return "\n".join(lines) + "\n"


# -- bash output ------------------------------------------------------------------------------


def _pytest_output(rng: random.Random, files: list[str], tests: int, verbose: bool) -> str:
    out = ["============================= test session starts ==============================",
           "platform linux -- Python 3.12.3, pytest-8.3.4, pluggy-1.5.0",
           "rootdir: /home/dev/proj", "configfile: pyproject.toml",
           "plugins: xdist-3.6.1, cov-6.0.0, hypothesis-6.122.3",
           f"collected {tests} items", ""]
    failed = []
    if verbose:
        for i in range(tests):
            f = rng.choice(files).replace("src/", "tests/test_").split("/")[-1]
            name = f"test_{_ident(rng)}" + (f"[{rng.choice(NOUNS)}-{rng.randint(0, 9)}]"
                                            if rng.random() < 0.3 else "")
            status = "PASSED" if rng.random() > 0.03 else "FAILED"
            if status == "FAILED":
                failed.append(f"tests/{f}::{name}")
            out.append(f"tests/{f}::{name} {status} [{100 * (i + 1) // tests:3d}%]")
    else:
        done = 0
        while done < tests:
            n = min(tests - done, rng.randint(5, 60))
            f = rng.choice(files).replace("src/", "tests/test_").split("/")[-1]
            dots = "".join("." if rng.random() > 0.02 else "F" for _ in range(n))
            pad = " " * max(1, 60 - len(dots))
            out.append(f"tests/{f} {dots}{pad}[{100 * (done + n) // tests:3d}%]")
            done += n
    for name in failed[:3]:
        bar = "_" * 29
        out += ["", f"{'=' * 35} FAILURES {'=' * 35}",
                f"{bar} {name.split('::')[-1]} {bar}",
                "", f"    def {name.split('::')[-1]}(tmp_path):",
                f"        {rng.choice(NOUNS)} = {_ident(rng)}(tmp_path)",
                f">       assert {rng.choice(NOUNS)}.{rng.choice(NOUNS)} == {rng.randint(0, 99)}",
                f"E       AssertionError: assert {rng.randint(100, 999)} == "
                f"{rng.randint(0, 99)}", ""]
    out.append(f"========================= {tests - len(failed)} passed"
               f"{', ' + str(len(failed)) + ' failed' if failed else ''} in "
               f"{rng.uniform(0.4, 90):.2f}s =========================")
    return "\n".join(out)


def _git_log(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        h = f"{rng.getrandbits(160):040x}"
        out += [f"commit {h}", "Author: Dev Example <dev@example.com>",
                f"Date:   {rng.choice(['Mon', 'Tue', 'Wed', 'Thu', 'Fri'])} Feb "
                f"{rng.randint(1, 28)} "
                f"{rng.randint(8, 20)}:{rng.randint(10, 59)}:{rng.randint(10, 59)} 2026 +0100", "",
                f"    {rng.choice(VERBS).capitalize()} {rng.choice(ADJS)} {rng.choice(NOUNS)} "
                f"handling in {rng.choice(NOUNS)}", ""]
        if rng.random() < 0.4:
            out += ["    " + _sentence(rng), ""]
    return "\n".join(out)


def _build_log(rng: random.Random, target: int) -> str:
    out, size = [], 0
    while size < target:
        kind = rng.random()
        if kind < 0.4:
            pkg = f"{rng.choice(NOUNS)}-{rng.choice(NOUNS)}"
            line = (f"  Downloading {pkg}-{rng.randint(0, 9)}.{rng.randint(0, 30)}."
                    f"{rng.randint(0, 20)}-py3-none-any.whl ({rng.randint(8, 900)} kB)")
        elif kind < 0.7:
            line = (f"[{rng.randint(1, 400)}/{rng.randint(400, 600)}] Compiling "
                    f"src/{rng.choice(NOUNS)}/{_ident(rng)}.c -> build/{rng.choice(NOUNS)}.o")
        elif kind < 0.85:
            line = (f"src/{rng.choice(NOUNS)}/{rng.choice(NOUNS)}.py:{rng.randint(1, 900)}:"
                    f"{rng.randint(1, 80)}: {rng.choice(['E501', 'F401', 'W291', 'B008', 'UP007'])}"
                    f" {_sentence(rng, 3, 8)}")
        else:
            line = f"DEBUG {rng.choice(NOUNS)}.{rng.choice(VERBS)}: {_sentence(rng, 4, 12)}"
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


# -- the transcript ---------------------------------------------------------------------------


class Session:
    def __init__(self, index: int, seed: int, entries: int, shape: str = "default") -> None:
        self.rng = rng = random.Random(f"{seed}:{index}")
        self.seed, self.shape = seed, shape
        self.subagents: list[tuple[str, str]] = []  # (file name, text)
        self.entries = entries
        self.index = index
        self.project = index % PROJECTS
        self.cwd = f"/home/dev/proj-{self.project}"
        self.session_id = self.uuid()
        self.branch = rng.choice(["main", "main",
                                  f"feature/{rng.choice(NOUNS)}-{rng.choice(VERBS)}",
                                  f"fix/{rng.choice(NOUNS)}-{rng.randint(10, 999)}"])
        self.slug = f"{rng.choice(ADJS)}-{rng.choice(VERBS)}ing-{rng.choice(NOUNS)}"
        self.time = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC) + dt.timedelta(
            minutes=rng.randint(0, 60 * 24 * 50))
        pkg = rng.choice(["app", "core", "service", "lib", rng.choice(NOUNS)])
        self.files: dict[str, str] = {}
        for _ in range(rng.randint(8, 16)):
            name = f"src/{pkg}/{rng.choice(NOUNS)}_{rng.choice(NOUNS)}.py"
            self.files[name] = _module(rng, f"{pkg}/x", int(rng.lognormvariate(7.8, 0.45)))
        self.lines: list[str] = []
        self.parent: str | None = None
        self.cache_read = rng.randint(12_000, 20_000)
        self.tracked: dict[str, dict[str, Any]] = {}
        self.prompt_uuid: str | None = None

    # helpers

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def tick(self, lo: float = 0.05, hi: float = 4.0) -> str:
        self.time += dt.timedelta(seconds=self.rng.uniform(lo, hi))
        return self.time.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.time.microsecond // 1000:03d}Z"

    def toolu(self) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        return "toolu_01" + "".join(self.rng.choice(alphabet) for _ in range(22))

    def emit(self, obj: dict[str, Any]) -> None:
        self.lines.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    def envelope(self, kind: str, parent: str | None, **rest: Any) -> dict[str, Any]:
        env: dict[str, Any] = {"parentUuid": parent, "isSidechain": False,
                               "userType": "external", "cwd": self.cwd,
                               "sessionId": self.session_id, "version": VERSION,
                               "gitBranch": self.branch}
        if len(self.lines) > 3:
            env["slug"] = self.slug
        env["type"] = kind
        env.update(rest)
        return env

    @property
    def full(self) -> bool:
        return len(self.lines) >= self.entries

    # records

    def summary(self) -> None:
        self.emit({"type": "summary",
                   "summary": f"{self.rng.choice(VERBS).capitalize()} {self.rng.choice(ADJS)} "
                              f"{self.rng.choice(NOUNS)} {self.rng.choice(NOUNS)} handling",
                   "leafUuid": self.uuid()})

    def snapshot(self, update: bool) -> None:
        assert self.prompt_uuid is not None
        self.emit({"type": "file-history-snapshot", "messageId": self.prompt_uuid if not update
                   else self.uuid(),
                   "snapshot": {"messageId": self.prompt_uuid,
                                "trackedFileBackups": dict(self.tracked),
                                "timestamp": self.tick(0, 0.1)},
                   "isSnapshotUpdate": update})

    def hook(self, event: str, name: str, command: str, tool_id: str, parent: str | None) -> None:
        self.emit(self.envelope("progress", parent, data={
            "type": "hook_progress", "hookEvent": event, "hookName": name, "command": command},
            parentToolUseID=tool_id, toolUseID=tool_id, uuid=self.uuid(),
            timestamp=self.tick(0, 0.2)))

    def prompt(self) -> None:
        rng = self.rng
        text = rng.choice(USER_ASKS).format(
            t=f"the {rng.choice(ADJS)} {rng.choice(NOUNS)} {rng.choice(NOUNS)}",
            f=rng.choice(list(self.files)), n=rng.choice(NOUNS), n2=rng.choice(NOUNS),
            n3=rng.choice(NOUNS), a=rng.choice(ADJS), a2=rng.choice(ADJS), v=rng.choice(VERBS),
            v2=rng.choice(VERBS), m=rng.choice(NOUNS))
        if rng.random() < 0.3:
            text += "\n\n" + _prose(rng, rng.randint(2, 6)).replace("Let me", "We should")
        self.time += dt.timedelta(minutes=rng.uniform(0.2, 20))
        me = self.uuid()
        self.emit(self.envelope("user", self.parent, message={"role": "user", "content": text},
                                uuid=me, timestamp=self.tick(),
                                thinkingMetadata={"maxThinkingTokens": 31999}, todos=[],
                                permissionMode="acceptEdits"))
        self.parent = self.prompt_uuid = me
        self.snapshot(False)

    def response(self, blocks: list[dict[str, Any]]) -> list[str]:
        """Write one API response, one block per line; tool results follow their tool_use."""
        rng = self.rng
        msg_id = "msg_01" + "".join(rng.choice(BASE58) for _ in range(22))
        req_id = "req_011C" + "".join(rng.choice(BASE58) for _ in range(20))
        creation = rng.randint(200, 9000)
        self.cache_read += rng.randint(800, 6000)
        out_tokens = rng.randint(3, 12)
        uuids = []
        for block in blocks:
            if self.full:
                break
            out_tokens += rng.randint(20, 400)
            usage = {"input_tokens": rng.randint(1, 8), "cache_creation_input_tokens": creation,
                     "cache_read_input_tokens": self.cache_read,
                     "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                        "ephemeral_1h_input_tokens": creation},
                     "output_tokens": out_tokens, "service_tier": "standard",
                     "inference_geo": "not_available"}
            content = {k: v for k, v in block.items() if not k.startswith("_")}
            me = self.uuid()
            env = self.envelope("assistant", self.parent)
            del env["type"]  # assistant lines put the type after message and requestId
            self.emit(env | {
                "message": {"model": MODEL, "id": msg_id, "type": "message",
                            "role": "assistant", "content": [content], "stop_reason": None,
                            "stop_sequence": None, "usage": usage},
                "requestId": req_id, "type": "assistant", "uuid": me,
                "timestamp": self.tick(0.5, 6)})
            self.parent = me
            uuids.append(me)
            if block["type"] == "tool_use":
                self.tool_result(block, me)
        return uuids

    def tool_result(self, block: dict[str, Any], call_uuid: str) -> None:
        rng = self.rng
        name, tool_id, inp = block["name"], block["id"], block["input"]
        pre = {"Bash": "cd ${CLAUDE_PLUGIN_ROOT}/hooks && bun run ./guardian.ts",
               "Edit": "${CLAUDE_PLUGIN_ROOT}/scripts/pre-edit-check.sh",
               "Write": "${CLAUDE_PLUGIN_ROOT}/scripts/pre-edit-check.sh"}
        if name in pre and not self.full:
            self.hook("PreToolUse", f"PreToolUse:{name}", pre[name], tool_id, call_uuid)
        result: Any
        is_error = False
        if name == "Read":
            text = self.files[inp["file_path"].removeprefix(self.cwd + "/")]
            rows = text.split("\n")[:-1]
            content = "\n".join(f"{i + 1:6d}→{r}" for i, r in enumerate(rows)) + "\n"
            result = {"type": "text", "file": {"filePath": inp["file_path"], "content": text,
                                               "numLines": len(rows), "startLine": 1,
                                               "totalLines": len(rows)}}
        elif name == "Bash":
            stdout = block["_stdout"]
            for k in range(rng.randint(0, 3) if len(stdout) > 500 else 0):
                if self.full:
                    break
                part = stdout[: max(1, len(stdout) * (k + 1) // 4)][-rng.randint(300, 3000):]
                self.emit(self.envelope("progress", call_uuid, data={
                    "type": "bash_progress", "output": part, "fullOutput": part,
                    "elapsedTimeSeconds": k + 2, "totalLines": part.count("\n") + 1,
                    "timeoutMs": 120000}, toolUseID=f"bash-progress-{k}",
                    parentToolUseID=tool_id, uuid=self.uuid(), timestamp=self.tick(0.5, 2)))
            is_error = block["_failed"]
            content = stdout + ("\n" + block["_stderr"] if block["_stderr"] else "")
            if is_error:
                content = f"Exit code 1\n{content}"
            result = {"stdout": stdout, "stderr": block["_stderr"], "interrupted": False,
                      "isImage": False, "noOutputExpected": False}
        elif name == "Edit" and inp["old_string"] not in self.files[
                inp["file_path"].removeprefix(self.cwd + "/")]:
            # an earlier call of the same response changed the text: the real tool refuses
            is_error = True
            content = ("<tool_use_error>String to replace not found in file.\nString: "
                       f"{inp['old_string']}</tool_use_error>")
            result = f"Error: String to replace not found in file.\nString: {inp['old_string']}"
        elif name == "Edit":
            rel = inp["file_path"].removeprefix(self.cwd + "/")
            original = self.files[rel]
            old, new = inp["old_string"], inp["new_string"]
            before = original[: original.index(old)]
            start = before.count("\n") + 1
            self.files[rel] = original.replace(old, new, 1)
            olines, nlines = old.split("\n"), new.split("\n")
            ctx_before = before.split("\n")[-4:-1]
            first = start - len(ctx_before)
            patch = [{"oldStart": first, "oldLines": len(olines) + len(ctx_before),
                      "newStart": first, "newLines": len(nlines) + len(ctx_before),
                      "lines": [" " + c for c in ctx_before] + ["-" + x for x in olines]
                      + ["+" + x for x in nlines]}]
            content = f"The file {inp['file_path']} has been updated successfully."
            result = {"filePath": inp["file_path"], "oldString": old, "newString": new,
                      "originalFile": original, "structuredPatch": patch,
                      "userModified": False, "replaceAll": False}
            self.track(rel)
        elif name == "Write":
            rel = inp["file_path"].removeprefix(self.cwd + "/")
            self.files[rel] = inp["content"]
            content = f"File created successfully at: {inp['file_path']}"
            result = {"type": "create", "filePath": inp["file_path"], "content": inp["content"],
                      "structuredPatch": [], "originalFile": None}
            self.track(rel)
        elif name == "Task":
            agent = SubAgent(self, len(self.subagents), inp["prompt"], rng.randint(30, 90))
            text = agent.build()
            self.subagents.append((f"agent-{agent.agent_id}.jsonl", text))
            content = _prose(rng, rng.randint(3, 10))
            result = {"status": "completed", "prompt": inp["prompt"], "agentId": agent.agent_id,
                      "content": [{"type": "text", "text": content}],
                      "totalDurationMs": rng.randint(8_000, 400_000),
                      "totalTokens": rng.randint(5_000, 90_000),
                      "totalToolUseCount": text.count('"type":"tool_use"')}
        else:  # Grep
            hits = [f for f in self.files if rng.random() < 0.4] or [next(iter(self.files))]
            if inp.get("output_mode") == "content":
                rows = []
                for f in hits:
                    lines = self.files[f].split("\n")
                    for i in rng.sample(range(len(lines)), min(len(lines), rng.randint(1, 8))):
                        rows.append(f"{self.cwd}/{f}:{i + 1}:{lines[i]}")
                content = "\n".join(rows)
                result = {"mode": "content", "numFiles": len(hits), "filenames": [],
                          "content": content, "numLines": len(rows)}
            else:
                content = "\n".join(f"{self.cwd}/{f}" for f in hits)
                result = {"mode": "files_with_matches",
                          "filenames": [f"{self.cwd}/{f}" for f in hits], "numFiles": len(hits)}
        if self.full:
            return
        me = self.uuid()
        block_out: dict[str, Any] = {"tool_use_id": tool_id, "type": "tool_result",
                                     "content": content}
        if is_error:
            block_out["is_error"] = True
        self.emit(self.envelope("user", call_uuid, message={"role": "user",
                                                            "content": [block_out]},
                                uuid=me, timestamp=self.tick(0.1, 8), toolUseResult=result,
                                sourceToolAssistantUUID=call_uuid))
        self.parent = me
        if not self.full:
            post = ("${CLAUDE_PLUGIN_ROOT}/scripts/post-tool-capture.sh" if name == "Bash"
                    else "${CLAUDE_PLUGIN_ROOT}/scripts/tool-call-capture.sh")
            self.hook("PostToolUse", f"PostToolUse:{name}", post, tool_id, call_uuid)
        if name in ("Edit", "Write") and not is_error and not self.full:
            self.snapshot(True)

    def track(self, rel: str) -> None:
        entry = self.tracked.get(rel)
        version = entry["version"] + 1 if entry else 1
        self.tracked[rel] = {"backupFileName": f"{self.rng.getrandbits(64):016x}@v{version}",
                             "version": version, "backupTime": self.tick(0, 0.1)}

    # tool calls

    def tool_call(self) -> dict[str, Any]:
        rng = self.rng
        if self.shape == "subagent-heavy" and rng.random() < TASK_SHARE:
            return self.task_call()
        read, bash, edit, write = TOOL_MIX[self.shape]
        r = rng.random()
        path = rng.choice(list(self.files))
        abspath = f"{self.cwd}/{path}"
        if r < read:
            return {"type": "tool_use", "id": self.toolu(), "name": "Read",
                    "input": {"file_path": abspath}}
        if r < bash:
            return self.bash_call()
        if r < edit:
            text = self.files[path]
            rows = text.split("\n")
            i = rng.randrange(max(1, len(rows) - 8))
            old = "\n".join(rows[i:i + rng.randint(1, 8)])
            if not old.strip() or text.count(old) != 1:
                return {"type": "tool_use", "id": self.toolu(), "name": "Read",
                        "input": {"file_path": abspath}}
            new_rows = _function(rng, "    " if old.startswith("    ") else "")
            keep = old.split("\n")
            new = "\n".join(keep[: rng.randint(0, len(keep))] + new_rows[: rng.randint(2, 12)])
            return {"type": "tool_use", "id": self.toolu(), "name": "Edit",
                    "input": {"replace_all": False, "file_path": abspath, "old_string": old,
                              "new_string": new}}
        if r < write:
            new_path = f"{path.rsplit('/', 1)[0]}/{rng.choice(NOUNS)}_{rng.choice(VERBS)}.py"
            if rng.random() < 0.5:
                new_path = "tests/test_" + new_path.rsplit("/", 1)[1]
            return {"type": "tool_use", "id": self.toolu(), "name": "Write",
                    "input": {"file_path": f"{self.cwd}/{new_path}",
                              "content": _module(rng, "app/x", int(rng.lognormvariate(7.6, 0.5)))}}
        mode = rng.choice(["files_with_matches", "content"])
        inp: dict[str, Any] = {"pattern": rng.choice([_ident(rng), f"class {_camel(rng)}",
                                                      f"def {rng.choice(VERBS)}_\\w+",
                                                      rng.choice(NOUNS)]),
                               "path": self.cwd, "glob": "*.py"}
        if mode == "content":
            inp["output_mode"] = "content"
            inp["-n"] = True
        return {"type": "tool_use", "id": self.toolu(), "name": "Grep", "input": inp}

    def task_call(self) -> dict[str, Any]:
        rng = self.rng
        prompt = f"{rng.choice(USER_ASKS).split('.')[0]}. " + _prose(rng, rng.randint(2, 5))
        return {"type": "tool_use", "id": self.toolu(), "name": "Task",
                "input": {"subagent_type": rng.choice(["general-purpose", "Explore", "Plan"]),
                          "description": f"{rng.choice(VERBS).capitalize()} the "
                                         f"{rng.choice(NOUNS)} {rng.choice(NOUNS)}",
                          "prompt": prompt}}

    def bash_call(self) -> dict[str, Any]:
        rng = self.rng
        r = rng.random()
        files = list(self.files)
        stderr, failed = "", False
        if r < 0.045:  # the big ones: 20-60 KiB
            kind = rng.random()
            if kind < 0.5:
                cmd, desc = "uv run pytest -v 2>&1", "Run the full test suite verbosely"
                stdout = _pytest_output(rng, files, rng.randint(250, 700), verbose=True)
            elif kind < 0.8:
                cmd, desc = "pip install -e '.[dev]' 2>&1 && make build", "Install and build"
                stdout = _build_log(rng, rng.randint(20_000, 60_000))
            else:
                cmd, desc = "git log -n 200", "Show recent history"
                stdout = _git_log(rng, rng.randint(150, 300))
        elif r < 0.35:
            cmd = f"uv run pytest tests/test_{rng.choice(NOUNS)}.py -q 2>&1 | tail -40"
            desc = "Run the tests"
            stdout = _pytest_output(rng, files, rng.randint(10, 120), verbose=False)
            failed = "failed" in stdout.rsplit("\n", 1)[-1]
        elif r < 0.55:
            cmd, desc = "git status && git diff --stat", "Check working tree"
            stdout = (f"On branch {self.branch}\nChanges not staged for commit:\n"
                      '  (use "git add <file>..." to update what will be committed)\n\n'
                      + "\n".join(f"\tmodified:   {f}"
                                  for f in rng.sample(files, min(len(files), 4)))
                      + "\n\n" + "\n".join(f" {f} | {rng.randint(1, 90)} {'+' * rng.randint(1, 30)}"
                                           f"{'-' * rng.randint(0, 12)}" for f in files[:4]))
        elif r < 0.7:
            cmd, desc = f"ls -la {self.cwd}/src", "List source files"
            stdout = "\n".join(f"-rw-r--r--  1 dev dev {rng.randint(200, 30000):6d} Feb "
                               f"{rng.randint(1, 28):2d} {rng.randint(8, 20)}:"
                               f"{rng.randint(10, 59)} "
                               f"{f.rsplit('/', 1)[1]}" for f in files)
        elif r < 0.85:
            cmd = f"uv run ruff check src/ && uv run mypy src/{files[0].split('/')[1]}"
            desc = "Lint and type-check"
            stdout = _build_log(rng, rng.randint(300, 3000))
            failed = rng.random() < 0.3
        else:
            cmd, desc = f"git diff {rng.choice(files)}", "Show the diff"
            text = self.files[rng.choice(files)].split("\n")
            i = rng.randrange(max(1, len(text) - 30))
            stdout = "\n".join([f"@@ -{i},20 +{i},24 @@"]
                               + [rng.choice([" ", " ", " ", "-", "+"]) + x
                                  for x in text[i:i + 30]])
        if failed:
            stderr = f"{rng.choice(EXCEPTIONS)}: {_sentence(rng, 4, 10)}"
        return {"type": "tool_use", "id": self.toolu(), "name": "Bash",
                "input": {"command": cmd, "description": desc}, "_stdout": stdout,
                "_stderr": stderr, "_failed": failed}

    def turn(self) -> None:
        rng = self.rng
        self.prompt()
        for _ in range(rng.randint(2, 9)):
            if self.full:
                return
            blocks: list[dict[str, Any]] = []
            if rng.random() < 0.35:
                blocks.append({"type": "thinking", "thinking": _prose(rng, rng.randint(2, 9)),
                               "signature": "Eu" + f"{rng.getrandbits(1024):0256x}"})
            if rng.random() < 0.6:
                blocks.append({"type": "text", "text": _prose(rng, rng.randint(1, 3))})
            blocks += [self.tool_call() for _ in range(rng.choice([1, 1, 1, 2, 2, 3]))]
            for b in blocks:
                if b["type"] == "tool_use":
                    b["caller"] = {"type": "direct"}
            self.response(blocks)
        if self.full:
            return
        self.response([{"type": "text", "text": _prose(rng, rng.randint(3, 12))}])
        if self.full:
            return
        stop = self.uuid()
        self.emit(self.envelope("system", self.parent, subtype="stop_hook_summary", hookCount=1,
                                hookInfos=[{"command": "${CLAUDE_PLUGIN_ROOT}/hooks/stop-hook.sh"}],
                                hookErrors=[], preventedContinuation=False, stopReason="",
                                hasOutput=False, level="suggestion", timestamp=self.tick(0, 0.1),
                                uuid=stop, toolUseID=self.uuid()))
        if not self.full:
            self.emit(self.envelope("system", stop, subtype="turn_duration",
                                    durationMs=self.rng.randint(5_000, 900_000),
                                    timestamp=self.tick(0, 0.1), uuid=self.uuid(), isMeta=False))

    def build(self) -> str:
        self.summary()
        tool = self.uuid()
        self.hook("SessionStart", "SessionStart:startup",
                  "/home/dev/.claude/hooks/tmux-waiting.sh clear", tool, None)
        while not self.full:
            self.turn()
        return "\n".join(self.lines[: self.entries]) + "\n"


class SubAgent(Session):
    """A Task's sub-agent: its own transcript (``isSidechain``, ``agentId``, the parent's
    ``sessionId``), starting from the Task's prompt, working on a copy of the parent's files."""

    def __init__(self, parent: Session, number: int, prompt: str, entries: int) -> None:
        super().__init__(parent.index, parent.seed, entries)
        self.rng = random.Random(f"{parent.seed}:{parent.index}:agent:{number}")
        self.agent_id = f"a{self.rng.getrandbits(28):07x}"
        self.session_id, self.cwd, self.branch = parent.session_id, parent.cwd, parent.branch
        self.files, self.time, self.task = dict(parent.files), parent.time, prompt

    def envelope(self, kind: str, parent: str | None, **rest: Any) -> dict[str, Any]:
        env = super().envelope(kind, parent, **rest)
        env["isSidechain"] = True
        env["agentId"] = self.agent_id
        return env

    def build(self) -> str:
        me = self.uuid()
        self.emit(self.envelope("user", None, message={"role": "user", "content": self.task},
                                uuid=me, timestamp=self.tick()))
        self.parent = self.prompt_uuid = me
        while not self.full:
            blocks = [self.tool_call() for _ in range(self.rng.choice([1, 1, 2]))]
            self.response(blocks)
        return "\n".join(self.lines[: self.entries]) + "\n"


def session_files(index: int, seed: int, entries: int, shape: str = "default"
                  ) -> list[tuple[str, str]]:
    """(relative path, file text) of session number ``index`` and of its sub-agents."""
    s = Session(index, seed, entries, shape)
    text = s.build()
    folder = f"-home-dev-proj-{s.project}"
    return [(f"{folder}/{s.session_id}.jsonl", text),
            *((f"{folder}/{s.session_id}/subagents/{name}", body) for name, body in s.subagents)]


def generate(out_dir: Path, sessions: int, entries: int, seed: int, shape: str = "default"
             ) -> int:
    """Write ``sessions`` transcripts of ``entries`` lines each (plus their sub-agents' for the
    ``subagent-heavy`` shape) under ``out_dir``; total bytes."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    total = 0
    for i in range(sessions):
        for rel, text in session_files(i, seed, entries, shape):
            path = out_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            data = text.encode("utf-8")
            path.write_bytes(data)
            total += len(data)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--entries", type=int, default=200, help="lines per session file")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shape", choices=SHAPES, default="default")
    args = parser.parse_args()
    total = generate(args.out, args.sessions, args.entries, args.seed, args.shape)
    print(f"wrote {args.sessions} sessions x {args.entries} entries, {total:,} bytes "
          f"({total / 2**20:.1f} MiB) under {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
