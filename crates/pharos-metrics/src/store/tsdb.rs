//! The metrics store: the heads in memory, blocks on the object store, and what moves
//! samples from one to the other.
//!
//! Every block range (2 h by default, Prometheus's `min-block-duration`), once the head holds
//! half a range (or the out-of-order window, if longer) past a window's end, the **cut** writes
//! each tenant's older windows as blocks, then raises the head's lower bound to the cut (older
//! samples are refused from then on as out of bounds), drops those samples from the head and
//! deletes the parts that held only them. The **compactor** deletes blocks past the retention
//! and merges the blocks of a complete larger window (3, 9, ... block ranges, up to a tenth of
//! the retention) into one. Readers take the head first and the block list after it, so a
//! cut running meanwhile shows them its samples at least once; duplicates are removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pharos_core::Tenant;
use pharos_storage::{Catalog, CatalogError, ObjectStorage, StorageError, new_block_id};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::{MetricsReader, TenantReaders};
use crate::model::{Labels, Sample, Series};
use crate::query::{Matcher, QueryError, SeriesSource};

use super::block::{
    BLOCK_VERSION, BlockBuilder, BlockError, BlockIndex, ChunkRef, INDEX_FILE, MetricsBlockMeta,
    checked_chunk, decode_chunk, segment_file,
};
use super::head::{Head, Heads};
use super::metadata::Metadata;
use super::series::interned_label;
use super::writer::{LoadReport, PartStore, PartStoreError};
use super::{SeriesExemplars, index::Slot};

/// The catalog's signal directory.
pub const SIGNAL_DIR: &str = "metrics";

/// The metrics store's options.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The time window of a block cut from the head (Prometheus: 2 h).
    pub block_range: Duration,
    /// Blocks whose newest sample is older than this (against the clock) are deleted.
    pub retention: Duration,
    /// How long retired blocks' data stays readable for queries that listed them.
    pub deletion_delay: Duration,
    /// Decoded block indexes kept in memory, bytes (least recently used dropped first).
    pub index_cache_bytes: usize,
    /// A chunk segment object is closed at this size.
    pub segment_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            block_range: Duration::from_secs(2 * 3600),
            retention: Duration::from_secs(15 * 24 * 3600),
            deletion_delay: Duration::from_secs(60),
            index_cache_bytes: 1 << 30,
            segment_bytes: 128 << 20,
        }
    }
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("metrics block {block}: {source}")]
    Block { block: String, source: BlockError },
    #[error(transparent)]
    Parts(#[from] PartStoreError),
    #[error("background task failed: {0}")]
    Task(String),
}

/// What a cut wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    pub blocks: usize,
    pub series: u64,
    pub samples: u64,
    pub bytes: u64,
    /// Series dropped from the heads (no samples left after the cut).
    pub series_removed: usize,
    /// Part files deleted (their samples are all in blocks).
    pub parts_removed: usize,
}

/// What a compaction round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Blocks deleted for being past the retention.
    pub expired: usize,
    /// Blocks merged into larger ones.
    pub merged: usize,
    /// Blocks written by merging.
    pub written: usize,
    pub bytes: u64,
}

/// A window and the blocks to merge into one block for it.
type MergePlan = ((i64, i64), Vec<Arc<MetricsBlockMeta>>);

/// Decoded block indexes, least recently used dropped first once over the budget.
#[derive(Debug)]
struct IndexCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    map: HashMap<String, (Arc<BlockIndex>, u64)>,
    bytes: usize,
    tick: u64,
}

impl IndexCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, id: &str) -> Option<Arc<BlockIndex>> {
        let mut c = self.lock();
        c.tick += 1;
        let tick = c.tick;
        c.map.get_mut(id).map(|(idx, used)| {
            *used = tick;
            idx.clone()
        })
    }

    fn insert(&self, id: &str, idx: Arc<BlockIndex>) {
        let mut c = self.lock();
        c.tick += 1;
        let tick = c.tick;
        c.bytes += idx.heap_bytes;
        if let Some((old, _)) = c.map.insert(id.to_owned(), (idx, tick)) {
            c.bytes -= old.heap_bytes;
        }
        while c.bytes > self.budget && c.map.len() > 1 {
            let Some(oldest) = c.map.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some((old, _)) = c.map.remove(&oldest) {
                c.bytes -= old.heap_bytes;
            }
        }
    }

    fn remove(&self, id: &str) {
        let mut c = self.lock();
        if let Some((old, _)) = c.map.remove(id) {
            c.bytes -= old.heap_bytes;
        }
    }
}

