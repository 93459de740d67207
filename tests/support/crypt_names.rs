//! What an encrypted remote's names look like from outside: the checks the
//! tests of every backend make that no plain name reached the remote.

/// Asserts that every segment of `name` (a path or key on the remote) is
/// what rclone's standard name encryption writes: lowercase base32hex
/// (`0-9`, `a-v`), nothing else. Every plain name in the tests has a dot,
/// an `s`, a `w`-`z`, a capital or a non-ASCII letter, so none passes.
/// (Searching the names for plain words would find them by chance in
/// random base32, and fail now and then.)
pub fn assert_encrypted_name(name: &str) {
    for segment in name.split('/') {
        assert!(
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='v').contains(&c)),
            "a plain name on the remote: {name}"
        );
    }
}
