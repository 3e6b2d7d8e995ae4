//! Durations written the way people type them: `2`, `1.5s`, `250ms`, `1m`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest duration accepted on a command line: one day.
pub const MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// A duration from a command line: a non-negative decimal number with an
/// optional unit `ns`, `us`, `ms`, `s` (the default), `m` or `h`, at most one day.
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

/// Parse `2`, `1.5s`, `250ms`, `10us`, `1m`, `1h`. See [`DurationArg`].
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
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
        _ => {
            return Err(format!(
                "'{t}' is not a duration (try 2, 1.5s, 250ms or 1m)"
            ));
        }
    };
    if num.is_empty() || num.starts_with('.') && num.len() == 1 {
        return Err(format!(
            "'{t}' is not a duration (try 2, 1.5s, 250ms or 1m)"
        ));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{t}' is not a duration (try 2, 1.5s, 250ms or 1m)"))?;
    let secs = value * scale;
    if !secs.is_finite() || secs > MAX.as_secs_f64() {
        return Err(format!("'{t}' is longer than the limit of 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
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
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "", "-1", "abc", "1x", "1..2", ".", "s", "25h", "1e400", "nan", "inf",
        ] {
            assert!(parse(s).is_err(), "{s:?}");
        }
    }
}