/// Heads, parts and blocks of every tenant.
#[derive(Debug)]
pub struct MetricsStore {
    heads: Arc<Heads>,
    parts: Arc<PartStore>,
    catalog: Catalog<MetricsBlockMeta>,
    cache: IndexCache,
    opts: StoreOptions,
    range_ms: i64,
    handle: Handle,
    /// One cut or compaction at a time.
    maintenance: tokio::sync::Mutex<()>,
}

fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn task_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Task(e.to_string())
}

impl MetricsStore {
    /// Opens the block catalog, bounds each head by its blocks, restores the newest block's
    /// metadata, loads the parts on disk (skipping samples already in blocks) and deletes the
    /// parts no longer needed. Call from a runtime (queries wait on it).
    pub async fn open(
        storage: ObjectStorage,
        heads: Arc<Heads>,
        parts_dir: &Path,
        opts: StoreOptions,
    ) -> Result<(Arc<MetricsStore>, LoadReport), StoreError> {
        let catalog = Catalog::open(storage, SIGNAL_DIR, opts.deletion_delay).await?;
        let parts_dir = parts_dir.to_owned();
        let parts =
            tokio::task::spawn_blocking(move || PartStore::open(&parts_dir)).await.map_err(task_error)??;
        let store = Arc::new(MetricsStore {
            heads,
            parts: Arc::new(parts),
            catalog,
            cache: IndexCache { budget: opts.index_cache_bytes, inner: Mutex::default() },
            range_ms: ms(opts.block_range).max(1),
            opts,
            handle: Handle::current(),
            maintenance: tokio::sync::Mutex::new(()),
        });
        let tenants = store.catalog.tenants();
        for tenant in &tenants {
            let blocks = store.catalog.blocks(tenant);
            let Some(newest) = blocks.iter().max_by_key(|b| b.window_end) else { continue };
            let head = store.heads.head(tenant);
            head.set_min_valid_time(newest.window_end);
            match store.index(tenant, newest).await {
                Ok(idx) => {
                    for (name, m) in &idx.metadata {
                        let _ = head.set_metadata(name, m.clone());
                    }
                }
                Err(e) => warn!(%tenant, error = %e, "metric metadata of the newest block not restored"),
            }
        }
        let report = {
            let (parts, heads) = (store.parts.clone(), store.heads.clone());
            tokio::task::spawn_blocking(move || parts.load(&heads)).await.map_err(task_error)??
        };
        for tenant in &tenants {
            let min_valid = store.heads.head(tenant).min_valid_time();
            store.parts.remove_below(tenant, min_valid)?;
        }
        info!(
            tenants = tenants.len(),
            blocks = tenants.iter().map(|t| store.catalog.blocks(t).len()).sum::<usize>(),
            "metrics blocks opened"
        );
        Ok((store, report))
    }

    /// The heads.
    pub fn heads(&self) -> &Arc<Heads> {
        &self.heads
    }

    /// The part files.
    pub fn parts(&self) -> &Arc<PartStore> {
        &self.parts
    }

    /// Every tenant with blocks.
    pub fn tenants(&self) -> Vec<Tenant> {
        self.catalog.tenants()
    }

    /// A tenant's blocks, oldest id first.
    pub fn blocks(&self, tenant: &Tenant) -> Vec<Arc<MetricsBlockMeta>> {
        self.catalog.blocks(tenant)
    }

    fn path(&self, tenant: &Tenant, block: &str, file: &str) -> String {
        self.catalog.object_path(tenant, block, file)
    }

