//! rclone's crypt format against the real `rclone` binary: what rclone
//! writes through a crypt remote, `prism_sync::crypt` reads, and what it
//! writes, rclone reads. Names in every mode (standard with and without
//! folder names, off), empty files, exact chunk multiples, non-ASCII
//! names, with and without a salt.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use prism_sync::crypt::{Decryptor, Encryptor, Keys, NameCipher, NameMode, Nonce};

const CHUNK: usize = 64 * 1024;

/// How the crypt remote is set up, on both sides.
struct Setup {
    password: &'static str,
    salt: Option<&'static str>,
    names: NameMode,
    dir_names: bool,
}

impl Setup {
    fn keys(&self) -> Keys {
        Keys::derive(self.password, self.salt)
    }

    fn names(&self) -> NameCipher {
        NameCipher::new(&self.keys(), self.names, self.dir_names)
    }
}

fn obscure(secret: &str) -> String {
    let out = Command::new("rclone")
        .args(["obscure", secret])
        .output()
        .expect("run rclone obscure");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs rclone with a crypt remote `X:` over `encrypted`, configured only
/// through the environment (no config file of the user's is read).
fn rclone(setup: &Setup, encrypted: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("rclone");
    command
        .env("RCLONE_CONFIG", encrypted.with_extension("rclone.conf"))
        .env("RCLONE_CONFIG_X_TYPE", "crypt")
        .env("RCLONE_CONFIG_X_REMOTE", encrypted)
        .env("RCLONE_CONFIG_X_PASSWORD", obscure(setup.password))
        .env(
            "RCLONE_CONFIG_X_FILENAME_ENCRYPTION",
            match setup.names {
                NameMode::Standard => "standard",
                NameMode::Off => "off",
            },
        )
        .env(
            "RCLONE_CONFIG_X_DIRECTORY_NAME_ENCRYPTION",
            setup.dir_names.to_string(),
        )
        .args(args);
    if let Some(salt) = setup.salt {
        command.env("RCLONE_CONFIG_X_PASSWORD2", obscure(salt));
    }
    let out = command.output().expect("run rclone");
    assert!(
        out.status.success(),
        "rclone {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// The files every test moves: sizes around the chunk size, an empty
/// file, names outside ASCII, folders two deep.
fn sample() -> BTreeMap<String, Vec<u8>> {
    [
        ("empty", 0),
        ("one.txt", 1),
        ("docs/chunk.bin", CHUNK),
        ("docs/chunk-plus-one.bin", CHUNK + 1),
        ("docs/three chunks", 3 * CHUNK),
        ("docs/deeper/almost.dat", CHUNK - 1),
        ("Ünïcödé/名前 ✓.txt", 100),
        ("Ünïcödé/sub dir/ß", 17),
        // A name with a version stamp, kept outside the encrypted name.
        ("docs/report-v2021-02-03-040506-789.txt", 9),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, len))| (name.to_owned(), content(len, i as u8)))
    .collect()
}

fn write_plain(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in files {
        let path = root.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
}

fn read_plain(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Our side writing: every name and content encrypted into `encrypted`.
fn prism_encrypt(setup: &Setup, encrypted: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let keys = setup.keys();
    let names = setup.names();
    for (name, bytes) in files {
        let path = encrypted.join(names.encrypt_file(name).unwrap());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut sealed = Vec::new();
        Encryptor::new(&bytes[..], &keys, Nonce::random().unwrap())
            .read_to_end(&mut sealed)
            .unwrap();
        fs::write(path, sealed).unwrap();
    }
}

/// Our side reading: every file below `encrypted`, names and contents
/// decrypted, each content's size derived from its ciphertext's first.
fn prism_decrypt(setup: &Setup, encrypted: &Path) -> BTreeMap<String, Vec<u8>> {
    let keys = setup.keys();
    let names = setup.names();
    read_plain(encrypted)
        .into_iter()
        .map(|(name, sealed)| {
            let plain_name = names.decrypt_file(&name).expect("a name rclone wrote");
            let size = prism_sync::crypt::decrypted_size(sealed.len() as u64).unwrap();
            let mut bytes = Vec::new();
            Decryptor::new(&sealed[..], &keys)
                .expecting(size)
                .read_to_end(&mut bytes)
                .expect("content rclone wrote");
            assert_eq!(bytes.len() as u64, size, "{plain_name}");
            (plain_name, bytes)
        })
        .collect()
}

fn setups() -> Vec<Setup> {
    vec![
        Setup {
            password: "correct horse battery staple",
            salt: None,
            names: NameMode::Standard,
            dir_names: true,
        },
        Setup {
            password: "pässwörd",
            salt: Some("a salt of one's own"),
            names: NameMode::Standard,
            dir_names: false,
        },
        Setup {
            password: "plain names",
            salt: None,
            names: NameMode::Off,
            dir_names: true,
        },
    ]
}

#[test]
fn what_rclone_writes_through_crypt_prism_reads() {
    for setup in setups() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, encrypted) = (dir.path().join("plain"), dir.path().join("encrypted"));
        let files = sample();
        write_plain(&plain, &files);
        fs::create_dir_all(&encrypted).unwrap();
        rclone(&setup, &encrypted, &["copy", plain.to_str().unwrap(), "X:"]);
        assert_eq!(
            prism_decrypt(&setup, &encrypted),
            files,
            "{:?}",
            setup.names
        );
    }
}

#[test]
fn what_prism_writes_rclone_decrypts_and_lists_with_exact_sizes() {
    for setup in setups() {
        let dir = tempfile::tempdir().unwrap();
        let (encrypted, back) = (dir.path().join("encrypted"), dir.path().join("back"));
        let files = sample();
        prism_encrypt(&setup, &encrypted, &files);
        rclone(&setup, &encrypted, &["copy", "X:", back.to_str().unwrap()]);
        assert_eq!(read_plain(&back), files, "{:?}", setup.names);
        let cat = rclone(&setup, &encrypted, &["cat", "X:Ünïcödé/名前 ✓.txt"]);
        assert_eq!(cat.stdout, files["Ünïcödé/名前 ✓.txt"]);
        let listed = rclone(&setup, &encrypted, &["lsjson", "-R", "--files-only", "X:"]);
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
        let sizes: BTreeMap<String, u64> = listed
            .iter()
            .map(|e| {
                (
                    e["Path"].as_str().unwrap().to_owned(),
                    e["Size"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected: BTreeMap<String, u64> = files
            .iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect();
        assert_eq!(sizes, expected);
    }
}

#[test]
fn a_wrong_password_reads_neither_rclones_names_nor_its_contents() {
    let setup = &setups()[0];
    let dir = tempfile::tempdir().unwrap();
    let (plain, encrypted) = (dir.path().join("plain"), dir.path().join("encrypted"));
    write_plain(&plain, &sample());
    fs::create_dir_all(&encrypted).unwrap();
    rclone(setup, &encrypted, &["copy", plain.to_str().unwrap(), "X:"]);
    let wrong = Setup {
        password: "not it",
        ..setups().remove(0)
    };
    let keys = wrong.keys();
    for (name, sealed) in read_plain(&encrypted) {
        // A name may by chance unpad under the wrong key (about one in
        // 256); its content never authenticates.
        let mut out = Vec::new();
        let read = Decryptor::new(&sealed[..], &keys).read_to_end(&mut out);
        if sealed.len() > 32 {
            let e = read.expect_err("a wrong key fails");
            assert!(e.to_string().contains("wrong password"), "{name}: {e}");
            assert!(out.is_empty());
        }
    }
}

/// A fixture rclone 1.60.1 wrote (`rclone copy` into a crypt remote with
/// the password "prism-sync fixture", no salt, standard names): the known
/// answer does not depend on the rclone installed now.
#[test]
fn a_fixture_rclone_wrote_decrypts_to_its_known_plaintext() {
    let setup = Setup {
        password: "prism-sync fixture",
        salt: None,
        names: NameMode::Standard,
        dir_names: true,
    };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crypt-rclone-1.60.1");
    let files = prism_decrypt(&setup, &fixture);
    let two_chunks: Vec<u8> = (0..65537u32).map(|i| (i % 251) as u8).collect();
    let expected = BTreeMap::from([
        (
            "notes/hello wörld.txt".to_owned(),
            b"Hello, crypt!\n".to_vec(),
        ),
        ("two-chunks.bin".to_owned(), two_chunks),
    ]);
    assert_eq!(files, expected);
    let names = setup.names();
    assert_eq!(
        names.encrypt_file("notes/hello wörld.txt").unwrap(),
        "7kem15vn6skunjns9gc15r2tf8/otke6de7r6j2i6u0of8ol1vcfut6ip0h6ba6l2hom36ji6fdbvmg"
    );
}
