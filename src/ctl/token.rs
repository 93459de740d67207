//! `prism-syncctl token issue|list|revoke`: bearer tokens for the HTTP API.
//! Issuing goes over the local socket only, so only the user the agent runs
//! as can mint a token; the token is printed once and never again.

use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Subcommand, ValueEnum};

use crate::api::wire::{self, Role};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token for the HTTP API and print it (only this once).
    Issue {
        /// What the token may do: viewer reads; operator also syncs,
        /// resolves, pauses and resumes; admin also manages pairs and tokens.
        #[arg(long)]
        role: Role,
        /// Limit the token to this pair; repeat for several [default: every pair].
        #[arg(long = "pair", value_name = "NAME")]
        pairs: Vec<String>,
        /// How long it is valid: 90s, 15m, 12h, 30d [default: 30d; at most 366d].
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// A label shown by `token list`.
        #[arg(long, value_name = "LABEL")]
        name: Option<String>,
    },
    /// List the tokens issued (never the tokens themselves).
    List,
    /// Revoke a token at once.
    Revoke { id: String },
}

impl ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &Role::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()))
    }
}

/// `90s`, `15m`, `12h`, `30d`, or a bare number of seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let per_unit: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: use a number with s, m, h or d (90s, 12h, 30d)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit))
        .filter(|secs| *secs > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?}: use a positive number with s, m, h or d (90s, 12h, 30d)"))
}

/// The request `token issue` sends.
pub fn request(
    role: Role,
    pairs: Vec<String>,
    ttl: Option<Duration>,
    name: Option<String>,
) -> wire::TokenRequest {
    wire::TokenRequest {
        role,
        pairs,
        ttl_secs: ttl.map(|t| t.as_secs()),
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_like_ages() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_ttl("120"), Ok(Duration::from_secs(120)));
        for bad in ["", "0s", "d", "1w", "-5m", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
