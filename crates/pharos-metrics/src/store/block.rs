//! Metrics blocks: one tenant's samples of one time window, immutable, on the object store.
//! The format is in `docs/formats/metrics-blocks.md`.
//!
//! A block is a directory `metrics/{tenant}/{id}/` holding chunk segments
//! (`chunks-000000`, ...: Gorilla-compressed chunks back to back, each followed by its CRC32C),
//! an `index` (zstd-compressed: symbols, the series in label order with references to their
//! chunks, and the tenant's metric metadata) and `meta.json`, written last, which makes the
//! block exist (see `pharos_storage::catalog`).

use std::sync::Arc;

use pharos_storage::BlockMeta;
use serde::{Deserialize, Serialize};

use crate::model::{Labels, Sample};
use crate::query::Matcher;

use super::chunk::ChunkIter;
use super::codec::{Malformed, Reader, put_signed, put_str, put_varint};
use super::index::{Postings, Slot};
use super::metadata::{Metadata, MetricType};
use super::packed::{self, PACKED_CHUNK_SAMPLES};
use super::series::{InternedLabel, interned_label, interned_to_labels};

/// The format version of the blocks written now (2: packed chunks). Blocks of version 1 (the
/// head's XOR chunks) are still read.
pub const BLOCK_VERSION: u32 = 2;

/// The first 8 bytes of a block index.
pub const INDEX_MAGIC: &[u8; 8] = b"PHMINDX\x01";
/// The first 8 bytes of every chunk segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"PHMCHNK\x01";
/// The index object's name in the block directory.
pub const INDEX_FILE: &str = "index";
/// An index larger than this, uncompressed, is refused as damaged.
pub const MAX_INDEX_BYTES: u64 = 4 << 30;

/// The name of chunk segment `n` in the block directory.
pub fn segment_file(n: u32) -> String {
    format!("chunks-{n:06}")
}

/// What `meta.json` records about a metrics block. Times are milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsBlockMeta {
    /// The block id.
    pub id: String,
    /// Format version ([`BLOCK_VERSION`]; 1 for blocks of XOR chunks).
    pub version: u32,
    /// The window the block covers: `[window_start, window_end)`, aligned to the block range.
    pub window_start: i64,
    pub window_end: i64,
    /// Oldest and newest sample.
    pub min_time: i64,
    pub max_time: i64,
    /// 0 for a block cut from the head, one more than its sources' for a merged block.
    pub level: u32,
    pub series: u64,
    pub samples: u64,
    pub chunks: u64,
    /// Number of chunk segments.
    pub segments: u32,
    /// Bytes of the index and the segments.
    pub size_bytes: u64,
    /// The blocks merged into this one (empty for a block cut from the head).
    #[serde(default)]
    pub sources: Vec<String>,
}

impl MetricsBlockMeta {
    /// The block's data objects (everything but `meta.json`).
    pub fn files(&self) -> Vec<String> {
        std::iter::once(INDEX_FILE.to_owned()).chain((0..self.segments).map(segment_file)).collect()
    }

    /// Whether the block may hold samples in `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.min_time <= maxt && self.max_time >= mint
    }
}

impl BlockMeta for MetricsBlockMeta {
    fn id(&self) -> &str {
        &self.id
    }

    fn time_range(&self) -> (u64, u64) {
        let ns = |ms: i64| u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000);
        (ns(self.min_time), ns(self.max_time))
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

/// Why a block object cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlockError {
    #[error("not a metrics block {0} (bad magic)")]
    Magic(&'static str),
    #[error("checksum mismatch in {0}: the block is damaged")]
    Checksum(String),
    #[error("block index is truncated or malformed at byte {0}")]
    Malformed(usize),
    #[error("block index claims {len} bytes, over the limit of {limit}")]
    TooLarge { len: u64, limit: u64 },
    #[error("block index does not decompress: {0}")]
    Decompress(String),
    #[error("chunk at byte {offset} of {segment} is damaged: {reason}")]
    Chunk { segment: String, offset: u64, reason: String },
    #[error("block format version {0} is not known to this Pharos")]
    Version(u32),
}

impl From<Malformed> for BlockError {
    fn from(m: Malformed) -> Self {
        BlockError::Malformed(m.0)
    }
}

/// Where one chunk of a series is in the block's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    pub(crate) segment: u32,
    /// Byte offset of the chunk in its segment; its CRC32C follows its `len` bytes.
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
}

