//! Packed chunks: how blocks (format version 2) store a series' samples, smaller than the
//! head's XOR chunks. The format is in `docs/formats/metrics-chunks.md`.
//!
//! Scraped values are mostly decimals of few digits: integer counters, seconds with two
//! decimals, byte gauges. A run whose every value is exactly `m / 10^e` for integers `m`
//! (bit for bit on decoding) is stored as those integers' differences; timestamps as their
//! distance from the run's usual interval. Both are byte-aligned varints, mostly zero or
//! small, which zstd then squeezes close to their entropy. Any other run (NaN, -0, values of
//! many digits) keeps the XOR of each value with the previous one, which is lossless for
//! every bit pattern.

use crate::model::Sample;

use super::codec::{Malformed, Reader, put_signed, put_varint};

/// Most samples in one packed chunk. Longer runs are cut; 2,048 samples are about 8.5 hours
/// at a 15 s interval, so a merged block's series takes a few chunks.
pub(crate) const PACKED_CHUNK_SAMPLES: usize = 2048;

/// Set in the value mode byte when the values are bit-packed rather than varints.
const PACKED_FLAG: u8 = 0x10;

/// The leading byte of a packed chunk (the encoding; other values are reserved).
const ENCODING_PACKED: u8 = 1;

/// Largest decimal exponent tried: `m / 10^e` with `10^e` exact in an f64.
const MAX_EXPONENT: usize = 15;

/// Integers up to this magnitude are exact in an f64.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// zstd level: blocks are written in the background and read many times; decompression speed
/// does not depend on the level.
const ZSTD_LEVEL: i32 = 9;

const POW10: [f64; MAX_EXPONENT + 1] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// How the values of a chunk are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueMode {
    /// Decimal mantissas, each as its difference from the previous.
    Delta = 0,
    /// Decimal mantissas, each as the change of that difference (steady counters).
    DeltaOfDelta = 1,
    /// The bits of each value XORed with the previous value's bits, 8 bytes big-endian
    /// (written where the exponent byte would be; exponents stop at 15).
    Xor = 0xff,
}

/// Why a packed chunk cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PackedError {
    #[error("unknown chunk encoding {0}")]
    Encoding(u8),
    #[error("chunk does not decompress: {0}")]
    Decompress(String),
    #[error("chunk is truncated or malformed at byte {0}")]
    Malformed(usize),
}

impl From<Malformed> for PackedError {
    fn from(m: Malformed) -> Self {
        PackedError::Malformed(m.0)
    }
}

/// `v` as `m / 10^e` with the smallest `e`, if some `e` decodes back to exactly `v`.
fn decimal(v: f64) -> Option<(i64, usize)> {
    if !v.is_finite() {
        return None;
    }
    for (e, p) in POW10.iter().enumerate() {
        let m = (v * p).round();
        if m.abs() >= MAX_EXACT {
            return None;
        }
        // Checked as decoding computes it, from the integer (so -0 is refused: it would
        // come back as +0).
        let m = m as i64;
        if (m as f64 / p).to_bits() == v.to_bits() {
            return Some((m, e));
        }
    }
    None
}

/// The mantissas of every value at one exponent, if all are decimals that fit.
fn mantissas(samples: &[Sample]) -> Option<(Vec<i64>, usize)> {
    let parts: Vec<(i64, usize)> = samples.iter().map(|s| decimal(s.v)).collect::<Option<_>>()?;
    let e = parts.iter().map(|&(_, e)| e).max().unwrap_or(0);
    let ms = parts
        .into_iter()
        .map(|(m, ei)| {
            // m / 10^ei and m·10^(e-ei) / 10^e are the same number; both divisions round it
            // to the same f64 as long as the scaled mantissa stays exact.
            let scaled = m.checked_mul(10i64.pow((e - ei) as u32))?;
            (scaled.unsigned_abs() < MAX_EXACT as u64).then_some(scaled)
        })
        .collect::<Option<Vec<i64>>>()?;
    Some((ms, e))
}

