"""The SFTP and WebDAV suites of the benchmark (see bench/README.md).

Each suite starts its own server on loopback (OpenSSH's sshd serving
internal-sftp, or Apache with mod_dav), gives every tool a source folder of
its own and a destination folder of its own on that one server, and times
the same phases for each: initial sync, no-op resync, incremental sync after
1 % of the files changed, a folder move, and (prism only) change-to-remote
latency with the daemon watching. After every sync the destination is read
directly from the server's folder and compared with the expected tree.

The folder move also counts what each tool asked of the server during the
timed sync: from sftp-server's log (`internal-sftp -l INFO`) or from
Apache's access log; rsync over ssh talks its own protocol rather than SFTP,
so its figure is the count of files it transferred (`--stats`).
"""

import collections
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench as core
from bench import Problem

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
APACHE_USER = "www-data"

SUITE_TOOLS = {"sftp": ("prism", "rsync", "rclone"), "webdav": ("prism", "rclone")}
# The tool each target compares prism with.
TARGETS = {
    "sftp": {"initial": ("rclone", 1.0), "incremental": ("rsync", 0.5), "latency_median_ms": 250.0},
    "webdav": {"initial": ("rclone", 1.0), "incremental": ("rclone", 0.5), "latency_median_ms": 250.0},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_root():
    return os.geteuid() == 0


def wait_for_port(port, proc, what, log):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise Problem(f"{what} exited with {proc.returncode} before accepting:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise Problem(f"{what} did not accept on port {port} within 15 s:\n{log.read_text()[-2000:]}")


def stop_process(proc):
    """SIGTERM to a server this script started, SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Log:
    """A log file read from a mark: what was appended since."""

    def __init__(self, path):
        self.path = path

    def mark(self):
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def since(self, mark):
        # Servers write their lines as they go; give the last one a moment.
        time.sleep(0.2)
        with open(self.path, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")


# ----------------------------------------------------------------------------
# The servers


class Sshd:
    """OpenSSH's sshd on a free loopback port, as tests/sftp/sshd.rs starts
    it: its own host key, client key and authorized_keys, internal-sftp
    logging every request at INFO."""

    def __init__(self, root):
        self.root = root
        self.served = root / "served"
        self.served.mkdir(parents=True)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "prism-bench",
                            "-f", root / name], check=True, stdin=subprocess.DEVNULL)
        shutil.copy(root / "client_key.pub", root / "authorized_keys")
        if is_root():
            # sshd refuses to start without its privilege-separation folder.
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        self.port = free_port()
        (root / "sshd_config").write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {root}/host_key\n"
            f"PidFile {root}/sshd.pid\n"
            f"AuthorizedKeysFile {root}/authorized_keys\n"
            f"Subsystem sftp {root}/sftp-server-logged\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "PermitRootLogin yes\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "MaxStartups 64\n"
            "MaxSessions 64\n"
            "LogLevel VERBOSE\n")
        # internal-sftp logs to syslog only (its -e would send the log to
        # the client), so the same server code runs as the external
        # sftp-server, logging every request to a file.
        wrapper = root / "sftp-server-logged"
        wrapper.write_text(f"#!/bin/sh\nexec {SFTP_SERVER} -e -l INFO 2>>{root}/sftp.log\n")
        wrapper.chmod(0o755)
        host_key = (root / "host_key.pub").read_text().split()
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_key[0]} {host_key[1]}\n")
        self.log = Log(root / "sftp.log")
        self.log.path.touch()
        self._log_file = open(root / "sshd.log", "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", root / "sshd_config"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._log_file)
        wait_for_port(self.port, self.proc, "sshd", root / "sshd.log")

    def stop(self):
        stop_process(self.proc)
        self._log_file.close()

    def ssh_command(self):
        return (f"ssh -p {self.port} -i {self.root / 'client_key'} -F /dev/null "
                f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
                "-o BatchMode=yes -o IdentitiesOnly=yes")

    def ops(self, text, folder):
        """Counts the SFTP requests sftp-server logged in `text` on paths
        below `folder` (an absolute path on the server), by kind."""
        prefix = f'"{folder}/'
        counts = collections.Counter()
        for line in text.splitlines():
            m = re.match(r"(?:\S+\[\d+\]: )?(\S+) (.*)$", line)
            if not m or prefix not in m.group(2):
                continue
            op, rest = m.groups()
            kind = self.kind(op, rest)
            if kind is None:
                continue
            if f'{prefix}{core.PRISM_REMOTE_META}/' in rest:
                kind += " (.prism-sync)"
            counts[kind] += 1
        return counts

    @staticmethod
    def kind(op, rest):
        if op == "open":
            return "open for write" if "WRITE" in rest else "open for read"
        if op in ("rename", "posix-rename"):
            return "rename"
        if op in ("remove", "mkdir", "rmdir", "opendir", "set", "symlink"):
            return op
        return None


class Apache:
    """Apache httpd with mod_dav on a free loopback port, as
    tests/webdav/apache.rs starts it (without the TLS listener and the auth
    share), logging every request to an access log. With `depth_infinity`
    the share allows PROPFIND with `Depth: infinity` (`DavDepthInfinity
    on`), which Apache refuses by default."""

    def __init__(self, root, depth_infinity=False):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        self.www = root / "www"
        self.share = self.www / "open"
        self.share.mkdir(parents=True)
        (root / "lock").mkdir()
        self.hand_over(self.www)
        self.hand_over(root / "lock")
        self.port = free_port()
        modules = [("mpm_event_module", "mod_mpm_event.so"), ("authz_core_module", "mod_authz_core.so"),
                   ("dav_module", "mod_dav.so"), ("dav_fs_module", "mod_dav_fs.so")]
        config = "".join(f"LoadModule {name} {APACHE_MODULES}/{file}\n" for name, file in modules)
        if is_root():
            config += f"User {APACHE_USER}\nGroup {APACHE_USER}\n"
        config += (
            f"ServerRoot {root}\n"
            "ServerName 127.0.0.1\n"
            f"Listen 127.0.0.1:{self.port}\n"
            f"PidFile {root}/httpd.pid\n"
            f"ErrorLog {root}/error.log\n"
            "LogLevel warn\n"
            f"LogFormat \"%m %U %>s\" bench\n"
            f"CustomLog {root}/access.log bench\n"
            f"DefaultRuntimeDir {root}\n"
            f"Mutex file:{root} default\n"
            f"DAVLockDB {root}/lock/davlock\n"
            f"DocumentRoot {root}/www\n"
            "KeepAlive On\n"
            "KeepAliveTimeout 15\n"
            "MaxKeepAliveRequests 0\n"
            "<Directory />\n  AllowOverride None\n</Directory>\n"
            f"<Directory {root}/www/open>\n"
            "  Dav On\n"
            + ("  DavDepthInfinity on\n" if depth_infinity else "")
            + "  Require all granted\n"
            "</Directory>\n")
        (root / "httpd.conf").write_text(config)
        self.log = Log(root / "access.log")
        self.console = root / "console.log"
        self._console = open(self.console, "ab")
        self.proc = subprocess.Popen([APACHE, "-f", root / "httpd.conf", "-DFOREGROUND"],
                                     stdin=subprocess.DEVNULL, stdout=self._console, stderr=self._console)
        wait_for_port(self.port, self.proc, "apache2", self.console)

    def hand_over(self, path):
        """Gives a path and everything below it to the user Apache runs as."""
        if not is_root():
            return
        user = pwd.getpwnam(APACHE_USER)
        os.lchown(path, user.pw_uid, user.pw_gid)
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid)

    def stop(self):
        stop_process(self.proc)
        self._console.close()

    def ops(self, text, folder):
        """Counts the requests in `text` (the access log) on URLs below
        `folder` (a folder of the share, as a path on the server's disk), by
        method; requests on prism's metadata folder are counted apart."""
        prefix = f"/open/{Path(folder).relative_to(self.share)}/"
        counts = collections.Counter()
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3 or not parts[1].startswith(prefix):
                continue
            method = parts[0]
            rest = parts[1][len(prefix):]
            if rest.startswith(core.PRISM_REMOTE_META + "/") or rest == core.PRISM_REMOTE_META:
                method += " (.prism-sync)"
            counts[method] += 1
        return counts


# ----------------------------------------------------------------------------
# The tools


class RemoteTool:
    """One tool syncing its own source folder into its own folder on the
    suite's server. `dst` is that folder as seen on the server's disk."""

    def __init__(self, name, suite, server, work, bins, env):
        self.name = name
        self.suite = suite
        self.server = server
        self.base = work / name
        self.src = self.base / "src"
        self.state = self.base / "state"
        self.logs = self.base / "logs"
        self.home = self.base / "home"
        self.bins = bins
        self.env = dict(env, HOME=str(self.home))
        self.dst = (server.served if suite == "sftp" else server.share) / name
        self.skip_src = {core.PRISM_LOCAL_META} if name == "prism" else set()
        self.skip_dst = {core.PRISM_REMOTE_META} if name == "prism" else set()
        self.runs = 0
        self.last_log = None
        self.requests = {}
        for path in (self.src, self.state, self.logs, self.home):
            path.mkdir(parents=True, exist_ok=True)
        if name == "prism":
            self.config = self.base / "config.toml"
            if suite == "sftp":
                remote = f"sftp://{server.user}@127.0.0.1:{server.port}{self.dst}"
                extra = (f'known_hosts = "{server.known_hosts}"\n'
                         f'identity_file = "{server.root / "client_key"}"\n')
            else:
                remote = f"webdav://127.0.0.1:{server.port}/open/{name}/"
                extra = ""
            self.config.write_text(
                f'[agent]\ndevice = "bench"\n[[pair]]\nname = "bench"\n'
                f'local = "{self.src}"\nremote = "{remote}"\n{extra}')
        if name == "rclone":
            self.rclone_conf = self.base / "rclone.conf"
            if suite == "sftp":
                self.rclone_conf.write_text(
                    f"[bench]\ntype = sftp\nhost = 127.0.0.1\nport = {server.port}\nuser = {server.user}\n"
                    f"key_file = {server.root / 'client_key'}\nknown_hosts_file = {server.known_hosts}\n")
                self.rclone_dst = f"bench:{self.dst}"
            else:
                self.rclone_conf.write_text(
                    f"[bench]\ntype = webdav\nurl = http://127.0.0.1:{server.port}/open/\nvendor = other\n")
                self.rclone_dst = f"bench:{name}"

    def argv(self):
        if self.name == "prism":
            return [self.bins / "prism-syncd", "--config", self.config, "--state-dir", self.state,
                    "--device", "bench", "--once"]
        if self.name == "rsync":
            return ["rsync", "-a", "--delete", "--stats", "-e", self.server.ssh_command(),
                    f"{self.src}/", f"{self.server.user}@127.0.0.1:{self.dst}/"]
        argv = ["rclone", "sync", "--config", self.rclone_conf, f"{self.src}/", self.rclone_dst]
        if self.suite == "sftp":
            # By default rclone checks every upload by running md5sum on the
            # server through a shell of its own, about 130 ms a file here
            # (20x its time without); compare with rclone at its fastest.
            argv.append("--sftp-disable-hashcheck")
        return argv

    def daemon_argv(self, socket):
        return [self.bins / "prism-syncd", "--config", self.config, "--state-dir", self.state,
                "--device", "bench", "--socket", socket]

    def reset(self):
        """An empty destination folder on the server and no sync state."""
        core.set_aside((self.dst, self.state), self.dst.parent / "set-aside")
        self.dst.mkdir(parents=True)
        self.state.mkdir(parents=True)
        if self.suite == "webdav":
            self.server.hand_over(self.dst)

    def sync(self, label, measure_rss=False):
        """Runs one sync; what it asked of the server is kept in
        self.requests[label] (one Counter per run)."""
        self.runs += 1
        self.last_log = f"{self.runs:03d}-{label}"
        mark = self.server.log.mark()
        result = core.run_timed(self.argv(), self.env, self.logs, self.last_log, measure_rss)
        if self.name == "rsync":
            count = collections.Counter({"files transferred (rsync --stats)": self.rsync_transferred()})
        else:
            count = self.server.ops(self.server.log.since(mark), self.dst)
        self.requests.setdefault(label, []).append(count)
        return result

    def verify(self, expected):
        core.compare(expected, self.dst, self.skip_dst, f"{self.name}: the destination")
        if self.name == "prism":
            core.compare(expected, self.src, self.skip_src, f"{self.name}: the source")

    def rsync_transferred(self):
        """Regular files rsync sent in its last run (from --stats)."""
        text = (self.logs / f"{self.last_log}.out").read_text(errors="replace")
        m = re.search(r"Number of regular files transferred: ([\d,]+)", text)
        return int(m.group(1).replace(",", "")) if m else None


# ----------------------------------------------------------------------------
# The folder move


def measure_move(tools, server, runs, tree, problems):
    """Renames one folder of about 100 files in each tool's source and times
    the sync, counting what the tool asked of the server. The folder goes
    back and forth between two names, one rename per run; after an odd
    number of runs it is renamed back and synced, untimed, so the tree is
    as before. Returns ({tool: [(seconds, None)]}, {tool: [Counter]})."""
    folder = sorted({rel.split("/")[0] for rel in tree})[0]
    names = (folder, f"{folder}-moved")
    results = {t.name: [] for t in tools}
    counts = {t.name: [] for t in tools}

    def renamed(old, new):
        return core.manifest({(f"{new}/{rel[len(folder) + 1:]}" if rel.startswith(folder + "/") else rel): data
                              for rel, data in tree.items()}) if new != folder else core.manifest(tree)

    for run in range(runs):
        old, new = names[run % 2], names[(run + 1) % 2]
        expected = renamed(old, new)
        for tool in core.rotated(tools, run):
            os.rename(tool.src / old, tool.src / new)
            os.sync()
            try:
                results[tool.name].append(tool.sync("move"))
                counts[tool.name].append(tool.requests["move"][-1])
                tool.verify(expected)
            except Problem as e:
                problems.append(f"folder move, run {run + 1}: {e}")
                print(f"  PROBLEM: {e}", file=sys.stderr)
        print(f"  move: run {run + 1}/{runs} done", flush=True)
    if runs % 2:
        for tool in tools:
            os.rename(tool.src / names[1], tool.src / names[0])
            try:
                tool.sync("move-back")
                tool.verify(core.manifest(tree))
            except Problem as e:
                problems.append(f"folder move, moving back: {e}")
    return results, counts


def moved_files(tree, folder):
    return sum(1 for rel in tree if rel.startswith(folder + "/"))


# ----------------------------------------------------------------------------
# The suite


def run_suite(suite, args, bins, work, env):
    problems = []
    work.mkdir(parents=True)
    if suite == "webdav":
        # Apache's workers (www-data when started as root) must reach the
        # share inside the scratch folder, which mkdtemp made private.
        for path in (work.parent, work):
            os.chmod(path, 0o755)
    load_before = [round(x, 2) for x in os.getloadavg()]
    server = Sshd(work / "sshd") if suite == "sftp" else Apache(work / "apache", args.dav_depth_infinity)
    try:
        return _run_suite(suite, args, bins, work, env, server, problems, load_before)
    finally:
        server.stop()


def _run_suite(suite, args, bins, work, env, server, problems, load_before):
    tree = core.make_workload(args.files, args.dirs, args.seed)
    changes = core.make_change_set(tree, args.seed)
    originals = {rel: tree[rel] for rel in changes}
    base = core.manifest(tree)
    changed = dict(base, **core.manifest(changes))
    names = SUITE_TOOLS[suite]
    server_folder = server.served if suite == "sftp" else server.share
    tools = [RemoteTool(name, suite, server, work / "tools", bins, env) for name in names]
    for tool in tools:
        core.write_files(tool.src, tree)
    print(f"{suite}: server on 127.0.0.1:{server.port} serving {server_folder}; wrote {len(tree)} files "
          f"into each tool's source; {len(changes)} files change per incremental run", flush=True)

    phases = {}
    phases["initial"] = core.measure_phase("initial", tools, args.runs, RemoteTool.reset, base, problems)
    phases["noop"] = core.measure_phase("noop", tools, args.runs, lambda t: None, base, problems)

    def revert(run):
        for tool in tools:
            core.write_files(tool.src, originals)
            try:
                tool.sync("revert")
                tool.verify(base)
            except Problem as e:
                problems.append(f"incremental, reverting after run {run + 1}: {e}")

    phases["incremental"] = core.measure_phase(
        "incremental", tools, args.runs, lambda t: core.write_files(t.src, changes), changed, problems,
        after=revert)
    phases["move"], move_counts = measure_move(tools, server, args.runs, tree, problems)
    samples = args.remote_latency_samples
    print(f"  latency: {samples} changes with the daemon watching", flush=True)
    prism = tools[0]
    latency = core.measure_latency(prism, dict(tree), samples, args.seed, problems,
                                   changes=changes, originals=originals, runs=args.runs)
    load_after = [round(x, 2) for x in os.getloadavg()]
    summary = {phase: core.summarize(results) for phase, results in phases.items()}
    report = {
        "suite": suite,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_after,
        "versions": versions(bins, suite),
        "command": " ".join(sys.argv),
        "workload": {"files": len(tree), "dirs": args.dirs, "bytes": sum(map(len, tree.values())),
                     "changed_files": len(changes), "moved_files": moved_files(tree, sorted(tree)[0].split("/")[0]),
                     "seed": args.seed},
        "runs": args.runs,
        "dav_depth_infinity": suite == "webdav" and args.dav_depth_infinity,
        "tools": list(names),
        "phases": summary,
        "move_requests": {t: [dict(c) for c in cs] for t, cs in move_counts.items()},
        "requests": {t.name: {label: [dict(c) for c in cs] for label, cs in t.requests.items()} for t in tools},
        "latency": latency,
        "problems": problems,
    }
    report["targets"] = judge(suite, report)
    print_report(report)
    return report


def versions(bins, suite):
    def first_line(argv):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (proc.stdout or proc.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"
    out = {"prism": first_line([bins / "prism-syncd", "--version"]), "rclone": first_line(["rclone", "version"])}
    if suite == "sftp":
        out["rsync"] = first_line(["rsync", "--version"])
        out["sshd"] = first_line(["ssh", "-V"])
    else:
        out["apache"] = first_line([APACHE, "-v"])
    return out


# ----------------------------------------------------------------------------
# Reporting


def median(values):
    return statistics.median(values) if values else None


def watched_median(report):
    return median(report["latency"].get("watched_incremental_s") or [])


def move_summary(counts):
    """The requests of a phase's runs, each kind's median, as text."""
    if not counts:
        return "n/a"
    keys = set().union(*counts)
    shown = {k: median([c.get(k, 0) for c in counts]) for k in keys}
    shown = {k: v for k, v in shown.items() if v}
    return ", ".join(f"{k} {v:g}" for k, v in sorted(shown.items())) or "nothing"


def judge(suite, report):
    phases, lat, t = report["phases"], report["latency"], TARGETS[suite]

    def verdict(ok):
        return "not measured" if ok is None else ("met" if ok else "MISSED")

    ini_tool, ini_limit = t["initial"]
    inc_tool, inc_limit = t["incremental"]
    ini = core.ratio(phases["initial"]["prism"]["median_s"], phases["initial"][ini_tool]["median_s"])
    inc = core.ratio(watched_median(report), phases["incremental"][inc_tool]["median_s"])
    inc_once = core.ratio(phases["incremental"]["prism"]["median_s"], phases["incremental"][inc_tool]["median_s"])
    med = lat.get("median_ms")
    counts = report["move_requests"]["prism"]
    if suite == "sftp":
        renames = [c.get("rename", 0) for c in counts]
        uploads = [c.get("open for write", 0) for c in counts]
        move_ok = bool(counts) and all(r == 1 for r in renames) and not any(uploads)
        move_text = f"renames {renames}, uploads {uploads}"
        move_name = "folder move = 1 remote rename, 0 uploads"
    else:
        moves = [c.get("MOVE", 0) for c in counts]
        puts = [c.get("PUT", 0) for c in counts]
        move_ok = bool(counts) and all(m == 1 for m in moves) and not any(puts)
        move_text = f"MOVEs {moves}, PUTs {puts}"
        move_name = "folder move = 1 MOVE, 0 PUTs (outside .prism-sync)"
    return [
        {"name": f"initial <= {ini_limit}x {ini_tool}", "value": ini, "actual": f"{core.fmt(ini, '.2f')}x",
         "verdict": verdict(None if ini is None else ini <= ini_limit)},
        {"name": f"incremental (watching) <= {inc_limit}x {inc_tool}", "value": inc,
         "actual": f"{core.fmt(inc, '.2f')}x", "verdict": verdict(None if inc is None else inc <= inc_limit)},
        {"name": f"  (same with --once: {core.fmt(inc_once, '.2f')}x)", "value": inc_once,
         "actual": "", "verdict": "for reference"},
        {"name": move_name, "value": move_ok, "actual": move_text, "verdict": verdict(move_ok if counts else None)},
        {"name": f"latency median <= {t['latency_median_ms']:g} ms", "value": med,
         "actual": f"{core.fmt(med, '.1f')} ms",
         "verdict": verdict(None if med is None else med <= t["latency_median_ms"])},
    ]


def print_report(report):
    names = report["tools"]
    phases, lat, w = report["phases"], report["latency"], report["workload"]
    others = [n for n in names if n != "prism"]
    print()
    print(f"Prism Sync {report['suite'].upper()} benchmark: {w['files']} files in {w['dirs']} folders, "
          f"{w['bytes'] / 2**20:.1f} MiB, median of {report['runs']} runs, loopback server")
    print(f"load average before {report['load_before']}, after {report['load_after']} on {report['cpus']} CPUs")
    if report["suite"] == "webdav":
        print(f"Apache allows PROPFIND Depth: infinity: {'yes' if report['dav_depth_infinity'] else 'no (its default)'}")
    print()
    header = f"{'':30}" + "".join(f"{n:>10}" for n in names) + "".join(f"{'prism/' + n:>14}" for n in others)
    print(header)
    print("-" * len(header))
    rows = [("initial", "initial sync (s)"), ("noop", "no-op resync (s)"),
            ("incremental", "incremental 1%, --once (s)")]
    for key, label in rows:
        m = {n: phases[key][n]["median_s"] for n in names}
        print(f"{label:30}" + "".join(core.fmt(m[n], "10.3f") for n in names)
              + "".join(f"{core.fmt(core.ratio(m['prism'], m[n]), '13.2f')}x" for n in others))
    wm = watched_median(report)
    m = {n: phases["incremental"][n]["median_s"] for n in names}
    print(f"{'incremental 1%, watching (s)':30}" + core.fmt(wm, "10.3f")
          + "".join(core.fmt(m[n], "10.3f") for n in others)
          + "".join(f"{core.fmt(core.ratio(wm, m[n]), '13.2f')}x" for n in others))
    ww = median(lat.get("watched_incremental_with_writing_s") or [])
    print(f"{'  ... with the writing (s)':30}" + core.fmt(ww, "10.3f")
          + "".join(core.fmt(m[n], "10.3f") for n in others)
          + "".join(f"{core.fmt(core.ratio(ww, m[n]), '13.2f')}x" for n in others))
    m = {n: phases["move"][n]["median_s"] for n in names}
    print(f"{'folder move (s)':30}" + "".join(core.fmt(m[n], "10.3f") for n in names)
          + "".join(f"{core.fmt(core.ratio(m['prism'], m[n]), '13.2f')}x" for n in others))
    print(f"{'latency median (ms)':30}" + core.fmt(lat.get("median_ms"), "10.1f"))
    print(f"{'latency p99 (ms)':30}" + core.fmt(lat.get("p99_ms"), "10.1f"))
    print()
    print("requests on the server per sync (median run; sftp-server's log, Apache's access log, rsync's --stats):")
    for phase in ("initial", "noop", "incremental", "move"):
        label = phase if phase != "move" else f"move ({w['moved_files']} files)"
        for n in names:
            print(f"  {label:18} {n:7} {move_summary([collections.Counter(c) for c in report['requests'][n].get(phase, [])])}")
    print(f"latency: {len(lat['samples_ms'])} samples, {lat['timeouts']} timeouts, "
          f"min {core.fmt(lat.get('min_ms'), '.1f')} ms, max {core.fmt(lat.get('max_ms'), '.1f')} ms")
    print()
    print("Targets:")
    for target in report["targets"]:
        print(f"  {target['name']:52} {target['actual']:>14}  {target['verdict']}")
    if report["problems"]:
        print()
        print(f"PROBLEMS ({len(report['problems'])}):")
        for problem in report["problems"]:
            print(f"  - {problem}")
