//! The log store: per tenant, a head in memory (one part per processor partition) and
//! immutable blocks on the object store, listed in a catalog.
//!
//! A processor's [`PartitionWriter`] decodes each logs record once and appends its entries to
//! its part of the head, where queries see them at once. Every `flush_interval` (or at
//! `max_block_entries`) it writes the part as one block per tenant, publishes it, drops the
//! part, and only then reports the records' offset durable. While a part is being written it
//! stays readable, so an entry is seen at least once; a query drops repeats (the same stream,
//! time and line, as Loki does), which also absorbs what a replay after a crash writes again.
//! The compactor deletes blocks past the retention and merges small blocks.

pub mod block;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use pharos_core::{Envelope, Tenant};
use pharos_storage::{Catalog, CatalogError, ObjectStorage, StorageError, new_block_id};
use tracing::{error, info};

use crate::decode::{self, DecodedStream, StreamMapping};
use futures::StreamExt;

use crate::model::{Entry, Labels, LogSource, Matchers, Selected, Selection, SourceError, StreamEntries};
use crate::query::Matcher;
use block::{BlockError, LogBlockMeta, StoredEntry};

/// The catalog's signal directory.
pub const SIGNAL_DIR: &str = "logs";

/// The log store's options.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long entries stay only in the head before a block is written.
    pub flush_interval: Duration,
    /// A block is written as soon as a partition holds this many entries.
    pub max_block_entries: usize,
    /// Blocks whose newest entry is older are deleted.
    pub retention: Duration,
    /// How long retired blocks' data stays readable for queries that listed them.
    pub deletion_delay: Duration,
    /// Blocks smaller than this (raw bytes) are merged by the compactor...
    pub compaction_small_bytes: u64,
    /// ...into blocks of at most this many raw bytes.
    pub compaction_max_bytes: u64,
    /// Which OTLP resource attributes become stream labels.
    pub mapping: StreamMapping,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(10),
            max_block_entries: 500_000,
            retention: Duration::from_secs(30 * 24 * 3600),
            deletion_delay: Duration::from_secs(60),
            compaction_small_bytes: 32 << 20,
            compaction_max_bytes: 256 << 20,
            mapping: StreamMapping::default(),
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
    #[error("log block {block}: {source}")]
    Block { block: String, source: BlockError },
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("background task failed: {0}")]
    Task(String),
}

/// One processor partition's part of a tenant's head.
#[derive(Debug, Default)]
struct HeadPart {
    /// Entries per stream, sorted by time.
    streams: HashMap<Arc<Labels>, Vec<StoredEntry>>,
    /// Streams that took an entry older than their newest: sorted before they are read.
    unsorted: HashSet<Arc<Labels>>,
    entries: usize,
}

impl HeadPart {
    fn insert(&mut self, stream: DecodedStream) {
        let n = stream.entries.len();
        let entries = self.streams.entry(stream.labels.clone()).or_default();
        // Appended as they come (an insert in place moves the stream's tail each time);
        // sorted once, when the stream is next read.
        let mut newest = entries.last().map_or(i64::MIN, |e| e.timestamp);
        let mut in_order = true;
        for entry in stream.entries {
            in_order &= entry.timestamp >= newest;
            newest = newest.max(entry.timestamp);
            entries.push(entry);
        }
        if !in_order {
            self.unsorted.insert(stream.labels);
        }
        self.entries += n;
    }

    /// Sorts the streams that need it by time (stable: equal times keep their arrival order).
    fn sort(&mut self) {
        for labels in self.unsorted.drain() {
            if let Some(entries) = self.streams.get_mut(&labels) {
                entries.sort_by_key(|e| e.timestamp);
            }
        }
    }

    fn streams(&self) -> impl Iterator<Item = (&Labels, &[StoredEntry])> {
        self.streams.iter().map(|(labels, entries)| (&**labels, entries.as_slice()))
    }

    fn snapshot(&self) -> Vec<DecodedStream> {
        self.streams
            .iter()
            .map(|(labels, entries)| DecodedStream { labels: labels.clone(), entries: entries.clone() })
            .collect()
    }
}

/// A part and, while it is being written as a block, the part before it.
#[derive(Debug, Default)]
struct Slot {
    live: HeadPart,
    flushing: Option<Arc<HeadPart>>,
}

