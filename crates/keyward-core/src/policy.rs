//! Abuse limits: IP allowlists, GCRA rate specs, quotas with refill, and their parsers.
//!
//! Text forms (CLI flags, admin API, config):
//! - rate: `N/unit` with unit `s|sec|second`, `m|min|minute`, `h|hour`, `d|day`, `w|week`
//!   (7 days), or a duration such as `N/30s`; `N` from 1 to 1,000,000,000; period at most a year;
//! - quota: `N/day`, `N/week` (ISO weeks: refilled Mondays 00:00 UTC), `N/month` (calendar,
//!   UTC), or an interval (`s`, `min`, `hour` or a duration such as `500/12h`), refilled at every
//!   multiple of it since the Unix epoch;
//! - CIDR: `203.0.113.0/24`, `2001:db8::/32`, or a bare address (a /32 or /128).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CoreError;

/// Largest count in a rate or quota.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// Most CIDRs on one allowlist.
pub const MAX_CIDRS: usize = 1024;

fn bad(kind: &'static str, s: &str, why: &str) -> CoreError {
    CoreError::InvalidPolicy(format!(
        "invalid {kind} {:?}: {why}",
        s.chars().take(64).collect::<String>()
    ))
}

fn parse_count(kind: &'static str, s: &str, n: &str) -> Result<u64, CoreError> {
    let n = n.trim();
    if n.starts_with('-') {
        return Err(bad(kind, s, "the count cannot be negative"));
    }
    let v: u64 = n
        .parse()
        .map_err(|_| bad(kind, s, "the count must be a whole number"))?;
    if v == 0 {
        return Err(bad(kind, s, "the count must be at least 1"));
    }
    if v > MAX_COUNT {
        return Err(bad(kind, s, "the count is larger than 1,000,000,000"));
    }
    Ok(v)
}

/// The units a rate accepts, as error messages name them.
pub const RATE_UNITS: &str =
    "s (or sec, second), min (or m, minute), hour (or h), day (or d), week (or w) or a duration such as 30s";
/// The periods a quota accepts, as error messages name them.
pub const QUOTA_UNITS: &str = "s (or sec, second), min (or m, minute), hour (or h), day (or d), week (or w), \
     month or a duration such as 12h";

/// Seconds in a week.
const WEEK_SECS: u64 = 7 * 86_400;

fn parse_unit(kind: &'static str, s: &str, unit: &str) -> Result<Duration, CoreError> {
    let u = unit.trim();
    let d = match u {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        "w" | "week" => Duration::from_secs(WEEK_SECS),
        _ => {
            if u.starts_with('-') {
                return Err(bad(kind, s, "the period cannot be negative"));
            }
            let units = if kind == "quota" { QUOTA_UNITS } else { RATE_UNITS };
            let d = humantime::parse_duration(u)
                .ok()
                .filter(|_| u.starts_with(|c: char| c.is_ascii_digit()))
                .ok_or_else(|| bad(kind, s, &format!("the unit must be {units}")))?;
            if d.is_zero() {
                return Err(bad(kind, s, "the period must be positive"));
            }
            d
        }
    };
    Ok(d)
}

/// A GCRA rate: `count` requests per `period`, with a burst of up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u64,
    pub period: Duration,
    pub burst: u64,
}

impl RateSpec {
    /// Parses `N/unit`; `burst` defaults to `N` (a full period's allowance at once).
    pub fn parse(s: &str, burst: Option<u64>) -> Result<RateSpec, CoreError> {
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| bad("rate", s, "expected N/unit, e.g. 100/min"))?;
        let count = parse_count("rate", s, n)?;
        let period = parse_unit("rate", s, unit)?;
        if period > Duration::from_secs(86_400 * 366) {
            return Err(bad("rate", s, "the period must be at most a year"));
        }
        let burst = match burst {
            None => count,
            Some(0) => return Err(bad("rate", s, "the burst must be at least 1")),
            Some(b) if b > MAX_COUNT => return Err(bad("rate", s, "the burst is larger than 1,000,000,000")),
            Some(b) => b,
        };
        Ok(RateSpec { count, period, burst })
    }

    /// Time between two requests at the sustained rate, in nanoseconds (at least 1).
    pub fn emission_interval_ns(&self) -> u64 {
        let ns = self.period.as_nanos() / u128::from(self.count);
        u64::try_from(ns).unwrap_or(u64::MAX).max(1)
    }

    fn unit_text(&self) -> String {
        match self.period.as_secs() {
            1 if self.period.subsec_nanos() == 0 => "s".into(),
            60 if self.period.subsec_nanos() == 0 => "min".into(),
            3600 if self.period.subsec_nanos() == 0 => "hour".into(),
            86_400 if self.period.subsec_nanos() == 0 => "day".into(),
            WEEK_SECS if self.period.subsec_nanos() == 0 => "week".into(),
            _ => humantime::format_duration(self.period).to_string().replace(' ', ""),
        }
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit_text())
    }
}

