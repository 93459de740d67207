//! The `api_tokens` table: what each HTTP bearer token grants, and whether
//! it was revoked. The token itself (the signed JWT) is never stored: it is
//! printed once when issued, and a stolen journal yields no usable token.
//!
//! Also the audit columns of version 7: who (which token) started a sync
//! run or resolved a conflict.

use rusqlite::{OptionalExtension, params};

use super::{Journal, JournalError, during};
use crate::timefmt;

/// One issued token, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    /// The token's id: the JWT's `jti` and `sub`.
    pub id: String,
    /// A label the user chose (`--name`).
    pub name: Option<String>,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// The pairs the token is limited to; empty means every pair.
    pub pairs: Vec<String>,
    pub issued_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
}

impl Journal {
    /// Records a newly issued token.
    pub fn add_token(&self, token: &TokenRow) -> Result<(), JournalError> {
        during("record an API token", || {
            let pairs = serde_json::to_string(&token.pairs).expect("a list of strings is JSON");
            self.conn
                .prepare_cached(
                    "INSERT INTO api_tokens (id, name, role, pairs, issued_at, expires_at, \
                     revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    token.id,
                    token.name,
                    token.role,
                    pairs,
                    token.issued_at,
                    token.expires_at,
                    token.revoked_at
                ])?;
            Ok(())
        })
    }

    /// One token's row, if it was ever issued by this journal's agent.
    pub fn token(&self, id: &str) -> Result<Option<TokenRow>, JournalError> {
        during("read an API token", || {
            let mut stmt = self
                .conn
                .prepare_cached(&format!("{SELECT_TOKENS} WHERE id = ?1"))?;
            let row = stmt.query_row([id], raw_token).optional()?;
            row.map(decode_token).transpose()
        })
    }

    /// Every token ever issued, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, JournalError> {
        during("list the API tokens", || {
            let mut stmt = self
                .conn
                .prepare_cached(&format!("{SELECT_TOKENS} ORDER BY issued_at, id"))?;
            let rows = stmt.query_map([], raw_token)?;
            let mut tokens = Vec::new();
            for row in rows {
                tokens.push(decode_token(row?)?);
            }
            Ok(tokens)
        })
    }

    /// Revokes a token. Revoking one that is already revoked keeps the
    /// first time; `Ok(false)` means no token has that id.
    pub fn revoke_token(&self, id: &str) -> Result<bool, JournalError> {
        during("revoke an API token", || {
            let updated = self
                .conn
                .prepare_cached(
                    "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                )?
                .execute(params![id, timefmt::now_rfc3339()])?;
            Ok(updated == 1)
        })
    }

    /// Records which token started a sync run.
    pub fn set_sync_started_by(&self, sync_id: &str, token: &str) -> Result<(), JournalError> {
        during("record who started a sync", || {
            self.conn
                .prepare_cached("UPDATE syncs SET started_by = ?2 WHERE id = ?1")?
                .execute(params![sync_id, token])?;
            Ok(())
        })
    }

    /// Records which token resolved a conflict.
    pub fn set_conflict_resolved_by(
        &self,
        conflict_id: &str,
        token: &str,
    ) -> Result<(), JournalError> {
        during("record who resolved a conflict", || {
            self.conn
                .prepare_cached("UPDATE conflicts SET resolved_by = ?2 WHERE id = ?1")?
                .execute(params![conflict_id, token])?;
            Ok(())
        })
    }
}

const SELECT_TOKENS: &str =
    "SELECT id, name, role, pairs, issued_at, expires_at, revoked_at FROM api_tokens";

type RawToken = (
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    Option<String>,
);

fn raw_token(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawToken> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

/// A row edited by hand into something unreadable is reported, never
/// read as "every pair".
fn decode_token(raw: RawToken) -> Result<TokenRow, JournalError> {
    let (id, name, role, pairs, issued_at, expires_at, revoked_at) = raw;
    let pairs: Vec<String> =
        serde_json::from_str(&pairs).map_err(|err| JournalError::CorruptRow {
            table: "api_tokens",
            row: id.clone(),
            problem: format!("pairs is not a JSON list of names: {err}"),
        })?;
    Ok(TokenRow {
        id,
        name,
        role,
        pairs,
        issued_at,
        expires_at,
        revoked_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, pairs: &[&str]) -> TokenRow {
        TokenRow {
            id: id.to_owned(),
            name: Some("dashboard".to_owned()),
            role: "viewer".to_owned(),
            pairs: pairs.iter().map(|p| (*p).to_owned()).collect(),
            issued_at: "2025-02-09T16:00:00.000Z".to_owned(),
            expires_at: "2025-03-09T16:00:00.000Z".to_owned(),
            revoked_at: None,
        }
    }

    #[test]
    fn tokens_are_recorded_listed_and_revoked_once() {
        let journal = Journal::open_in_memory().unwrap();
        journal.add_token(&row("tok-a", &[])).unwrap();
        journal
            .add_token(&row("tok-b", &["notes", "photos"]))
            .unwrap();
        assert_eq!(
            journal.token("tok-b").unwrap(),
            Some(row("tok-b", &["notes", "photos"]))
        );
        assert_eq!(journal.token("tok-x").unwrap(), None);
        assert!(journal.revoke_token("tok-a").unwrap());
        let first = journal.token("tok-a").unwrap().unwrap().revoked_at.unwrap();
        assert!(journal.revoke_token("tok-a").unwrap());
        assert_eq!(
            journal.token("tok-a").unwrap().unwrap().revoked_at,
            Some(first)
        );
        assert!(!journal.revoke_token("tok-x").unwrap());
        let ids: Vec<String> = journal
            .tokens()
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, ["tok-a", "tok-b"]);
    }
}
