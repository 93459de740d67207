//! Edits to the config file made by `prism-syncctl pair add|remove`: the
//! file stays the one source of truth for pairs, keeps the user's comments
//! and layout (`toml_edit`), and is replaced atomically.

use std::fs;
use std::io;
use std::path::Path;

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use super::RawPair;

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is not valid TOML: {message}")]
    Parse { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
}

fn load(file: &Path) -> Result<DocumentMut, EditError> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(EditError::Read {
                path: file.display().to_string(),
                source,
            });
        }
    };
    text.parse::<DocumentMut>().map_err(|e| EditError::Parse {
        path: file.display().to_string(),
        message: e.to_string(),
    })
}

fn save(file: &Path, doc: &DocumentMut) -> Result<(), EditError> {
    let write_error = |source| EditError::Write {
        path: file.display().to_string(),
        source,
    };
    if let Some(parent) = file.parent() {
        fs::create_dir_all(parent).map_err(write_error)?;
    }
    let temp = crate::fsops::temp_path_for(file);
    fs::write(&temp, doc.to_string())
        .and_then(|()| fs::File::open(&temp)?.sync_all())
        .and_then(|()| fs::rename(&temp, file))
        .map_err(|e| {
            let _ = fs::remove_file(&temp);
            write_error(e)
        })
}

/// Appends a `[[pair]]` table.
pub fn add_pair(file: &Path, pair: &RawPair) -> Result<(), EditError> {
    let mut doc = load(file)?;
    let mut table = Table::new();
    table["name"] = value(pair.name.as_str());
    table["local"] = value(pair.local.as_str());
    table["remote"] = value(pair.remote.as_str());
    if let Some(conflict) = &pair.conflict {
        table["conflict"] = value(conflict.as_str());
    }
    if !pair.ignore.is_empty() {
        let patterns: Array = pair.ignore.iter().map(String::as_str).collect();
        table["ignore"] = value(patterns);
    }
    for (key, path) in [
        ("known_hosts", &pair.known_hosts),
        ("identity_file", &pair.identity_file),
        ("username", &pair.username),
        ("ca_file", &pair.ca_file),
        ("endpoint", &pair.endpoint),
        ("region", &pair.region),
        ("profile", &pair.profile),
        ("access_key_id", &pair.access_key_id),
    ] {
        if let Some(path) = path {
            table[key] = value(path.as_str());
        }
    }
    if let Some(compression) = pair.compression {
        table["compression"] = value(compression);
    }
    if let Some(allow) = pair.allow_insecure_http_auth {
        table["allow_insecure_http_auth"] = value(allow);
    }
    if let Some(secs) = pair.timeout_secs {
        // TOML integers are i64; validation caps the value at 3600.
        table["timeout_secs"] = value(secs.min(i64::MAX as u64) as i64);
    }
    match doc.get_mut("pair").and_then(Item::as_array_of_tables_mut) {
        Some(pairs) => pairs.push(table),
        None => {
            let mut pairs = ArrayOfTables::new();
            pairs.push(table);
            doc.insert("pair", Item::ArrayOfTables(pairs));
        }
    }
    save(file, &doc)
}

/// Removes the `[[pair]]` table named `name`; returns whether it was there.
pub fn remove_pair(file: &Path, name: &str) -> Result<bool, EditError> {
    let mut doc = load(file)?;
    let Some(pairs) = doc.get_mut("pair").and_then(Item::as_array_of_tables_mut) else {
        return Ok(false);
    };
    let before = pairs.len();
    pairs.retain(|t| t.get("name").and_then(Item::as_str) != Some(name));
    if pairs.len() == before {
        return Ok(false);
    }
    save(file, &doc)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn pairs_are_added_and_removed_keeping_comments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        fs::write(&file, "# my settings\n[agent]\ndevice = \"laptop\"\n").unwrap();
        let pair = RawPair {
            name: "notes".into(),
            local: "/home/me/Notes".into(),
            remote: "file:///mnt/nas/notes".into(),
            conflict: Some("auto_merge".into()),
            ignore: vec!["*.log".into()],
            known_hosts: None,
            identity_file: None,
            compression: None,
            username: None,
            ca_file: None,
            allow_insecure_http_auth: None,
            timeout_secs: None,
            endpoint: None,
            region: None,
            profile: None,
            access_key_id: None,
            branch: None,
            author_name: None,
            author_email: None,
            path: None,
        };
        add_pair(&file, &pair).unwrap();
        let text = fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("# my settings"), "{text}");
        let config = Config::load(&file).unwrap();
        assert_eq!(config.pairs.len(), 1);
        assert_eq!(config.pairs[0].ignore, ["*.log"]);
        assert!(remove_pair(&file, "notes").unwrap());
        assert!(!remove_pair(&file, "notes").unwrap());
        assert!(Config::load(&file).unwrap().pairs.is_empty());
        assert!(
            fs::read_to_string(&file)
                .unwrap()
                .contains("device = \"laptop\"")
        );
    }
}
