//! `prism-syncctl service install | uninstall | status`: calls
//! [`crate::service`] and prints what it did, would do, or saw. It needs
//! no running agent and never opens the control socket.
//!
//! Exit codes: install and uninstall 0 done, 1 failed; status 0 running,
//! 4 not running (stopped, failed or not installed), 1 the service manager
//! could not be asked.

use clap::Subcommand;
use serde_json::json;

use super::{EXIT_FAILURE, EXIT_NOT_RUNNING, EXIT_OK, print_err, print_json, print_out};
use crate::service::{self, Action, Layout, ServiceError, ServiceStatus};

#[derive(Debug, Subcommand)]
pub(super) enum ServiceCommand {
    /// Start prism-syncd at login: write the systemd user unit (Linux) or
    /// launchd agent (macOS) for the prism-syncd next to this binary, and
    /// start it now.
    Install {
        /// Print what would be written and run, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop prism-syncd, stop starting it at login, and remove the file
    /// `service install` wrote (and nothing else).
    Uninstall {
        /// Print what would be removed and run, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show what the service manager says about prism-syncd.
    Status,
}

pub(super) fn run(command: ServiceCommand, json: bool) -> i32 {
    let outcome =
        Layout::detect().and_then(|layout| match command {
            ServiceCommand::Install { dry_run } => service::install(&layout, dry_run)
                .map(|plan| actions(&plan, dry_run, json, &layout)),
            ServiceCommand::Uninstall { dry_run } => service::uninstall(&layout, dry_run)
                .map(|plan| actions(&plan, dry_run, json, &layout)),
            ServiceCommand::Status => service::status(&layout).map(|status| show(&status, json)),
        });
    match outcome {
        Ok(code) => code,
        Err(err) => fail(&err, json),
    }
}

fn actions(plan: &[Action], dry_run: bool, json: bool, layout: &Layout) -> i32 {
    if json {
        let list: Vec<_> = plan
            .iter()
            .map(|action| match action {
                Action::Write { path, content } => {
                    json!({"action": "write", "path": path, "content": content})
                }
                Action::CreateDir(path) => json!({"action": "create_dir", "path": path}),
                Action::Remove(path) => json!({"action": "remove", "path": path}),
                Action::Run(argv) => json!({"action": "run", "argv": argv}),
                Action::Note(text) => json!({"action": "note", "text": text}),
            })
            .collect();
        print_json(
            &json!({"dry_run": dry_run, "manager": layout.manager.as_str(), "actions": list}),
            true,
        );
        return EXIT_OK;
    }
    let mut text = String::new();
    for action in plan {
        match (action, dry_run) {
            (Action::Write { path, content }, true) => {
                text += &format!("would write {}:\n", path.display());
                for line in content.lines() {
                    text += &format!("    {line}\n");
                }
            }
            (Action::Note(note), _) => text += &format!("{note}\n"),
            (other, true) => text += &format!("would {other}\n"),
            (other, false) => text += &format!("did {other}\n"),
        }
    }
    print_out(&text);
    EXIT_OK
}

fn show(status: &ServiceStatus, json: bool) -> i32 {
    let code = if status.running {
        EXIT_OK
    } else {
        EXIT_NOT_RUNNING
    };
    if json {
        print_json(
            &json!({
                "manager": status.manager.as_str(),
                "service_file": status.service_file,
                "installed": status.installed,
                "written_by_install": status.written_by_install,
                "running": status.running,
                "state": status.state,
                "pid": status.pid,
                "enabled": status.enabled,
                "detail": status.detail,
                "logs": status.logs,
            }),
            true,
        );
        return code;
    }
    let file = match (status.installed, status.written_by_install) {
        (false, _) => "not installed (run `prism-syncctl service install`)".to_owned(),
        (true, true) => format!(
            "{} (written by service install)",
            status.service_file.display()
        ),
        (true, false) => format!(
            "{} (written by hand or a package)",
            status.service_file.display()
        ),
    };
    let mut text = format!(
        "service manager: {}\nservice file:    {file}\nstate:           {}",
        status.manager.as_str(),
        status.state
    );
    if let Some(pid) = status.pid {
        text += &format!(", pid {pid}");
    }
    if let Some(enabled) = &status.enabled {
        text += &format!(", {enabled}");
    }
    text += "\n";
    if let Some(detail) = &status.detail {
        text += &format!("detail:          {detail}\n");
    }
    text += &format!("logs:            {}\n", status.logs);
    print_out(&text);
    code
}

fn fail(err: &ServiceError, json: bool) -> i32 {
    if json {
        let body =
            crate::api::wire::ErrorBody::from(&crate::api::ApiError::new(500, err.to_string()));
        print_json(&body, true);
    } else {
        print_err(&err.to_string());
    }
    EXIT_FAILURE
}
