//! The trace store: a head of recent spans in memory, and immutable Parquet blocks on the object
//! store, listed per tenant by a [`Catalog`].
//!
//! Write path: each processor partition owns a [`PartitionWriter`]. It decodes every traces
//! envelope once, puts the spans in the shared head (searchable at once) and keeps them pending.
//! A flush (by age or span count) encodes one block per tenant, writes it, publishes it in the
//! catalog, and only then removes its spans from the head; the offset it reports as durable
//! moves past the flushed records only after that (invariant 2).
//!
//! Read path: queries read the head first, then the catalog, so a span being flushed is seen
//! at least once; duplicates (the same span in the head and a block, or in two blocks after
//! a crash replayed records a block already held) are removed by span id within a trace.
//!
//! The compactor ([`TraceStore::compact`]) deletes blocks older than the retention and merges
//! small blocks into larger ones, dropping duplicate spans.

pub mod block;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use arrow_array::{Array, BooleanArray, FixedSizeBinaryArray, RecordBatch};
use arrow_schema::ArrowError;
use bytes::Bytes;
use futures::{FutureExt, StreamExt, future::BoxFuture};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parquet::{
    arrow::{
        ParquetRecordBatchStreamBuilder, ProjectionMask,
        arrow_reader::{ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter},
        async_reader::AsyncFileReader,
    },
    bloom_filter::Sbbf,
    errors::ParquetError,
    file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader},
};
use pharos_core::{Envelope, PayloadFormat, Signal, Tenant};
use pharos_storage::{Catalog, CatalogError, ObjectStorage, StorageError, new_block_id};
use prost::Message;
use tracing::{error, info};

pub use block::{BlockError, ReadStats, Select, TraceBlockMeta};

use crate::model::{SpanData, SpanId, TraceId, spans_of_request};
use crate::query::Prefilter;

/// The catalog's signal name: blocks live under `traces/{tenant}/{block}/`.
pub const SIGNAL: &str = "traces";

/// How the trace store behaves.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A partition's pending spans are flushed into blocks at least this often.
    pub flush_interval: Duration,
    /// ...or as soon as this many spans are pending.
    pub max_block_spans: usize,
    /// Blocks whose newest span ended longer ago than this are deleted.
    pub retention: Duration,
    /// Blocks smaller than this are merged by the compactor.
    pub compaction_target_bytes: u64,
    /// A merge takes at most this many spans in: it bounds how long one merge runs and the
    /// inputs' encoded bytes it holds.
    pub compaction_max_spans: u64,
    /// A trace-by-id answer holds at most this many spans (and says it was truncated).
    pub max_trace_spans: usize,
    /// A search or tag listing reads at most this many spans, then fails with a clear error.
    pub max_search_spans: usize,
    /// How long retired block data stays readable after it leaves the catalog.
    pub deletion_delay: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(15),
            max_block_spans: 200_000,
            retention: Duration::from_secs(30 * 24 * 3600),
            compaction_target_bytes: 64 << 20,
            compaction_max_spans: 1_000_000,
            max_trace_spans: 100_000,
            max_search_spans: 10_000_000,
            deletion_delay: Duration::from_secs(120),
        }
    }
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A block is damaged or could not be written.
    #[error("block {block}: {source}")]
    Block {
        /// The block id.
        block: String,
        /// What went wrong.
        #[source]
        source: BlockError,
    },
    /// A search would read more spans than allowed.
    #[error("the query would read more than {limit} spans (traces.max_search_spans); narrow the time range")]
    TooManySpans {
        /// The limit.
        limit: usize,
    },
    /// A background task failed.
    #[error("task: {0}")]
    Task(String),
}

#[derive(Default)]
struct TenantHead {
    traces: HashMap<TraceId, Vec<Arc<SpanData>>>,
    spans: usize,
}

/// The trace store shared by writers, queries and the compactor.
pub struct TraceStore {
    catalog: Catalog<TraceBlockMeta>,
    /// Spans not yet in a block, per tenant and processor partition: a partition's flush of
    /// a tenant writes every span it holds there, so the flush drops the part whole.
    head: RwLock<HashMap<(Tenant, u32), TenantHead>>,
    options: StoreOptions,
    /// Parquet footers of blocks, by block id: a trace lookup then reads only the bloom
    /// filters and row groups it needs. Bounded by `MAX_CACHED_FOOTERS`.
    footers: std::sync::Mutex<HashMap<String, ArrowReaderMetadata>>,
    /// Trace-id bloom filters by (block id, row group), `None` for a row group without one.
    /// Bounded by `MAX_CACHED_BLOOMS` (a filter of a full row group is about 20 KiB).
    blooms: std::sync::Mutex<HashMap<(String, usize), BloomEntry>>,
}

