//! When a failed S3 request is sent again, and how long to wait first.
//!
//! Retried: HTTP 500, 502, 503 and 504 (S3's `InternalError`, `SlowDown`,
//! `ServiceUnavailable`), a 400 `RequestTimeout`, and a connection that
//! broke on the way (reset, aborted, closed early). Not retried: a refused
//! connection or a timeout (the server is away: the caller's pair goes
//! offline and backs off as a whole), credential and permission refusals,
//! a 412, anything else. A request whose body was already read from a
//! source that cannot go back is not retried either.
//!
//! The waits grow exponentially with full jitter (a random wait between
//! zero and the cap of this attempt), so many clients that failed together
//! do not come back together; a `Retry-After` of a few seconds is honoured
//! as the least wait. Both are bounded by [`RetryPolicy::max_delay`], and
//! the number of attempts by [`RetryPolicy::attempts`].

use std::time::Duration;

/// How often and how patiently a request is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    /// The cap of the first wait; it doubles with each attempt.
    pub base_delay: Duration,
    /// No wait is longer, whatever `Retry-After` asks.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (after `attempt` failures,
    /// counting from 1), given the server's `Retry-After`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let jittered = cap.mul_f64(fastrand::f64());
        jittered
            .max(retry_after.unwrap_or_default())
            .min(self.max_delay)
    }
}

/// Whether an HTTP status (with S3's error code) is worth another attempt.
pub fn is_retryable_status(status: u16, code: &str) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
        || matches!(
            code,
            "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout"
        )
}

/// `Retry-After` in seconds (the HTTP-date form is not used by S3 and is
/// ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_stay_under_the_cap_and_honour_retry_after() {
        let policy = RetryPolicy {
            attempts: 8,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        for _ in 0..200 {
            assert!(policy.delay(1, None) <= Duration::from_millis(100));
            assert!(policy.delay(3, None) <= Duration::from_millis(400));
            assert!(policy.delay(30, None) <= Duration::from_secs(2));
            assert_eq!(
                policy.delay(1, Some(Duration::from_secs(1))),
                Duration::from_secs(1)
            );
            assert_eq!(
                policy.delay(1, Some(Duration::from_secs(3600))),
                Duration::from_secs(2)
            );
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| policy.delay(4, None)).collect();
        assert!(spread.len() > 10, "the waits are jittered");
    }

    #[test]
    fn throttling_and_server_failures_are_retried_and_refusals_are_not() {
        assert!(is_retryable_status(503, "SlowDown"));
        assert!(is_retryable_status(500, "InternalError"));
        assert!(is_retryable_status(400, "RequestTimeout"));
        assert!(!is_retryable_status(403, "SignatureDoesNotMatch"));
        assert!(!is_retryable_status(412, "PreconditionFailed"));
        assert!(!is_retryable_status(404, "NoSuchKey"));
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