/// What the index answers from: the streams a tenant has in a time range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub streams: u64,
    pub chunks: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// The log store.
pub struct LogStore {
    catalog: Catalog<LogBlockMeta>,
    heads: RwLock<HashMap<(Tenant, u32), Slot>>,
    /// The store's options.
    pub options: StoreOptions,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("options", &self.options).finish_non_exhaustive()
    }
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i64
}

/// Sorts entries by time then line and drops repeats of the same time and line.
fn sort_dedup(entries: &mut Vec<Entry>) {
    entries.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then_with(|| a.line.cmp(&b.line)));
    entries.dedup_by(|a, b| a.timestamp == b.timestamp && a.line == b.line);
}

/// Streams merged by labels, each sorted and without repeats, in label order.
fn merge(parts: impl IntoIterator<Item = StreamEntries>) -> Vec<StreamEntries> {
    let mut by: BTreeMap<Arc<Labels>, Vec<Entry>> = BTreeMap::new();
    for part in parts {
        by.entry(part.labels).or_default().extend(part.entries);
    }
    by.into_iter()
        .map(|(labels, mut entries)| {
            sort_dedup(&mut entries);
            StreamEntries { labels, entries }
        })
        .collect()
}

fn in_range(entries: &[StoredEntry], start: i64, end: i64) -> &[StoredEntry] {
    let from = entries.partition_point(|e| e.timestamp < start);
    let to = entries.partition_point(|e| e.timestamp < end);
    &entries[from..to.max(from)]
}

impl LogStore {
    /// Opens the catalog of log blocks on `storage`.
    pub async fn open(storage: ObjectStorage, options: StoreOptions) -> Result<Arc<Self>, StoreError> {
        let catalog = Catalog::open(storage, SIGNAL_DIR, options.deletion_delay).await?;
        Ok(Arc::new(Self { catalog, heads: RwLock::new(HashMap::new()), options }))
    }

    fn with_heads<R>(&self, tenant: &Tenant, mut f: impl FnMut(&HeadPart) -> R) -> Vec<R> {
        let mut out = Vec::new();
        let mut read = |slot: &Slot| {
            out.push(f(&slot.live));
            if let Some(flushing) = &slot.flushing {
                out.push(f(flushing));
            }
        };
        {
            let heads = self.heads.read().expect("log heads lock");
            if !heads.iter().any(|((t, _), slot)| t == tenant && !slot.live.unsorted.is_empty()) {
                heads.iter().filter(|((t, _), _)| t == tenant).for_each(|(_, slot)| read(slot));
                return out;
            }
        }
        // Something arrived out of order: sort it, and read under the same (write) lock so
        // that no writer unsorts it in between.
        let mut heads = self.heads.write().expect("log heads lock");
        for ((t, _), slot) in heads.iter_mut() {
            if t == tenant {
                slot.live.sort();
                read(slot);
            }
        }
        out
    }

    /// The blocks of `tenant` overlapping `[start, end)`.
    fn blocks(&self, tenant: &Tenant, start: i64, end: i64) -> Vec<Arc<LogBlockMeta>> {
        self.catalog.blocks(tenant).into_iter().filter(|b| b.max_time >= start && b.min_time < end).collect()
    }

    /// Every tenant's blocks, for tests and tools.
    pub fn block_metas(&self, tenant: &Tenant) -> Vec<Arc<LogBlockMeta>> {
        self.catalog.blocks(tenant)
    }

