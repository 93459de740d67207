//! `prism-syncctl password set | remove | where`: keeps a remote's login
//! password where `secrets` looks for it (the OS secret store, else the
//! owner-only credentials file in the config dir). It needs no running
//! agent and never opens the control socket: the agent looks the password
//! up at every login, so a stored password is used from the next one on.
//! With `--crypt` (and `--password2`) it keeps an encrypted pair's crypt
//! password (and salt) instead, looked up at the pair's next sync.
//!
//! The password is read from the terminal without echo, or from stdin when
//! stdin is not a terminal; it is never taken from the command line, where
//! `ps` and shell history would show it, and never printed.
//!
//! Exit codes: 0 done (`where`: a password was found), 1 failed (`where`:
//! none was found), 2 usage.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, print_err, print_json, print_out};
use crate::config::{Config, Overrides};
use crate::secrets::{self, Account, Place, Secret};

#[derive(Debug, Subcommand)]
pub(super) enum PasswordCommand {
    /// Store the login password of a pair or URL: in the OS secret store
    /// when one is reachable, else in the owner-only credentials file.
    /// Reads it from the terminal (no echo) or from stdin.
    Set(Target),
    /// Remove the stored password of a pair or URL from the secret store and
    /// the credentials file.
    Remove(Target),
    /// Say where the password of a pair or URL is kept (never the password).
    Where(Target),
}

#[derive(Debug, Args)]
pub(super) struct Target {
    /// A pair name from the config file, or a URL: sftp://[USER@]HOST[:PORT],
    /// webdav://USER@HOST[:PORT] or webdavs://USER@HOST[:PORT] (a path is allowed and ignored).
    #[arg(value_name = "PAIR_OR_URL")]
    target: String,
    /// The config file that names the pair and beside which the credentials
    /// file lives [default: $PRISM_SYNC_CONFIG, else the agent's default].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The crypt password of an encrypted pair (`encryption = "crypt"`)
    /// instead of a login password; PAIR_OR_URL must be a pair name.
    #[arg(long)]
    crypt: bool,
    /// With --crypt: the pair's optional salt (rclone's "password2").
    #[arg(long, requires = "crypt")]
    password2: bool,
}

/// A failure, with the exit code it gets.
struct Failure {
    code: i32,
    http: u16,
    message: String,
}

impl Failure {
    fn usage(message: String) -> Failure {
        Failure {
            code: EXIT_USAGE,
            http: 400,
            message,
        }
    }

    fn failed(message: String) -> Failure {
        Failure {
            code: EXIT_FAILURE,
            http: 500,
            message,
        }
    }
}

impl From<secrets::SecretError> for Failure {
    fn from(e: secrets::SecretError) -> Failure {
        let http = match e {
            secrets::SecretError::Unusable(_) => 400,
            _ => 500,
        };
        Failure {
            code: EXIT_FAILURE,
            http,
            message: e.to_string(),
        }
    }
}

pub(super) fn run(command: PasswordCommand, json: bool) -> i32 {
    let outcome = match command {
        PasswordCommand::Set(target) => set(&target, json),
        PasswordCommand::Remove(target) => remove(&target, json),
        PasswordCommand::Where(target) => locate(&target, json),
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            if json {
                let body = crate::api::wire::ErrorBody::from(&crate::api::ApiError::new(
                    failure.http,
                    failure.message,
                ));
                print_json(&body, true);
            } else {
                print_err(&failure.message);
            }
            failure.code
        }
    }
}

/// The account and the config dir the command works on.
fn resolve(target: &Target) -> Result<(Account, PathBuf), Failure> {
    let paths = Overrides {
        config_file: target.config.clone(),
        ..Overrides::default()
    }
    .with_env()
    .resolve()
    .map_err(|e| Failure::failed(e.to_string()))?;
    let config_dir = paths
        .config_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if target.crypt {
        let config =
            Config::load(&paths.config_file).map_err(|e| Failure::failed(e.to_string()))?;
        if !config.pairs.iter().any(|p| p.name == target.target) {
            return Err(Failure::usage(format!(
                "no pair is named {:?} in {}; --crypt takes the name of an encrypted pair",
                target.target,
                paths.config_file.display()
            )));
        }
        return Ok((
            crate::remote::crypt::account(&target.target, target.password2),
            config_dir,
        ));
    }
    if target.target.contains("://") {
        let account = Account::parse(&target.target).map_err(Failure::usage)?;
        return Ok((account, config_dir));
    }
    let config = Config::load(&paths.config_file).map_err(|e| Failure::failed(e.to_string()))?;
    let pair = config
        .pairs
        .iter()
        .find(|p| p.name == target.target)
        .ok_or_else(|| {
            Failure::usage(format!(
                "no pair is named {:?} in {}; name a pair from it or give a URL such as \
                 sftp://USER@HOST:PORT or webdavs://USER@HOST",
                target.target,
                paths.config_file.display()
            ))
        })?;
    let account = Account::for_pair(pair).ok_or_else(|| {
        Failure::usage(format!(
            "pair {:?} does not log in with a password (its remote is {}; a WebDAV pair \
             needs `username` in the config first, an S3 pair `access_key_id`)",
            pair.name, pair.remote
        ))
    })?;
    Ok((account, config_dir))
}

