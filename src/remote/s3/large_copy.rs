//! Server-side copies of any size: one CopyObject up to S3's 5 GiB limit
//! on it, else a multipart upload whose parts are ranges of the source
//! (UploadPartCopy), each on condition that the source is still the
//! version being copied, completed as one object. Nothing is downloaded.

use reqwest::Method;

use super::client::{Call, Condition, S3Client, Version};
use super::error::S3Error;
use super::multipart::{CompletedPart, part_size};

/// The largest object one CopyObject may copy.
pub const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;

impl S3Client {
    /// Copies `from` (`size` bytes, version `etag`) to `to` with its
    /// metadata, on condition that `from` is still `etag` and that what
    /// is at `to` meets `dest`; returns the copy's ETag.
    pub fn copy_version(
        &self,
        from: &str,
        to: &str,
        etag: &str,
        size: u64,
        dest: &Condition,
    ) -> Result<String, S3Error> {
        if size <= MAX_SINGLE_COPY {
            return self.copy_onto(from, to, Some(etag), None, dest);
        }
        self.copy_in_parts(from, to, (etag, size), part_size(size), dest)
    }

    /// [`S3Client::copy_version`] as a multipart copy in parts of `part`
    /// bytes (tests use small ones; S3 refuses parts under 5 MiB but the
    /// last).
    pub fn copy_in_parts(
        &self,
        from: &str,
        to: &str,
        (etag, size): (&str, u64),
        part: u64,
        dest: &Condition,
    ) -> Result<String, S3Error> {
        let head = match self.version_of(from, etag)? {
            Version::Same(head) if head.size == size => head,
            _ => {
                return Err(S3Error::PreconditionFailed {
                    endpoint: self.describe().to_owned(),
                    key: from.to_owned(),
                });
            }
        };
        let upload_id = self.create_upload(to, &head.metadata)?;
        let result = (|| {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            let mut number = 1u32;
            while offset < size {
                let end = (offset + part).min(size) - 1;
                let key = self.full_key(to)?;
                let call = Call::new(Method::PUT, "UploadPartCopy", key)
                    .query("partNumber", &number.to_string())
                    .query("uploadId", &upload_id)
                    .header("x-amz-copy-source", &self.copy_source(from)?)
                    .header("x-amz-copy-source-range", &format!("bytes={offset}-{end}"))
                    .header("x-amz-copy-source-if-match", etag);
                let (_, result) = match self.send_document(call, "CopyPartResult") {
                    Err(S3Error::PreconditionFailed { endpoint, .. }) => {
                        return Err(S3Error::PreconditionFailed {
                            endpoint,
                            key: from.to_owned(),
                        });
                    }
                    other => other?,
                };
                let part_etag = result
                    .text_of("ETag")
                    .filter(|e| !e.is_empty())
                    .ok_or_else(|| self.bad_answer("UploadPartCopy", "no <ETag>"))?;
                parts.push(CompletedPart {
                    number,
                    etag: part_etag.to_owned(),
                });
                offset = end + 1;
                number += 1;
            }
            self.complete_upload(to, &upload_id, &parts, dest)
        })();
        if result.is_err()
            && let Err(e) = self.abort_upload(to, &upload_id)
        {
            tracing::warn!(key = to, error = %e, "could not abort a failed multipart copy; the trash purge removes it later");
        }
        result
    }
}
