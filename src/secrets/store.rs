//! The OS secret store, through the `keyring` crate: the Secret Service
//! over D-Bus on Linux (GNOME Keyring, KWallet, KeePassXC…), the login
//! Keychain on macOS. Elsewhere there is none and every call says so.
//!
//! Every item has the service [`SERVICE`] and the account's key
//! (`sftp://user@host:port`, `webdav://user@host:port`) as its user.
//!
//! Each call runs on a helper thread and is given [`TIMEOUT`]: a locked
//! collection can make the store wait for a person to type a password into
//! a prompt that a headless agent never shows, and a login must not hang on
//! that forever.

use std::sync::mpsc;
use std::time::Duration;

use super::Secret;

/// The service name of every item Prism Sync keeps in the secret store.
pub const SERVICE: &str = "prism-sync";

/// How long one call to the secret store may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Why the secret store did not answer. Never holds a secret.
#[derive(Debug)]
pub enum StoreError {
    /// There is no secret store to talk to: no D-Bus session bus, no
    /// Secret Service on it, or no store on this platform. Normal on a
    /// headless server; the credentials file is used instead.
    Unreachable(String),
    /// A store answered but refused or failed: locked, access denied, or
    /// several items for one account.
    Failed(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unreachable(why) => write!(f, "no secret store is reachable ({why})"),
            StoreError::Failed(why) => write!(f, "the secret store failed: {why}"),
        }
    }
}

/// The password kept for `key`, or `None` when the store has no item for it.
pub fn get(key: &str) -> Result<Option<Secret>, StoreError> {
    let key = key.to_owned();
    with_timeout(move || imp::get(&key))
}

/// Stores `secret` for `key`, replacing an older one.
pub fn set(key: &str, secret: &Secret) -> Result<(), StoreError> {
    let key = key.to_owned();
    let secret = secret.clone();
    with_timeout(move || imp::set(&key, &secret))
}

/// Removes the item for `key`; `false` when there was none.
pub fn delete(key: &str) -> Result<bool, StoreError> {
    let key = key.to_owned();
    with_timeout(move || imp::delete(&key))
}

fn with_timeout<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("secret-store".into())
        .spawn(move || {
            let _ = tx.send(call());
        });
    if let Err(e) = spawned {
        return Err(StoreError::Failed(format!("cannot start a thread: {e}")));
    }
    match rx.recv_timeout(TIMEOUT) {
        Ok(result) => result,
        // The helper thread is left to finish or hang on its own; it holds
        // nothing the caller waits for.
        Err(_) => Err(StoreError::Failed(format!(
            "no answer within {} s (is the keyring locked and waiting for a prompt?)",
            TIMEOUT.as_secs()
        ))),
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
mod imp {
    use keyring::{Entry, Error};

    use super::{SERVICE, Secret, StoreError};

    fn entry(key: &str) -> Result<Entry, StoreError> {
        Entry::new(SERVICE, key).map_err(classify)
    }

    pub fn get(key: &str) -> Result<Option<Secret>, StoreError> {
        match entry(key)?.get_password() {
            Ok(password) => Ok(Some(Secret::new(password))),
            Err(Error::NoEntry) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    pub fn set(key: &str, secret: &Secret) -> Result<(), StoreError> {
        entry(key)?.set_password(secret.expose()).map_err(classify)
    }

    pub fn delete(key: &str) -> Result<bool, StoreError> {
        match entry(key)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(Error::NoEntry) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    /// keyring reports every D-Bus-level failure, not reaching a bus or a
    /// Secret Service on it among them, as `PlatformFailure`; a store that
    /// answered but is locked or refused is `NoStorageAccess`. Neither
    /// message can hold the secret: the password is never part of a
    /// request that can fail this way.
    fn classify(e: Error) -> StoreError {
        match e {
            Error::PlatformFailure(inner) => StoreError::Unreachable(inner.to_string()),
            Error::NoStorageAccess(inner) => {
                StoreError::Failed(format!("it is locked or refused access ({inner})"))
            }
            Error::Ambiguous(items) => StoreError::Failed(format!(
                "it holds {} items for this account; remove them with `prism-syncctl password remove`",
                items.len()
            )),
            other => StoreError::Failed(other.to_string()),
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod imp {
    use super::{Secret, StoreError};

    fn none() -> StoreError {
        StoreError::Unreachable("this platform has no secret store Prism Sync can use".into())
    }

    pub fn get(_key: &str) -> Result<Option<Secret>, StoreError> {
        Err(none())
    }

    pub fn set(_key: &str, _secret: &Secret) -> Result<(), StoreError> {
        Err(none())
    }

    pub fn delete(_key: &str) -> Result<bool, StoreError> {
        Err(none())
    }
}
