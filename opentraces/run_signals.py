"""Run signals: how one run went, read from its TraceRecord.

:func:`run_intel` is the ``opentraces.run_intel.v1`` payload: failures, recoveries, loops and
resteers. :func:`is_approval` and :func:`resteer_lead` are the rules that tell a user's
correction from an approval. It keeps the invariants of :mod:`opentraces.tool_calls` (a
function of the record alone, nothing stored).

The rules, thresholds and their limits are described in ``docs/intel.md``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentraces.record import Step, ToolCall, TraceRecord
from opentraces.tool_calls import (
    FIDELITY,
    Call,
    call_cwd,
    call_target,
    edits_by_path,
    input_path,
    join_path,
    program_of,
    quote,
    record_calls,
    segments,
    shell_command,
)

__all__ = [
    "INTERRUPT",
    "NOT_TYPED",
    "RUN_INTEL_SCHEMA",
    "is_approval",
    "resteer_lead",
    "run_intel",
]

RUN_INTEL_SCHEMA = "opentraces.run_intel.v1"

#: A shell command run this many times (anywhere in the trace) is one loop signal.
LOOP_MIN = 3

#: Lines that give a command's exit status (Claude, Pi, Codex wording).
_EXIT_LINE = re.compile(
    r"^(?:Exit code|Command exited with code|Process exited with code) (-?\d+)\s*$",
    re.MULTILINE)
#: Failure text in a shell output that was not marked as an error (e.g. piped through tail).
_FAILURE_TEXT = [
    (re.compile(r"^Traceback \(most recent call last\):$", re.MULTILINE), "medium"),
    (re.compile(r"^.{0,80}\bcommand not found\b.*$", re.MULTILINE), "medium"),
    (re.compile(r"^(?:=+ )?.{0,40}\b[1-9]\d* (?:failed|failing)\b.*$", re.MULTILINE), "medium"),
    (re.compile(r"^(?:npm ERR!|error(?:\[\w+\])?:|fatal:|FAILED\b).*$", re.MULTILINE), "low"),
]
#: A tool result that is the user refusing the call, not the tool failing.
_REJECTION = re.compile(r"^The user doesn't want to (?:proceed with this tool use|take this "
                        r"action)")
_REJECTION_SAID = re.compile(r"(?:the user said|the following reason for the rejection):\s*(.+)",
                             re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class _Failure:
    source: str  # "tool_error" (structured) or "output_text"
    matched: str
    exit_code: int | None
    confidence: str


def _failure(c: Call) -> _Failure | None:
    if c.obs is None or c.obs.error == "no_result":
        return None
    content = c.obs.content or ""
    if _REJECTION.match(content):
        return None
    exit_match = _EXIT_LINE.search(content)
    exit_code = int(exit_match.group(1)) if exit_match else None
    if exit_code == 1 and _no_match(c.call, content):
        return None  # grep, rg, ag and ack exit 1 when nothing matched: an answer, not a failure
    if c.obs.error is not None:
        line = exit_match.group(0) if exit_match else next(
            (ln for ln in content.splitlines() if ln.strip()), c.obs.error)
        return _Failure("tool_error", quote(line), exit_code, "high")
    if shell_command(c.call) is None:
        return None  # free text of other tools (file contents, web pages) is not a status
    if exit_code:
        return _Failure("exit_code", quote(exit_match.group(0)), exit_code, "high")
    for pattern, confidence in _FAILURE_TEXT:
        m = pattern.search(content)
        if m:
            return _Failure("output_text", quote(m.group(0)), None, confidence)
    return None


#: Lines the agents wrap around a command's own output (exit status, Codex chunk headers).
_WRAPPER_LINE = re.compile(r"^(?:\(no output\)|Chunk ID: .*|Wall time: .*|Original token count: .*|"
                           r"Output:|(?:Exit code|Command exited with code|Process exited with "
                           r"code) -?\d+)\s*$")
_MATCHERS = frozenset({"grep", "egrep", "fgrep", "rg", "ag", "ack"})


def _no_match(call: ToolCall, content: str) -> bool:
    """A search command that printed nothing but its exit status."""
    command = shell_command(call)
    if command is None or any(ln.strip() and not _WRAPPER_LINE.match(ln.strip())
                              for ln in content.splitlines()):
        return False
    programs = [program_of(seg.words) for seg in segments(command, None)]
    main = [(p, args) for p, args in programs if p not in ("cd", "")]
    return bool(main) and (main[-1][0] in _MATCHERS
                           or (main[-1][0] == "git" and main[-1][1][:1] == ("grep",)))


def _action_key(record: TraceRecord, call: ToolCall) -> str:
    """What makes two calls "the same or similar": for commands, the program and up to two
    sub-command words (``npm run check``, ``git commit``, ``python -m pytest``); for file
    tools, the tool and the path."""
    command = shell_command(call)
    if command is None:
        path = input_path(call)
        return f"{call.tool_name}:{join_path(call_cwd(record, call), path) if path else ''}"
    for seg in segments(command, None):
        program, args = program_of(seg.words)
        if program in ("cd", "export", "source", ".", "set", "echo", "") or seg.piped:
            continue
        words = [program]
        i = 0
        while i < len(args) and len(words) < 3:
            arg = args[i]
            if arg == "-m" and i + 1 < len(args):
                words += ["-m", args[i + 1]]
                i += 2
                continue
            if arg.startswith("-") or not re.match(r"^[A-Za-z][\w:.-]*$", arg) \
                    or "/" in arg or re.search(r"\.\w{1,5}$", arg):
                break
            words.append(arg)
            i += 1
        return "shell:" + " ".join(words)
    return "shell:" + quote(command, 60)


def _loop_key(command: str) -> str:
    flat = " ".join(command.split())
    return re.sub(r"^(?:cd \S+ &&\s*)+", "", flat)


def run_intel(record: TraceRecord) -> dict[str, Any]:
    """The ``opentraces.run_intel.v1`` payload of one record (rules in ``docs/intel.md``)."""
    calls = [c for c in record_calls(record) if c.step.role == "agent"]
    signals = [*_failures_and_recoveries(record, calls), *_loops(record, calls),
               *_resteers(record)]
    kind_order = {"resteer": 0, "failure": 1, "recovery": 2, "loop": 3}
    signals.sort(key=lambda s: (s["step_index"], kind_order[s["kind"]],
                                s["evidence"].get("tool_call_id") or "", s["matched_text"]))
    return {
        "trace_id": record.trace_id,
        "fidelity": FIDELITY,
        "signals": signals,
        "counts": {k: sum(1 for s in signals if s["kind"] == k)
                   for k in ("resteer", "recovery", "loop", "failure")},
    }


def _signal(kind: str, step: Step, *, severity: str, confidence: str, reason: str,
            matched_text: str, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "severity": severity, "confidence": confidence, "reason": reason,
            "step_index": step.step_index, "node_id": step.context_node_id,
            "matched_text": matched_text, "evidence": evidence}


def _failures_and_recoveries(record: TraceRecord,
                             calls: list[Call]) -> Iterator[dict[str, Any]]:
    open_failures: dict[str, list[Call]] = {}
    for c in calls:
        if c.obs is None or c.obs.error == "no_result" or _REJECTION.match(c.obs.content or ""):
            continue
        key = _action_key(record, c.call)
        failed = _failure(c)
        if failed is not None:
            open_failures.setdefault(key, []).append(c)
            yield _signal(
                "failure", c.step, severity="medium", confidence=failed.confidence,
                reason=f"{c.call.tool_name} failed"
                       + (f" with exit code {failed.exit_code}" if failed.exit_code else "")
                       + (" (reported by the tool)" if failed.source == "tool_error"
                          else " (read from its output)"),
                matched_text=failed.matched,
                evidence={"tool_name": c.call.tool_name, "tool_call_id": c.call.tool_call_id,
                          "source": failed.source, "exit_code": failed.exit_code,
                          "action": key, "target": call_target(c.call)})
        elif key in open_failures:
            earlier = open_failures.pop(key)
            yield _signal(
                "recovery", c.step, severity="low", confidence="high" if any(
                    _action_key(record, e.call) == key and shell_command(e.call)
                    == shell_command(c.call) for e in earlier) else "medium",
                reason=f"{key.partition(':')[2] or c.call.tool_name} succeeded after "
                       f"{len(earlier)} failure(s) since step {earlier[0].step.step_index}",
                matched_text=quote(call_target(c.call) or c.call.tool_name),
                evidence={"tool_name": c.call.tool_name, "tool_call_id": c.call.tool_call_id,
                          "action": key,
                          "failed_step_indexes": [e.step.step_index for e in earlier],
                          "failures_cleared": len(earlier)})


def _loops(record: TraceRecord, calls: list[Call]) -> Iterator[dict[str, Any]]:
    runs: dict[str, list[Call]] = {}
    for c in calls:
        command = shell_command(c.call)
        if command is not None and command.strip():
            runs.setdefault(_loop_key(command), []).append(c)
    edit_steps = sorted({s for steps in edits_by_path(record, calls).values() for s in steps})
    for command in sorted(runs):
        repeats = runs[command]
        if len(repeats) < LOOP_MIN:
            continue
        steps = [c.step.step_index for c in repeats]
        # A repeat with no file change since the previous run can only see the same world.
        unchanged = sum(1 for a, b in itertools.pairwise(steps)
                        if not any(a <= s < b for s in edit_steps))
        failed = sum(1 for c in repeats if _failure(c) is not None)
        yield _signal(
            "loop", repeats[LOOP_MIN - 1].step,
            severity="high" if len(repeats) >= 2 * LOOP_MIN else "medium"
            if len(repeats) > LOOP_MIN else "low",
            confidence="high" if unchanged >= LOOP_MIN - 1 else "medium" if unchanged else "low",
            reason=f"the same command ran {len(repeats)} times"
                   + (f", {unchanged} time(s) with no file change since the previous run"
                      if unchanged else ""),
            matched_text=quote(command),
            evidence={"repeat_count": len(repeats), "step_indexes": steps,
                      "unchanged_repeats": unchanged, "failed_runs": failed,
                      "tool_names": sorted({c.call.tool_name for c in repeats})})


# -- resteers ---------------------------------------------------------------------------------

#: Words that, alone or together (at most APPROVAL_MAX_WORDS), only approve or continue.
APPROVAL_WORDS = frozenset({
    "ok", "okay", "okey", "k", "kk", "yes", "yep", "yeah", "yup", "ya", "y", "sure", "go",
    "ahead", "on", "continue", "proceed", "lgtm", "sounds", "looks", "good", "great", "perfect",
    "nice", "cool", "fine", "thanks", "thank", "you", "thx", "ty", "please", "pls", "do", "it",
    "alright", "right", "correct", "approved", "approve", "ship", "done", "agreed", "exactly",
    "excellent", "awesome", "yes,", "now", "then", "and", "to", "me", "keep", "going",
})
APPROVAL_MAX_WORDS = 5

#: Correction leads, matched at the start of the message (after an optional "please", "oh",
#: "hey", "ugh"); each is a clause lead, never a word found in the middle of a sentence.
_LEADS: list[tuple[str, re.Pattern[str], str]] = [
    ("no", re.compile(r"no(?![-'’])\b(?!\s+(?:worries|problem|prob|rush|doubt|idea|"
                      r"need to (?:apologi[sz]e|worry)|pressure)\b)"), "high"),
    ("nope", re.compile(r"nope\b"), "high"),
    ("stop", re.compile(r"stop\b(?!\s+the\b)"), "high"),
    ("don't", re.compile(r"(?:don'?t|do not|dont)\b(?!\s+(?:we|you|i|they|it)\b)"), "high"),
    ("never", re.compile(r"never\b(?!\s*mind)"), "medium"),
    ("never mind", re.compile(r"(?:never\s*mind|nvm)\b"), "high"),
    ("actually", re.compile(r"actually\b"), "medium"),
    ("wait", re.compile(r"wait\b(?!\s+(?:for|until|till)\b)"), "medium"),
    ("hold on", re.compile(r"(?:hold|hang) on\b"), "high"),
    ("that's wrong", re.compile(
        r"(?:that|this|it)(?:'?s| is|s)(?: not| n'?t)?\s+(?:\w+\s+){0,2}?(?:wrong|incorrect|"
        r"broken|horrible|terrible|bad|confusing|nonsense|useless|not (?:it|right|what|how|"
        r"correct))\b|(?:that|this) (?:isn'?t|doesn'?t|won'?t|is not|does not)\b"), "high"),
    ("wrong", re.compile(r"wrong\b"), "high"),
    ("not what", re.compile(r"not (?:what|like (?:that|this)|quite|that|this one)\b"), "high"),
    ("instead", re.compile(r"(?:instead|rather than)\b"), "high"),
    ("undo", re.compile(r"(?:undo|revert|roll ?back)\b"), "high"),
    ("why did you", re.compile(r"why (?:did|are|would|do) you (?!think\b)"), "medium"),
    ("you forgot", re.compile(r"you (?:forgot|missed|broke|didn'?t|did not|shouldn'?t|"
                              r"should not|were supposed)\b"), "high"),
    ("i said", re.compile(r"i (?:said|meant|told you|asked (?:you )?(?:to|for))\b"), "high"),
    ("scratch that", re.compile(r"scratch that\b"), "high"),
]
_LEAD_PREFIX = re.compile(r"^(?:(?:please|pls|hey|ugh|uh|um|hmm+|ok(?:ay)?|so)[\s,.!]+)*",
                          re.IGNORECASE)
INTERRUPT = re.compile(r"^\[Request interrupted by user[^\]]*\]")
_CODEX_ABORT = "<turn_aborted>"
#: User-role steps that are not something the user typed to steer: harness echoes and markers.
NOT_TYPED = re.compile(r"^\s*(?:<[a-zA-Z][\w-]*[ >]|!|Caveat:|\[Request interrupted|"
                       r"This session is being continued|Warmup\s*$)")


def is_approval(text: str) -> bool:
    """True when ``text`` only approves or says to go on ("ok", "yes please", "lgtm!")."""
    words = re.findall(r"[a-z']+", text.lower().replace("’", "'"))
    rest = re.sub(r"[\w\s'’.,!?:;\-]", "", text)
    return bool(words) and len(words) <= APPROVAL_MAX_WORDS and not rest.strip(
        "👍🙏✅🚀😀🙂") and all(w in APPROVAL_WORDS for w in words)


def resteer_lead(text: str) -> tuple[str, str, str] | None:
    """The correction lead a user message opens with: (rule, matched text, confidence).

    Only the start of the message counts ("no, …", "stop …", "don't …", "actually, …",
    "wait, …", "that's wrong", "instead of X do Y", "revert …", "I said …"); the same words in
    the middle of a sentence are not a lead. An approval is never one.
    """
    if is_approval(text):
        return None
    body = text.strip()
    start = _LEAD_PREFIX.match(body)
    body = body[start.end():] if start else body
    lowered = body.lower().replace("’", "'")
    for rule, pattern, confidence in _LEADS:
        m = pattern.match(lowered)
        if m:
            return rule, body[: max(m.end(), 1)].strip(), confidence
    return None


def _resteers(record: TraceRecord) -> Iterator[dict[str, Any]]:
    agent_worked = False  # the agent did something since the user's last message
    interrupted = False  # the last thing the user did was stop the agent
    for step in record.steps:
        text = step.content or ""
        if step.role == "agent":
            agent_worked = True
            interrupted = False
            yield from _rejections(step)
            continue
        if step.role == "system":
            if _CODEX_ABORT in text:
                interrupted = True
            continue
        if step.role != "user":
            continue
        if INTERRUPT.match(text.strip()):
            interrupted = True
            continue
        if not text.strip() or NOT_TYPED.match(text):
            continue
        follows_work, after_interrupt = agent_worked, interrupted
        agent_worked = interrupted = False
        if not follows_work or is_approval(text):
            continue
        lead = resteer_lead(text)
        if lead is None and not after_interrupt:
            continue
        if lead is not None:
            rule, matched, confidence = lead
            trigger = "interrupt+correction" if after_interrupt else "correction"
        else:
            rule, matched, confidence, trigger = "interrupt", quote(text), "high", "interrupt"
        yield _signal(
            "resteer", step, severity="medium", confidence=confidence,
            reason=("the user stopped the agent and redirected it" if after_interrupt
                    else f"the user corrected the agent (message opens with {rule!r})"),
            matched_text=quote(matched),
            evidence={"trigger": trigger, "rule": rule, "text": quote(text)})


def _rejections(step: Step) -> Iterator[dict[str, Any]]:
    """A refused tool call that carries the user's instructions is a resteer too."""
    for obs in step.observations:
        content = obs.content or ""
        said = _REJECTION_SAID.search(content) if _REJECTION.match(content) else None
        if said is None or is_approval(said.group(1)):
            continue
        yield _signal(
            "resteer", step, severity="medium", confidence="high",
            reason="the user refused a tool call and said how to proceed",
            matched_text=quote(said.group(1)),
            evidence={"trigger": "tool_rejection", "rule": "tool_rejection",
                      "tool_call_id": obs.source_call_id, "text": quote(said.group(1))})
