//! Turning SQLite values into the crate's types and back.
//!
//! Every row is untrusted on the way out: users can edit the journal with
//! `sqlite3`, so a bad path, hash or enum text becomes a
//! [`JournalError::CorruptRow`] naming the table and the row's key, never a
//! panic and never a silently skipped row.

use std::fmt;

use rusqlite::Row;
use rusqlite::types::{FromSql, ValueRef};

use super::JournalError;
use crate::model::{ContentHash, RelPath, Side};

/// SQL for "`$col` lies below the path `$root`", component-wise (`a/x` is
/// below `a`; `ab` and `a.txt` are not). It is a half-open range, so SQLite
/// answers it from an index on `$col`: every path below `root` sorts between
/// `root/` and `root0`, as `0` is the byte after `/`.
macro_rules! below {
    ($col:literal, $root:literal) => {
        concat!(
            "(",
            $col,
            " >= ",
            $root,
            " || '/' AND ",
            $col,
            " < ",
            $root,
            " || '0')"
        )
    };
}
pub(super) use below;

/// SQL for "`$col` is `$root` or lies below it". SQLite turns this `OR` into
/// one index search per branch only when no other index term competes (as
/// in the change log); where the query also fixes `pair_id`, run the two
/// halves as separate statements instead.
macro_rules! within {
    ($col:literal, $root:literal) => {
        concat!("(", $col, " = ", $root, " OR ", below!($col, $root), ")")
    };
}
pub(super) use within;

/// Where a value is in a row: a column's name, looked up among the
/// statement's columns on every read, or, for a statement whose columns
/// are known, its position (with its name for messages). A loop over many
/// rows reads by position: the look-up compares the name with each
/// column's, through SQLite, and took a tenth of loading a base.
#[derive(Clone, Copy, Debug)]
pub(super) enum Col<'n> {
    Named(&'n str),
    At(usize, &'n str),
}

impl<'n> From<&'n str> for Col<'n> {
    fn from(name: &'n str) -> Col<'n> {
        Col::Named(name)
    }
}

impl fmt::Display for Col<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Col::Named(name) | Col::At(_, name) => f.write_str(name),
        }
    }
}

/// One row being decoded, with what is needed to name it in an error.
pub(super) struct RowReader<'a, 'stmt> {
    row: &'a Row<'stmt>,
    table: &'static str,
    /// The columns that identify the row to a person (`id`, or `pair_id`
    /// and `path`); they are read only when reporting an error.
    key_columns: &'static [&'static str],
}

