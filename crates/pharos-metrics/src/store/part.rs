//! A part: the samples one queue partition's writer accepted into a tenant's head between two
//! flushes, made durable as one checksummed file. The format is in `docs/formats/metrics-parts.md`.
//!
//! Parts are what makes the head durable: the queue offset that a part covers is committed only
//! after the part is on disk, and on start the parts are loaded back into the heads before the
//! queue is replayed from the committed offset.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::{Labels, Sample};

use super::exemplar::Exemplar;

use super::chunk::{ChunkIter, XorChunk};
use super::codec::{Malformed, Reader, put_str, put_varint};
use super::metadata::{Metadata, MetricType};
use super::series::{MemSeries, Placement};

/// The first 8 bytes of every part file: `PHMPART` and the format version (2: with exemplars).
pub const PART_MAGIC: &[u8; 8] = b"PHMPART\x02";

/// The magic of version 1 (no exemplars), still read.
const PART_MAGIC_V1: &[u8; 8] = b"PHMPART\x01";

/// The content of a part.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Part {
    /// The queue partition whose records the part holds.
    pub partition: u32,
    /// Every record of the partition below this offset (for this tenant) is in this part or an
    /// earlier one.
    pub covers_below: u64,
    /// Samples per series, in time order, one per timestamp. (A hash map: a part gets one
    /// lookup per appended sample, and comparing label sets in a tree cost a third of the CPU
    /// of remote-write ingest; the file is written sorted.)
    pub series: HashMap<Labels, Vec<Sample>>,
    /// Metric metadata seen since the previous part.
    pub metadata: BTreeMap<String, Metadata>,
    /// The exemplars the head kept for series written to since the previous part (each
    /// series' whole ring, oldest first).
    pub exemplars: HashMap<Labels, Vec<Exemplar>>,
}

/// Why a part file cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartError {
    #[error("not a metrics part (bad magic)")]
    Magic,
    #[error("checksum mismatch: the part is damaged")]
    Checksum,
    #[error("part is truncated or malformed at byte {0}")]
    Malformed(usize),
}

impl From<Malformed> for PartError {
    fn from(m: Malformed) -> Self {
        PartError::Malformed(m.0)
    }
}

impl Part {
    /// Whether the part holds nothing to store.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty() && self.metadata.is_empty() && self.exemplars.is_empty()
    }

    /// Samples in the part.
    pub fn samples(&self) -> usize {
        self.series.values().map(Vec::len).sum()
    }

    /// Adds a sample; a repeated timestamp keeps the newer value.
    pub fn add(&mut self, labels: &Labels, sample: Sample) {
        let samples = match self.series.get_mut(labels) {
            Some(s) => s,
            None => self.series.entry(labels.clone()).or_default(),
        };
        push_sample(samples, sample);
    }

    /// Newest sample timestamp (`i64::MIN` without samples).
    pub fn max_t(&self) -> i64 {
        newest(self.series.values())
    }

    /// The part's file content.
    pub fn encode(&self) -> Vec<u8> {
        let mut sorted: Vec<(&Labels, &Vec<Sample>)> = self.series.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut enc = Encoder::new(self.partition, self.covers_below, sorted.len(), self.samples());
        for (labels, samples) in sorted {
            enc.series(labels.len(), labels.iter().map(|l| (l.name.as_str(), l.value.as_str())), samples);
        }
        enc.metadata(&self.metadata);
        let mut exemplars: Vec<(&Labels, &Vec<Exemplar>)> = self.exemplars.iter().collect();
        exemplars.sort_unstable_by(|a, b| a.0.cmp(b.0));
        enc.exemplars(exemplars.len());
        for (labels, ring) in exemplars {
            enc.series_exemplars(
                labels.len(),
                labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
                ring,
            );
        }
        enc.finish()
    }

    /// Reads a part file's content, checking its magic and checksum.
    pub fn decode(bytes: &[u8]) -> Result<Part, PartError> {
        if bytes.len() < PART_MAGIC.len() + 4 || (&bytes[..8] != PART_MAGIC && &bytes[..8] != PART_MAGIC_V1) {
            return Err(PartError::Magic);
        }
        let with_exemplars = &bytes[..8] == PART_MAGIC;
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(PartError::Checksum);
        }
        let mut r = Reader::new(body, 8);
        let partition = u32::from_le_bytes(r.array()?);
        let covers_below = u64::from_le_bytes(r.array()?);
        let mut part = Part { partition, covers_below, ..Part::default() };
        for _ in 0..r.varint()? {
            let labels = read_labels(&mut r)?;
            let mut samples = Vec::new();
            for _ in 0..r.varint()? {
                let len = r.varint()? as usize;
                let at = r.pos;
                let mut it = ChunkIter::new(r.bytes(len)?);
                samples.extend(it.by_ref());
                if it.error().is_some() {
                    return Err(PartError::Malformed(at));
                }
            }
            // A label set written twice (a series removed from the head and created again
            // between two flushes) is merged.
            match part.series.get_mut(&labels) {
                Some(have) => samples.into_iter().for_each(|s| push_sample(have, s)),
                None => {
                    part.series.insert(labels, samples);
                }
            }
        }
        for _ in 0..r.varint()? {
            let name = r.string()?;
            let at = r.pos;
            let kind = MetricType::from_code(r.bytes(1)?[0]).ok_or(PartError::Malformed(at))?;
            part.metadata.insert(name, Metadata { kind, help: r.string()?, unit: r.string()? });
        }
        if with_exemplars {
            for _ in 0..r.varint()? {
                let series = read_labels(&mut r)?;
                let mut ring = Vec::new();
                for _ in 0..r.varint()? {
                    let labels = read_labels(&mut r)?;
                    let value = f64::from_bits(u64::from_le_bytes(r.array()?));
                    let t = i64::from_le_bytes(r.array()?);
                    ring.push(Exemplar { labels, value, t });
                }
                part.exemplars.entry(series).or_default().extend(ring);
            }
        }
        if r.pos != body.len() {
            return Err(PartError::Malformed(r.pos));
        }
        Ok(part)
    }
}

