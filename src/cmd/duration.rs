//! Durations written the way people type them: `2`, `1.5s`, `250ms`, `1m`,
//! `2d`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest duration accepted on a command line: one day.
pub const MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// A duration from a command line: a non-negative decimal number with an
/// optional unit `ns`, `us`, `ms`, `s` (the default), `m`, `h` or `d`
/// (days), at most one day. A positive duration never becomes zero: one
/// shorter than a nanosecond is one nanosecond. [`unbounded`] parses one
/// of any length, for a flag whose code handles a deadline the clock
/// cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map(DurationArg)
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Parse `2`, `1.5s`, `250ms`, `10us`, `1m`, `1h`, `1d`, at most one day
/// ([`MAX`]). See [`DurationArg`].
pub fn parse(s: &str) -> Result<Duration, String> {
    let d = parse_any(s)?;
    if d > MAX {
        return Err(format!("'{}' is longer than the limit of 24h", s.trim()));
    }
    Ok(d)
}

/// A [`DurationArg`] of any length, as timeout(1) takes: one too long for
/// [`Duration`] is [`Duration::MAX`]. For a clap `value_parser` of a flag
/// whose deadline code treats a duration the clock cannot hold as forever
/// (`process::deadline_after`).
pub fn unbounded(s: &str) -> Result<DurationArg, String> {
    parse_any(s).map(DurationArg)
}

/// The number and unit of `s`, with no upper limit (saturating at
/// [`Duration::MAX`]); a positive value shorter than 1 ns is 1 ns, so that
/// it never reads as zero ("none" for a timeout).
fn parse_any(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("'{t}' is not a duration (try 2, 1.5s, 250ms, 1m or 1d)");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(bad()),
    };
    if num.is_empty() || num == "." {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let secs = value * scale;
    if !secs.is_finite() {
        // Digits only, so never NaN: too many of them for an f64.
        return Ok(Duration::MAX);
    }
    let d = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
    if d.is_zero() && secs > 0.0 {
        return Ok(Duration::from_nanos(1));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("24h"), Ok(MAX));
        assert_eq!(parse("1d"), Ok(MAX));
        assert_eq!(parse("0.5d"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse("0d"), Ok(Duration::ZERO));
    }

    #[test]
    fn a_positive_duration_is_never_zero() {
        for s in [
            "0.0000000001",
            "0.1ns",
            "0.0000000000001s",
            "0.0000000001ms",
        ] {
            assert_eq!(parse(s), Ok(Duration::from_nanos(1)), "{s}");
        }
        assert_eq!(parse("0.000"), Ok(Duration::ZERO));
        assert_eq!(parse("0ns"), Ok(Duration::ZERO));
    }

    #[test]
    fn unbounded_takes_any_length() {
        let u = |s: &str| unbounded(s).map(|d| d.0);
        assert_eq!(u("25h"), Ok(Duration::from_secs(25 * 3600)));
        assert_eq!(u("400d"), Ok(Duration::from_secs(400 * 86400)));
        assert_eq!(
            u("1e400"),
            Err("'1e400' is not a duration (try 2, 1.5s, 250ms, 1m or 1d)".into())
        );
        assert_eq!(u("99999999999999999999999d"), Ok(Duration::MAX));
        assert_eq!(u(&"9".repeat(400)), Ok(Duration::MAX));
        assert_eq!(u("0.0000000001"), Ok(Duration::from_nanos(1)));
        assert!(parse("25h").is_err());
        assert!(parse("2d").is_err());
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "", "-1", "abc", "1x", "1..2", ".", "s", "25h", "1e400", "nan", "inf", "1dd", "d",
        ] {
            assert!(parse(s).is_err(), "{s:?}");
        }
    }
}
