//! A real Apache httpd with mod_dav for the WebDAV tests:
//! `apache2 -f CONFIG -DFOREGROUND` with a standalone config in a temporary
//! folder, listening on free loopback ports: plain HTTP and HTTPS (mod_ssl,
//! with a certificate signed by a throwaway CA the harness makes with
//! `openssl`).
//!
//! It serves two shares: `/open/` without authentication and `/auth/` behind
//! Basic auth for [`Apache::USER`] with [`Apache::PASSWORD`] (an `htpasswd`
//! file in the temporary folder). Started as root, Apache refuses to serve
//! as root, so its workers run as `www-data` and the shares belong to that
//! user; files a test writes into a share directly must be handed over with
//! [`Apache::hand_over`]. A folder `locked` one level below `/open/`
//! (`/open/NAME/locked/`) may be read but not written: Apache answers 403
//! there. Folders one level below `/open/` whose names start with `deep`
//! (`/open/deep…/`) allow PROPFIND with `Depth: infinity`
//! (`DavDepthInfinity on`), which Apache refuses elsewhere, as it does by
//! default. Every request is logged twice: with its `Depth` (see
//! [`Apache::requests`]) and with its `Range` headers and the bytes sent
//! (see [`Apache::access_log`]). No system file is changed. A missing apache2 fails
//! the test with a message saying what to install; it never skips. The
//! server is stopped when the harness is dropped.

use std::fs;
use std::io::Read;
use std::net::TcpStream;

use crate::ports::free_port;
use crate::processes::descendants;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const APACHE: &str = "/usr/sbin/apache2";
const MODULES: &str = "/usr/lib/apache2/modules";
const SERVER_USER: &str = "www-data";

/// The two shares the server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// `/open/`: anyone may read and write.
    Open,
    /// `/auth/`: Basic auth as [`Apache::USER`].
    Auth,
}

impl Share {
    fn name(self) -> &'static str {
        match self {
            Share::Open => "open",
            Share::Auth => "auth",
        }
    }
}

/// One running Apache and everything it needs.
pub struct Apache {
    dir: tempfile::TempDir,
    port: u16,
    tls_port: u16,
    child: Option<Child>,
}

impl Apache {
    pub const USER: &'static str = "alice";
    pub const PASSWORD: &'static str = "correct horse battery staple";

    /// Starts a server on free loopback ports and waits until both accept.
    pub fn start() -> Apache {
        assert!(
            Path::new(APACHE).exists(),
            "{APACHE} is missing: install the apache2 and apache2-utils packages \
             (apt-get install apache2 apache2-utils) to run the WebDAV tests"
        );
        let dir = tempfile::tempdir().expect("a temp dir for apache");
        let root = dir.path();
        // The workers run as www-data and must reach the shares inside.
        set_mode(root, 0o755);
        for share in [Share::Open, Share::Auth] {
            fs::create_dir_all(root.join("www").join(share.name())).unwrap();
        }
        fs::create_dir_all(root.join("lock")).unwrap();
        let status = Command::new("htpasswd")
            .args(["-bc"])
            .arg(root.join("htpasswd"))
            .args([Self::USER, Self::PASSWORD])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("htpasswd is missing: install the apache2-utils package");
        assert!(status.success(), "htpasswd failed");
        make_certificates(root);
        let mut apache = Apache {
            dir,
            port: free_port(),
            tls_port: free_port(),
            child: None,
        };
        Apache::give_to_server(&apache.dir.path().join("www"));
        Apache::give_to_server(&apache.dir.path().join("lock"));
        apache.write_config();
        apache.restart();
        apache
    }

    fn write_config(&self) {
        let root = self.dir.path().display().to_string();
        let modules = [
            ("mpm_event_module", "mod_mpm_event.so"),
            ("authz_core_module", "mod_authz_core.so"),
            ("authn_core_module", "mod_authn_core.so"),
            ("authn_file_module", "mod_authn_file.so"),
            ("auth_basic_module", "mod_auth_basic.so"),
            ("authz_user_module", "mod_authz_user.so"),
            ("dav_module", "mod_dav.so"),
            ("dav_fs_module", "mod_dav_fs.so"),
            ("ssl_module", "mod_ssl.so"),
            ("filter_module", "mod_filter.so"),
            ("deflate_module", "mod_deflate.so"),
        ];
        let mut config = String::new();
        for (name, file) in modules {
            config.push_str(&format!("LoadModule {name} {MODULES}/{file}\n"));
        }
        if is_root() {
            config.push_str(&format!("User {SERVER_USER}\nGroup {SERVER_USER}\n"));
        }
        config.push_str(&format!(
            "ServerRoot {root}\n\
             ServerName 127.0.0.1\n\
             Listen 127.0.0.1:{port}\n\
             Listen 127.0.0.1:{tls_port}\n\
             PidFile {root}/httpd.pid\n\
             ErrorLog {root}/error.log\n\
             LogLevel info\n\
             LogFormat \"%m %U %>s %B range=%{{Range}}i if-range=%{{If-Range}}i\" transfers\n\
             CustomLog {root}/access.log transfers\n\
             LogFormat \"%m %U %{{Depth}}i %>s\" dav\n\
             CustomLog {root}/requests.log dav\n\
             LogFormat \"%m %U %>s %{{Content-Encoding}}o %O\" encodings\n\
             CustomLog {root}/encodings.log encodings\n\
             SetOutputFilter DEFLATE\n\
             DefaultRuntimeDir {root}\n\
             Mutex file:{root} default\n\
             DAVLockDB {root}/lock/davlock\n\
             DocumentRoot {root}/www\n\
             KeepAlive On\n\
             KeepAliveTimeout 15\n\
             <Directory {root}/www/open>\n\
               Dav On\n\
               Require all granted\n\
             </Directory>\n\
             <Directory {root}/www/open/deep*>\n\
               DavDepthInfinity on\n\
             </Directory>\n\
             <Directory {root}/www/open/*/locked>\n\
               <LimitExcept GET HEAD OPTIONS PROPFIND>\n\
                 Require all denied\n\
               </LimitExcept>\n\
             </Directory>\n\
             <Directory {root}/www/auth>\n\
               Dav On\n\
               AuthType Basic\n\
               AuthName prism\n\
               AuthUserFile {root}/htpasswd\n\
               Require valid-user\n\
             </Directory>\n\
             <VirtualHost 127.0.0.1:{tls_port}>\n\
               SSLEngine on\n\
               SSLCertificateFile {root}/server.crt\n\
               SSLCertificateKeyFile {root}/server.key\n\
             </VirtualHost>\n",
            port = self.port,
            tls_port = self.tls_port,
        ));
        fs::write(self.dir.path().join("httpd.conf"), config).unwrap();
    }

