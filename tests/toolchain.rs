//! The Rust version the manifest and the README promise is one the locked
//! dependencies build with: never older than the newest `rust-version`
//! a locked crate compiled for this machine declares.

use std::process::Command;

use serde_json::Value;

/// `1.88.0` → `(1, 88, 0)`.
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap());
    let major = parts.next().unwrap();
    (major, parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(rustc).arg("-vV").output().unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// `cargo metadata` of the locked dependency graph for this machine, read
/// from the local registry cache the build already filled.
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_stated_minimum_rust_builds_every_locked_dependency() {
    let stated = env!("CARGO_PKG_RUST_VERSION");
    let metadata = metadata();
    let packages = metadata["packages"].as_array().unwrap();
    let (newest, name) = packages
        .iter()
        .filter(|p| p["name"] != env!("CARGO_PKG_NAME"))
        .filter_map(|p| Some((version(p["rust_version"].as_str()?), p["name"].as_str()?)))
        .max()
        .expect("some dependency declares a rust-version");
    assert!(
        version(stated) >= newest,
        "Cargo.toml says rust-version {stated}, but {name} needs {newest:?}"
    );

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&format!("Rust toolchain ({stated} or newer)")),
        "README.md must state the same minimum as Cargo.toml ({stated})"
    );
}