impl<'a, 'stmt> RowReader<'a, 'stmt> {
    pub(super) fn new(
        row: &'a Row<'stmt>,
        table: &'static str,
        key_columns: &'static [&'static str],
    ) -> Self {
        RowReader {
            row,
            table,
            key_columns,
        }
    }

    /// A [`JournalError::CorruptRow`] for this row.
    pub(super) fn corrupt(&self, problem: impl fmt::Display) -> JournalError {
        let row = self
            .key_columns
            .iter()
            .map(|column| match self.row.get_ref(*column) {
                Ok(value) => format!("{column} = {}", Shown(value)),
                Err(_) => format!("{column} = ?"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        JournalError::CorruptRow {
            table: self.table,
            row: format!("({row})"),
            problem: problem.to_string(),
        }
    }

    pub(super) fn get<'n, T: FromSql>(
        &self,
        column: impl Into<Col<'n>>,
    ) -> Result<T, JournalError> {
        let column = column.into();
        match column {
            Col::Named(name) => self.row.get(name),
            Col::At(index, _) => self.row.get(index),
        }
        .map_err(|err| self.corrupt(format_args!("column {column}: {err}")))
    }

    /// The text of a column, borrowed from the row.
    fn text<'n>(&self, column: impl Into<Col<'n>>) -> Result<&'a str, JournalError> {
        let column = column.into();
        match column {
            Col::Named(name) => self.row.get_ref(name),
            Col::At(index, _) => self.row.get_ref(index),
        }
        .map_err(|err| self.corrupt(format_args!("column {column}: {err}")))?
        .as_str()
        .map_err(|err| self.corrupt(format_args!("column {column}: {err}")))
    }

    /// The text of a column that may be NULL, borrowed from the row.
    pub(super) fn opt_text<'n>(
        &self,
        column: impl Into<Col<'n>>,
    ) -> Result<Option<&'a str>, JournalError> {
        let column = column.into();
        match column {
            Col::Named(name) => self.row.get_ref(name),
            Col::At(index, _) => self.row.get_ref(index),
        }
        .map_err(|err| self.corrupt(format_args!("column {column}: {err}")))?
        .as_str_or_null()
        .map_err(|err| self.corrupt(format_args!("column {column}: {err}")))
    }

    pub(super) fn path<'n>(&self, column: impl Into<Col<'n>>) -> Result<RelPath, JournalError> {
        let column = column.into();
        let text = self.text(column)?;
        RelPath::new(text).map_err(|err| self.corrupt(format_args!("column {column}: {err}")))
    }

    pub(super) fn opt_path<'n>(
        &self,
        column: impl Into<Col<'n>>,
    ) -> Result<Option<RelPath>, JournalError> {
        let column = column.into();
        match self.get::<Option<String>>(column)? {
            None => Ok(None),
            Some(_) => self.path(column).map(Some),
        }
    }

    pub(super) fn hash<'n>(&self, column: impl Into<Col<'n>>) -> Result<ContentHash, JournalError> {
        self.parsed(column, ContentHash::from_hex, "a BLAKE3 hash in hex")
    }

    pub(super) fn opt_hash<'n>(
        &self,
        column: impl Into<Col<'n>>,
    ) -> Result<Option<ContentHash>, JournalError> {
        self.opt_parsed(column, ContentHash::from_hex, "a BLAKE3 hash in hex")
    }

    pub(super) fn u64<'n>(&self, column: impl Into<Col<'n>>) -> Result<u64, JournalError> {
        let column = column.into();
        let value: i64 = self.get(column)?;
        u64::try_from(value)
            .map_err(|_| self.corrupt(format_args!("column {column}: {value} is negative")))
    }

    pub(super) fn opt_u64<'n>(
        &self,
        column: impl Into<Col<'n>>,
    ) -> Result<Option<u64>, JournalError> {
        let column = column.into();
        match self.get::<Option<i64>>(column)? {
            None => Ok(None),
            Some(_) => self.u64(column).map(Some),
        }
    }

    /// `'dir'` or `'file'`, as in the `kind` columns.
    pub(super) fn is_dir<'n>(&self, column: impl Into<Col<'n>>) -> Result<bool, JournalError> {
        self.parsed(column, is_dir_from_str, "'file' or 'dir'")
    }

    pub(super) fn side<'n>(&self, column: impl Into<Col<'n>>) -> Result<Side, JournalError> {
        self.parsed(column, side_from_str, "'local' or 'remote'")
    }

    /// A text column that `parse` turns into a value; `expected` says what
    /// it should have held.
    pub(super) fn parsed<'n, T>(
        &self,
        column: impl Into<Col<'n>>,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<T, JournalError> {
        let column = column.into();
        let text = self.text(column)?;
        parse(text).ok_or_else(|| {
            self.corrupt(format_args!("column {column}: {text:?} is not {expected}"))
        })
    }

    pub(super) fn opt_parsed<'n, T>(
        &self,
        column: impl Into<Col<'n>>,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, JournalError> {
        let column = column.into();
        match self.get::<Option<String>>(column)? {
            None => Ok(None),
            Some(_) => self.parsed(column, parse, expected).map(Some),
        }
    }
}

/// A value as `sqlite3` would show it, for error messages.
struct Shown<'a>(ValueRef<'a>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ValueRef::Null => f.write_str("NULL"),
            ValueRef::Integer(i) => write!(f, "{i}"),
            ValueRef::Real(r) => write!(f, "{r}"),
            ValueRef::Text(t) => write!(f, "'{}'", String::from_utf8_lossy(t)),
            ValueRef::Blob(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

/// The `kind` column's text.
pub(super) fn kind_str(is_dir: bool) -> &'static str {
    if is_dir { "dir" } else { "file" }
}

fn is_dir_from_str(text: &str) -> Option<bool> {
    match text {
        "dir" => Some(true),
        "file" => Some(false),
        _ => None,
    }
}

fn side_from_str(text: &str) -> Option<Side> {
    [Side::Local, Side::Remote]
        .into_iter()
        .find(|side| side.as_str() == text)
}

/// Sizes and counters as SQLite integers. Nothing real exceeds `i64::MAX`;
/// should something claim to, storing the maximum beats failing a sync.
pub(super) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn opt_int(value: Option<u64>) -> Option<i64> {
    value.map(int)
}

pub(super) fn opt_hex(hash: Option<&ContentHash>) -> Option<String> {
    hash.map(ContentHash::to_hex)
}
