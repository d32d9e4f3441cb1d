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

/// Order-0 entropy of `bytes`, in bytes, at least a bit per byte: about what zstd's Huffman
/// coding of literals makes of a stream without repeats.
fn entropy_bytes(bytes: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| f64::from(c) * (-(f64::from(c) / n).log2()).max(1.0))
        .sum::<f64>()
        / 8.0
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

/// Layouts of an integer stream (its first byte).
const LAYOUT_CENTRED: u8 = 0;
const LAYOUT_PACKED: u8 = 1;
const LAYOUT_SPARSE: u8 = 2;

/// Writes the non-zero values of `xs` (their count first), each after the number of zeros
/// before it; returns the estimated compressed size.
fn put_sparse(out: &mut Vec<u8>, xs: &[i64]) -> f64 {
    let at = out.len();
    put_varint(out, xs.iter().filter(|&&x| x != 0).count() as u64);
    let head = out.len() - at;
    let mut zeros = 0u64;
    for &x in xs {
        if x == 0 {
            zeros += 1;
        } else {
            put_varint(out, zeros);
            put_signed(out, x);
            zeros = 0;
        }
    }
    entropy_bytes(&out[at + head..]) + head as f64
}

/// Writes `xs` in whichever layout ([`put_centred`], [`put_packed`], [`put_sparse`]) is
/// estimated smallest after zstd, led by the layout byte; returns that estimate.
fn put_ints(out: &mut Vec<u8>, xs: &[i64]) -> f64 {
    smallest(out, &[LAYOUT_CENTRED, LAYOUT_PACKED, LAYOUT_SPARSE], |layout, part| {
        Some(match layout {
            LAYOUT_CENTRED => put_centred(part, xs),
            LAYOUT_PACKED => put_packed(part, xs),
            _ => put_sparse(part, xs),
        })
    })
}

/// Writes each candidate (led by its byte from `leads`; `write` returns its estimated size,
/// or `None` when it does not apply) and appends the smallest to `out`, the first of equals;
/// returns its estimate, the lead byte included.
fn smallest(out: &mut Vec<u8>, leads: &[u8], mut write: impl FnMut(u8, &mut Vec<u8>) -> Option<f64>) -> f64 {
    let mut best: Option<(f64, Vec<u8>)> = None;
    for &lead in leads {
        let mut part = vec![lead];
        let Some(cost) = write(lead, &mut part) else { continue };
        let cost = cost + 1.0;
        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
            best = Some((cost, part));
        }
    }
    let (cost, part) = best.expect("the first candidate always applies");
    out.extend_from_slice(&part);
    cost
}

/// Reads `n` integers that [`put_ints`] wrote.
fn read_ints(r: &mut Reader<'_>, n: usize, out: &mut Vec<i64>) -> Result<(), PackedError> {
    out.clear();
    let at = r.pos;
    match r.bytes(1)?[0] {
        LAYOUT_CENTRED => {
            let median = r.signed()?;
            for _ in 0..n {
                out.push(r.signed()?.wrapping_add(median));
            }
        }
        LAYOUT_PACKED => read_packed(r, n, |x| out.push(x))?,
        LAYOUT_SPARSE => {
            let at = r.pos;
            let nonzero = r.varint()?;
            if nonzero > n as u64 {
                return Err(PackedError::Malformed(at));
            }
            for _ in 0..nonzero {
                let at = r.pos;
                let zeros = r.varint()?;
                if zeros >= (n - out.len()) as u64 {
                    return Err(PackedError::Malformed(at));
                }
                out.resize(out.len() + zeros as usize, 0);
                let at = r.pos;
                let x = r.signed()?;
                if x == 0 {
                    return Err(PackedError::Malformed(at));
                }
                out.push(x);
            }
            out.resize(n, 0);
        }
        _ => return Err(PackedError::Malformed(at)),
    }
    Ok(())
}

/// Timestamp layouts (the byte after the interval).
const TIMES_FROM_PREVIOUS: u8 = 0;
const TIMES_FROM_GRID: u8 = 1;

/// Predicts each timestamp as the previous grid point plus the interval. A timestamp within
/// half an interval of its prediction keeps the grid where it was (jitter); one further away
/// (a missed scrape, a restart) moves the grid to itself.
struct GridPredictor {
    at: i64,
    interval: i64,
}

impl GridPredictor {
    fn new(first: i64, interval: i64) -> Self {
        GridPredictor { at: first, interval }
    }

    fn advance(&mut self, t: i64, residual: i64) {
        let predicted = self.at.wrapping_add(self.interval);
        self.at = if residual.unsigned_abs() > self.interval.unsigned_abs() / 2 { t } else { predicted };
    }

    /// The residual of the next timestamp `t`.
    fn residual(&mut self, t: i64) -> i64 {
        let residual = t.wrapping_sub(self.at.wrapping_add(self.interval));
        self.advance(t, residual);
        residual
    }

