"""Pull-request bodies from the trail: per commit of a branch, the traces that wrote it (or why
none did), what they were asked to do, and how strong the evidence is.

Invariants:
- :func:`pr_render` is read-only and deterministic: the same store and repository give the same
  Markdown (no clock, no paths of this machine).
- :func:`pr_create` and :func:`pr_update` act only through the GitHub CLI (``gh``), run in the
  repository's folder; the body goes through a temporary file outside the repository.
  :func:`pr_update` edits only when the body differs, so running it twice edits once.
- Repositories are only read.
"""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from opentraces import __version__
from opentraces.errors import OpentracesError, Refused, UsageError
from opentraces.trail import anchor as an
from opentraces.trail.gitrepo import CommitNotFound, GitRepo, change_paths
from opentraces.trail.sync import _trace_refs, blame_commit
from opentraces.trail.views import _record, _repo_root, _rows

MARKER = "<!-- opentraces trail blame pr -->"
INTENT_CHARS = 280
GH_TIMEOUT_SECONDS = 120

REASONS = {
    "merge": "merge commit: its lines come from the commits it merges",
    "no_patch_matched": "captured sessions edited these files, but no edit of theirs "
                        "matches this commit's diff",
    "uncaptured": "no captured session edited these files",
}


class GhUnavailable(UsageError):
    """The GitHub CLI (``gh``) is not installed or not on PATH."""

    code = "gh_not_found"


class GhFailed(OpentracesError):
    """``gh`` ran and failed; its message is kept."""

    code = "gh_failed"


# ---------------------------------------------------------------------------------------------
# Render


def pr_render(target: Any, repo: Path, base: str = "main", head: str = "HEAD") -> dict[str, Any]:
    """The PR body for the commits on ``head`` that ``base`` lacks (read-only).

    Returns:
        ``{base, head, markdown, intent[], changes{files[], added, removed}, commits[],
        provenance{}}``; each commit has ``sha, subject, timestamp, files[], traces[],
        coverage, reason`` (``reason`` is None when traces are anchored in it, else
        ``merge``, ``no_patch_matched`` or ``uncaptured``).

    Raises:
        NotARepository, CommitNotFound: ``repo``, ``base`` or ``head`` is not there.
    """
    from opentraces.workspace import open_workspace

    root = _repo_root(Path(repo))
    with GitRepo(root) as git:
        head_sha = git.resolve(head)
        base_sha = resolve_ref(git, base)
        shas = branch_commits(git, head_sha, base_sha)
        infos = [git.commit(s) for s in shas]
        stats = {s: file_stats(git, s) for s in shas}
    commits = []
    with open_workspace(target, readonly=True) as ws:
        edited = _edited_paths(ws, root)
        for info in infos:
            commits.append(_commit_part(ws, root, info, stats[info.sha], edited))
        intents = _intents(ws, commits)
    return _assemble(base, base_sha, head_sha, commits, intents)


def resolve_ref(git: GitRepo, name: str) -> str:
    """A commit id from a branch (local, then ``origin/``), a tag, or a commit id/prefix."""
    refs = [name] if name.startswith("refs/") else [
        f"refs/heads/{name}", f"refs/remotes/origin/{name}", f"refs/tags/{name}"]
    for ref in refs:
        try:
            return git.repo.get_peeled(ref.encode()).decode("ascii")
        except KeyError:
            continue
    try:
        return git.resolve(name)
    except CommitNotFound as e:
        raise CommitNotFound(f"{name!r} is neither a branch, a tag nor a commit in {git.root}",
                             hint="Pass the branch the PR goes into with --base.") from e


def branch_commits(git: GitRepo, head: str, base: str) -> list[str]:
    """Commits reachable from ``head`` and not from ``base``, parents before children."""
    walker = git.repo.get_walker(include=[head.encode()], exclude=[base.encode()])
    shas = {entry.commit.id.decode("ascii") for entry in walker}
    return an.topo_oldest_first(git, shas)


