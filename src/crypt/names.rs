//! Encrypted names, as rclone's crypt remote writes them.
//!
//! "standard": each path segment is padded to whole 16-byte blocks
//! (PKCS#7), enciphered with EME under the name key and tweak, and written
//! in lowercase base32hex without padding; "off": names stay as they are
//! and a file's gets the suffix `.bin`. With directory name encryption off,
//! only a path's last segment (a file's name) is encrypted.
//!
//! Like rclone, a last segment carrying a version stamp before its
//! extension (`-vYYYY-MM-DD-HHMMSS-mmm`, as `--b2-versions` names old
//! versions) is encrypted without the stamp, which is put back after the
//! encrypted name, and decrypted the same way.

use aes::Aes256;
use data_encoding::BASE32HEX_NOPAD;

use super::Keys;
use super::eme::{self, Direction};

/// The longest name most file systems and servers take, in bytes: a
/// plaintext segment over 143 bytes encrypts to more.
pub const MAX_ENCRYPTED_SEGMENT: usize = 255;

/// How file names are encrypted (rclone's `filename_encryption`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameMode {
    Standard,
    Off,
}

/// Why a name on the remote is not one this remote's keys wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is not base32hex")]
    NotBase32,
    #[error("the name is not a whole number of cipher blocks")]
    NotBlocks,
    #[error("the name is too long to be an encrypted one")]
    TooLong,
    #[error("the name does not decrypt with this password (bad padding)")]
    BadPadding,
    #[error("the name decrypts to bytes that are not text")]
    NotUtf8,
    #[error("the name decrypts to a path separator, '.' or '..'")]
    NotASegment,
    #[error("the name does not end in .bin")]
    NoSuffix,
    #[error("the name is only a version stamp")]
    OnlyVersion,
}

/// Encrypts and decrypts paths (`a/b/c`, segments separated by `/`).
pub struct NameCipher {
    aes: Aes256,
    tweak: [u8; 16],
    mode: NameMode,
    dir_names: bool,
}

const SUFFIX: &str = ".bin";

impl NameCipher {
    pub fn new(keys: &Keys, mode: NameMode, dir_names: bool) -> NameCipher {
        NameCipher {
            aes: keys.name_cipher(),
            tweak: keys.tweak,
            mode,
            dir_names,
        }
    }

    /// The encrypted form of a file's path; an error for a name too long
    /// to encrypt, or (names kept plain) one that is only a version stamp,
    /// which would not read back.
    pub fn encrypt_file(&self, path: &str) -> Result<String, NameError> {
        match self.mode {
            NameMode::Off => {
                let name = path.rsplit('/').next().unwrap_or(path);
                match remove_version(name) {
                    Some((rest, _)) if rest.is_empty() => Err(NameError::OnlyVersion),
                    _ => Ok(format!("{path}{SUFFIX}")),
                }
            }
            NameMode::Standard => self.encrypt_segments(path),
        }
    }

    /// The encrypted form of a folder's path.
    pub fn encrypt_dir(&self, path: &str) -> Result<String, NameError> {
        match self.mode {
            NameMode::Off => Ok(path.to_owned()),
            NameMode::Standard if !self.dir_names => Ok(path.to_owned()),
            NameMode::Standard => self.encrypt_segments(path),
        }
    }

    /// The plaintext path of an encrypted file path.
    pub fn decrypt_file(&self, path: &str) -> Result<String, NameError> {
        match self.mode {
            NameMode::Off => match path.strip_suffix(SUFFIX) {
                Some(plain) if !plain.is_empty() && !plain.ends_with('/') => {
                    // A name that is nothing but a version stamp is not
                    // one rclone wrote.
                    let name = plain.rsplit('/').next().unwrap_or(plain);
                    match remove_version(name) {
                        Some((rest, _)) if rest.is_empty() => Err(NameError::OnlyVersion),
                        _ => Ok(plain.to_owned()),
                    }
                }
                _ => Err(NameError::NoSuffix),
            },
            NameMode::Standard => self.decrypt_segments(path),
        }
    }

    /// The plaintext path of an encrypted folder path.
    pub fn decrypt_dir(&self, path: &str) -> Result<String, NameError> {
        match self.mode {
            NameMode::Off => Ok(path.to_owned()),
            NameMode::Standard if !self.dir_names => Ok(path.to_owned()),
            NameMode::Standard => self.decrypt_segments(path),
        }
    }

