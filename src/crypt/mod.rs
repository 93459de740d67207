//! rclone's `crypt` format, so that a remote holds only ciphertext and
//! anyone with the password can read it back with a plain rclone crypt
//! remote, without Prism Sync.
//!
//! - [`Keys`]: the data key, name key and name tweak, derived from the
//!   password and salt with scrypt exactly as rclone does.
//! - [`content`]: streaming encryption and decryption of file contents
//!   (64 KiB chunks, XSalsa20-Poly1305), exact sizes both ways, and
//!   reading from any chunk on for ranged reads.
//! - [`names`]: name encryption "standard" (EME over AES-256, base32hex)
//!   or "off" (`.bin`), with or without folder names.
//!
//! Crates: `scrypt` and `crypto_secretbox` (XSalsa20-Poly1305 as NaCl's
//! secretbox, the successor of `xsalsa20poly1305`) and `aes` are RustCrypto's
//! audited, maintained implementations; `data-encoding` does base32hex
//! without padding. EME has no maintained crate and is written here
//! ([`eme`]), checked against rclone's published vectors.

pub mod content;
pub mod eme;
mod keys;
pub mod names;

pub use content::{ContentError, Decryptor, Encryptor, Nonce, decrypted_size, encrypted_size};
pub use keys::{DEFAULT_SALT, Keys};
pub use names::{NameCipher, NameError, NameMode};

#[cfg(test)]
mod tests;
