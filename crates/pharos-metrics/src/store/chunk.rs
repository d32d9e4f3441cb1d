//! Gorilla-style compressed chunks: delta-of-delta timestamps and XOR float values.
//!
//! The byte layout is documented in `docs/formats/metrics-chunks.md`. Values are
//! stored as their raw bit patterns, so every `f64`, every NaN payload included (the
//! staleness marker `0x7ff0000000000002` among them), round-trips bit for bit.

use crate::model::Sample;

/// Samples per chunk before the head cuts a new one (as Prometheus).
pub const SAMPLES_PER_CHUNK: u16 = 120;

/// Bytes before the bit stream: the sample count, big-endian.
const HEADER_LEN: usize = 2;

/// Why a chunk's bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The bytes are shorter than the header.
    #[error("chunk of {len} bytes is shorter than its 2-byte header")]
    MissingHeader {
        /// Bytes given.
        len: usize,
    },
    /// The bit stream ended before the sample count said it would.
    #[error("chunk bit stream ends inside sample {sample} of {count}")]
    Truncated {
        /// Index of the sample being read.
        sample: u16,
        /// Samples the header announced.
        count: u16,
    },
    /// A varint in the stream is longer than 10 bytes.
    #[error("chunk varint in sample {sample} is longer than 10 bytes")]
    VarintOverflow {
        /// Index of the sample being read.
        sample: u16,
    },
    /// A chunk holds 65535 samples, the most its header can count.
    #[error("chunk is full at {count} samples")]
    Full {
        /// Samples held.
        count: u16,
    },
}

/// Appends bits most-significant first.
#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Unused low bits of the last byte (0: the next bit starts a new byte).
    free: u8,
}

