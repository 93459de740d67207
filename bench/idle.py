#!/usr/bin/env python3
"""Idle cost of a watching prism-syncd: CPU time and memory of an agent that
has nothing to do.

The agent gets `--pairs` pairs (default 3) of `--files` files each (default
10,000 in 100 folders), each synced with a `file://` remote (`--remote
file`, the default) or a bare git repository over `git+file://` (`--remote
git`), and the default timers (`remote_poll_secs` 30 unless `--poll-secs`
says otherwise, `safety_scan_secs` 900; the safety scan is jittered by
10 %, so none falls into a minute's window after start-up). Once every
pair's start-up sync has completed and the agent has been quiet for a few
seconds, the script reads the CPU time of the agent and of the children it
waited for (git) from /proc/PID/stat, waits `--idle` seconds (default 60)
and reads it again.

With `--remote git` it also times `git status --porcelain` (median of 5) on
a checkout of the first pair's repository, the comparison the git remote's
no-op is held to, and prints the agent's CPU per poll beside it:

    python3 bench/idle.py --remote git --pairs 1 --poll-secs 1 --bin-dir /tmp/new

Every git process the agent runs writes its start and end to a trace2 event
file (`GIT_TRACE2_EVENT`), so the polls are counted (one `ls-remote` each)
and the wall time of their git calls is printed too. `--git-transport ssh`
reaches the repositories over `git+ssh://` through the loopback sshd of the
SFTP suite (bench/remotes.py), with `GIT_SSH_COMMAND` naming its key and
known_hosts.

Several builds can be measured in one run (`--bin-dir` given more than once,
e.g. this branch's and main's), one after the other on fresh trees of the
same seed, so their figures are comparable.

    python3 bench/idle.py --bin-dir /tmp/new --bin-dir /tmp/main

Standard library only; Linux only (/proc).
"""

import argparse
import collections
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Problem, children_cpu, stop_daemon, sync_and_wait

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_tree(root, files, dirs, seed):
    """`files` files of 0.5-4 KiB of random bytes in `dirs` folders."""
    rng = random.Random(seed)
    for i in range(files):
        folder = root / f"d{i % dirs:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}.bin").write_bytes(rng.randbytes(rng.randint(512, 4096)))


def synced_files(root):
    """Files below `root`, leaving out Prism Sync's own folder."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d != ".prism-sync"]
            filenames = [f for f in filenames if not f.startswith(".prism-sync")]
        total += len(filenames)
    return total


def cpu_seconds(pid):
    """User plus system CPU time of a process and of the children it waited
    for (/proc/PID/stat), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS


def git(*args, cwd=None):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def git_status_seconds(repo, scratch):
    """Median wall and CPU time of `git status --porcelain` on a warm
    checkout of `repo`'s main."""
    checkout = scratch / "checkout"
    git("clone", "-q", f"file://{repo}", str(checkout))
    return git_status_times(checkout)


def git_status_times(checkout, env=None, runs=5):
    """Median wall and CPU time (seconds) of `git status --porcelain` on the
    checkout `checkout`, made warm first."""
    # Files written in the second the index was would be hashed again by
    # every status (git's racy-clean check) until an index written later
    # records them as clean: wait, then let one status write it.
    time.sleep(1.5)
    subprocess.run(["git", "status", "--porcelain"], cwd=checkout, env=env, check=True, capture_output=True)
    walls, cpus = [], []
    for _ in range(runs):
        used = children_cpu()
        started = time.perf_counter()
        shown = subprocess.run(["git", "status", "--porcelain"], cwd=checkout, env=env, check=True,
                               capture_output=True)
        walls.append(time.perf_counter() - started)
        cpus.append(children_cpu() - used)
        if shown.stdout.strip():
            raise Problem(f"git status on the synced checkout {checkout} shows changes: {shown.stdout[:300]!r}")
    return statistics.median(walls), statistics.median(cpus)


def git_trace_env(trace):
    """Environment that makes every git process the agent runs append its
    start and end (trace2 events, microsecond times) to the file `trace`."""
    return {"GIT_TRACE2_EVENT": str(trace)}


