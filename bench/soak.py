#!/usr/bin/env python3
"""Soak run: several agents on one remote under random churn, for a long time.

Three `prism-syncd` agents (by default) each sync a folder of their own with
one shared `file://` remote while this script edits all three folders at
random: creates, edits, deletes, renames of files and folders. Optionally it
kills an agent with SIGKILL now and then and starts it again (an injected
fault). At the end it stops the churn, waits for every folder to converge,
and checks:

- every version that stayed on disk long enough for an agent to see it
  (`--settle` seconds, default 3) is still somewhere: in a folder, a conflict
  copy, a device's trash or the remote's trash;
- no temporary file is left (`.prism-tmp-*`; partial downloads kept to be
  continued after a kill are counted apart);
- no sync failed (`syncs.status = 'failed'` in any journal); syncs cut by a
  kill are `interrupted` and counted apart;
- each agent's resident memory stays flat after warm-up: the median of the
  last quarter of its samples is within 10 % of the median of the second
  quarter (samples every 10 s, per agent process).

It prints a summary and exits non-zero when a check fails. This is a long
run by hand, not a test: `cargo test` never runs it.

    cargo build --release && python3 bench/soak.py --minutes 30
"""

import argparse
import hashlib
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL_MARKER = ".prism-sync-root"
REMOTE_META = ".prism-sync"
TEMP_PREFIX = ".prism-tmp-"
PARTIAL_PREFIX = ".prism-tmp-part-"
# The churn keeps the pair between a few hundred and this many files, and
# deletes far less than half of them in any 10 minutes: a user who deletes
# more than that is held by the mass-deletion guard until they confirm,
# which is tested elsewhere and would stop the soak's syncs.
MAX_FILES = 1000
START_FILES = 200


def default_bin_dir():
    target = os.environ.get("CARGO_TARGET_DIR")
    return (Path(target) if target else REPO / "target") / "release"


