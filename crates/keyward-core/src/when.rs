//! Parsing of expiries: a duration from now (`90d`, `12h`, `1h 30m`) or an RFC 3339 instant.

use std::time::Duration as StdDuration;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::error::CoreError;

/// The longest lifetime accepted for anything (100 years).
pub const MAX_LIFETIME: Duration = Duration::days(36_525);

/// Parses a human duration (`90d`, `12h`, `30m`, `1h 30m`). Zero, negative and longer than
/// [`MAX_LIFETIME`] are refused.
pub fn parse_duration(s: &str) -> Result<Duration, CoreError> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(CoreError::InvalidTime(clip(s), "a duration cannot be negative"));
    }
    let d: StdDuration = humantime::parse_duration(t)
        .map_err(|_| CoreError::InvalidTime(clip(s), "expected a duration such as 90d, 12h or 30m"))?;
    if d.is_zero() {
        return Err(CoreError::InvalidTime(clip(s), "a duration must be positive"));
    }
    let d = Duration::try_from(d).map_err(|_| CoreError::InvalidTime(clip(s), "the duration is too long"))?;
    if d > MAX_LIFETIME {
        return Err(CoreError::InvalidTime(clip(s), "the duration is longer than 100 years"));
    }
    Ok(d)
}

/// Parses an RFC 3339 instant.
pub fn parse_instant(s: &str) -> Result<OffsetDateTime, CoreError> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .map_err(|_| CoreError::InvalidTime(clip(s), "expected an RFC 3339 time such as 2027-01-31T00:00:00Z"))
}

/// Parses an expiry given either as a duration from `now` or as an RFC 3339 instant, and
/// checks that it lies in the future and within [`MAX_LIFETIME`].
pub fn parse_expiry(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, CoreError> {
    let t = s.trim();
    let at = if t.len() >= 10 && t.as_bytes()[4] == b'-' {
        parse_instant(t)?
    } else {
        now.checked_add(parse_duration(t)?)
            .ok_or(CoreError::InvalidTime(clip(s), "the expiry is out of range"))?
    };
    check_expiry(at, now).map_err(|m| CoreError::InvalidTime(clip(s), m))
}

/// An expiry must lie in the future and at most [`MAX_LIFETIME`] ahead.
pub fn check_expiry(at: OffsetDateTime, now: OffsetDateTime) -> Result<OffsetDateTime, &'static str> {
    if at <= now {
        return Err("the expiry must be in the future");
    }
    if at - now > MAX_LIFETIME {
        return Err("the expiry is more than 100 years ahead");
    }
    Ok(at)
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_instants() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(parse_expiry("90d", now).unwrap(), now + Duration::days(90));
        assert_eq!(parse_expiry("1h 30m", now).unwrap(), now + Duration::minutes(90));
        let at = parse_expiry("2030-01-01T00:00:00Z", now).unwrap();
        assert_eq!(at.unix_timestamp(), 1_893_456_000);
        for bad in [
            "",
            "0d",
            "-5d",
            "soon",
            "90 fortnights",
            "2020-01-01T00:00:00Z",
            "1000000d",
            "2030-13-01T00:00:00Z",
            "99999999999999999999d",
            "2030-01-01",
            "\u{0}",
        ] {
            assert!(parse_expiry(bad, now).is_err(), "{bad:?}");
        }
    }
}