def traced_git_calls(trace, start, end):
    """The git processes the agent ran whose start and end are both in the
    bytes start..end of the trace2 event file: [(subcommand, wall seconds)].
    Only the processes the agent started itself (a sid without a parent):
    what they ran (upload-pack for a file:// remote) is in their time."""
    with open(trace, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode("utf-8", "replace")
    started, ended = {}, {}
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        sid = event.get("sid", "")
        if "/" in sid:
            continue
        if event.get("event") == "start":
            argv = event.get("argv") or []
            started.setdefault(sid, next((a for a in argv[1:] if not a.startswith("-") and "=" not in a), "?"))
        elif event.get("event") == "cmd_name":
            started[sid] = event.get("name", "?")
        elif event.get("event") in ("exit", "atexit"):
            # atexit comes last: the process's whole life.
            ended[sid] = event.get("t_abs", 0.0)
    return [(started[sid], ended[sid]) for sid in started if sid in ended]


def ssh_master_cpu(control_path):
    """{(pid, start time): CPU seconds} of the processes whose command line
    names ssh's ControlPath `control_path` (its `%C` expanded or not): the
    shared connection's master, which retitles itself `ssh: PATH [mux]`
    (long-lived, not a child anyone waits for), and any short-lived client
    running at that moment."""
    wanted = str(control_path).split("%C")[0].encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted not in (entry / "cmdline").read_bytes():
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        found[(entry.name, fields[19])] = sum(int(f) for f in fields[11:13]) / CLOCK_TICKS
    return found


def poll_cost(pid, idle_s, polls_expected, trace=None, control_path=None):
    """CPU time the agent `pid` and the git processes it waited for use over
    `idle_s` seconds of idle polls, per poll; with the trace2 file `trace`
    of its git processes, also their number and wall time per poll. With
    `control_path` (ssh's ControlPath of a shared connection), the CPU
    time of that connection's master over the window is added: it does
    every call's encryption, and nobody waits for it."""
    mark = trace.stat().st_size if trace and trace.exists() else 0
    masters = ssh_master_cpu(control_path) if control_path else {}
    before = cpu_seconds(pid)
    time.sleep(idle_s)
    after = cpu_seconds(pid)
    out = {"idle_s": idle_s, "idle_cpu_s": round(after - before, 3), "polls": polls_expected}
    if control_path:
        # Only what was running at both ends of the window: the master.
        later = ssh_master_cpu(control_path)
        master = sum(later[k] - masters[k] for k in later.keys() & masters.keys())
        out["ssh_master_cpu_s"] = round(master, 3)
        out["ssh_masters"] = len(later.keys() & masters.keys())
        after += master
        out["idle_cpu_s"] = round(after - before, 3)
    if trace and trace.exists():
        calls = traced_git_calls(trace, mark, trace.stat().st_size)
        remote_calls = [wall for cmd, wall in calls if cmd == "ls-remote"]
        if remote_calls:
            # Each idle poll asks the remote once (`ls-remote`): counted,
            # not assumed from the poll interval.
            out["polls"] = len(remote_calls)
        out["git_calls"] = dict(collections.Counter(cmd for cmd, _ in calls))
        # The mean over the window, as the CPU per poll is.
        out["git_wall_ms_per_poll"] = round(1000 * sum(w for _, w in calls) / max(1, out["polls"]), 2)
        out["ls_remote_wall_ms"] = sorted(round(1000 * w, 2) for w in remote_calls)
        if remote_calls and len(calls) == len(remote_calls):
            # Every poll was one ls-remote and nothing else: the median
            # poll, which a busy moment of a shared machine moves less.
            out["poll_wall_median_ms"] = round(1000 * statistics.median(remote_calls), 2)
    out["cpu_ms_per_poll"] = round(1000 * (after - before) / max(1, out["polls"]), 2)
    out["idle_cpu_percent_of_a_core"] = round(100 * (after - before) / idle_s, 3)
    return out


def memory_kib(pid):
    """The resident set now and at its peak (/proc/PID/status), in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found.get("VmRSS"), found.get("VmHWM")


def wait_quiet(pid, quiet, timeout):
    """Waits until the process used no CPU for `quiet` seconds in a row."""
    deadline = time.monotonic() + timeout
    last, since = cpu_seconds(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise Problem(f"prism-syncd did not go quiet within {timeout} s")


def measure(bin_dir, args, scratch, sshd=None):
    """One build: start its agent on fresh trees, wait for the start-up sync,
    then measure an idle window. With `sshd` (a remotes.Sshd), the git
    remotes are reached over ssh:// through it."""
    base = scratch / bin_dir.name
    base.mkdir()
    env = dict(os.environ)
    env.update({
        "HOME": str(base),
        "XDG_RUNTIME_DIR": str(base),
        "PRISM_SYNC_CONFIG": str(base / "config.toml"),
        "RUST_LOG": "warn",
    })
    env.pop("SSH_AUTH_SOCK", None)
    trace = None
    if args.remote == "git":
        trace = base / "git-trace2.json"
        env.update(git_trace_env(trace))
        if sshd:
            env.update(sshd.git_env(args.ssh_control_persist))
    lines = ["[agent]"]
    pairs = []
    for p in range(args.pairs):
        name = f"pair{p}"
        local, remote = base / name / "local", base / name / "remote"
        make_tree(local, args.files, args.dirs, args.seed + p)
        if args.remote == "git":
            remote = base / name / "remote.git"
            git("init", "-q", "--bare", "-b", "main", str(remote))
            url = "git+" + (sshd.git_url(remote) if sshd else f"file://{remote}")
        else:
            remote.mkdir(parents=True)
            url = f"file://{remote}"
        pairs.append((name, local, remote))
        lines += ["[[pair]]", f'name = "{name}"', f'local = "{local}"', f'remote = "{url}"']
    if args.poll_secs is not None:
        lines.insert(1, f"remote_poll_secs = {args.poll_secs}")
    config = base / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    sock_dir = Path(tempfile.mkdtemp(prefix="pi", dir="/tmp"))
    socket = sock_dir / "s"
    log = open(base / "daemon.err", "wb")
    argv = [bin_dir / "prism-syncd", "--config", config, "--state-dir", base / "state", "--socket", socket]
    daemon = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    result = {"bin_dir": str(bin_dir)}
    try:
        started = time.monotonic()
        for name, _, _ in pairs:
            sync_and_wait(bin_dir / "prism-syncctl", socket, env, daemon, timeout=600, pair=name)
        for name, local, remote in pairs:
            if args.remote == "git":
                out = subprocess.run(["git", "ls-tree", "-r", "--name-only", "main"], cwd=remote,
                                     capture_output=True, text=True)
                held = len(out.stdout.splitlines())
            else:
                held = synced_files(remote)
            if held != args.files:
                raise Problem(f"{name}: {held} of {args.files} files on the remote")
        result["startup_sync_s"] = round(time.monotonic() - started, 2)
        if args.poll_secs is not None and args.poll_secs < 10:
            # Polls this frequent keep the agent from ever being quiet for
            # seconds: let the first polls after the start-up sync (which
            # list once) pass instead.
            time.sleep(max(10, 3 * args.poll_secs))
        else:
            wait_quiet(daemon.pid, quiet=5, timeout=120)
        poll_secs = args.poll_secs or 30
        shared = sshd.control_path() if sshd and args.ssh_control_persist is not None else None
        result.update(poll_cost(daemon.pid, args.idle, int(args.idle // poll_secs) * args.pairs, trace, shared))
        rss, hwm = memory_kib(daemon.pid)
        result.update({"rss_kib": rss, "peak_rss_kib": hwm})
        if args.remote == "git":
            wall, cpu = git_status_seconds(pairs[0][2], base)
            result["git_status_ms"] = round(1000 * wall, 2)
            result["git_status_cpu_ms"] = round(1000 * cpu, 2)
    finally:
        stop_daemon(daemon)
        log.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
        if sshd and args.ssh_control_persist is not None:
            sshd.stop_control_master(env)
    result["exit_code"] = daemon.returncode
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", action="append", type=Path, required=True,
                        help="a folder holding prism-syncd and prism-syncctl; repeat to compare builds")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--dirs", type=int, default=100)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measured")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--remote", choices=["file", "git"], default="file")
    parser.add_argument("--poll-secs", type=int, default=None, help="remote_poll_secs (default 30)")
    parser.add_argument("--git-transport", choices=["file", "ssh"], default="file",
                        help="--remote git: reach the bare repositories over git+file:// (the default) or "
                             "git+ssh:// through a loopback sshd started as for the SFTP suite")
    parser.add_argument("--ssh-control-persist", type=int, default=None, metavar="SECS",
                        help="--git-transport ssh: let ssh share one connection between the agent's git calls "
                             "(ControlMaster=auto, ControlPersist=SECS), as a user's ssh config may")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    names = [d.name for d in args.bin_dir]
    if len(set(names)) != len(names):
        sys.exit("give each --bin-dir a folder name of its own: the figures are labelled by it")
    if args.git_transport == "ssh" and args.remote != "git":
        sys.exit("--git-transport ssh needs --remote git")
    if args.ssh_control_persist is not None and args.git_transport != "ssh":
        sys.exit("--ssh-control-persist needs --git-transport ssh")
    scratch = Path(tempfile.mkdtemp(prefix="prism-idle-", dir=args.workdir))
    results, problems = [], []
    sshd = None
    try:
        if args.git_transport == "ssh":
            import remotes  # the loopback sshd of the SFTP suite
            sshd = remotes.Sshd(scratch / "sshd")
        for bin_dir in args.bin_dir:
            try:
                results.append(measure(bin_dir.resolve(), args, scratch, sshd))
            except Problem as e:
                problems.append(f"{bin_dir}: {e}")
    finally:
        if sshd:
            sshd.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    remotes = f"git+{args.git_transport}://" if args.remote == "git" else "file://"
    if args.ssh_control_persist is not None:
        remotes += f", ssh ControlPersist={args.ssh_control_persist}"
    print(f"idle agent: {args.pairs} pairs x {args.files} files ({remotes} remotes), {args.idle:g} s idle, "
          f"remote_poll_secs {args.poll_secs or 30}")
    print(f"{'build':<20} {'start-up s':>10} {'idle CPU s':>10} {'% of a core':>11} {'RSS MiB':>8} {'peak MiB':>9}")
    for r in results:
        print(f"{Path(r['bin_dir']).name:<20} {r['startup_sync_s']:>10.2f} {r['idle_cpu_s']:>10.3f} "
              f"{r['idle_cpu_percent_of_a_core']:>11.3f} {r['rss_kib'] / 1024:>8.1f} {r['peak_rss_kib'] / 1024:>9.1f}")
    for r in results:
        line = f"{Path(r['bin_dir']).name:<20} {r['polls']} polls, CPU per poll {r['cpu_ms_per_poll']:.2f} ms"
        if "ssh_master_cpu_s" in r:
            line += f" (with the ssh master's {r['ssh_master_cpu_s']:.3f} s over the window)"
        if "git_wall_ms_per_poll" in r:
            line += f", its git calls {r['git_wall_ms_per_poll']:.2f} ms wall per poll {r['git_calls']}"
            if "poll_wall_median_ms" in r:
                line += f" (median {r['poll_wall_median_ms']:.2f} ms)"
        if "git_status_ms" in r:
            line += (f"; git status {r['git_status_ms']:.2f} ms wall, {r['git_status_cpu_ms']:.2f} ms CPU; "
                     f"poll / git status: CPU {r['cpu_ms_per_poll'] / max(r['git_status_cpu_ms'], 0.01):.2f}x")
            if "git_wall_ms_per_poll" in r:
                wall = r.get("poll_wall_median_ms", r["git_wall_ms_per_poll"])
                line += f", wall {wall / max(r['git_status_ms'], 0.01):.2f}x"
        print(line)
    for problem in problems:
        print(f"problem: {problem}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"results": results, "problems": problems}, indent=2) + "\n")
    sys.exit(1 if problems or any(r["exit_code"] != 0 for r in results) else 0)


if __name__ == "__main__":
    main()
