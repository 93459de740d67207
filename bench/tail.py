#!/usr/bin/env python3
"""The latency tail with two devices on one remote (see bench/README.md).

Two watching agents, devices `a` and `b`, share one remote (a `file://`
folder, SFTP through the loopback sshd, WebDAV through the loopback Apache)
with `remote_poll_secs = 1`, so that `b` lists the remote every second while
`a` writes. Device `a` then writes single files one at a time (every other
one new, the rest replacing an earlier one), each timed from the write
until the remote's folder on disk holds the new content; between writes it
pauses a random 100-400 ms, so writes meet `b`'s polls and downloads at
every phase. At the end both devices must hold the remote's tree, and
every sync either agent recorded as failed is counted (waiting for the
other device's lease is not a failure).

    python3 bench/tail.py [--writes 100] [--trials 5] [--files 2000]
                          [--remotes file,sftp,webdav] [--bin-dir DIR] [--json-out FILE]

Each trial starts afresh (new folders, state, servers; the next seed).
Prints, per remote and trial, the median, p95, p99 (nearest rank: with 100
writes the second largest) and the largest, and the failed syncs; then per
remote the median of the trials' figures (the target is read from the
median p99) and the worst trial's p99.
"""

import argparse
import json
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

import bench as core
from bench import Problem
import remotes

TARGET_P99_MS = 150.0


class Device:
    """One watching agent with its own local folder, state and socket."""

    def __init__(self, name, work, bins, env, remote, extra):
        self.name = name
        self.base = work / name
        self.local = self.base / "local"
        self.state = self.base / "state"
        for path in (self.local, self.state):
            path.mkdir(parents=True)
        self.socket_dir = core.short_socket_dir()
        self.socket = self.socket_dir / "s"
        self.bins = bins
        self.env = env
        self.config = self.base / "config.toml"
        self.config.write_text(
            f'[agent]\ndevice = "{name}"\nremote_poll_secs = 1\n'
            f'[[pair]]\nname = "tail"\nlocal = "{self.local}"\nremote = "{remote}"\n{extra}')
        self.log = open(self.base / "daemon.err", "wb")
        self.proc = None

    def start(self):
        argv = [self.bins / "prism-syncd", "--config", self.config, "--state-dir", self.state,
                "--socket", self.socket]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)

    def settle(self, timeout=600):
        core.sync_and_wait(self.bins / "prism-syncctl", self.socket, self.env, self.proc, timeout)

    def failed_syncs(self):
        """The errors of the syncs this device's journal records as failed."""
        journal = self.state / "journal.db"
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT error FROM syncs WHERE status = 'failed'").fetchall()
            return [error or "" for (error,) in rows]
        finally:
            conn.close()

    def stop(self, problems):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append(f"device {self.name}: did not stop within 60 s of SIGTERM; killed")
                self.proc.kill()
                self.proc.wait()
            if self.proc.returncode != 0:
                problems.append(f"device {self.name}: exited with {self.proc.returncode}")
        self.log.close()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def remote_of(kind, work):
    """The server (or None), the remote URL, the pair's extra keys and the
    remote's folder on disk."""
    if kind == "file":
        folder = work / "remote"
        folder.mkdir(parents=True)
        return None, f"file://{folder}", "", folder
    if kind == "sftp":
        server = remotes.Sshd(work / "sshd")
        folder = server.served / "tail"
        folder.mkdir()
        extra = (f'known_hosts = "{server.known_hosts}"\n'
                 f'identity_file = "{server.root / "client_key"}"\n')
        return server, f"sftp://{server.user}@127.0.0.1:{server.port}{folder}", extra, folder
    server = remotes.Apache(work / "apache")
    folder = server.served / "tail"
    folder.mkdir()
    server.hand_over(folder)
    return server, f"webdav://127.0.0.1:{server.port}/open/tail/", "", folder


def wait_until(check, timeout):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if check():
            return True
        time.sleep(0.001)
    return False


def holds(folder, rel, data):
    try:
        return (folder / rel).read_bytes() == data
    except OSError:
        return False


