//! Timestamps as people and `sqlite3` read them: RFC 3339 in UTC with
//! millisecond precision (`2025-02-09T16:00:00.123Z`), which sorts as text
//! and compares with `strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-7 days')`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::macros::format_description;

/// `2025-02-09T16:00:00.123Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let dt = OffsetDateTime::from(at);
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    dt.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// The current time, formatted by [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Parses RFC 3339 (any offset, optional fraction) or a bare date
/// `YYYY-MM-DD` (midnight UTC).
pub fn parse(s: &str) -> Option<SystemTime> {
    if let Ok(dt) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Some(dt.into());
    }
    let date_only = format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &date_only)
        .ok()
        .map(|d| d.midnight().assume_utc().into())
}

/// `20250209-160000`: the stamp in conflict-copy names.
pub fn conflict_stamp(at: SystemTime) -> String {
    let dt = OffsetDateTime::from(at);
    let format = format_description!("[year][month][day]-[hour][minute][second]");
    dt.format(&format)
        .unwrap_or_else(|_| "19700101-000000".to_owned())
}

/// Nanoseconds since the Unix epoch, negative before it.
pub fn to_unix_ns(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
    }
}

/// The inverse of [`to_unix_ns`].
pub fn from_unix_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let at = UNIX_EPOCH + Duration::from_millis(1_739_116_800_123);
        let text = rfc3339(at);
        assert_eq!(text, "2025-02-09T16:00:00.123Z");
        assert_eq!(parse(&text), Some(at));
        assert_eq!(conflict_stamp(at), "20250209-160000");
    }

    #[test]
    fn parses_a_bare_date() {
        let at = parse("2025-02-09").unwrap();
        assert_eq!(rfc3339(at), "2025-02-09T00:00:00.000Z");
    }

    #[test]
    fn unix_ns_round_trips_before_and_after_the_epoch() {
        for ns in [0, 1, -1, 1_739_116_800_123_456_789, -5_000_000_000] {
            assert_eq!(to_unix_ns(from_unix_ns(ns)), ns);
        }
    }
}
