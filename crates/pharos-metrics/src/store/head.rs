//! The head: one tenant's recent samples in memory, indexed for PromQL.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use pharos_core::Tenant;

use crate::model::{Labels, METRIC_NAME, Sample, Series};
use crate::query::{Matcher, QueryError, SeriesSource};

use super::error::AppendError;
use super::exemplar::{EXEMPLAR_MAX_LABEL_CHARS, Exemplar, SeriesExemplars, label_chars};
use super::index::{Index, series_hash};
use super::metadata::Metadata;
use super::series::{MemSeries, Placement};

/// Series a query selects from the head above which they are decoded on one thread per core
/// (tests split even small selections, so that they cover the parallel path).
const PARALLEL_DECODE_SERIES: usize = if cfg!(test) { 16 } else { 2048 };

/// Limits and settings of a head; the defaults follow Prometheus and Mimir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadOptions {
    /// Most series one tenant may have (0: no limit). Mimir: 150,000.
    pub max_series: usize,
    /// Longest label name, bytes. Mimir: 1024.
    pub max_label_name_length: usize,
    /// Longest label value, bytes. Mimir: 2048.
    pub max_label_value_length: usize,
    /// Most labels per series, `__name__` included. Mimir: 30.
    pub max_labels_per_series: usize,
    /// How far behind a series' newest sample an older sample is still accepted; zero
    /// rejects every out-of-order sample (Prometheus's default).
    pub out_of_order_window: Duration,
    /// Exemplars kept per series (oldest dropped first; 0 keeps none).
    pub max_exemplars_per_series: usize,
    /// Most metric names with metadata.
    pub max_metadata: usize,
}

impl Default for HeadOptions {
    fn default() -> Self {
        Self {
            max_series: 150_000,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_labels_per_series: 30,
            out_of_order_window: Duration::ZERO,
            max_exemplars_per_series: 10,
            max_metadata: 10_000,
        }
    }
}

/// What [`Head::append_samples`] did with a batch of one series' samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendOutcome {
    /// Samples now stored (repeats of stored samples included).
    pub accepted: usize,
    /// Samples refused.
    pub rejected: usize,
    /// Why the first refused sample was refused.
    pub first_error: Option<AppendError>,
}

/// A tenant's in-memory series: an inverted index over interned labels and compressed
/// chunks per series.
///
/// Appends and queries share it: the index lock is held only to find or create a series
/// (reads) or to add one (writes); each series has its own lock, held to append one sample
/// or to copy out what a query reads (decoding happens after it is released).
#[derive(Debug)]
pub struct Head {
    opts: HeadOptions,
    window_ms: i64,
    index: RwLock<Index>,
    metadata: RwLock<BTreeMap<String, Metadata>>,
    min_t: AtomicI64,
    max_t: AtomicI64,
    /// Samples older than this are refused: that time is in blocks already.
    min_valid: AtomicI64,
}

/// Whether `pairs` are a label set as the head keeps them: sorted by name, names unique, no
/// empty value.
fn canonical(pairs: &[(&str, &str)]) -> bool {
    pairs.windows(2).all(|w| w[0].0 < w[1].0) && pairs.iter().all(|(_, v)| !v.is_empty())
}

