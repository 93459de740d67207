//! The content format against rclone's published vectors, and its failure
//! modes. (Interoperation with the real `rclone` binary is tested in
//! `tests/e2e/crypt_oracle.rs`.)

use std::io::Read;

use super::content::{self, CHUNK, SEALED_CHUNK, chunk_offset};
use super::*;

fn zero_keys() -> Keys {
    Keys::from_bytes(&[0; 80])
}

/// The nonce rclone's tests fix: bytes 1 to 24.
fn counting_nonce() -> Nonce {
    let mut n = [0u8; 24];
    for (i, b) in n.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    Nonce(n)
}

fn encrypt(plain: &[u8], keys: &Keys, nonce: Nonce) -> Vec<u8> {
    let mut out = Vec::new();
    Encryptor::new(plain, keys, nonce)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn decrypt(cipher: &[u8], keys: &Keys) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    Decryptor::new(cipher, keys).read_to_end(&mut out)?;
    Ok(out)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

const HEADER: [u8; 32] = [
    0x52, 0x43, 0x4c, 0x4f, 0x4e, 0x45, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
];

// rclone's published vectors (backend/crypt/cipher_test.go: file0, file1,
// file16) for the zero keys and the counting nonce.
#[test]
fn contents_match_rclones_vectors() {
    let keys = zero_keys();
    assert_eq!(encrypt(b"", &keys, counting_nonce()), HEADER);
    let mut file1 = HEADER.to_vec();
    file1.extend_from_slice(&[
        0x09, 0x5b, 0x44, 0x6c, 0xd6, 0x23, 0x7b, 0xbc, 0xb0, 0x8d, 0x09, 0xfb, 0x52, 0x4c, 0xe5,
        0x65, 0xAA,
    ]);
    assert_eq!(encrypt(&[1], &keys, counting_nonce()), file1);
    let mut file16 = HEADER.to_vec();
    file16.extend_from_slice(&[
        0xb9, 0xc4, 0x55, 0x2a, 0x27, 0x10, 0x06, 0x29, 0x18, 0x96, 0x0a, 0x3e, 0x60, 0x8c, 0x29,
        0xb9, 0xaa, 0x8a, 0x5e, 0x1e, 0x16, 0x5b, 0x6d, 0x07, 0x5d, 0xe4, 0xe9, 0xbb, 0x36, 0x7f,
        0xd6, 0xd4,
    ]);
    let sixteen: Vec<u8> = (1..=16).collect();
    assert_eq!(encrypt(&sixteen, &keys, counting_nonce()), file16);
    assert_eq!(decrypt(&file16, &keys).unwrap(), sixteen);
    assert_eq!(decrypt(&HEADER, &keys).unwrap(), b"");
}

#[test]
fn sizes_are_exact_both_ways() {
    let mb = 1u64 << 20;
    for (plain, encrypted) in [
        (0, 32),
        (1, 32 + 16 + 1),
        (CHUNK, 32 + 16 + CHUNK),
        (CHUNK + 1, 32 + 16 + CHUNK + 16 + 1),
        (mb, 32 + 16 * (16 + CHUNK)),
        ((1 << 40) + 1, 32 + 16_777_216 * (16 + CHUNK) + 16 + 1),
    ] {
        assert_eq!(encrypted_size(plain), encrypted, "{plain}");
        assert_eq!(decrypted_size(encrypted), Ok(plain), "{encrypted}");
    }
    for impossible in [0, 7, 31] {
        assert_eq!(decrypted_size(impossible), Err(ContentError::TooShort));
    }
    for impossible in [33, 48, 32 + SEALED_CHUNK + 16] {
        assert_eq!(
            decrypted_size(impossible),
            Err(ContentError::TruncatedChunk)
        );
    }
}

#[test]
fn every_size_round_trips_in_chunks_with_the_size_the_format_promises() {
    let keys = Keys::derive("a password", Some("a salt"));
    for len in [
        0,
        1,
        15,
        16,
        17,
        CHUNK as usize - 1,
        CHUNK as usize,
        CHUNK as usize + 1,
        3 * CHUNK as usize,
    ] {
        let plain = data(len);
        let nonce = Nonce::random().unwrap();
        let cipher = encrypt(&plain, &keys, nonce);
        assert_eq!(cipher.len() as u64, encrypted_size(len as u64), "{len}");
        let mut out = Vec::new();
        Decryptor::new(&cipher[..], &keys)
            .expecting(len as u64)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain, "{len}");
    }
}

#[test]
fn nonces_carry_through_every_byte() {
    let mut all = [0xffu8; 24];
    all[23] = 0;
    assert_eq!(Nonce(all).add(1).0, {
        let mut n = [0u8; 24];
        n[23] = 1;
        n
    });
    assert_eq!(Nonce([0; 24]).add(0x1_0000).0[..3], [0, 0, 1]);
    let mut almost = [0u8; 24];
    almost[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(Nonce(almost).add(2).0[..9], [1, 0, 0, 0, 0, 0, 0, 0, 1]);
}

#[test]
fn a_reader_can_start_at_any_chunk() {
    let keys = zero_keys();
    let plain = data(3 * CHUNK as usize + 100);
    let nonce = Nonce::random().unwrap();
    let cipher = encrypt(&plain, &keys, nonce);
    assert_eq!(content::read_nonce(&mut &cipher[..]).unwrap(), nonce);
    for k in 0..4u64 {
        let mut out = Vec::new();
        Decryptor::at_chunk(&cipher[chunk_offset(k) as usize..], &keys, nonce, k)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain[(k * CHUNK) as usize..], "chunk {k}");
    }
}

