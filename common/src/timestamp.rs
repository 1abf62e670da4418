//! Parsing of user-supplied timestamps: RFC 3339 (`2025-11-27T15:00:00Z`), a naive date-time
//! taken as UTC (`2025-11-27 15:00:00`, optional `.sss`), or epoch milliseconds. Restore
//! windows are inclusive at millisecond precision, so sub-millisecond input is refused rather
//! than silently rounded.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TimestampError {
    #[error("invalid timestamp {input:?} for {what}: use RFC 3339 like 2025-11-27T15:00:00Z, \"2025-11-27 15:00:00\" (UTC) or epoch milliseconds like 1764255600000")]
    Invalid { what: String, input: String },
    #[error("timestamp {input:?} for {what} looks like epoch seconds ({as_seconds}); as milliseconds it would be {as_millis}. Epoch timestamps are in milliseconds: give {input}000, or RFC 3339 like 2025-11-27T15:00:00Z")]
    Seconds {
        what: String,
        input: String,
        as_seconds: String,
        as_millis: String,
    },
}

/// Epoch values of ten digits: as seconds, 2001-09-09 to 2286; as milliseconds, days 11 to
/// 115 of January 1970, which no real record carries. `date +%s` prints these, so such an
/// input is refused as seconds given by mistake rather than taken as 1970.
const SECONDS_LIKE: std::ops::Range<i64> = 1_000_000_000..10_000_000_000;

/// Parses `input` into epoch milliseconds; `what` names the flag or key in the error.
pub fn parse_timestamp_ms(what: &str, input: &str) -> Result<i64, TimestampError> {
    let err = || TimestampError::Invalid {
        what: what.to_string(),
        input: input.to_string(),
    };
    let s = input.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n = s.parse::<i64>().map_err(|_| err())?;
        if SECONDS_LIKE.contains(&n) {
            return Err(TimestampError::Seconds {
                what: what.to_string(),
                input: s.to_string(),
                as_seconds: format_ms(n.saturating_mul(1000)),
                as_millis: format_ms(n),
            });
        }
        return Ok(n);
    }
    let dt: DateTime<Utc> = if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        d.with_timezone(&Utc)
    } else {
        let naive = [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .ok_or_else(err)?;
        Utc.from_utc_datetime(&naive)
    };
    if !dt.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        return Err(err());
    }
    Ok(dt.timestamp_millis())
}

/// Formats epoch milliseconds for humans, in UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(d) => d.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
        None => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        assert_eq!(parse_timestamp_ms("t", "1000").unwrap(), 1000);
        assert_eq!(
            parse_timestamp_ms("t", "1970-01-01T00:00:01.5Z").unwrap(),
            1500
        );
        assert_eq!(
            parse_timestamp_ms("t", "1970-01-01 00:00:02").unwrap(),
            2000
        );
        assert!(parse_timestamp_ms("t", "yesterday").is_err());
        let e = parse_timestamp_ms("--from-timestamp", "1700000010").expect_err("seconds");
        assert!(
            e.to_string()
                .contains("looks like epoch seconds (2023-11-14 22:13:30.000 UTC)")
                && e.to_string().contains("give 1700000010000"),
            "{e}"
        );
        assert_eq!(
            parse_timestamp_ms("t", "1700000010000").unwrap(),
            1_700_000_010_000
        );
        assert!(parse_timestamp_ms("t", "1970-01-01T00:00:00.0000001Z").is_err());
    }
}