/// The most common difference between consecutive timestamps (ties: the smallest).
fn usual_interval(samples: &[Sample]) -> i64 {
    let mut deltas: Vec<i64> = samples.windows(2).map(|w| w[1].t.wrapping_sub(w[0].t)).collect();
    deltas.sort_unstable();
    let (mut best, mut best_n, mut i) = (0, 0, 0);
    while i < deltas.len() {
        let n = deltas[i..].iter().take_while(|&&d| d == deltas[i]).count();
        if n > best_n {
            (best, best_n) = (deltas[i], n);
        }
        i += n;
    }
    best
}

/// Order-0 entropy of `bytes`, in bytes: about what zstd's literal coding makes of a stream
/// without repeats (runs of zeros do better).
fn entropy_bytes(bytes: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let n = bytes.len() as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| -f64::from(c) * (f64::from(c) / n).log2()).sum::<f64>() / 8.0
}

/// Writes `xs` minus their median as zigzag varints (the median first); returns the estimated
/// compressed size.
fn put_centred(out: &mut Vec<u8>, xs: &[i64]) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    put_signed(out, median);
    let at = out.len();
    for &x in xs {
        put_signed(out, x.wrapping_sub(median));
    }
    entropy_bytes(&out[at..]) + at as f64
}

/// Writes `xs` minus their minimum, each in the same number of bits (the minimum and the
/// width first); returns the size.
fn put_packed(out: &mut Vec<u8>, xs: &[i64]) -> f64 {
    let min = xs.iter().copied().min().unwrap_or(0);
    let span = xs.iter().map(|&x| x.wrapping_sub(min) as u64).max().unwrap_or(0);
    let width = 64 - span.leading_zeros();
    put_signed(out, min);
    out.push(width as u8);
    let (mut acc, mut bits) = (0u128, 0u32);
    for &x in xs {
        acc |= u128::from(x.wrapping_sub(min) as u64) << bits;
        bits += width;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
    out.len() as f64
}

/// Reads what [`put_packed`] wrote for `n` values.
fn read_packed(r: &mut Reader<'_>, n: usize, mut each: impl FnMut(i64)) -> Result<(), PackedError> {
    let min = r.signed()?;
    let at = r.pos;
    let width = u32::from(r.bytes(1)?[0]);
    if width > 64 {
        return Err(PackedError::Malformed(at));
    }
    let data = r.bytes((n * width as usize).div_ceil(8))?;
    let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
    let (mut acc, mut bits, mut next) = (0u128, 0u32, 0usize);
    for _ in 0..n {
        while bits < width {
            acc |= u128::from(data[next]) << bits;
            next += 1;
            bits += 8;
        }
        each(min.wrapping_add((acc as u64 & mask) as i64));
        acc = if width == 64 { acc >> 64 } else { acc >> width };
        bits -= width;
    }
    Ok(())
}

/// Encodes time-ordered samples (at most [`PACKED_CHUNK_SAMPLES`]) as one packed chunk.
pub(crate) fn encode(samples: &[Sample]) -> Vec<u8> {
    debug_assert!(samples.len() <= PACKED_CHUNK_SAMPLES);
    let mut body = Vec::with_capacity(16 + samples.len() * 4);
    put_varint(&mut body, samples.len() as u64);
    if let Some(first) = samples.first() {
        put_signed(&mut body, first.t);
        let interval = usual_interval(samples);
        put_signed(&mut body, interval);
        for w in samples.windows(2) {
            put_signed(&mut body, w[1].t.wrapping_sub(w[0].t).wrapping_sub(interval));
        }
        match mantissas(samples) {
            Some((ms, e)) => {
                body.push(e as u8);
                put_signed(&mut body, ms[0]);
                let deltas: Vec<i64> = ms.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
                let dods: Vec<i64> = deltas.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
                // Of the differences and the differences of differences (after the first
                // difference), stored as centred varints or bit-packed, the smallest.
                let mut best: Option<(f64, Vec<u8>)> = None;
                for (mode, xs) in
                    [(ValueMode::Delta, &deltas[..]), (ValueMode::DeltaOfDelta, dods.as_slice())]
                {
                    if mode == ValueMode::DeltaOfDelta && dods.is_empty() {
                        continue;
                    }
                    for packed in [false, true] {
                        let mut part = vec![mode as u8 | if packed { PACKED_FLAG } else { 0 }];
                        if mode == ValueMode::DeltaOfDelta {
                            put_signed(&mut part, deltas[0]);
                        }
                        let cost =
                            if packed { put_packed(&mut part, xs) } else { put_centred(&mut part, xs) };
                        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                            best = Some((cost, part));
                        }
                    }
                }
                match best {
                    Some((_, part)) => body.extend_from_slice(&part),
                    None => body.push(ValueMode::Delta as u8),
                }
            }
            None => {
                body.push(ValueMode::Xor as u8);
                let mut prev = 0u64;
                for s in samples {
                    let bits = s.v.to_bits();
                    body.extend_from_slice(&(bits ^ prev).to_be_bytes());
                    prev = bits;
                }
            }
        }
    }
    let mut out = Vec::with_capacity(body.len() / 2 + 16);
    out.push(ENCODING_PACKED);
    out.extend_from_slice(
        &zstd::bulk::compress(&body, ZSTD_LEVEL).expect("compressing to memory cannot fail"),
    );
    out
}