    /// The entries of `selection` (its streams, time range and line test), from the head and
    /// the blocks, merged per stream without repeats, streams in label order. Blocks are read
    /// a few at once (one per core), each on a blocking thread. Reading stops with an error
    /// once more than `max_bytes` of lines would be scanned.
    pub async fn select(
        &self,
        tenant: &Tenant,
        selection: &Selection<'_>,
        max_bytes: u64,
    ) -> Result<Selected, StoreError> {
        let (start, end) = (selection.start, selection.end);
        let compiled = Matchers::compile(selection.matchers)?;
        let mut parts: Vec<StreamEntries> = Vec::new();
        let (mut lines, mut bytes) = (0u64, 0u64);
        let over = || {
            SourceError(
                format!(
                    "the query would read more than {max_bytes} bytes of log lines (limit logs.max_query_bytes); narrow the selector or the time range"
                ),
                pharos_core::ErrorCode::TooLarge,
            )
        };
        for found in self.with_heads(tenant, |part| {
            let (mut lines, mut bytes) = (0u64, 0u64);
            let streams = part
                .streams
                .iter()
                .filter(|(labels, _)| compiled.matches(labels))
                .filter_map(|(labels, entries)| {
                    let mut kept = Vec::new();
                    for e in in_range(entries, start, end) {
                        lines += 1;
                        bytes += e.line.len() as u64;
                        // A head entry's metadata was encoded by this process: it decodes.
                        if selection.keeps(&e.line)
                            && let Ok(entry) =
                                e.to_entry_with(selection.metadata.as_deref(), selection.lines_needed)
                        {
                            kept.push(entry);
                        }
                    }
                    (!kept.is_empty()).then(|| StreamEntries { labels: labels.clone(), entries: kept })
                })
                .collect::<Vec<_>>();
            (streams, lines, bytes)
        }) {
            parts.extend(found.0);
            lines += found.1;
            bytes += found.2;
        }
        if bytes > max_bytes {
            return Err(over().into());
        }
        let mut reads = Vec::new();
        let mut planned = bytes;
        for meta in self.blocks(tenant, start, end) {
            let wanted: Vec<usize> = meta
                .streams
                .iter()
                .enumerate()
                .filter(|(_, s)| s.max_time >= start && s.min_time < end && compiled.matches(&s.labels))
                .map(|(i, _)| i)
                .collect();
            if wanted.is_empty() {
                continue;
            }
            planned += wanted.iter().map(|&i| meta.streams[i].bytes).sum::<u64>();
            if planned > max_bytes {
                return Err(over().into());
            }
            reads.push((meta, wanted));
        }
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut scans = futures::stream::iter(reads.into_iter().map(|(meta, wanted)| {
            let lines = selection.lines.clone();
            let only = selection.metadata.clone();
            let lines_needed = selection.lines_needed;
            async move {
                let path = self.catalog.object_path(tenant, &meta.id, block::DATA_FILE);
                let data = match self.catalog.storage().get(&path).await {
                    Ok(data) => data,
                    // Retired and deleted since it was listed: its entries are in the block
                    // that replaced it, which a later listing finds.
                    Err(StorageError::NotFound { .. }) => return Ok(block::Scan::default()),
                    Err(e) => return Err(StoreError::from(e)),
                };
                let read_meta = meta.clone();
                tokio::task::spawn_blocking(move || {
                    let keep = block::Keep { start, end, lines, only_metadata: only, lines_needed };
                    block::read_streams(data, &read_meta, &wanted, keep)
                })
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
                .map_err(|source| StoreError::Block { block: meta.id.clone(), source })
            }
        }))
        .buffer_unordered(parallel);
        while let Some(scan) = scans.next().await {
            let scan = scan?;
            lines += scan.lines;
            bytes += scan.bytes;
            parts.extend(scan.streams);
        }
        Ok(Selected { streams: merge(parts), lines_scanned: lines, bytes_scanned: bytes })
    }

    /// Every stream of `tenant` with an entry in `[start, end)` matching any of the matcher
    /// sets (all streams when `selectors` is empty), with what the head and blocks hold of it.
    pub fn streams(
        &self,
        tenant: &Tenant,
        selectors: &[Vec<Matcher>],
        start: i64,
        end: i64,
    ) -> Result<BTreeMap<Labels, StreamStats>, StoreError> {
        let compiled: Vec<Matchers> =
            selectors.iter().map(|m| Matchers::compile(m)).collect::<Result<_, _>>()?;
        let wanted = |labels: &Labels| compiled.is_empty() || compiled.iter().any(|m| m.matches(labels));
        let mut out: BTreeMap<Labels, StreamStats> = BTreeMap::new();
        for found in self.with_heads(tenant, |part| {
            part.streams
                .iter()
                .filter(|(labels, _)| wanted(labels))
                .filter_map(|(labels, entries)| {
                    let entries = in_range(entries, start, end);
                    (!entries.is_empty()).then(|| {
                        (
                            (**labels).clone(),
                            entries.len() as u64,
                            entries.iter().map(|e| e.line.len() as u64).sum(),
                        )
                    })
                })
                .collect::<Vec<(Labels, u64, u64)>>()
        }) {
            for (labels, entries, bytes) in found {
                let stats = out.entry(labels).or_default();
                stats.chunks += 1;
                stats.entries += entries;
                stats.bytes += bytes;
            }
        }
        for meta in self.blocks(tenant, start, end) {
            for s in &meta.streams {
                if s.max_time >= start && s.min_time < end && wanted(&s.labels) {
                    let stats = out.entry(s.labels.clone()).or_default();
                    stats.chunks += 1;
                    stats.entries += s.rows;
                    stats.bytes += s.bytes;
                }
            }
        }
        for stats in out.values_mut() {
            stats.streams = 1;
        }
        Ok(out)
    }

