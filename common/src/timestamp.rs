//! Parsing of user-supplied timestamps: RFC 3339 (`2025-11-27T15:00:00Z`), a naive date-time
//! taken as UTC (`2025-11-27 15:00:00`, optional `.sss`), or epoch milliseconds. Restore
//! windows are inclusive at millisecond precision, so sub-millisecond input is refused rather
//! than silently rounded.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("invalid timestamp {input:?} for {what}: use RFC 3339 like 2025-11-27T15:00:00Z, \"2025-11-27 15:00:00\" (UTC) or epoch milliseconds like 1764255600000")]
pub struct TimestampError {
    pub what: String,
    pub input: String,
}

/// Parses `input` into epoch milliseconds; `what` names the flag or key in the error.
pub fn parse_timestamp_ms(what: &str, input: &str) -> Result<i64, TimestampError> {
    let err = || TimestampError {
        what: what.to_string(),
        input: input.to_string(),
    };
    let s = input.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| err());
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
        assert!(parse_timestamp_ms("t", "1970-01-01T00:00:00.0000001Z").is_err());
    }
}
