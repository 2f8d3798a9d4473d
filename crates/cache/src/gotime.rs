//! Go's `time.Time` as `encoding/json` reads and writes it (RFC 3339 / RFC3339Nano).
//!
//! Cache configs carry `createdAt` values that are hashed into the config digest, so the
//! text must survive a read/write cycle byte for byte: the offset the daemon wrote is kept
//! (it depends on the daemon's `time.Location`), and formatting drops trailing fractional
//! zeros exactly like Go's `RFC3339Nano` layout (`2006-01-02T15:04:05.999999999Z07:00`).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::SystemTime;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::error::GoTimeError;

/// A point in time with the UTC offset it was written with.
///
/// Equality, ordering and hashing are by instant (as Go's `Time.Equal`/`Before`), so
/// `10:00Z` equals `11:00+01:00`; the offset only matters for formatting.
///
/// Invariant: the local (offset-applied) year is within 0..=9999, the range Go's
/// `MarshalJSON` accepts, so formatting can never fail.
#[derive(Clone, Copy)]
pub struct GoTime(OffsetDateTime);

impl GoTime {
    /// Go's zero `time.Time{}`: `0001-01-01T00:00:00Z`. BuildKit writes it as is, because
    /// `omitempty` has no effect on struct-typed fields.
    pub fn zero() -> Self {
        Self(
            PrimitiveDateTime::new(date_or_epoch(1, Month::January, 1), Time::MIDNIGHT)
                .assume_utc(),
        )
    }

    /// Whether this is the zero time (Go's `IsZero`: the instant, whatever the offset).
    pub fn is_zero(&self) -> bool {
        *self == Self::zero()
    }

    /// The current time in UTC.
    pub fn now() -> Self {
        // The system clock is between 1970 and 9999 on any machine strata runs on; if it is
        // not, the zero time is a safe, visible stand-in rather than a panic.
        Self::from_system_time(SystemTime::now()).unwrap_or_else(|_| Self::zero())
    }

    /// Converts a `SystemTime` to a UTC time. Fails only outside Go's JSON year range.
    pub fn from_system_time(t: SystemTime) -> Result<Self, GoTimeError> {
        let err = |reason| GoTimeError { value: format!("{t:?}"), reason };
        let nanos: i128 = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i128::try_from(d.as_nanos()).map_err(|_| err("out of range"))?,
            Err(e) => -i128::try_from(e.duration().as_nanos()).map_err(|_| err("out of range"))?,
        };
        // `OffsetDateTime::from(SystemTime)` panics out of range; this path cannot.
        let odt =
            OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| err("out of range"))?;
        Self::from_offset_date_time(odt)
    }

    /// Wraps a `time` value, keeping its offset. Fails outside Go's JSON year range 0..=9999.
    pub fn from_offset_date_time(t: OffsetDateTime) -> Result<Self, GoTimeError> {
        if !(0..=9999).contains(&t.year()) {
            return Err(GoTimeError {
                value: t.to_string(),
                reason: "year outside 0..=9999 (Go cannot marshal it)",
            });
        }
        Ok(Self(t))
    }

    /// The underlying value, with its original offset.
    pub fn as_offset_date_time(&self) -> OffsetDateTime {
        self.0
    }

    /// Offset from UTC in seconds, as written.
    pub fn offset_seconds(&self) -> i32 {
        self.0.offset().whole_seconds()
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> i128 {
        self.0.unix_timestamp_nanos()
    }

    /// Parses RFC 3339 as Go's `time.Time.UnmarshalJSON` does: `YYYY-MM-DDTHH:MM:SS`, an
    /// optional `.` fraction (digits beyond 9 are truncated, as Go does), then `Z` or
    /// `±hh:mm`.
    pub fn parse(s: &str) -> Result<Self, GoTimeError> {
        let err = |reason| GoTimeError { value: s.chars().take(100).collect(), reason };
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(err("too short"));
        }
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return Err(err("separators not where RFC 3339 puts them"));
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32, GoTimeError> {
            let part = &b[r];
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(err("non-digit in a numeric field"));
            }
            Ok(part.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);

        let mut i = 19;
        let mut nanos = 0u32;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(err("empty fraction"));
            }
            let digits = &b[start..i.min(start + 9)];
            nanos = digits.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
            nanos *= 10u32.pow(9 - digits.len() as u32);
        }

        let offset = match &b[i..] {
            b"Z" => UtcOffset::UTC,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let (hh, mm) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if hh > 23 || mm > 59 {
                    return Err(err("zone offset out of range"));
                }
                let sign = if *sign == b'-' { -1 } else { 1 };
                // hh <= 23 and mm <= 59, so the casts and the constructor cannot fail.
                UtcOffset::from_hms(sign * hh as i8, sign * mm as i8, 0)
                    .map_err(|_| err("zone offset out of range"))?
            }
            _ => return Err(err("missing or malformed zone (Z or ±hh:mm)")),
        };

        let month = u8::try_from(month)
            .ok()
            .and_then(|m| Month::try_from(m).ok())
            .ok_or_else(|| err("month out of range"))?;
        let day = u8::try_from(day).map_err(|_| err("day out of range"))?;
        let date = Date::from_calendar_date(year as i32, month, day)
            .map_err(|_| err("day out of range for the month"))?;
        let time = Time::from_hms_nano(
            u8::try_from(hour).map_err(|_| err("hour out of range"))?,
            u8::try_from(minute).map_err(|_| err("minute out of range"))?,
            u8::try_from(second).map_err(|_| err("second out of range"))?,
            nanos,
        )
        .map_err(|_| err("time of day out of range"))?;
        Ok(Self(PrimitiveDateTime::new(date, time).assume_offset(offset)))
    }

    /// Formats as Go's `RFC3339Nano`: no trailing fractional zeros, `Z` for a zero offset,
    /// otherwise `±hh:mm`.
    pub fn to_rfc3339_nano(&self) -> String {
        self.to_string()
    }
}