impl BitWriter {
    fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` bits of `v` (`n <= 64`), most significant first.
    fn write_bits(&mut self, v: u64, mut n: u8) {
        while n > 0 {
            if self.free == 0 {
                self.bytes.push(0);
                self.free = 8;
            }
            let take = n.min(self.free);
            let shift = n - take;
            let mask = if take == 64 { u64::MAX } else { (1u64 << take) - 1 };
            let part = ((v >> shift) & mask) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= part << (self.free - take);
            }
            self.free -= take;
            n -= take;
        }
    }

    fn write_uvarint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.write_bits(u64::from(byte), 8);
                return;
            }
            self.write_bits(u64::from(byte | 0x80), 8);
        }
    }

    fn write_varint(&mut self, v: i64) {
        self.write_uvarint(((v << 1) ^ (v >> 63)) as u64);
    }
}

/// Reads bits most-significant first; `None` past the end.
#[derive(Debug, Clone)]
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// The next (up to) 64 bits from `pos`, most significant first, zeros past the end.
    fn peek(&self) -> u64 {
        let i = self.pos / 8;
        let word = match self.bytes.get(i..i + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")),
            None => {
                let mut buf = [0u8; 8];
                let rest = self.bytes.get(i..).unwrap_or(&[]);
                buf[..rest.len()].copy_from_slice(rest);
                u64::from_be_bytes(buf)
            }
        };
        word << (self.pos % 8)
    }

    /// Bits left to read.
    fn remaining(&self) -> usize {
        (self.bytes.len() * 8).saturating_sub(self.pos)
    }

    fn read_bits(&mut self, n: u8) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        if self.remaining() < usize::from(n) {
            return None;
        }
        if n > 56 {
            // A peek holds at least 57 valid bits; take the value in two parts.
            let hi = self.read_bits(n - 32)?;
            let lo = self.read_bits(32)?;
            return Some((hi << 32) | lo);
        }
        let out = self.peek() >> (64 - u32::from(n));
        self.pos += usize::from(n);
        Some(out)
    }

    /// `Ok(None)`: ran out of bits; `Err(())`: longer than 10 bytes.
    fn read_uvarint(&mut self) -> Result<Option<u64>, ()> {
        let mut out: u64 = 0;
        for i in 0..10u32 {
            let Some(byte) = self.read_bits(8) else { return Ok(None) };
            out |= (byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(Some(out));
            }
        }
        Err(())
    }

    fn read_varint(&mut self) -> Result<Option<i64>, ()> {
        Ok(self.read_uvarint()?.map(|u| ((u >> 1) as i64) ^ -((u & 1) as i64)))
    }
}

/// `leading` before the first value change: no window to reuse yet.
const NO_WINDOW: u8 = 0xff;

/// One compressed chunk of a series' samples in time order, with the state to append more.
#[derive(Debug, Clone)]
pub struct XorChunk {
    w: BitWriter,
    count: u16,
    min_t: i64,
    last_t: i64,
    last_delta: i64,
    last_v: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl XorChunk {
    /// An empty chunk.
    pub fn new() -> Self {
        Self {
            w: BitWriter { bytes: vec![0; HEADER_LEN], free: 0 },
            count: 0,
            min_t: 0,
            last_t: 0,
            last_delta: 0,
            last_v: 0,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    /// Decodes `bytes` (as [`bytes`](Self::bytes) returns them) into a chunk that can be
    /// read and appended to; fails if the stream is shorter than its header claims.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChunkError> {
        let mut it = ChunkIter::new(bytes);
        let mut chunk = Self::new();
        for s in it.by_ref() {
            chunk.append(s.t, s.v)?;
        }
        match it.error() {
            Some(e) => Err(e.clone()),
            None => Ok(chunk),
        }
    }

    /// Number of samples held.
    pub fn len(&self) -> u16 {
        self.count
    }

    /// Whether the chunk holds no sample.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Timestamp of the first sample (meaningless when empty).
    pub fn min_t(&self) -> i64 {
        self.min_t
    }

    /// Timestamp of the last sample (meaningless when empty).
    pub fn max_t(&self) -> i64 {
        self.last_t
    }

    /// The encoded bytes: header and bit stream, the last byte zero-padded.
    pub fn bytes(&self) -> &[u8] {
        &self.w.bytes
    }

    /// Appends a sample. Timestamps should increase (the encoding accepts any order, but
    /// readers of a series expect time order).
    pub fn append(&mut self, t: i64, v: f64) -> Result<(), ChunkError> {
        if self.count == u16::MAX {
            return Err(ChunkError::Full { count: self.count });
        }
        let bits = v.to_bits();
        match self.count {
            0 => {
                self.w.write_varint(t);
                self.w.write_bits(bits, 64);
                self.min_t = t;
            }
            1 => {
                let delta = t.wrapping_sub(self.last_t);
                self.w.write_varint(delta);
                self.write_value(bits);
                self.last_delta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(self.last_t);
                let dod = delta.wrapping_sub(self.last_delta);
                self.write_dod(dod);
                self.write_value(bits);
                self.last_delta = delta;
            }
        }
        self.last_t = t;
        self.last_v = bits;
        self.count += 1;
        self.w.bytes[..HEADER_LEN].copy_from_slice(&self.count.to_be_bytes());
        Ok(())
    }

    fn write_dod(&mut self, dod: i64) {
        // (prefix, prefix length, payload bits)
        const CLASSES: [(u64, u8, u8); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];
        if dod == 0 {
            self.w.write_bit(false);
            return;
        }
        for (prefix, plen, bits) in CLASSES {
            let lo = -(1i64 << (bits - 1));
            let hi = (1i64 << (bits - 1)) - 1;
            if (lo..=hi).contains(&dod) {
                self.w.write_bits(prefix, plen);
                self.w.write_bits(dod as u64, bits);
                return;
            }
        }
        self.w.write_bits(0b1111, 4);
        self.w.write_bits(dod as u64, 64);
    }

    fn write_value(&mut self, bits: u64) {
        let xor = bits ^ self.last_v;
        if xor == 0 {
            self.w.write_bit(false);
            return;
        }
        self.w.write_bit(true);
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
            self.w.write_bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.w.write_bits(xor >> self.trailing, sig);
            return;
        }
        self.leading = leading;
        self.trailing = trailing;
        let sig = 64 - leading - trailing;
        self.w.write_bit(true);
        self.w.write_bits(u64::from(leading), 5);
        // 64 significant bits are written as 0 (they cannot be 0 when the xor is not 0).
        self.w.write_bits(u64::from(sig & 63), 6);
        self.w.write_bits(xor >> trailing, sig);
    }

    /// Iterates the samples in the order appended.
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(&self.w.bytes)
    }
}

/// Decodes a chunk's samples; stops early on corrupt bytes, after which
/// [`error`](Self::error) says why.
#[derive(Debug, Clone)]
pub struct ChunkIter<'a> {
    r: BitReader<'a>,
    count: u16,
    read: u16,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
    err: Option<ChunkError>,
}

impl<'a> ChunkIter<'a> {
    /// Iterates the chunk encoded in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        let (count, err) = match bytes {
            [a, b, ..] => (u16::from_be_bytes([*a, *b]), None),
            _ => (0, Some(ChunkError::MissingHeader { len: bytes.len() })),
        };
        Self {
            r: BitReader { bytes: bytes.get(HEADER_LEN..).unwrap_or(&[]), pos: 0 },
            count,
            read: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
            err,
        }
    }

    /// Why iteration stopped early, if it did.
    pub fn error(&self) -> Option<&ChunkError> {
        self.err.as_ref()
    }

    fn truncated(&self) -> ChunkError {
        ChunkError::Truncated { sample: self.read, count: self.count }
    }

    fn varint(&mut self) -> Result<i64, ChunkError> {
        match self.r.read_varint() {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(self.truncated()),
            Err(()) => Err(ChunkError::VarintOverflow { sample: self.read }),
        }
    }

    fn bits(&mut self, n: u8) -> Result<u64, ChunkError> {
        self.r.read_bits(n).ok_or_else(|| self.truncated())
    }

    fn read_dod(&mut self) -> Result<i64, ChunkError> {
        // Up to four 1 bits, ended by a 0 unless there are four.
        let ones = self.r.peek().leading_ones().min(4) as u8;
        let control = usize::from(ones) + usize::from(ones < 4);
        if self.r.remaining() < control {
            return Err(self.truncated());
        }
        self.r.pos += control;
        let bits = match ones {
            0 => return Ok(0),
            1 => 14,
            2 => 17,
            3 => 20,
            _ => 64,
        };
        let raw = self.bits(bits)?;
        if bits == 64 {
            return Ok(raw as i64);
        }
        // Sign-extend the `bits`-wide two's complement value.
        let shift = 64 - u32::from(bits);
        Ok(((raw << shift) as i64) >> shift)
    }

    fn read_value(&mut self) -> Result<u64, ChunkError> {
        let head = self.r.peek();
        if head >> 63 == 0 {
            // `0`: the value repeats.
            if self.r.remaining() < 1 {
                return Err(self.truncated());
            }
            self.r.pos += 1;
            return Ok(self.v);
        }
        if self.r.remaining() < 2 {
            return Err(self.truncated());
        }
        self.r.pos += 2;
        if head & (1 << 62) != 0 {
            self.leading = self.bits(5)? as u8;
            let mut sig = self.bits(6)? as u8;
            if sig == 0 {
                sig = 64;
            }
            // A corrupt stream could claim more bits than fit; clamp so shifts stay in range.
            self.trailing = 64u8.saturating_sub(self.leading).saturating_sub(sig);
        }
        let sig = 64 - self.leading - self.trailing;
        let xor = self.bits(sig)? << self.trailing;
        Ok(self.v ^ xor)
    }

    fn step(&mut self) -> Result<Sample, ChunkError> {
        match self.read {
            0 => {
                self.t = self.varint()?;
                self.v = self.bits(64)?;
            }
            1 => {
                self.delta = self.varint()?;
                self.t = self.t.wrapping_add(self.delta);
                self.v = self.read_value()?;
            }
            _ => {
                let dod = self.read_dod()?;
                self.delta = self.delta.wrapping_add(dod);
                self.t = self.t.wrapping_add(self.delta);
                self.v = self.read_value()?;
            }
        }
        self.read += 1;
        Ok(Sample { t: self.t, v: f64::from_bits(self.v) })
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.err.is_some() || self.read >= self.count {
            return None;
        }
        match self.step() {
            Ok(s) => Some(s),
            Err(e) => {
                self.err = Some(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::STALE_NAN_BITS;

    /// A small deterministic generator (xorshift64*).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    fn round_trip(samples: &[(i64, u64)]) {
        let mut c = XorChunk::new();
        for &(t, bits) in samples {
            c.append(t, f64::from_bits(bits)).expect("chunk not full");
        }
        let mut it = c.iter();
        let got: Vec<(i64, u64)> = it.by_ref().map(|s| (s.t, s.v.to_bits())).collect();
        assert!(it.error().is_none(), "{:?}", it.error());
        assert_eq!(got, samples);
        let again = XorChunk::from_bytes(c.bytes()).expect("decodes");
        assert_eq!(again.bytes(), c.bytes());
        assert_eq!(again.len() as usize, samples.len());
    }

    #[test]
    fn chunk_regular_samples_round_trip_and_compress() {
        let samples: Vec<(i64, u64)> =
            (0..120).map(|i| (1_700_000_000_000 + i * 15_000, (i as f64 * 0.5).to_bits())).collect();
        round_trip(&samples);
        let mut c = XorChunk::new();
        for &(t, v) in &samples {
            c.append(t, f64::from_bits(v)).expect("room");
        }
        assert!(c.bytes().len() < 120 * 4, "{} bytes for 120 samples", c.bytes().len());
    }

    #[test]
    fn chunk_special_floats_round_trip_bit_exact() {
        let specials = [
            STALE_NAN_BITS,
            f64::NAN.to_bits(),
            0x7ff8_0000_dead_beef,
            0xfff0_0000_0000_0001,
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            0,
            (-0.0f64).to_bits(),
            1,
            u64::MAX,
            f64::MAX.to_bits(),
            f64::MIN_POSITIVE.to_bits(),
            STALE_NAN_BITS,
            STALE_NAN_BITS,
        ];
        let samples: Vec<(i64, u64)> =
            specials.iter().enumerate().map(|(i, &b)| (i as i64 * 1000, b)).collect();
        round_trip(&samples);
    }

    #[test]
    fn chunk_extreme_timestamps_round_trip() {
        round_trip(&[(i64::MIN, 1), (i64::MAX, 2), (0, 3), (-5, 4), (i64::MIN, 5), (i64::MAX, 6)]);
        round_trip(&[(-1_000_000, 1)]);
        round_trip(&[]);
    }

    #[test]
    fn chunk_random_samples_round_trip_bit_exact() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..500 {
            let n = (rng.next() % 200) as usize;
            let mut t = (rng.next() as i64) >> (rng.next() % 64);
            let mut v = rng.next();
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                // Mix regular, jittered and wild steps; repeated, nearby and random values.
                t = match rng.next() % 4 {
                    0 => t.wrapping_add(15_000),
                    1 => t.wrapping_add((rng.next() % 100_000) as i64),
                    2 => t.wrapping_add(rng.next() as i64 >> (rng.next() % 64)),
                    _ => t,
                };
                v = match rng.next() % 5 {
                    0 => v,
                    1 => v ^ (rng.next() & 0xff),
                    2 => (f64::from_bits(v) + 1.0).to_bits(),
                    3 => STALE_NAN_BITS,
                    _ => rng.next(),
                };
                samples.push((t, v));
            }
            round_trip(&samples);
        }
    }

    #[test]
    fn chunk_bytes_match_the_documented_example() {
        let mut c = XorChunk::new();
        for (t, v) in [(1000, 1.0), (2000, 1.0), (3000, 2.0)] {
            c.append(t, v).expect("room");
        }
        let hex: Vec<String> = c.bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex.join(" "), "00 03 d0 0f 3f f0 00 00 00 00 00 00 d0 0f 30 97 ff c0");
    }

    #[test]
    fn chunk_truncated_bytes_stop_with_an_error() {
        let mut c = XorChunk::new();
        for i in 0..50 {
            c.append(i * 1000, i as f64 * 1.1).expect("room");
        }
        let bytes = c.bytes();
        for cut in 0..bytes.len() - 1 {
            let mut it = ChunkIter::new(&bytes[..cut]);
            let n = it.by_ref().count();
            assert!(it.error().is_some(), "cut at {cut} read {n} samples without error");
            assert!(XorChunk::from_bytes(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn chunk_garbage_bytes_never_panic() {
        let mut rng = XorShift(42);
        for _ in 0..2000 {
            let len = (rng.next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut it = ChunkIter::new(&bytes);
            let _ = it.by_ref().count();
        }
    }
}