/// A label set: a varint count, then (name, value) strings.
fn read_labels(r: &mut Reader<'_>) -> Result<Labels, PartError> {
    let n = r.varint()?;
    let mut pairs = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        pairs.push((r.string()?, r.string()?));
    }
    Ok(Labels::from_pairs(pairs))
}

/// Newest timestamp over time-ordered runs (`i64::MIN` without samples).
fn newest<'a>(runs: impl Iterator<Item = &'a Vec<Sample>>) -> i64 {
    runs.filter_map(|s| s.last().map(|s| s.t)).max().unwrap_or(i64::MIN)
}

/// Adds a sample to a time-ordered run; a repeated timestamp keeps the newer value.
fn push_sample(samples: &mut Vec<Sample>, sample: Sample) {
    match samples.last() {
        Some(last) if last.t < sample.t => samples.push(sample),
        None => samples.push(sample),
        _ => match samples.binary_search_by(|s| s.t.cmp(&sample.t)) {
            Ok(i) => samples[i] = sample,
            Err(i) => samples.insert(i, sample),
        },
    }
}

/// Writes a part file: the header, then series in the order given, then the metadata and the
/// checksum.
struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    fn new(partition: u32, covers_below: u64, series: usize, samples: usize) -> Encoder {
        let mut out = Vec::with_capacity(64 + series * 64 + samples * 2);
        out.extend_from_slice(PART_MAGIC);
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&covers_below.to_le_bytes());
        put_varint(&mut out, series as u64);
        Encoder { out }
    }

    fn series<'a>(
        &mut self,
        count: usize,
        labels: impl Iterator<Item = (&'a str, &'a str)>,
        samples: &[Sample],
    ) {
        let out = &mut self.out;
        put_varint(out, count as u64);
        for (name, value) in labels {
            put_str(out, name);
            put_str(out, value);
        }
        // A chunk holds at most u16::MAX samples.
        let chunks: Vec<&[Sample]> = samples.chunks(usize::from(u16::MAX)).collect();
        put_varint(out, chunks.len() as u64);
        for run in chunks {
            let mut chunk = XorChunk::new();
            for s in run {
                chunk.append(s.t, s.v).expect("a run fits one chunk");
            }
            put_varint(out, chunk.bytes().len() as u64);
            out.extend_from_slice(chunk.bytes());
        }
    }

    fn metadata(&mut self, metadata: &BTreeMap<String, Metadata>) {
        let out = &mut self.out;
        put_varint(out, metadata.len() as u64);
        for (name, m) in metadata {
            put_str(out, name);
            out.push(m.kind.code());
            put_str(out, &m.help);
            put_str(out, &m.unit);
        }
    }

    /// Starts the exemplar section: `series` series follow.
    fn exemplars(&mut self, series: usize) {
        put_varint(&mut self.out, series as u64);
    }

    fn series_exemplars<'a>(
        &mut self,
        count: usize,
        labels: impl Iterator<Item = (&'a str, &'a str)>,
        ring: &[Exemplar],
    ) {
        let out = &mut self.out;
        put_varint(out, count as u64);
        for (name, value) in labels {
            put_str(out, name);
            put_str(out, value);
        }
        put_varint(out, ring.len() as u64);
        for e in ring {
            put_varint(out, e.labels.len() as u64);
            for l in e.labels.iter() {
                put_str(out, &l.name);
                put_str(out, &l.value);
            }
            out.extend_from_slice(&e.value.to_bits().to_le_bytes());
            out.extend_from_slice(&e.t.to_le_bytes());
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let crc = crc32c::crc32c(&self.out);
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out
    }
}

