//! The mutations that turn a valid input into a nearly valid one: AFL-style
//! "havoc" (a few stacked edits per case) with edits chosen for parsers of
//! text formats: byte and bit flips, truncation, deletion, duplication,
//! splicing with another input, tokens from the target's dictionary, deep
//! nesting (a chunk repeated thousands of times), long runs, huge and
//! boundary numbers, invalid UTF-8 and percent-encoding tricks.
//!
//! Everything is drawn from the caller's seeded [`Rng`], so a run is
//! reproducible from its seed.

use fastrand::Rng;

/// Numbers at the edges of the integer types, and ones no type holds.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"-0",
    b"-1",
    b"1",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999999999999",
    b"1e308",
    b"1e309",
    b"-1e309",
    b"0x10",
    b"1_000",
    b"nan",
    b"inf",
    b"007",
];

/// Byte sequences that are not UTF-8 (stray continuation, overlong NUL,
/// a UTF-16 surrogate, past U+10FFFF, a sequence cut short) and some that
/// are but often surprise (NUL, BOM, a right-to-left override, combining
/// marks, a four-byte emoji).
const ENCODINGS: &[&[u8]] = &[
    b"\x80",
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\xc3",
    b"\x00",
    b"\xef\xbb\xbf",
    "\u{202e}".as_bytes(),
    "e\u{301}".as_bytes(),
    "\u{1f600}".as_bytes(),
    b"\r\n",
    b"\t",
    b"\x1b[0m",
];

/// Escapes: malformed, signed, truncated, of separators and dots, of
/// bytes that do not decode to UTF-8.
const PERCENT: &[&[u8]] = &[
    b"%", b"%2", b"%zz", b"%+1", b"%-1", b"% 1", b"%00", b"%2F", b"%2f", b"%5C", b"%2e%2e", b"%2E",
    b"%25", b"%252F", b"%C3", b"%C3%28", b"%ff", b"%40", b"%3A", b"+", b"..", b"/../", b"\\..\\",
    b"//",
];

/// Applies one to six stacked mutations to `input`, drawing splices from
/// `other` and tokens from `dictionary`; the result is at most `max_len`
/// bytes.
pub fn havoc(
    rng: &mut Rng,
    input: &mut Vec<u8>,
    other: &[u8],
    dictionary: &[&[u8]],
    max_len: usize,
) {
    let rounds = 1 + rng.usize(..6);
    for _ in 0..rounds {
        mutate_once(rng, input, other, dictionary, max_len);
    }
    input.truncate(max_len);
}