fn error_of(result: std::io::Result<Vec<u8>>) -> ContentError {
    let e = result.expect_err("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    e.into_inner()
        .and_then(|inner| inner.downcast::<ContentError>().ok())
        .map(|b| *b)
        .expect("a content error")
}

#[test]
fn a_wrong_key_a_flipped_bit_or_a_cut_is_an_error_never_garbage() {
    let keys = Keys::derive("right", None);
    let plain = data(2 * CHUNK as usize + 10);
    let cipher = encrypt(&plain, &keys, Nonce::random().unwrap());

    let wrong = Keys::derive("wrong", None);
    assert_eq!(
        error_of(decrypt(&cipher, &wrong)),
        ContentError::BadChunk { chunk: 0 }
    );

    let mut flipped = cipher.clone();
    flipped[chunk_offset(1) as usize + 20] ^= 1;
    let mut reader = Decryptor::new(&flipped[..], &keys);
    let mut first = vec![0u8; CHUNK as usize];
    reader.read_exact(&mut first).unwrap();
    assert_eq!(first, plain[..CHUNK as usize]);
    let mut rest = Vec::new();
    let e = reader.read_to_end(&mut rest).unwrap_err();
    assert!(e.to_string().contains("chunk 1"), "{e}");
    assert!(
        rest.is_empty(),
        "nothing of a chunk that failed is handed out"
    );

    // Cut inside the last chunk: it no longer authenticates.
    assert_eq!(
        error_of(decrypt(&cipher[..cipher.len() - 1], &keys)),
        ContentError::BadChunk { chunk: 2 }
    );
    // Cut inside a chunk's tag.
    assert_eq!(
        error_of(decrypt(&cipher[..chunk_offset(2) as usize + 5], &keys)),
        ContentError::TruncatedChunk
    );
    // Cut at a chunk boundary: only the expected size tells.
    let mut out = Vec::new();
    let e = Decryptor::new(&cipher[..chunk_offset(2) as usize], &keys)
        .expecting(plain.len() as u64)
        .read_to_end(&mut out)
        .unwrap_err();
    assert!(e.to_string().contains("10 bytes early"), "{e}");
    // Not a crypt file at all.
    assert_eq!(
        error_of(decrypt(b"plain text, not an encrypted file at all", &keys)),
        ContentError::BadMagic
    );
    assert_eq!(
        error_of(decrypt(b"RCLONE\0\0", &keys)),
        ContentError::TooShort
    );
    // Bytes appended to a file make its last chunk fail, and bytes
    // after a full last chunk fail as a next chunk.
    let mut extended = encrypt(b"short", &keys, Nonce::random().unwrap());
    extended.extend_from_slice(&[0u8; 40]);
    assert_eq!(
        error_of(decrypt(&extended, &keys)),
        ContentError::BadChunk { chunk: 0 }
    );
    let mut extended = encrypt(&data(CHUNK as usize), &keys, Nonce::random().unwrap());
    extended.extend_from_slice(&[0u8; 40]);
    assert_eq!(
        error_of(decrypt(&extended, &keys)),
        ContentError::BadChunk { chunk: 1 }
    );
}

#[test]
fn after_an_error_every_later_read_answers_the_same_error() {
    let keys = Keys::derive("right", None);
    let plain = data(2 * CHUNK as usize + 10);
    let cipher = encrypt(&plain, &keys, Nonce::random().unwrap());
    let again = |reader: &mut dyn Read, first: ContentError| {
        for _ in 0..2 {
            let mut buf = vec![0u8; 2 * CHUNK as usize];
            assert_eq!(error_of(reader.read(&mut buf).map(|_| Vec::new())), first);
            let mut rest = Vec::new();
            assert_eq!(error_of(reader.read_to_end(&mut rest).map(|_| rest)), first);
        }
    };

    // A chunk that fails to authenticate: its ciphertext is never
    // handed out afterwards.
    let wrong = Keys::derive("wrong", None);
    let mut reader = Decryptor::new(&cipher[..], &wrong);
    let first = error_of(decrypt_with(&mut reader));
    assert_eq!(first, ContentError::BadChunk { chunk: 0 });
    again(&mut reader, first);

    // Cut at a chunk boundary: a second read does not end cleanly.
    let mut reader =
        Decryptor::new(&cipher[..chunk_offset(2) as usize], &keys).expecting(plain.len() as u64);
    let mut out = Vec::new();
    let first = error_of(reader.read_to_end(&mut out).map(|_| Vec::new()));
    assert_eq!(first, ContentError::EndsEarly { missing: 10 });
    again(&mut reader, first);

    // Cut inside a chunk's tag: nothing stale comes out after.
    let mut reader = Decryptor::new(&cipher[..chunk_offset(2) as usize + 5], &keys);
    let mut out = Vec::new();
    let first = error_of(reader.read_to_end(&mut out).map(|_| Vec::new()));
    assert_eq!(first, ContentError::TruncatedChunk);
    again(&mut reader, first);
}

fn decrypt_with(reader: &mut dyn Read) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map(|_| out)
}

#[test]
fn fresh_nonces_make_equal_plaintexts_differ() {
    let keys = zero_keys();
    let a = encrypt(b"same", &keys, Nonce::random().unwrap());
    let b = encrypt(b"same", &keys, Nonce::random().unwrap());
    assert_ne!(a, b);
}