/// When a quota's balance is set back to its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refill {
    /// At 00:00 UTC every day.
    Day,
    /// At 00:00 UTC every Monday (ISO weeks).
    Week,
    /// At 00:00 UTC on the first of every month.
    Month,
    /// At every multiple of this interval since the Unix epoch.
    Every(Duration),
}

/// A quota: `limit` units per refill period. Refilling sets the balance; it never stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSpec {
    pub limit: u64,
    pub refill: Refill,
}

impl QuotaSpec {
    pub fn parse(s: &str) -> Result<QuotaSpec, CoreError> {
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| bad("quota", s, "expected N/period, e.g. 10000/month"))?;
        let limit = parse_count("quota", s, n)?;
        let refill = match unit.trim() {
            "day" | "d" => Refill::Day,
            "week" | "w" => Refill::Week,
            "month" => Refill::Month,
            other => {
                let d = parse_unit("quota", s, other)?;
                if d < Duration::from_secs(1) {
                    return Err(bad("quota", s, "the refill interval must be at least one second"));
                }
                if d > Duration::from_secs(86_400 * 366) {
                    return Err(bad("quota", s, "the refill interval must be at most a year"));
                }
                Refill::Every(d)
            }
        };
        Ok(QuotaSpec { limit, refill })
    }

    /// The period containing `unix_secs`: its index (monotonic) and its end (Unix seconds).
    pub fn period_of(&self, unix_secs: i64) -> (i64, i64) {
        match self.refill {
            Refill::Day => {
                let day = unix_secs.div_euclid(86_400);
                (day, (day + 1) * 86_400)
            }
            Refill::Week => {
                // The Unix epoch was a Thursday: ISO weeks start three days before it.
                const MONDAY_BEFORE_EPOCH: i64 = 3 * 86_400;
                let len = WEEK_SECS as i64;
                let week = (unix_secs + MONDAY_BEFORE_EPOCH).div_euclid(len);
                (week, (week + 1) * len - MONDAY_BEFORE_EPOCH)
            }
            Refill::Every(d) => {
                let len = i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1);
                let idx = unix_secs.div_euclid(len);
                (idx, idx.saturating_add(1).saturating_mul(len))
            }
            Refill::Month => {
                let t =
                    time::OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                let (y, m) = (t.year(), u8::from(t.month()));
                let idx = i64::from(y) * 12 + i64::from(m) - 1;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let end =
                    time::Date::from_calendar_date(ny, time::Month::try_from(nm).unwrap_or(time::Month::January), 1)
                        .map(|d| d.midnight().assume_utc().unix_timestamp())
                        .unwrap_or(i64::MAX);
                (idx, end)
            }
        }
    }

    /// Nominal window length in seconds (for the `RateLimit-Policy` field).
    pub fn window_secs(&self) -> u64 {
        match self.refill {
            Refill::Day => 86_400,
            Refill::Week => WEEK_SECS,
            Refill::Month => 30 * 86_400,
            Refill::Every(d) => d.as_secs(),
        }
    }
}

impl fmt::Display for QuotaSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.refill {
            Refill::Day => write!(f, "{}/day", self.limit),
            Refill::Week => write!(f, "{}/week", self.limit),
            Refill::Month => write!(f, "{}/month", self.limit),
            Refill::Every(d) => write!(
                f,
                "{}/{}",
                self.limit,
                humantime::format_duration(d).to_string().replace(' ', "")
            ),
        }
    }
}

