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
import hashlib
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
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import bench as core
from bench import Problem

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
APACHE_USER = "www-data"

# The tool each target compares prism with.
# Ratios are prism's time over the other tool's; "incremental" is the
# watching agent's (the --once figure is printed beside it for reference).
TARGETS = {
    # initial and no-op against rclone, and the `--once` runs against
    # unison and rclone: the performance issue's targets over SFTP.
    "sftp": {"initial": [("rclone", 0.7)], "noop": [("rclone", 0.5), ("unison", 1.0)],
             "incremental_once": [("unison", 1.0), ("rclone", 1.0)],
             "incremental": ("rsync", 0.5), "latency_median_ms": 250.0},
    "webdav": {"initial": ("rclone", 1.0), "incremental": ("rclone", 0.5), "latency_median_ms": 250.0},
    "s3": {"initial": ("rclone", 0.8), "noop": ("rclone", 0.5), "incremental": ("rclone", 0.5),
           "latency_median_ms": 100.0},
    "rclone": {"noop": ("bisync", 0.5), "incremental": ("bisync", 0.3), "latency_median_ms": 500.0},
    "git": {"noop": ("git status", 1.0), "latency_median_ms": 500.0},
    "crypt": {"initial": [("plain", 1.3), ("rclone", 1.0)]},
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
            # sshd runs every command and subsystem through the login
            # user's shell; Debian's bash then reads that user's ~/.bashrc
            # (it does when run by sshd as a top-level shell), whatever it
            # holds: on a build machine that can be a second of version
            # manager set-up per session. Starting the shell one level down
            # keeps each session to what the server itself costs.
            "SetEnv SHLVL=1\n"
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

    def ssh_command(self, port=True):
        return ((f"ssh -p {self.port} " if port else "ssh ") +
                f"-i {self.root / 'client_key'} -F /dev/null "
                f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
                "-o BatchMode=yes -o IdentitiesOnly=yes")

    def git_url(self, path):
        """The URL of a repository at `path` on this server, as `git clone`
        takes it."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def git_env(self, control_persist=None):
        """What a user sets for git to log in here with this key and this
        host key only: `GIT_SSH_COMMAND` (the URL carries the port, which
        git passes to ssh as `-p`). With `control_persist` (seconds), ssh
        shares one connection between calls and keeps it that long after
        the last (OpenSSH's ControlMaster), as many users set it up."""
        command = self.ssh_command(port=False)
        if control_persist is not None:
            command += (f" -o ControlMaster=auto -o ControlPath={self.control_path()}"
                        f" -o ControlPersist={control_persist}")
        return {"GIT_SSH_COMMAND": command}

    def write_ssh_config(self, home):
        """What a user writes in ~/.ssh/config for plain `ssh` to log in
        here with this key and this host key only, written below `home`;
        returns a folder to put first on PATH, holding an `ssh` that reads
        that config (ssh reads the config of the passwd entry's home, not
        $HOME's). prism's git remote then runs git's plain ssh, and shares
        one connection between its calls itself."""
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = ssh / "config"
        config.write_text(
            "Host 127.0.0.1\n"
            f"  Port {self.port}\n"
            f"  IdentityFile {self.root / 'client_key'}\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  IdentitiesOnly yes\n")
        config.chmod(0o600)
        bin_dir = home / "bin"
        bin_dir.mkdir(exist_ok=True)
        wrapper = bin_dir / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {config} "$@"\n')
        wrapper.chmod(0o755)
        return bin_dir

    def control_path(self):
        return self.root / "cm-%C"

    def stop_control_master(self, env):
        """Ends a shared connection git_env(control_persist) started."""
        subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={self.control_path()}", "-p", str(self.port),
                        "-O", "exit", f"{self.user}@127.0.0.1"], env=env, capture_output=True)

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
        self.served = self.share
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
        self.dst = server.served / name
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
        if name == "unison":
            # Unison keeps its archives in $UNISON, on this side and (through
            # -servercmd) on the server's: private ones, set aside with the
            # state at each reset, leave the user's ~/.unison alone.
            self.env["UNISON"] = str(self.state / "client")
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
        if self.name == "unison":
            # As in the local suite (no -times), over one ssh connection to
            # `unison -server` on the loopback sshd.
            ssh_args = self.server.ssh_command().removeprefix("ssh ")
            return ["unison", self.src, f"ssh://{self.server.user}@127.0.0.1/{self.dst}",
                    "-sshargs", ssh_args, "-servercmd", f"env UNISON={self.state / 'server'} unison",
                    "-batch", "-auto", "-silent"]
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
        mark = self.server.log.mark() if self.server.log else None
        result = core.run_timed(self.argv(), self.env, self.logs, self.last_log, measure_rss)
        if self.name == "rsync":
            count = collections.Counter({"files transferred (rsync --stats)": self.rsync_transferred()})
        elif self.name == "unison":
            # Its own protocol to `unison -server`: nothing in sftp-server's log.
            count = None
        elif self.server.log:
            count = self.server.ops(self.server.log.since(mark), self.dst)
        else:
            count = collections.Counter()
        if count is not None:
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