    fn encrypt_segments(&self, path: &str) -> Result<String, NameError> {
        let segments: Vec<&str> = path.split('/').collect();
        let last = segments.len() - 1;
        let mut out = Vec::with_capacity(segments.len());
        for (i, s) in segments.iter().enumerate() {
            out.push(match (i == last, remove_version(s)) {
                // A name that is only a stamp is encrypted whole: with
                // the stamp taken off, nothing would be left to hide it.
                (true, Some((rest, stamp))) if !rest.is_empty() => {
                    add_version(&self.encrypt_segment(&rest)?, stamp)
                }
                (true, _) => self.encrypt_segment(s)?,
                (false, _) if self.dir_names => self.encrypt_segment(s)?,
                (false, _) => (*s).to_owned(),
            });
        }
        Ok(out.join("/"))
    }

    fn decrypt_segments(&self, path: &str) -> Result<String, NameError> {
        let segments: Vec<&str> = path.split('/').collect();
        let last = segments.len() - 1;
        let mut out = Vec::with_capacity(segments.len());
        for (i, s) in segments.iter().enumerate() {
            out.push(match (i == last, remove_version(s)) {
                // Only a stamp: stored as it is, so not written through
                // this encryption (a foreign name).
                (true, Some((rest, _))) if rest.is_empty() => return Err(NameError::OnlyVersion),
                (true, Some((rest, stamp))) => add_version(&self.decrypt_segment(&rest)?, stamp),
                (true, None) => self.decrypt_segment(s)?,
                (false, _) if self.dir_names => self.decrypt_segment(s)?,
                (false, _) => (*s).to_owned(),
            });
        }
        Ok(out.join("/"))
    }

    /// One segment: PKCS#7 to whole blocks, EME, lowercase base32hex; an
    /// error past EME's block limit (far past any file system's name
    /// limit), never the name unencrypted.
    pub fn encrypt_segment(&self, plain: &str) -> Result<String, NameError> {
        if plain.is_empty() {
            return Ok(String::new());
        }
        let pad = eme::BLOCK - plain.len() % eme::BLOCK;
        let mut data = plain.as_bytes().to_vec();
        data.resize(plain.len() + pad, pad as u8);
        if data.len() / eme::BLOCK > eme::MAX_BLOCKS {
            return Err(NameError::TooLong);
        }
        eme::transform(&self.aes, &self.tweak, &mut data, Direction::Encrypt);
        Ok(BASE32HEX_NOPAD.encode(&data).to_ascii_lowercase())
    }

    /// The plaintext of one encrypted segment (either letter case, as
    /// rclone reads them).
    pub fn decrypt_segment(&self, encrypted: &str) -> Result<String, NameError> {
        if encrypted.is_empty() {
            return Ok(String::new());
        }
        let mut data = BASE32HEX_NOPAD
            .decode(encrypted.to_ascii_uppercase().as_bytes())
            .map_err(|_| NameError::NotBase32)?;
        if data.is_empty() || !data.len().is_multiple_of(eme::BLOCK) {
            return Err(NameError::NotBlocks);
        }
        if data.len() / eme::BLOCK > eme::MAX_BLOCKS {
            return Err(NameError::TooLong);
        }
        eme::transform(&self.aes, &self.tweak, &mut data, Direction::Decrypt);
        let pad = usize::from(*data.last().expect("at least one block"));
        if pad == 0
            || pad > eme::BLOCK
            || data[data.len() - pad..].iter().any(|&b| b as usize != pad)
        {
            return Err(NameError::BadPadding);
        }
        data.truncate(data.len() - pad);
        let plain = String::from_utf8(data).map_err(|_| NameError::NotUtf8)?;
        // A segment is one name: a separator inside it would add a level
        // that no folder of the listing has.
        if plain.contains('/') || plain == "." || plain == ".." {
            return Err(NameError::NotASegment);
        }
        Ok(plain)
    }
}

/// The length of a version stamp, `-vYYYY-MM-DD-HHMMSS-mmm`.
const STAMP_LEN: usize = 23;

/// A name's base and extension as rclone splits them: the extension from
/// the last dot on, except for a name that starts with its only dot.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// `name` without the version stamp that ends its base, and the stamp;
/// `None` when it has none (a stamp must be a real date and time).
fn remove_version(name: &str) -> Option<(String, &str)> {
    let (base, ext) = split_ext(name);
    let start = base.len().checked_sub(STAMP_LEN)?;
    if !base.is_char_boundary(start) {
        return None;
    }
    let stamp = &base[start..];
    valid_stamp(stamp.as_bytes()).then(|| (format!("{}{ext}", &base[..start]), stamp))
}