/// Hands out pending-part generations (0 is "none" in a series' mark).
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// A part as a partition writer fills it. It does not copy the samples: it logs which head
/// series took samples since the previous part, and from which timestamp on, and the part is
/// read out of those series when it is written. A series is logged at the first sample the part
/// takes for it (found from a mark in the series, without a lookup) and again at any
/// out-of-order sample; a later in-order sample is newer than the first one, so it is included.
/// Memory is a few words per series written to, where a copy of every sample was 16 bytes each
/// (over a minute at a million samples a second, most of the process's memory).
///
/// The file may hold more than the samples this writer took since the previous part: samples
/// taken after the part was taken for writing, or from another partition's records for the
/// same series. Loading a part puts samples back as repeats of what another part or the
/// queue's replay brings, which the head accepts unchanged.
#[derive(Debug)]
pub struct PendingPart {
    /// The queue partition whose records the part holds.
    pub partition: u32,
    /// Set when the part is taken for writing; see [`Part::covers_below`].
    pub covers_below: u64,
    generation: u64,
    /// Each series written to, with a timestamp from which the part holds its samples.
    touched: Vec<(Arc<MemSeries>, i64)>,
    samples: usize,
    max_t: i64,
    /// Metric metadata seen since the previous part.
    pub metadata: BTreeMap<String, Metadata>,
    /// Series that kept an exemplar since the previous part (repeats included).
    exemplar_series: Vec<Arc<MemSeries>>,
}

impl PendingPart {
    /// An empty pending part of `partition`.
    pub fn new(partition: u32) -> PendingPart {
        PendingPart {
            partition,
            covers_below: 0,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            touched: Vec::new(),
            samples: 0,
            max_t: i64::MIN,
            metadata: BTreeMap::new(),
            exemplar_series: Vec::new(),
        }
    }

    /// Whether the part holds nothing to store.
    pub fn is_empty(&self) -> bool {
        self.touched.is_empty() && self.metadata.is_empty() && self.exemplar_series.is_empty()
    }

    /// Samples the head accepted into the part (repeats included).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Newest sample timestamp accepted (`i64::MIN` without samples).
    pub fn max_t(&self) -> i64 {
        self.max_t
    }

    /// Notes a sample the head's `series` accepted (`placement`: where it went).
    pub(crate) fn add(&mut self, series: &Arc<MemSeries>, sample: Sample, placement: Placement) {
        self.samples += 1;
        self.max_t = self.max_t.max(sample.t);
        let log = match placement {
            // The head had it already: whatever put it there made it durable.
            Placement::Repeat => false,
            Placement::OutOfOrder => true,
            Placement::InOrder => series.mark_for_part(self.generation),
        };
        if log {
            self.touched.push((Arc::clone(series), sample.t));
        }
    }

    /// Notes an exemplar the head's `series` kept.
    pub(crate) fn add_exemplar(&mut self, series: &Arc<MemSeries>) {
        self.exemplar_series.push(Arc::clone(series));
    }

    /// Lets go of the series (once the part is written).
    pub(crate) fn release_samples(&mut self) {
        self.touched = Vec::new();
        self.exemplar_series = Vec::new();
    }

