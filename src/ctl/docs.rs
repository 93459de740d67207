//! `prism-syncctl completions SHELL` and the hidden `prism-syncctl man`:
//! shell completion scripts (clap_complete) and man pages (clap_mangen),
//! both generated from the clap definitions of the two binaries, so they
//! can never disagree with the flags the binaries accept.
//!
//! Man pages come from a hidden subcommand rather than a build script:
//! the definitions live in the library (`ctl` and `cli`), which a build
//! script cannot use without compiling it twice, and packagers need the
//! pages at a path they choose, not in Cargo's `OUT_DIR`. Running the
//! built binary (`packaging/generate-assets.sh`, the Homebrew formula)
//! yields pages for exactly the binary being packaged.

use std::path::Path;

use clap::{CommandFactory, ValueEnum};

use super::{Cli, EXIT_FAILURE, EXIT_OK};
use crate::cli::SyncdArgs;

/// A shell `completions` can write for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Which binary's command line to describe.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum Binary {
    #[value(name = "prism-syncctl")]
    Syncctl,
    #[value(name = "prism-syncd")]
    Syncd,
}

fn command(binary: Binary) -> clap::Command {
    match binary {
        Binary::Syncctl => Cli::command(),
        Binary::Syncd => SyncdArgs::command(),
    }
}

/// Prints the completion script of `binary` for `shell` on stdout.
pub(super) fn completions(shell: Shell, binary: Binary) -> i32 {
    let mut cmd = command(binary);
    let name = cmd.get_name().to_owned();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, name, &mut std::io::stdout().lock());
    EXIT_OK
}

/// Writes `prism-syncd.1`, `prism-syncctl.1` and one page per visible
/// subcommand (`prism-syncctl-service-install.1`, …) into `out_dir`.
pub(super) fn man_pages(out_dir: &Path) -> i32 {
    let result = std::fs::create_dir_all(out_dir).and_then(|()| {
        for binary in [Binary::Syncd, Binary::Syncctl] {
            clap_mangen::generate_to(command(binary), out_dir)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => EXIT_OK,
        Err(err) => {
            super::print_err(&format!(
                "cannot write man pages to {}: {err}",
                out_dir.display()
            ));
            EXIT_FAILURE
        }
    }
}
