//! The head's inverted index: interned symbols, series by id, and postings
//! (label name → value → sorted list of series slots).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::model::Labels;
use crate::query::{MatchKind, Matcher};

use super::series::MemSeries;

/// Position of a series in [`Index::series`]; postings hold these, in increasing order
/// because slots are handed out in creation order and never reused.
pub(crate) type Slot = u32;

/// Stable series id: 64-bit FNV-1a over `name 0xff value 0xff` of each label in order.
/// (Colliding label sets get the next free id, see [`Index::find`].)
pub fn series_hash(labels: &Labels) -> u64 {
    series_hash_of(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
}

/// [`series_hash`] of a label set given as sorted `(name, value)` pairs.
pub fn series_hash_of<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    pharos_core::label_set_hash(pairs)
}

/// The hasher of [`Index::by_id`]: series ids are FNV hashes of label sets already, so one
/// multiply-and-fold (instead of SipHash) is enough to spread them; it also brings the high
/// bits down, as an FNV hash's lowest bits depend only on the lowest bits of its input bytes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        let x = (self.0 ^ n ^ (n >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Series by id. Ids are hashes already: the table only spreads them
    /// ([`IdHasher`]); holding the series itself saves a look into `series` per lookup.
    by_id: HashMap<u64, Arc<MemSeries>, BuildHasherDefault<IdHasher>>,
    series: Vec<Arc<MemSeries>>,
    postings: Postings,
    symbols: HashSet<Arc<str>>,
}

/// Label name → value → sorted series slots: the inverted index of the head and of each
/// block, and the matcher evaluation over it.
#[derive(Debug, Default)]
pub(crate) struct Postings {
    map: HashMap<Arc<str>, HashMap<Arc<str>, Vec<Slot>>>,
}

impl Postings {
    /// Records that series `slot` has `name=value`; slots must be added in increasing order.
    pub(crate) fn add(&mut self, slot: Slot, name: &Arc<str>, value: &Arc<str>) {
        self.map.entry(name.clone()).or_default().entry(value.clone()).or_default().push(slot);
    }

    /// Every label name, sorted.
    pub(crate) fn label_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.map.keys().map(|k| k.to_string()).collect();
        out.sort_unstable();
        out
    }

    /// Every value of label `name`, sorted.
    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> =
            self.map.get(name).map(|vals| vals.keys().map(|k| k.to_string()).collect()).unwrap_or_default();
        out.sort_unstable();
        out
    }

    /// Approximate heap bytes held (for cache accounting).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.map.values().flat_map(|v| v.values()).map(|p| p.capacity() * 4 + 48).sum()
    }

    /// The series a matcher selects through the postings, for matchers that do not match
    /// the empty value (those can select series without the label, so they filter instead).
    fn postings_for(&self, m: &Matcher) -> Vec<Slot> {
        let Some(values) = self.map.get(m.name.as_str()) else { return Vec::new() };
        if let MatchKind::Equal = m.kind {
            return values.get(m.value.as_str()).cloned().unwrap_or_default();
        }
        let mut lists: Vec<&Vec<Slot>> =
            values.iter().filter(|(v, _)| m.matches(v)).map(|(_, p)| p).collect();
        match lists.len() {
            0 => Vec::new(),
            1 => lists.pop().cloned().unwrap_or_default(),
            _ => {
                let mut out: Vec<Slot> = lists.into_iter().flatten().copied().collect();
                out.sort_unstable();
                out.dedup();
                out
            }
        }
    }

    /// The slots (of `0..total`) matching every matcher: postings of the matchers that need
    /// the label are intersected (smallest first), the others filter the candidates through
    /// `label(slot, name)`.
    pub(crate) fn select<'a>(
        &self,
        matchers: &[Matcher],
        total: usize,
        label: impl Fn(Slot, &str) -> &'a str,
    ) -> Vec<Slot> {
        let (indexed, filters): (Vec<&Matcher>, Vec<&Matcher>) =
            matchers.iter().partition(|m| !m.matches_empty());
        // Equality first: a single lookup, usually the most selective.
        let mut lists: Vec<Vec<Slot>> = Vec::with_capacity(indexed.len());
        let (eq, other): (Vec<&Matcher>, Vec<&Matcher>) =
            indexed.into_iter().partition(|m| matches!(m.kind, MatchKind::Equal));
        for m in eq.into_iter().chain(other) {
            let p = self.postings_for(m);
            if p.is_empty() {
                return Vec::new();
            }
            lists.push(p);
        }
        lists.sort_by_key(Vec::len);
        let slots: Vec<Slot> = match lists.split_first() {
            None => (0..total as Slot).collect(),
            Some((first, rest)) => {
                let mut acc = first.clone();
                for l in rest {
                    acc = intersect(&acc, l);
                    if acc.is_empty() {
                        return Vec::new();
                    }
                }
                acc
            }
        };
        if filters.is_empty() {
            return slots;
        }
        slots.into_iter().filter(|&slot| filters.iter().all(|m| m.matches(label(slot, &m.name)))).collect()
    }
}