    /// The part's file content, in [`Part::encode`]'s format: each logged series' samples
    /// from its oldest logged timestamp on, read from the head now.
    pub fn encode(&mut self) -> Vec<u8> {
        // One entry per series, with its oldest timestamp.
        self.touched.sort_unstable_by_key(|(series, t)| (Arc::as_ptr(series) as usize, *t));
        self.touched.dedup_by(|later, first| Arc::ptr_eq(&later.0, &first.0));
        self.touched.sort_unstable_by(|a, b| a.0.labels.cmp(&b.0.labels));
        // The exemplar rings of every series written to (samples or exemplars): a series'
        // exemplars stay in the newest part as long as it takes samples.
        let mut with_exemplars: Vec<&Arc<MemSeries>> =
            self.touched.iter().map(|(s, _)| s).chain(&self.exemplar_series).collect();
        with_exemplars.sort_unstable_by_key(|s| Arc::as_ptr(s) as usize);
        with_exemplars.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let mut rings: Vec<(Arc<MemSeries>, Vec<Exemplar>)> = with_exemplars
            .into_iter()
            .filter_map(|s| {
                let ring = s.exemplars(i64::MIN, i64::MAX);
                (!ring.is_empty()).then(|| (Arc::clone(s), ring))
            })
            .collect();
        rings.sort_unstable_by(|a, b| a.0.labels.cmp(&b.0.labels));
        // The series with samples to write (the header counts them first), each read and
        // encoded in turn: the samples of a whole part are never all decoded at once. A
        // series counted here keeps its samples unless a block cut truncates it meanwhile
        // (they are in the block then); it is written with what it has, maybe nothing.
        self.touched.retain(|(series, from)| series.overlaps(*from, i64::MAX));
        let mut enc = Encoder::new(self.partition, self.covers_below, self.touched.len(), self.samples);
        for (series, from) in &self.touched {
            let samples = series.snapshot(*from, i64::MAX).samples(*from, i64::MAX);
            enc.series(series.labels.len(), series.labels.iter().map(|(n, v)| (&**n, &**v)), &samples);
        }
        enc.metadata(&self.metadata);
        enc.exemplars(rings.len());
        for (series, ring) in &rings {
            enc.series_exemplars(series.labels.len(), series.labels.iter().map(|(n, v)| (&**n, &**v)), ring);
        }
        enc.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stale_nan;

    fn sample_part() -> Part {
        let mut part = Part { partition: 3, covers_below: 1234, ..Part::default() };
        for i in 0..50 {
            let labels =
                Labels::from_pairs([("__name__", "http_requests_total"), ("code", &format!("{}", 200 + i))]);
            for t in 0..100 {
                part.add(&labels, Sample { t: 1_700_000_000_000 + t * 15_000, v: (t * i) as f64 });
            }
        }
        let odd = Labels::from_pairs([("__name__", "odd"), ("v", "ünï")]);
        part.add(&odd, Sample { t: 20, v: f64::NAN });
        part.add(&odd, Sample { t: 10, v: stale_nan() });
        part.add(&odd, Sample { t: 20, v: -0.0 });
        part.metadata.insert(
            "http_requests_total".into(),
            Metadata { kind: MetricType::Counter, help: "Requests.".into(), unit: String::new() },
        );
        let exemplar = |trace: &str, value: f64, t: i64| Exemplar {
            labels: Labels::from_pairs([("trace_id", trace), ("span_id", "ab")]),
            value,
            t,
        };
        part.exemplars.insert(
            Labels::from_pairs([("__name__", "http_requests_total"), ("code", "200")]),
            vec![exemplar("t1", 1.5, 1_700_000_000_000), exemplar("t2", -0.0, 1_700_000_015_000)],
        );
        part.exemplars
            .insert(odd.clone(), vec![Exemplar { labels: Labels::empty(), value: f64::NAN, t: -5 }]);
        part
    }

    /// Exemplars with their values as bits (NaN compares equal to itself).
    fn exemplar_bits(part: &Part) -> BTreeMap<Labels, Vec<(Labels, u64, i64)>> {
        part.exemplars
            .iter()
            .map(|(l, ring)| {
                (l.clone(), ring.iter().map(|e| (e.labels.clone(), e.value.to_bits(), e.t)).collect())
            })
            .collect()
    }

    #[test]
    fn part_round_trips_samples_bit_for_bit() {
        let part = sample_part();
        let bytes = part.encode();
        let back = Part::decode(&bytes).unwrap();
        assert_eq!(back.partition, 3);
        assert_eq!(back.covers_below, 1234);
        assert_eq!(back.metadata, part.metadata);
        assert_eq!(exemplar_bits(&back), exemplar_bits(&part));
        assert_eq!(back.encode(), bytes, "the file is written in label order, whatever the map's order");
        assert_eq!(back.series.len(), part.series.len());
        for (labels, samples) in &part.series {
            let got = &back.series[labels];
            let bits = |s: &[Sample]| s.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(got), bits(samples), "{labels:?}");
        }
        let odd = &back.series[&Labels::from_pairs([("__name__", "odd"), ("v", "ünï")])];
        assert_eq!(odd.len(), 2, "samples sorted, the repeated timestamp kept once");
        assert_eq!((odd[0].t, odd[1].v.to_bits()), (10, (-0.0f64).to_bits()));
        // Compressed: 5000 regular samples take far less than 16 bytes each.
        assert!(bytes.len() < 5000 * 4, "{} bytes", bytes.len());
    }

