//! Multipart uploads: a large object sent as numbered parts, made visible
//! under its key only by the final completion, which carries the same
//! condition as a single PUT (`If-None-Match: *` or `If-Match`).
//!
//! [`S3Client::upload`] streams from one reader, part after part, each
//! part sent as it is read (never the whole file in memory: at most a few
//! chunks of the part in flight). Part sizes follow [`part_size`], so a
//! 50 GiB file fits S3's 10,000 parts. Any failure after the upload was
//! created aborts it, so no parts stay behind and nothing appears under
//! the real key; uploads left by a crash are found with
//! [`S3Client::list_uploads`] and removed with [`S3Client::abort_upload`].

use std::collections::HashSet;

use reqwest::Method;

use super::body::UploadSource;
use super::client::{Call, Condition, Metadata, Payload, PendingUpload, S3Client};
use super::error::S3Error;
use super::keys::{self, Listed};

const MIB: u64 = 1024 * 1024;

/// The smallest part this client sends (S3's own minimum is 5 MiB for
/// every part but the last).
pub const MIN_PART_SIZE: u64 = 8 * MIB;

/// S3's limit on the parts of one upload.
pub const MAX_PARTS: u64 = 10_000;

/// Objects up to this size go in one PUT; larger ones in parts.
pub const MULTIPART_THRESHOLD: u64 = 2 * MIN_PART_SIZE;

/// The part size for an object of `size` bytes: 8 MiB, or
/// `size / 10,000` rounded up to whole MiB where that is larger.
pub fn part_size(size: u64) -> u64 {
    let spread = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    spread.max(MIN_PART_SIZE)
}

/// One uploaded part, as the completion lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedPart {
    pub number: u32,
    pub etag: String,
}

impl S3Client {
    /// Uploads `size` bytes from `source` to `rel`: one PUT up to
    /// [`MULTIPART_THRESHOLD`], else a multipart upload in parts of
    /// [`part_size`]. Returns the new version's ETag.
    pub fn upload(
        &self,
        rel: &str,
        source: &mut dyn UploadSource,
        size: u64,
        condition: &Condition,
        metadata: &Metadata,
    ) -> Result<String, S3Error> {
        if size <= MULTIPART_THRESHOLD {
            return self.put(rel, source, size, condition, metadata);
        }
        self.upload_in_parts(rel, source, size, part_size(size), condition, metadata)
    }

    /// A multipart upload with parts of `part` bytes (tests use small
    /// ones; S3 refuses parts under 5 MiB but the last).
    pub fn upload_in_parts(
        &self,
        rel: &str,
        source: &mut dyn UploadSource,
        size: u64,
        part: u64,
        condition: &Condition,
        metadata: &Metadata,
    ) -> Result<String, S3Error> {
        let upload_id = self.create_upload(rel, metadata)?;
        let result = (|| {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            let mut number = 1u32;
            while offset < size || number == 1 {
                let len = part.min(size - offset);
                let etag = self.upload_part(rel, &upload_id, number, source, offset, len)?;
                parts.push(CompletedPart { number, etag });
                offset += len;
                number += 1;
            }
            self.complete_upload(rel, &upload_id, &parts, condition)
        })();
        if result.is_err()
            && let Err(e) = self.abort_upload(rel, &upload_id)
        {
            tracing::warn!(key = rel, error = %e, "could not abort a failed multipart upload; a later sweep removes it");
        }
        result
    }