fn set(target: &Target, json: bool) -> Result<i32, Failure> {
    let (account, config_dir) = resolve(target)?;
    let secret = read_password(&account)?;
    let place = secrets::store_password(&account, Some(&config_dir), &secret)?;
    let env = account.kind.env_var();
    let shadowed = std::env::var_os(env).is_some_and(|v| !v.is_empty());
    if json {
        let mut answer = json!({"account": account.key(), "stored_in": place_json(&place)});
        if shadowed {
            answer["overridden_by"] = json!(place_json(&Place::Environment(env)));
        }
        print_json(&answer, true);
    } else {
        print_out(&format!("Stored the password for {account} in {place}.\n"));
        if shadowed {
            print_err(&format!(
                "note: {env} is set here; a login with that variable set uses it instead"
            ));
        }
    }
    Ok(EXIT_OK)
}

fn remove(target: &Target, json: bool) -> Result<i32, Failure> {
    let (account, config_dir) = resolve(target)?;
    let removed = secrets::remove_password(&account, Some(&config_dir))?;
    if json {
        let places: Vec<Value> = removed.iter().map(place_json).collect();
        print_json(
            &json!({"account": account.key(), "removed_from": places}),
            true,
        );
    } else if removed.is_empty() {
        print_out(&format!("No password was stored for {account}.\n"));
    } else {
        let places: Vec<String> = removed.iter().map(Place::to_string).collect();
        print_out(&format!(
            "Removed the password for {account} from {}.\n",
            places.join(" and ")
        ));
    }
    Ok(EXIT_OK)
}

fn locate(target: &Target, json: bool) -> Result<i32, Failure> {
    let (account, config_dir) = resolve(target)?;
    let found = secrets::locate_password(&account, Some(&config_dir))?;
    let code = if found.is_empty() {
        EXIT_FAILURE
    } else {
        EXIT_OK
    };
    if json {
        let places: Vec<Value> = found.iter().map(place_json).collect();
        print_json(
            &json!({"account": account.key(), "used": places.first(), "places": places}),
            true,
        );
        return Ok(code);
    }
    let mut text = String::new();
    match found.split_first() {
        None => {
            text += &format!(
                "No password is stored for {account}; store one with `prism-syncctl password set {account}`.\n"
            )
        }
        Some((used, others)) => {
            text += &format!("The password for {account} is in {used}.\n");
            for other in others {
                text += &format!("Another one, not used while the first exists, is in {other}.\n");
            }
        }
    }
    print_out(&text);
    Ok(code)
}

fn place_json(place: &Place) -> Value {
    match place {
        Place::Environment(name) => json!({"place": "environment", "variable": name}),
        Place::SecretStore => json!({"place": "secret_store", "service": secrets::SERVICE}),
        Place::File(path) => json!({"place": "file", "path": path}),
    }
}

/// The password from the terminal without echo, or the first line of
/// stdin when it is not a terminal (a pipe, a file, a script).
fn read_password(account: &Account) -> Result<Secret, Failure> {
    let text = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {account}: "))
            .map_err(|e| Failure::failed(format!("cannot read the password: {e}")))?
    } else {
        // One line, not up to EOF: a pipe held open by its writer must not
        // keep the command waiting.
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::failed(format!("cannot read the password from stdin: {e}")))?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        line.strip_suffix('\r').unwrap_or(line).to_owned()
    };
    if text.is_empty() {
        return Err(Failure::usage(
            "no password was given (an empty line); nothing was stored".to_owned(),
        ));
    }
    Ok(Secret::new(text))
}