/// `name` with `stamp` put back before its extension.
fn add_version(name: &str, stamp: &str) -> String {
    let (base, ext) = split_ext(name);
    format!("{base}{stamp}{ext}")
}

/// Whether `s` is `-vYYYY-MM-DD-HHMMSS-mmm` with a date and time that
/// exist (as Go's time parsing, which rclone uses, requires).
fn valid_stamp(s: &[u8]) -> bool {
    let shape = b"-vdddd-dd-dd-dddddd-ddd";
    if s.len() != shape.len()
        || !s.iter().zip(shape).all(|(c, want)| match want {
            b'd' => c.is_ascii_digit(),
            other => c == other,
        })
    {
        return false;
    }
    let number = |range: std::ops::Range<usize>| {
        s[range]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (number(2..6), number(7..9), number(10..12));
    let (hour, minute, second) = (number(13..15), number(15..17), number(17..19));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day) && hour < 24 && minute < 60 && second < 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero_keys() -> Keys {
        Keys::from_bytes(&[0; 80])
    }

    // rclone's published vectors for the zero keys
    // (backend/crypt/cipher_test.go, TestEncryptSegmentBase32).
    const VECTORS: &[(&str, &str)] = &[
        ("1", "p0e52nreeaj0a5ea7s64m4j72s"),
        ("12", "l42g6771hnv3an9cgc8cr2n1ng"),
        ("123", "qgm4avr35m5loi1th53ato71v0"),
        ("1234", "8ivr2e9plj3c3esisjpdisikos"),
        ("123456789012345", "eeam3li4rnommi3a762h5n7meg"),
        (
            "1234567890123456",
            "mijbj0frqf6ms7frcr6bd9h0env53jv96pjaaoirk7forcgpt70g",
        ),
    ];

    #[test]
    fn segments_match_rclones_vectors_both_ways() {
        let names = NameCipher::new(&zero_keys(), NameMode::Standard, true);
        for (plain, encrypted) in VECTORS {
            assert_eq!(names.encrypt_segment(plain).unwrap(), *encrypted, "{plain}");
            assert_eq!(names.decrypt_segment(encrypted).unwrap(), *plain);
            assert_eq!(
                names
                    .decrypt_segment(&encrypted.to_ascii_uppercase())
                    .unwrap(),
                *plain
            );
        }
    }

    #[test]
    fn each_segment_is_encrypted_on_its_own_and_folders_can_stay_plain() {
        let names = NameCipher::new(&zero_keys(), NameMode::Standard, true);
        let path = names.encrypt_file("1/12/123").unwrap();
        assert_eq!(
            path,
            "p0e52nreeaj0a5ea7s64m4j72s/l42g6771hnv3an9cgc8cr2n1ng/qgm4avr35m5loi1th53ato71v0"
        );
        assert_eq!(names.decrypt_file(&path).unwrap(), "1/12/123");
        assert_eq!(
            names.encrypt_dir("1/12").unwrap(),
            names.encrypt_file("1/12").unwrap()
        );

        let plain_dirs = NameCipher::new(&zero_keys(), NameMode::Standard, false);
        assert_eq!(
            plain_dirs.encrypt_file("1/12/123").unwrap(),
            "1/12/qgm4avr35m5loi1th53ato71v0"
        );
        assert_eq!(plain_dirs.encrypt_dir("1/12").unwrap(), "1/12");
        assert_eq!(
            plain_dirs
                .decrypt_file("1/12/qgm4avr35m5loi1th53ato71v0")
                .unwrap(),
            "1/12/123"
        );

        let off = NameCipher::new(&zero_keys(), NameMode::Off, true);
        assert_eq!(off.encrypt_file("a/b.txt").unwrap(), "a/b.txt.bin");
        assert_eq!(off.encrypt_dir("a/b").unwrap(), "a/b");
        assert_eq!(off.decrypt_file("a/b.txt.bin").unwrap(), "a/b.txt");
        assert_eq!(off.decrypt_file("a/b.txt"), Err(NameError::NoSuffix));
        assert_eq!(off.decrypt_file(".bin"), Err(NameError::NoSuffix));
    }

    #[test]
    fn version_stamps_stay_outside_the_encrypted_name_as_rclone_keeps_them() {
        let names = NameCipher::new(&zero_keys(), NameMode::Standard, true);
        let stamp = "-v2021-02-28-235959-999";
        let encrypted = names.encrypt_file(&format!("1/12{stamp}.txt")).unwrap();
        let expected_name = add_version(&names.encrypt_segment("12.txt").unwrap(), stamp);
        assert_eq!(
            encrypted,
            format!("p0e52nreeaj0a5ea7s64m4j72s/{expected_name}")
        );
        assert!(expected_name.ends_with(stamp));
        assert_eq!(
            names.decrypt_file(&encrypted).unwrap(),
            format!("1/12{stamp}.txt")
        );
        // Not a date, or not at the end of the base: an ordinary name.
        for plain in [
            "a-v2021-02-29-000000-000.txt",
            "a-v2021-02-28-240000-000",
            "a-v2021-01-01-000000-000x",
        ] {
            assert_eq!(remove_version(plain), None, "{plain}");
            assert_eq!(
                names
                    .decrypt_file(&names.encrypt_file(plain).unwrap())
                    .unwrap(),
                plain
            );
        }
        assert_eq!(
            remove_version(".hidden-v2024-02-29-120000-000"),
            Some((".hidden".to_owned(), "-v2024-02-29-120000-000"))
        );
        let off = NameCipher::new(&zero_keys(), NameMode::Off, true);
        assert_eq!(
            off.decrypt_file("d/-v2021-01-01-000000-000.bin"),
            Err(NameError::OnlyVersion)
        );
        assert_eq!(
            off.encrypt_file("d/-v2021-01-01-000000-000"),
            Err(NameError::OnlyVersion),
            "a name kept plain that would not read back is refused"
        );
        assert_eq!(
            off.decrypt_file("d/a-v2021-01-01-000000-000.txt.bin")
                .unwrap(),
            "d/a-v2021-01-01-000000-000.txt"
        );
    }

    #[test]
    fn a_name_that_is_only_a_version_stamp_is_encrypted_whole_and_never_read_as_plain() {
        let names = NameCipher::new(&zero_keys(), NameMode::Standard, true);
        let stamp = "-v2021-01-01-000000-000";
        let encrypted = names.encrypt_file(&format!("1/{stamp}")).unwrap();
        assert!(!encrypted.contains(stamp), "{encrypted}");
        assert_eq!(
            names.decrypt_file(&encrypted).unwrap(),
            format!("1/{stamp}")
        );
        // Found on the remote as it is: nothing of it was encrypted, so
        // it is foreign, not a plain file.
        let dir = names.encrypt_dir("1").unwrap();
        assert_eq!(
            names.decrypt_file(&format!("{dir}/{stamp}")),
            Err(NameError::OnlyVersion)
        );
        assert_eq!(names.decrypt_file(stamp), Err(NameError::OnlyVersion));
    }

    #[test]
    fn a_name_past_emes_block_limit_is_an_error_never_plain_base32() {
        let names = NameCipher::new(&zero_keys(), NameMode::Standard, true);
        let longest = "a".repeat(eme::MAX_BLOCKS * eme::BLOCK - 1);
        assert!(names.encrypt_segment(&longest).is_ok());
        let over = "a".repeat(eme::MAX_BLOCKS * eme::BLOCK);
        assert_eq!(names.encrypt_segment(&over), Err(NameError::TooLong));
        assert_eq!(
            names.encrypt_file(&format!("d/{over}")),
            Err(NameError::TooLong)
        );
    }

    #[test]
    fn foreign_names_are_errors_not_garbage() {
        let names = NameCipher::new(&zero_keys(), NameMode::Standard, true);
        assert_eq!(
            names.decrypt_segment("notes.txt"),
            Err(NameError::NotBase32)
        );
        assert_eq!(names.decrypt_segment("abcdefgh"), Err(NameError::NotBlocks));
        let other = NameCipher::new(&Keys::from_bytes(&[1; 80]), NameMode::Standard, true);
        let foreign = other.encrypt_segment("a name of some length").unwrap();
        assert!(names.decrypt_segment(&foreign).is_err());
        for sneaky in ["a/b", "..", "."] {
            assert_eq!(
                names.decrypt_segment(&names.encrypt_segment(sneaky).unwrap()),
                Err(NameError::NotASegment)
            );
        }
        let unicode = "Ünïcödé ✓ 名前";
        assert_eq!(
            names
                .decrypt_segment(&names.encrypt_segment(unicode).unwrap())
                .unwrap(),
            unicode
        );
    }
}