fn date_or_epoch(year: i32, month: Month, day: u8) -> Date {
    // Constant, valid arguments: the fallback is unreachable but keeps this panic-free.
    Date::from_calendar_date(year, month, day).unwrap_or(Date::MIN)
}

impl fmt::Display for GoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )?;
        let nanos = t.nanosecond();
        if nanos != 0 {
            let frac = format!("{nanos:09}");
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        let off = t.offset();
        if off.is_utc() {
            f.write_str("Z")
        } else {
            // Go's Z07:00 prints hours and minutes only; seconds of the offset are dropped.
            let (h, m, _) = off.as_hms();
            let sign = if off.is_negative() { '-' } else { '+' };
            write!(f, "{sign}{:02}:{:02}", h.unsigned_abs(), m.unsigned_abs())
        }
    }
}

impl fmt::Debug for GoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoTime({self})")
    }
}

impl Default for GoTime {
    fn default() -> Self {
        Self::zero()
    }
}

impl PartialEq for GoTime {
    fn eq(&self, other: &Self) -> bool {
        self.unix_nanos() == other.unix_nanos()
    }
}
impl Eq for GoTime {}

impl PartialOrd for GoTime {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for GoTime {
    fn cmp(&self, other: &Self) -> Ordering {
        self.unix_nanos().cmp(&other.unix_nanos())
    }
}

impl Hash for GoTime {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.unix_nanos().hash(state);
    }
}

impl std::str::FromStr for GoTime {
    type Err = GoTimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<SystemTime> for GoTime {
    type Error = GoTimeError;
    fn try_from(t: SystemTime) -> Result<Self, Self::Error> {
        Self::from_system_time(t)
    }
}

impl serde::Serialize for GoTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for GoTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Go leaves a time untouched (zero) when the JSON value is null.
        match Option::<String>::deserialize(d)? {
            None => Ok(Self::zero()),
            Some(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt(s: &str) -> String {
        GoTime::parse(s).unwrap().to_string()
    }

    #[test]
    fn round_trips_go_rfc3339nano() {
        for s in [
            "2026-12-04T15:28:07.658646544Z",
            "2026-12-04T15:28:17.26506021Z",
            "2026-12-04T15:28:17.1Z",
            "2026-12-04T15:28:17Z",
            "0001-01-01T00:00:00Z",
            "2026-08-20T11:14:03.5+02:00",
            "2026-08-20T04:14:03.000000001-05:30",
            "9999-12-31T23:59:59.999999999Z",
            "0000-01-01T00:30:00+01:00",
        ] {
            assert_eq!(rt(s), s);
        }
    }

    #[test]
    fn normalises_like_go() {
        // Trailing zeros go, a +00:00 offset prints as Z, extra fraction digits truncate.
        assert_eq!(rt("2026-12-04T15:28:07.500000000Z"), "2026-12-04T15:28:07.5Z");
        assert_eq!(rt("2026-12-04T15:28:07.000Z"), "2026-12-04T15:28:07Z");
        assert_eq!(rt("2026-12-04T15:28:07+00:00"), "2026-12-04T15:28:07Z");
        assert_eq!(rt("2026-12-04T15:28:07.1234567891234Z"), "2026-12-04T15:28:07.123456789Z");
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in [
            "",
            "2026-12-04",
            "2026-12-04 15:28:07Z",
            "2026-12-04T15:28:07",
            "2026-13-04T15:28:07Z",
            "2026-02-30T15:28:07Z",
            "2026-12-04T24:00:00Z",
            "2026-12-04T23:59:60Z",
            "2026-12-04T15:28:07.Z",
            "2026-12-04T15:28:07+2:00",
            "2026-12-04T15:28:07+24:00",
            "2026-12-04T15:28:07Zjunk",
            "2026-12-04T15:28:0xZ",
            "２026-12-04T15:28:07Z",
        ] {
            assert!(GoTime::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn compares_by_instant() {
        let a = GoTime::parse("2026-01-01T10:00:00Z").unwrap();
        let b = GoTime::parse("2026-01-01T11:00:00+01:00").unwrap();
        let c = GoTime::parse("2026-01-01T10:00:00.000000001Z").unwrap();
        assert_eq!(a, b);
        assert!(a < c && b < c);
        assert_eq!(b.to_string(), "2026-01-01T11:00:00+01:00");
        assert_eq!(b.offset_seconds(), 3600);
    }

    #[test]
    fn zero_and_system_time() {
        assert_eq!(GoTime::zero().to_string(), "0001-01-01T00:00:00Z");
        assert!(GoTime::zero().is_zero());
        assert!(GoTime::default().is_zero());
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_796_398_087, 658_646_544);
        let g = GoTime::from_system_time(t).unwrap();
        assert_eq!(g.to_string(), "2026-12-04T15:28:07.658646544Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(GoTime::try_from(before).unwrap().to_string(), "1969-12-31T00:00:00Z");
        assert!(!GoTime::now().is_zero());
    }

    #[test]
    fn serde_null_is_zero() {
        let t: GoTime = serde_json::from_str("null").unwrap();
        assert!(t.is_zero());
        assert!(serde_json::from_str::<GoTime>("\"nope\"").is_err());
        assert!(serde_json::from_str::<GoTime>("5").is_err());
    }
}
