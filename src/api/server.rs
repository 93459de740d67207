//! The local-socket server: binds the owner-only socket (replacing a stale
//! one, refusing to displace a live agent), accepts connections, and runs
//! each connection on its own task, reading frames and answering them
//! through [`handlers`].
//!
//! A misbehaving client can only hurt its own connection: a bad frame gets
//! the spec's error object and the connection is closed; a client that stops
//! sending is dropped after a timeout; nothing a client does reaches the
//! accept loop. The server knows no endpoint; routing is `handlers`' job.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{ConnectOptions, GenericFilePath, ListenerOptions, ToFsName};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use super::framing::{self, FrameError, MAX_REQUEST_BYTES, ResponseEnvelope};
use super::{ApiError, Control, handlers};

/// How long a connection may stay silent between requests before the
/// server closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request frame, once begun, may take to arrive in full, and
/// how long writing one response may take.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "another prism-syncd is already running and answering at {}; stop it first, \
         or give this one a different --socket",
        socket.display()
    )]
    AlreadyRunning { socket: PathBuf },
    #[error("cannot create the socket directory {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error(
        "{} exists and is not a socket; move it away or give the agent a different --socket",
        path.display()
    )]
    NotASocket { path: PathBuf },
    #[error("cannot remove the stale socket {} left by an agent that is gone: {source}", path.display())]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot listen on {}: {source}", socket.display())]
    Bind { socket: PathBuf, source: io::Error },
    #[error("cannot make the socket {} private to its owner: {source}", socket.display())]
    Permissions { socket: PathBuf, source: io::Error },
}

/// A listening socket, not yet serving. Binding first lets the daemon find
/// out that another agent is running before it opens the journal. Dropping
/// it removes the socket file.
#[derive(Debug)]
pub struct Bound {
    listener: Listener,
    socket: PathBuf,
}

/// Binds and serves until `shutdown` completes: [`bind`], then
/// [`Bound::serve`].
pub async fn serve(
    socket: &Path,
    control: Arc<dyn Control>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    bind(socket)?.serve(control, shutdown).await;
    Ok(())
}

/// Creates the socket at `socket`, owner-only (mode 0600; a parent
/// directory it creates gets 0700). A socket file nobody answers on is a
/// leftover of a crashed agent and is replaced; one that answers means
/// another agent runs there, and binding fails with
/// [`ServeError::AlreadyRunning`]. Must be called inside a Tokio runtime.
pub fn bind(socket: &Path) -> Result<Bound, ServeError> {
    prepare_path(socket)?;
    let listener = listen(socket)?;
    restrict_permissions(socket)?;
    Ok(Bound {
        listener,
        socket: socket.to_owned(),
    })
}

