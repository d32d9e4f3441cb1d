//! One series in the head: interned labels, compressed chunks, an out-of-order buffer and
//! an exemplar ring, behind a mutex held only for short, bounded work.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::model::{Label, Labels, Sample};

use super::chunk::{SAMPLES_PER_CHUNK, XorChunk};
use super::error::AppendError;
use super::exemplar::Exemplar;

/// Samples the out-of-order buffer holds before they are merged into the chunks.
pub(crate) const OOO_BUFFER_SAMPLES: usize = 32;

/// Where an accepted sample goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// After the newest sample.
    InOrder,
    /// A repeat of a stored sample (same timestamp, same value bits): nothing changes.
    Repeat,
    /// Into the out-of-order buffer.
    OutOfOrder,
}

/// A label pair whose strings are shared with the head's symbol table.
pub(crate) type InternedLabel = (Arc<str>, Arc<str>);

/// Interned labels (sorted by name) as a [`Labels`] value.
pub(crate) fn interned_to_labels(labels: &[InternedLabel]) -> Labels {
    Labels::from_sorted(labels.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }))
}

/// Value of label `name` among interned labels sorted by name, `""` if absent.
pub(crate) fn interned_label<'a>(labels: &'a [InternedLabel], name: &str) -> &'a str {
    match labels.binary_search_by(|(n, _)| (**n).cmp(name)) {
        Ok(i) => &labels[i].1,
        Err(_) => "",
    }
}

/// A series held in the head.
#[derive(Debug)]
pub(crate) struct MemSeries {
    pub(crate) id: u64,
    /// Sorted by name, as in [`Labels`].
    pub(crate) labels: Box<[InternedLabel]>,
    /// The pending part that last logged the series (its generation; 0: none).
    part_mark: std::sync::atomic::AtomicU64,
    data: Mutex<SeriesData>,
}

/// Samples of one series in `[mint, maxt]`, copied out under the lock and decoded after.
pub(crate) struct Snapshot {
    chunks: Vec<Arc<XorChunk>>,
    open: Option<XorChunk>,
    ooo: Vec<Sample>,
}

impl Snapshot {
    /// Decodes and merges the snapshot into samples within `[mint, maxt]`, in time order.
    pub(crate) fn samples(&self, mint: i64, maxt: i64) -> Vec<Sample> {
        let chunks = || self.chunks.iter().map(|c| &**c).chain(self.open.as_ref());
        // Room for every sample at once (no regrowth, copying what was decoded).
        let mut ordered = Vec::with_capacity(chunks().map(|c| usize::from(c.len())).sum());
        for c in chunks() {
            if c.min_t() >= mint && c.max_t() <= maxt {
                ordered.extend(c.iter());
            } else {
                ordered.extend(c.iter().filter(|s| s.t >= mint && s.t <= maxt));
            }
        }
        if self.ooo.is_empty() {
            return ordered;
        }
        merge_sorted(ordered, &self.ooo)
    }
}

/// Merges two time-ordered runs without common timestamps.
fn merge_sorted(a: Vec<Sample>, b: &[Sample]) -> Vec<Sample> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut bi = b.iter().peekable();
    for s in a {
        while let Some(o) = bi.next_if(|o| o.t < s.t) {
            out.push(*o);
        }
        out.push(s);
    }
    out.extend(bi.copied());
    out
}

#[derive(Debug, Default)]
struct SeriesData {
    /// Full chunks, in time order, not overlapping.
    chunks: Vec<Arc<XorChunk>>,
    /// The chunk being appended to; its samples follow those of `chunks`.
    open: XorChunk,
    /// Newest in-order sample (timestamp, value bits).
    last: Option<(i64, u64)>,
    /// Out-of-order samples, sorted, none sharing a timestamp with the chunks.
    ooo: Vec<Sample>,
    exemplars: VecDeque<Exemplar>,
    /// Taken out of the head's index (it had no samples left); appends must look it up anew.
    removed: bool,
}