    /// Label names of the streams in `[start, end)`, sorted.
    pub fn label_names(&self, tenant: &Tenant, start: i64, end: i64) -> Result<BTreeSet<String>, StoreError> {
        Ok(self
            .streams(tenant, &[], start, end)?
            .keys()
            .flat_map(|l| l.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>())
            .collect())
    }

    /// Values of label `name` on the streams in `[start, end)` matching `matchers`, sorted.
    pub fn label_values(
        &self,
        tenant: &Tenant,
        name: &str,
        matchers: Option<&[Matcher]>,
        start: i64,
        end: i64,
    ) -> Result<BTreeSet<String>, StoreError> {
        let selectors: Vec<Vec<Matcher>> = matchers.map(|m| vec![m.to_vec()]).unwrap_or_default();
        Ok(self
            .streams(tenant, &selectors, start, end)?
            .keys()
            .filter_map(|l| l.get(name).map(str::to_string))
            .collect())
    }

    fn insert(&self, tenant: &Tenant, partition: u32, streams: Vec<DecodedStream>) {
        let mut heads = self.heads.write().expect("log heads lock");
        let slot = heads.entry((tenant.clone(), partition)).or_default();
        for stream in streams {
            slot.live.insert(stream);
        }
    }

    /// Moves a partition's live part to `flushing` and returns it.
    fn start_flush(&self, tenant: &Tenant, partition: u32) -> Option<Arc<HeadPart>> {
        let mut heads = self.heads.write().expect("log heads lock");
        let slot = heads.get_mut(&(tenant.clone(), partition))?;
        if slot.live.entries == 0 {
            return None;
        }
        let mut part = std::mem::take(&mut slot.live);
        part.sort();
        let part = Arc::new(part);
        slot.flushing = Some(part.clone());
        Some(part)
    }

    /// Ends a flush: on success the flushing part goes; on failure it returns to the live part.
    fn end_flush(&self, tenant: &Tenant, partition: u32, written: bool) {
        let mut heads = self.heads.write().expect("log heads lock");
        let Some(slot) = heads.get_mut(&(tenant.clone(), partition)) else { return };
        if let Some(part) = slot.flushing.take()
            && !written
        {
            for stream in part.snapshot() {
                slot.live.insert(stream);
            }
        }
        if slot.live.entries == 0 && slot.flushing.is_none() {
            heads.remove(&(tenant.clone(), partition));
        }
    }

    /// Encodes a block on a blocking thread (`encode` is given the new block's id), writes
    /// and publishes it.
    async fn write_block(
        &self,
        tenant: &Tenant,
        encode: impl FnOnce(String) -> Result<(bytes::Bytes, LogBlockMeta), BlockError> + Send + 'static,
    ) -> Result<Arc<LogBlockMeta>, StoreError> {
        let id = new_block_id();
        let block_id = id.clone();
        let (bytes, meta) = tokio::task::spawn_blocking(move || encode(block_id))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(|source| StoreError::Block { block: id.clone(), source })?;
        self.catalog
            .storage()
            .put(&self.catalog.object_path(tenant, &meta.id, block::DATA_FILE), bytes)
            .await?;
        Ok(self.catalog.publish(tenant, meta).await?)
    }

