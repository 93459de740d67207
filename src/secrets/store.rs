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

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
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
    with_timeout_after(TIMEOUT, call)
}

/// Calls abandoned at their timeout whose helper thread has not returned
/// yet. While one hangs (a prompt nobody sees), asking again would only
/// wait another full timeout and leave another thread behind: every login
/// of an offline pair's retries would pile them up. So new calls fail at
/// once until it returns.
static HANGING: AtomicUsize = AtomicUsize::new(0);

/// A call's state, shared by the caller and its helper thread.
const RUNNING: u8 = 0;
const ANSWERED: u8 = 1;
const ABANDONED: u8 = 2;

fn with_timeout_after<T: Send + 'static>(
    timeout: Duration,
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    if HANGING.load(Ordering::SeqCst) > 0 {
        return Err(StoreError::Failed(
            "an earlier request has not been answered yet (is the keyring locked and waiting \
             for a prompt?)"
                .into(),
        ));
    }
    let state = Arc::new(AtomicU8::new(RUNNING));
    let (tx, rx) = mpsc::channel();
    let thread_state = Arc::clone(&state);
    let spawned = std::thread::Builder::new()
        .name("secret-store".into())
        .spawn(move || {
            let result = call();
            if thread_state
                .compare_exchange(RUNNING, ANSWERED, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // The caller gave up on this call: it no longer hangs.
                HANGING.fetch_sub(1, Ordering::SeqCst);
            }
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(StoreError::Failed(format!("cannot start a thread: {e}")));
    }
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => {
            // Counted before it is marked abandoned, so the helper's
            // decrement (which needs the mark) always comes after.
            HANGING.fetch_add(1, Ordering::SeqCst);
            if state
                .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // It answered just as the time ran out.
                HANGING.fetch_sub(1, Ordering::SeqCst);
                if let Ok(result) = rx.recv() {
                    return result;
                }
            }
            Err(StoreError::Failed(format!(
                "no answer within {} s (is the keyring locked and waiting for a prompt?)",
                timeout.as_secs()
            )))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_call_fails_the_next_ones_at_once_until_it_returns() {
        let (release, released) = mpsc::channel::<()>();
        let first = with_timeout_after(Duration::from_millis(50), move || {
            let _ = released.recv();
            Ok(1)
        });
        assert!(matches!(first, Err(StoreError::Failed(ref why)) if why.contains("no answer")));

        // While it hangs, another call does not even start.
        let started = std::sync::Arc::new(AtomicU8::new(0));
        let flag = Arc::clone(&started);
        let second = with_timeout_after(Duration::from_secs(5), move || {
            flag.store(1, Ordering::SeqCst);
            Ok(2)
        });
        assert!(
            matches!(second, Err(StoreError::Failed(ref why)) if why.contains("earlier request"))
        );
        assert_eq!(started.load(Ordering::SeqCst), 0);

        // Once it returns, the store is asked again.
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while HANGING.load(Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "never counted as returned"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            with_timeout_after(Duration::from_secs(5), || Ok(3)).ok(),
            Some(3)
        );
    }
}