impl ChunkRef {
    /// The byte range of the chunk and its checksum.
    pub(crate) fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + u64::from(self.len) + 4
    }
}

/// The chunk's encoded bytes out of `bytes` (its range as [`ChunkRef::range`] gives it),
/// after checking the checksum.
pub(crate) fn checked_chunk<'a>(bytes: &'a [u8], r: &ChunkRef, what: &str) -> Result<&'a [u8], BlockError> {
    let len = r.len as usize;
    if bytes.len() != len + 4 {
        return Err(BlockError::Checksum(format!("{what} chunk at {}", r.offset)));
    }
    let (data, crc) = bytes.split_at(len);
    if crc32c::crc32c(data) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(BlockError::Checksum(format!("{what} chunk at {}", r.offset)));
    }
    Ok(data)
}

/// Decodes one chunk (checked by [`checked_chunk`]) of a block of format `version`, appending
/// its samples to `out`.
pub(crate) fn decode_chunk(
    version: u32,
    bytes: &[u8],
    r: &ChunkRef,
    out: &mut Vec<Sample>,
) -> Result<(), BlockError> {
    let damaged =
        |reason: String| BlockError::Chunk { segment: segment_file(r.segment), offset: r.offset, reason };
    match version {
        1 => {
            let mut it = ChunkIter::new(bytes);
            out.extend(it.by_ref());
            it.error().map_or(Ok(()), |e| Err(damaged(e.to_string())))
        }
        2 => packed::decode(bytes, out).map_err(|e| damaged(e.to_string())),
        v => Err(BlockError::Version(v)),
    }
}

/// Counts and time range of what a builder wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BuildStats {
    pub(crate) series: u64,
    pub(crate) samples: u64,
    pub(crate) chunks: u64,
    pub(crate) segments: u32,
    pub(crate) segment_bytes: u64,
    pub(crate) min_time: i64,
    pub(crate) max_time: i64,
}

/// What receives each finished chunk segment (number, bytes) while a block is built.
pub(crate) type SegmentSink<'a, E> = dyn FnMut(u32, Vec<u8>) -> Result<(), E> + Send + 'a;

/// Writes a block: series are added in label order, their chunks go into segments of at
/// most `segment_limit` bytes, each handed to the sink when full.
pub(crate) struct BlockBuilder<'a, E> {
    segment_limit: usize,
    current: Vec<u8>,
    segment: u32,
    sink: Box<SegmentSink<'a, E>>,
    series: Vec<(Box<[InternedLabel]>, Vec<ChunkRef>)>,
    stats: BuildStats,
}

impl<'a, E> BlockBuilder<'a, E> {
    pub(crate) fn new(segment_limit: usize, sink: Box<SegmentSink<'a, E>>) -> Self {
        Self {
            segment_limit: segment_limit.max(1024),
            current: SEGMENT_MAGIC.to_vec(),
            segment: 0,
            sink,
            series: Vec::new(),
            stats: BuildStats { min_time: i64::MAX, max_time: i64::MIN, ..BuildStats::default() },
        }
    }

    /// Adds a series' samples (time-ordered, one per timestamp); series must come in
    /// increasing label order. An empty series is skipped.
    pub(crate) fn add(&mut self, labels: &[InternedLabel], samples: &[Sample]) -> Result<(), E> {
        if samples.is_empty() {
            return Ok(());
        }
        debug_assert!(self.series.last().is_none_or(|(l, _)| **l < *labels), "series out of label order");
        let mut refs = Vec::with_capacity(samples.len().div_ceil(PACKED_CHUNK_SAMPLES));
        for run in samples.chunks(PACKED_CHUNK_SAMPLES) {
            let bytes = &packed::encode(run)[..];
            if self.current.len() > SEGMENT_MAGIC.len()
                && self.current.len() + bytes.len() + 4 > self.segment_limit
            {
                self.roll()?;
            }
            refs.push(ChunkRef {
                segment: self.segment,
                offset: self.current.len() as u64,
                len: bytes.len() as u32,
                min_t: run[0].t,
                max_t: run[run.len() - 1].t,
            });
            self.current.extend_from_slice(bytes);
            self.current.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
        }
        self.stats.series += 1;
        self.stats.samples += samples.len() as u64;
        self.stats.chunks += refs.len() as u64;
        self.stats.min_time = self.stats.min_time.min(samples[0].t);
        self.stats.max_time = self.stats.max_time.max(samples[samples.len() - 1].t);
        self.series.push((labels.into(), refs));
        Ok(())
    }

