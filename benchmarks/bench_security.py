"""Security floor: recall, precision, leaks, false positives and speed of the egress tools.

Runs ``opentraces.security.sanitize(record, tools, kind="record")`` with the tools of
``opentraces.security.FLOOR`` that load (or ``--tools``) over:

(a) planted records from ``gen_secrets.py`` (regenerated each run from ``--seed``): every
    family × context × encoding, ``--reps`` times, each in its own copy of a real transcript
    line. Recall per family (found = a finding of a secret tool, regex or entropy, overlaps a
    planted piece), with Wilson 95 % intervals, and per context and encoding; span precision of
    the secret tools (findings overlapping a planted value ÷ all their findings on these
    records; path/identity findings of the other tools are counted apart); leaks: after
    sanitizing, the output is serialized to JSONL, and an instance leaks when any substring of
    length min(8, ⌈len/2⌉) of the secret survives, raw or as it was encoded (windows lying in a
    family's public prefix, such as ``github_pat_``, do not count);
(b) clean negatives (hashes, UUIDs, digests, integrity strings, images, minified JS,
    lockfiles, placeholders, AWS's example key) planted the same way: findings per MB;
(c) the real corpus (every record of ``shared/corpus``, read in place): secret findings per MB,
    listed for a human to judge (masked in RESULTS.md), and the throughput per core;
(d) the slowest field: a 10 MB tool output made of real tool outputs (with secrets planted),
    and 1 MB adversarial strings.

    .venv/bin/python benchmarks/bench_security.py                 # ~1-3 min
    .venv/bin/python benchmarks/bench_security.py --reps 1 --no-record --misses 40
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import common  # first: isolates HOME / OPENTRACES_HOME
import gen_secrets as gen

TARGET_RECALL = 0.98
TARGET_PRECISION = 0.90
TARGET_LEAKS = 0
TARGET_MBPS = 20.0
TARGET_FIELD_S = 2.0
#: findings of these are paths and identities, not secrets: counted apart
NOT_SECRETS = ("path_anonymizer", "business_logic")
BIG_FIELD = 10_000_000


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def load(names: Iterable[str], ctx: Any) -> tuple[list[Any], dict[str, str]]:
    """The tools that load here, and why each other one does not."""
    from opentraces.security import load_tools

    tools, missing = [], {}
    for name in names:
        try:
            tools += load_tools([name], ctx)
        except Exception as e:  # a tool still being written: measure the others
            missing[name] = f"{type(e).__name__}: {e}"
    return tools, missing


def _overlaps(span: tuple[int, int], pieces: list[tuple[int, int, str]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end, _ in pieces)


def _field(value: Any, path: str) -> str:
    for p, text in gen.strings(value):
        if gen.dotted(p) == path:
            return text
    return ""


def _leaked(inst: gen.Instance, output: Any) -> list[str]:
    """How much of each form of the instance survives in the serialized output: every
    character covered by a surviving window, as ``form survived/length``."""
    import msgspec

    hay = msgspec.json.encode(output).decode() + "\x00" + _field(output, inst.path)
    k = min(8, math.ceil(len(inst.secret) / 2))
    forms = {"raw": inst.secret, **{f"piece{i}": p for i, (_, _, p) in enumerate(inst.pieces)}}
    if inst.encoding == "split":
        forms |= {f"half{i}": h for i, h in enumerate(gen._split(inst.secret))}
    public = [p for p in (inst.prefix, quote(inst.prefix, safe=""), gen._escape(inst.prefix)) if p]
    leaked = []
    for name, form in forms.items():
        n = min(k, len(form))
        if n < 6:
            continue
        covered: set[int] = set()
        for i in range(len(form) - n + 1):
            window = form[i:i + n]
            if window in hay and not any(window in p for p in public):
                covered.update(range(i, i + n))
        if covered:
            leaked.append(f"{name} {len(covered)}/{len(form)}")
    return leaked


def _context(text: str, start: int, end: int, width: int = 70) -> str:
    return repr(text[max(0, start - width):end + width])


def _mask(text: str) -> str:
    """A flagged corpus string as RESULTS.md shows it: enough to judge, not to reuse."""
    if len(text) <= 8:
        return "*" * len(text)
    return f"{text[:4]}…{text[-2:]} ({len(text)} chars)"


# -- (a) planted ----------------------------------------------------------------------------


def run_planted(data: gen.Generated, tools: list[Any]) -> dict[str, Any]:
    from opentraces.security import sanitize

    found: list[bool] = []
    found_any: list[bool] = []
    leaks: list[list[str]] = []
    leak_text: dict[int, str] = {}
    tp = fp = 0
    other: Counter[str] = Counter()
    fp_examples: list[tuple[str, str, str]] = []
    seconds = 0.0
    for inst, record in zip(data.instances, data.records, strict=True):
        began = time.perf_counter()
        result = sanitize(record, tools, kind="record")
        seconds += time.perf_counter() - began
        hit = hit_any = False
        for f in result.findings:
            on = f.path == inst.path and _overlaps(f.span, inst.pieces)
            hit_any |= on
            if f.tool in NOT_SECRETS:
                other[f"{f.tool}:{f.family}"] += 1
                continue
            hit |= on
            if on:
                tp += 1
            else:
                fp += 1
                if len(fp_examples) < 12:
                    text = _field(record, f.path)
                    fp_examples.append((f"{f.tool}:{f.rule_id}", f"{inst.record_id} {f.path}",
                                        _mask(text[f.span[0]:f.span[1]])))
        found.append(hit)
        found_any.append(hit_any)
        leaks.append(_leaked(inst, result.output))
        if leaks[-1]:
            pos, length = inst.inserted
            leak_text[len(leaks) - 1] = _field(result.output, inst.path)[pos:pos + length + 40]
    return {"found": found, "found_any": found_any, "leaks": leaks, "tp": tp, "fp": fp,
            "leak_text": leak_text,
            "other": other, "fp_examples": fp_examples, "seconds": seconds}


def _recall_rows(data: gen.Generated, found: list[bool], leaks: list[list[str]], key: str
                 ) -> list[tuple[Any, ...]]:
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for inst, ok, leak in zip(data.instances, found, leaks, strict=True):
        row = hits[getattr(inst, key)]
        row[0] += ok
        row[1] += 1
        row[2] += bool(leak)
    rows = []
    for name, (k, n, leaked) in hits.items():
        lo, hi = wilson(k, n)
        rows.append((name, f"{k}/{n}", f"{k / n:.3f}", f"[{lo:.3f}, {hi:.3f}]", leaked))
    return rows


# -- (b) negatives, (c) corpus ----------------------------------------------------------------


def run_negatives(data: gen.Generated, tools: list[Any]) -> dict[str, Any]:
    from opentraces.security import sanitize

    per_kind: Counter[str] = Counter()
    examples: list[str] = []
    size = 0
    for inst, record in zip(data.negative_instances, data.negatives, strict=True):
        size += len(inst.secret.encode())
        for f in sanitize(record, tools, kind="record").findings:
            if f.tool not in NOT_SECRETS and f.path == inst.path and _overlaps(f.span, inst.pieces):
                per_kind[inst.family] += 1
                if len(examples) < 10:
                    text = _field(record, f.path)
                    examples.append(f"{inst.family} {f.tool}:{f.rule_id} "
                                    f"{text[f.span[0]:f.span[1]][:60]!r}")
    return {"per_kind": per_kind, "bytes": size, "examples": examples}


def _scanned_bytes(value: Any) -> int:
    total = 0
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        for k, v in value.items():
            total += _scanned_bytes(k) + _scanned_bytes(v)
    elif isinstance(value, list):
        total += sum(_scanned_bytes(v) for v in value)
    return total


def run_corpus(tools: list[Any]) -> dict[str, Any]:
    from opentraces.security import sanitize

    size = 0
    flagged: list[tuple[str, str, str, str]] = []
    other: Counter[str] = Counter()
    slowest = (0.0, "", 0)
    wall = 0.0
    cpu0 = time.process_time()
    for rid, record in gen.corpus_records():
        size += _scanned_bytes(record)
        began = time.perf_counter()
        result = sanitize(record, tools, kind="record" if not isinstance(record, str)
                          else "text")
        took = time.perf_counter() - began
        wall += took
        if took > slowest[0]:
            slowest = (took, rid, _scanned_bytes(record))
        for f in result.findings:
            if f.tool in NOT_SECRETS:
                other[f"{f.tool}:{f.family}"] += 1
                continue
            text = record if isinstance(record, str) else _field(record, f.path)
            flagged.append((f"{f.tool}:{f.rule_id}", rid, f.path,
                            text[f.span[0]:f.span[1]]))
    cpu = time.process_time() - cpu0
    return {"bytes": size, "cpu": cpu, "wall": wall, "flagged": flagged, "other": other,
            "slowest": slowest}


# -- (d) big and adversarial fields ---------------------------------------------------------


def big_fields(seed: int) -> list[tuple[str, str, list[str]]]:
    """(name, text, planted secrets) of the large fields to time."""
    rng = random.Random(seed)
    outputs = [t for role, t in _corpus_outputs() if role == "tool_result"]
    parts, size = [], 0
    while size < BIG_FIELD:
        t = outputs[rng.randrange(len(outputs))]
        parts.append(t)
        size += len(t) + 1
    secrets = []
    for family in ("github-ghp", "aws-secret-key", "pem-rsa", "conn-postgres", "openai-project"):
        plant = gen.FAMILIES[family](rng)
        snippet, _ = gen.render(plant, "file_output", "raw", rng)
        parts.insert(rng.randrange(len(parts)), snippet)
        secrets.append(plant.secret)
    b64 = gen.B64
    return [
        ("10 MB real tool output, 5 secrets", "\n".join(parts), secrets),
        ("1 MB one base64-alphabet run", "".join(rng.choice(b64) for _ in range(1_000_000)), []),
        ("1 MB of 'A'", "A" * 1_000_000, []),
        ("1 MB of 'password=' repeated", "password=" * 111_112, []),
        ("1 MB of JSON escapes", '\\"' * 500_000, []),
        ("1 MB of percent escapes", "%41" * 333_334, []),
        ("1 MB of 'ghp_' repeated", "ghp_" * 250_000, []),
        ("1 MB of '-----BEGIN '", "-----BEGIN " * 90_910, []),
        ("1 MB of 'https://a:' (userinfo start)", "https://a:" * 100_000, []),
    ]


def _corpus_outputs() -> Iterable[tuple[str, str]]:
    for _rid, record in gen.corpus_records():
        if isinstance(record, dict):
            for path, text in gen.strings(record):
                if len(text) > 200:
                    yield gen._role(record, path) or "", text


def run_big(tools: list[Any], seed: int) -> list[tuple[str, int, float, str]]:
    from opentraces.security import sanitize

    rows = []
    for name, text, secrets in big_fields(seed):
        began = time.perf_counter()
        out = sanitize({"type": "tool_result", "content": text}, tools, kind="record").output
        took = time.perf_counter() - began
        kept = sum(s[:20] in out["content"] for s in secrets)
        rows.append((name, len(text), took, f"{kept}/{len(secrets)} survived" if secrets else ""))
    return rows


# -- report ---------------------------------------------------------------------------------


def _misses(data: gen.Generated, planted: dict[str, Any], limit: int) -> str:
    groups: dict[tuple[str, str], list[gen.Instance]] = defaultdict(list)
    for inst, ok in zip(data.instances, planted["found"], strict=True):
        if not ok:
            groups[(inst.family, inst.encoding)].append(inst)
    lines = []
    for (family, encoding), insts in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        contexts = Counter(i.context for i in insts)
        lines.append(f"- {family} / {encoding}: {len(insts)} missed (contexts: "
                     + ", ".join(f"{c} {n}" for c, n in contexts.most_common()) + ")")
        for inst in insts[:limit]:
            text = _field(data.records[inst.record], inst.path)
            lines.append(f"    - {inst.context}: "
                         f"{_context(text, inst.pieces[0][0], inst.pieces[-1][1], 50)}")
    return "\n".join(lines) or "- none"


def _leak_lines(data: gen.Generated, planted: dict[str, Any], limit: int = 0) -> str:
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (inst, leak) in enumerate(zip(data.instances, planted["leaks"], strict=True)):
        if leak:
            groups[(inst.family, inst.encoding)].append(i)
    lines = []
    for (family, encoding), idx in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        contexts = Counter(data.instances[i].context for i in idx)
        lines.append(f"- {family} / {encoding}: {len(idx)} leaked (contexts: "
                     + ", ".join(f"{c} {n}" for c, n in contexts.most_common())
                     + f"; e.g. {', '.join(planted['leaks'][idx[0]])} chars survive)")
        for i in idx[:limit]:
            lines.append(f"    - {data.instances[i].context}, after sanitizing: "
                         f"{planted['leak_text'][i]!r}")
    return "\n".join(lines) or "- none"


def report(args: argparse.Namespace, tools: list[Any], missing: dict[str, str],
           data: gen.Generated, planted: dict[str, Any], neg: dict[str, Any],
           corpus: dict[str, Any], big: list[tuple[str, int, float, str]],
           gen_seconds: float) -> str:
    n = len(data.instances)
    k = sum(planted["found"])
    lo, hi = wilson(k, n)
    leaked = sum(bool(x) for x in planted["leaks"])
    findings = planted["tp"] + planted["fp"]
    precision = planted["tp"] / findings if findings else 0.0
    neg_mb = neg["bytes"] / 1e6
    neg_fp = sum(neg["per_kind"].values())
    corpus_mb = corpus["bytes"] / 1e6
    mbps = corpus_mb / corpus["cpu"] if corpus["cpu"] else 0.0
    worst = max(big, key=lambda r: r[2])
    slow = corpus["slowest"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    head = common.table(["metric", "value", "target", ""], [
        ("recall (regex + entropy, all families)", f"{k}/{n} = {k / n:.3f} "
         f"[{lo:.3f}, {hi:.3f}]", f"≥ {TARGET_RECALL}", verdict(k / n >= TARGET_RECALL)),
        ("recall counting any floor tool", f"{sum(planted['found_any'])}/{n}", "", ""),
        ("span precision (regex + entropy)", f"{planted['tp']}/{findings} = {precision:.3f}",
         f"≥ {TARGET_PRECISION}", verdict(precision >= TARGET_PRECISION)),
        ("instances leaked after sanitizing", f"{leaked}/{n}", f"{TARGET_LEAKS}",
         verdict(leaked <= TARGET_LEAKS)),
        ("false positives, clean negatives", f"{neg_fp} in {neg_mb:.2f} MB = "
         f"{neg_fp / neg_mb:.1f}/MB", "", ""),
        ("false positives, real corpus", f"{len(corpus['flagged'])} in {corpus_mb:.1f} MB = "
         f"{len(corpus['flagged']) / corpus_mb:.2f}/MB", "≤ 1/MB (§2)",
         verdict(len(corpus["flagged"]) / corpus_mb <= 1)),
        ("throughput on real corpus text", f"{mbps:.1f} MB/s per core ({corpus_mb:.1f} MB in "
         f"{corpus['cpu']:.1f} s CPU)", f"≥ {TARGET_MBPS}", verdict(mbps >= TARGET_MBPS)),
        ("slowest field", f"{worst[2]:.2f} s ({worst[0]})", f"< {TARGET_FIELD_S} s",
         verdict(worst[2] < TARGET_FIELD_S)),
        ("slowest corpus record", f"{slow[0]:.3f} s ({slow[1]}, {common.fmt_bytes(slow[2])})",
         "", ""),
    ])
    tool_line = ", ".join(t.name for t in tools) or "none"
    missing_line = "".join(f"\n- `{name}` did not load: {why}" for name, why in missing.items())
    fams = _recall_rows(data, planted["found"], planted["leaks"], "family")
    by_ctx = _recall_rows(data, planted["found"], planted["leaks"], "context")
    by_enc = _recall_rows(data, planted["found"], planted["leaks"], "encoding")
    hdr = ["", "found", "recall", "Wilson 95 %", "leaked"]
    flagged = Counter(rule for rule, *_ in corpus["flagged"])
    flag_lines = "\n".join(
        f"- `{rule}` {rid} `{path}`: {_mask(text)}"
        for rule, rid, path, text in corpus["flagged"][:args.listed]) or "- none"
    return f"""