/// How an append names its series: a label set, or sorted pairs with their hash.
#[derive(Clone, Copy)]
enum SeriesKey<'a> {
    Labels(&'a Labels),
    Pairs(u64, &'a [(&'a str, &'a str)]),
}

impl Default for Head {
    fn default() -> Self {
        Self::new(HeadOptions::default())
    }
}

impl Head {
    /// An empty head.
    pub fn new(opts: HeadOptions) -> Self {
        let window_ms = i64::try_from(opts.out_of_order_window.as_millis()).unwrap_or(i64::MAX);
        Self {
            opts,
            window_ms,
            index: RwLock::new(Index::default()),
            metadata: RwLock::new(BTreeMap::new()),
            min_t: AtomicI64::new(i64::MAX),
            max_t: AtomicI64::new(i64::MIN),
            min_valid: AtomicI64::new(i64::MIN),
        }
    }

    /// The head's options.
    pub fn options(&self) -> &HeadOptions {
        &self.opts
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        // Index mutations complete before the lock is released; a panic elsewhere
        // cannot leave it half-updated.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of series.
    pub fn num_series(&self) -> usize {
        self.read_index().len()
    }

    /// Oldest and newest sample timestamps appended, `None` when empty.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let (lo, hi) = (self.min_t.load(Ordering::Relaxed), self.max_t.load(Ordering::Relaxed));
        (lo <= hi).then_some((lo, hi))
    }

    fn validate(&self, labels: &Labels) -> Result<(), AppendError> {
        if !labels.contains(METRIC_NAME) {
            return Err(AppendError::MissingMetricName { labels: labels.to_string() });
        }
        let o = &self.opts;
        if labels.len() > o.max_labels_per_series {
            return Err(AppendError::TooManyLabels {
                labels: labels.to_string(),
                count: labels.len(),
                limit: o.max_labels_per_series,
            });
        }
        for l in labels.iter() {
            if l.name.len() > o.max_label_name_length {
                let cut = l.name.char_indices().take_while(|(i, _)| *i < o.max_label_name_length).count();
                return Err(AppendError::LabelNameTooLong {
                    name: l.name.chars().take(cut).collect(),
                    len: l.name.len(),
                    limit: o.max_label_name_length,
                });
            }
            if l.value.len() > o.max_label_value_length {
                return Err(AppendError::LabelValueTooLong {
                    name: l.name.clone(),
                    len: l.value.len(),
                    limit: o.max_label_value_length,
                });
            }
        }
        Ok(())
    }

    /// The series with these labels, created (within the limits) if new.
    fn series(&self, labels: &Labels) -> Result<Arc<MemSeries>, AppendError> {
        let hash = series_hash(labels);
        if let Ok(s) = self.read_index().find(hash, labels) {
            return Ok(s);
        }
        self.validate(labels)?;
        let mut idx = self.write_index();
        match idx.find(hash, labels) {
            Ok(s) => Ok(s),
            Err(id) => {
                if self.opts.max_series > 0 && idx.len() >= self.opts.max_series {
                    return Err(AppendError::SeriesLimit { limit: self.opts.max_series });
                }
                Ok(idx.insert(id, labels))
            }
        }
    }

    /// The stable id of the series with these labels, creating the series if new.
    pub fn series_id(&self, labels: &Labels) -> Result<u64, AppendError> {
        Ok(self.series(labels)?.id)
    }

    /// The labels of the series with this id.
    pub fn series_labels(&self, id: u64) -> Option<Labels> {
        self.read_index().by_id(id).map(|s| s.to_labels())
    }

    /// Appends one sample (`t` in ms). A repeat of a stored sample (same timestamp, same
    /// value bits) is accepted and changes nothing, so retried writes are idempotent.
    pub fn append(&self, labels: &Labels, t: i64, v: f64) -> Result<(), AppendError> {
        let out = self.append_samples(labels, &[Sample { t, v }]);
        out.first_error.map_or(Ok(()), Err)
    }

    /// The oldest timestamp the head accepts (`i64::MIN` until a block is cut).
    pub fn min_valid_time(&self) -> i64 {
        self.min_valid.load(Ordering::Acquire)
    }

    /// Raises the oldest timestamp the head accepts to `t` (never lowers it).
    pub fn set_min_valid_time(&self, t: i64) {
        self.min_valid.fetch_max(t, Ordering::AcqRel);
    }

    /// Drops every sample older than `t` (now in blocks), refuses older samples from now on,
    /// and removes the series left without samples. Returns the number of series removed.
    pub fn truncate_below(&self, t: i64) -> usize {
        self.set_min_valid_time(t);
        let all = self.read_index().all();
        let mut emptied = 0usize;
        for s in &all {
            emptied += usize::from(s.truncate_below(t));
        }
        self.min_t.fetch_max(t, Ordering::Relaxed);
        if emptied == 0 {
            return 0;
        }
        // Series are marked removed under the write lock, so an append that found one before
        // sees the mark and looks the series up (creating it) again.
        let mut idx = self.write_index();
        let before = idx.len();
        let keep: Vec<Arc<MemSeries>> = idx.all().into_iter().filter(|s| !s.remove_if_empty()).collect();
        *idx = Index::rebuild(keep);
        before - idx.len()
    }

    /// Every series, sorted by labels (for writing blocks).
    pub(crate) fn series_sorted(&self) -> Vec<Arc<MemSeries>> {
        let mut all = self.read_index().all();
        all.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        all
    }

    /// Appends one series' samples, keeping the valid ones (as remote write expects).
    pub fn append_samples(&self, labels: &Labels, samples: &[Sample]) -> AppendOutcome {
        self.append_each(SeriesKey::Labels(labels), samples.iter().copied(), self.window_ms, |_, _, _| {})
    }

    /// [`append_samples`](Self::append_samples), handing each accepted sample to `kept` with
    /// the series that took it (the pending part shares the series' labels instead of copying
    /// them).
    pub(crate) fn append_samples_with(
        &self,
        labels: &Labels,
        samples: &[Sample],
        kept: impl FnMut(&Arc<MemSeries>, &Sample, Placement),
    ) -> AppendOutcome {
        self.append_each(SeriesKey::Labels(labels), samples.iter().copied(), self.window_ms, kept)
    }

    /// [`append_samples_with`](Self::append_samples_with) for a label set given as `(name,
    /// value)` pairs and their hash ([`series_hash_of`](super::index::series_hash_of)): a
    /// series the head has is found without building its labels. Pairs that are not a label
    /// set as the head keeps them (sorted, unique names, no empty value) are made into one.
    pub(crate) fn append_pairs_with(
        &self,
        hash: u64,
        pairs: &[(&str, &str)],
        samples: impl Iterator<Item = Sample>,
        kept: impl FnMut(&Arc<MemSeries>, &Sample, Placement),
    ) -> AppendOutcome {
        if canonical(pairs) {
            return self.append_each(SeriesKey::Pairs(hash, pairs), samples, self.window_ms, kept);
        }
        let labels = Labels::from_pairs(pairs.iter().copied());
        self.append_each(SeriesKey::Labels(&labels), samples, self.window_ms, kept)
    }

    /// Puts back samples the head had accepted before (read from a part on start): the
    /// out-of-order window was applied when they first arrived, so any age is taken now.
    /// Samples older than the head's lower bound are in blocks already and are skipped.
    pub fn restore_samples(&self, labels: &Labels, samples: &[Sample]) -> AppendOutcome {
        let min_valid = self.min_valid_time();
        let from = samples.partition_point(|s| s.t < min_valid);
        if from == samples.len() {
            return AppendOutcome::default();
        }
        self.append_each(SeriesKey::Labels(labels), samples[from..].iter().copied(), i64::MAX, |_, _, _| {})
    }

    /// The series `key` names, created (within the limits) if new.
    fn series_by(&self, key: SeriesKey<'_>) -> Result<Arc<MemSeries>, AppendError> {
        match key {
            SeriesKey::Labels(labels) => self.series(labels),
            SeriesKey::Pairs(hash, pairs) => {
                // (The index guard must be gone before `series` may take the write lock.)
                let found = self.read_index().find_pairs(hash, pairs);
                found.map_or_else(|| self.series(&Labels::from_pairs(pairs.iter().copied())), Ok)
            }
        }
    }

    fn append_each(
        &self,
        key: SeriesKey<'_>,
        samples: impl Iterator<Item = Sample>,
        window_ms: i64,
        mut kept: impl FnMut(&Arc<MemSeries>, &Sample, Placement),
    ) -> AppendOutcome {
        let mut out = AppendOutcome::default();
        let mut samples = samples.peekable();
        let min_valid = self.min_valid_time();
        let mut s = self.series_by(key);
        loop {
            match s {
                Ok(series) => {
                    if !self.append_to(&series, &mut samples, window_ms, min_valid, &mut kept, &mut out) {
                        break;
                    }
                    // Truncation dropped the series between the lookup and this append.
                    s = self.series_by(key);
                }
                Err(e) => {
                    out.rejected += samples.count();
                    out.first_error.get_or_insert(e);
                    break;
                }
            }
        }
        out
    }

    /// Appends `samples` to `series` until they run out (false) or the series turns out removed
    /// from the head (true; the sample that found it is left in `samples`).
    fn append_to(
        &self,
        series: &Arc<MemSeries>,
        samples: &mut std::iter::Peekable<impl Iterator<Item = Sample>>,
        window_ms: i64,
        min_valid: i64,
        kept: &mut impl FnMut(&Arc<MemSeries>, &Sample, Placement),
        out: &mut AppendOutcome,
    ) -> bool {
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        let mut removed = false;
        while let Some(&sample) = samples.peek() {
            let appended = if sample.t < min_valid {
                Err(AppendError::OutOfBounds { timestamp: sample.t, min_valid })
            } else {
                series.append_placed(sample.t, sample.v, window_ms)
            };
            if appended == Err(AppendError::Removed) {
                removed = true;
                break;
            }
            samples.next();
            match appended {
                Ok(placement) => {
                    (lo, hi) = (lo.min(sample.t), hi.max(sample.t));
                    out.accepted += 1;
                    kept(series, &sample, placement);
                }
                Err(e) => {
                    out.rejected += 1;
                    out.first_error.get_or_insert(e);
                }
            }
        }
        if lo <= hi {
            self.min_t.fetch_min(lo, Ordering::Relaxed);
            self.max_t.fetch_max(hi, Ordering::Relaxed);
        }
        removed
    }

    /// [`append_pairs_with`](Self::append_pairs_with) for the series of a whole request: the
    /// series the head has are found and appended to under one read of the index (not one per
    /// series: the lock is shared with every receiver and processor); the others are created
    /// after it. `outcome` gets each series' outcome, in no particular order.
    pub(crate) fn append_pairs_batch<'p, I: Iterator<Item = Sample>>(
        &self,
        series: impl Iterator<Item = (u64, &'p [(&'p str, &'p str)], I)>,
        mut kept: impl FnMut(&Arc<MemSeries>, &Sample, Placement),
        mut outcome: impl FnMut(AppendOutcome),
    ) {
        let min_valid = self.min_valid_time();
        let mut later = Vec::new();
        {
            let series: Vec<_> = series.collect();
            // Pairs not as the head keeps them are never found as they are (looked up after).
            let keys: Vec<(u64, &[(&str, &str)])> = series
                .iter()
                .map(|(hash, pairs, _)| if canonical(pairs) { (*hash, *pairs) } else { (*hash, &[][..]) })
                .collect();
            let idx = self.read_index();
            let found = idx.find_pairs_many(&keys);
            for ((hash, pairs, samples), found) in series.into_iter().zip(found) {
                let mut samples = samples.peekable();
                let found = found.filter(|_| canonical(pairs));
                let Some(s) = found else {
                    later.push((hash, pairs, samples, AppendOutcome::default()));
                    continue;
                };
                let mut out = AppendOutcome::default();
                if self.append_to(s, &mut samples, self.window_ms, min_valid, &mut kept, &mut out) {
                    // (Not while the index is read: a removed series is looked up again after.)
                    later.push((hash, pairs, samples, out));
                } else {
                    outcome(out);
                }
            }
        }
        for (hash, pairs, samples, mut out) in later {
            let rest = self.append_pairs_with(hash, pairs, samples, &mut kept);
            out.accepted += rest.accepted;
            out.rejected += rest.rejected;
            out.first_error = out.first_error.or(rest.first_error);
            outcome(out);
        }
    }

    /// Which of one series' `samples` an append would refuse now, and why, without
    /// changing anything (remote write answers with these as Prometheus does). `labels` are
    /// sorted `(name, value)` pairs; a series the head does not have yet refuses only
    /// samples older than [`min_valid_time`](Self::min_valid_time).
    pub fn refused_samples(&self, labels: &[(&str, &str)], samples: &[Sample]) -> Vec<(usize, AppendError)> {
        let hash = super::index::series_hash_of(labels.iter().copied());
        self.refused_many([(hash, labels, samples.iter().copied())])
            .into_iter()
            .map(|(_, i, e)| (i, e))
            .collect()
    }

    /// [`refused_samples`](Self::refused_samples) of many series with one look at the index:
    /// each is given as its hash ([`series_hash_of`](super::index::series_hash_of) of its
    /// pairs), sorted pairs and samples; the answer is `(series position, sample position,
    /// why)`.
    pub fn refused_many<'s, I>(
        &self,
        series: impl IntoIterator<Item = (u64, &'s [(&'s str, &'s str)], I)>,
    ) -> Vec<(usize, usize, AppendError)>
    where
        I: Iterator<Item = Sample>,
    {
        let min_valid = self.min_valid_time();
        let mut out = Vec::new();
        let series: Vec<_> = series.into_iter().collect();
        let keys: Vec<(u64, &[(&str, &str)])> =
            series.iter().map(|(hash, labels, _)| (*hash, *labels)).collect();
        let idx = self.read_index();
        let found = idx.find_pairs_many(&keys);
        for (n, ((_, _, samples), found)) in series.into_iter().zip(found).enumerate() {
            match found {
                Some(series) => {
                    series.refused(samples, self.window_ms, min_valid, |i, e| out.push((n, i, e)))
                }
                None => {
                    for (i, s) in samples.enumerate().filter(|(_, s)| s.t < min_valid) {
                        out.push((n, i, AppendError::OutOfBounds { timestamp: s.t, min_valid }));
                    }
                }
            }
        }
        out
    }

    /// Keeps an exemplar for the series (created if new); a repeat of the newest one is
    /// ignored, an older one refused.
    pub fn append_exemplar(&self, labels: &Labels, exemplar: Exemplar) -> Result<(), AppendError> {
        self.append_exemplar_to(labels, exemplar).map(drop)
    }

    /// [`Head::append_exemplar`], giving the series that kept it.
    pub(crate) fn append_exemplar_to(
        &self,
        labels: &Labels,
        exemplar: Exemplar,
    ) -> Result<Arc<MemSeries>, AppendError> {
        let len = label_chars(&exemplar.labels);
        if len > EXEMPLAR_MAX_LABEL_CHARS {
            return Err(AppendError::ExemplarLabelsTooLong { len, limit: EXEMPLAR_MAX_LABEL_CHARS });
        }
        let s = self.series(labels)?;
        s.add_exemplar(exemplar, self.opts.max_exemplars_per_series)?;
        Ok(s)
    }

    /// Records (or replaces) the metadata of a metric name.
    pub fn set_metadata(&self, metric: &str, metadata: Metadata) -> Result<(), AppendError> {
        let mut m = self.metadata.write().unwrap_or_else(PoisonError::into_inner);
        if !m.contains_key(metric) && m.len() >= self.opts.max_metadata {
            return Err(AppendError::MetadataLimit { limit: self.opts.max_metadata });
        }
        m.insert(metric.to_owned(), metadata);
        Ok(())
    }

    /// Metadata by metric name, sorted by name; only `metric` if given; at most `limit`
    /// names.
    pub fn metadata(&self, metric: Option<&str>, limit: Option<usize>) -> Vec<(String, Metadata)> {
        let m = self.metadata.read().unwrap_or_else(PoisonError::into_inner);
        let limit = limit.unwrap_or(usize::MAX);
        match metric {
            Some(name) => m.get(name).map(|md| vec![(name.to_owned(), md.clone())]).unwrap_or_default(),
            None => m.iter().take(limit).map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// The series matching any of the matcher sets (every series if there are none).
    fn matching(&self, sets: &[Vec<Matcher>]) -> Vec<Arc<MemSeries>> {
        let idx = self.read_index();
        if sets.is_empty() {
            return idx.all();
        }
        if let [one] = sets {
            return idx.select(one);
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for set in sets {
            for s in idx.select(set) {
                if seen.insert(s.id) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Whether `[mint, maxt]` covers every sample in the head.
    fn covers(&self, mint: i64, maxt: i64) -> bool {
        self.time_range().is_none_or(|(lo, hi)| mint <= lo && maxt >= hi)
    }

    /// Label names of the series matching any set (all series if none) with samples in
    /// `[mint, maxt]`, sorted.
    pub fn label_names(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<String> {
        if sets.is_empty() && self.covers(mint, maxt) {
            return self.read_index().label_names();
        }
        let mut names = BTreeSet::new();
        for s in self.matching(sets) {
            if s.overlaps(mint, maxt) {
                names.extend(s.labels.iter().map(|(n, _)| n.clone()));
            }
        }
        names.into_iter().map(|n| n.to_string()).collect()
    }

    /// Values of label `name` among the series matching any set (all series if none) with
    /// samples in `[mint, maxt]`, sorted.
    pub fn label_values(&self, name: &str, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<String> {
        if sets.is_empty() && self.covers(mint, maxt) {
            return self.read_index().label_values(name);
        }
        let sets: Vec<Vec<Matcher>> =
            if sets.is_empty() { vec![vec![Matcher::not_equal(name, "")]] } else { sets.to_vec() };
        let mut values = BTreeSet::new();
        for s in self.matching(&sets) {
            let v = s.label(name);
            if !v.is_empty() && s.overlaps(mint, maxt) {
                values.insert(v.to_owned());
            }
        }
        values.into_iter().collect()
    }

    /// Labels of the series matching any set with samples in `[mint, maxt]`, sorted.
    pub fn series_matching(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<Labels> {
        let mut out: Vec<Labels> =
            self.matching(sets).iter().filter(|s| s.overlaps(mint, maxt)).map(|s| s.to_labels()).collect();
        out.sort();
        out
    }

    /// Exemplars in `[mint, maxt]` of the series matching any set, series sorted by labels.
    pub fn exemplars(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<SeriesExemplars> {
        let mut out: Vec<SeriesExemplars> = self
            .matching(sets)
            .iter()
            .filter_map(|s| {
                let exemplars = s.exemplars(mint, maxt);
                (!exemplars.is_empty()).then(|| SeriesExemplars { series: s.to_labels(), exemplars })
            })
            .collect();
        out.sort_by(|a, b| a.series.cmp(&b.series));
        out
    }
}

impl SeriesSource for Head {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError> {
        let candidates = self.read_index().select(matchers);
        let decode = |part: &[Arc<MemSeries>]| -> Vec<Series> {
            part.iter()
                .filter_map(|s| {
                    let samples = s.snapshot(mint, maxt).samples(mint, maxt);
                    (!samples.is_empty()).then(|| Series { labels: s.to_labels(), samples })
                })
                .collect()
        };
        // Many series are decoded on one thread per core.
        let split = candidates.len() >= PARALLEL_DECODE_SERIES;
        let mut out: Vec<Series> =
            pharos_core::parallel::in_parts(&candidates, split, |_, part| decode(part))
                .into_iter()
                .flatten()
                .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }
}

/// One [`Head`] per tenant, created on first use with shared options.
#[derive(Debug)]
pub struct Heads {
    opts: HeadOptions,
    heads: RwLock<HashMap<Tenant, Arc<Head>>>,
    empty: Arc<Head>,
}

impl Default for Heads {
    fn default() -> Self {
        Self::new(HeadOptions::default())
    }
}

impl Heads {
    /// No tenants yet; every head gets `opts`.
    pub fn new(opts: HeadOptions) -> Self {
        Self { empty: Arc::new(Head::new(opts.clone())), opts, heads: RwLock::new(HashMap::new()) }
    }

    /// The tenant's head, created if new (for writers).
    pub fn head(&self, tenant: &Tenant) -> Arc<Head> {
        if let Some(h) = self.get(tenant) {
            return h;
        }
        let mut heads = self.heads.write().unwrap_or_else(PoisonError::into_inner);
        heads.entry(tenant.clone()).or_insert_with(|| Arc::new(Head::new(self.opts.clone()))).clone()
    }

    /// The tenant's head if it has one.
    pub fn get(&self, tenant: &Tenant) -> Option<Arc<Head>> {
        self.heads.read().unwrap_or_else(PoisonError::into_inner).get(tenant).cloned()
    }

    /// The tenant's head, or a shared empty one (for readers: querying does not create heads).
    pub fn get_or_empty(&self, tenant: &Tenant) -> Arc<Head> {
        self.get(tenant).unwrap_or_else(|| self.empty.clone())
    }

    /// Tenants with a head, sorted.
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut t: Vec<Tenant> =
            self.heads.read().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        t.sort();
        t
    }

    /// [`Head::refused_many`] in the tenant's head (nothing is refused for a tenant without one
    /// yet).
    pub fn refused_many<'s, I>(
        &self,
        tenant: &Tenant,
        series: impl IntoIterator<Item = (u64, &'s [(&'s str, &'s str)], I)>,
    ) -> Vec<(usize, usize, AppendError)>
    where
        I: Iterator<Item = Sample>,
    {
        self.get(tenant).map_or_else(Vec::new, |h| h.refused_many(series))
    }

    /// Appends one sample to the tenant's head.
    pub fn append(&self, tenant: &Tenant, labels: &Labels, t: i64, v: f64) -> Result<(), AppendError> {
        self.head(tenant).append(labels, t, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{STALE_NAN_BITS, stale_nan};
    use crate::query::{CancelToken, Engine, MemSource, QueryValue, parse};

    fn up(job: &str) -> Labels {
        Labels::from_pairs([("__name__", "up"), ("job", job)])
    }

    fn values(head: &Head, labels: &Labels) -> Vec<(i64, u64)> {
        let ms: Vec<Matcher> = labels.iter().map(|l| Matcher::equal(&l.name, &l.value)).collect();
        head.select(&ms, i64::MIN, i64::MAX)
            .expect("select")
            .into_iter()
            .flat_map(|s| s.samples)
            .map(|s| (s.t, s.v.to_bits()))
            .collect()
    }

    #[test]
    fn head_out_of_order_sample_is_rejected_by_default() {
        let head = Head::default();
        head.append(&up("a"), 2000, 1.0).expect("first");
        let err = head.append(&up("a"), 1000, 1.0).expect_err("out of order");
        assert_eq!(err, AppendError::OutOfOrder { timestamp: 1000, last: 2000 });
        assert!(err.to_string().contains("out_of_order_time_window"));
    }

    #[test]
    fn head_repeat_of_an_older_stored_sample_is_accepted_without_change() {
        let head = Head::default();
        for t in [1000, 2000, 3000] {
            head.append(&up("a"), t, t as f64).expect("in order");
        }
        // A retried write: the same samples again, older than the newest.
        head.append(&up("a"), 2000, 2000.0).expect("repeat of a stored sample");
        let err = head.append(&up("a"), 2000, 7.0).expect_err("other value at a stored timestamp");
        assert_eq!(err, AppendError::OutOfOrder { timestamp: 2000, last: 3000 });
        let got: Vec<(i64, u64)> = values(&head, &up("a"));
        assert_eq!(got, [1000, 2000, 3000].map(|t: i64| (t, (t as f64).to_bits())).to_vec());
    }

    #[test]
    fn head_refused_samples_tells_what_append_would_refuse_without_appending() {
        let head = Head::default();
        head.append(&up("a"), 2000, 1.0).expect("first");
        head.set_min_valid_time(500);
        let labels = [("__name__", "up"), ("job", "a")];
        let samples = [
            Sample { t: 400, v: 1.0 },  // before the head's lower bound
            Sample { t: 1000, v: 1.0 }, // out of order
            Sample { t: 2000, v: 1.0 }, // repeat of the newest: fine
            Sample { t: 2000, v: 9.0 }, // another value at the newest timestamp
            Sample { t: 3000, v: 1.0 }, // in order
            Sample { t: 2500, v: 1.0 }, // out of order behind the sample before it
        ];
        let refused: Vec<(usize, &str)> =
            head.refused_samples(&labels, &samples).iter().map(|(i, e)| (*i, e.reason())).collect();
        assert_eq!(
            refused,
            vec![(0, "out_of_bounds"), (1, "out_of_order"), (3, "duplicate_sample"), (5, "out_of_order")]
        );
        // Nothing changed, and a series the head does not have refuses only out-of-bounds samples.
        assert_eq!(head.time_range(), Some((2000, 2000)));
        let other = [("__name__", "up"), ("job", "b")];
        let refused = head.refused_samples(&other, &samples);
        assert_eq!(refused.len(), 1);
        assert_eq!(head.num_series(), 1);
        // What it refuses, append refuses too.
        let out = head.append_samples(&up("a"), &samples);
        assert_eq!(out.rejected, 4);
    }

    #[test]
    fn head_refused_samples_applies_the_out_of_order_window() {
        let head =
            Head::new(HeadOptions { out_of_order_window: Duration::from_secs(10), ..HeadOptions::default() });
        head.append(&up("a"), 20_000, 1.0).expect("first");
        head.append(&up("a"), 15_000, 1.0).expect("within the window");
        let labels = [("__name__", "up"), ("job", "a")];
        let samples =
            [Sample { t: 5_000, v: 1.0 }, Sample { t: 15_000, v: 2.0 }, Sample { t: 12_000, v: 1.0 }];
        let refused: Vec<(usize, &str)> =
            head.refused_samples(&labels, &samples).iter().map(|(i, e)| (*i, e.reason())).collect();
        assert_eq!(refused, vec![(0, "too_old"), (1, "duplicate_sample")]);
    }

    #[test]
    fn head_out_of_order_sample_within_window_is_merged_at_read_time() {
        let head =
            Head::new(HeadOptions { out_of_order_window: Duration::from_secs(10), ..HeadOptions::default() });
        for t in [5000, 1000, 3000, 4000, 2000] {
            head.append(&up("a"), t, t as f64).expect("within window");
        }
        let err = head.append(&up("a"), -6000, 0.0).expect_err("too old");
        assert_eq!(err, AppendError::TooOld { timestamp: -6000, last: 5000, window_ms: 10_000 });
        assert!(err.to_string().contains("out_of_order_time_window 10000ms"));
        let got: Vec<i64> = values(&head, &up("a")).iter().map(|p| p.0).collect();
        assert_eq!(got, vec![1000, 2000, 3000, 4000, 5000]);
    }

    #[test]
    fn head_duplicate_with_same_value_is_idempotent_and_other_value_is_rejected() {
        let head = Head::default();
        head.append(&up("a"), 1000, 1.5).expect("first");
        head.append(&up("a"), 1000, 1.5).expect("retry of the same sample");
        head.append(&up("a"), 2000, stale_nan()).expect("stale marker");
        head.append(&up("a"), 2000, stale_nan()).expect("retried stale marker");
        let err = head.append(&up("a"), 2000, 2.0).expect_err("conflicting value");
        assert_eq!(err.to_string(), "duplicate sample for timestamp 2000");
        assert_eq!(values(&head, &up("a")), vec![(1000, 1.5f64.to_bits()), (2000, STALE_NAN_BITS)]);
    }

    #[test]
    fn head_series_limit_refuses_new_series_but_not_existing_ones() {
        let head = Head::new(HeadOptions { max_series: 2, ..HeadOptions::default() });
        head.append(&up("a"), 1, 1.0).expect("1st series");
        head.append(&up("b"), 1, 1.0).expect("2nd series");
        let err = head.append(&up("c"), 1, 1.0).expect_err("3rd series");
        assert_eq!(err, AppendError::SeriesLimit { limit: 2 });
        assert!(err.to_string().contains("max_series_per_tenant"));
        head.append(&up("a"), 2, 1.0).expect("existing series still appends");
        assert_eq!(head.num_series(), 2);
    }

    #[test]
    fn head_label_limits_name_the_limit() {
        let head = Head::new(HeadOptions {
            max_label_name_length: 8,
            max_label_value_length: 4,
            max_labels_per_series: 3,
            ..HeadOptions::default()
        });
        let long_name = Labels::from_pairs([("__name__", "m"), ("averylongname", "x")]);
        assert!(matches!(
            head.append(&long_name, 0, 0.0),
            Err(AppendError::LabelNameTooLong { limit: 8, .. })
        ));
        let long_value = Labels::from_pairs([("__name__", "m"), ("a", "12345")]);
        assert!(matches!(
            head.append(&long_value, 0, 0.0),
            Err(AppendError::LabelValueTooLong { limit: 4, .. })
        ));
        let many = Labels::from_pairs([("__name__", "m"), ("a", "1"), ("b", "2"), ("c", "3")]);
        let err = head.append(&many, 0, 0.0).expect_err("too many labels");
        assert!(err.to_string().contains("max_labels_per_series"), "{err}");
        let nameless = Labels::from_pairs([("a", "1")]);
        assert!(matches!(head.append(&nameless, 0, 0.0), Err(AppendError::MissingMetricName { .. })));
        assert_eq!(head.num_series(), 0);
    }

    #[test]
    fn head_append_samples_keeps_valid_samples_of_a_partly_bad_batch() {
        let head = Head::default();
        let samples = [Sample { t: 10, v: 1.0 }, Sample { t: 5, v: 1.0 }, Sample { t: 20, v: 2.0 }];
        let out = head.append_samples(&up("a"), &samples);
        assert_eq!((out.accepted, out.rejected), (2, 1));
        assert!(matches!(out.first_error, Some(AppendError::OutOfOrder { timestamp: 5, .. })));
    }

    #[test]
    fn head_metadata_and_exemplars_are_stored_and_bounded() {
        let head =
            Head::new(HeadOptions { max_exemplars_per_series: 2, max_metadata: 1, ..HeadOptions::default() });
        let md = Metadata {
            kind: super::super::MetricType::Counter,
            help: "Requests.".into(),
            unit: String::new(),
        };
        head.set_metadata("http_requests_total", md.clone()).expect("first");
        head.set_metadata("http_requests_total", md.clone()).expect("replace");
        assert!(matches!(
            head.set_metadata("other", md.clone()),
            Err(AppendError::MetadataLimit { limit: 1 })
        ));
        assert_eq!(head.metadata(None, None), vec![("http_requests_total".to_owned(), md)]);

        let series = up("a");
        for t in 1..=3 {
            let e =
                Exemplar { labels: Labels::from_pairs([("trace_id", "abc")]), value: t as f64, t: t * 1000 };
            head.append_exemplar(&series, e).expect("in order");
        }
        let old = Exemplar { labels: Labels::empty(), value: 0.0, t: 500 };
        assert!(matches!(head.append_exemplar(&series, old), Err(AppendError::OutOfOrderExemplar { .. })));
        let got = head.exemplars(&[vec![Matcher::equal("job", "a")]], 0, 10_000);
        assert_eq!(got.len(), 1);
        let ts: Vec<i64> = got[0].exemplars.iter().map(|e| e.t).collect();
        assert_eq!(ts, vec![2000, 3000]);
    }

    #[test]
    fn head_label_apis_respect_matchers_and_time() {
        let head = Head::default();
        head.append(&up("a"), 1000, 1.0).expect("a");
        head.append(&Labels::from_pairs([("__name__", "up"), ("job", "b"), ("zone", "z1")]), 9000, 1.0)
            .expect("b");
        assert_eq!(head.label_names(&[], i64::MIN, i64::MAX), vec!["__name__", "job", "zone"]);
        assert_eq!(head.label_names(&[], 0, 2000), vec!["__name__", "job"]);
        assert_eq!(head.label_values("job", &[], i64::MIN, i64::MAX), vec!["a", "b"]);
        assert_eq!(head.label_values("job", &[], 5000, 10_000), vec!["b"]);
        let sets = [vec![Matcher::equal("job", "a")]];
        assert_eq!(head.label_values("job", &sets, i64::MIN, i64::MAX), vec!["a"]);
        assert_eq!(head.series_matching(&sets, i64::MIN, i64::MAX), vec![up("a")]);
        assert!(head.series_matching(&sets, 2000, 3000).is_empty());
    }

    #[test]
    fn heads_keep_tenants_apart() {
        let heads = Heads::default();
        let (a, b) = (Tenant::parse("a").expect("valid"), Tenant::parse("b").expect("valid"));
        heads.append(&a, &up("x"), 1, 1.0).expect("append");
        assert_eq!(heads.head(&a).num_series(), 1);
        assert_eq!(heads.get_or_empty(&b).num_series(), 0);
        assert!(heads.get(&b).is_none(), "reading does not create a head");
        assert_eq!(heads.tenants(), vec![a]);
    }

    #[test]
    fn head_concurrent_appends_and_queries_see_consistent_series() {
        let head = Arc::new(Head::default());
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let head = head.clone();
                std::thread::spawn(move || {
                    for t in 0..2000 {
                        let l = Labels::from_pairs([("__name__", "m"), ("w", &*w.to_string())]);
                        head.append(&l, t, t as f64).expect("in order");
                    }
                })
            })
            .collect();
        for _ in 0..50 {
            for s in head.select(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX).expect("select") {
                assert!(s.samples.windows(2).all(|p| p[0].t < p[1].t));
            }
        }
        for w in writers {
            w.join().expect("writer");
        }
        let all = head.select(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX).expect("select");
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|s| s.samples.len() == 2000));
    }

    /// A xorshift generator for test data.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn same_value(a: &QueryValue, b: &QueryValue) -> bool {
        fn eq(x: f64, y: f64) -> bool {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) || x == y
        }
        match (a, b) {
            (QueryValue::Scalar { t: t1, v: v1 }, QueryValue::Scalar { t: t2, v: v2 }) => {
                t1 == t2 && eq(*v1, *v2)
            }
            (QueryValue::Vector(x), QueryValue::Vector(y)) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|(p, q)| p.labels == q.labels && p.t == q.t && eq(p.v, q.v))
            }
            (QueryValue::Matrix(x), QueryValue::Matrix(y)) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|(p, q)| {
                        p.labels == q.labels
                            && p.samples.len() == q.samples.len()
                            && p.samples.iter().zip(&q.samples).all(|(s, r)| s.t == r.t && eq(s.v, r.v))
                    })
            }
            (a, b) => a == b,
        }
    }

    #[test]
    fn promql_over_head_equals_promql_over_mem_source() {
        let head = Head::new(HeadOptions {
            out_of_order_window: Duration::from_secs(600),
            ..HeadOptions::default()
        });
        let mut mem = MemSource::new();
        let mut rng = XorShift(99);
        for i in 0..30 {
            let labels = Labels::from_pairs([
                ("__name__", if i % 3 == 0 { "http_requests_total" } else { "node_load" }),
                ("instance", &*format!("host-{i}")),
                ("job", ["api", "db", "web"][i % 3]),
            ]);
            let mut counter = 0.0;
            let mut points: Vec<(i64, f64)> = Vec::new();
            for step in 0..400i64 {
                let t = step * 15_000 + (rng.next() % 1000) as i64;
                counter += (rng.next() % 10) as f64;
                let v = match rng.next() % 50 {
                    0 => stale_nan(),
                    1 => 0.0, // a counter reset
                    _ => counter,
                };
                points.push((t, v));
            }
            // Deliver a few samples late, within the window.
            for k in (0..points.len()).step_by(17) {
                if k + 1 < points.len() {
                    points.swap(k, k + 1);
                }
            }
            for (t, v) in points {
                head.append(&labels, t, v).expect("valid sample");
                mem.add(labels.clone(), t, v);
            }
        }
        let engine = Engine::default();
        let cancel = CancelToken::new();
        let queries = [
            "http_requests_total",
            "rate(http_requests_total[5m])",
            "sum by (job) (rate(http_requests_total[5m]))",
            "node_load{job=~\"a.*|db\"}",
            "max_over_time(node_load{job!=\"db\"}[10m])",
            "topk(3, node_load)",
            "count({__name__=~\"node_.*|http_.*\"})",
            "histogram_quantile(0.9, sum by (le) (rate(http_requests_total[5m])))",
            "node_load offset 5m",
            "avg_over_time(node_load[5m:1m])",
            "1 + 1",
        ];
        for q in queries {
            let expr = parse(q).expect("valid query");
            for t in [0, 1_000_000, 3_000_000, 6_000_000] {
                let a = engine.instant(&head, &expr, t, &cancel).expect("head");
                let b = engine.instant(&mem, &expr, t, &cancel).expect("mem");
                assert!(same_value(&a, &b), "{q} at {t}: head {a:?} mem {b:?}");
            }
            let a = engine.range(&head, &expr, 0, 6_000_000, 60_000, &cancel);
            let b = engine.range(&mem, &expr, 0, 6_000_000, 60_000, &cancel);
            match (a, b) {
                (Ok(a), Ok(b)) => assert!(same_value(&a, &b), "range {q}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("range {q}: head {a:?} mem {b:?}"),
            }
        }
    }
}