fn mutate_once(
    rng: &mut Rng,
    input: &mut Vec<u8>,
    other: &[u8],
    dictionary: &[&[u8]],
    max_len: usize,
) {
    let pick = |rng: &mut Rng, tokens: &[&'static [u8]]| tokens[rng.usize(..tokens.len())];
    match rng.u8(..16) {
        0 => flip_bit(rng, input),
        1 => set_byte(rng, input),
        2 => delete_range(rng, input),
        3 => insert_random(rng, input),
        4 => duplicate_range(rng, input),
        5 => truncate(rng, input),
        6 => splice(rng, input, other),
        7 | 8 if !dictionary.is_empty() => {
            let token = dictionary[rng.usize(..dictionary.len())];
            insert_token(rng, input, token)
        }
        9 if !dictionary.is_empty() => {
            let token = dictionary[rng.usize(..dictionary.len())];
            overwrite_token(rng, input, token)
        }
        10 => repeat_chunk(rng, input, max_len),
        11 => long_run(rng, input, max_len),
        12 => replace_number(rng, input),
        13 => {
            let token = pick(rng, ENCODINGS);
            insert_token(rng, input, token)
        }
        14 => {
            let token = pick(rng, PERCENT);
            insert_token(rng, input, token)
        }
        _ => flip_case(rng, input),
    }
}

fn position(rng: &mut Rng, input: &[u8]) -> usize {
    rng.usize(..=input.len())
}

/// A short range most of the time, now and then a long one.
fn range(rng: &mut Rng, input: &[u8]) -> (usize, usize) {
    let start = position(rng, input);
    let left = input.len() - start;
    let len = if rng.u8(..4) == 0 {
        rng.usize(..=left)
    } else {
        rng.usize(..=left.min(16))
    };
    (start, start + len)
}

fn flip_bit(rng: &mut Rng, input: &mut [u8]) {
    if !input.is_empty() {
        let i = rng.usize(..input.len());
        input[i] ^= 1 << rng.u8(..8);
    }
}

fn set_byte(rng: &mut Rng, input: &mut [u8]) {
    const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff\n\r\t \"'<>&;:/\\%@?#=[]{},.-+*";
    if !input.is_empty() {
        let i = rng.usize(..input.len());
        input[i] = if rng.bool() {
            INTERESTING[rng.usize(..INTERESTING.len())]
        } else {
            rng.u8(..)
        };
    }
}

fn delete_range(rng: &mut Rng, input: &mut Vec<u8>) {
    let (start, end) = range(rng, input);
    input.drain(start..end);
}

fn insert_random(rng: &mut Rng, input: &mut Vec<u8>) {
    let at = position(rng, input);
    let bytes: Vec<u8> = (0..1 + rng.usize(..8)).map(|_| rng.u8(..)).collect();
    input.splice(at..at, bytes);
}

fn duplicate_range(rng: &mut Rng, input: &mut Vec<u8>) {
    let (start, end) = range(rng, input);
    let chunk = input[start..end].to_vec();
    let at = position(rng, input);
    input.splice(at..at, chunk);
}

fn truncate(rng: &mut Rng, input: &mut Vec<u8>) {
    let at = position(rng, input);
    input.truncate(at);
}

/// Joins a head of `input` to a tail of `other`, or drops a chunk of
/// `other` into `input`.
fn splice(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    if rng.bool() {
        let at = position(rng, input);
        let from = rng.usize(..=other.len());
        input.truncate(at);
        input.extend_from_slice(&other[from..]);
    } else {
        let (start, end) = range(rng, other);
        let at = position(rng, input);
        input.splice(at..at, other[start..end].iter().copied());
    }
}

fn insert_token(rng: &mut Rng, input: &mut Vec<u8>, token: &[u8]) {
    let at = position(rng, input);
    input.splice(at..at, token.iter().copied());
}

fn overwrite_token(rng: &mut Rng, input: &mut Vec<u8>, token: &[u8]) {
    let at = position(rng, input);
    let end = (at + token.len()).min(input.len());
    input.splice(at..end, token.iter().copied());
}

/// A chunk of the input (an open tag, a `[`, a path component) repeated
/// up to thousands of times: deep nesting and long lists.
fn repeat_chunk(rng: &mut Rng, input: &mut Vec<u8>, max_len: usize) {
    let start = position(rng, input);
    let len = rng.usize(1..=32).min(input.len() - start);
    if len == 0 {
        return;
    }
    let chunk = input[start..start + len].to_vec();
    let times = [2, 8, 65, 100, 1000, 10_000][rng.usize(..6)];
    let times = times.min(max_len.saturating_sub(input.len()) / len);
    let repeated: Vec<u8> = chunk.iter().copied().cycle().take(len * times).collect();
    input.splice(start..start, repeated);
}

/// A long run of one byte: long names, long numbers, long whitespace.
fn long_run(rng: &mut Rng, input: &mut Vec<u8>, max_len: usize) {
    let byte = match input.get(rng.usize(..input.len().max(1))) {
        Some(&byte) if rng.bool() => byte,
        _ => b"a0 9%/.\xff"[rng.usize(..8)],
    };
    let len = (1usize << rng.usize(4..=17)).min(max_len.saturating_sub(input.len()));
    let at = position(rng, input);
    input.splice(at..at, std::iter::repeat_n(byte, len));
}

/// Replaces a run of digits (or, without one, inserts) with a number from
/// [`NUMBERS`].
fn replace_number(rng: &mut Rng, input: &mut Vec<u8>) {
    let number = NUMBERS[rng.usize(..NUMBERS.len())];
    let from = position(rng, input);
    match input[from..].iter().position(u8::is_ascii_digit) {
        Some(offset) => {
            let start = from + offset;
            let end = input[start..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .map_or(input.len(), |n| start + n);
            input.splice(start..end, number.iter().copied());
        }
        None => insert_token(rng, input, number),
    }
}

fn flip_case(rng: &mut Rng, input: &mut [u8]) {
    if !input.is_empty() {
        let i = rng.usize(..input.len());
        if input[i].is_ascii_alphabetic() {
            input[i] ^= 0x20;
        }
    }
}