Tools measured: {tool_line} (requested: {', '.join(args.tools)}).{missing_line}

Corpus: {n:,} planted instances ({len(gen.FAMILIES)} families × {len(gen.CONTEXTS)} contexts ×
{len(gen.ENCODINGS)} encodings × {args.reps}, seed {args.seed}) in copies of real transcript
lines, {len(data.negative_instances)} clean negatives, and the real corpus
(`shared/corpus`, {corpus_mb:.1f} MB of strings). Generation took {gen_seconds:.1f} s;
sanitizing the planted records {planted['seconds']:.1f} s.

{head}

Per family:

{common.table(hdr, sorted(fams))}

Per context:

{common.table(hdr, by_ctx)}

Per encoding:

{common.table(hdr, by_enc)}

Misses (family / encoding):

{_misses(data, planted, 0)}

Leaks (family / encoding; `form survived/length` counts the characters of the secret
(`raw`), of a planted piece or of a split half that a surviving window covers):

{_leak_lines(data, planted)}

Secret findings on planted records outside the planted value: {planted['fp']}
(e.g. {'; '.join(f'{r} at {w}: {t}' for r, w, t in planted['fp_examples'][:4]) or 'none'}).
Findings of the other floor tools on planted records (paths, identities; not secrets):
{', '.join(f'{k} {v}' for k, v in planted['other'].most_common()) or 'none'}.

