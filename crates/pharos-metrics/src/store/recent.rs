//! Series looked up moments ago, by label hash: remote write's sample check finds each series of
//! a request in the head before acknowledging it, and the processor appends the same series a
//! few milliseconds later. At a million series the head's index misses the CPU cache on every
//! lookup (its table alone is tens of MiB); this table is small enough to stay in cache, so the
//! second lookup usually costs a hit here and a label comparison.
//!
//! It is only a hint: an entry is used when its head and hash match and the series' labels equal
//! the pairs looked for, and a series removed from the head since fails its append, which then
//! looks in the index (see `Head::append_each`).

use std::sync::{Arc, Mutex};

use super::series::MemSeries;

/// Slots of the table: direct-mapped, so about as many series as are in flight between the
/// receivers and the processors (a few requests' worth) mostly stay.
pub(crate) const RECENT_SLOTS: usize = 1 << 16;

struct Entry {
    head: u64,
    hash: u64,
    series: Arc<MemSeries>,
}

/// See the module documentation. Shared by every tenant's head.
pub(crate) struct RecentSeries {
    slots: Box<[Mutex<Option<Entry>>]>,
}

impl std::fmt::Debug for RecentSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentSeries").field("slots", &self.slots.len()).finish()
    }
}

impl RecentSeries {
    /// An empty table of `slots` (a power of two) slots.
    pub(crate) fn new(slots: usize) -> RecentSeries {
        debug_assert!(slots.is_power_of_two());
        RecentSeries { slots: (0..slots).map(|_| Mutex::new(None)).collect() }
    }

    fn slot(&self, head: u64, hash: u64) -> &Mutex<Option<Entry>> {
        // The high bits of the product mix every bit of the head id and the hash.
        let mixed = (hash ^ head.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let i = (mixed >> 32) as usize & (self.slots.len() - 1);
        &self.slots[i]
    }

    /// Remembers that `series` of head `head` has label hash `hash`. Skipped if another thread
    /// holds the slot: this is a hint.
    pub(crate) fn remember(&self, head: u64, hash: u64, series: &Arc<MemSeries>) {
        if let Ok(mut slot) = self.slot(head, hash).try_lock() {
            *slot = Some(Entry { head, hash, series: Arc::clone(series) });
        }
    }

    /// The series of head `head` remembered under `hash` whose labels are `pairs`.
    pub(crate) fn get(&self, head: u64, hash: u64, pairs: &[(&str, &str)]) -> Option<Arc<MemSeries>> {
        let slot = self.slot(head, hash).try_lock().ok()?;
        let e = slot.as_ref()?;
        (e.head == head && e.hash == hash && e.series.has_pairs(pairs)).then(|| Arc::clone(&e.series))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(id: u64, pairs: &[(&str, &str)]) -> Arc<MemSeries> {
        let labels = pairs.iter().map(|(n, v)| (Arc::from(*n), Arc::from(*v))).collect();
        Arc::new(MemSeries::new(id, labels))
    }

    #[test]
    fn an_entry_is_used_only_for_its_head_hash_and_labels() {
        let recent = RecentSeries::new(16);
        let up = [("__name__", "up"), ("job", "a")];
        let s = series(7, &up);
        recent.remember(1, 7, &s);
        assert!(recent.get(1, 7, &up).is_some_and(|got| Arc::ptr_eq(&got, &s)));
        assert!(recent.get(2, 7, &up).is_none(), "another head (tenant)");
        assert!(recent.get(1, 8, &up).is_none(), "another hash");
        assert!(recent.get(1, 7, &[("__name__", "up"), ("job", "b")]).is_none(), "same hash, other labels");
        // A later series in the same slot replaces it.
        let other = series(7 + 16, &[("__name__", "down")]);
        for h in 0..64u64 {
            recent.remember(1, h, &other);
        }
        assert!(recent.get(1, 7, &up).is_none());
    }
}