def digest(data):
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def synced_files(root):
    """{relative path: content digest} of the synced content below `root`,
    leaving out Prism Sync's own bookkeeping and temporary files."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != REMOTE_META]
        for name in filenames:
            if name == LOCAL_MARKER or name.startswith(TEMP_PREFIX):
                continue
            path = Path(dirpath) / name
            rel = os.path.normpath(os.path.join(rel_dir, name))
            try:
                out[rel] = digest(path.read_bytes())
            except OSError:
                pass
    return out


def all_contents(root):
    """Digests of every regular file below `root`, bookkeeping included."""
    found = set()
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                found.add(digest((Path(dirpath) / name).read_bytes()))
            except OSError:
                pass
    return found


def temp_files(root):
    temps, partials = [], []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if name.startswith(PARTIAL_PREFIX):
                partials.append(os.path.join(dirpath, name))
            elif name.startswith(TEMP_PREFIX):
                temps.append(os.path.join(dirpath, name))
    return temps, partials


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Agent:
    def __init__(self, name, work, remote, bins, poll_secs):
        self.name = name
        self.local = work / name
        self.state = work / f"state-{name}"
        self.socket = self.state / "s"
        self.config = work / f"{name}.toml"
        self.log = work / f"{name}.log"
        self.bins = bins
        self.local.mkdir()
        self.state.mkdir()
        self.config.write_text(
            "[agent]\n"
            f'device = "{name}"\n'
            f"remote_poll_secs = {poll_secs}\n"
            "\n[[pair]]\n"
            'name = "soak"\n'
            f'local = "{self.local}"\n'
            f'remote = "file://{remote}"\n'
            'conflict = "manual"\n'
        )
        self.process = None
        self.rss = []  # (process generation, KiB)
        self.generation = 0

    def start(self):
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [str(self.bins / "prism-syncd"), "--config", str(self.config),
             "--state-dir", str(self.state), "--socket", str(self.socket)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.generation += 1

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def sample(self):
        if self.process.poll() is not None:
            sys.exit(f"{self.name}: prism-syncd exited with {self.process.returncode}; see {self.log}")
        kib = rss_kib(self.process.pid)
        if kib:
            self.rss.append((self.generation, kib))

    def sync(self):
        subprocess.run([str(self.bins / "prism-syncctl"), "--socket", str(self.socket),
                        "sync", "start"], capture_output=True, timeout=60)

    def sync_counts(self):
        conn = sqlite3.connect(f"file:{self.state / 'journal.db'}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT status, count(*) FROM syncs GROUP BY status").fetchall()
            errors = conn.execute(
                "SELECT error FROM syncs WHERE status = 'failed' ORDER BY started_at LIMIT 5").fetchall()
        finally:
            conn.close()
        return dict(rows), [e for (e,) in errors]


class Churn:
    """Random edits of the agents' folders, remembering each version and how
    long it stayed on disk before this script replaced or removed it."""

    def __init__(self, agents, rng, settle):
        self.agents = agents
        self.rng = rng
        self.settle = settle
        self.required = set()  # digests an agent had time to see
        self.written = 0
        self.ops = {}
        self.seq = 0

    def content(self, agent):
        self.seq += 1
        body = self.rng.randbytes(self.rng.randint(64, 8192))
        return f"{agent.name}:{self.seq}\n".encode() + body

    def retire(self, path):
        """Counts the version at `path` as required when it was stable for
        `settle` seconds (an agent saw it), before the churn replaces it."""
        try:
            st = path.stat()
            if time.time() - st.st_mtime >= self.settle and path.is_file():
                self.required.add(digest(path.read_bytes()))
        except OSError:
            pass

    @staticmethod
    def walk(root):
        """Every (path, is_dir) below `root`. The agent changes the tree
        while it is walked: a folder gone meanwhile is skipped, never an
        error (`Path.rglob` raises on one)."""
        found = []
        for parent, dirs, names in os.walk(root, onerror=lambda _e: None):
            found.extend((Path(parent) / d, True) for d in dirs)
            found.extend((Path(parent) / n, False) for n in names)
        return found

    def files(self, agent):
        return [p for p, is_dir in self.walk(agent.local)
                if not is_dir and p.name != LOCAL_MARKER and not p.name.startswith(TEMP_PREFIX)]

    def folders(self, agent):
        return [p for p, is_dir in self.walk(agent.local) if is_dir]

    def step(self):
        agent = self.rng.choice(self.agents)
        files = self.files(agent)
        weights = {"create": 30, "modify": 35, "delete": 10, "rename": 10, "mkdir": 5, "move_folder": 5}
        if len(files) > MAX_FILES:
            weights["create"] = 0
            weights["delete"] = 30
        if not files:
            weights = {"create": 1}
        op = self.rng.choices(list(weights), list(weights.values()))[0]
        try:
            getattr(self, op)(agent, files)
            self.ops[op] = self.ops.get(op, 0) + 1
        except OSError:
            # The agent moved or replaced the path meanwhile: a race the
            # churn loses, not a finding.
            self.ops["raced"] = self.ops.get("raced", 0) + 1

    def write(self, path, data):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.written += 1

    def create(self, agent, _files):
        folders = [agent.local] + self.folders(agent)
        parent = self.rng.choice(folders)
        self.write(parent / f"f{self.seq}-{agent.name}.txt", self.content(agent))

    def modify(self, agent, files):
        path = self.rng.choice(files)
        self.retire(path)
        self.write(path, self.content(agent))

    def delete(self, agent, files):
        path = self.rng.choice(files)
        self.retire(path)
        path.unlink()

    def rename(self, agent, files):
        path = self.rng.choice(files)
        path.rename(path.with_name(f"r{self.seq}-{path.name}"[:120]))
        self.seq += 1

    def mkdir(self, agent, _files):
        folders = [agent.local] + self.folders(agent)
        parent = self.rng.choice(folders)
        if len(parent.relative_to(agent.local).parts) < 4:
            self.write(parent / f"d{self.seq}" / "first.txt", self.content(agent))

    def move_folder(self, agent, _files):
        folders = self.folders(agent)
        if folders:
            folder = self.rng.choice(folders)
            folder.rename(folder.with_name(f"m{self.seq}-{folder.name}"[:120]))
            self.seq += 1


def converge(agents, remote, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for agent in agents:
            agent.sync()
        trees = [synced_files(a.local) for a in agents] + [synced_files(remote)]
        if all(t == trees[-1] for t in trees):
            return trees[-1], time.time()
        time.sleep(2)
    return None, time.time()


def flat(samples):
    """(second-quarter median, last-quarter median, growth) of one agent
    process's RSS samples after warm-up."""
    n = len(samples)
    if n < 8:
        return None
    second = statistics.median(samples[n // 4: n // 2])
    last = statistics.median(samples[3 * n // 4:])
    return second, last, (last - second) / second


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--ops-per-sec", type=float, default=3.0, help="churn rate over all folders")
    parser.add_argument("--kill-every", type=float, default=0.0,
                        help="SIGKILL a random agent every N seconds and restart it (0: never)")
    parser.add_argument("--poll-secs", type=int, default=1)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bin-dir", type=Path, default=default_bin_dir())
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    for binary in ("prism-syncd", "prism-syncctl"):
        if not os.access(args.bin_dir / binary, os.X_OK):
            sys.exit(f"{args.bin_dir / binary} is missing: run `cargo build --release` first")

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="prism-soak-"))
    remote = work / "remote"
    remote.mkdir()
    agents = [Agent(f"dev{i}", work, remote, args.bin_dir, args.poll_secs) for i in range(args.agents)]
    churn = Churn(agents, rng, args.settle)
    failures = []
    try:
        for _ in range(START_FILES):
            churn.create(agents[0], [])
        for agent in agents:
            agent.start()
        started = time.time()
        end = started + args.minutes * 60
        next_sample = started
        next_kill = started + args.kill_every if args.kill_every else None
        kills = 0
        while time.time() < end:
            churn.step()
            now = time.time()
            if now >= next_sample:
                for agent in agents:
                    agent.sample()
                next_sample = now + 10
            if next_kill and now >= next_kill:
                victim = rng.choice(agents)
                victim.kill()
                victim.start()
                kills += 1
                next_kill = now + args.kill_every
            time.sleep(rng.expovariate(args.ops_per_sec))
        churned = time.time() - started

        final, converged_at = converge(agents, remote, timeout=300)
        if final is None:
            failures.append("the folders did not converge within 300 s after the churn stopped")
        else:
            # What is final is required too.
            churn.required.update(final.values())

        found = set()
        for root in [remote] + [a.local for a in agents] + [a.state for a in agents]:
            found |= all_contents(root)
        lost = churn.required - found
        if lost:
            failures.append(f"{len(lost)} of {len(churn.required)} versions are nowhere "
                            "(not in a folder, a conflict copy or a trash)")

        temps, partials = [], []
        for root in [remote] + [a.local for a in agents]:
            t, p = temp_files(root)
            temps += t
            partials += p
        if temps:
            failures.append(f"{len(temps)} temporary files were left, e.g. {temps[0]}")
        if partials and not kills:
            failures.append(f"{len(partials)} partial downloads were left without a kill, e.g. {partials[0]}")

        print(f"churn: {churned / 60:.1f} min, {churn.written} versions written, "
              f"operations {dict(sorted(churn.ops.items()))}, {kills} agents killed")
        if final is not None:
            print(f"converged {converged_at - (started + churned):.1f} s after the churn stopped: "
                  f"{len(final)} files in each folder")
        print(f"versions: {len(churn.required)} required, {len(lost)} lost")
        print(f"temporary files left: {len(temps)}; partial downloads kept: {len(partials)}")
        for agent in agents:
            agent.stop()
        for agent in agents:
            counts, errors = agent.sync_counts()
            # (A guard trip is a failed sync too: the churn is meant to stay
            # below the guard.)
            print(f"{agent.name}: syncs {dict(sorted(counts.items()))}")
            if counts.get("failed"):
                failures.append(f"{agent.name}: {counts['failed']} failed syncs, e.g. {errors[:2]}")
            by_process = {}
            for generation, kib in agent.rss:
                by_process.setdefault(generation, []).append(kib)
            for generation, samples in sorted(by_process.items()):
                verdict = flat(samples)
                if verdict is None:
                    continue
                second, last, growth = verdict
                print(f"  RSS (process {generation}, {len(samples)} samples): peak {max(samples) / 1024:.1f} MiB, "
                      f"median {second / 1024:.1f} MiB after warm-up, {last / 1024:.1f} MiB at the end "
                      f"({growth * 100:+.1f} %)")
                if growth > 0.10:
                    failures.append(f"{agent.name}: RSS grew {growth * 100:.1f} % after warm-up")
    finally:
        for agent in agents:
            agent.stop()
        if args.keep or failures:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    for failure in failures:
        print(f"FAILED: {failure}")
    print("soak: " + ("FAILED" if failures else "passed"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
