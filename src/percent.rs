//! Percent-decoding of what Prism Sync reads from URLs, WebDAV hrefs, S3
//! keys and form bodies: one strict decoder, so every reader agrees on what
//! a name is. A `%` must be followed by exactly two hex digits; anything
//! else is refused rather than passed through (a lenient decoder would let
//! two spellings name one path, and `u8::from_str_radix` alone also takes a
//! sign, reading `%+1` as byte 1).

/// What a `+` stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plus {
    /// Itself, as in a URL path.
    Literal,
    /// A space, as in a form body or S3's `encoding-type=url`.
    Space,
}

/// The bytes `text` stands for; `None` for a malformed escape.
pub fn decode(text: &str, plus: Plus) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let high = hex_value(*bytes.get(i + 1)?)?;
                let low = hex_value(*bytes.get(i + 2)?)?;
                out.push(high << 4 | low);
                i += 3;
            }
            b'+' if plus == Plus::Space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(out)
}

/// [`decode`], to text: `None` also when the bytes are not UTF-8.
pub fn decode_utf8(text: &str, plus: Plus) -> Option<String> {
    String::from_utf8(decode(text, plus)?).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_take_exactly_two_hex_digits() {
        assert_eq!(decode("a%2Fb%20c", Plus::Literal).unwrap(), b"a/b c");
        assert_eq!(decode("%e2%82%AC", Plus::Literal).unwrap(), "€".as_bytes());
        for bad in ["%", "%2", "%+1", "%-1", "%g0", "a%2", "%%41"] {
            assert_eq!(decode(bad, Plus::Literal), None, "{bad}");
        }
    }

    #[test]
    fn a_plus_is_a_space_only_where_the_format_says_so() {
        assert_eq!(decode("a+b", Plus::Literal).unwrap(), b"a+b");
        assert_eq!(decode("a+b", Plus::Space).unwrap(), b"a b");
        assert_eq!(decode("a%2Bb", Plus::Space).unwrap(), b"a+b");
    }

    #[test]
    fn text_must_decode_to_utf8() {
        assert_eq!(
            decode_utf8("caf%C3%A9", Plus::Literal).as_deref(),
            Some("café")
        );
        assert_eq!(decode_utf8("%FF", Plus::Literal), None);
    }
}