Clean negatives flagged, by kind:
{', '.join(f'{k} {v}' for k, v in neg['per_kind'].most_common()) or 'none'}.

Real corpus, secret findings by rule: {', '.join(f'{k} {v}' for k, v in flagged.most_common())
or 'none'}; other tools: {', '.join(f'{k} {v}' for k, v in corpus['other'].most_common())
or 'none'}. Flagged values (masked; first {args.listed}):

{flag_lines}

Large and adversarial fields (one string each, through the whole pipeline):

{common.table(["field", "chars", "seconds", "planted"],
              [(a, f"{b:,}", f"{c:.2f}", d) for a, b, c, d in big])}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2,
                        help="instances per family × context × encoding (default 2)")
    parser.add_argument("--negatives", type=int, default=20, help="per clean kind")
    parser.add_argument("--tools", default=None,
                        help="comma-separated tool names (default: opentraces.security.FLOOR)")
    parser.add_argument("--misses", type=int, default=3,
                        help="example strings printed per missed family/encoding")
    parser.add_argument("--listed", type=int, default=40,
                        help="corpus findings listed in the report")
    parser.add_argument("--no-big", action="store_true", help="skip the large fields")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()

    from opentraces.security import FLOOR, context_for

    args.tools = args.tools.split(",") if args.tools else list(FLOOR)
    ctx = context_for(Path(os.environ["OPENTRACES_HOME"]), user_home=common.BENCH_HOME)
    tools, missing = load(args.tools, ctx)
    for name, why in missing.items():
        print(f"warning: {name} not measured: {why}", file=sys.stderr)
    began = time.perf_counter()
    data = gen.generate(args.seed, args.reps, args.negatives)
    gen_seconds = time.perf_counter() - began
    print(f"generated {len(data.instances)} instances in {gen_seconds:.1f} s", file=sys.stderr)
    planted = run_planted(data, tools)
    print(f"planted: {planted['seconds']:.1f} s", file=sys.stderr)
    neg = run_negatives(data, tools)
    corpus = run_corpus(tools)
    print(f"corpus: {corpus['cpu']:.1f} s CPU", file=sys.stderr)
    big = [] if args.no_big else run_big(tools, args.seed)
    big = big or [("(skipped)", 0, 0.0, "")]
    body = report(args, tools, missing, data, planted, neg, corpus, big, gen_seconds)
    print("\nMisses with examples:\n" + _misses(data, planted, args.misses), file=sys.stderr)
    print("\nLeaks with examples:\n" + _leak_lines(data, planted, args.misses), file=sys.stderr)
    print("\nReal corpus findings (unmasked, not recorded):", file=sys.stderr)
    for rule, rid, path, text in corpus["flagged"]:
        print(f"- {rule} {rid} {path}: {text[:100]!r}", file=sys.stderr)
    common.write_results("security", "Security floor (secrets, leaks, speed)", body,
                         record=not args.no_record)


if __name__ == "__main__":
    main()