    /// One compaction round: deletes blocks past the retention, then merges runs of small
    /// blocks. Returns (blocks deleted, blocks merged).
    pub async fn compact(&self) -> Result<(usize, usize), StoreError> {
        let cutoff = now_nanos() - self.options.retention.as_nanos() as i64;
        let (mut deleted, mut merged) = (0, 0);
        for tenant in self.catalog.tenants() {
            let expired: Vec<String> = self
                .catalog
                .blocks(&tenant)
                .iter()
                .filter(|b| b.max_time < cutoff)
                .map(|b| b.id.clone())
                .collect();
            if !expired.is_empty() {
                self.catalog.retire(&tenant, &expired, &[block::DATA_FILE]).await?;
                info!(tenant = %tenant, blocks = expired.len(), "log blocks past retention deleted");
                deleted += expired.len();
            }
            loop {
                let small: Vec<Arc<LogBlockMeta>> = self
                    .catalog
                    .blocks(&tenant)
                    .into_iter()
                    .filter(|b| b.raw_bytes < self.options.compaction_small_bytes)
                    .collect();
                let mut run = Vec::new();
                let mut raw = 0u64;
                for b in small {
                    if raw + b.raw_bytes > self.options.compaction_max_bytes && run.len() >= 2 {
                        break;
                    }
                    raw += b.raw_bytes;
                    run.push(b);
                }
                if run.len() < 2 {
                    break;
                }
                let started = Instant::now();
                // The entries as stored (shared pairs stay shared), merged per stream.
                let mut streams: BTreeMap<Arc<Labels>, Vec<StoredEntry>> = BTreeMap::new();
                for meta in &run {
                    let path = self.catalog.object_path(&tenant, &meta.id, block::DATA_FILE);
                    let data = self.catalog.storage().get(&path).await?;
                    let read = tokio::task::spawn_blocking(move || block::read_stored(data))
                        .await
                        .map_err(|e| StoreError::Task(e.to_string()))?
                        .map_err(|source| StoreError::Block { block: meta.id.clone(), source })?;
                    for (stream, entries) in read {
                        let labels = meta.streams.get(stream as usize).ok_or_else(|| StoreError::Block {
                            block: meta.id.clone(),
                            source: BlockError::Corrupt(format!("row of unknown stream {stream}")),
                        })?;
                        streams.entry(Arc::new(labels.labels.clone())).or_default().extend(entries);
                    }
                }
                let level = run.iter().map(|b| b.level).max().unwrap_or(0) + 1;
                let out = self
                    .write_block(&tenant, move |id| {
                        for entries in streams.values_mut() {
                            entries.sort_by(|a, b| {
                                a.timestamp.cmp(&b.timestamp).then_with(|| a.line.cmp(&b.line))
                            });
                            entries.dedup_by(|a, b| a.timestamp == b.timestamp && a.line == b.line);
                        }
                        block::encode(id, level, streams.iter().map(|(l, e)| (&**l, e.as_slice())))
                    })
                    .await?;
                let ids: Vec<String> = run.iter().map(|b| b.id.clone()).collect();
                self.catalog.retire(&tenant, &ids, &[block::DATA_FILE]).await?;
                info!(
                    tenant = %tenant,
                    inputs = ids.len(),
                    entries = out.entries,
                    bytes = out.size_bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "log blocks merged"
                );
                merged += ids.len();
            }
        }
        Ok((deleted, merged))
    }
}

/// A synchronous [`LogSource`] over the store for one tenant, for the LogQL engine running on
/// a blocking thread: each `select` waits for the store on the runtime `handle`.
pub struct StoreSource {
    store: Arc<LogStore>,
    tenant: Tenant,
    handle: tokio::runtime::Handle,
    max_bytes: u64,
}

impl StoreSource {
    /// Call from a blocking thread (`spawn_blocking`), never from an async task.
    pub fn new(store: Arc<LogStore>, tenant: Tenant, handle: tokio::runtime::Handle, max_bytes: u64) -> Self {
        Self { store, tenant, handle, max_bytes }
    }
}

impl LogSource for StoreSource {
    fn select(&self, selection: &Selection<'_>) -> Result<Selected, SourceError> {
        self.handle.block_on(self.store.select(&self.tenant, selection, self.max_bytes)).map_err(
            |e| match e {
                StoreError::Source(e) => e,
                other => SourceError(other.to_string(), pharos_core::ErrorCode::Unavailable),
            },
        )
    }
}