    /// The next timestamp, from its residual.
    fn timestamp(&mut self, residual: i64) -> i64 {
        let t = self.at.wrapping_add(self.interval).wrapping_add(residual);
        self.advance(t, residual);
        t
    }
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
        // Each timestamp after the first as its distance from the previous one plus the
        // interval, or from a grid of that interval (a scrape a few milliseconds late then
        // costs one residual instead of two): the smaller.
        let from_previous: Vec<i64> =
            samples.windows(2).map(|w| w[1].t.wrapping_sub(w[0].t).wrapping_sub(interval)).collect();
        let mut grid = GridPredictor::new(first.t, interval);
        let from_grid: Vec<i64> = samples[1..].iter().map(|s| grid.residual(s.t)).collect();
        smallest(&mut body, &[TIMES_FROM_PREVIOUS, TIMES_FROM_GRID], |mode, part| {
            Some(put_ints(part, if mode == TIMES_FROM_GRID { &from_grid } else { &from_previous }))
        });
        match mantissas(samples) {
            Some((ms, e)) => {
                body.push(e as u8);
                put_signed(&mut body, ms[0]);
                let deltas: Vec<i64> = ms.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
                let dods: Vec<i64> = deltas.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
                // The differences, or the first difference and the differences of
                // differences: the smaller.
                let modes = [ValueMode::Delta as u8, ValueMode::DeltaOfDelta as u8];
                smallest(&mut body, &modes, |mode, part| {
                    if mode == ValueMode::Delta as u8 {
                        Some(put_ints(part, &deltas))
                    } else if dods.is_empty() {
                        None
                    } else {
                        put_signed(part, deltas[0]);
                        Some(put_ints(part, &dods))
                    }
                });
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
    debug_assert!(body.len() <= max_body_len(samples.len()), "{} bytes of body", body.len());
    let mut out = Vec::with_capacity(body.len() / 2 + 16);
    out.push(ENCODING_PACKED);
    out.extend_from_slice(
        &zstd::bulk::compress(&body, ZSTD_LEVEL).expect("compressing to memory cannot fail"),
    );
    out
}

/// The most bytes a packed chunk's body can take: at most 8 varints and 6 bytes of headers
/// (count, first timestamp, interval, mode and layout bytes, first mantissa, first difference,
/// medians or minima), and per sample at most 20 bytes of timestamp (a sparse pair of
/// varints) and 20 of value (the same; XOR values take 8).
const fn max_body_len(samples: usize) -> usize {
    8 * 10 + 6 + samples * (20 + 20)
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
    let at = r.pos;
    let times = r.bytes(1)?[0];
    let mut ints = Vec::with_capacity(n);
    read_ints(&mut r, n - 1, &mut ints)?;
    match times {
        TIMES_FROM_PREVIOUS => {
            for &x in &ints {
                t = t.wrapping_add(interval).wrapping_add(x);
                out.push(Sample { t, v: 0.0 });
            }
        }
        TIMES_FROM_GRID => {
            let mut grid = GridPredictor::new(t, interval);
            out.extend(ints.iter().map(|&x| Sample { t: grid.timestamp(x), v: 0.0 }));
        }
        _ => return Err(PackedError::Malformed(at)),
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
        let dod = match r.bytes(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err(PackedError::Malformed(at)),
        };
        let mut delta = if dod { r.signed()? } else { 0 };
        read_ints(&mut r, if dod { n.saturating_sub(2) } else { n - 1 }, &mut ints)?;
        let mut rest = values.iter_mut().skip(1);
        if dod && let Some(s) = rest.next() {
            m = m.wrapping_add(delta);
            put(s, m);
        }
        for (s, &d) in rest.zip(&ints) {
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

    #[test]
    fn every_integer_layout_reads_back_what_it_wrote() {
        let streams: [&[i64]; 5] = [
            &[],
            &[0, 0, 0],
            &[5, -3, 0, 0, 0, 0, 9, 0],
            &[i64::MIN, i64::MAX, 0, -1],
            &[100, 101, 99, 100, 102],
        ];
        for xs in streams {
            for layout in [LAYOUT_CENTRED, LAYOUT_PACKED, LAYOUT_SPARSE] {
                let mut out = vec![layout];
                match layout {
                    LAYOUT_CENTRED => put_centred(&mut out, xs),
                    LAYOUT_PACKED => put_packed(&mut out, xs),
                    _ => put_sparse(&mut out, xs),
                };
                let mut back = Vec::new();
                let mut r = Reader::new(&out, 0);
                read_ints(&mut r, xs.len(), &mut back).unwrap();
                assert_eq!((back.as_slice(), r.at_end()), (xs, true), "layout {layout}");
            }
        }
    }

    #[test]
    fn timestamps_with_jitter_gaps_and_restarts_round_trip() {
        let mut t = 1_700_000_000_000i64;
        let mut samples = Vec::new();
        for i in 0..1000i64 {
            t += match i % 97 {
                13 => 45_000,                   // two scrapes missed
                50 => 7_001,                    // the grid moves
                _ if i % 10 == 3 => 15_000 + 3, // late
                _ if i % 10 == 4 => 15_000 - 3, // and back on time
                _ => 15_000,
            };
            samples.push(Sample { t, v: i as f64 });
        }
        let bytes = round_trip(&samples);
        assert!(bytes.len() < 400, "{} bytes for 1,000 samples", bytes.len());
    }

    #[test]
    fn the_largest_bodies_stay_within_the_decoding_limit() {
        // Every timestamp and value difference non-zero and as large as they get.
        let wild: Vec<Sample> = (0..PACKED_CHUNK_SAMPLES as i64)
            .map(|i| Sample {
                t: if i % 2 == 0 { i64::MIN / 2 + i } else { i64::MAX / 2 - i },
                v: if i % 2 == 0 { 4e15 + i as f64 } else { -4e15 - i as f64 },
            })
            .collect();
        let mut body_limit_ok = true;
        for layout in [LAYOUT_CENTRED, LAYOUT_PACKED, LAYOUT_SPARSE] {
            let xs: Vec<i64> = wild.windows(2).map(|w| w[1].t.wrapping_sub(w[0].t)).collect();
            let mut out = vec![layout];
            match layout {
                LAYOUT_CENTRED => put_centred(&mut out, &xs),
                LAYOUT_PACKED => put_packed(&mut out, &xs),
                _ => put_sparse(&mut out, &xs),
            };
            body_limit_ok &= out.len() <= 2 + 10 + 20 * xs.len();
        }
        assert!(body_limit_ok, "an integer stream takes at most 20 bytes per value and its header");
        round_trip(&wild);
    }
}
