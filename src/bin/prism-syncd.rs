//! `prism-syncd`: the Prism Sync agent. Parses arguments, sets up logging,
//! and hands over to `prism_sync::agent::run`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(prism_sync::cli::syncd_main())
}