/// A cached bloom filter: `None` when the row group has none.
type BloomEntry = Option<Arc<Sbbf>>;

/// The most bloom filters kept in memory.
const MAX_CACHED_BLOOMS: usize = 4_000;

/// The most block footers kept in memory (a footer is a few KiB).
const MAX_CACHED_FOOTERS: usize = 10_000;

/// One trace as read: its spans (duplicates removed, by start time) and whether it was cut.
#[derive(Debug, Clone, Default)]
pub struct TraceRead {
    /// The spans.
    pub spans: Vec<SpanData>,
    /// More spans exist than `max_trace_spans`.
    pub truncated: bool,
    /// Blocks read.
    pub blocks_read: usize,
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

impl TraceStore {
    /// Opens the store's catalog on `storage`.
    pub async fn open(storage: ObjectStorage, options: StoreOptions) -> Result<Arc<Self>, StoreError> {
        let catalog = Catalog::open(storage, SIGNAL, options.deletion_delay).await?;
        Ok(Arc::new(Self {
            catalog,
            head: RwLock::new(HashMap::new()),
            options,
            footers: std::sync::Mutex::new(HashMap::new()),
            blooms: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// The store's options.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The tenant's blocks, oldest first.
    pub fn blocks(&self, tenant: &Tenant) -> Vec<Arc<TraceBlockMeta>> {
        self.catalog.blocks(tenant)
    }

    /// Spans in the head, per tenant.
    pub fn head_spans(&self) -> Vec<(Tenant, usize)> {
        let mut out: HashMap<Tenant, usize> = HashMap::new();
        for ((tenant, _), part) in self.head.read().expect("head lock").iter() {
            *out.entry(tenant.clone()).or_default() += part.spans;
        }
        out.into_iter().collect()
    }

    /// Calls `f` with the tenant's head parts (one per processor partition with spans).
    fn with_head<R>(&self, tenant: &Tenant, f: impl FnOnce(&[&TenantHead]) -> R) -> R {
        let head = self.head.read().expect("head lock");
        let parts: Vec<&TenantHead> = head.iter().filter(|((t, _), _)| t == tenant).map(|(_, h)| h).collect();
        f(&parts)
    }

    fn head_insert(&self, tenant: &Tenant, partition: u32, spans: &[Arc<SpanData>]) {
        let mut head = self.head.write().expect("head lock");
        let head = head.entry((tenant.clone(), partition)).or_default();
        for span in spans {
            head.traces.entry(span.trace_id()).or_default().push(span.clone());
        }
        head.spans += spans.len();
    }

    /// Takes the partition's head part of the tenant out: its spans are in a block now.
    fn head_take(&self, tenant: &Tenant, partition: u32) -> Option<TenantHead> {
        self.head.write().expect("head lock").remove(&(tenant.clone(), partition))
    }

    async fn read_block(
        &self,
        tenant: &Tenant,
        meta: &TraceBlockMeta,
        select: Select,
    ) -> Result<(Vec<SpanData>, ReadStats), StoreError> {
        let bytes = self.block_data(tenant, meta).await?;
        let id = meta.id.clone();
        tokio::task::spawn_blocking(move || block::decode(bytes, select))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(|source| StoreError::Block { block: id, source })
    }

    /// Runs `f` on a blocking thread over the block's data object (read whole) and its cached
    /// footer.
    async fn with_block_data<T: Send + 'static>(
        &self,
        tenant: &Tenant,
        meta: &TraceBlockMeta,
        f: impl FnOnce(Bytes, ArrowReaderMetadata) -> Result<T, BlockError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let block = |source| StoreError::Block { block: meta.id.clone(), source };
        let footer = self.footer(tenant, meta).await.map_err(block)?;
        let data = self.block_data(tenant, meta).await?;
        tokio::task::spawn_blocking(move || f(data, footer))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(block)
    }

    /// A block's data object, read whole.
    async fn block_data(&self, tenant: &Tenant, meta: &TraceBlockMeta) -> Result<Bytes, StoreError> {
        Ok(self.catalog.storage().get(&self.catalog.object_path(tenant, &meta.id, block::DATA_FILE)).await?)
    }

    fn block_reader(&self, tenant: &Tenant, meta: &TraceBlockMeta) -> BlockReader {
        BlockReader {
            storage: self.catalog.storage().clone(),
            path: self.catalog.object_path(tenant, &meta.id, block::DATA_FILE),
            size: meta.size_bytes,
        }
    }

    /// The block's Parquet footer with its page index, cached.
    async fn footer(
        &self,
        tenant: &Tenant,
        meta: &TraceBlockMeta,
    ) -> Result<ArrowReaderMetadata, BlockError> {
        let cached = self.footers.lock().expect("footer cache").get(&meta.id).cloned();
        if let Some(footer) = cached {
            return Ok(footer);
        }
        let mut reader = self.block_reader(tenant, meta);
        let footer = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::default()).await?;
        self.cache_footer(&meta.id, footer.clone());
        Ok(footer)
    }

    /// The trace-id bloom filter of row group `rg` of block `id`, cached.
    async fn bloom(
        &self,
        id: &str,
        builder: &mut ParquetRecordBatchStreamBuilder<BlockReader>,
        rg: usize,
    ) -> Result<BloomEntry, BlockError> {
        let key = (id.to_string(), rg);
        if let Some(bloom) = self.blooms.lock().expect("bloom cache").get(&key).cloned() {
            return Ok(bloom);
        }
        let bloom = builder.get_row_group_column_bloom_filter(rg, 0).await?.map(Arc::new);
        self.cache_bloom(key, bloom.clone());
        Ok(bloom)
    }

    fn cache_bloom(&self, key: (String, usize), bloom: BloomEntry) {
        let mut cache = self.blooms.lock().expect("bloom cache");
        if cache.len() >= MAX_CACHED_BLOOMS {
            cache.clear();
        }
        cache.insert(key, bloom);
    }

    fn cache_footer(&self, id: &str, footer: ArrowReaderMetadata) {
        let mut cache = self.footers.lock().expect("footer cache");
        if cache.len() >= MAX_CACHED_FOOTERS {
            cache.clear();
        }
        cache.insert(id.to_string(), footer);
    }

    /// Loads the footer and bloom filters of every block into the caches, so that the first
    /// lookups after a start are as fast as the later ones. Logs its progress.
    pub async fn warm_caches(&self) -> Result<(), StoreError> {
        let tenants = self.catalog.tenants();
        let total: usize = tenants.iter().map(|t| self.catalog.blocks(t).len()).sum();
        let started = Instant::now();
        let mut done = 0usize;
        let mut last_log = Instant::now();
        for tenant in tenants {
            for meta in self.catalog.blocks(&tenant) {
                let footer = self
                    .footer(&tenant, &meta)
                    .await
                    .map_err(|source| StoreError::Block { block: meta.id.clone(), source })?;
                let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(
                    self.block_reader(&tenant, &meta),
                    footer,
                );
                for rg in 0..builder.metadata().num_row_groups() {
                    self.bloom(&meta.id, &mut builder, rg)
                        .await
                        .map_err(|source| StoreError::Block { block: meta.id.clone(), source })?;
                }
                done += 1;
                if last_log.elapsed() >= Duration::from_secs(5) {
                    info!(done, total, "loading trace block footers and bloom filters");
                    last_log = Instant::now();
                }
            }
        }
        info!(blocks = total, elapsed_ms = started.elapsed().as_millis() as u64, "trace block caches loaded");
        Ok(())
    }

    /// The spans of trace `id` in one block, with ranged reads: the footer (cached), then the
    /// bloom filters of the row groups whose trace-id range holds `id`, then those row groups.
    async fn read_trace_in_block(
        &self,
        tenant: &Tenant,
        meta: &TraceBlockMeta,
        id: TraceId,
    ) -> Result<Vec<SpanData>, BlockError> {
        let reader = self.block_reader(tenant, meta);
        let footer = self.footer(tenant, meta).await?;
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer);
        let metadata = builder.metadata().clone();
        let mut keep = Vec::new();
        for rg in 0..metadata.num_row_groups() {
            if !block::range_holds(&metadata, rg, &id) {
                continue;
            }
            let bloom = self.bloom(&meta.id, &mut builder, rg).await?;
            if bloom.is_some_and(|bloom| !bloom.check(&id[..])) {
                continue;
            }
            keep.push(rg);
        }
        if keep.is_empty() {
            return Ok(Vec::new());
        }
        // Decode the trace_id column first and only the rows that match from the other columns;
        // with the offset index, pages without such rows are not even read.
        let trace_ids = ProjectionMask::leaves(metadata.file_metadata().schema_descr(), [0]);
        let filter = ArrowPredicateFn::new(trace_ids, move |batch: RecordBatch| {
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(|| ArrowError::SchemaError("trace_id is not fixed-size binary".into()))?;
            Ok(BooleanArray::from_iter(column.iter().map(|v| Some(v == Some(&id[..])))))
        });
        let columns = ProjectionMask::roots(metadata.file_metadata().schema_descr(), 0..block::SPAN_COLUMNS);
        let mut stream = builder
            .with_row_groups(keep)
            .with_projection(columns)
            .with_row_filter(RowFilter::new(vec![Box::new(filter)]))
            .with_batch_size(8192)
            .build()?;
        let mut decoder = block::Decoder::default();
        let mut spans = Vec::new();
        while let Some(batch) = stream.next().await {
            decoder.decode_batch(&batch?, Select::Trace(id), &mut spans)?;
        }
        Ok(spans)
    }

    /// The spans of one trace, from the head and every block that may hold it, optionally
    /// only from blocks overlapping `range` (unix nanoseconds).
    pub async fn trace(
        &self,
        tenant: &Tenant,
        id: TraceId,
        range: Option<(u64, u64)>,
    ) -> Result<TraceRead, StoreError> {
        let mut spans: Vec<SpanData> = {
            self.with_head(tenant, |parts| {
                parts.iter().filter_map(|h| h.traces.get(&id)).flatten().map(|s| (**s).clone()).collect()
            })
        };
        // The blocks that may hold it, read at once.
        let candidates: Vec<Arc<TraceBlockMeta>> = self
            .catalog
            .blocks(tenant)
            .into_iter()
            .filter(|meta| meta.may_hold(&id) && range.is_none_or(|(start, end)| meta.overlaps(start, end)))
            .collect();
        let blocks_read = candidates.len();
        let found = futures::future::try_join_all(candidates.iter().map(|meta| async move {
            self.read_trace_in_block(tenant, meta, id)
                .await
                .map_err(|source| StoreError::Block { block: meta.id.clone(), source })
        }))
        .await?;
        spans.extend(found.into_iter().flatten());
        let mut spans = dedup_trace(spans);
        // With a time range, a trace none of whose spans overlaps it is not found, wherever
        // its spans are (head or blocks), as Tempo answers.
        if let Some((start, end)) = range
            && !spans.iter().any(|s| s.span.start_time_unix_nano <= end && s.span.end_time_unix_nano >= start)
        {
            spans.clear();
        }
        let truncated = spans.len() > self.options.max_trace_spans;
        spans.truncate(self.options.max_trace_spans);
        Ok(TraceRead { spans, truncated, blocks_read })
    }

    /// Every trace with spans in `start..=end` (unix nanoseconds), whole (as far as the blocks
    /// overlapping the range hold it), duplicates removed, spans by start time. Fails when
    /// more than `max_search_spans` spans would be read.
    pub async fn traces_in_range(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
    ) -> Result<Vec<Vec<SpanData>>, StoreError> {
        self.traces_in_range_as(tenant, start, end, Select::All).await
    }

    /// The traces with spans in `start..=end` that may match a query, whole (as in
    /// [`Self::traces_in_range`]), with the number of spans the search inspected.
    ///
    /// With a `prefilter`, each block overlapping the range is scanned on the columns the
    /// prefilter reads; only the traces with a span that passes (in a block or in the head)
    /// are then read whole, from the head and every overlapping block. Without one, every
    /// trace of the range is read. `light` reads only the dedicated columns of whole spans
    /// ([`is_light`]). Fails when more than `max_search_spans` spans would be read whole.
    pub async fn search_traces(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
        prefilter: Option<Arc<Prefilter>>,
        light: bool,
    ) -> Result<SearchRead, StoreError> {
        let select = if light { Select::Light } else { Select::All };
        let Some(prefilter) = prefilter else {
            let traces = self.traces_in_range_as(tenant, start, end, select).await?;
            let inspected_spans = traces.iter().map(Vec::len).sum();
            return Ok(SearchRead { traces, inspected_spans });
        };
        let limit = self.options.max_search_spans;
        let mut inspected_spans = 0usize;
        // Per span condition of the prefilter, the traces with a span passing it.
        let mut passing: Vec<HashSet<TraceId>> = vec![HashSet::new(); prefilter.leaves()];
        let mut by_trace: HashMap<TraceId, Vec<SpanData>> = HashMap::new();
        self.with_head(tenant, |parts| {
            for head in parts {
                inspected_spans += head.spans;
                for (id, spans) in &head.traces {
                    for span in spans {
                        for (set, pass) in passing.iter_mut().zip(prefilter.matches_span(span)) {
                            if pass {
                                set.insert(*id);
                            }
                        }
                    }
                }
            }
        });
        let blocks: Vec<Arc<TraceBlockMeta>> =
            self.catalog.blocks(tenant).into_iter().filter(|meta| meta.overlaps(start, end)).collect();
        for meta in &blocks {
            inspected_spans += meta.spans as usize;
            let (prefilter, exact) = (prefilter.clone(), meta.exact_columns());
            let found = self
                .with_block_data(tenant, meta, move |data, footer| {
                    block::candidates(data, Some(footer), &prefilter, exact)
                })
                .await?;
            for (set, found) in passing.iter_mut().zip(found) {
                set.extend(found);
            }
        }
        let candidates = prefilter.traces(&passing);
        drop(passing);
        if candidates.is_empty() {
            return Ok(SearchRead { traces: Vec::new(), inspected_spans });
        }
        let mut read = 0usize;
        self.with_head(tenant, |parts| {
            for head in parts {
                for id in &candidates {
                    if let Some(spans) = head.traces.get(id) {
                        read += spans.len();
                        by_trace.entry(*id).or_default().extend(spans.iter().map(|s| (**s).clone()));
                    }
                }
            }
        });
        let mut sorted: Vec<TraceId> = candidates.into_iter().collect();
        sorted.sort_unstable();
        let candidates = Arc::new(sorted);
        // Listed again after the head was read: spans flushed since are in a block now.
        let blocks: Vec<Arc<TraceBlockMeta>> =
            self.catalog.blocks(tenant).into_iter().filter(|meta| meta.overlaps(start, end)).collect();
        for meta in &blocks {
            if read > limit {
                return Err(StoreError::TooManySpans { limit });
            }
            let ids = candidates.clone();
            let spans = self
                .with_block_data(tenant, meta, move |data, footer| {
                    block::decode_traces(data, Some(footer), &ids, light)
                })
                .await?;
            read += spans.len();
            for span in spans {
                by_trace.entry(span.trace_id()).or_default().push(span);
            }
        }
        if read > limit {
            return Err(StoreError::TooManySpans { limit });
        }
        Ok(SearchRead { traces: whole_traces_in_range(by_trace, start, end), inspected_spans })
    }

    async fn traces_in_range_as(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
        select: Select,
    ) -> Result<Vec<Vec<SpanData>>, StoreError> {
        let limit = self.options.max_search_spans;
        let mut by_trace: HashMap<TraceId, Vec<SpanData>> = HashMap::new();
        let mut read = 0usize;
        self.with_head(tenant, |parts| {
            read += parts.iter().map(|h| h.spans).sum::<usize>();
            if read > limit {
                return Err(StoreError::TooManySpans { limit });
            }
            for head in parts {
                for (id, spans) in &head.traces {
                    by_trace.entry(*id).or_default().extend(spans.iter().map(|s| (**s).clone()));
                }
            }
            Ok(())
        })?;
        for meta in self.catalog.blocks(tenant) {
            if !meta.overlaps(start, end) {
                continue;
            }
            read += meta.spans as usize;
            if read > limit {
                return Err(StoreError::TooManySpans { limit });
            }
            for span in self.read_block(tenant, &meta, select).await?.0 {
                by_trace.entry(span.trace_id()).or_default().push(span);
            }
        }
        Ok(whole_traces_in_range(by_trace, start, end))
    }

    /// One compaction round for every tenant: delete blocks past the retention, then merge
    /// small blocks (at most `max_inputs` at a time) into one. Returns what it did.
    pub async fn compact(&self, max_inputs: usize) -> Result<CompactionReport, StoreError> {
        let mut report = CompactionReport::default();
        let horizon = now_nanos().saturating_sub(self.options.retention.as_nanos() as u64);
        for tenant in self.catalog.tenants() {
            let blocks = self.catalog.blocks(&tenant);
            let expired: Vec<String> =
                blocks.iter().filter(|b| b.max_end_ns < horizon).map(|b| b.id.clone()).collect();
            if !expired.is_empty() {
                info!(tenant = %tenant, blocks = expired.len(), "deleting trace blocks past the retention");
                self.catalog.retire(&tenant, &expired, &[block::DATA_FILE]).await?;
                self.forget_footers(&expired);
                report.expired += expired.len();
            }
            // The oldest small blocks, as many as fit in `compaction_max_spans`.
            let mut small: Vec<Arc<TraceBlockMeta>> = Vec::new();
            let mut spans_in = 0u64;
            for block in self.catalog.blocks(&tenant) {
                if small.len() >= max_inputs.max(2) {
                    break;
                }
                if block.size_bytes >= self.options.compaction_target_bytes
                    || spans_in + block.spans > self.options.compaction_max_spans
                {
                    continue;
                }
                spans_in += block.spans;
                small.push(block);
            }
            if small.len() < 2 {
                continue;
            }
            let started = Instant::now();
            let mut inputs = Vec::with_capacity(small.len());
            for meta in &small {
                let data = self.block_data(&tenant, meta).await?;
                inputs.push((data, (**meta).clone()));
            }
            let before: u64 = small.iter().map(|b| b.spans).sum();
            let level = small.iter().map(|b| b.level).max().unwrap_or(0) + 1;
            let id = new_block_id();
            let block_id = id.clone();
            // A streaming merge of the Parquet rows, off the async workers.
            let encoded = tokio::task::spawn_blocking(move || {
                let (bytes, meta) = block::merge(inputs, block_id, level)?;
                let (footer, blooms) = block::lookup_index(&bytes)?;
                Ok::<_, BlockError>(Encoded { bytes, meta, footer, blooms })
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(|source| StoreError::Block { block: id.clone(), source })?;
            let meta = self.publish_block(&tenant, encoded).await?;
            let inputs: Vec<String> = small.iter().map(|b| b.id.clone()).collect();
            self.catalog.retire(&tenant, &inputs, &[block::DATA_FILE]).await?;
            self.forget_footers(&inputs);
            info!(
                tenant = %tenant,
                inputs = inputs.len(),
                spans = meta.spans,
                duplicates_dropped = before - meta.spans,
                bytes = meta.size_bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "trace blocks compacted"
            );
            report.merged += inputs.len();
            report.written += 1;
        }
        Ok(report)
    }

    fn forget_footers(&self, ids: &[String]) {
        let mut cache = self.footers.lock().expect("footer cache");
        for id in ids {
            cache.remove(id);
        }
        self.blooms.lock().expect("bloom cache").retain(|(block, _), _| !ids.contains(block));
    }

    async fn write_block(
        &self,
        tenant: &Tenant,
        level: u32,
        spans: &mut Vec<Arc<SpanData>>,
    ) -> Result<Arc<TraceBlockMeta>, StoreError> {
        let id = new_block_id();
        let owned = std::mem::take(spans);
        let block_id = id.clone();
        let (owned, encoded) = tokio::task::spawn_blocking(move || {
            let encoded = encode_indexed(block_id, level, &owned);
            (owned, encoded)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        *spans = owned;
        let encoded = encoded.map_err(|source| StoreError::Block { block: id.clone(), source })?;
        self.publish_block(tenant, encoded).await
    }

    /// Writes an encoded block and publishes it in the catalog; its footer and bloom filters
    /// go into the caches first, so that the first lookups find them in memory.
    async fn publish_block(
        &self,
        tenant: &Tenant,
        encoded: Encoded,
    ) -> Result<Arc<TraceBlockMeta>, StoreError> {
        let Encoded { bytes, meta, footer, blooms } = encoded;
        self.cache_footer(&meta.id, footer);
        for (rg, bloom) in blooms.into_iter().enumerate() {
            self.cache_bloom((meta.id.clone(), rg), bloom.map(Arc::new));
        }
        self.catalog
            .storage()
            .put(&self.catalog.object_path(tenant, &meta.id, block::DATA_FILE), bytes)
            .await?;
        Ok(self.catalog.publish(tenant, meta).await?)
    }
}

/// A block encoded, with what trace lookups read of it before its rows.
struct Encoded {
    bytes: Bytes,
    meta: TraceBlockMeta,
    footer: ArrowReaderMetadata,
    blooms: Vec<Option<Sbbf>>,
}

fn encode_indexed(id: String, level: u32, spans: &[Arc<SpanData>]) -> Result<Encoded, BlockError> {
    let (bytes, meta) = block::encode(id, level, spans)?;
    let (footer, blooms) = block::lookup_index(&bytes)?;
    Ok(Encoded { bytes, meta, footer, blooms })
}

/// Ranged reads of one block's data object, for the async Parquet reader.
struct BlockReader {
    storage: ObjectStorage,
    path: String,
    size: u64,
}

impl AsyncFileReader for BlockReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.storage.get_range(&self.path, range).await.map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.storage
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let size = self.size;
        async move {
            // One read of the last 64 KiB usually holds the whole footer. The offset index lets
            // a lookup skip the pages that hold none of its rows.
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 << 10))
                .with_page_index_policy(PageIndexPolicy::Optional)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Whether `query` reads only what [`Select::Light`] gives: span ids, times, name, kind, status
/// code, trace-level intrinsics, and `resource.service.name`.
pub fn is_light(query: &crate::query::Query) -> bool {
    use crate::query::{AttributeScope, Intrinsic};
    query.attributes().iter().all(|a| a.scope == AttributeScope::Resource && a.name == "service.name")
        && query.intrinsics().iter().all(|i| {
            matches!(
                i,
                Intrinsic::Name
                    | Intrinsic::Status
                    | Intrinsic::Kind
                    | Intrinsic::Duration
                    | Intrinsic::SpanId
                    | Intrinsic::ParentId
                    | Intrinsic::ChildCount
                    | Intrinsic::RootServiceName
                    | Intrinsic::RootName
                    | Intrinsic::TraceDuration
                    | Intrinsic::TraceId
            )
        })
}

/// What a search read: the traces, and how many spans it inspected to find them.
#[derive(Debug, Default)]
pub struct SearchRead {
    /// The traces, whole, most recent first.
    pub traces: Vec<Vec<SpanData>>,
    /// Spans looked at: every span of the head and of the blocks overlapping the range.
    pub inspected_spans: usize,
}

/// The traces (duplicates removed, spans by start time) with a span overlapping
/// `start..=end`, most recent first as Tempo answers.
fn whole_traces_in_range(
    by_trace: HashMap<TraceId, Vec<SpanData>>,
    start: u64,
    end: u64,
) -> Vec<Vec<SpanData>> {
    let mut traces: Vec<Vec<SpanData>> = by_trace
        .into_values()
        .map(dedup_trace)
        .filter(|spans| {
            let first = spans.iter().map(|s| s.span.start_time_unix_nano).min().unwrap_or(0);
            let last = spans.iter().map(|s| s.span.end_time_unix_nano).max().unwrap_or(0);
            first <= end && last >= start
        })
        .collect();
    // Most recent first, as Tempo answers.
    traces.sort_by_key(|spans| std::cmp::Reverse(spans.first().map_or(0, |s| s.span.start_time_unix_nano)));
    traces
}

/// What one compaction round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Blocks deleted for being past the retention.
    pub expired: usize,
    /// Blocks merged into others.
    pub merged: usize,
    /// Blocks written by merging.
    pub written: usize,
}

/// Removes repeated spans (same span id) of one trace and orders the rest by start time.
fn dedup_trace(mut spans: Vec<SpanData>) -> Vec<SpanData> {
    let mut seen: HashSet<SpanId> = HashSet::with_capacity(spans.len());
    spans.retain(|s| seen.insert(s.span_id()));
    spans.sort_by_key(|s| (s.span.start_time_unix_nano, s.span_id()));
    spans
}

/// What writing one envelope did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Spans put in the head.
    pub spans: u64,
    /// Spans refused, by reason.
    pub rejected: Vec<(&'static str, u64)>,
}

/// One processor partition's writer into the trace store.
pub struct PartitionWriter {
    store: Arc<TraceStore>,
    partition: u32,
    pending: HashMap<Tenant, Vec<Arc<SpanData>>>,
    pending_spans: usize,
    /// The offset of the first record with pending spans.
    first_pending: Option<u64>,
    pending_since: Option<Instant>,
}

/// What a flush wrote.
#[derive(Debug, Clone, Default)]
pub struct FlushReport {
    /// Blocks written.
    pub blocks: usize,
    /// Spans written.
    pub spans: usize,
    /// Bytes written.
    pub bytes: u64,
}

impl PartitionWriter {
    /// A writer for `partition` of `store`.
    pub fn new(store: Arc<TraceStore>, partition: u32) -> Self {
        Self {
            store,
            partition,
            pending: HashMap::new(),
            pending_spans: 0,
            first_pending: None,
            pending_since: None,
        }
    }

    /// Decodes a traces envelope and puts its spans in the head; other signals are ignored.
    pub fn write(&mut self, offset: u64, envelope: &Envelope) -> WriteStats {
        let mut stats = WriteStats::default();
        if envelope.signal != Signal::Traces {
            return stats;
        }
        let request = match envelope.format {
            PayloadFormat::Otlp => ExportTraceServiceRequest::decode(envelope.payload.as_ref()),
            _ => {
                stats.rejected.push(("unsupported_format", u64::from(envelope.items)));
                return stats;
            }
        };
        match request {
            Ok(request) => self.write_request(offset, &envelope.tenant, request),
            Err(e) => {
                error!(partition = self.partition, offset, error = %e, "undecodable traces record, skipping it");
                stats.rejected.push(("undecodable", u64::from(envelope.items)));
                stats
            }
        }
    }

    /// Puts the spans of a decoded request (the processing pipeline's output) in the head.
    /// `offset` is the queue offset of the oldest record the spans came from.
    pub fn write_request(
        &mut self,
        offset: u64,
        tenant: &Tenant,
        request: ExportTraceServiceRequest,
    ) -> WriteStats {
        let mut stats = WriteStats::default();
        let spans: Vec<Arc<SpanData>> = spans_of_request(request).into_iter().map(Arc::new).collect();
        if spans.is_empty() {
            return stats;
        }
        stats.spans = spans.len() as u64;
        self.store.head_insert(tenant, self.partition, &spans);
        self.pending_spans += spans.len();
        self.pending.entry(tenant.clone()).or_default().extend(spans);
        // Pipelines release held data late: its offset can be below what was written since.
        self.first_pending = Some(self.first_pending.map_or(offset, |first| first.min(offset)));
        self.pending_since.get_or_insert_with(Instant::now);
        stats
    }

    /// Whether a flush is due: enough spans pending, pending for long enough, or closing.
    pub fn flush_due(&self, closing: bool) -> bool {
        self.pending_spans > 0
            && (closing
                || self.pending_spans >= self.store.options.max_block_spans
                || self.pending_since.is_some_and(|t| t.elapsed() >= self.store.options.flush_interval))
    }

    /// Writes every pending span into blocks (one per tenant), publishes them, and removes
    /// them from the head.
    pub async fn flush(&mut self) -> Result<FlushReport, StoreError> {
        let mut report = FlushReport::default();
        let tenants: Vec<Tenant> = self.pending.keys().cloned().collect();
        for tenant in tenants {
            let mut spans = self.pending.remove(&tenant).unwrap_or_default();
            match self.store.write_block(&tenant, 0, &mut spans).await {
                Ok(meta) => {
                    report.blocks += 1;
                    report.spans += spans.len();
                    report.bytes += meta.size_bytes;
                    self.pending_spans -= spans.len();
                    let part = self.store.head_take(&tenant, self.partition);
                    debug_assert_eq!(part.as_ref().map_or(0, |p| p.spans), spans.len());
                    // Freeing many spans takes a while: not on an async worker.
                    tokio::task::spawn_blocking(move || drop((part, spans)));
                }
                Err(e) => {
                    // Keep them pending: the offset stays behind them and the next flush retries.
                    self.pending.insert(tenant, spans);
                    return Err(e);
                }
            }
        }
        self.first_pending = None;
        self.pending_since = None;
        Ok(report)
    }

    /// Every record below the returned offset is in a durable block (or held no spans), given
    /// that `next` is the offset after the last record written.
    pub fn durable_below(&self, next: u64) -> u64 {
        self.first_pending.unwrap_or(next)
    }
}

#[cfg(test)]
mod tests;
