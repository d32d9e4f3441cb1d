//! Byte sizes as LogQL writes them: `20KB`, `1.5MiB`, `512B`.
//!
//! Units are case-insensitive; `KB`, `MB`, ... are powers of 1000 and `KiB`, `MiB`, ...
//! powers of 1024.

use std::fmt;

const UNITS: [(&str, u64); 13] = [
    ("EiB", 1 << 60),
    ("EB", 1_000_000_000_000_000_000),
    ("PiB", 1 << 50),
    ("PB", 1_000_000_000_000_000),
    ("TiB", 1 << 40),
    ("TB", 1_000_000_000_000),
    ("GiB", 1 << 30),
    ("GB", 1_000_000_000),
    ("MiB", 1 << 20),
    ("MB", 1_000_000),
    ("KiB", 1 << 10),
    ("KB", 1_000),
    ("B", 1),
];

/// Parses a byte size with a unit; `None` when `text` is not one or overflows `u64`.
pub(crate) fn parse_bytes(text: &str) -> Option<u64> {
    let number_len = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(number_len);
    if number.is_empty()
        || number.starts_with('.')
        || number.ends_with('.')
        || number.matches('.').count() > 1
    {
        return None;
    }
    let (_, scale) = UNITS.iter().find(|(name, _)| name.eq_ignore_ascii_case(unit))?;
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(*scale);
    }
    let value = number.parse::<f64>().ok()? * *scale as f64;
    if !value.is_finite() || value >= u64::MAX as f64 {
        return None;
    }
    Some(value.round() as u64)
}

/// A byte count that displays with the largest unit dividing it exactly: `20KB`, `1MiB`, `1536B`.
pub(crate) struct DisplayBytes(pub(crate) u64);

impl fmt::Display for DisplayBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, scale) = UNITS
            .iter()
            .find(|(_, scale)| self.0 != 0 && self.0.is_multiple_of(*scale))
            .copied()
            .unwrap_or(("B", 1));
        write!(f, "{}{name}", self.0 / scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bytes_decimal_and_binary_units_differ() {
        assert_eq!(parse_bytes("20KB"), Some(20_000));
        assert_eq!(parse_bytes("1KiB"), Some(1_024));
        assert_eq!(parse_bytes("1MiB"), Some(1 << 20));
        assert_eq!(parse_bytes("3gb"), Some(3_000_000_000));
        assert_eq!(parse_bytes("512B"), Some(512));
    }

    #[test]
    fn parse_bytes_fraction_rounds_to_whole_bytes() {
        assert_eq!(parse_bytes("1.5KB"), Some(1_500));
        assert_eq!(parse_bytes("0.5KiB"), Some(512));
    }

    #[test]
    fn parse_bytes_garbage_is_none() {
        for text in ["", "KB", "5", "5XB", ".5KB", "5.KB", "1.2.3KB", "99999999999EiB"] {
            assert_eq!(parse_bytes(text), None, "{text}");
        }
    }

    #[test]
    fn display_bytes_picks_exact_unit() {
        assert_eq!(DisplayBytes(20_000).to_string(), "20KB");
        assert_eq!(DisplayBytes(1 << 20).to_string(), "1MiB");
        assert_eq!(DisplayBytes(1_536).to_string(), "1536B");
        assert_eq!(DisplayBytes(0).to_string(), "0B");
    }
}
