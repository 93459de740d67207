//! The keys of a crypt remote, derived from its password and salt as
//! rclone derives them: scrypt with N = 16384, r = 8, p = 1 into 80 bytes,
//! split into the data key (32), the name key (32) and the name tweak
//! (16). Without a salt ("password2"), rclone's fixed default salt.

use std::fmt;

use aes::Aes256;
use aes::cipher::KeyInit;
use aes::cipher::generic_array::GenericArray;

/// rclone's salt when none is configured.
pub const DEFAULT_SALT: [u8; 16] = [
    0xA8, 0x0D, 0xF4, 0x3A, 0x8F, 0xBD, 0x03, 0x08, 0xA7, 0xCA, 0xB8, 0x3E, 0x58, 0x1F, 0x86, 0xB1,
];

/// The three keys of a crypt remote. Prints as `<redacted>`.
#[derive(Clone)]
pub struct Keys {
    pub(super) data: [u8; 32],
    pub(super) name: [u8; 32],
    pub(super) tweak: [u8; 16],
}

impl Keys {
    /// Derives the keys from `password` and `salt` (rclone's `password`
    /// and `password2`; an empty or absent salt means the default one).
    /// scrypt takes a few tens of milliseconds by design: derive once per
    /// remote, not per file.
    pub fn derive(password: &str, salt: Option<&str>) -> Keys {
        let salt = match salt {
            Some(s) if !s.is_empty() => s.as_bytes(),
            _ => &DEFAULT_SALT,
        };
        // The length in `Params` only serves password-hash strings; the output
        // buffer decides how many bytes come out.
        let params = scrypt::Params::new(14, 8, 1, scrypt::Params::RECOMMENDED_LEN)
            .expect("valid scrypt parameters");
        let mut out = [0u8; 80];
        scrypt::scrypt(password.as_bytes(), salt, &params, &mut out)
            .expect("80 bytes is a valid scrypt output length");
        Keys::from_bytes(&out)
    }

    /// Keys from their 80 bytes (data, name, tweak). All zeros are the
    /// keys rclone's own tests use for an empty password.
    pub fn from_bytes(bytes: &[u8; 80]) -> Keys {
        let mut keys = Keys {
            data: [0; 32],
            name: [0; 32],
            tweak: [0; 16],
        };
        keys.data.copy_from_slice(&bytes[..32]);
        keys.name.copy_from_slice(&bytes[32..64]);
        keys.tweak.copy_from_slice(&bytes[64..]);
        keys
    }

    pub(super) fn name_cipher(&self) -> Aes256 {
        Aes256::new(&GenericArray::from(self.name))
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // rclone's published key vectors (backend/crypt/cipher_test.go).
    #[test]
    fn keys_match_rclones_derivation() {
        let keys = Keys::derive("potato", None);
        assert_eq!(
            keys.data[..8],
            [0x74, 0x55, 0xC7, 0x1A, 0xB1, 0x7C, 0x86, 0x5B]
        );
        assert_eq!(
            keys.name[..8],
            [0x76, 0x5D, 0xA2, 0x7A, 0xB1, 0x5D, 0x77, 0xF9]
        );
        assert_eq!(
            keys.tweak,
            [
                0xC1, 0x8D, 0x59, 0x32, 0xF5, 0x5B, 0x28, 0x28, 0xC5, 0xE1, 0xE8, 0x72, 0x15, 0x52,
                0x03, 0x10
            ]
        );
        let salted = Keys::derive("potato", Some("sausage"));
        assert_eq!(
            salted.data[..8],
            [0x8e, 0x9b, 0x6b, 0x99, 0xf8, 0x69, 0x04, 0x67]
        );
        assert_eq!(
            salted.tweak,
            [
                0xf1, 0x7f, 0xd7, 0x14, 0x1d, 0x65, 0x27, 0x4f, 0x36, 0x3f, 0xc2, 0xa0, 0x4d, 0xd2,
                0x14, 0x8a
            ]
        );
        assert_eq!(Keys::derive("potato", Some("")).data, keys.data);
        assert_eq!(format!("{keys:?}"), "<redacted>");
    }
}