    #[test]
    fn a_version_1_part_without_exemplars_is_still_read() {
        let mut part = sample_part();
        part.exemplars.clear();
        let v2 = part.encode();
        // Version 1 is version 2 without the exemplar section (its count, 0, is the last byte
        // before the checksum).
        let mut v1 = v2[..v2.len() - 5].to_vec();
        v1[..8].copy_from_slice(PART_MAGIC_V1);
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let back = Part::decode(&v1).unwrap();
        assert_eq!(back.encode(), v2, "the same part, written as version 2");
        assert!(back.exemplars.is_empty());
    }

    #[test]
    fn pending_part_writes_the_exemplars_of_the_series_it_took_samples_or_exemplars_for() {
        let head = super::super::head::Head::default();
        let x = Labels::from_pairs([("__name__", "x")]);
        let y = Labels::from_pairs([("__name__", "y")]);
        let z = Labels::from_pairs([("__name__", "z")]);
        let exemplar = |t: i64| Exemplar { labels: Labels::from_pairs([("trace_id", "t")]), value: 1.0, t };
        // Exemplars kept before this part: x's come along with its next samples, z's do not.
        head.append_exemplar(&x, exemplar(10)).unwrap();
        head.append_exemplar(&z, exemplar(10)).unwrap();
        let mut pending = PendingPart::new(0);
        let s = [Sample { t: 100, v: 1.0 }];
        head.append_samples_with(&x, &s, |series, x, placement| pending.add(series, *x, placement));
        // y takes an exemplar and no sample.
        pending.add_exemplar(&head.append_exemplar_to(&y, exemplar(20)).unwrap());
        pending.add_exemplar(&head.append_exemplar_to(&y, exemplar(30)).unwrap());
        let back = Part::decode(&pending.encode()).unwrap();
        let times = |l: &Labels| back.exemplars.get(l).map(|r| r.iter().map(|e| e.t).collect::<Vec<_>>());
        assert_eq!(times(&x), Some(vec![10]));
        assert_eq!(times(&y), Some(vec![20, 30]));
        assert_eq!(times(&z), None);
        assert_eq!(back.series.keys().collect::<Vec<_>>(), vec![&x], "y has no samples to write");
    }

    #[test]
    fn part_decode_refuses_damage_without_panicking() {
        let bytes = sample_part().encode();
        assert_eq!(Part::decode(b"nope"), Err(PartError::Magic));
        let mut flipped = bytes.clone();
        flipped[100] ^= 0x10;
        assert_eq!(Part::decode(&flipped), Err(PartError::Checksum));
        for n in 0..bytes.len() {
            assert!(Part::decode(&bytes[..n]).is_err(), "a {n}-byte prefix was accepted");
        }
    }

