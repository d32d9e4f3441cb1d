//! The TSDB: recent samples of each tenant in memory (the head), older ones in blocks on the
//! object store ([`MetricsStore`]).
//!
//! A [`Head`] holds a tenant's series: labels interned and indexed (name → value → sorted
//! postings), samples in Gorilla-compressed [`XorChunk`]s of up to 120 samples, a small
//! per-series buffer for out-of-order samples within a configurable window, metadata per
//! metric name and a bounded ring of exemplars per series. [`Heads`] keeps one head per
//! tenant. A head is a [`SeriesSource`](crate::query::SeriesSource), so the PromQL engine
//! runs on it directly.

mod block;
mod chunk;
mod codec;
mod error;
mod exemplar;
mod head;
mod index;
mod metadata;
mod packed;
mod part;
mod series;
mod tsdb;
mod writer;

pub use block::{
    BLOCK_VERSION, BlockError, INDEX_FILE, INDEX_MAGIC, MAX_INDEX_BYTES, MetricsBlockMeta, SEGMENT_MAGIC,
    segment_file,
};
pub use chunk::{ChunkError, ChunkIter, SAMPLES_PER_CHUNK, XorChunk};
pub use error::AppendError;
pub use exemplar::{EXEMPLAR_MAX_LABEL_CHARS, Exemplar, SeriesExemplars};
pub use head::{AppendOutcome, Head, HeadOptions, Heads};
pub use index::{series_hash, series_hash_of};
pub use metadata::{Metadata, MetricType};
pub use part::{PART_MAGIC, Part, PartError, PendingPart};
pub use tsdb::{CompactReport, CutReport, MetricsStore, SIGNAL_DIR, StoreError, StoreOptions, TenantView};
pub use writer::{
    Batch, Flush, LoadReport, OtlpDecoder, PartStore, PartStoreError, PartitionWriter, WriteStats,
};