/// What a write put in the head.
#[derive(Debug, Clone, Default)]
pub struct WriteStats {
    pub entries: u64,
    /// Entries refused, by reason.
    pub rejected: Vec<(&'static str, u64)>,
}

/// What a flush wrote.
#[derive(Debug, Clone, Default)]
pub struct FlushReport {
    pub blocks: usize,
    pub entries: u64,
    pub bytes: u64,
}

/// One processor partition's writer into the log store.
pub struct PartitionWriter {
    store: Arc<LogStore>,
    partition: u32,
    tenants: BTreeSet<Tenant>,
    pending: usize,
    first_pending: Option<u64>,
    pending_since: Option<Instant>,
}

impl PartitionWriter {
    pub fn new(store: Arc<LogStore>, partition: u32) -> Self {
        Self {
            store,
            partition,
            tenants: BTreeSet::new(),
            pending: 0,
            first_pending: None,
            pending_since: None,
        }
    }

    /// Decodes a logs envelope and puts its entries in the head; other signals are ignored.
    pub fn write(&mut self, offset: u64, envelope: &Envelope) -> WriteStats {
        let mut stats = WriteStats::default();
        let streams = match decode::decode(envelope, &self.store.options.mapping) {
            Ok(streams) => streams,
            Err(e) => {
                error!(partition = self.partition, offset, error = %e, "undecodable logs record, skipping it");
                stats.rejected.push(("undecodable", u64::from(envelope.items)));
                return stats;
            }
        };
        self.insert(offset, &envelope.tenant, streams, stats)
    }

    /// Puts the records of a decoded OTLP request (the processing pipeline's output) in the
    /// head. `offset` is the queue offset of the oldest record they came from.
    pub fn write_request(
        &mut self,
        offset: u64,
        tenant: &Tenant,
        request: opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
    ) -> WriteStats {
        let streams = decode::otlp(request, &self.store.options.mapping);
        self.insert(offset, tenant, streams, WriteStats::default())
    }

    fn insert(
        &mut self,
        offset: u64,
        tenant: &Tenant,
        streams: Vec<DecodedStream>,
        mut stats: WriteStats,
    ) -> WriteStats {
        let n: usize = streams.iter().map(|s| s.entries.len()).sum();
        if n == 0 {
            return stats;
        }
        stats.entries = n as u64;
        self.store.insert(tenant, self.partition, streams);
        self.pending += n;
        self.tenants.insert(tenant.clone());
        // Pipelines release held data late: its offset can be below what was written since.
        self.first_pending = Some(self.first_pending.map_or(offset, |first| first.min(offset)));
        self.pending_since.get_or_insert_with(Instant::now);
        stats
    }

    /// Whether a flush is due: enough entries pending, pending for long enough, or closing.
    pub fn flush_due(&self, closing: bool) -> bool {
        self.pending > 0
            && (closing
                || self.pending >= self.store.options.max_block_entries
                || self.pending_since.is_some_and(|t| t.elapsed() >= self.store.options.flush_interval))
    }

    /// Writes every pending entry into blocks (one per tenant) and publishes them.
    pub async fn flush(&mut self) -> Result<FlushReport, StoreError> {
        let mut report = FlushReport::default();
        while let Some(tenant) = self.tenants.first().cloned() {
            if let Some(part) = self.store.start_flush(&tenant, self.partition) {
                match self.store.write_block(&tenant, move |id| block::encode(id, 0, part.streams())).await {
                    Ok(meta) => {
                        report.blocks += 1;
                        report.entries += meta.entries;
                        report.bytes += meta.size_bytes;
                        self.store.end_flush(&tenant, self.partition, true);
                    }
                    Err(e) => {
                        // Back into the head: the offset stays behind them and the next flush
                        // retries.
                        self.store.end_flush(&tenant, self.partition, false);
                        return Err(e);
                    }
                }
            }
            self.tenants.remove(&tenant);
        }
        self.pending = 0;
        self.first_pending = None;
        self.pending_since = None;
        Ok(report)
    }

    /// Every record below the returned offset is in a durable block (or held no entries),
    /// given that `next` is the offset after the last record written.
    pub fn durable_below(&self, next: u64) -> u64 {
        self.first_pending.unwrap_or(next)
    }
}

#[cfg(test)]
mod tests;
