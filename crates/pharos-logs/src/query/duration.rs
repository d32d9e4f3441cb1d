//! Durations as LogQL writes them: `5m`, `1h30m`, `250ms`, `1.5s`, `7d`.
//!
//! Units: `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d` (24h), `w` (7d), `y` (365d). Components may
//! carry a fraction (`1.5h`), as Go's `time.ParseDuration` allows for label filters.

use std::fmt;
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        "d" => 86_400 * NANOS_PER_SEC,
        "w" => 7 * 86_400 * NANOS_PER_SEC,
        "y" => 365 * 86_400 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Parses a duration; `None` when `text` is not one or does not fit a [`Duration`].
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after_dot) => {
                let len = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
                after_dot.split_at(len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = after.find(|c: char| !c.is_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = unit_nanos(unit)?;
        let int_value: u128 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
        let mut component = int_value.checked_mul(scale)?;
        // The fraction is exact down to the nanosecond; digits beyond that are dropped.
        let mut divisor: u128 = 1;
        for digit in frac_part.bytes() {
            divisor = divisor.checked_mul(10)?;
            let part = u128::from(digit - b'0') * scale / divisor;
            if part == 0 && scale / divisor == 0 {
                break;
            }
            component = component.checked_add(part)?;
        }
        total = total.checked_add(component)?;
        rest = after;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).ok()?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, nanos))
}

/// Writes a duration in units every LogQL duration accepts (`h`, `m`, `s`, `ms`, `us`, `ns`):
/// `1h30m`, `250ms`, `0s`.
pub(crate) fn fmt_duration(duration: Duration, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut nanos = duration.as_nanos();
    if nanos == 0 {
        return f.write_str("0s");
    }
    for (unit, scale) in [
        ("h", 3_600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        let count = nanos / scale;
        if count > 0 {
            write!(f, "{count}{unit}")?;
            nanos %= scale;
        }
    }
    Ok(())
}

/// A [`Duration`] that displays as LogQL.
pub(crate) struct DisplayDuration(pub(crate) Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_duration(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_simple_units_are_scaled() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1w"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Some(Duration::from_micros(10)));
    }

    #[test]
    fn parse_duration_compound_sums_components() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1m30s500ms"), Some(Duration::from_millis(90_500)));
    }

    #[test]
    fn parse_duration_fraction_is_exact() {
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("0.25s"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration(".5s"), Some(Duration::from_millis(500)));
    }

    #[test]
    fn parse_duration_garbage_is_none() {
        for text in ["", "5", "m", "5x", "5mm", "5m3", "1..5s", "5M", "99999999999999999999999999999y"] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    #[test]
    fn fmt_duration_uses_largest_units() {
        let show = |d| DisplayDuration(d).to_string();
        assert_eq!(show(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::ZERO), "0s");
        assert_eq!(show(Duration::from_secs(86_400)), "24h");
        assert_eq!(show(Duration::new(1, 1)), "1s1ns");
    }
}