/// Parses one allowlist entry. Zone ids (`fe80::1%eth0`) are refused: they name an interface
/// of one host and mean nothing to a peer address.
pub fn parse_cidr(s: &str) -> Result<IpNet, CoreError> {
    let t = s.trim();
    if t.contains('%') {
        return Err(bad("CIDR", s, "IPv6 zone ids (%iface) are not allowed"));
    }
    if let Ok(n) = IpNet::from_str(t) {
        return Ok(n.trunc());
    }
    if let Ok(a) = IpAddr::from_str(t) {
        return Ok(IpNet::from(a));
    }
    Err(bad(
        "CIDR",
        s,
        "expected an address or a CIDR such as 203.0.113.0/24 or 2001:db8::/32",
    ))
}

/// An IP allowlist; empty means "from anywhere".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<IpNet>);

impl IpAllowlist {
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<IpAllowlist, CoreError> {
        if items.len() > MAX_CIDRS {
            return Err(CoreError::InvalidPolicy(format!(
                "too many CIDRs ({}): at most {MAX_CIDRS} per key or app; aggregate them into wider prefixes",
                items.len()
            )));
        }
        let mut v = items
            .iter()
            .map(|s| parse_cidr(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        v.sort();
        v.dedup();
        Ok(IpAllowlist(v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether `ip` may call. IPv4-mapped IPv6 addresses are matched as IPv4.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Limits attached to a key or an app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "IpAllowlist::is_empty")]
    pub ips: IpAllowlist,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSpec>,
    /// The credential only works over a TLS connection whose client certificate is registered
    /// to the credential's app (RFC 8705 certificate of one of the app's clients).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_mtls: bool,
    /// Publishable keys: the exact web origins (`https://shop.example`) whose pages may use the
    /// key; a request without a matching `Origin` is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<Origin>,
    /// On an app: the rules its keys must follow (lifetime, expiry, kinds).
    #[serde(default, skip_serializing_if = "KeyRules::is_default")]
    pub key_rules: KeyRules,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
            && self.rate.is_none()
            && self.quota.is_none()
            && !self.require_mtls
            && self.origins.is_empty()
            && self.key_rules.is_default()
    }
}

/// Most origins on one publishable key.
pub const MAX_ORIGINS: usize = 64;

/// A web origin as browsers send it in `Origin`: `scheme://host[:port]`, scheme `http` or
/// `https`, host lower-case, the scheme's default port left out; no path, query, fragment,
/// user info or wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin(String);

impl Origin {
    pub fn parse(s: &str) -> Result<Origin, CoreError> {
        let bad = |why: &str| bad("origin", s, why);
        if s.len() > 255 {
            return Err(bad("longer than 255 characters"));
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "https" => "443",
            "http" => "80",
            _ => return Err(bad("the scheme must be http or https")),
        };
        if rest.is_empty() {
            return Err(bad("the host is missing"));
        }
        if rest.contains(['/', '?', '#', '@', '*', ' ', '\\']) || rest.chars().any(|c| c.is_control()) {
            return Err(bad(
                "an origin is scheme://host[:port] only: no path, query, user, wildcard",
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed IPv6 bracket"))?;
            addr.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after the IPv6 address"))?),
            };
            (format!("[{}]", addr.to_ascii_lowercase()), port)
        } else {
            let (h, p) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                });
            if !ok {
                return Err(bad("the host must be a DNS name or an IP address"));
            }
            (h.to_ascii_lowercase(), p)
        };
        let port = match port {
            None => None,
            Some(p) => {
                let n: u16 = p.parse().map_err(|_| bad("the port must be 1 to 65535"))?;
                if n == 0 {
                    return Err(bad("the port must be 1 to 65535"));
                }
                (p != default_port).then(|| n.to_string())
            }
        };
        let scheme = scheme.to_ascii_lowercase();
        Ok(Origin(match port {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a request's `Origin` header value is this origin (exactly, after the same
    /// normalisation; `null` and garbage never match).
    pub fn matches(&self, header: &str) -> bool {
        Origin::parse(header).is_ok_and(|o| o == *self)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = String::deserialize(d)?;
        Origin::parse(&v).map_err(serde::de::Error::custom)
    }
}

/// An app's rules for its keys, so that "rotate regularly" is enforced rather than hoped for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRules {
    /// Longest lifetime of a new key, in seconds: keys created without an expiry or beyond it
    /// get `now + max` (capped, not refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime_secs: Option<u64>,
    /// Secret keys must be created with an expiry (refused otherwise, unless a maximum
    /// lifetime supplies one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_expiry: bool,
    /// The kinds of key the app may have; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_kinds: Vec<crate::key::KeyKind>,
}

impl KeyRules {
    pub fn is_default(&self) -> bool {
        *self == KeyRules::default()
    }

    /// Whether a key of `kind` may be created.
    pub fn allows(&self, kind: crate::key::KeyKind) -> bool {
        self.allowed_kinds.is_empty() || self.allowed_kinds.contains(&kind)
    }
}

// ---- serde: the text forms -------------------------------------------------------------

impl Serialize for IpAllowlist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|n| n.to_string()))
    }
}