    fn roll(&mut self) -> Result<(), E> {
        let full = std::mem::replace(&mut self.current, SEGMENT_MAGIC.to_vec());
        self.stats.segment_bytes += full.len() as u64;
        (self.sink)(self.segment, full)?;
        self.segment += 1;
        Ok(())
    }

    /// Series added so far.
    pub(crate) fn series(&self) -> u64 {
        self.stats.series
    }

    /// Hands over the last segment and returns the index bytes and the counts.
    pub(crate) fn finish(mut self, metadata: &[(String, Metadata)]) -> Result<(Vec<u8>, BuildStats), E> {
        if self.current.len() > SEGMENT_MAGIC.len() {
            self.roll()?;
        }
        self.stats.segments = self.segment;
        Ok((encode_index(&self.series, metadata), self.stats))
    }
}

fn encode_index(
    series: &[(Box<[InternedLabel]>, Vec<ChunkRef>)],
    metadata: &[(String, Metadata)],
) -> Vec<u8> {
    let mut symbols: Vec<&str> =
        series.iter().flat_map(|(l, _)| l.iter()).flat_map(|(n, v)| [&**n, &**v]).collect();
    symbols.sort_unstable();
    symbols.dedup();
    let id: std::collections::HashMap<&str, u64> =
        symbols.iter().enumerate().map(|(i, s)| (*s, i as u64)).collect();
    let mut body = Vec::with_capacity(series.len() * 48);
    put_varint(&mut body, symbols.len() as u64);
    for s in &symbols {
        put_str(&mut body, s);
    }
    put_varint(&mut body, series.len() as u64);
    for (labels, refs) in series {
        put_varint(&mut body, labels.len() as u64);
        for (n, v) in labels.iter() {
            put_varint(&mut body, id[&**n]);
            put_varint(&mut body, id[&**v]);
        }
        put_varint(&mut body, refs.len() as u64);
        let mut prev = 0i64;
        for r in refs {
            put_varint(&mut body, u64::from(r.segment));
            put_varint(&mut body, r.offset);
            put_varint(&mut body, u64::from(r.len));
            put_signed(&mut body, r.min_t.wrapping_sub(prev));
            put_varint(&mut body, r.max_t.wrapping_sub(r.min_t) as u64);
            prev = r.max_t;
        }
    }
    put_varint(&mut body, metadata.len() as u64);
    for (name, m) in metadata {
        put_str(&mut body, name);
        body.push(m.kind.code());
        put_str(&mut body, &m.help);
        put_str(&mut body, &m.unit);
    }
    let mut out = Vec::with_capacity(body.len() / 3 + 32);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    // Level 3: most of the gain of higher levels at a fraction of their time.
    out.extend_from_slice(&zstd::bulk::compress(&body, 3).expect("compressing to memory cannot fail"));
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// One series of a block: its labels and where its chunks are.
#[derive(Debug)]
pub(crate) struct BlockSeries {
    pub(crate) labels: Box<[InternedLabel]>,
    pub(crate) chunks: Box<[ChunkRef]>,
}

impl BlockSeries {
    pub(crate) fn to_labels(&self) -> Labels {
        interned_to_labels(&self.labels)
    }

    /// Whether a chunk of the series overlaps `[mint, maxt]`.
    pub(crate) fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.chunks.iter().any(|c| c.min_t <= maxt && c.max_t >= mint)
    }
}

/// A block's index, decoded: the series in label order, postings over them, metadata.
#[derive(Debug)]
pub(crate) struct BlockIndex {
    pub(crate) series: Vec<BlockSeries>,
    postings: Postings,
    pub(crate) metadata: Vec<(String, Metadata)>,
    /// Approximate heap bytes (for the cache budget).
    pub(crate) heap_bytes: usize,
}