def file_stats(git: GitRepo, sha: str) -> list[dict[str, Any]]:
    """Per file the commit changed (against its first parent): change kind and line counts."""
    info = git.commit(sha)
    parent = info.parents[0] if info.parents else None
    out = []
    for change in git.changes(sha):
        old, new = change_paths(change)
        before = git.file_lines(parent, old) if parent and old else None
        after = git.file_lines(sha, new) if new else None
        added = removed = 0
        matcher = difflib.SequenceMatcher(None, before or [], after or [], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                added += j2 - j1
                removed += i2 - i1
        kind = "add" if old is None else "delete" if new is None else "modify"
        out.append({"path": new or old, "change": kind, "added": added, "removed": removed})
    return sorted(out, key=lambda f: f["path"])


def _edited_paths(ws: Any, root: Path) -> set[str]:
    """Repository paths that captured patches edited (anchored or not)."""
    return {r["path"] for r in _rows(ws, "p.repo_root = ?", (str(root),))}


def _commit_part(ws: Any, root: Path, info: Any, files: list[dict[str, Any]],
                 edited: set[str]) -> dict[str, Any]:
    rows = _rows(ws, "a.commit_sha = ?", (info.sha,))
    blame = blame_commit(ws, info.sha, root)
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = per.setdefault(r["trace_id"], {"trace_id": r["trace_id"], "patches": [],
                                           "lines": 0, "tiers": {}})
        t["patches"].append(r["patch_id"])
        t["lines"] += r["lines"] or 0
        tier = f"{r['evidence_tier']}/{r['evidence_firmness']}"
        t["tiers"][tier] = t["tiers"].get(tier, 0) + 1
    refs = {ref.trace_id: ref for ref in _trace_refs(ws, list(per))}
    for trace_id, t in per.items():
        t["title"], t["agent"] = refs[trace_id].title, refs[trace_id].agent
    reason = None
    if not per:
        if info.is_merge:
            reason = "merge"
        elif any(f["path"] in edited for f in files):
            reason = "no_patch_matched"
        else:
            reason = "uncaptured"
    return {"sha": info.sha, "subject": info.subject, "timestamp": info.at, "files": files,
            "traces": list(per.values()),
            "coverage": {"attributed": blame.coverage.attributed,
                         "total": blame.coverage.total, "ratio": blame.coverage.ratio},
            "reason": reason, "reason_text": REASONS.get(reason or "")}


def _intents(ws: Any, commits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per trace (first seen first): what the user asked for, from the trace itself."""
    out: dict[str, dict[str, Any]] = {}
    for c in commits:
        for t in c["traces"]:
            if t["trace_id"] in out:
                out[t["trace_id"]]["commits"].append(c["sha"])
                continue
            text = _intent_text(_record(ws, t["trace_id"]), set(t["patches"]))
            out[t["trace_id"]] = {"trace_id": t["trace_id"], "title": t["title"],
                                  "agent": t["agent"], "intent": text, "commits": [c["sha"]]}
    for c in commits:
        for t in c["traces"]:
            t["intent"] = out[t["trace_id"]]["intent"]
    return list(out.values())


def _intent_text(record: Any, patch_ids: set[str]) -> str | None:
    """The most substantive instruction before the burst that made these patches, else the
    trace's first instruction."""
    if record is None:
        return None
    from opentraces.trace_map import bursts, instructions

    for burst in bursts(record, commit_lookup=False):
        ids = {pid for p in burst["patches"] for pid in p["patch_ids"]}
        intent = burst["intent"]
        said = intent["most_substantive_spec"] or intent["trigger"]
        if ids & patch_ids and said:
            return _short(said["text"])
    said = instructions(record)
    return _short(said[0][1]) if said else None


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= INTENT_CHARS else line[:INTENT_CHARS - 1] + "…"


def _assemble(base: str, base_sha: str, head_sha: str, commits: list[dict[str, Any]],
              intents: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, dict[str, int]] = {}
    for c in commits:
        for f in c["files"]:
            t = totals.setdefault(f["path"], {"added": 0, "removed": 0})
            t["added"] += f["added"]
            t["removed"] += f["removed"]
    files = [{"path": p, **v} for p, v in sorted(totals.items())]
    tiers: dict[str, int] = {}
    for c in commits:
        for t in c["traces"]:
            for tier, n in t["tiers"].items():
                tiers[tier] = tiers.get(tier, 0) + n
    attributed = sum(c["coverage"]["attributed"] for c in commits)
    total = sum(c["coverage"]["total"] for c in commits)
    provenance = {"generator": f"opentraces {__version__}", "base": base_sha, "head": head_sha,
                  "commits": len(commits),
                  "commits_with_lineage": sum(1 for c in commits if c["traces"]),
                  "evidence_tiers": dict(sorted(tiers.items())),
                  "coverage": {"attributed": attributed, "total": total,
                               "ratio": round(attributed / total, 4) if total else 0.0}}
    changes = {"files": files, "added": sum(f["added"] for f in files),
               "removed": sum(f["removed"] for f in files)}
    body = {"base": base, "head": head_sha, "intent": intents, "changes": changes,
            "commits": commits, "provenance": provenance}
    body["markdown"] = render_markdown(body)
    return body


def render_markdown(body: dict[str, Any]) -> str:
    """The PR body text of a :func:`pr_render` result."""
    out = ["## Intent", ""]
    if body["intent"]:
        for i in body["intent"]:
            who = i["agent"] or "agent"
            out.append(f"- {i['intent'] or i['title'] or '(no instruction captured)'} "
                       f"— {who} session `{i['trace_id'][:12]}`")
    else:
        out.append("No captured agent session is anchored in these commits.")
    ch = body["changes"]
    out += ["", "## What changed", "",
            f"{_count(len(body['commits']), 'commit')}, {_count(len(ch['files']), 'file')}, "
            f"+{ch['added']} −{ch['removed']} lines.", ""]
    if ch["files"]:
        out += ["| file | added | removed |", "|---|---:|---:|"]
        out += [f"| `{f['path']}` | {f['added']} | {f['removed']} |" for f in ch["files"]]
    out += ["", "## Lineage", ""]
    for c in body["commits"]:
        out.append(f"### `{c['sha'][:12]}` {c['subject']}")
        out.append("")
        if c["reason"] is not None:
            out.append(f"No lineage: {c['reason_text']} (`{c['reason']}`).")
        for t in c["traces"]:
            tiers = ", ".join(f"{k} ×{n}" for k, n in sorted(t["tiers"].items()))
            out.append(f"- {t['agent'] or 'agent'} session `{t['trace_id'][:12]}`"
                       + (f" ({t['title']})" if t["title"] else "")
                       + f": {_count(len(t['patches']), 'patch')}, "
                       f"{_count(t['lines'], 'line')}; {tiers}")
        cov = c["coverage"]
        if c["traces"]:
            out.append(f"- coverage: {cov['attributed']}/{cov['total']} added lines "
                       f"({cov['ratio']:.0%})")
        out.append("")
    p = body["provenance"]
    tiers = ", ".join(f"{k} ×{n}" for k, n in p["evidence_tiers"].items()) or "none"
    out += ["## Provenance", "",
            f"Generated by {p['generator']} from local evidence for "
            f"`{p['base'][:12]}..{p['head'][:12]}`: {p['commits_with_lineage']} of "
            f"{_count(p['commits'], 'commit')} with lineage; coverage "
            f"{p['coverage']['attributed']}/{p['coverage']['total']} added lines; evidence "
            f"{tiers}.", "", MARKER]
    return "\n".join(out) + "\n"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("h") else f"{n} {noun}s"


# ---------------------------------------------------------------------------------------------
# gh


def _gh_path(gh: str | None) -> str:
    found = shutil.which(gh or "gh")
    if found is None:
        raise GhUnavailable("the GitHub CLI `gh` is not installed or not on PATH",
                            hint="Install it from https://cli.github.com, or paste the body "
                                 "printed by `opentraces trail blame pr render`.",
                            next_command="opentraces trail blame pr render")
    return found


def _run(gh: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([gh, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=GH_TIMEOUT_SECONDS, check=False)


def _check(proc: subprocess.CompletedProcess[str], what: str) -> str:
    if proc.returncode != 0:
        raise GhFailed(f"`gh {what}` failed (exit {proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _existing(gh: str, root: Path) -> dict[str, Any] | None:
    """The open PR of the current branch (number, body, url), or None when there is none."""
    proc = _run(gh, ["pr", "view", "--json", "number,body,url"], root)
    if proc.returncode != 0:
        return None
    try:
        found = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise GhFailed(f"`gh pr view` printed something that is not JSON: {e}") from e
    return found if isinstance(found, dict) and "number" in found else None


def _body_file(markdown: str) -> Path:
    with tempfile.NamedTemporaryFile("w", suffix=".md", prefix="opentraces-pr-",
                                     delete=False, encoding="utf-8") as f:
        f.write(markdown)
    return Path(f.name)


def pr_create(target: Any, repo: Path, base: str = "main", *, title: str | None = None,
              gh: str | None = None) -> dict[str, Any]:
    """Open a PR for the current branch with the rendered body (``gh pr create``).

    Returns:
        ``{action: "created", url, title, render}``.

    Raises:
        GhUnavailable: no ``gh``.
        Refused: the branch already has a PR (update it instead) or has no commits over base.
        GhFailed: ``gh`` failed.
    """
    root = _repo_root(Path(repo))
    exe = _gh_path(gh)
    render = pr_render(target, root, base)
    if not render["commits"]:
        raise Refused(f"the branch has no commits that {base} lacks; nothing to open a PR for")
    found = _existing(exe, root)
    if found is not None:
        raise Refused(f"this branch already has PR #{found['number']}",
                      next_command=f"opentraces trail blame pr update --base {base}")
    title = title or render["commits"][-1]["subject"] or "Changes"
    path = _body_file(render["markdown"])
    try:
        out = _check(_run(exe, ["pr", "create", "--base", base, "--title", title,
                                "--body-file", str(path)], root), "pr create")
    finally:
        path.unlink(missing_ok=True)
    return {"action": "created", "url": out.strip().splitlines()[-1] if out.strip() else None,
            "title": title, "render": render}


def pr_update(target: Any, repo: Path, base: str = "main", *,
              gh: str | None = None) -> dict[str, Any]:
    """Replace the body of the current branch's PR with the rendered one, only if it differs.

    Returns:
        ``{action: "updated"|"unchanged", number, url, render}``.

    Raises:
        GhUnavailable: no ``gh``.
        Refused: the branch has no PR yet (create it instead).
        GhFailed: ``gh`` failed.
    """
    root = _repo_root(Path(repo))
    exe = _gh_path(gh)
    render = pr_render(target, root, base)
    found = _existing(exe, root)
    if found is None:
        raise Refused("this branch has no open PR to update",
                      next_command=f"opentraces trail blame pr create --base {base}")
    if (found.get("body") or "").strip() == render["markdown"].strip():
        return {"action": "unchanged", "number": found["number"], "url": found.get("url"),
                "render": render}
    path = _body_file(render["markdown"])
    try:
        _check(_run(exe, ["pr", "edit", str(found["number"]), "--body-file", str(path)], root),
               "pr edit")
    finally:
        path.unlink(missing_ok=True)
    return {"action": "updated", "number": found["number"], "url": found.get("url"),
            "render": render}
