"""Trace Trails at scale: anchoring, `track --all` and `blame commit` on a generated repository.

The repository (≥ 5,000 commits, written as one pack with dulwich's object store) has 200
files; agent sessions author ≥ 1,000 of the commits (one Claude Code style Edit each, the
commit a minute later), humans author the rest: new functions, and rewrites of single lines,
some of them in agent-written code (so survival states vary). Figures: the first
``trail_sync`` (derive patches + anchor), a second one (nothing new), ``trail_track(all=True)``
and ``blame_commit`` on agent commits.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import common  # sets HOME before opentraces is imported

sys.path.insert(0, str(common.REPO))

from dulwich.index import commit_tree
from dulwich.object_store import MemoryObjectStore
from dulwich.objects import Blob, Commit
from dulwich.repo import Repo

from opentraces import api
from opentraces.trail import blame_commit, trail_sync, trail_track
from tests.gitbuild import BASE_TIME, Session, code

FILES = 200
PATCHES_PER_SESSION = 10


def build(root: Path, commits: int, patches: int, seed: int = 7) -> tuple[list[Session],
                                                                       list[str], float]:
    """Write the repository under ``root``; return the sessions and the agent commits."""
    began = time.perf_counter()
    rng = random.Random(seed)
    repo = Repo.init(str(root), mkdir=True)
    repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/main")
    mem = MemoryObjectStore()
    texts = {f"pkg{k % 10}/mod_{k}.py": f"# module {k}\n" + code(f"base_{k}")
             for k in range(FILES)}
    blobs: dict[str, bytes] = {}

    def put_file(path: str) -> None:
        blob = Blob.from_string(texts[path].encode())
        mem.add_object(blob)
        blobs[path] = blob.id

    for path in texts:
        put_file(path)
    agent_at = set(rng.sample(range(1, commits), patches))
    sessions: list[Session] = []
    agent_commits: list[str] = []
    parent: bytes | None = None
    written: list[tuple[str, str]] = []  # (path, function name) of agent code
    for i in range(commits):
        t = BASE_TIME + 60 * i
        path = rng.choice(sorted(texts))
        message = f"commit {i}"
        if i in agent_at:
            if not sessions or sessions[-1].step > PATCHES_PER_SESSION * 2:
                sessions.append(Session("claude-code", f"bench-{len(sessions)}", root, t - 50))
            s = sessions[-1]
            name = f"agent_{i}"
            new = texts[path] + "\n" + code(name, body_lines=rng.randint(3, 9))
            s.files[path] = texts[path]
            s.write(path, new, t=t - 30)
            texts[path] = new
            written.append((path, name))
            message = f"agent change {i}"
        elif written and rng.random() < 0.3:
            victim_path, victim = rng.choice(written)  # a human reworks one agent line
            texts[victim_path] = texts[victim_path].replace(
                f"step_{victim}_1 = value", f"step_{victim}_1 = 3 * value", 1)
            path = victim_path
        elif i > 0:
            texts[path] = texts[path] + "\n" + code(f"human_{i}", body_lines=3)
        put_file(path)
        c = Commit()
        c.tree = commit_tree(mem, [(p.encode(), b, 0o100644) for p, b in sorted(blobs.items())])
        c.parents = [parent] if parent else []
        c.author = c.committer = b"Bench <bench@example.com>"
        c.author_time = c.commit_time = t
        c.author_timezone = c.commit_timezone = 0
        c.message = message.encode()
        mem.add_object(c)
        parent = c.id
        if i in agent_at:
            agent_commits.append(c.id.decode())
    repo.object_store.add_objects([(mem[sha], None) for sha in mem])
    assert parent is not None
    repo.refs[b"refs/heads/main"] = parent
    repo.close()
    return sessions, agent_commits, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=5_000)
    parser.add_argument("--patches", type=int, default=1_000)
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()

    work = common.fresh_dir("trail")
    settings = common.sqlite_settings(work / "home")
    print(f"building {args.commits:,} commits with {args.patches:,} agent patches ...",
          flush=True)
    sessions, agent_commits, build_s = build(work / "repo", args.commits, args.patches)
    with api.open_workspace(settings) as ws:
        for s in sessions:
            ws.log.write(s.records())

    began = time.perf_counter()
    first = trail_sync(settings)
    sync_s = time.perf_counter() - began
    began = time.perf_counter()
    again = trail_sync(settings)
    resync_s = time.perf_counter() - began
    began = time.perf_counter()
    tracked = trail_track(settings, all=True)
    track_s = time.perf_counter() - began
    began = time.perf_counter()
    retrack = trail_track(settings, all=True)
    retrack_s = time.perf_counter() - began
    sample = agent_commits[:: max(1, len(agent_commits) // 20)]
    blame_times = []
    covered = 0
    for sha in sample:
        began = time.perf_counter()
        blame = blame_commit(settings, sha, work / "repo")
        blame_times.append(time.perf_counter() - began)
        covered += blame.coverage.attributed == blame.coverage.total
    states: dict[str, int] = {}
    for p in tracked.patches:
        if p.current_survival is not None:
            key = p.current_survival.survival_state
            states[key] = states.get(key, 0) + 1
    anchored = sum(1 for p in tracked.patches if p.anchor is not None)
    correct = sum(1 for p in tracked.patches if p.anchor is not None
                  and p.anchor.commit in set(agent_commits))
    blame_ms = common.summary_ms(blame_times)
    rows = [
        ("repository", f"{args.commits:,} commits, {FILES} files, built in {build_s:.1f} s"),
        ("patches (agent Edit calls)", f"{first.patches_derived:,} in {len(sessions)} sessions"),
        ("**first `trail_sync`** (derive patches + anchor)", f"**{sync_s:.2f} s** "
         f"({first.anchors_recorded:,} anchors)"),
        ("second `trail_sync` (nothing new)", f"{resync_s:.2f} s "
         f"({again.anchors_recorded} anchors, {again.patches_derived} patches appended)"),
        ("**`trail_track(all=True)`**", f"**{track_s:.2f} s** "
         f"({tracked.observations_appended:,} observations)"),
        ("second `trail_track(all=True)`", f"{retrack_s:.2f} s "
         f"({retrack.observations_appended} observations appended)"),
        ("**`blame_commit`** (agent commits)",
         f"**median {blame_ms['median']:.1f} ms**, p95 {blame_ms['p95']:.1f} ms "
         f"({len(sample)} commits, {covered} fully attributed)"),
        ("anchors on the right commit", f"{correct:,} of {anchored:,} "
         f"(of {len(agent_commits):,} agent commits)"),
        ("survival states", ", ".join(f"{k} {v:,}" for k, v in sorted(states.items()))),
    ]
    body = common.table(["", ""], rows)
    common.write_results("trail", f"Trace Trails on {args.commits:,} commits / "
                                  f"{args.patches:,} patches", body, record=not args.no_record)


if __name__ == "__main__":
    main()
