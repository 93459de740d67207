//! AWS Signature Version 4 for S3 requests, on the `hmac` and `sha2`
//! crates.
//!
//! It owns only the arithmetic of a signature: the canonical request, the
//! string to sign, the derived key and the `Authorization` header. It does
//! not choose which headers a request carries (the client does, and passes
//! every header it sets, so each is covered) and never sees a body: the
//! caller passes the payload's hash, or [`UNSIGNED_PAYLOAD`] for a body
//! streamed from a reader, which S3 accepts and which lets an upload start
//! before its last byte is read. The secret key is used here and nowhere
//! else, and nothing here logs.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

/// The payload hash of a request whose body is not hashed (a streamed
/// upload): the signature then covers the headers and the URL only.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The signing algorithm's name, as it appears in the header.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What a signature covers.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as it goes on the wire: already percent-encoded by
    /// [`encode_path`] (S3 signs it as sent, without encoding it again).
    pub path: &'a str,
    /// The query parameters, not encoded.
    pub query: &'a [(String, String)],
    /// Every header to sign: names in lower case, including `host`,
    /// `x-amz-date` and `x-amz-content-sha256`.
    pub headers: &'a [(String, String)],
    /// The hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: &'a str,
}

/// The key pair and place a signature is made for.
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
}

impl Signer<'_> {
    /// The `Authorization` header's value for `request` made at `at`
    /// (which must also be the request's `x-amz-date`).
    pub fn authorization(&self, request: &Request<'_>, at: OffsetDateTime) -> String {
        let (date, stamp) = (date_of(at), amz_date(at));
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let (canonical, signed_headers) = canonical_request(request);
        let string_to_sign = format!(
            "{ALGORITHM}\n{stamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(
            format!("AWS4{}", self.secret_access_key).as_bytes(),
            date.as_bytes(),
        );
        for part in [self.region, "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key_id
        )
    }
}

/// `20130524T000000Z`: the form of `x-amz-date`.
pub fn amz_date(at: OffsetDateTime) -> String {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

fn date_of(at: OffsetDateTime) -> String {
    let format = format_description!("[year][month][day]");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// The hex SHA-256 of a small body that is signed whole.
pub fn payload_hash(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

/// The canonical request and the signed-headers list.
fn canonical_request(request: &Request<'_>) -> (String, String) {
    let mut query: Vec<(String, String)> = request
        .query
        .iter()
        .map(|(k, v)| (encode(k, true), encode(v, true)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), normalize_value(v)))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n{}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method, request.path, request.payload_hash
    );
    (canonical, signed_headers)
}

/// A header value trimmed, with runs of spaces made one.
fn normalize_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Percent-encodes a key for the URL path: every byte but the unreserved
/// ones (`A-Z a-z 0-9 - . _ ~`) and `/`.
pub fn encode_path(key: &str) -> String {
    encode(key, false)
}

/// Percent-encodes a query name or value (a `/` too).
pub fn encode_query(value: &str) -> String {
    encode(value, true)
}

fn encode(value: &str, slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (b == b'/' && !slash);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples of the S3 API reference's "Signature Calculations for
    // the Authorization Header" page: key pair, bucket, date and the
    // signatures it publishes.
    const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn example_time() -> OffsetDateTime {
        time::macros::datetime!(2013-05-24 00:00:00 UTC)
    }

    fn sign(
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        payload: &str,
    ) -> String {
        let signer = Signer {
            access_key_id: KEY_ID,
            secret_access_key: SECRET,
            region: "us-east-1",
        };
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        signer.authorization(
            &Request {
                method,
                path,
                query: &query,
                headers: &headers,
                payload_hash: payload,
            },
            example_time(),
        )
    }

    fn signature(authorization: &str) -> &str {
        authorization.rsplit("Signature=").next().unwrap()
    }

    #[test]
    fn the_published_get_object_example_signs_to_its_signature() {
        let auth = sign(
            "GET",
            "/test.txt",
            &[],
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY),
                ("x-amz-date", "20130524T000000Z"),
            ],
            EMPTY,
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn the_published_put_object_example_signs_to_its_signature() {
        let payload = payload_hash(b"Welcome to Amazon S3.");
        let auth = sign(
            "PUT",
            &format!("/{}", encode_path("test$file.text")),
            &[],
            &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", &payload),
                ("x-amz-date", "20130524T000000Z"),
            ],
            &payload,
        );
        assert_eq!(
            signature(&auth),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn the_published_list_objects_example_signs_to_its_signature() {
        let auth = sign(
            "GET",
            "/",
            &[("prefix", "J"), ("max-keys", "2")],
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("x-amz-content-sha256", EMPTY),
                ("x-amz-date", "20130524T000000Z"),
            ],
            EMPTY,
        );
        assert_eq!(
            signature(&auth),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn the_published_get_lifecycle_example_signs_a_query_without_a_value() {
        let auth = sign(
            "GET",
            "/",
            &[("lifecycle", "")],
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("x-amz-content-sha256", EMPTY),
                ("x-amz-date", "20130524T000000Z"),
            ],
            EMPTY,
        );
        assert_eq!(
            signature(&auth),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn paths_keep_slashes_and_unreserved_bytes_and_encode_the_rest() {
        assert_eq!(encode_path("a b/ü~x.y_z-1"), "a%20b/%C3%BC~x.y_z-1");
        assert_eq!(encode_query("a/b=c&d"), "a%2Fb%3Dc%26d");
        assert_eq!(amz_date(example_time()), "20130524T000000Z");
    }
}