/// The most bytes a packed chunk's body can take: a count, a first timestamp, an interval,
/// two header bytes, and per sample a timestamp varint and 8 value bytes or a varint.
const fn max_body_len(samples: usize) -> usize {
    4 * 10 + 2 + samples * (10 + 10)
}

/// Decodes a packed chunk, appending its samples to `out`.
pub(crate) fn decode(bytes: &[u8], out: &mut Vec<Sample>) -> Result<(), PackedError> {
    let (&encoding, frame) = bytes.split_first().ok_or(PackedError::Malformed(0))?;
    if encoding != ENCODING_PACKED {
        return Err(PackedError::Encoding(encoding));
    }
    let body = zstd::bulk::decompress(frame, max_body_len(PACKED_CHUNK_SAMPLES))
        .map_err(|e| PackedError::Decompress(e.to_string()))?;
    let mut r = Reader::new(&body, 0);
    let n = r.varint()? as usize;
    if n > PACKED_CHUNK_SAMPLES {
        return Err(PackedError::Malformed(0));
    }
    if n == 0 {
        return if r.at_end() { Ok(()) } else { Err(PackedError::Malformed(r.pos)) };
    }
    let start = out.len();
    out.reserve(n);
    let mut t = r.signed()?;
    let interval = r.signed()?;
    out.push(Sample { t, v: 0.0 });
    for _ in 1..n {
        t = t.wrapping_add(interval).wrapping_add(r.signed()?);
        out.push(Sample { t, v: 0.0 });
    }
    let at = r.pos;
    let values = &mut out[start..];
    let first = r.bytes(1)?[0];
    if first == ValueMode::Xor as u8 {
        let mut prev = 0u64;
        for s in values.iter_mut() {
            prev ^= u64::from_be_bytes(r.array()?);
            s.v = f64::from_bits(prev);
        }
    } else {
        let e = usize::from(first);
        let p = *POW10.get(e).ok_or(PackedError::Malformed(at))?;
        let put = |s: &mut Sample, m: i64| s.v = if e == 0 { m as f64 } else { m as f64 / p };
        let mut m = r.signed()?;
        put(&mut values[0], m);
        let at = r.pos;
        let mode = r.bytes(1)?[0];
        let (dod, packed) = match (mode & !PACKED_FLAG, mode & PACKED_FLAG != 0) {
            (0, packed) => (false, packed),
            (1, packed) => (true, packed),
            _ => return Err(PackedError::Malformed(at)),
        };
        let mut delta = if dod && n > 1 { r.signed()? } else { 0 };
        let mut diffs = Vec::with_capacity(n);
        let count = if dod { n.saturating_sub(2) } else { n - 1 };
        if packed {
            read_packed(&mut r, count, |x| diffs.push(x))?;
        } else {
            let median = r.signed()?;
            for _ in 0..count {
                diffs.push(r.signed()?.wrapping_add(median));
            }
        }
        let mut rest = values.iter_mut().skip(1);
        if dod && let Some(s) = rest.next() {
            m = m.wrapping_add(delta);
            put(s, m);
        }
        for (s, d) in rest.zip(diffs) {
            if dod {
                delta = delta.wrapping_add(d);
                m = m.wrapping_add(delta);
            } else {
                m = m.wrapping_add(d);
            }
            put(s, m);
        }
    }
    if !r.at_end() {
        return Err(PackedError::Malformed(r.pos));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stale_nan;

    fn round_trip(samples: &[Sample]) -> Vec<u8> {
        let bytes = encode(samples);
        let mut back = Vec::new();
        decode(&bytes, &mut back).unwrap();
        assert_eq!(back.len(), samples.len());
        for (i, (a, b)) in back.iter().zip(samples).enumerate() {
            assert_eq!((a.t, a.v.to_bits()), (b.t, b.v.to_bits()), "sample {i} of {}", samples.len());
        }
        bytes
    }

    fn series(n: usize, v: impl Fn(usize) -> f64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                t: 1_700_000_000_000 + i as i64 * 15_000 + (i as i64 % 7 == 3) as i64 * 4,
                v: v(i),
            })
            .collect()
    }

    #[test]
    fn packed_chunks_round_trip_every_value_bit_for_bit() {
        round_trip(&[]);
        round_trip(&series(1, |_| 42.0));
        round_trip(&series(2, |i| i as f64));
        round_trip(&series(500, |i| (i * 37 % 11 + i * 100) as f64));
        round_trip(&series(500, |i| (i * 1537) as f64 / 100.0));
        round_trip(&series(500, |i| 0.1 * i as f64));
        round_trip(&series(500, |i| -(i as f64) * 1e12));
        round_trip(&series(500, |i| (i as f64).sin()));
        let specials = [
            f64::NAN,
            stale_nan(),
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            1e300,
            5e-324,
        ];
        round_trip(&series(specials.len(), |i| specials[i]));
        round_trip(&series(300, |i| if i == 299 { stale_nan() } else { i as f64 }));
        round_trip(&series(PACKED_CHUNK_SAMPLES, |i| (i / 3) as f64 * 4096.0 + 1e9));
        // Irregular and negative timestamps, big jumps.
        let odd: Vec<Sample> = [i64::MIN + 1, -5, 0, 1, 1_000_000, i64::MAX]
            .iter()
            .enumerate()
            .map(|(i, &t)| Sample { t, v: i as f64 * 1.5 })
            .collect();
        round_trip(&odd);
    }

    #[test]
    fn decimals_pick_the_smallest_exponent_and_refuse_what_does_not_decode_exactly() {
        assert_eq!(decimal(3.0), Some((3, 0)));
        assert_eq!(decimal(15.37), Some((1537, 2)));
        assert_eq!(decimal(-0.5), Some((-5, 1)));
        assert_eq!(decimal(0.1 + 0.2), None, "0.30000000000000004 needs 17 digits");
        assert_eq!(decimal(-0.0), None, "-0 would come back as +0");
        assert_eq!(decimal(0.0), Some((0, 0)));
        assert_eq!(decimal(f64::NAN), None);
        assert_eq!(decimal(1e20), None, "beyond exact integers");
    }

    #[test]
    fn scrape_shaped_series_take_about_a_byte_per_sample_or_less() {
        // An integer counter with a noisy rate, a counter of seconds with two decimals, a
        // gauge that changes every few scrapes, a constant: 2,048 samples each.
        let noise = |i: usize| {
            let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            (x ^ (x >> 32)) as usize
        };
        let counter = round_trip(&series(2048, |i| (i * 100 + noise(i) % 101) as f64));
        let seconds = round_trip(&series(2048, |i| (i * 1500 + noise(i) % 300) as f64 / 100.0));
        let gauge = round_trip(&series(2048, |i| 1e9 + (noise(i / 5) % 1000 * 4096) as f64));
        let constant = round_trip(&series(2048, |_| 4.0));
        for (what, bytes, most) in [
            ("counter", &counter, 1.5),
            ("seconds", &seconds, 1.6),
            ("gauge", &gauge, 0.7),
            ("constant", &constant, 0.1),
        ] {
            let per_sample = bytes.len() as f64 / 2048.0;
            assert!(per_sample <= most, "{what}: {per_sample:.3} bytes per sample");
        }
    }

    #[test]
    fn damaged_packed_chunks_are_refused_without_panicking() {
        let bytes = encode(&series(300, |i| i as f64 * 0.25));
        assert_eq!(decode(&[7, 1, 2], &mut Vec::new()), Err(PackedError::Encoding(7)));
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], &mut Vec::new()).is_err(), "a {n}-byte prefix was accepted");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            let _ = decode(&b, &mut Vec::new());
        }
    }
}