impl Index {
    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.symbols.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.symbols.insert(a.clone());
        a
    }

    /// The series with these labels, or the id a new one would get: probing from the
    /// hash past ids held by other label sets.
    pub(crate) fn find(&self, hash: u64, labels: &Labels) -> Result<Arc<MemSeries>, u64> {
        self.find_by(hash, |s| s.has_labels(labels))
    }

    /// [`find`](Self::find) for a label set given as sorted `(name, value)` pairs.
    pub(crate) fn find_pairs(&self, hash: u64, pairs: &[(&str, &str)]) -> Option<Arc<MemSeries>> {
        self.find_by(hash, |s| s.has_pairs(pairs)).ok()
    }

    /// [`find_pairs`](Self::find_pairs) of many label sets (hash and sorted pairs each; empty
    /// pairs find nothing), in
    /// passes: every table slot first, then every candidate's labels. A pass's look-ups do
    /// not depend on each other, so their cache misses (the table and the series are far
    /// larger than the caches at a million series) overlap instead of following one another.
    pub(crate) fn find_pairs_many<'a>(
        &'a self,
        keys: &[(u64, &[(&str, &str)])],
    ) -> Vec<Option<&'a Arc<MemSeries>>> {
        let mut found: Vec<Option<&Arc<MemSeries>>> = keys
            .iter()
            .map(|(hash, pairs)| if pairs.is_empty() { None } else { self.by_id.get(hash) })
            .collect();
        for (slot, (hash, pairs)) in found.iter_mut().zip(keys) {
            if let Some(s) = *slot
                && !s.has_pairs(pairs)
            {
                // Another label set under this hash: on along the ids, as `find_by` goes.
                let mut id = hash.wrapping_add(1);
                *slot = loop {
                    match self.by_id.get(&id) {
                        Some(s) if s.has_pairs(pairs) => break Some(s),
                        Some(_) => id = id.wrapping_add(1),
                        None => break None,
                    }
                };
            }
        }
        found
    }

    fn find_by(&self, hash: u64, same: impl Fn(&MemSeries) -> bool) -> Result<Arc<MemSeries>, u64> {
        let mut id = hash;
        while let Some(s) = self.by_id.get(&id) {
            if same(s) {
                return Ok(s.clone());
            }
            id = id.wrapping_add(1);
        }
        Err(id)
    }

    /// Adds a series under a free `id` (from [`find`](Self::find)).
    pub(crate) fn insert(&mut self, id: u64, labels: &Labels) -> Arc<MemSeries> {
        let mut interned = Vec::with_capacity(labels.len());
        for l in labels.iter() {
            let n = self.intern(&l.name);
            let v = self.intern(&l.value);
            interned.push((n, v));
        }
        let s = Arc::new(MemSeries::new(id, interned.into_boxed_slice()));
        self.push(s.clone());
        s
    }

    fn push(&mut self, s: Arc<MemSeries>) {
        let slot = self.series.len() as Slot;
        for (n, v) in s.labels.iter() {
            self.postings.add(slot, n, v);
        }
        self.by_id.insert(s.id, s.clone());
        self.series.push(s);
    }

    /// An index of `series` (which keep their ids and interned labels), e.g. the survivors
    /// of a truncation.
    pub(crate) fn rebuild(series: Vec<Arc<MemSeries>>) -> Index {
        let mut idx = Index::default();
        for s in series {
            for (n, v) in s.labels.iter() {
                idx.symbols.insert(n.clone());
                idx.symbols.insert(v.clone());
            }
            idx.push(s);
        }
        idx
    }

    /// The series with this id.
    pub(crate) fn by_id(&self, id: u64) -> Option<Arc<MemSeries>> {
        self.by_id.get(&id).cloned()
    }

    /// Every series, in creation order.
    pub(crate) fn all(&self) -> Vec<Arc<MemSeries>> {
        self.series.clone()
    }

    /// Every label name, sorted.
    pub(crate) fn label_names(&self) -> Vec<String> {
        self.postings.label_names()
    }

    /// Every value of label `name`, sorted.
    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        self.postings.label_values(name)
    }

    /// The series matching every matcher.
    pub(crate) fn select(&self, matchers: &[Matcher]) -> Vec<Arc<MemSeries>> {
        self.postings
            .select(matchers, self.series.len(), |slot, name| self.series[slot as usize].label(name))
            .into_iter()
            .map(|slot| self.series[slot as usize].clone())
            .collect()
    }
}