impl SeriesData {
    fn min_t(&self) -> Option<i64> {
        let first = match self.chunks.first() {
            Some(c) => Some(c.min_t()),
            None if !self.open.is_empty() => Some(self.open.min_t()),
            None => None,
        };
        match (first, self.ooo.first()) {
            (Some(a), Some(b)) => Some(a.min(b.t)),
            (a, b) => a.or(b.map(|s| s.t)),
        }
    }

    /// Where a sample with timestamp `t` and value bits `bits` goes, or why it is refused.
    fn place(&self, t: i64, bits: u64, window_ms: i64) -> Result<Placement, AppendError> {
        self.place_after(self.last, t, bits, window_ms)
    }

    /// [`place`](Self::place) with `last` standing for the newest in-order sample.
    fn place_after(
        &self,
        last: Option<(i64, u64)>,
        t: i64,
        bits: u64,
        window_ms: i64,
    ) -> Result<Placement, AppendError> {
        match last {
            None => Ok(Placement::InOrder),
            Some((last, _)) if t > last => Ok(Placement::InOrder),
            Some((last, last_bits)) if t == last => {
                if last_bits == bits {
                    Ok(Placement::Repeat)
                } else {
                    Err(AppendError::DuplicateSample { timestamp: t })
                }
            }
            Some((last, _)) => {
                // A repeat of a stored sample changes nothing, whatever its age: a retried
                // write is accepted again.
                let stored = self.value_at(t);
                if stored == Some(bits) {
                    return Ok(Placement::Repeat);
                }
                if window_ms <= 0 {
                    return Err(AppendError::OutOfOrder { timestamp: t, last });
                }
                if last.saturating_sub(t) > window_ms {
                    return Err(AppendError::TooOld { timestamp: t, last, window_ms });
                }
                match stored {
                    Some(_) => Err(AppendError::DuplicateSample { timestamp: t }),
                    None => Ok(Placement::OutOfOrder),
                }
            }
        }
    }

    fn push_in_order(&mut self, t: i64, v: f64) {
        if self.open.len() >= SAMPLES_PER_CHUNK {
            let full = std::mem::take(&mut self.open);
            self.chunks.push(Arc::new(full));
        }
        // A fresh or non-full chunk always has room.
        if self.open.append(t, v).is_ok() {
            self.last = Some((t, v.to_bits()));
        }
    }

    /// The value stored for `t`, searching the buffer and the chunk whose range covers it.
    fn value_at(&self, t: i64) -> Option<u64> {
        if let Ok(i) = self.ooo.binary_search_by(|s| s.t.cmp(&t)) {
            return Some(self.ooo[i].v.to_bits());
        }
        let i = self.chunks.partition_point(|c| c.max_t() < t);
        let chunk = match self.chunks.get(i) {
            Some(c) => &**c,
            None => &self.open,
        };
        if chunk.is_empty() || chunk.min_t() > t {
            return None;
        }
        chunk.iter().find(|s| s.t == t).map(|s| s.v.to_bits())
    }

    /// Re-encodes the chunks the buffered out-of-order samples fall into, with them merged in.
    fn merge_ooo(&mut self) {
        let Some(first) = self.ooo.first().map(|s| s.t) else { return };
        let from = self.chunks.partition_point(|c| c.max_t() < first);
        let mut ordered: Vec<Sample> = Vec::new();
        for c in self.chunks[from..].iter().map(|c| &**c).chain(std::iter::once(&self.open)) {
            ordered.extend(c.iter());
        }
        let ooo = std::mem::take(&mut self.ooo);
        let merged = merge_sorted(ordered, &ooo);
        let last = self.last;
        self.chunks.truncate(from);
        self.open = XorChunk::new();
        for s in merged {
            self.push_in_order(s.t, s.v);
        }
        // The newest sample is unchanged: out-of-order samples are all older.
        self.last = last;
    }
}