    /// A block's decoded index, from the cache or the object store.
    async fn index(&self, tenant: &Tenant, meta: &MetricsBlockMeta) -> Result<Arc<BlockIndex>, StoreError> {
        if let Some(idx) = self.cache.get(&meta.id) {
            return Ok(idx);
        }
        let bytes = self.catalog.storage().get(&self.path(tenant, &meta.id, INDEX_FILE)).await?;
        let idx = tokio::task::spawn_blocking(move || BlockIndex::decode(&bytes))
            .await
            .map_err(task_error)?
            .map_err(|source| StoreError::Block { block: meta.id.clone(), source })?;
        let idx = Arc::new(idx);
        self.cache.insert(&meta.id, idx.clone());
        Ok(idx)
    }

    /// Writes a block of `tenant` for `window`, filled by `fill` on a blocking thread (chunk
    /// segments are uploaded as they fill), and publishes it. `None` if `fill` added nothing.
    async fn write_block<F>(
        &self,
        tenant: &Tenant,
        window: (i64, i64),
        level: u32,
        sources: Vec<String>,
        metadata: Vec<(String, Metadata)>,
        fill: F,
    ) -> Result<Option<Arc<MetricsBlockMeta>>, StoreError>
    where
        F: FnOnce(&mut BlockBuilder<'_, StoreError>) -> Result<(), StoreError> + Send + 'static,
    {
        let id = new_block_id();
        let (tx, mut rx) = mpsc::channel::<(u32, Vec<u8>)>(1);
        let segment_bytes = self.opts.segment_bytes;
        let build = tokio::task::spawn_blocking(move || {
            let mut b = BlockBuilder::new(
                segment_bytes,
                Box::new(move |n, bytes| {
                    tx.blocking_send((n, bytes)).map_err(|_| StoreError::Task("block upload stopped".into()))
                }),
            );
            fill(&mut b)?;
            let added = b.series();
            b.finish(&metadata).map(|built| (built, added))
        });
        let mut uploaded = Ok(0u64);
        while let Some((n, bytes)) = rx.recv().await {
            let len = bytes.len() as u64;
            match self
                .catalog
                .storage()
                .put(&self.path(tenant, &id, &segment_file(n)), Bytes::from(bytes))
                .await
            {
                Ok(()) => uploaded = uploaded.map(|b| b + len),
                Err(e) => {
                    uploaded = Err(e);
                    break;
                }
            }
        }
        drop(rx);
        let built = build.await.map_err(task_error)?;
        let segment_bytes = uploaded?;
        let ((index, stats), added) = built?;
        if added == 0 {
            return Ok(None);
        }
        let index_len = index.len() as u64;
        self.catalog.storage().put(&self.path(tenant, &id, INDEX_FILE), Bytes::from(index)).await?;
        let meta = MetricsBlockMeta {
            id,
            version: BLOCK_VERSION,
            window_start: window.0,
            window_end: window.1,
            min_time: stats.min_time,
            max_time: stats.max_time,
            level,
            series: stats.series,
            samples: stats.samples,
            chunks: stats.chunks,
            segments: stats.segments,
            size_bytes: segment_bytes + index_len,
            sources,
        };
        Ok(Some(self.catalog.publish(tenant, meta).await?))
    }

    /// Writes every tenant's complete head windows as blocks and drops them from the heads.
    pub async fn cut(&self) -> Result<CutReport, StoreError> {
        let _one = self.maintenance.lock().await;
        let mut report = CutReport::default();
        for tenant in self.heads.tenants() {
            let Some(head) = self.heads.get(&tenant) else { continue };
            self.cut_head(&tenant, &head, &mut report).await?;
        }
        Ok(report)
    }

    async fn cut_head(
        &self,
        tenant: &Tenant,
        head: &Arc<Head>,
        report: &mut CutReport,
    ) -> Result<(), StoreError> {
        let Some((lo, hi)) = head.time_range() else { return Ok(()) };
        let range = self.range_ms;
        let window_ms = ms(head.options().out_of_order_window);
        let cut_end = floor_to(hi.saturating_sub((range / 2).max(window_ms)), range);
        let min_valid = head.min_valid_time();
        if cut_end <= min_valid || lo >= cut_end {
            return Ok(());
        }
        let started = Instant::now();
        // From here on no sample older than the cut is accepted, so what is read below for
        // the blocks is everything they will ever hold.
        head.set_min_valid_time(cut_end);
        let metadata = head.metadata(None, None);
        let mut window = floor_to(lo.max(min_valid), range);
        while window < cut_end {
            let end = window + range;
            let series = head.series_sorted();
            let (next_tx, next_rx) = std::sync::mpsc::channel();
            let written = self
                .write_block(tenant, (window, end), 0, Vec::new(), metadata.clone(), move |b| {
                    // The oldest sample at or after this window's end: where the next block starts.
                    let mut next = i64::MAX;
                    for s in &series {
                        let samples = s.snapshot(window, end - 1).samples(window, end - 1);
                        b.add(&s.labels, &samples)?;
                        if let Some(t) = s.first_at_or_after(end) {
                            next = next.min(t);
                        }
                    }
                    let _ = next_tx.send(next);
                    Ok(())
                })
                .await?;
            if let Some(meta) = written {
                info!(
                    %tenant, block = meta.id, window_start = meta.window_start, series = meta.series,
                    samples = meta.samples, bytes = meta.size_bytes, "metrics block cut from the head"
                );
                report.blocks += 1;
                report.series += meta.series;
                report.samples += meta.samples;
                report.bytes += meta.size_bytes;
            }
            let next = next_rx.recv().unwrap_or(i64::MAX);
            window = if next == i64::MAX { cut_end } else { floor_to(next, range).max(end) };
        }
        let head2 = head.clone();
        report.series_removed +=
            tokio::task::spawn_blocking(move || head2.truncate_below(cut_end)).await.map_err(task_error)?;
        let parts = self.parts.clone();
        let t = tenant.clone();
        report.parts_removed += tokio::task::spawn_blocking(move || parts.remove_below(&t, cut_end))
            .await
            .map_err(task_error)??;
        info!(%tenant, cut = cut_end, seconds = started.elapsed().as_secs_f64(), "metrics head cut");
        Ok(())
    }

    /// The window sizes blocks are merged into: 3, 9, 27... block ranges, up to a tenth of
    /// the retention (at most 31 days), the block range itself first (for duplicates).
    fn levels(&self) -> Vec<i64> {
        let cap = (ms(self.opts.retention) / 10).min(31 * 24 * 3600 * 1000).max(self.range_ms);
        let mut out = vec![self.range_ms];
        while let Some(next) = out.last().map(|r| r * 3).filter(|&r| r <= cap) {
            out.push(next);
        }
        out
    }

    /// Deletes blocks past the retention, then merges the blocks of complete larger windows.
    /// `now_ms` is the clock (a parameter for tests).
    pub async fn compact(&self, now_ms: i64) -> Result<CompactReport, StoreError> {
        let _one = self.maintenance.lock().await;
        let mut report = CompactReport::default();
        let cutoff = now_ms.saturating_sub(ms(self.opts.retention));
        for tenant in self.catalog.tenants() {
            for b in self.catalog.blocks(&tenant).iter().filter(|b| b.max_time < cutoff) {
                self.retire(&tenant, b).await?;
                report.expired += 1;
            }
            // Windows at or past the head's lower bound may still get samples.
            let complete_below = match self.heads.get(&tenant) {
                Some(h) => h.min_valid_time(),
                None => self.catalog.blocks(&tenant).iter().map(|b| b.window_end).max().unwrap_or(i64::MIN),
            };
            for _ in 0..16 {
                let Some((window, sources)) = self.plan(&tenant, complete_below) else { break };
                let (written, bytes) = self.merge(&tenant, window, &sources).await?;
                report.merged += sources.len();
                report.written += usize::from(written);
                report.bytes += bytes;
            }
        }
        Ok(report)
    }

    /// The first window of some level holding two blocks or more, complete below `limit`.
    fn plan(&self, tenant: &Tenant, limit: i64) -> Option<MergePlan> {
        let blocks = self.catalog.blocks(tenant);
        for r in self.levels() {
            let mut groups: BTreeMap<i64, Vec<Arc<MetricsBlockMeta>>> = BTreeMap::new();
            for b in &blocks {
                let g = floor_to(b.window_start, r);
                if b.window_end <= g + r && g + r <= limit {
                    groups.entry(g).or_default().push(b.clone());
                }
            }
            if let Some((g, group)) = groups.into_iter().find(|(_, g)| g.len() >= 2) {
                return Some(((g, g + r), group));
            }
        }
        None
    }

    async fn retire(&self, tenant: &Tenant, b: &MetricsBlockMeta) -> Result<(), StoreError> {
        let files = b.files();
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        self.catalog.retire(tenant, std::slice::from_ref(&b.id), &files).await?;
        self.cache.remove(&b.id);
        Ok(())
    }

    /// Merges `sources` into one block for `window`, then retires them.
    async fn merge(
        &self,
        tenant: &Tenant,
        window: (i64, i64),
        sources: &[Arc<MetricsBlockMeta>],
    ) -> Result<(bool, u64), StoreError> {
        let started = Instant::now();
        let mut inputs = Vec::with_capacity(sources.len());
        for b in sources {
            inputs.push((self.index(tenant, b).await?, b.clone()));
        }
        let metadata = inputs
            .iter()
            .max_by_key(|(_, b)| b.window_end)
            .map(|(idx, _)| idx.metadata.clone())
            .unwrap_or_default();
        let level = sources.iter().map(|b| b.level).max().unwrap_or(0) + 1;
        let ids: Vec<String> = sources.iter().map(|b| b.id.clone()).collect();
        let storage = self.catalog.storage().clone();
        let handle = self.handle.clone();
        let paths: Vec<String> = sources.iter().map(|b| self.path(tenant, &b.id, "")).collect();
        let written = self
            .write_block(tenant, window, level, ids, metadata, move |builder| {
                merge_into(builder, &inputs, &paths, &storage, &handle)
            })
            .await?;
        for b in sources {
            self.retire(tenant, b).await?;
        }
        let bytes = written.as_ref().map_or(0, |m| m.size_bytes);
        if let Some(meta) = &written {
            info!(
                %tenant, block = meta.id, sources = sources.len(), level, series = meta.series,
                samples = meta.samples, bytes, seconds = started.elapsed().as_secs_f64(),
                "metrics blocks merged"
            );
        }
        Ok((written.is_some(), bytes))
    }

    /// The blocks of `tenant` with samples in `[mint, maxt]`, oldest window first.
    fn overlapping(&self, tenant: &Tenant, mint: i64, maxt: i64) -> Vec<Arc<MetricsBlockMeta>> {
        let mut blocks: Vec<_> =
            self.catalog.blocks(tenant).into_iter().filter(|b| b.overlaps(mint, maxt)).collect();
        blocks.sort_by_key(|b| (b.window_start, b.window_end));
        blocks
    }

    /// Samples in `[mint, maxt]` of the series matching `matchers`, from each block.
    async fn read_series(
        &self,
        tenant: &Tenant,
        blocks: &[Arc<MetricsBlockMeta>],
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(Labels, Vec<Sample>)>, StoreError> {
        let mut out = Vec::new();
        for meta in blocks {
            let idx = self.index(tenant, meta).await?;
            let mut wanted: Vec<(usize, Vec<ChunkRef>)> = Vec::new();
            let mut by_segment: BTreeMap<u32, Vec<ChunkRef>> = BTreeMap::new();
            for slot in idx.select(matchers) {
                let s = &idx.series[slot as usize];
                let refs: Vec<ChunkRef> =
                    s.chunks.iter().filter(|c| c.min_t <= maxt && c.max_t >= mint).copied().collect();
                for r in &refs {
                    by_segment.entry(r.segment).or_default().push(*r);
                }
                if !refs.is_empty() {
                    wanted.push((slot as usize, refs));
                }
            }
            let mut data: HashMap<(u32, u64), Bytes> = HashMap::new();
            for (segment, refs) in by_segment {
                let path = self.path(tenant, &meta.id, &segment_file(segment));
                let ranges: Vec<_> = refs.iter().map(ChunkRef::range).collect();
                let got = self.catalog.storage().get_ranges(&path, &ranges).await?;
                for (r, bytes) in refs.iter().zip(got) {
                    data.insert((r.segment, r.offset), bytes);
                }
            }
            for (slot, refs) in wanted {
                let mut samples = Vec::new();
                for r in &refs {
                    let bytes = data.get(&(r.segment, r.offset)).map(|b| &b[..]).unwrap_or_default();
                    checked_chunk(bytes, r, &segment_file(r.segment))
                        .and_then(|chunk| decode_chunk(meta.version, chunk, r, &mut samples))
                        .map_err(|source| StoreError::Block { block: meta.id.clone(), source })?;
                    if r.min_t < mint || r.max_t > maxt {
                        // The earlier chunks' samples are in range already.
                        samples.retain(|s| s.t >= mint && s.t <= maxt);
                    }
                }
                if !samples.is_empty() {
                    out.push((idx.series[slot].to_labels(), samples));
                }
            }
        }
        Ok(out)
    }

    /// Label sets of matching series in `[mint, maxt]` from the blocks, and with `all` the
    /// label names / values of whole blocks when no matcher narrows them.
    async fn block_labels(
        &self,
        tenant: &Tenant,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
        mut each: impl FnMut(&BlockIndex, Option<Slot>),
    ) -> Result<(), StoreError> {
        for meta in self.overlapping(tenant, mint, maxt) {
            let idx = self.index(tenant, &meta).await?;
            if sets.is_empty() && mint <= meta.min_time && maxt >= meta.max_time {
                each(&idx, None);
                continue;
            }
            let mut seen = BTreeSet::new();
            let all = [Vec::new()];
            for set in if sets.is_empty() { &all[..] } else { sets } {
                for slot in idx.select(set) {
                    if idx.series[slot as usize].overlaps(mint, maxt) && seen.insert(slot) {
                        each(&idx, Some(slot));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Series of several blocks merged in label order, each series' samples merged by time with
/// repeated timestamps kept once, into `builder`. Runs on a blocking thread: segments are
/// fetched whole, one per source at a time, through `handle`.
fn merge_into(
    builder: &mut BlockBuilder<'_, StoreError>,
    inputs: &[(Arc<BlockIndex>, Arc<MetricsBlockMeta>)],
    dirs: &[String],
    storage: &ObjectStorage,
    handle: &Handle,
) -> Result<(), StoreError> {
    let mut order: Vec<(usize, usize)> = inputs
        .iter()
        .enumerate()
        .flat_map(|(i, (idx, _))| (0..idx.series.len()).map(move |s| (i, s)))
        .collect();
    let labels = |&(i, s): &(usize, usize)| &inputs[i].0.series[s].labels;
    order.sort_by(|a, b| labels(a).cmp(labels(b)).then(a.0.cmp(&b.0)));
    let mut segments: Vec<Option<(u32, Bytes)>> = vec![None; inputs.len()];
    let mut runs: Vec<Vec<Sample>> = Vec::new();
    let mut at = 0;
    while at < order.len() {
        let end = at + order[at..].iter().take_while(|e| labels(e) == labels(&order[at])).count();
        runs.clear();
        for &(i, s) in &order[at..end] {
            let (idx, meta) = &inputs[i];
            let mut run = Vec::new();
            for r in idx.series[s].chunks.iter() {
                if segments[i].as_ref().is_none_or(|(n, _)| *n != r.segment) {
                    let path = format!("{}{}", dirs[i], segment_file(r.segment));
                    segments[i] = Some((r.segment, handle.block_on(storage.get(&path))?));
                }
                let seg = &segments[i].as_ref().expect("just loaded").1;
                let range = r.range();
                let bytes = seg.get(range.start as usize..range.end as usize).unwrap_or_default();
                checked_chunk(bytes, r, &segment_file(r.segment))
                    .and_then(|chunk| decode_chunk(meta.version, chunk, r, &mut run))
                    .map_err(|source| StoreError::Block { block: meta.id.clone(), source })?;
            }
            runs.push(run);
        }
        let samples = merge_runs(std::mem::take(&mut runs));
        builder.add(&inputs[order[at].0].0.series[order[at].1].labels, &samples)?;
        at = end;
    }
    Ok(())
}

/// Time-ordered runs of one series merged into one, a repeated timestamp kept once (the
/// earlier run's).
fn merge_runs(mut runs: Vec<Vec<Sample>>) -> Vec<Sample> {
    if runs.len() == 1 {
        return runs.pop().unwrap_or_default();
    }
    let ordered = runs.windows(2).all(|w| match (w[0].last(), w[1].first()) {
        (Some(a), Some(b)) => a.t < b.t,
        _ => true,
    });
    let mut out: Vec<Sample> = runs.concat();
    if !ordered {
        out.sort_by_key(|s| s.t);
        out.dedup_by_key(|s| s.t);
    }
    out
}

/// One tenant's head and blocks, as the PromQL engine and the API read them. Its methods
/// wait for the object store: call them from a blocking thread, never an async task.
pub struct TenantView {
    store: Arc<MetricsStore>,
    tenant: Tenant,
    head: Arc<Head>,
}

impl MetricsStore {
    /// The reader of one tenant.
    pub fn view(self: &Arc<Self>, tenant: &Tenant) -> TenantView {
        TenantView { store: self.clone(), tenant: tenant.clone(), head: self.heads.get_or_empty(tenant) }
    }
}

fn source_error(e: StoreError) -> QueryError {
    QueryError::Source { source: Box::new(e) }
}

impl SeriesSource for TenantView {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError> {
        // The head first, the block list after: see the module documentation.
        let head = self.head.select(matchers, mint, maxt)?;
        let blocks = self.store.overlapping(&self.tenant, mint, maxt);
        if blocks.is_empty() {
            return Ok(head);
        }
        let from_blocks = self
            .store
            .handle
            .block_on(self.store.read_series(&self.tenant, &blocks, matchers, mint, maxt))
            .map_err(source_error)?;
        let mut merged: BTreeMap<Labels, Vec<Vec<Sample>>> = BTreeMap::new();
        for (labels, samples) in from_blocks {
            merged.entry(labels).or_default().push(samples);
        }
        for s in head {
            merged.entry(s.labels).or_default().push(s.samples);
        }
        Ok(merged.into_iter().map(|(labels, runs)| Series { labels, samples: merge_runs(runs) }).collect())
    }
}

impl MetricsReader for TenantView {
    fn label_names(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Result<Vec<String>, QueryError> {
        let mut names: BTreeSet<String> = self.head.label_names(sets, mint, maxt).into_iter().collect();
        let blocks = self.store.block_labels(&self.tenant, sets, mint, maxt, |idx, slot| match slot {
            None => names.extend(idx.label_names()),
            Some(slot) => names.extend(idx.series[slot as usize].labels.iter().map(|(n, _)| n.to_string())),
        });
        self.store.handle.block_on(blocks).map_err(source_error)?;
        Ok(names.into_iter().collect())
    }

    fn label_values(
        &self,
        name: &str,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, QueryError> {
        let mut values: BTreeSet<String> =
            self.head.label_values(name, sets, mint, maxt).into_iter().collect();
        let blocks = self.store.block_labels(&self.tenant, sets, mint, maxt, |idx, slot| match slot {
            None => values.extend(idx.label_values(name)),
            Some(slot) => {
                let v = interned_label(&idx.series[slot as usize].labels, name);
                if !v.is_empty() {
                    values.insert(v.to_owned());
                }
            }
        });
        self.store.handle.block_on(blocks).map_err(source_error)?;
        Ok(values.into_iter().collect())
    }

    fn series(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Result<Vec<Labels>, QueryError> {
        let mut all: BTreeSet<Labels> = self.head.series_matching(sets, mint, maxt).into_iter().collect();
        let blocks = self.store.block_labels(&self.tenant, sets, mint, maxt, |idx, slot| match slot {
            None => all.extend(idx.series.iter().map(|s| s.to_labels())),
            Some(slot) => {
                all.insert(idx.series[slot as usize].to_labels());
            }
        });
        self.store.handle.block_on(blocks).map_err(source_error)?;
        Ok(all.into_iter().collect())
    }

    fn metadata(&self, metric: Option<&str>, limit: Option<usize>) -> Vec<(String, Metadata)> {
        // Restored from the newest block on start, so the head has it all.
        self.head.metadata(metric, limit)
    }

    fn exemplars(
        &self,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesExemplars>, QueryError> {
        // Exemplars live in the head only.
        Ok(self.head.exemplars(sets, mint, maxt))
    }
}

impl TenantReaders for Arc<MetricsStore> {
    fn reader(&self, tenant: &Tenant) -> Arc<dyn MetricsReader> {
        Arc::new(self.view(tenant))
    }
}

#[cfg(test)]
#[path = "tsdb_tests.rs"]
mod tests;
