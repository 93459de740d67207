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
    for (key, set) in [
        ("encryption", &pair.encryption),
        ("filename_encryption", &pair.filename_encryption),
    ] {
        if let Some(set) = set {
            table[key] = value(set.as_str());
        }
    }
    if let Some(on) = pair.directory_name_encryption {
        table["directory_name_encryption"] = value(on);
    }
    // The backend's keys, as written: strings, booleans and numbers.
    for (key, written) in &pair.remote_keys {
        let written = written
            .to_string()
            .parse::<toml_edit::Value>()
            .map_err(|e| EditError::Parse {
                path: format!("the pair key `{key}`"),
                message: e.to_string(),
            })?;
        table[key.as_str()] = value(written);
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
            ..RawPair::default()
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

    #[test]
    fn a_pair_added_keeps_its_remotes_keys_and_encryption() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let mut pair = RawPair {
            name: "photos".into(),
            local: "/home/me/Photos".into(),
            remote: "sftp://me@nas/srv/photos".into(),
            encryption: Some("crypt".into()),
            directory_name_encryption: Some(false),
            ..RawPair::default()
        };
        for (key, written) in [
            ("known_hosts", toml::Value::from("/etc/prism/known_hosts")),
            ("compression", toml::Value::from(true)),
        ] {
            pair.remote_keys.insert(key.into(), written);
        }
        add_pair(&file, &pair).unwrap();
        let config = Config::load(&file).unwrap();
        let added = &config.pairs[0];
        let ssh = added
            .remote
            .settings::<crate::remote::sftp::url::SshSettings>()
            .unwrap();
        assert_eq!(
            ssh.known_hosts.as_deref(),
            Some(Path::new("/etc/prism/known_hosts"))
        );
        assert!(ssh.compression);
        assert!(added.crypt.is_some_and(|c| !c.directory_name_encryption));
    }
}
