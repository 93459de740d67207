//! EME, the wide-block mode of Halevi and Rogaway ("A Parallelizable
//! Enciphering Mode", 2003) over AES-256: a whole name of 1 to 128 blocks
//! is enciphered as one unit, so equal names encrypt equally (names must be
//! found again) while two names with a common prefix share no prefix once
//! encrypted. rclone's crypt remote names files this way; no maintained
//! Rust crate implements it, and it is small.
//!
//! Multiplication by two is in GF(2^128) with the blocks read little-endian
//! (the reduction constant 135 enters at byte 0), as rclone's EME does. The
//! mask table starts from the encryption of the zero block in both
//! directions.

use aes::Aes256;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt};

pub const BLOCK: usize = 16;
/// The most blocks one transform takes (2048 bytes).
pub const MAX_BLOCKS: usize = 128;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Encrypt,
    Decrypt,
}

type Block = [u8; BLOCK];

fn times_two(block: &Block) -> Block {
    let mut out = [0u8; BLOCK];
    out[0] = block[0] << 1;
    if block[15] & 0x80 != 0 {
        out[0] ^= 135;
    }
    for j in 1..BLOCK {
        out[j] = (block[j] << 1) | (block[j - 1] >> 7);
    }
    out
}

fn xor(a: &Block, b: &Block) -> Block {
    let mut out = [0u8; BLOCK];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

fn aes(cipher: &Aes256, direction: Direction, block: &Block) -> Block {
    let mut b = GenericArray::clone_from_slice(block);
    match direction {
        Direction::Encrypt => cipher.encrypt_block(&mut b),
        Direction::Decrypt => cipher.decrypt_block(&mut b),
    }
    b.into()
}

/// Enciphers (or deciphers) `data` in place under `cipher` and `tweak`.
/// `data` must be 1 to [`MAX_BLOCKS`] whole blocks; callers check.
pub fn transform(cipher: &Aes256, tweak: &Block, data: &mut [u8], direction: Direction) {
    assert!(
        data.len().is_multiple_of(BLOCK) && (1..=MAX_BLOCKS).contains(&(data.len() / BLOCK)),
        "EME takes 1 to {MAX_BLOCKS} whole blocks"
    );
    let m = data.len() / BLOCK;
    let mut masks = Vec::with_capacity(m);
    let mut l = aes(cipher, Direction::Encrypt, &[0u8; BLOCK]);
    for _ in 0..m {
        l = times_two(&l);
        masks.push(l);
    }
    let mut blocks: Vec<Block> = data
        .chunks_exact(BLOCK)
        .zip(&masks)
        .map(|(chunk, mask)| {
            let chunk: &Block = chunk.try_into().expect("a whole block");
            aes(cipher, direction, &xor(chunk, mask))
        })
        .collect();
    let mp = blocks.iter().fold(*tweak, |acc, b| xor(&acc, b));
    let mc = aes(cipher, direction, &mp);
    let mut mask = xor(&mp, &mc);
    for block in blocks.iter_mut().skip(1) {
        mask = times_two(&mask);
        *block = xor(block, &mask);
    }
    let first = blocks
        .iter()
        .skip(1)
        .fold(xor(&mc, tweak), |acc, b| xor(&acc, b));
    blocks[0] = first;
    for ((chunk, block), mask) in data.chunks_exact_mut(BLOCK).zip(&blocks).zip(&masks) {
        chunk.copy_from_slice(&xor(&aes(cipher, direction, block), mask));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::KeyInit;

    #[test]
    fn deciphering_undoes_enciphering_for_every_width() {
        let cipher = Aes256::new(&GenericArray::from([7u8; 32]));
        let tweak = [3u8; BLOCK];
        for m in [1, 2, 3, 17, MAX_BLOCKS] {
            let plain: Vec<u8> = (0..m * BLOCK).map(|i| (i * 31 % 251) as u8).collect();
            let mut data = plain.clone();
            transform(&cipher, &tweak, &mut data, Direction::Encrypt);
            assert_ne!(data, plain);
            transform(&cipher, &tweak, &mut data, Direction::Decrypt);
            assert_eq!(data, plain, "{m} blocks");
        }
    }

    #[test]
    fn one_changed_byte_changes_every_block() {
        let cipher = Aes256::new(&GenericArray::from([1u8; 32]));
        let tweak = [0u8; BLOCK];
        let mut a = vec![0u8; 4 * BLOCK];
        let mut b = a.clone();
        b[4 * BLOCK - 1] = 1;
        transform(&cipher, &tweak, &mut a, Direction::Encrypt);
        transform(&cipher, &tweak, &mut b, Direction::Encrypt);
        for (x, y) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
            assert_ne!(x, y);
        }
    }
}