def run_remote(kind, args, seed, bins, work, env):
    work.mkdir(parents=True)
    if kind == "webdav":
        # Apache's workers must reach the share inside the scratch folder.
        for path in (work.parent, work):
            os.chmod(path, 0o755)
    problems = []
    result = {"remote": kind, "seed": seed, "samples_ms": [], "timeouts": 0}
    server, remote, extra, folder = remote_of(kind, work)
    devices = []
    try:
        tree = core.make_workload(args.files, max(1, args.files // 100), seed)
        a = Device("a", work, bins, env, remote, extra)
        b = Device("b", work, bins, env, remote, extra)
        devices = [a, b]
        core.write_files(a.local, tree)
        a.start()
        a.settle()
        b.start()
        b.settle()
        if not wait_until(lambda: all(holds(b.local, rel, tree[rel]) for rel in list(tree)[:20]), 60):
            raise Problem("device b did not receive the tree")
        rng = random.Random(seed + 7)
        existing = sorted(tree)
        first_dir = existing[0].split("/")[0]
        print(f"{kind}: {len(tree)} files on both devices; {args.writes} writes on device a",
              flush=True)
        for k in range(args.writes):
            rel = rng.choice(existing) if k % 2 else f"{first_dir}/tail-{k:03d}.txt"
            data = rng.randbytes(rng.randint(200, 4000))
            time.sleep(rng.uniform(0.1, 0.4))
            t0 = time.perf_counter()
            (a.local / rel).write_bytes(data)
            tree[rel] = data
            if wait_until(lambda: holds(folder, rel, data), 10.0):
                result["samples_ms"].append((time.perf_counter() - t0) * 1000)
            else:
                result["timeouts"] += 1
                problems.append(f"write {k + 1}: {rel} did not reach the remote within 10 s")
        for device in devices:
            device.settle(timeout=120)
        if not wait_until(lambda: all(holds(b.local, rel, tree[rel]) for rel in tree), 30):
            problems.append("device b does not hold every file device a wrote")
        for device in devices:
            errors = device.failed_syncs()
            result.setdefault("failed_syncs", {})[device.name] = len(errors)
            problems.extend(f"device {device.name}: a sync failed: {e}" for e in errors)
    except Problem as e:
        problems.append(str(e))
    finally:
        for device in devices:
            device.stop(problems)
        if server is not None:
            server.stop()
    samples = result["samples_ms"]
    if samples:
        result.update(median_ms=statistics.median(samples), p95_ms=core.percentile(samples, 95),
                      p99_ms=core.percentile(samples, 99), max_ms=max(samples))
    result["problems"] = problems
    return result


def print_results(results):
    print(f"\n{'remote':8} {'trial':>5} {'writes':>6} {'median':>8} {'p95':>8} {'p99':>8} {'max':>8}  "
          f"failed syncs (a, b)")
    for r in results:
        if not r["samples_ms"]:
            print(f"{r['remote']:8} {r['trial']:>5} no samples")
            continue
        failed = r.get("failed_syncs", {})
        print(f"{r['remote']:8} {r['trial']:>5} {len(r['samples_ms']):>6} {r['median_ms']:>8.1f} "
              f"{r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f}  "
              f"{failed.get('a', '?')}, {failed.get('b', '?')}")
    summaries = summarize(results)
    print(f"\n{'remote':8} {'trials':>6} {'median':>8} {'p95':>8} {'p99':>8} {'max':>8} "
          f"{'worst p99':>10}  target")
    for s in summaries:
        verdict = "met" if s["p99_ms"] <= TARGET_P99_MS else "MISSED"
        print(f"{s['remote']:8} {s['trials']:>6} {s['median_ms']:>8.1f} {s['p95_ms']:>8.1f} "
              f"{s['p99_ms']:>8.1f} {s['max_ms']:>8.1f} {s['worst_p99_ms']:>10.1f}  {verdict}")
    print(f"(ms from the write on device a to the remote, medians of the trials; "
          f"target p99 <= {TARGET_P99_MS:.0f} ms)")
    for r in results:
        for problem in r["problems"]:
            print(f"PROBLEM {r['remote']} trial {r['trial']}: {problem}")
    return summaries


def summarize(results):
    """Per remote, the median of its trials' figures and the worst p99."""
    summaries = []
    for kind in dict.fromkeys(r["remote"] for r in results):
        trials = [r for r in results if r["remote"] == kind and r["samples_ms"]]
        if not trials:
            continue
        summary = {"remote": kind, "trials": len(trials),
                   "worst_p99_ms": max(r["p99_ms"] for r in trials)}
        for key in ("median_ms", "p95_ms", "p99_ms", "max_ms"):
            summary[key] = statistics.median(r[key] for r in trials)
        summaries.append(summary)
    return summaries


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", type=int, default=100)
    p.add_argument("--trials", type=int, default=5, help="fresh runs per remote (default 5)")
    p.add_argument("--files", type=int, default=2000, help="files on the remote before the writes")
    p.add_argument("--remotes", default="file,sftp,webdav")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bin-dir", type=Path)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bins = (args.bin_dir or core.default_bin_dir()).resolve()
    kinds = args.remotes.split(",")
    work = Path(tempfile.mkdtemp(prefix="prism-tail-"))
    home = work / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), PRISM_SYNC_CONFIG=str(home / "no-config.toml"),
               XDG_RUNTIME_DIR=str(home))
    for name in ("SSH_AUTH_SOCK", "PRISM_SYNC_SFTP_PASSWORD", "PRISM_SYNC_WEBDAV_PASSWORD",
                 "PRISM_SYNC_STATE_DIR", "PRISM_SYNC_SOCKET"):
        env.pop(name, None)
    print(f"scratch folder {work}; prism binaries from {bins}")
    results = []
    try:
        for kind in kinds:
            for trial in range(1, args.trials + 1):
                result = run_remote(kind, args, args.seed + trial - 1, bins,
                                    work / f"{kind}-{trial}", env)
                result["trial"] = trial
                result["load"] = [round(x, 2) for x in os.getloadavg()]
                results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summaries = print_results(results)
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
              "load": [round(x, 2) for x in os.getloadavg()], "command": " ".join(sys.argv),
              "summaries": summaries, "results": results}
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