class Seaweed:
    """SeaweedFS (`weed mini`) with its S3 gateway on loopback, as
    tests/support/seaweedfs.rs starts it: every port free and bound to
    127.0.0.1, telemetry off, one identity from an `-s3.config` file and one
    bucket. Objects are read back through the filer's HTTP port, which
    serves the bucket's objects as files (no signature needed on loopback)."""

    ACCESS_KEY = "PRISMBENCHACCESSKEY"
    SECRET_KEY = "prism-bench-secret-key-0123456789"
    BUCKET = "bench"

    def __init__(self, root):
        self.root = root
        self.served = None
        self.log = None
        (root / "data").mkdir(parents=True)
        (root / "s3.json").write_text(
            '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
            '"actions":["Admin","Read","Write","List","Tagging"]}]}' % (self.ACCESS_KEY, self.SECRET_KEY))
        self.port = free_port()
        self.filer_port = free_port()
        # The admin server's workers dial its gRPC port as its HTTP port plus
        # 10000, whatever -admin.port.grpc says: keep the two so.
        while True:
            admin = free_port()
            if admin < 55_000:
                try:
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", admin + 10_000))
                    break
                except OSError:
                    pass
        argv = ["weed", "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                f"-master.port={free_port()}", f"-master.port.grpc={free_port()}",
                f"-volume.port={free_port()}", f"-volume.port.grpc={free_port()}",
                f"-filer.port={self.filer_port}", f"-filer.port.grpc={free_port()}",
                f"-s3.port={self.port}", f"-s3.port.grpc={free_port()}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                f"-admin.port={admin}", f"-admin.port.grpc={admin + 10_000}",
                f"-s3.config={root / 's3.json'}", f"-bucket={self.BUCKET}"]
        self.console = root / "weed.log"
        self._console = open(self.console, "ab")
        self.proc = subprocess.Popen(argv, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._console)
        # rclone's view of the server, for every tool and for reading back.
        self.rclone_conf = root / "rclone.conf"
        self.rclone_conf.write_text(
            f"[bench]\ntype = s3\nprovider = SeaweedFS\naccess_key_id = {self.ACCESS_KEY}\n"
            f"secret_access_key = {self.SECRET_KEY}\nendpoint = {self.endpoint()}\nregion = us-east-1\n")
        wait_for_port(self.port, self.proc, "weed", self.console)
        # Ready when the bucket lists through S3 (the filer comes up a moment
        # after the gateway's port).
        deadline = time.monotonic() + 60
        while True:
            listed = subprocess.run(["rclone", "lsf", "--config", self.rclone_conf, f"bench:{self.BUCKET}"],
                                    env=rclone_env(os.environ), capture_output=True)
            if listed.returncode == 0:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Problem(f"SeaweedFS did not list its bucket within 60 s: {listed.stderr[-500:]!r}\n"
                              f"{self.console.read_text()[-2000:]}")
            time.sleep(0.2)

    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def read(self, key):
        """The object's content, or None when there is none."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.filer_port}/buckets/{self.BUCKET}/{urllib.parse.quote(key)}",
                    timeout=5) as answer:
                return answer.read()
        except (urllib.error.URLError, OSError):
            return None

    def stop(self):
        stop_process(self.proc)
        self._console.close()


class Folders:
    """No server: destinations are folders (the bare repositories of the git
    suite, the encrypted folders of the crypt suite) below `served`."""

    transport = "file"

    def __init__(self, root):
        self.root = root
        self.served = root / "served"
        self.served.mkdir(parents=True)
        self.log = None

    def stop(self):
        pass

    @staticmethod
    def git_url(path):
        return f"file://{path}"

    @staticmethod
    def git_env():
        return {}


class GitSshd(Sshd):
    """The SFTP suite's sshd serving the git suite's bare repositories over
    ssh://. What is counted per sync is the ssh logins sshd accepted (each
    `ls-remote`, `fetch` or `push` is one): git does not use SFTP."""

    transport = "ssh"

    def __init__(self, root):
        super().__init__(root)
        self.log = Log(root / "sshd.log")

    def ops(self, text, folder):
        return collections.Counter(
            {"ssh logins": sum(1 for line in text.splitlines() if "Accepted publickey for " in line)})


def rclone_env(env):
    # These machines set AWS_CA_BUNDLE, which rclone's S3 client would load
    # for a plain-HTTP endpoint too; nothing of the user's rclone config.
    env = dict(env)
    env.pop("AWS_CA_BUNDLE", None)
    env.pop("RCLONE_CONFIG", None)
    return env


def rclone_obscure(password):
    return subprocess.run(["rclone", "obscure", password], capture_output=True, text=True,
                          check=True).stdout.strip()


CRYPT_PASSWORD = "prism-bench crypt password"


class StoreTool(RemoteTool):
    """A tool of the s3, rclone, git and crypt suites. Each reset names a
    new, empty destination (a new S3 prefix, bare repository or folder), so
    an initial sync never meets what an earlier one left, and nothing is
    deleted while the benchmark runs. Subclasses say how the tool runs and
    how its destination is read back."""

    prism = False
    two_way = True

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
        self.skip_src = {core.PRISM_LOCAL_META} if self.prism else set()
        self.skip_dst = {core.PRISM_REMOTE_META} if self.prism else set()
        self.runs = 0
        self.generation = 0
        self.last_log = None
        self.requests = {}
        self.cpu = {}
        for path in (self.src, self.state, self.logs, self.home):
            path.mkdir(parents=True, exist_ok=True)
        self.dst = None
        self.fresh()

    def fresh(self):
        """Names a new destination; before the first reset, the first one."""
        self.generation += 1
        self.dst_name = f"{self.name}-{self.generation}"
        if self.server.served is not None:
            self.dst = self.server.served / self.dst_name
        self.configure()

    def configure(self):
        pass

    def reset(self):
        core.set_aside((self.state,), self.base / "set-aside")
        self.state.mkdir(parents=True)
        self.fresh()
        self.make_destination()

    def make_destination(self):
        if self.dst is not None:
            self.dst.mkdir(parents=True)

    def prism_argv(self):
        return [self.bins / "prism-syncd", "--config", self.config, "--state-dir", self.state,
                "--device", "bench", "--once"]

    def write_prism_config(self, remote, extra=""):
        self.config = self.base / "config.toml"
        self.config.write_text(
            f'[agent]\ndevice = "bench"\n[[pair]]\nname = "bench"\n'
            f'local = "{self.src}"\nremote = "{remote}"\n{extra}')

    def scan_dst(self):
        """{path: digest} of the destination, and the digest function of
        its contents (core.digest where the files are read back)."""
        return core.scan(self.dst, self.skip_dst), core.digest

    def verify(self, expected):
        found, hashed = self.scan_dst()
        wanted = expected
        if hashed is not core.digest:
            wanted = {rel: hashed(core.CONTENTS[d]) for rel, d in expected.items()}
        core.compare_found(wanted, found, f"{self.name}: the destination {self.dst_name}")
        if self.two_way:
            core.compare(expected, self.src, self.skip_src | self.src_bookkeeping(), f"{self.name}: the source")

    def src_bookkeeping(self):
        return set()

    def sync(self, label, measure_rss=False):
        """Runs one sync as RemoteTool.sync does; its CPU time (the tool's
        and that of the processes it waited for) is kept in
        self.cpu[label], one figure per run."""
        used = core.children_cpu()
        result = RemoteTool.sync(self, label, measure_rss)
        self.cpu.setdefault(label, []).append(core.children_cpu() - used)
        return result


def md5(data):
    return hashlib.md5(data).hexdigest()


def git_blob(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --- s3


class PrismS3(StoreTool):
    prism = True

    def configure(self):
        self.prefix = self.dst_name
        self.write_prism_config(f"s3://{Seaweed.BUCKET}/{self.prefix}",
                                f'endpoint = "{self.server.endpoint()}"\nregion = "us-east-1"\n')
        self.env.update(AWS_ACCESS_KEY_ID=Seaweed.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=Seaweed.SECRET_KEY)

    def argv(self):
        return self.prism_argv()

    def daemon_argv(self, socket):
        return RemoteTool.daemon_argv(self, socket)

    def scan_dst(self):
        return s3_md5s(self.server, self.prefix), md5

    def read_dst(self, rel):
        return self.server.read(f"{self.prefix}/{rel}")


class RcloneS3(PrismS3):
    prism = False
    two_way = False

    def configure(self):
        self.prefix = self.dst_name
        self.env = rclone_env(self.env)

    def argv(self):
        return ["rclone", "sync", "--config", self.server.rclone_conf, f"{self.src}/",
                f"bench:{Seaweed.BUCKET}/{self.prefix}"]


def s3_md5s(server, prefix):
    """{path: MD5} of the objects under the prefix, from their ETags (every
    upload here is a single PUT, whose ETag is the MD5 of the content)."""
    listed = subprocess.run(["rclone", "md5sum", "--config", server.rclone_conf,
                             "--exclude", f"/{core.PRISM_REMOTE_META}/**",
                             f"bench:{Seaweed.BUCKET}/{prefix}"],
                            env=rclone_env(os.environ), capture_output=True, text=True)
    if listed.returncode != 0:
        raise Problem(f"rclone md5sum of s3 prefix {prefix} failed: {listed.stderr[-1000:]}")
    return dict(reversed(line.split("  ", 1)) for line in listed.stdout.splitlines() if line.strip())


# --- rclone (an sftp-backed rclone remote)


class PrismRclone(StoreTool):
    prism = True

    def configure(self):
        self.rclone_conf = self.server.root / "rclone.conf"
        self.write_prism_config(f"rclone:bench:{self.dst}", f'rclone_config = "{self.rclone_conf}"\n')
        self.env = rclone_env(self.env)

    def argv(self):
        return self.prism_argv()

    def daemon_argv(self, socket):
        return RemoteTool.daemon_argv(self, socket)


class Bisync(StoreTool):
    def configure(self):
        self.rclone_conf = self.server.root / "rclone.conf"
        self.env = rclone_env(self.env)
        # bisync's first run after a reset must be --resync: it has no
        # listing from a previous run yet.
        self.first = True

    def argv(self):
        argv = ["rclone", "bisync", "--config", self.rclone_conf, f"{self.src}", f"bench:{self.dst}",
                "--workdir", self.state / "bisync", "--sftp-disable-hashcheck"]
        if self.first:
            argv.append("--resync")
            self.first = False
        return argv


def write_sftp_rclone_conf(server):
    (server.root / "rclone.conf").write_text(
        f"[bench]\ntype = sftp\nhost = 127.0.0.1\nport = {server.port}\nuser = {server.user}\n"
        f"key_file = {server.root / 'client_key'}\nknown_hosts_file = {server.known_hosts}\n")


# --- git


class PrismGit(StoreTool):
    """prism on a bare repository reached over git+file:// or, through the
    suite's sshd, git+ssh:// (with GIT_SSH_COMMAND, as a user would set it:
    the git remote runs the git command line, which honours it)."""

    prism = True

    def configure(self):
        self.dst = self.server.served / f"{self.dst_name}.git"
        if self.server.transport == "ssh":
            # As most users set it up, an ssh config (theirs is
            # ~/.ssh/config), so git runs plain ssh and the agent shares one
            # connection between its git calls (a GIT_SSH_COMMAND of the
            # user's is run as written, without sharing).
            bin_dir = self.server.write_ssh_config(self.home)
            self.env["PATH"] = f"{bin_dir}:{self.env.get('PATH', os.defpath)}"
        else:
            self.env.update(self.server.git_env())
        self.write_prism_config(f"git+{self.server.git_url(self.dst)}", 'branch = "main"\n')

    def make_destination(self):
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", self.dst], check=True, env=self.env)

    def argv(self):
        return self.prism_argv()

    def daemon_argv(self, socket):
        return RemoteTool.daemon_argv(self, socket)

    def scan_dst(self):
        listed = subprocess.run(["git", "--git-dir", self.dst, "ls-tree", "-r", "-z", "main"],
                                capture_output=True, env=self.env)
        if listed.returncode != 0:
            raise Problem(f"git ls-tree of {self.dst} failed: {listed.stderr[-500:]!r}")
        found = {}
        for entry in listed.stdout.split(b"\0"):
            if entry:
                meta, path = entry.split(b"\t", 1)
                found[path.decode()] = meta.split()[2].decode()
        return found, git_blob

    def read_dst(self, rel):
        shown = subprocess.run(["git", "--git-dir", self.dst, "cat-file", "blob", f"main:{rel}"],
                               capture_output=True, env=self.env)
        return shown.stdout if shown.returncode == 0 else None


class GitLoop(PrismGit):
    """A checkout of its own bare repository, synced by `git add -A`, a
    commit when anything is staged, and `git push`."""

    prism = False

    def configure(self):
        self.dst = self.server.served / f"{self.dst_name}.git"
        self.env.update(self.server.git_env())
        self.env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
                        GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")

    def make_destination(self):
        super().make_destination()
        core.set_aside((self.src / ".git",), self.base / "set-aside")
        # Over file:// the remote is the repository's path, as before
        # (git's local transport); over ssh its ssh:// URL.
        origin = str(self.dst) if self.server.transport == "file" else self.server.git_url(self.dst)
        for argv in (["git", "init", "-q", "-b", "main"], ["git", "remote", "add", "origin", origin]):
            subprocess.run(argv, cwd=self.src, check=True, env=self.env)

    def argv(self):
        # `git commit` fails when nothing is staged: commit only when
        # something is, so that the no-op is a success.
        return ["sh", "-c", f"cd '{self.src}' && git add -A && {{ git diff --cached --quiet || "
                            "git commit -q -m x; } && git push -q origin main"]

    def src_bookkeeping(self):
        return {".git"}


class GitStatus:
    """`git status` on the git tool's checkout: what the no-op is compared
    with (it only looks, it syncs nothing)."""

    name = "git status"

    def __init__(self, checkout):
        self.checkout = checkout
        self.runs = 0
        self.cpu = {}

    def sync(self, label, measure_rss=False):
        self.runs += 1
        used = core.children_cpu()
        result = core.run_timed(["git", "-C", self.checkout.src, "status", "--porcelain"], self.checkout.env,
                                self.checkout.logs, f"status-{self.runs:03d}-{label}")
        self.cpu.setdefault(label, []).append(core.children_cpu() - used)
        return result

    def verify(self, expected):
        out = (self.checkout.logs / f"status-{self.runs:03d}-noop.out").read_text()
        if out.strip():
            raise Problem(f"git status on a synced checkout shows changes: {out[:500]}")


def measure_idle_poll(prism, idle_s, tree, problems):
    """The watching agent's no-op: prism-syncd on the synced git pair with
    `remote_poll_secs = 1`, left alone; the CPU time it and its git
    processes use over `idle_s` seconds, per poll, and the wall time of the
    git processes it ran (from their trace2 events), per poll. Then `git
    status --porcelain` is timed (wall and CPU, median of 5) on a warm
    checkout of the same tree: a clone of prism's repository. The measuring
    is bench/idle.py's. `tree` is what the pair holds ({path: content})."""
    import idle

    config = prism.base / "config-idle.toml"
    config.write_text(prism.config.read_text().replace("[agent]\n", "[agent]\nremote_poll_secs = 1\n", 1))
    trace = prism.logs / "idle-git-trace2.json"
    env = dict(prism.env, **idle.git_trace_env(trace))
    sock_dir = core.short_socket_dir()
    socket = sock_dir / "s"
    log = open(prism.logs / "idle-daemon.err", "wb")
    daemon = subprocess.Popen([prism.bins / "prism-syncd", "--config", config, "--state-dir", prism.state,
                               "--device", "bench", "--socket", socket],
                              env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    result = {}
    try:
        core.sync_and_wait(prism.bins / "prism-syncctl", socket, env, daemon, timeout=300)
        # The first polls after the start-up sync list the remote once
        # more; the idle ones follow.
        time.sleep(10)
        result = idle.poll_cost(daemon.pid, idle_s, int(idle_s), trace)
    except Problem as e:
        problems.append(f"idle poll: {e}")
    finally:
        if not core.stop_daemon(daemon):
            problems.append("idle poll: prism-syncd did not stop within 60 s of SIGTERM; killed")
        log.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    if daemon.returncode != 0:
        problems.append(f"idle poll: prism-syncd exited with {daemon.returncode} after SIGTERM "
                        f"(see {prism.logs / 'idle-daemon.err'})")
    try:
        prism.verify(core.manifest(tree))
        checkout = prism.base / "status-checkout"
        core.set_aside((checkout,), prism.base / "set-aside")
        subprocess.run(["git", "clone", "-q", "--branch", "main", str(prism.dst), str(checkout)],
                       check=True, capture_output=True, env=prism.env)
        wall, cpu = idle.git_status_times(checkout, prism.env)
        result["git_status_ms"] = round(1000 * wall, 2)
        result["git_status_cpu_ms"] = round(1000 * cpu, 2)
    except (Problem, subprocess.CalledProcessError) as e:
        problems.append(f"idle poll, git status on a clone of the same tree: {e}")
    return result


# --- crypt


class PrismCrypt(StoreTool):
    """prism on a file:// pair, encrypted (`prism`) or plain (`plain`)."""

    prism = True

    def configure(self):
        encrypted = self.name == "prism"
        self.write_prism_config(f"file://{self.dst}", 'encryption = "crypt"\n' if encrypted else "")
        if encrypted:
            self.env["PRISM_SYNC_CRYPT_PASSWORD"] = CRYPT_PASSWORD

    def argv(self):
        return self.prism_argv()

    def daemon_argv(self, socket):
        return RemoteTool.daemon_argv(self, socket)

    def scan_dst(self):
        if self.name != "prism":
            return super().scan_dst()
        return decrypted_scan(self, self.skip_dst), core.digest


class RcloneCrypt(StoreTool):
    two_way = False

    def configure(self):
        self.rclone_conf = self.base / "rclone.conf"
        self.rclone_conf.write_text(f"[bench]\ntype = crypt\nremote = {self.dst}\n"
                                    f"password = {rclone_obscure(CRYPT_PASSWORD)}\n")
        self.env = rclone_env(self.env)

    def argv(self):
        return ["rclone", "sync", "--config", self.rclone_conf, f"{self.src}/", "bench:"]

    def scan_dst(self):
        return decrypted_scan(self, set()), core.digest


def decrypted_scan(tool, skip):
    """Decrypts the tool's destination with rclone's crypt remote into a
    scratch folder and hashes that (prism's format is rclone's)."""
    conf = tool.base / "decrypt.conf"
    conf.write_text(f"[plain]\ntype = crypt\nremote = {tool.dst}\npassword = {rclone_obscure(CRYPT_PASSWORD)}\n")
    out = tool.base / "decrypted"
    core.set_aside((out,), tool.base / "set-aside")
    copied = subprocess.run(["rclone", "copy", "--config", conf, "--exclude", f"/{core.PRISM_REMOTE_META}/**",
                             "plain:", out], env=rclone_env(os.environ), capture_output=True, text=True)
    if copied.returncode != 0:
        raise Problem(f"rclone could not decrypt {tool.dst}: {copied.stderr[-1000:]}")
    out.mkdir(exist_ok=True)
    return core.scan(out, skip)


# ----------------------------------------------------------------------------
# The folder move


def measure_move(tools, server, runs, tree, problems, folder=None):
    """Renames one folder (by default the first, about 100 files) in each
    tool's source and times the sync, counting what the tool asked of the
    server. The folder goes back and forth between two names, one rename
    per run; after an odd number of runs it is renamed back and synced,
    untimed, so the tree is as before. Returns ({tool: [(seconds, None)]},
    {tool: [Counter]})."""
    folder = folder or sorted({rel.split("/")[0] for rel in tree})[0]
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
                if tool.requests.get("move"):
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

# What each suite runs: its tools (prism first; the class of each), whether
# it times a folder move and prism's latency with the daemon watching.
SUITES = {
    "sftp": {"tools": (("prism", RemoteTool), ("rsync", RemoteTool), ("unison", RemoteTool),
                       ("rclone", RemoteTool))},
    "webdav": {"tools": (("prism", RemoteTool), ("rclone", RemoteTool))},
    "s3": {"tools": (("prism", PrismS3), ("rclone", RcloneS3))},
    # The folder moved is one of 50 files, added to the usual workload.
    "rclone": {"tools": (("prism", PrismRclone), ("bisync", Bisync)), "move_folder": ("m50", 50)},
    "git": {"tools": (("prism", PrismGit), ("git", GitLoop)), "move": False},
    "crypt": {"tools": (("prism", PrismCrypt), ("plain", PrismCrypt), ("rclone", RcloneCrypt)),
              "move": False, "latency": False},
}
SUITE_TOOLS = {suite: tuple(name for name, _ in spec["tools"]) for suite, spec in SUITES.items()}


def start_server(suite, work, args):
    if suite in ("sftp", "rclone"):
        server = Sshd(work / "sshd")
        write_sftp_rclone_conf(server)
        return server
    if suite == "webdav":
        return Apache(work / "apache", args.dav_depth_infinity)
    if suite == "s3":
        return Seaweed(work / "seaweedfs")
    if suite == "git" and args.git_transport == "ssh":
        return GitSshd(work / "sshd")
    return Folders(work / "folders")


def run_suite(suite, args, bins, work, env):
    problems = []
    work.mkdir(parents=True)
    if suite == "webdav":
        # Apache's workers (www-data when started as root) must reach the
        # share inside the scratch folder, which mkdtemp made private.
        for path in (work.parent, work):
            os.chmod(path, 0o755)
    load_before = [round(x, 2) for x in os.getloadavg()]
    server = start_server(suite, work, args)
    try:
        return _run_suite(suite, args, bins, work, env, server, problems, load_before)
    finally:
        server.stop()


def _run_suite(suite, args, bins, work, env, server, problems, load_before):
    spec = SUITES[suite]
    tree = core.make_workload(args.files, args.dirs, args.seed)
    move_folder = None
    if "move_folder" in spec:
        move_folder, count = spec["move_folder"]
        extra = core.make_workload(count, 1, args.seed + 10)
        tree.update({f"{move_folder}/{rel.split('/', 1)[1]}": data for rel, data in extra.items()})
    changes = core.make_change_set(tree, args.seed)
    originals = {rel: tree[rel] for rel in changes}
    base = core.manifest(tree)
    changed = dict(base, **core.manifest(changes))
    names = SUITE_TOOLS[suite]
    tools = [cls(name, suite, server, work / "tools", bins, env) for name, cls in spec["tools"]]
    for tool in tools:
        core.write_files(tool.src, tree)
    where = f"server on 127.0.0.1:{server.port}" if hasattr(server, "port") else "no server"
    print(f"{suite}: {where}; wrote {len(tree)} files into each tool's source; "
          f"{len(changes)} files change per incremental run", flush=True)

    phases = {}
    phases["initial"] = core.measure_phase("initial", tools, args.runs, lambda t: t.reset(), base, problems)
    noop_tools = tools + ([GitStatus(tools[1])] if suite == "git" else [])
    phases["noop"] = core.measure_phase("noop", noop_tools, args.runs, lambda t: None, base, problems)

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
    move_counts = {}
    if spec.get("move", True):
        phases["move"], move_counts = measure_move(tools, server, args.runs, tree, problems, move_folder)
    latency = {"samples_ms": [], "timeouts": 0}
    held = dict(tree)
    if spec.get("latency", True):
        samples = args.remote_latency_samples
        print(f"  latency: {samples} changes with the daemon watching", flush=True)
        # `held` gains the files the latency phase writes.
        latency = core.measure_latency(tools[0], held, samples, args.seed, problems,
                                       changes=changes, originals=originals, runs=args.runs)
    idle_poll = None
    if suite == "git":
        print(f"  idle poll: {args.git_idle_secs:g} s of the daemon polling every second", flush=True)
        idle_poll = measure_idle_poll(tools[0], args.git_idle_secs, held, problems)
    load_after = [round(x, 2) for x in os.getloadavg()]
    summary = {phase: core.summarize(results) for phase, results in phases.items()}
    moved = move_folder or sorted(tree)[0].split("/")[0]
    report = {
        "suite": suite,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_after,
        "versions": versions(bins, suite, getattr(server, "transport", None) == "ssh"),
        "command": " ".join(sys.argv),
        "workload": {"files": len(tree), "dirs": len({rel.split("/")[0] for rel in tree}),
                     "bytes": sum(map(len, tree.values())), "changed_files": len(changes),
                     "moved_files": moved_files(tree, moved) if "move" in phases else None,
                     "seed": args.seed},
        "runs": args.runs,
        "dav_depth_infinity": suite == "webdav" and args.dav_depth_infinity,
        "tools": list(names),
        "phases": summary,
        "move_requests": {t: [dict(c) for c in cs] for t, cs in move_counts.items()},
        "requests": {t.name: {label: [dict(c) for c in cs] for label, cs in t.requests.items()} for t in tools},
        "requests_counted": server.log is not None,
        "latency": latency,
        "problems": problems,
    }
    if suite == "git":
        report["git_transport"] = server.transport
        # CPU seconds of each timed sync (the tool and the processes it
        # waited for: git, ssh), by phase.
        report["cpu_s"] = {t.name: {label: [round(c, 4) for c in cs] for label, cs in t.cpu.items()}
                           for t in noop_tools}
        report["idle_poll"] = idle_poll
        report["noop_vs_git_status"] = git_noop(report)
    report["targets"] = judge(suite, report)
    print_report(report)
    return report


def versions(bins, suite, args_git_ssh=False):
    def first_line(argv):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (proc.stdout or proc.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"
    out = {"prism": first_line([bins / "prism-syncd", "--version"]), "rclone": first_line(["rclone", "version"])}
    if suite == "sftp":
        out["rsync"] = first_line(["rsync", "--version"])
        out["unison"] = first_line(["unison", "-version"])
    if suite in ("sftp", "rclone") or suite == "git" and args_git_ssh:
        out["sshd"] = first_line(["ssh", "-V"])
    if suite == "webdav":
        out["apache"] = first_line([APACHE, "-v"])
    if suite == "s3":
        out["seaweedfs"] = first_line(["weed", "version"])
    if suite == "git":
        out["git"] = first_line(["git", "--version"])
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
        return "not counted"
    keys = set().union(*counts)
    shown = {k: median([c.get(k, 0) for c in counts]) for k in keys}
    shown = {k: v for k, v in shown.items() if v}
    return ", ".join(f"{k} {v:g}" for k, v in sorted(shown.items())) or "nothing"


def judge(suite, report):
    phases, lat, t = report["phases"], report["latency"], TARGETS[suite]

    def verdict(ok):
        return "not measured" if ok is None else ("met" if ok else "MISSED")

    def ratio_target(phase, other, limit):
        value = core.ratio(phases[phase]["prism"]["median_s"], (phases[phase].get(other) or {}).get("median_s"))
        return {"name": f"{'no-op' if phase == 'noop' else phase} <= {limit}x {other}", "value": value,
                "actual": f"{core.fmt(value, '.2f')}x", "verdict": verdict(None if value is None else value <= limit)}

    out = []
    initial = t.get("initial", [])
    for other, limit in initial if isinstance(initial, list) else [initial]:
        out.append(ratio_target("initial", other, limit))
    if suite == "git":
        # An agent's no-op is its idle poll; the --once run, which has no
        # watch to vouch for the local folder and scans it, for reference.
        noop, limit = git_noop(report), t["noop"][1]
        for what in ("cpu", "wall"):
            value = noop["poll"][f"{what}_ratio"]
            name = f"no-op, watching (idle poll) <= {limit}x git status, {'CPU' if what == 'cpu' else 'wall'}"
            out.append({"name": name, "value": value, "actual": f"{core.fmt(value, '.2f')}x",
                        "verdict": verdict(None if value is None else value <= limit)})
        out.append({"name": f"  (--once: wall {core.fmt(noop['once']['wall_ratio'], '.2f')}x, "
                            f"CPU {core.fmt(noop['once']['cpu_ratio'], '.2f')}x)",
                    "value": [noop["once"]["wall_ratio"], noop["once"]["cpu_ratio"]],
                    "actual": "", "verdict": "for reference"})
    elif "noop" in t:
        noop = t["noop"]
        for other, limit in noop if isinstance(noop, list) else [noop]:
            out.append(ratio_target("noop", other, limit))
    for other, limit in t.get("incremental_once", []):
        target = ratio_target("incremental", other, limit)
        target["name"] = f"incremental --once <= {limit}x {other}"
        out.append(target)
    if "incremental" in t:
        inc_tool, inc_limit = t["incremental"]
        inc = core.ratio(watched_median(report), phases["incremental"][inc_tool]["median_s"])
        inc_once = core.ratio(phases["incremental"]["prism"]["median_s"], phases["incremental"][inc_tool]["median_s"])
        out.append({"name": f"incremental (watching) <= {inc_limit}x {inc_tool}", "value": inc,
                    "actual": f"{core.fmt(inc, '.2f')}x", "verdict": verdict(None if inc is None else inc <= inc_limit)})
        out.append({"name": f"  (same with --once: {core.fmt(inc_once, '.2f')}x)", "value": inc_once,
                    "actual": "", "verdict": "for reference"})
    counts = report["move_requests"].get("prism", [])
    if suite == "sftp":
        renames = [c.get("rename", 0) for c in counts]
        uploads = [c.get("open for write", 0) for c in counts]
        move_ok = bool(counts) and all(r == 1 for r in renames) and not any(uploads)
        out.append({"name": "folder move = 1 remote rename, 0 uploads", "value": move_ok,
                    "actual": f"renames {renames}, uploads {uploads}", "verdict": verdict(move_ok if counts else None)})
    elif suite == "rclone":
        # prism's rclone remote uploads into .prism-sync/ and renames into
        # place, so an upload of a moved file would be a write there: a
        # move is clean when those writes stay below the files moved (a
        # sync that changes anything writes a few records there too). A
        # backend without a folder move may rename each file instead.
        moved = report["workload"]["moved_files"]
        renames = [c.get("rename", 0) for c in counts]
        uploads = [c.get("open for write", 0) for c in counts]
        staged = [c.get("open for write (.prism-sync)", 0) for c in counts]
        move_ok = (bool(counts) and all(r in (1, moved) for r in renames) and not any(uploads)
                   and all(s < moved for s in staged))
        out.append({"name": "folder move = 1 rename (or 1 a file), no upload", "value": move_ok,
                    "actual": f"renames {renames}, uploads {uploads}, writes in .prism-sync {staged}",
                    "verdict": verdict(move_ok if counts else None)})
    elif suite == "webdav":
        moves = [c.get("MOVE", 0) for c in counts]
        puts = [c.get("PUT", 0) for c in counts]
        move_ok = bool(counts) and all(m == 1 for m in moves) and not any(puts)
        out.append({"name": "folder move = 1 MOVE, 0 PUTs (outside .prism-sync)", "value": move_ok,
                    "actual": f"MOVEs {moves}, PUTs {puts}", "verdict": verdict(move_ok if counts else None)})
    if "latency_median_ms" in t:
        med = lat.get("median_ms")
        out.append({"name": f"latency median <= {t['latency_median_ms']:g} ms", "value": med,
                    "actual": f"{core.fmt(med, '.1f')} ms",
                    "verdict": verdict(None if med is None else med <= t["latency_median_ms"])})
    return out


def git_noop(report):
    """The git suite's no-op against `git status --porcelain` on a warm
    checkout of the same tree, wall and CPU: the `--once` run (medians of
    the no-op phase, where `git status` runs on the git tool's checkout in
    the same rotation) and the watching agent's idle poll (per poll, against
    `git status` timed right after on a clone of prism's repository). CPU is
    the tool's and its children's (git, ssh), not the server side's."""
    noop, cpu = report["phases"]["noop"], report.get("cpu_s", {})
    once = {"wall_s": noop["prism"]["median_s"], "cpu_s": median(cpu.get("prism", {}).get("noop", [])),
            "status_wall_s": (noop.get("git status") or {}).get("median_s"),
            "status_cpu_s": median(cpu.get("git status", {}).get("noop", []))}
    idle_poll = report.get("idle_poll") or {}

    def seconds(key):
        return None if idle_poll.get(key) is None else idle_poll[key] / 1000

    # The poll's wall: the median poll when each was one ls-remote, else
    # the mean over the window; its CPU is the mean (the window's total).
    wall = seconds("poll_wall_median_ms") if "poll_wall_median_ms" in idle_poll else seconds("git_wall_ms_per_poll")
    poll = {"wall_s": wall, "cpu_s": seconds("cpu_ms_per_poll"),
            "status_wall_s": seconds("git_status_ms"), "status_cpu_s": seconds("git_status_cpu_ms"),
            "polls": idle_poll.get("polls"), "git_calls": idle_poll.get("git_calls")}
    for row in (once, poll):
        row["wall_ratio"] = core.ratio(row["wall_s"], row["status_wall_s"])
        row["cpu_ratio"] = core.ratio(row["cpu_s"], row["status_cpu_s"])
    return {"once": once, "poll": poll}


def print_git_noop(report):
    noop = git_noop(report)

    def ms(value):
        return core.fmt(None if value is None else 1000 * value, "10.1f")

    print()
    print("no-op against `git status --porcelain` on a warm checkout of the same tree (medians):")
    print(f"  {'':44}{'wall ms':>10}{'CPU ms':>10}{'wall':>9}{'CPU':>9}")
    for label, row in (("prism --once", noop["once"]), ("prism watching: one idle poll", noop["poll"])):
        print(f"  {label:44}{ms(row['wall_s'])}{ms(row['cpu_s'])}"
              f"{core.fmt(row['wall_ratio'], '8.2f')}x{core.fmt(row['cpu_ratio'], '8.2f')}x")
        print(f"  {'  git status, timed with it':44}{ms(row['status_wall_s'])}{ms(row['status_cpu_s'])}")
    poll = noop["poll"]
    print(f"  idle poll: {poll['polls']} polls in {(report.get('idle_poll') or {}).get('idle_s')} s, git calls "
          f"{poll['git_calls']}; wall: the median poll's git processes (trace2), CPU: the agent's and "
          "theirs, mean per poll")


def print_report(report):
    names = report["tools"]
    phases, lat, w = report["phases"], report["latency"], report["workload"]
    others = [n for n in names if n != "prism"]
    watching = "latency_median_ms" in TARGETS[report["suite"]]
    where = "loopback server" if report["suite"] not in ("git", "crypt") else "destinations on the same disk"
    if report.get("git_transport") == "ssh":
        where = "bare repositories over ssh:// on a loopback sshd"
    elif report["suite"] == "git":
        where = "bare repositories over file:// on the same disk"
    print()
    print(f"Prism Sync {report['suite'].upper()} benchmark: {w['files']} files in {w['dirs']} folders, "
          f"{w['bytes'] / 2**20:.1f} MiB, median of {report['runs']} runs, {where}")
    print(f"load average before {report['load_before']}, after {report['load_after']} on {report['cpus']} CPUs")
    if report["suite"] == "webdav":
        print(f"Apache allows PROPFIND Depth: infinity: {'yes' if report['dav_depth_infinity'] else 'no (its default)'}")
    if report["suite"] == "crypt":
        print("prism = the encrypted file:// pair, plain = the same pair unencrypted, rclone = rclone sync "
              "into a crypt remote over a folder")
    print()
    header = f"{'':30}" + "".join(f"{n:>10}" for n in names) + "".join(f"{'prism/' + n:>14}" for n in others)
    print(header)
    print("-" * len(header))

    def row(label, m):
        print(f"{label:30}" + "".join(core.fmt(m[n], "10.3f") for n in names)
              + "".join(f"{core.fmt(core.ratio(m['prism'], m[n]), '13.2f')}x" for n in others))

    rows = [("initial", "initial sync (s)"), ("noop", "no-op resync (s)"),
            ("incremental", "incremental 1%, --once (s)" if watching else "incremental 1% (s)")]
    for key, label in rows:
        row(label, {n: phases[key][n]["median_s"] for n in names})
    if watching:
        inc = {n: phases["incremental"][n]["median_s"] for n in names}
        row("incremental 1%, watching (s)", dict(inc, prism=watched_median(report)))
        row("  ... with the writing (s)",
            dict(inc, prism=median(lat.get("watched_incremental_with_writing_s") or [])))
    if "move" in phases:
        row(f"folder move, {w['moved_files']} files (s)", {n: phases["move"][n]["median_s"] for n in names})
    if watching:
        print(f"{'latency median (ms)':30}" + core.fmt(lat.get("median_ms"), "10.1f"))
        print(f"{'latency p99 (ms)':30}" + core.fmt(lat.get("p99_ms"), "10.1f"))
    if report["suite"] == "git":
        print_git_noop(report)
    print()
    if report.get("requests_counted", True):
        print("ssh logins per sync (median run; sshd's log):" if report["suite"] == "git" else
              "requests on the server per sync (median run; sftp-server's log, Apache's access log, rsync's --stats):")
        for phase in ("initial", "noop", "incremental", "move"):
            if phase not in phases:
                continue
            label = phase if phase != "move" else f"move ({w['moved_files']} files)"
            for n in names:
                print(f"  {label:18} {n:7} {move_summary([collections.Counter(c) for c in report['requests'][n].get(phase, [])])}")
    if report["suite"] == "git":
        print("git = `git add -A && { git diff --cached --quiet || git commit -q -m x; } && git push -q` "
              "on a checkout of its own bare repository")
        if report.get("git_transport") == "ssh":
            print("over ssh://: the bare repositories served by a loopback sshd; prism logs in through an ssh "
                  "config of its own (plain ssh: the agent shares one connection between its calls), git with "
                  "GIT_SSH_COMMAND (the client key, known_hosts, -F /dev/null, BatchMode=yes)")
    if report["suite"] == "rclone":
        print("bisync runs with --sftp-disable-hashcheck (rclone at its fastest); its first run after a "
              "reset is --resync")
    if watching:
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