    /// Starts a multipart upload of `rel`; returns its upload id.
    pub fn create_upload(&self, rel: &str, metadata: &Metadata) -> Result<String, S3Error> {
        let key = self.full_key(rel)?;
        let mut call = Call::new(Method::POST, "CreateMultipartUpload", key).query("uploads", "");
        call.headers.extend(self.metadata_headers(metadata)?);
        let (_, result) = self.send_document(call, "InitiateMultipartUploadResult")?;
        result
            .text_of("UploadId")
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| self.bad_answer("CreateMultipartUpload", "no <UploadId>"))
    }

    /// Sends part `number` (from 1): `len` bytes of `source`, which stands
    /// at `offset` (where a retry seeks back to). Returns its ETag.
    pub fn upload_part(
        &self,
        rel: &str,
        upload_id: &str,
        number: u32,
        source: &mut dyn UploadSource,
        offset: u64,
        len: u64,
    ) -> Result<String, S3Error> {
        let key = self.full_key(rel)?;
        let mut call = Call::new(Method::PUT, "UploadPart", key)
            .query("partNumber", &number.to_string())
            .query("uploadId", upload_id);
        call.payload = Payload::Stream {
            source,
            offset,
            len,
        };
        let response = match self.exchange(&mut call, false)? {
            super::client::Answer::Open(response) => response,
            super::client::Answer::Document(..) => unreachable!("no document was asked for"),
        };
        response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| self.bad_answer("UploadPart", "no ETag"))
    }

    /// Completes an upload: the object appears under `rel` if `condition`
    /// holds (else [`S3Error::PreconditionFailed`], and the caller aborts).
    pub fn complete_upload(
        &self,
        rel: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        condition: &Condition,
    ) -> Result<String, S3Error> {
        let key = self.full_key(rel)?;
        let mut body = String::from("<CompleteMultipartUpload>");
        for part in parts {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                part.number,
                quick_xml::escape::escape(part.etag.as_str())
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let mut call =
            Call::new(Method::POST, "CompleteMultipartUpload", key).query("uploadId", upload_id);
        call.headers.extend(condition_header(condition));
        call.payload = Payload::Small(body.into_bytes());
        let (_, result) = self.send_document(call, "CompleteMultipartUploadResult")?;
        Ok(result.text_of("ETag").unwrap_or_default().to_owned())
    }

    /// Aborts an upload and drops its parts; one that is gone is fine.
    pub fn abort_upload(&self, rel: &str, upload_id: &str) -> Result<(), S3Error> {
        let key = self.full_key(rel)?;
        let call =
            Call::new(Method::DELETE, "AbortMultipartUpload", key).query("uploadId", upload_id);
        let mut call = call;
        match self.exchange(&mut call, false) {
            Ok(_) | Err(S3Error::NoSuchUpload { .. }) | Err(S3Error::NoSuchKey { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The multipart uploads still open below `below` (empty, or a
    /// relative folder ending in `/`), page by page; keys that are not
    /// usable relative keys are skipped (they are not ours).
    pub fn list_uploads(&self, below: &str) -> Result<Vec<PendingUpload>, S3Error> {
        let prefix = if below.is_empty() {
            self.prefix().to_owned()
        } else {
            self.full_key(below)?
        };
        let mut uploads = Vec::new();
        let mut markers: HashSet<(String, String)> = HashSet::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut call = Call::new(Method::GET, "ListMultipartUploads", String::new())
                .query("uploads", "")
                .query("prefix", &prefix);
            if let Some((key, id)) = &marker {
                call = call.query("key-marker", key).query("upload-id-marker", id);
            }
            let (_, page) = self.send_document(call, "ListMultipartUploadsResult")?;
            for upload in page.all("Upload") {
                let (Some(key), Some(id)) = (upload.text_of("Key"), upload.text_of("UploadId"))
                else {
                    return Err(
                        self.bad_answer("ListMultipartUploads", "an upload without a key or id")
                    );
                };
                if let Ok(Listed::Key(rel)) =
                    keys::relative_to_prefix(key.as_bytes(), self.prefix())
                {
                    uploads.push(PendingUpload {
                        key: rel,
                        upload_id: id.to_owned(),
                        initiated: upload.text_of("Initiated").and_then(crate::timefmt::parse),
                    });
                }
                if uploads.len() > super::client::MAX_LISTED {
                    return Err(self.bad_answer("ListMultipartUploads", "too many uploads"));
                }
            }
            if page.text_of("IsTruncated") != Some("true") {
                return Ok(uploads);
            }
            let next = (
                page.text_of("NextKeyMarker").unwrap_or_default().to_owned(),
                page.text_of("NextUploadIdMarker")
                    .unwrap_or_default()
                    .to_owned(),
            );
            if next.0.is_empty() || !markers.insert(next.clone()) {
                return Err(self.bad_answer(
                    "ListMultipartUploads",
                    "a truncated page without new markers (the listing would never end)",
                ));
            }
            marker = Some(next);
        }
    }
}

fn condition_header(condition: &Condition) -> Option<(String, String)> {
    match condition {
        Condition::None => None,
        Condition::Absent => Some(("if-none-match".into(), "*".into())),
        Condition::Matches(etag) => Some(("if-match".into(), etag.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * MIB;

    #[test]
    fn parts_are_8_mib_until_the_object_needs_larger_ones_to_fit_10000() {
        assert_eq!(part_size(0), MIN_PART_SIZE);
        assert_eq!(part_size(100 * MIB), MIN_PART_SIZE);
        assert_eq!(part_size(50 * GIB), MIN_PART_SIZE);
        assert!((50 * GIB).div_ceil(part_size(50 * GIB)) <= MAX_PARTS);
        let big = 200 * GIB;
        let part = part_size(big);
        assert_eq!(part % MIB, 0);
        assert!(big.div_ceil(part) <= MAX_PARTS);
        assert!(part > MIN_PART_SIZE);
        let largest = 5 * 1024 * GIB;
        assert!(largest.div_ceil(part_size(largest)) <= MAX_PARTS);
    }
}