impl BlockIndex {
    /// Decodes an index object, checking magic, checksum and sizes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<BlockIndex, BlockError> {
        if bytes.len() < 20 || &bytes[..8] != INDEX_MAGIC {
            return Err(BlockError::Magic("index"));
        }
        let (data, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(data) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(BlockError::Checksum("index".into()));
        }
        let len = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        if len > MAX_INDEX_BYTES {
            return Err(BlockError::TooLarge { len, limit: MAX_INDEX_BYTES });
        }
        let body = zstd::bulk::decompress(&data[16..], len as usize)
            .map_err(|e| BlockError::Decompress(e.to_string()))?;
        if body.len() as u64 != len {
            return Err(BlockError::Decompress(format!("{} bytes instead of {len}", body.len())));
        }
        let mut r = Reader::new(&body, 0);
        let n = r.count()?;
        let mut symbols: Vec<Arc<str>> = Vec::with_capacity(n);
        let mut heap = 0usize;
        for _ in 0..n {
            let s = r.string()?;
            heap += s.len() + 16;
            symbols.push(Arc::from(s));
        }
        let symbol = |r: &mut Reader<'_>| -> Result<Arc<str>, BlockError> {
            let at = r.pos;
            let i = r.varint()?;
            symbols.get(i as usize).cloned().ok_or(BlockError::Malformed(at))
        };
        let n = r.count()?;
        let mut series = Vec::with_capacity(n);
        let mut postings = Postings::default();
        for slot in 0..n {
            let nl = r.count()?;
            let mut labels = Vec::with_capacity(nl);
            for _ in 0..nl {
                let name = symbol(&mut r)?;
                let value = symbol(&mut r)?;
                postings.add(slot as Slot, &name, &value);
                labels.push((name, value));
            }
            let nc = r.count()?;
            let mut chunks = Vec::with_capacity(nc);
            let mut prev = 0i64;
            for _ in 0..nc {
                let at = r.pos;
                let segment = u32::try_from(r.varint()?).map_err(|_| BlockError::Malformed(at))?;
                let offset = r.varint()?;
                let len = u32::try_from(r.varint()?).map_err(|_| BlockError::Malformed(at))?;
                let min_t = prev.wrapping_add(r.signed()?);
                let max_t = min_t.wrapping_add(r.varint()? as i64);
                prev = max_t;
                chunks.push(ChunkRef { segment, offset, len, min_t, max_t });
            }
            heap += 48 + nl * 32 + nc * std::mem::size_of::<ChunkRef>();
            series.push(BlockSeries { labels: labels.into(), chunks: chunks.into() });
        }
        let n = r.count()?;
        let mut metadata = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.string()?;
            let at = r.pos;
            let kind = MetricType::from_code(r.bytes(1)?[0]).ok_or(BlockError::Malformed(at))?;
            metadata.push((name, Metadata { kind, help: r.string()?, unit: r.string()? }));
        }
        if !r.at_end() {
            return Err(BlockError::Malformed(r.pos));
        }
        heap += postings.heap_bytes();
        Ok(BlockIndex { series, postings, metadata, heap_bytes: heap })
    }

    /// Positions of the series matching every matcher, in label order.
    pub(crate) fn select(&self, matchers: &[Matcher]) -> Vec<Slot> {
        self.postings.select(matchers, self.series.len(), |slot, name| {
            interned_label(&self.series[slot as usize].labels, name)
        })
    }

    /// Every label name (when the whole block is of interest), sorted.
    pub(crate) fn label_names(&self) -> Vec<String> {
        self.postings.label_names()
    }

    /// Every value of `name` (when the whole block is of interest), sorted.
    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        self.postings.label_values(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interned(pairs: &[(&str, &str)]) -> Box<[InternedLabel]> {
        pairs.iter().map(|(n, v)| (Arc::from(*n), Arc::from(*v))).collect()
    }

    fn build(segment_limit: usize) -> (Vec<Vec<u8>>, Vec<u8>, BuildStats) {
        let mut segments = Vec::new();
        let mut b = BlockBuilder::<()>::new(
            segment_limit,
            Box::new(|n, bytes| {
                assert_eq!(n as usize, segments.len(), "segments in order");
                segments.push(bytes);
                Ok(())
            }),
        );
        for i in 0..50 {
            let labels = interned(&[("__name__", "up"), ("instance", &format!("host-{i:02}"))]);
            let samples: Vec<Sample> =
                (0..500).map(|t| Sample { t: 1_000_000 + t * 15_000, v: (t * i) as f64 }).collect();
            b.add(&labels, &samples).unwrap();
        }
        let md = vec![(
            "up".to_owned(),
            Metadata { kind: MetricType::Gauge, help: "Up.".into(), unit: String::new() },
        )];
        let (index, stats) = b.finish(&md).unwrap();
        (segments, index, stats)
    }

    #[test]
    fn block_round_trips_series_chunks_and_metadata() {
        let (segments, index, stats) = build(1 << 10);
        assert!(segments.len() > 1, "small segments roll over");
        assert_eq!((stats.series, stats.samples, stats.segments as usize), (50, 25_000, segments.len()));
        assert_eq!((stats.min_time, stats.max_time), (1_000_000, 1_000_000 + 499 * 15_000));
        let idx = BlockIndex::decode(&index).unwrap();
        assert_eq!(idx.metadata[0].0, "up");
        let slots = idx.select(&[Matcher::regex("instance", "host-0[37]", false).unwrap()]);
        assert_eq!(slots.len(), 2);
        let s = &idx.series[slots[1] as usize];
        assert_eq!(s.to_labels().get("instance"), "host-07");
        let mut got = Vec::new();
        for r in s.chunks.iter() {
            let seg = &segments[r.segment as usize];
            let range = r.range();
            let bytes = checked_chunk(&seg[range.start as usize..range.end as usize], r, "test").unwrap();
            decode_chunk(BLOCK_VERSION, bytes, r, &mut got).unwrap();
        }
        assert_eq!(got.len(), 500);
        assert!(got.iter().enumerate().all(|(t, s)| s.v == (t * 7) as f64));
        // Typical scrape data (regular times, slowly moving values) stays compact.
        let bytes: usize = segments.iter().map(Vec::len).sum::<usize>() + index.len();
        assert!(bytes < 25_000 * 3, "{bytes} bytes for 25,000 samples");
    }

    #[test]
    fn block_index_refuses_damage_without_panicking() {
        let (segments, index, _) = build(1 << 20);
        assert_eq!(BlockIndex::decode(b"nope").unwrap_err(), BlockError::Magic("index"));
        let mut flipped = index.clone();
        flipped[20] ^= 1;
        assert!(matches!(BlockIndex::decode(&flipped), Err(BlockError::Checksum(_))));
        for n in 0..index.len() {
            assert!(BlockIndex::decode(&index[..n]).is_err(), "a {n}-byte prefix was accepted");
        }
        let idx = BlockIndex::decode(&index).unwrap();
        let r = idx.series[0].chunks[0];
        let mut seg = segments[0].clone();
        seg[r.offset as usize + 3] ^= 0x40;
        let range = r.range();
        assert!(checked_chunk(&seg[range.start as usize..range.end as usize], &r, "test").is_err());
    }

    #[test]
    fn blocks_of_version_1_still_read_and_unknown_versions_are_refused() {
        let mut xor = super::super::chunk::XorChunk::new();
        for t in 0..100 {
            xor.append(t * 15_000, t as f64 * 0.5).unwrap();
        }
        let r =
            ChunkRef { segment: 0, offset: 8, len: xor.bytes().len() as u32, min_t: 0, max_t: 99 * 15_000 };
        let mut got = Vec::new();
        decode_chunk(1, xor.bytes(), &r, &mut got).unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!((got[99].t, got[99].v), (99 * 15_000, 49.5));
        assert!(matches!(decode_chunk(2, xor.bytes(), &r, &mut Vec::new()), Err(BlockError::Chunk { .. })));
        assert_eq!(decode_chunk(3, xor.bytes(), &r, &mut Vec::new()).unwrap_err(), BlockError::Version(3));
        assert!(matches!(
            decode_chunk(1, &xor.bytes()[..20], &r, &mut Vec::new()),
            Err(BlockError::Chunk { .. })
        ));
    }
}