    #[test]
    fn pending_part_writes_the_same_file_as_a_part_with_the_same_samples() {
        let head = super::super::head::Head::default();
        let mut pending = PendingPart::new(3);
        let part = sample_part();
        pending.covers_below = part.covers_below;
        pending.metadata = part.metadata.clone();
        for (labels, samples) in &part.series {
            // In two batches, as two records would bring them.
            let (a, b) = samples.split_at(samples.len() / 2);
            for run in [a, b] {
                let out = head.append_samples_with(labels, run, |series, x, placement| {
                    pending.add(series, *x, placement)
                });
                assert_eq!(out.accepted, run.len());
            }
        }
        for (labels, ring) in &part.exemplars {
            for e in ring {
                pending.add_exemplar(&head.append_exemplar_to(labels, e.clone()).unwrap());
            }
        }
        assert_eq!(pending.samples(), part.samples());
        assert_eq!(pending.max_t(), part.max_t());
        // A retried write: the head takes the same samples again, the file holds them once.
        for (labels, samples) in &part.series {
            let out = head.append_samples_with(labels, samples, |series, x, placement| {
                pending.add(series, *x, placement)
            });
            assert_eq!(out.accepted, samples.len());
        }
        assert_eq!(pending.encode(), part.encode());
    }

    #[test]
    fn pending_part_reads_from_the_first_sample_it_took_and_any_older_one_after() {
        use super::super::head::{Head, HeadOptions};
        let head = Head::new(HeadOptions {
            out_of_order_window: std::time::Duration::from_secs(10),
            ..Default::default()
        });
        let x = Labels::from_pairs([("__name__", "x")]);
        let y = Labels::from_pairs([("__name__", "y")]);
        let put = |part: &mut PendingPart, labels: &Labels, t: i64| {
            let s = [Sample { t, v: t as f64 }];
            let out =
                head.append_samples_with(labels, &s, |series, x, placement| part.add(series, *x, placement));
            assert_eq!(out.accepted, 1);
        };
        let times = |part: &mut PendingPart| -> Vec<(String, Vec<i64>)> {
            let mut got: Vec<(String, Vec<i64>)> = Part::decode(&part.encode())
                .unwrap()
                .series
                .into_iter()
                .map(|(l, s)| (l.get("__name__").to_owned(), s.iter().map(|s| s.t).collect()))
                .collect();
            got.sort();
            got
        };
        put(&mut PendingPart::new(0), &y, 500);
        let mut a = PendingPart::new(0);
        put(&mut a, &x, 1000);
        put(&mut a, &x, 2000);
        put(&mut a, &x, 1500); // out of order, older than the first the part took
        // A new part (the first was taken for writing): the series are logged again.
        let mut b = PendingPart::new(0);
        put(&mut b, &x, 3000);
        put(&mut b, &y, 500); // a retried write: the head has it, another part holds it
        assert_eq!((a.samples(), b.samples()), (3, 2));
        assert_eq!(a.max_t(), 2000);
        assert_eq!(times(&mut b), vec![("x".to_owned(), vec![3000])]);
        // The part taken first also holds the sample taken after it (a repeat when loaded).
        assert_eq!(times(&mut a), vec![("x".to_owned(), vec![1000, 1500, 2000, 3000])]);
    }

    #[test]
    fn a_label_set_written_twice_is_merged_on_decode() {
        let labels = Labels::from_pairs([("__name__", "up")]);
        let (mut a, mut b) = (Part::default(), Part::default());
        a.add(&labels, Sample { t: 10, v: 1.0 });
        a.add(&labels, Sample { t: 30, v: 3.0 });
        b.add(&labels, Sample { t: 20, v: 2.0 });
        b.add(&labels, Sample { t: 30, v: 4.0 });
        // Two entries for one label set, as a series removed and created again gives.
        let one = a.encode();
        let two = b.encode();
        let series_at = |bytes: &[u8]| {
            let mut r = Reader::new(bytes, 8 + 4 + 8);
            r.varint().unwrap();
            r.pos
        };
        let mut joined = one[..series_at(&one)].to_vec();
        joined[series_at(&one) - 1] = 2;
        // Each ends with no metadata, no exemplars and the checksum.
        joined.extend_from_slice(&one[series_at(&one)..one.len() - 6]);
        joined.extend_from_slice(&two[series_at(&two)..two.len() - 6]);
        joined.extend_from_slice(&[0, 0]);
        let crc = crc32c::crc32c(&joined);
        joined.extend_from_slice(&crc.to_le_bytes());
        let back = Part::decode(&joined).unwrap();
        let got: Vec<(i64, f64)> = back.series[&labels].iter().map(|s| (s.t, s.v)).collect();
        assert_eq!(got, vec![(10, 1.0), (20, 2.0), (30, 4.0)]);
    }
}