/// Intersection of two sorted lists; binary search when one is much shorter.
fn intersect(small: &[Slot], big: &[Slot]) -> Vec<Slot> {
    if small.len().saturating_mul(16) < big.len() {
        return small.iter().copied().filter(|x| big.binary_search(x).is_ok()).collect();
    }
    let mut out = Vec::with_capacity(small.len().min(big.len()));
    let (mut i, mut j) = (0, 0);
    while i < small.len() && j < big.len() {
        match small[i].cmp(&big[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(small[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hasher_spreads_similar_label_sets_over_the_low_bits() {
        // 65,536 label sets differing only in a number, into 65,536 buckets: a random spread
        // fills about 63% of them.
        let mut buckets = HashSet::new();
        for i in 0..65_536u32 {
            let id = series_hash_of([("__name__", "up"), ("instance", &format!("host-{i}"))].into_iter());
            let mut h = IdHasher::default();
            h.write_u64(id);
            buckets.insert(h.finish() & 0xffff);
        }
        assert!(buckets.len() > 38_000, "{} of 65536 buckets used", buckets.len());
    }
    use crate::query::matches_all;

    #[test]
    fn many_look_ups_find_what_single_ones_find_past_colliding_hashes() {
        let mut idx = Index::default();
        let labels = |v: &str| Labels::from_pairs([("__name__", "up"), ("job", v)]);
        let (a, b, c) = (labels("a"), labels("b"), labels("c"));
        // b's hash taken to be a's (a collision): b lives at the next free id.
        let h = series_hash_of(a.iter().map(|l| (l.name.as_str(), l.value.as_str())));
        idx.insert(h, &a);
        let Err(next) = idx.find(h, &b) else { panic!("b is not there yet") };
        assert_eq!(next, h.wrapping_add(1));
        idx.insert(next, &b);
        fn pairs(l: &Labels) -> Vec<(&str, &str)> {
            l.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect()
        }
        let (pa, pb, pc) = (pairs(&a), pairs(&b), pairs(&c));
        let keys = [(h, &pa[..]), (h, &pb[..]), (h, &pc[..]), (h, &[][..])];
        let many: Vec<Option<u64>> = idx.find_pairs_many(&keys).iter().map(|s| s.map(|s| s.id)).collect();
        let single: Vec<Option<u64>> =
            keys.iter().map(|(h, p)| idx.find_pairs(*h, p).map(|s| s.id)).collect();
        assert_eq!(many, vec![Some(h), Some(next), None, None]);
        assert_eq!(many[..3], single[..3]);
    }

    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn build(n: usize) -> (Index, Vec<Labels>) {
        let mut rng = XorShift(7);
        let mut idx = Index::default();
        let mut all = Vec::new();
        for i in 0..n {
            let mut pairs = vec![
                ("__name__".to_owned(), format!("metric_{}", rng.below(5))),
                ("instance".to_owned(), format!("host-{i}")),
            ];
            if rng.below(2) == 0 {
                pairs.push(("job".to_owned(), ["api", "db", "web"][rng.below(3) as usize].to_owned()));
            }
            if rng.below(3) == 0 {
                pairs.push(("code".to_owned(), ["200", "404", "500"][rng.below(3) as usize].to_owned()));
            }
            let labels = Labels::from_pairs(pairs);
            let hash = series_hash(&labels);
            match idx.find(hash, &labels) {
                Ok(_) => {}
                Err(id) => {
                    idx.insert(id, &labels);
                    all.push(labels);
                }
            }
        }
        (idx, all)
    }

    fn m(name: &str, op: &str, value: &str) -> Matcher {
        match op {
            "=" => Matcher::equal(name, value),
            "!=" => Matcher::not_equal(name, value),
            "=~" => Matcher::regex(name, value, false).expect("valid regex"),
            _ => Matcher::regex(name, value, true).expect("valid regex"),
        }
    }

    #[test]
    fn index_select_agrees_with_brute_force() {
        let (idx, all) = build(2000);
        let cases: Vec<Vec<Matcher>> = vec![
            vec![m("__name__", "=", "metric_1")],
            vec![m("__name__", "=", "metric_1"), m("job", "=", "api")],
            vec![m("__name__", "=", "metric_2"), m("job", "!=", "api")],
            vec![m("__name__", "=~", "metric_[12]"), m("code", "=~", "5..")],
            vec![m("job", "=", "")],
            vec![m("job", "!=", "")],
            vec![m("job", "=~", "")],
            vec![m("job", "=~", "api|")],
            vec![m("job", "!~", "api|db")],
            vec![m("code", "!~", ".+")],
            vec![m("__name__", "=", "metric_3"), m("code", "=~", ".*"), m("job", "!~", "web")],
            vec![m("__name__", "=", "nope")],
            vec![m("nolabel", "=", "")],
            vec![m("nolabel", "!=", "x"), m("instance", "=~", "host-1.*")],
        ];
        for ms in &cases {
            let mut got: Vec<Labels> = idx.select(ms).iter().map(|s| s.to_labels()).collect();
            let mut want: Vec<Labels> = all.iter().filter(|l| matches_all(l, ms)).cloned().collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "matchers {ms:?}");
        }
    }

    #[test]
    fn index_colliding_ids_probe_to_the_next_free_id() {
        let mut idx = Index::default();
        let a = Labels::from_pairs([("__name__", "a")]);
        let b = Labels::from_pairs([("__name__", "b")]);
        // Force both label sets onto the same starting id.
        let id_a = idx.find(42, &a).expect_err("empty index");
        idx.insert(id_a, &a);
        let id_b = idx.find(42, &b).expect_err("b is new");
        assert_eq!((id_a, id_b), (42, 43));
        idx.insert(id_b, &b);
        assert_eq!(idx.find(42, &b).map(|s| s.id).ok(), Some(43));
        assert_eq!(idx.find(42, &a).map(|s| s.id).ok(), Some(42));
    }

    #[test]
    fn index_interns_repeated_strings_once() {
        let (idx, _) = build(500);
        let job = idx.symbols.get("job").expect("interned");
        // The symbol table, each series using it and the postings key share one allocation.
        assert!(Arc::strong_count(job) > 2);
    }

    #[test]
    fn series_hash_is_stable() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
        assert_eq!(series_hash(&l), series_hash(&l.clone()));
        assert_ne!(series_hash(&l), series_hash(&Labels::from_pairs([("__name__", "up")])));
    }
}