impl MemSeries {
    pub(crate) fn new(id: u64, labels: Box<[InternedLabel]>) -> Self {
        Self {
            id,
            labels,
            part_mark: std::sync::atomic::AtomicU64::new(0),
            data: Mutex::new(SeriesData::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SeriesData> {
        // The data stays consistent across a panic in another holder: every mutation
        // completes before the next begins.
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The labels as a [`Labels`] value.
    pub(crate) fn to_labels(&self) -> Labels {
        interned_to_labels(&self.labels)
    }

    /// Value of label `name`, `""` if absent.
    pub(crate) fn label(&self, name: &str) -> &str {
        interned_label(&self.labels, name)
    }

    /// Whether the labels equal `labels`.
    pub(crate) fn has_labels(&self, labels: &Labels) -> bool {
        self.labels.len() == labels.len()
            && self.labels.iter().zip(labels.iter()).all(|((n, v), l)| **n == *l.name && **v == *l.value)
    }

    /// Whether the labels equal the sorted `(name, value)` pairs.
    pub(crate) fn has_pairs(&self, pairs: &[(&str, &str)]) -> bool {
        self.labels.len() == pairs.len()
            && self.labels.iter().zip(pairs).all(|((n, v), (pn, pv))| **n == **pn && **v == **pv)
    }

    /// Appends a sample; `window_ms` is the out-of-order window (0: none). Fails with
    /// [`AppendError::Removed`] if the head dropped the series meanwhile.
    #[cfg(test)]
    pub(crate) fn append(&self, t: i64, v: f64, window_ms: i64) -> Result<(), AppendError> {
        self.append_placed(t, v, window_ms).map(|_| ())
    }

    /// [`append`](Self::append), telling where the sample went.
    pub(crate) fn append_placed(&self, t: i64, v: f64, window_ms: i64) -> Result<Placement, AppendError> {
        let mut d = self.lock();
        if d.removed {
            return Err(AppendError::Removed);
        }
        let placement = d.place(t, v.to_bits(), window_ms)?;
        match placement {
            Placement::InOrder => d.push_in_order(t, v),
            Placement::Repeat => {}
            Placement::OutOfOrder => {
                let i = d.ooo.partition_point(|s| s.t < t);
                d.ooo.insert(i, Sample { t, v });
                if d.ooo.len() >= OOO_BUFFER_SAMPLES {
                    d.merge_ooo();
                }
            }
        }
        Ok(placement)
    }

    /// Marks the series as logged by the pending part `generation`; true if it was not
    /// already (see [`PendingPart`](super::part::PendingPart)).
    pub(crate) fn mark_for_part(&self, generation: u64) -> bool {
        self.part_mark.swap(generation, std::sync::atomic::Ordering::Relaxed) != generation
    }

    /// Hands `refuse` each of `samples` (by position) that [`append`](Self::append) would refuse, and
    /// why, without changing anything: each sample is judged as if the ones before it that
    /// would be accepted were already in (for the newest timestamp; out-of-order samples
    /// within the window are judged against the stored data only). Samples older than
    /// `min_valid`, the head's lower bound, are out of bounds.
    pub(crate) fn refused(
        &self,
        samples: impl Iterator<Item = Sample>,
        window_ms: i64,
        min_valid: i64,
        mut refuse: impl FnMut(usize, AppendError),
    ) {
        let d = self.lock();
        let mut last = d.last;
        for (i, s) in samples.enumerate() {
            if s.t < min_valid {
                refuse(i, AppendError::OutOfBounds { timestamp: s.t, min_valid });
                continue;
            }
            if d.removed {
                // Appends look the series up anew: as for a series the head does not have.
                continue;
            }
            let bits = s.v.to_bits();
            match d.place_after(last, s.t, bits, window_ms) {
                Ok(Placement::InOrder) => last = Some((s.t, bits)),
                Ok(_) => {}
                Err(e) => refuse(i, e),
            }
        }
    }

    /// Copies out what is needed to read `[mint, maxt]`: full chunks are shared, the open
    /// chunk (at most ~120 samples) and the buffer are cloned.
    pub(crate) fn snapshot(&self, mint: i64, maxt: i64) -> Snapshot {
        let d = self.lock();
        let chunks = d.chunks.iter().filter(|c| c.max_t() >= mint && c.min_t() <= maxt).cloned().collect();
        let open =
            (!d.open.is_empty() && d.open.max_t() >= mint && d.open.min_t() <= maxt).then(|| d.open.clone());
        let ooo = d.ooo.iter().filter(|s| s.t >= mint && s.t <= maxt).copied().collect();
        Snapshot { chunks, open, ooo }
    }

    /// Oldest and newest sample timestamps, `None` without samples.
    pub(crate) fn time_range(&self) -> Option<(i64, i64)> {
        let d = self.lock();
        Some((d.min_t()?, d.last?.0))
    }

    /// Whether the series has a sample in `[mint, maxt]`, judged by its time range.
    pub(crate) fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.time_range().is_some_and(|(lo, hi)| lo <= maxt && hi >= mint)
    }

    /// Drops every sample older than `t`; returns whether no sample is left.
    pub(crate) fn truncate_below(&self, t: i64) -> bool {
        let mut d = self.lock();
        let from = d.chunks.partition_point(|c| c.max_t() < t);
        d.chunks.drain(..from);
        let keep = |c: &XorChunk| {
            let mut kept = XorChunk::new();
            for s in c.iter().filter(|s| s.t >= t) {
                // A subset of a chunk fits in a chunk.
                let _ = kept.append(s.t, s.v);
            }
            kept
        };
        match d.chunks.first() {
            Some(first) if first.min_t() < t => {
                let kept = keep(first);
                if kept.is_empty() {
                    d.chunks.remove(0);
                } else {
                    d.chunks[0] = Arc::new(kept);
                }
            }
            Some(_) => {}
            None if !d.open.is_empty() && d.open.min_t() < t => d.open = keep(&d.open),
            None => {}
        }
        d.ooo.retain(|s| s.t >= t);
        d.chunks.is_empty() && d.open.is_empty() && d.ooo.is_empty()
    }

    /// The timestamp of the oldest sample at or after `t`.
    pub(crate) fn first_at_or_after(&self, t: i64) -> Option<i64> {
        let d = self.lock();
        let from = d.chunks.partition_point(|c| c.max_t() < t);
        let in_chunks = d.chunks[from..]
            .iter()
            .map(|c| &**c)
            .chain(std::iter::once(&d.open))
            .filter(|c| !c.is_empty() && c.max_t() >= t)
            .find_map(|c| c.iter().find(|s| s.t >= t).map(|s| s.t));
        let in_buffer = d.ooo.iter().find(|s| s.t >= t).map(|s| s.t);
        match (in_chunks, in_buffer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Marks the series removed if it has no samples (the caller holds the index's write
    /// lock and drops it from the index); returns whether it did.
    pub(crate) fn remove_if_empty(&self) -> bool {
        let mut d = self.lock();
        if d.chunks.is_empty() && d.open.is_empty() && d.ooo.is_empty() {
            d.removed = true;
        }
        d.removed
    }

    /// Adds an exemplar to the ring of at most `cap`; a repeat of the newest is ignored.
    pub(crate) fn add_exemplar(&self, e: Exemplar, cap: usize) -> Result<(), AppendError> {
        if cap == 0 {
            return Ok(());
        }
        let mut d = self.lock();
        if let Some(newest) = d.exemplars.back() {
            if newest.t == e.t && newest.value.to_bits() == e.value.to_bits() && newest.labels == e.labels {
                return Ok(());
            }
            if e.t < newest.t {
                return Err(AppendError::OutOfOrderExemplar { timestamp: e.t, last: newest.t });
            }
        }
        while d.exemplars.len() >= cap {
            d.exemplars.pop_front();
        }
        d.exemplars.push_back(e);
        Ok(())
    }

    /// Exemplars with timestamps in `[mint, maxt]`, oldest first.
    pub(crate) fn exemplars(&self, mint: i64, maxt: i64) -> Vec<Exemplar> {
        self.lock().exemplars.iter().filter(|e| e.t >= mint && e.t <= maxt).cloned().collect()
    }

    /// Number of full and open chunks and buffered out-of-order samples (for tests and stats).
    #[cfg(test)]
    pub(crate) fn layout(&self) -> (usize, u16, usize) {
        let d = self.lock();
        (d.chunks.len(), d.open.len(), d.ooo.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> MemSeries {
        MemSeries::new(1, Box::new([(Arc::from("__name__"), Arc::from("m"))]))
    }

    fn all(s: &MemSeries) -> Vec<(i64, u64)> {
        s.snapshot(i64::MIN, i64::MAX)
            .samples(i64::MIN, i64::MAX)
            .iter()
            .map(|s| (s.t, s.v.to_bits()))
            .collect()
    }

    #[test]
    fn series_cuts_a_chunk_every_120_samples() {
        let s = series();
        for i in 0..250 {
            s.append(i * 10, i as f64, 0).expect("in order");
        }
        assert_eq!(s.layout(), (2, 10, 0));
        assert_eq!(all(&s).len(), 250);
    }

    #[test]
    fn series_out_of_order_buffer_merges_into_chunks_and_reads_in_order() {
        let s = series();
        let mut expected = Vec::new();
        for i in 0..300i64 {
            if i % 3 != 0 {
                s.append(i * 10, i as f64, 0).expect("in order");
            }
            expected.push((i * 10, (i as f64).to_bits()));
        }
        for i in (0..300i64).filter(|i| i % 3 == 0).rev().take(100) {
            s.append(i * 10, i as f64, 10_000).expect("within window");
        }
        assert_eq!(all(&s), expected);
        let (_, _, buffered) = s.layout();
        assert!(buffered < OOO_BUFFER_SAMPLES);
        let window: Vec<i64> = s.snapshot(1000, 1050).samples(1000, 1050).iter().map(|s| s.t).collect();
        assert_eq!(window, vec![1000, 1010, 1020, 1030, 1040, 1050]);
    }

    #[test]
    fn series_truncate_keeps_exactly_the_samples_from_the_cut_on() {
        let s = series();
        for i in 0..300 {
            s.append(i * 10, i as f64, 0).expect("in order");
        }
        // An out-of-order sample on each side of the cut.
        s.append(1005, -1.0, 10_000).expect("within window");
        s.append(2505, -2.0, 10_000).expect("within window");
        assert!(!s.truncate_below(2000));
        let got = all(&s);
        assert_eq!(got.first().map(|p| p.0), Some(2000));
        assert_eq!(got.len(), 101, "2000..=2990 and the sample at 2505");
        assert!(got.iter().all(|p| p.0 >= 2000));
        // Appending continues after the cut; the newest sample still orders appends.
        s.append(3000, 300.0, 0).expect("in order");
        assert!(matches!(s.append(2995, 1.0, 0), Err(AppendError::OutOfOrder { .. })));
        assert!(s.truncate_below(10_000), "nothing left");
        assert!(s.remove_if_empty());
        assert_eq!(s.append(20_000, 1.0, 0), Err(AppendError::Removed));
    }

    #[test]
    fn series_out_of_order_duplicate_is_checked_against_chunks() {
        let s = series();
        for i in 0..200 {
            s.append(i * 10, 1.0, 0).expect("in order");
        }
        assert_eq!(s.append(50, 1.0, 100_000), Ok(()));
        assert_eq!(s.append(50, 2.0, 100_000), Err(AppendError::DuplicateSample { timestamp: 50 }));
        assert_eq!(s.append(1995, 2.0, 100_000), Ok(()));
        assert_eq!(s.append(1995, 3.0, 100_000), Err(AppendError::DuplicateSample { timestamp: 1995 }));
    }
}