impl<'de> Deserialize<'de> for IpAllowlist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        IpAllowlist::parse(&v).map_err(serde::de::Error::custom)
    }
}

/// `{"limit": "100/min", "burst": 20}` in JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateText {
    limit: String,
    #[serde(default)]
    burst: Option<u64>,
}

impl Serialize for RateSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RateText {
            limit: self.to_string(),
            burst: Some(self.burst),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = RateText::deserialize(d)?;
        RateSpec::parse(&t.limit, t.burst).map_err(serde::de::Error::custom)
    }
}

impl Serialize for QuotaSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for QuotaSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = String::deserialize(d)?;
        QuotaSpec::parse(&t).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_refuse() {
        let r = RateSpec::parse("100/min", Some(20)).unwrap();
        assert_eq!((r.count, r.period, r.burst), (100, Duration::from_secs(60), 20));
        assert_eq!(r.emission_interval_ns(), 600_000_000);
        assert_eq!(RateSpec::parse("10/s", None).unwrap().burst, 10);
        assert_eq!(RateSpec::parse("5/30s", None).unwrap().period, Duration::from_secs(30));
        assert_eq!(RateSpec::parse("100/min", None).unwrap().to_string(), "100/min");
        for bad in [
            "0/min",
            "-1/s",
            "10/fortnight",
            "10",
            "/s",
            "x/s",
            "10/",
            "10/0s",
            "10/-5s",
            "99999999999999999999999/s",
            "1000000001/s",
            "1/400d",
            "1.5/s",
            "10/min/x",
        ] {
            assert!(RateSpec::parse(bad, None).is_err(), "{bad}");
        }
        assert!(RateSpec::parse("1/s", Some(0)).is_err());
        assert!(RateSpec::parse("1/s", Some(u64::MAX)).is_err());
    }

    #[test]
    fn quotas_parse_and_find_their_period() {
        let q = QuotaSpec::parse("10000/month").unwrap();
        assert_eq!(q.refill, Refill::Month);
        // 2027-01-31T23:59:59Z is in January; the period ends at 2027-02-01T00:00:00Z.
        let jan31 = 1_801_439_999;
        let (i, end) = q.period_of(jan31);
        assert_eq!(end, jan31 + 1);
        assert_eq!(q.period_of(end).0, i + 1);
        let d = QuotaSpec::parse("5/day").unwrap();
        assert_eq!(d.period_of(86_399), (0, 86_400));
        assert_eq!(d.period_of(86_400), (1, 172_800));
        let e = QuotaSpec::parse("500/12h").unwrap();
        assert_eq!(e.refill, Refill::Every(Duration::from_secs(43_200)));
        assert_eq!(e.to_string(), "500/12h");
        for bad in [
            "0/day",
            "-1/day",
            "10/fortnight",
            "10/0s",
            "10/500ms",
            "month",
            "1/999d",
            "abc/day",
        ] {
            assert!(QuotaSpec::parse(bad).is_err(), "{bad}");
        }
    }

    /// Issue 22, point 8: every unit and its period, for rates and for quotas.
    #[test]
    fn every_unit_is_accepted() {
        for (unit, secs) in [
            ("s", 1),
            ("sec", 1),
            ("second", 1),
            ("m", 60),
            ("min", 60),
            ("minute", 60),
            ("h", 3600),
            ("hour", 3600),
            ("d", 86_400),
            ("day", 86_400),
            ("w", 604_800),
            ("week", 604_800),
            ("30s", 30),
            ("12h", 43_200),
            ("2weeks", 1_209_600),
        ] {
            let r = RateSpec::parse(&format!("7/{unit}"), None).unwrap();
            assert_eq!(r.period, Duration::from_secs(secs), "rate /{unit}");
            assert_eq!(RateSpec::parse(&r.to_string(), None).unwrap(), r, "{r} round trip");
        }
        assert_eq!(RateSpec::parse("7/week", None).unwrap().to_string(), "7/week");
        for (unit, refill) in [
            ("d", Refill::Day),
            ("day", Refill::Day),
            ("w", Refill::Week),
            ("week", Refill::Week),
            ("month", Refill::Month),
            ("s", Refill::Every(Duration::from_secs(1))),
            ("sec", Refill::Every(Duration::from_secs(1))),
            ("second", Refill::Every(Duration::from_secs(1))),
            ("m", Refill::Every(Duration::from_secs(60))),
            ("min", Refill::Every(Duration::from_secs(60))),
            ("minute", Refill::Every(Duration::from_secs(60))),
            ("h", Refill::Every(Duration::from_secs(3600))),
            ("hour", Refill::Every(Duration::from_secs(3600))),
            ("12h", Refill::Every(Duration::from_secs(43_200))),
        ] {
            let q = QuotaSpec::parse(&format!("10/{unit}")).unwrap();
            assert_eq!(q.refill, refill, "quota /{unit}");
            assert_eq!(QuotaSpec::parse(&q.to_string()).unwrap(), q, "{q} round trip");
        }
        assert_eq!(QuotaSpec::parse("10/week").unwrap().to_string(), "10/week");
        assert_eq!(QuotaSpec::parse("10/week").unwrap().window_secs(), 604_800);
    }

    /// A weekly quota's periods are ISO weeks: Monday 00:00 UTC to the next Monday.
    #[test]
    fn weekly_quotas_follow_iso_weeks() {
        let w = QuotaSpec::parse("10/week").unwrap();
        // 2027-01-04T00:00:00Z is a Monday.
        let monday = 1_799_020_800;
        let (i, end) = w.period_of(monday);
        assert_eq!(end, monday + 7 * 86_400);
        assert_eq!(w.period_of(monday - 1), (i - 1, monday));
        assert_eq!(w.period_of(end - 1), (i, end));
        assert_eq!(w.period_of(end).0, i + 1);
        // The epoch (a Thursday) is in the week that started on Monday 1969-12-29.
        assert_eq!(w.period_of(0), (0, 4 * 86_400));
        assert_eq!(w.period_of(-3 * 86_400), (0, 4 * 86_400));
        assert_eq!(w.period_of(-3 * 86_400 - 1).0, -1);
    }

    /// Every refusal of a unit names exactly the accepted forms: a quota's message has
    /// `week` and `month`, a rate's has `week` and not `month` (a rate has no calendar).
    #[test]
    fn bad_units_name_exactly_the_accepted_forms() {
        let quota_msg = format!("the unit must be {QUOTA_UNITS}");
        let rate_msg = format!("the unit must be {RATE_UNITS}");
        for bad in [
            "10/fortnight",
            "10/year",
            "10/weeks",
            "10/mo",
            "10/months",
            "10/ms5",
            "10/Week",
        ] {
            let e = QuotaSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&quota_msg), "{bad}: {e}");
            assert!(e.starts_with(&format!("invalid quota {bad:?}")), "{e}");
            let e = RateSpec::parse(bad, None).unwrap_err().to_string();
            assert!(e.contains(&rate_msg), "{bad}: {e}");
        }
        let e = RateSpec::parse("10/month", None).unwrap_err().to_string();
        assert!(e.contains(&rate_msg), "{e}");
        for unit in [
            "s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day", "w", "week",
        ] {
            assert!(
                RATE_UNITS.split([' ', ',', '(', ')']).any(|w| w == unit),
                "{unit} in {RATE_UNITS}"
            );
            assert!(
                QUOTA_UNITS.split([' ', ',', '(', ')']).any(|w| w == unit),
                "{unit} in {QUOTA_UNITS}"
            );
        }
        assert!(QUOTA_UNITS.contains("month"));
        assert!(!RATE_UNITS.contains("month"));
    }

    proptest::proptest! {
        /// Any count with any named unit parses, prints and parses back to the same limit;
        /// any other word is refused with the list.
        #[test]
        fn units_round_trip(n in 1u64..=MAX_COUNT, i in 0usize..12, word in "[a-z]{1,8}") {
            let units = ["s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day", "w", "week"];
            let r = RateSpec::parse(&format!("{n}/{}", units[i]), None).unwrap();
            proptest::prop_assert_eq!(RateSpec::parse(&r.to_string(), Some(r.burst)).unwrap(), r);
            let q = QuotaSpec::parse(&format!("{n}/{}", units[i])).unwrap();
            proptest::prop_assert_eq!(QuotaSpec::parse(&q.to_string()).unwrap(), q);
            let known = units.contains(&word.as_str()) || word == "month";
            if !known {
                let e = QuotaSpec::parse(&format!("{n}/{word}")).unwrap_err().to_string();
                proptest::prop_assert!(e.contains(QUOTA_UNITS), "{}", e);
                let e = RateSpec::parse(&format!("{n}/{word}"), None).unwrap_err().to_string();
                proptest::prop_assert!(e.contains(RATE_UNITS), "{}", e);
            }
        }
    }

    #[test]
    fn allowlists_normalise_and_refuse() {
        let l = IpAllowlist::parse(&["203.0.113.7/24", "2001:db8::/32", "198.51.100.1"]).unwrap();
        assert!(l.allows("203.0.113.200".parse().unwrap()));
        assert!(
            l.allows("::ffff:203.0.113.9".parse().unwrap()),
            "IPv4-mapped IPv6 matches as IPv4"
        );
        assert!(l.allows("198.51.100.1".parse().unwrap()));
        assert!(!l.allows("198.51.100.2".parse().unwrap()));
        assert!(l.allows("2001:db8:1::1".parse().unwrap()));
        assert!(!l.allows("2001:db9::1".parse().unwrap()));
        assert!(IpAllowlist::default().allows("10.0.0.1".parse().unwrap()));
        for bad in [
            "fe80::1%eth0/64",
            "fe80::1%25eth0",
            "300.1.1.1/8",
            "10.0.0.0/33",
            "::/129",
            "",
            "host.example",
            "10.0.0.0/-1",
        ] {
            assert!(IpAllowlist::parse(&[bad]).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..5000).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
        let e = IpAllowlist::parse(&many).unwrap_err().to_string();
        assert!(e.contains("too many"), "{e}");
        assert!(IpAllowlist::parse(&many[..1024]).is_ok());
    }

    #[test]
    fn policy_json_round_trip() {
        let p: Policy =
            serde_json::from_str(r#"{"ips":["10.0.0.0/8"],"rate":{"limit":"100/min","burst":20},"quota":"1000/day"}"#)
                .unwrap();
        assert_eq!(p.rate.unwrap().burst, 20);
        let back = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&back).unwrap(), p);
        assert!(serde_json::from_str::<Policy>(r#"{"rate":{"limit":"0/min"}}"#).is_err());
        assert!(serde_json::from_str::<Policy>(r#"{"other":1}"#).is_err());
    }

    #[test]
    fn origins_are_exact_and_normalised() {
        let o = Origin::parse("https://Shop.Example").unwrap();
        assert_eq!(o.as_str(), "https://shop.example");
        assert_eq!(Origin::parse("https://shop.example:443").unwrap(), o);
        assert_eq!(
            Origin::parse("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            Origin::parse("http://[::1]:3000").unwrap().as_str(),
            "http://[::1]:3000"
        );
        assert!(o.matches("https://shop.example"));
        assert!(o.matches("HTTPS://SHOP.EXAMPLE:443"));
        for other in [
            "https://shop.example.evil",
            "https://evil-shop.example",
            "http://shop.example",
            "https://shop.example:8443",
            "null",
            "",
            "https://shop.example/",
        ] {
            assert!(!o.matches(other), "{other:?}");
        }
        for bad in [
            "*",
            "https://*.shop.example",
            "https://shop.example/path",
            "https://user@shop.example",
            "ftp://shop.example",
            "https://",
            "shop.example",
            "https://shop.example:0",
            "https://shop.example:99999",
            "https://sh op.example",
            "https://shop..example",
            "https://[::1",
            "https://shop.example?x",
            "https://-shop.example",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Origin::parse(&format!("https://{}.example", "a".repeat(300))).is_err());
    }
}