    /// Starts the server (again, after [`Apache::stop`]) on the same ports
    /// and waits until they accept.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "apache is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("console.log"))
            .unwrap();
        let child = Command::new(APACHE)
            .arg("-f")
            .arg(self.dir.path().join("httpd.conf"))
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {APACHE}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.tls_port)).is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "apache2 exited with {status} before accepting:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "apache2 did not accept on port {} within 10 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server: SIGTERM to the parent, which stops its workers;
    /// the workers are killed too if they are still there after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let workers = descendants(child.id() as i32);
        // SAFETY: kill(2) of the process this harness started.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in workers.into_iter().chain([child.id() as i32]) {
            // SAFETY: kill(2) of a process this harness started or one of
            // its children; a process already gone makes it a no-op.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = child.wait();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The folder on disk behind a share.
    pub fn served(&self, share: Share) -> PathBuf {
        self.dir.path().join("www").join(share.name())
    }

    /// The `webdav://` URL of `below` inside a share (`below` may be empty).
    pub fn url(&self, share: Share, below: &str) -> String {
        format!(
            "webdav://127.0.0.1:{}{}",
            self.port,
            share_path(share, below)
        )
    }

    /// The CA that signed the HTTPS listener's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Gives a path the test wrote into a share (and everything below it)
    /// to the user the server runs as, as if the server had written it.
    pub fn hand_over(&self, path: &Path) {
        Apache::give_to_server(path);
    }

    /// [`Apache::hand_over`] without the harness at hand: the user the
    /// server runs as is the same for every Apache the tests start.
    pub fn give_to_server(path: &Path) {
        if !is_root() {
            return;
        }
        let (uid, gid) = server_ids();
        let mut stack = vec![path.to_path_buf()];
        while let Some(path) = stack.pop() {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).unwrap();
            if path.is_dir() && !path.is_symlink() {
                stack.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
        }
    }

    /// The requests answered so far, one line each: method, path, `Depth`
    /// header (`-` when there is none) and status, e.g.
    /// `PROPFIND /open/x/ infinity 207`.
    pub fn requests(&self) -> Vec<String> {
        self.settled_log("requests.log")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// What apache logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for name in ["console.log", "error.log"] {
            if let Ok(mut file) = fs::File::open(self.dir.path().join(name)) {
                let _ = file.read_to_string(&mut text);
            }
        }
        text
    }

    /// The answers' encodings: one line per request, `METHOD PATH STATUS
    /// CONTENT-ENCODING BYTES` (`-` for no encoding; the bytes sent,
    /// headers included).
    pub fn encodings(&self) -> Vec<String> {
        self.settled_log("encodings.log")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The access log: one line per request, `METHOD PATH STATUS BYTES
    /// range=RANGE if-range=IF-RANGE` (the body bytes sent, and the
    /// request's `Range` and `If-Range` headers, `-` when absent).
    pub fn access_log(&self) -> String {
        self.settled_log("access.log")
    }

    /// The log `name` once it stopped growing: Apache writes a request's
    /// line after its answer is sent, so the line of a request the client
    /// has just seen answered can land a moment later.
    fn settled_log(&self, name: &str) -> String {
        let path = self.dir.path().join(name);
        let read = || fs::read_to_string(&path).unwrap_or_default();
        let mut text = read();
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(30));
            let again = read();
            if again == text {
                break;
            }
            text = again;
        }
        text
    }

    /// A folder for the test's own files (configs, local folders).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join("scratch").join(name);
        fs::create_dir_all(&path).unwrap();
        path
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        self.stop();
    }
}

fn share_path(share: Share, below: &str) -> String {
    if below.is_empty() {
        format!("/{}/", share.name())
    } else {
        format!("/{}/{below}", share.name())
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it (EC P-256).
fn make_certificates(root: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(root)
            .output()
            .expect("openssl is missing: install the openssl package");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Prism Test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(
        root.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the user the server runs as.
fn server_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .arg(flag)
            .arg(SERVER_USER)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the user {SERVER_USER} is missing (apache2 creates it)"))
    };
    (id("-u"), id("-g"))
}