impl Bound {
    /// Where the socket is.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Accepts connections until `shutdown` completes, then stops accepting,
    /// drops the connections still open and removes the socket file.
    pub async fn serve(self, control: Arc<dyn Control>, shutdown: impl Future<Output = ()>) {
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(stream) => {
                        connections.spawn(serve_connection(stream, Arc::clone(&control)));
                    }
                    Err(err) => {
                        // Typically EMFILE: too many open files. Pause
                        // briefly instead of spinning; open connections
                        // finishing will free descriptors.
                        tracing::warn!(socket = %self.socket.display(), error = %err,
                            "cannot accept a control connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
    }
}

/// Makes sure the socket's directory exists and nothing live sits at the
/// socket path.
fn prepare_path(socket: &Path) -> Result<(), ServeError> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        create_private_dir(dir).map_err(|source| ServeError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
    }
    let Ok(meta) = std::fs::symlink_metadata(socket) else {
        return Ok(());
    };
    if !is_socket(&meta) {
        return Err(ServeError::NotASocket {
            path: socket.to_owned(),
        });
    }
    if answers(socket) {
        return Err(ServeError::AlreadyRunning {
            socket: socket.to_owned(),
        });
    }
    // RACE: two agents starting at the same instant may both find the file
    // stale; the second one's removal can then unlink the first one's fresh
    // socket. The daemon's journal lock is what keeps two agents apart.
    std::fs::remove_file(socket).map_err(|source| ServeError::RemoveStale {
        path: socket.to_owned(),
        source,
    })
}

/// Whether something accepts connections on `socket` right now.
fn answers(socket: &Path) -> bool {
    socket
        .to_fs_name::<GenericFilePath>()
        .and_then(|name| ConnectOptions::new().name(name).connect_sync())
        .is_ok()
}

fn listen(socket: &Path) -> Result<Listener, ServeError> {
    let bind_error = |source: io::Error| match source.kind() {
        io::ErrorKind::AddrInUse => ServeError::AlreadyRunning {
            socket: socket.to_owned(),
        },
        _ => ServeError::Bind {
            socket: socket.to_owned(),
            source,
        },
    };
    let options = || -> io::Result<ListenerOptions<'_>> {
        let name = socket.to_fs_name::<GenericFilePath>()?;
        Ok(ListenerOptions::new().name(name).try_overwrite(false))
    };
    #[cfg(unix)]
    {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        // Setting the mode before bind() leaves no moment in which others
        // could connect. Where the platform cannot do that, fall back to the
        // chmod in `restrict_permissions` right after binding.
        match options().and_then(|o| o.mode(0o600).create_tokio()) {
            Err(err) if err.kind() == io::ErrorKind::Unsupported => {}
            result => return result.map_err(bind_error),
        }
    }
    options().and_then(|o| o.create_tokio()).map_err(bind_error)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn is_socket(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_socket()
}

#[cfg(not(unix))]
fn is_socket(_meta: &std::fs::Metadata) -> bool {
    true
}

#[cfg(unix)]
fn restrict_permissions(socket: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ServeError::Permissions {
            socket: socket.to_owned(),
            source,
        }
    })
}

#[cfg(not(unix))]
fn restrict_permissions(_socket: &Path) -> Result<(), ServeError> {
    Ok(())
}

/// Answers requests on one connection, one after another, until the client
/// closes it, goes quiet, or sends something that breaks the framing.
async fn serve_connection(mut stream: Stream, control: Arc<dyn Control>) {
    loop {
        let frame =
            framing::read_frame(&mut stream, MAX_REQUEST_BYTES, IDLE_TIMEOUT, FRAME_TIMEOUT).await;
        let (response, keep_open) = match frame {
            Ok(None) => return,
            Ok(Some(payload)) => (handlers::handle(&control, &payload).await, true),
            Err(err) => match frame_error(&err) {
                Some(api_error) => (handlers::error_response(&api_error), false),
                None => return,
            },
        };
        if let Err(err) = write_response(&mut stream, &response).await {
            tracing::debug!(error = %err, "could not answer a control client");
            return;
        }
        if !keep_open {
            return;
        }
    }
}

/// The answer to a frame that could not be read, if the client can still
/// be told anything.
fn frame_error(err: &FrameError) -> Option<ApiError> {
    match err {
        FrameError::TooLarge { len, max } => Some(
            ApiError::new(413, "Request too large").with_details(format!(
                "the request announces {len} bytes; the agent accepts at most {max}"
            )),
        ),
        FrameError::Truncated { expected } => Some(
            ApiError::bad_request("Truncated request frame").with_details(format!(
                "the connection ended before the {expected} bytes the frame announced arrived"
            )),
        ),
        FrameError::TimedOut(limit) => Some(ApiError::new(408, "Request timed out").with_details(
            format!("the request frame did not arrive in full within {limit:?}"),
        )),
        FrameError::Closed | FrameError::Io(_) => None,
    }
}

async fn write_response(stream: &mut Stream, response: &ResponseEnvelope) -> io::Result<()> {
    let payload = serde_json::to_vec(response)?;
    let frame = framing::encode_frame(&payload);
    let write = async {
        stream.write_all(&frame).await?;
        stream.flush().await
    };
    tokio::time::timeout(FRAME_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}
