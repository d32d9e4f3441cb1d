//! The trace block format: one Parquet file of spans, rows sorted by trace id then start time.
//!
//! Columns (format version 1, see `docs/formats/trace-blocks.md`):
//!
//! | column | type | holds |
//! | --- | --- | --- |
//! | `trace_id` | fixed 16 bytes | bloom filter, row-group min/max |
//! | `span_id` | fixed 8 bytes | |
//! | `parent_span_id` | binary | empty for a root span |
//! | `start_unix_nano`, `duration_nanos` | u64 | |
//! | `name`, `service_name` | string | dedicated: the span name and the resource's `service.name` |
//! | `kind`, `status_code` | i32 | dedicated |
//! | `resource` | binary | the OTLP `ResourceSpans` without spans (resource, schema URL): dictionary-encoded |
//! | `scope` | binary | the OTLP `ScopeSpans` without spans (scope, schema URL): dictionary-encoded |
//! | `span` | binary | the OTLP `Span` less the fields in columns above: attributes, events, links, trace state, flags, status message, dropped counts |
//! | `span.http.request.method`, … ([`DEDICATED_ATTRIBUTES`]) | string or i64, nullable | dedicated: the span attribute's value, null when the span has none (version 2) |
//!
//! The dedicated attribute columns repeat values that the `span` column also holds: they are
//! there so that searches read a narrow column instead of every span's attributes. A column
//! holds the exact value for every span of the block unless the block's meta lists it as
//! `inexact` (a span had the attribute with another type, or as an array).
//!
//! Reading a block gives back the spans exactly as they were written.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, DictionaryArray, FixedSizeBinaryArray, Int32Array,
    RecordBatch, StringArray, UInt64Array,
    builder::{
        BinaryBuilder, FixedSizeBinaryBuilder, Int32Builder, Int64Builder, StringBuilder, UInt64Builder,
    },
    types::Int32Type,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status},
};
use parquet::{
    arrow::{
        ArrowWriter, ProjectionMask,
        arrow_reader::{
            ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
            RowFilter,
        },
        arrow_writer::ArrowWriterOptions,
    },
    basic::{Compression, ZstdLevel},
    bloom_filter::Sbbf,
    file::{
        metadata::{PageIndexPolicy, ParquetMetaData},
        properties::{EnabledStatistics, WriterProperties},
        statistics::Statistics,
    },
    schema::types::ColumnPath,
};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::model::{ResourceInfo, ScopeInfo, SpanData, TraceId};
use crate::query::{ExactColumns, Prefilter};

/// Rows per row group: a trace lookup reads at most a few row groups of this many spans.
pub const ROW_GROUP_ROWS: usize = 16 * 1024;
/// The version written in `meta.json`. Version 1 had no dedicated attribute columns.
pub const FORMAT_VERSION: u32 = 2;

/// The type of a dedicated attribute column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    /// OTLP string values, an Arrow `Utf8` column.
    String,
    /// OTLP int values, an Arrow `Int64` column.
    Int,
}

/// A span attribute with a column of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedicatedAttribute {
    /// The attribute key.
    pub key: &'static str,
    /// The column's name in the block.
    pub column: &'static str,
    /// The values the column holds.
    pub kind: AttributeType,
}

const fn dedicated(key: &'static str, column: &'static str, kind: AttributeType) -> DedicatedAttribute {
    DedicatedAttribute { key, column, kind }
}

/// The span attributes with dedicated columns: the HTTP, database and RPC attributes of the
/// semantic conventions (current names and the ones older SDKs still send) that searches
/// filter on most.
pub const DEDICATED_ATTRIBUTES: &[DedicatedAttribute] = &[
    dedicated("http.request.method", "span.http.request.method", AttributeType::String),
    dedicated("http.method", "span.http.method", AttributeType::String),
    dedicated("http.response.status_code", "span.http.response.status_code", AttributeType::Int),
    dedicated("http.status_code", "span.http.status_code", AttributeType::Int),
    dedicated("http.route", "span.http.route", AttributeType::String),
    dedicated("url.full", "span.url.full", AttributeType::String),
    dedicated("http.url", "span.http.url", AttributeType::String),
    dedicated("db.system", "span.db.system", AttributeType::String),
    dedicated("db.system.name", "span.db.system.name", AttributeType::String),
    dedicated("rpc.method", "span.rpc.method", AttributeType::String),
];

/// The index in [`DEDICATED_ATTRIBUTES`] of the span attribute `key`, if it has a column.
pub fn dedicated_attribute(key: &str) -> Option<usize> {
    DEDICATED_ATTRIBUTES.iter().position(|d| d.key == key)
}
/// The name of the data object in a block's directory.
pub const DATA_FILE: &str = "data.parquet";

/// What `meta.json` says about a trace block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceBlockMeta {
    /// The block id.
    pub id: String,
    /// The format version.
    pub version: u32,
    /// The earliest span start, unix nanoseconds.
    pub min_start_ns: u64,
    /// The latest span end, unix nanoseconds.
    pub max_end_ns: u64,
    /// Spans in the block.
    pub spans: u64,
    /// Distinct traces in the block.
    pub traces: u64,
    /// The smallest and largest trace id, hex.
    pub min_trace_id: String,
    /// See `min_trace_id`.
    pub max_trace_id: String,
    /// Size of the data object in bytes.
    pub size_bytes: u64,
    /// 0 for a block flushed from the head; compaction output is one more than its inputs.
    pub level: u32,
    /// Dedicated attribute columns (by attribute key) that do not hold the exact value of
    /// every span: some span had the attribute with another type or as an array.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inexact: Vec<String>,
}

impl pharos_storage::BlockMeta for TraceBlockMeta {
    fn id(&self) -> &str {
        &self.id
    }
    fn time_range(&self) -> (u64, u64) {
        (self.min_start_ns, self.max_end_ns)
    }
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

impl TraceBlockMeta {
    /// Whether the block's trace-id range holds `id`.
    pub fn may_hold(&self, id: &TraceId) -> bool {
        let hex = crate::model::hex(id);
        self.min_trace_id <= hex && hex <= self.max_trace_id
    }

    /// Which dedicated attribute columns hold exact values: those not listed as inexact (a
    /// block of version 1 has none of the columns; the prefilter then passes every row).
    pub fn exact_columns(&self) -> ExactColumns {
        let mut exact = [true; DEDICATED_ATTRIBUTES.len()];
        for (flag, d) in exact.iter_mut().zip(DEDICATED_ATTRIBUTES) {
            *flag = !self.inexact.iter().any(|k| k == d.key);
        }
        exact
    }

    /// Whether the block has spans overlapping `start..=end` (unix nanoseconds).
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.min_start_ns <= end && self.max_end_ns >= start
    }
}

/// A block could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A column is missing or of the wrong type.
    #[error("trace block: column {0} missing or of the wrong type")]
    Column(&'static str),
    /// An embedded protobuf is damaged.
    #[error("trace block: column {column}: {source}")]
    Protobuf {
        /// The column.
        column: &'static str,
        /// The decode error.
        #[source]
        source: prost::DecodeError,
    },
}

fn schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("parent_span_id", DataType::Binary, false),
        Field::new("start_unix_nano", DataType::UInt64, false),
        Field::new("duration_nanos", DataType::UInt64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("service_name", DataType::Utf8, false),
        Field::new("kind", DataType::Int32, false),
        Field::new("status_code", DataType::Int32, false),
        // Written from dictionary arrays (one copy per distinct resource or scope); without
        // the Arrow schema in the file, readers see plain binary columns.
        Field::new(
            "resource",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Binary)),
            false,
        ),
        Field::new(
            "scope",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Binary)),
            false,
        ),
        Field::new("span", DataType::Binary, false),
    ];
    fields.extend(DEDICATED_ATTRIBUTES.iter().map(|d| {
        let kind = match d.kind {
            AttributeType::String => DataType::Utf8,
            AttributeType::Int => DataType::Int64,
        };
        Field::new(d.column, kind, true)
    }));
    Arc::new(Schema::new(fields))
}

/// Encodes spans (any order) as a block: returns the Parquet bytes and the meta (with `id`).
pub fn encode(
    id: String,
    level: u32,
    spans: &[Arc<SpanData>],
) -> Result<(Bytes, TraceBlockMeta), BlockError> {
    // Sort on keys copied out of the spans (comparing through the pointers is slower), and
    // read the spans in that order without moving them: reordering the `Arc`s would touch
    // every span's reference count, and the spans are freed faster in the order they arrived.
    let mut keys: Vec<(RowKey, usize)> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.trace_id(), s.span.start_time_unix_nano, s.span_id()), i))
        .collect();
    keys.sort_unstable();
    let sorted: Vec<&SpanData> = keys.iter().map(|(_, i)| &*spans[*i]).collect();
    drop(keys);
    let mut out = Vec::new();
    let mut writer = writer(&mut out, schema())?;
    let mut meta = TraceBlockMeta {
        id,
        version: FORMAT_VERSION,
        min_start_ns: u64::MAX,
        max_end_ns: 0,
        spans: spans.len() as u64,
        traces: 0,
        min_trace_id: sorted.first().map(|s| crate::model::hex(&s.trace_id())).unwrap_or_default(),
        max_trace_id: sorted.last().map(|s| crate::model::hex(&s.trace_id())).unwrap_or_default(),
        size_bytes: 0,
        level,
        inexact: Vec::new(),
    };
    let mut inexact = [false; DEDICATED_ATTRIBUTES.len()];
    let mut last_trace: Option<TraceId> = None;
    let mut encodings = Encodings::default();
    for chunk in sorted.chunks(ROW_GROUP_ROWS) {
        let mut columns = Columns::with_capacity(chunk.len());
        for &span in chunk {
            columns.push(span, &mut encodings)?;
            let trace = span.trace_id();
            if last_trace != Some(trace) {
                meta.traces += 1;
                last_trace = Some(trace);
            }
            meta.min_start_ns = meta.min_start_ns.min(span.span.start_time_unix_nano);
            meta.max_end_ns =
                meta.max_end_ns.max(span.span.end_time_unix_nano.max(span.span.start_time_unix_nano));
        }
        for (flag, column) in inexact.iter_mut().zip(&columns.inexact) {
            *flag |= *column;
        }
        writer.write(&columns.finish()?)?;
    }
    meta.inexact = inexact_keys(&inexact);
    writer.close()?;
    if spans.is_empty() {
        meta.min_start_ns = 0;
    }
    meta.size_bytes = out.len() as u64;
    Ok((Bytes::from(out), meta))
}

/// The keys of the dedicated attributes whose flag is set, in column order.
fn inexact_keys(flags: &[bool; DEDICATED_ATTRIBUTES.len()]) -> Vec<String> {
    DEDICATED_ATTRIBUTES.iter().zip(flags).filter(|(_, f)| **f).map(|(d, _)| d.key.to_string()).collect()
}

/// A block writer: zstd pages (level 1; LZ4 for the encoded spans), row groups of
/// [`ROW_GROUP_ROWS`], chunk statistics of the trace ids, start times and durations, the
/// trace-id bloom filter, no Arrow schema in the file.
fn writer(out: &mut Vec<u8>, schema: SchemaRef) -> Result<ArrowWriter<&mut Vec<u8>>, BlockError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Small pages, so that a trace lookup reads little besides its own rows.
        .set_data_page_size_limit(128 << 10)
        // Statistics only where a reader may use them (trace lookups prune row groups by
        // trace id): the others would compare every value, the encoded spans included.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("trace_id"), EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from("start_unix_nano"), EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from("duration_nanos"), EnabledStatistics::Chunk)
        .set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
        .set_column_bloom_filter_fpp(ColumnPath::from("trace_id"), 0.01)
        .set_column_dictionary_enabled(ColumnPath::from("trace_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("span_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("span"), false)
        // Searches on attributes without a column scan the encoded spans: LZ4 decompresses
        // them several times faster than zstd.
        .set_column_compression(ColumnPath::from("span"), Compression::LZ4_RAW)
        .build();
    let options = ArrowWriterOptions::new().with_properties(props).with_skip_arrow_metadata(true);
    Ok(ArrowWriter::try_new_with_options(out, schema, options)?)
}

/// The block schema as readers see it: `resource` and `scope` plain binary.
fn read_schema() -> SchemaRef {
    let fields: Vec<Field> = schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => Field::new(f.name(), (**value).clone(), f.is_nullable()),
            _ => (**f).clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The order of rows in a block: trace id, start time, span id.
type RowKey = (TraceId, u64, [u8; 8]);

/// One input of a merge: its record batches, in order, and the sort key of each row of the
/// current one.
struct MergeInput {
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    /// The current batch's index in the merge's batch list.
    slot: usize,
    /// (trace id, start, span id, end) per row of the current batch.
    keys: Vec<(TraceId, u64, [u8; 8], u64)>,
    row: usize,
}

impl MergeInput {
    /// Loads the next batch, with the columns of the current format (a version-1 block has
    /// no dedicated attribute columns: they come out null). `false` at the end.
    fn advance(&mut self, batches: &mut Vec<RecordBatch>, schema: &SchemaRef) -> Result<bool, BlockError> {
        let Some(batch) = self.reader.next().transpose()? else { return Ok(false) };
        let mut columns = batch.columns().to_vec();
        for field in &schema.fields()[columns.len()..] {
            columns.push(arrow_array::new_null_array(field.data_type(), batch.num_rows()));
        }
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let trace_id = column::<FixedSizeBinaryArray>(&batch, 0, "trace_id")?;
        let span_id = column::<FixedSizeBinaryArray>(&batch, 1, "span_id")?;
        let start = column::<UInt64Array>(&batch, 3, "start_unix_nano")?;
        let duration = column::<UInt64Array>(&batch, 4, "duration_nanos")?;
        self.keys = (0..batch.num_rows())
            .map(|row| {
                let trace: TraceId = trace_id.value(row).try_into().unwrap_or_default();
                let span: [u8; 8] = span_id.value(row).try_into().unwrap_or_default();
                let start = start.value(row);
                (trace, start, span, start.saturating_add(duration.value(row)))
            })
            .collect();
        self.row = 0;
        self.slot = batches.len();
        batches.push(batch);
        Ok(true)
    }
}

/// Merges blocks into one, streaming: rows are read a batch at a time from each input (all
/// sorted by trace id, start, span id), merged in that order, and repeated spans (the same
/// span id in the same trace) are written once. Memory stays at a few batches per input,
/// whatever the blocks hold; nothing is decoded past the Parquet columns.
pub(crate) fn merge(
    inputs: Vec<(Bytes, TraceBlockMeta)>,
    id: String,
    level: u32,
) -> Result<(Bytes, TraceBlockMeta), BlockError> {
    let schema = read_schema();
    let mut inexact = [false; DEDICATED_ATTRIBUTES.len()];
    let mut cursors = Vec::with_capacity(inputs.len());
    let mut batches: Vec<RecordBatch> = Vec::new();
    for (data, meta) in inputs {
        // A version-1 block has no dedicated columns: they come out null, so inexact.
        let exact = if meta.version < 2 { [false; DEDICATED_ATTRIBUTES.len()] } else { meta.exact_columns() };
        for (flag, exact) in inexact.iter_mut().zip(exact) {
            *flag |= !exact;
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(data)?.with_batch_size(8192).build()?;
        let mut cursor = MergeInput { reader, slot: 0, keys: Vec::new(), row: 0 };
        if cursor.advance(&mut batches, &schema)? {
            cursors.push(cursor);
        }
    }
    let mut out = Vec::new();
    let mut writer = writer(&mut out, schema.clone())?;
    let mut meta = TraceBlockMeta {
        id,
        version: FORMAT_VERSION,
        min_start_ns: u64::MAX,
        max_end_ns: 0,
        spans: 0,
        traces: 0,
        min_trace_id: String::new(),
        max_trace_id: String::new(),
        size_bytes: 0,
        level,
        inexact: inexact_keys(&inexact),
    };
    let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(RowKey, usize)>> = cursors
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (t, st, sp, _) = c.keys[0];
            std::cmp::Reverse(((t, st, sp), i))
        })
        .collect();
    let mut pending: Vec<(usize, usize)> = Vec::with_capacity(ROW_GROUP_ROWS);
    let mut current_trace: Option<TraceId> = None;
    let mut seen: HashSet<[u8; 8]> = HashSet::new();
    while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
        let cursor = &mut cursors[i];
        let (trace, start, span, end) = cursor.keys[cursor.row];
        if current_trace != Some(trace) {
            current_trace = Some(trace);
            seen.clear();
            meta.traces += 1;
            if meta.spans == 0 {
                meta.min_trace_id = crate::model::hex(&trace);
            }
            meta.max_trace_id = crate::model::hex(&trace);
        }
        if seen.insert(span) {
            pending.push((cursor.slot, cursor.row));
            meta.spans += 1;
            meta.min_start_ns = meta.min_start_ns.min(start);
            meta.max_end_ns = meta.max_end_ns.max(end);
        }
        cursor.row += 1;
        if cursor.row == cursor.keys.len() && !cursor.advance(&mut batches, &schema)? {
            cursor.keys.clear();
        }
        if cursor.row < cursor.keys.len() {
            let (t, st, sp, _) = cursor.keys[cursor.row];
            heap.push(std::cmp::Reverse(((t, st, sp), i)));
        }
        if pending.len() == ROW_GROUP_ROWS {
            flush_merged(&mut writer, &mut batches, &mut cursors, &mut pending)?;
        }
    }
    flush_merged(&mut writer, &mut batches, &mut cursors, &mut pending)?;
    writer.close()?;
    if meta.spans == 0 {
        meta.min_start_ns = 0;
    }
    meta.size_bytes = out.len() as u64;
    Ok((Bytes::from(out), meta))
}

/// Writes the pending rows of a merge, then keeps only the batches the inputs still read.
fn flush_merged(
    writer: &mut ArrowWriter<&mut Vec<u8>>,
    batches: &mut Vec<RecordBatch>,
    cursors: &mut [MergeInput],
    pending: &mut Vec<(usize, usize)>,
) -> Result<(), BlockError> {
    if !pending.is_empty() {
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        writer.write(&arrow_select::interleave::interleave_record_batch(&refs, pending)?)?;
        pending.clear();
    }
    let mut kept = Vec::with_capacity(cursors.len());
    for cursor in cursors.iter_mut() {
        if cursor.row < cursor.keys.len() {
            kept.push(batches[cursor.slot].clone());
            cursor.slot = kept.len() - 1;
        }
    }
    *batches = kept;
    Ok(())
}

struct Columns {
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent: BinaryBuilder,
    start: UInt64Builder,
    duration: UInt64Builder,
    name: StringBuilder,
    service: StringBuilder,
    kind: Int32Builder,
    status: Int32Builder,
    resource: Dictionary,
    scope: Dictionary,
    span: BinaryBuilder,
    dedicated: Vec<DedicatedBuilder>,
    /// Per dedicated column: some span had a value it cannot hold exactly.
    inexact: [bool; DEDICATED_ATTRIBUTES.len()],
    // The dictionary key of each resource and scope in this row group, per shared Arc.
    resources: HashMap<*const ResourceInfo, i32>,
    scopes: HashMap<*const ScopeInfo, i32>,
    rest: Vec<u8>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Self {
            trace_id: FixedSizeBinaryBuilder::with_capacity(n, 16),
            span_id: FixedSizeBinaryBuilder::with_capacity(n, 8),
            parent: BinaryBuilder::with_capacity(n, n * 8),
            start: UInt64Builder::with_capacity(n),
            duration: UInt64Builder::with_capacity(n),
            name: StringBuilder::with_capacity(n, n * 16),
            service: StringBuilder::with_capacity(n, n * 8),
            kind: Int32Builder::with_capacity(n),
            status: Int32Builder::with_capacity(n),
            resource: Dictionary::with_capacity(n),
            scope: Dictionary::with_capacity(n),
            span: BinaryBuilder::with_capacity(n, n * 256),
            dedicated: DEDICATED_ATTRIBUTES
                .iter()
                .map(|d| match d.kind {
                    AttributeType::String => DedicatedBuilder::String(StringBuilder::with_capacity(n, n * 4)),
                    AttributeType::Int => DedicatedBuilder::Int(Int64Builder::with_capacity(n)),
                })
                .collect(),
            inexact: [false; DEDICATED_ATTRIBUTES.len()],
            resources: HashMap::new(),
            scopes: HashMap::new(),
            rest: Vec::new(),
        }
    }

    fn push(&mut self, data: &SpanData, encoded: &mut Encodings) -> Result<(), BlockError> {
        let span = &data.span;
        self.trace_id.append_value(data.trace_id())?;
        self.span_id.append_value(data.span_id())?;
        let parent = data.parent_span_id();
        self.parent.append_value(parent.as_ref().map_or(&[][..], |p| &p[..]));
        self.start.append_value(span.start_time_unix_nano);
        self.duration.append_value(data.duration_nanos());
        self.name.append_value(&span.name);
        self.service.append_value(data.service_name());
        self.kind.append_value(span.kind);
        self.status.append_value(span.status.as_ref().map_or(0, |s| s.code));
        let values = &mut self.resource.values;
        let resource = *self.resources.entry(Arc::as_ptr(&data.resource)).or_insert_with(|| {
            values.append_value(encoded.resource(&data.resource));
            (arrow_array::builder::ArrayBuilder::len(values) - 1) as i32
        });
        self.resource.keys.append_value(resource);
        let values = &mut self.scope.values;
        let scope = *self.scopes.entry(Arc::as_ptr(&data.scope)).or_insert_with(|| {
            values.append_value(encoded.scope(&data.scope));
            (arrow_array::builder::ArrayBuilder::len(values) - 1) as i32
        });
        self.scope.keys.append_value(scope);
        // The rest of the span: everything not in a column of its own.
        self.rest.clear();
        encode_rest(span, &mut self.rest);
        self.span.append_value(&self.rest);
        self.push_dedicated(&span.attributes);
        Ok(())
    }

    /// The first value of each dedicated attribute, as the evaluator reads it: an absent
    /// attribute, an absent value, a kvlist or bytes (nil in TraceQL) are null; a value of
    /// another type or an array is null too and makes the column inexact.
    fn push_dedicated(&mut self, attributes: &[KeyValue]) {
        let mut found: [Option<Option<&any_value::Value>>; DEDICATED_ATTRIBUTES.len()] =
            [None; DEDICATED_ATTRIBUTES.len()];
        for kv in attributes {
            if let Some(i) = dedicated_attribute(&kv.key)
                && found[i].is_none()
            {
                found[i] = Some(kv.value.as_ref().and_then(|v| v.value.as_ref()));
            }
        }
        for (i, builder) in self.dedicated.iter_mut().enumerate() {
            let value = found[i].flatten();
            match (builder, value) {
                (DedicatedBuilder::String(b), Some(any_value::Value::StringValue(v))) => b.append_value(v),
                (DedicatedBuilder::Int(b), Some(any_value::Value::IntValue(v))) => b.append_value(*v),
                (builder, value) => {
                    builder.append_null();
                    if value.is_some_and(|v| {
                        !matches!(v, any_value::Value::KvlistValue(_) | any_value::Value::BytesValue(_))
                    }) {
                        self.inexact[i] = true;
                    }
                }
            }
        }
    }

    fn finish(mut self) -> Result<RecordBatch, BlockError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.status.finish()),
            self.resource.finish()?,
            self.scope.finish()?,
            Arc::new(self.span.finish()),
        ];
        columns.extend(self.dedicated.iter_mut().map(DedicatedBuilder::finish));
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

/// The encoded form of each resource and scope of a block, per shared Arc, so that a
/// request's resource is encoded once per block.
#[derive(Default)]
struct Encodings {
    resources: HashMap<*const ResourceInfo, Vec<u8>>,
    scopes: HashMap<*const ScopeInfo, Vec<u8>>,
}

impl Encodings {
    /// The resource as an OTLP `ResourceSpans` without spans, encoded without a copy of it.
    fn resource(&mut self, r: &Arc<ResourceInfo>) -> &[u8] {
        self.resources.entry(Arc::as_ptr(r)).or_insert_with(|| without_items(&r.resource, &r.schema_url))
    }

    /// The scope as an OTLP `ScopeSpans` without spans.
    fn scope(&mut self, s: &Arc<ScopeInfo>) -> &[u8] {
        self.scopes.entry(Arc::as_ptr(s)).or_insert_with(|| without_items(&s.scope, &s.schema_url))
    }
}

/// A `ResourceSpans` or `ScopeSpans` without spans: both hold their resource (scope) in field 1
/// and the schema URL in field 3.
fn without_items(message: &impl Message, schema_url: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    prost::encoding::message::encode(1, message, &mut buf);
    if !schema_url.is_empty() {
        prost::encoding::string::encode(3, &schema_url.to_string(), &mut buf);
    }
    buf
}

/// A dictionary-encoded binary column under construction: distinct values and row keys.
struct Dictionary {
    keys: Int32Builder,
    values: BinaryBuilder,
}

impl Dictionary {
    fn with_capacity(n: usize) -> Self {
        Self { keys: Int32Builder::with_capacity(n), values: BinaryBuilder::new() }
    }

    fn finish(&mut self) -> Result<ArrayRef, BlockError> {
        let keys = self.keys.finish();
        let values = self.values.finish();
        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values))?))
    }
}

enum DedicatedBuilder {
    String(StringBuilder),
    Int(Int64Builder),
}

impl DedicatedBuilder {
    fn append_null(&mut self) {
        match self {
            DedicatedBuilder::String(b) => b.append_null(),
            DedicatedBuilder::Int(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            DedicatedBuilder::String(b) => Arc::new(b.finish()),
            DedicatedBuilder::Int(b) => Arc::new(b.finish()),
        }
    }
}

/// Encodes the fields of `span` that have no column of their own, as a protobuf `Span` that
/// holds only them (field numbers of `opentelemetry.proto.trace.v1.Span`), without cloning.
fn encode_rest(span: &Span, buf: &mut Vec<u8>) {
    use prost::encoding;
    if !span.trace_state.is_empty() {
        encoding::string::encode(3, &span.trace_state, buf);
    }
    for kv in &span.attributes {
        encoding::message::encode(9, kv, buf);
    }
    if span.dropped_attributes_count != 0 {
        encoding::uint32::encode(10, &span.dropped_attributes_count, buf);
    }
    for event in &span.events {
        encoding::message::encode(11, event, buf);
    }
    if span.dropped_events_count != 0 {
        encoding::uint32::encode(12, &span.dropped_events_count, buf);
    }
    for link in &span.links {
        encoding::message::encode(13, link, buf);
    }
    if span.dropped_links_count != 0 {
        encoding::uint32::encode(14, &span.dropped_links_count, buf);
    }
    if let Some(status) = &span.status {
        // The code has a column; the message stays here.
        encoding::message::encode(15, &Status { code: 0, message: status.message.clone() }, buf);
    }
    if span.flags != 0 {
        encoding::fixed32::encode(16, &span.flags, buf);
    }
}

/// Which rows of a block to read.
#[derive(Debug, Clone, Copy, Default)]
pub enum Select {
    /// Every span.
    #[default]
    All,
    /// The spans of one trace: row groups are skipped by their trace-id range and bloom filter.
    Trace(TraceId),
    /// Every span, but only the dedicated columns (ids, times, name, kind, status code, service
    /// name): no attributes, events, links, status message, scope, or resource attribute other
    /// than `service.name`. For queries that read nothing else ([`crate::query::Query`]s that
    /// pass `store::is_light`); far less to decode.
    Light,
}

/// The number of leading columns [`Select::Light`] reads.
const LIGHT_COLUMNS: usize = 9;
/// The number of leading columns that hold whole spans (the dedicated attribute columns
/// after them repeat what the `span` column holds).
pub(crate) const SPAN_COLUMNS: usize = 12;

/// What a read did, for telemetry and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Row groups in the block.
    pub row_groups: usize,
    /// Row groups skipped by their trace-id range.
    pub pruned_by_range: usize,
    /// Row groups skipped by the bloom filter.
    pub pruned_by_bloom: usize,
}

/// Reads spans out of a block's bytes.
pub fn decode(data: Bytes, select: Select) -> Result<(Vec<SpanData>, ReadStats), BlockError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data)?;
    let metadata = builder.metadata().clone();
    let mut stats = ReadStats { row_groups: metadata.num_row_groups(), ..ReadStats::default() };
    let row_groups = match select {
        Select::All | Select::Light => (0..metadata.num_row_groups()).collect(),
        Select::Trace(id) => {
            let mut keep = Vec::new();
            for rg in 0..metadata.num_row_groups() {
                if !range_holds(&metadata, rg, &id) {
                    stats.pruned_by_range += 1;
                } else if builder
                    .get_row_group_column_bloom_filter(rg, 0)?
                    .is_some_and(|bloom| !bloom.check(&id[..]))
                {
                    stats.pruned_by_bloom += 1;
                } else {
                    keep.push(rg);
                }
            }
            keep
        }
    };
    let mut spans = Vec::new();
    if row_groups.is_empty() {
        return Ok((spans, stats));
    }
    let mut builder = builder.with_row_groups(row_groups).with_batch_size(8192);
    let columns = if matches!(select, Select::Light) { LIGHT_COLUMNS } else { SPAN_COLUMNS };
    let mask = ProjectionMask::roots(metadata.file_metadata().schema_descr(), 0..columns);
    builder = builder.with_projection(mask);
    let reader = builder.build()?;
    let mut decoder = Decoder::default();
    for batch in reader {
        decoder.decode_batch(&batch?, select, &mut spans)?;
    }
    Ok((spans, stats))
}

/// Per span condition of `prefilter`, the trace ids of the block's spans that pass it: the
/// conditions' columns are decoded first, and the trace-id column only for the rows that
/// pass one. `exact` says which dedicated attribute columns hold exact values in this block
/// ([`TraceBlockMeta::exact_columns`]).
pub(crate) fn candidates(
    data: Bytes,
    footer: Option<ArrowReaderMetadata>,
    prefilter: &Arc<Prefilter>,
    exact: ExactColumns,
) -> Result<Vec<HashSet<TraceId>>, BlockError> {
    let builder = reader_builder(data, footer)?;
    let mut wanted: Vec<usize> =
        prefilter.columns().iter().filter_map(|name| builder.schema().index_of(name).ok()).collect();
    wanted.sort_unstable();
    let descr = builder.metadata().file_metadata().schema_descr_ptr();
    // With one condition the rows that pass are that condition's; with several, each is
    // tested again on the rows that pass one.
    let several = prefilter.leaves() > 1;
    let output = if several { [0].into_iter().chain(wanted.iter().copied()).collect() } else { vec![0] };
    let input = if wanted.is_empty() { vec![0] } else { wanted };
    let predicate_filter = prefilter.clone();
    let predicate = ArrowPredicateFn::new(ProjectionMask::roots(&descr, input), move |batch: RecordBatch| {
        Ok(predicate_filter.evaluate_any(&batch, &exact))
    });
    let reader = builder
        .with_projection(ProjectionMask::roots(&descr, output))
        .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
        .with_batch_size(8192)
        .build()?;
    let mut sets = vec![HashSet::new(); prefilter.leaves()];
    for batch in reader {
        let batch = batch?;
        let trace_id = column::<FixedSizeBinaryArray>(&batch, 0, "trace_id")?;
        let passing = if several {
            prefilter.evaluate_each(&batch, &exact)
        } else {
            vec![vec![true; batch.num_rows()]]
        };
        for row in 0..batch.num_rows() {
            let Ok(id) = TraceId::try_from(trace_id.value(row)) else { continue };
            for (set, pass) in sets.iter_mut().zip(&passing) {
                if pass[row] {
                    set.insert(id);
                }
            }
        }
    }
    Ok(sets)
}

/// Every span of the traces `ids` (sorted) in the block (only the dedicated columns when `light`):
/// row groups are skipped by their trace-id range and bloom filter, and rows by a filter
/// on the trace-id column.
pub(crate) fn decode_traces(
    data: Bytes,
    footer: Option<ArrowReaderMetadata>,
    ids: &Arc<Vec<TraceId>>,
    light: bool,
) -> Result<Vec<SpanData>, BlockError> {
    let builder = reader_builder(data, footer)?;
    let metadata = builder.metadata().clone();
    let mut keep = Vec::new();
    for rg in 0..metadata.num_row_groups() {
        let in_range = match trace_id_range(&metadata, rg) {
            Some((min, max)) => {
                let lo = ids.partition_point(|id| &id[..] < min);
                let hi = ids.partition_point(|id| &id[..] <= max);
                &ids[lo..hi.max(lo)]
            }
            None => &ids[..],
        };
        if in_range.is_empty() {
            continue;
        }
        let bloom = builder.get_row_group_column_bloom_filter(rg, 0)?;
        if bloom.is_some_and(|bloom| !in_range.iter().any(|id| bloom.check(&id[..]))) {
            continue;
        }
        keep.push(rg);
    }
    let mut spans = Vec::new();
    if keep.is_empty() {
        return Ok(spans);
    }
    let descr = metadata.file_metadata().schema_descr_ptr();
    let wanted = ids.clone();
    let filter = ArrowPredicateFn::new(ProjectionMask::roots(&descr, [0]), move |batch: RecordBatch| {
        let column = column::<FixedSizeBinaryArray>(&batch, 0, "trace_id")
            .map_err(|e| arrow_schema::ArrowError::SchemaError(e.to_string()))?;
        Ok(BooleanArray::from_iter(column.iter().map(|v| {
            Some(
                v.and_then(|v| TraceId::try_from(v).ok()).is_some_and(|id| wanted.binary_search(&id).is_ok()),
            )
        })))
    });
    let columns = if light { LIGHT_COLUMNS } else { SPAN_COLUMNS };
    let reader = builder
        .with_row_groups(keep)
        .with_projection(ProjectionMask::roots(&descr, 0..columns))
        .with_row_filter(RowFilter::new(vec![Box::new(filter)]))
        .with_batch_size(8192)
        .build()?;
    let mut decoder = Decoder::default();
    for batch in reader {
        decoder.decode_batch(&batch?, Select::All, &mut spans)?;
    }
    Ok(spans)
}

/// What trace lookups read of a block before its rows: the footer with its page index, and
/// the trace-id bloom filter of each row group.
pub(crate) fn lookup_index(data: &Bytes) -> Result<(ArrowReaderMetadata, Vec<Option<Sbbf>>), BlockError> {
    let footer = ArrowReaderMetadata::load(
        data,
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
    )?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(data.clone(), footer.clone());
    let blooms = (0..footer.metadata().num_row_groups())
        .map(|rg| builder.get_row_group_column_bloom_filter(rg, 0))
        .collect::<Result<_, _>>()?;
    Ok((footer, blooms))
}

pub(crate) fn range_holds(metadata: &ParquetMetaData, rg: usize, id: &TraceId) -> bool {
    trace_id_range(metadata, rg).is_none_or(|(min, max)| min <= &id[..] && &id[..] <= max)
}

/// The smallest and largest trace id of row group `rg`, from its statistics.
fn trace_id_range(metadata: &ParquetMetaData, rg: usize) -> Option<(&[u8], &[u8])> {
    match metadata.row_group(rg).column(0).statistics() {
        Some(Statistics::FixedLenByteArray(s)) => Some((s.min_bytes_opt()?, s.max_bytes_opt()?)),
        _ => None,
    }
}

/// A reader of a block's bytes, with its footer when the caller has it cached.
fn reader_builder(
    data: Bytes,
    footer: Option<ArrowReaderMetadata>,
) -> Result<ParquetRecordBatchReaderBuilder<Bytes>, BlockError> {
    Ok(match footer {
        Some(footer) => ParquetRecordBatchReaderBuilder::new_with_metadata(data, footer),
        None => ParquetRecordBatchReaderBuilder::try_new(data)?,
    })
}

/// Turns record batches back into spans, sharing decoded resources and scopes.
#[derive(Default)]
pub(crate) struct Decoder {
    resources: HashMap<Vec<u8>, Arc<ResourceInfo>>,
    scopes: HashMap<Vec<u8>, Arc<ScopeInfo>>,
    /// [`Select::Light`]: a resource holding only `service.name`, per service.
    services: HashMap<String, Arc<ResourceInfo>>,
    empty_scope: Arc<ScopeInfo>,
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, i: usize, name: &'static str) -> Result<&'a T, BlockError> {
    batch.column(i).as_any().downcast_ref::<T>().ok_or(BlockError::Column(name))
}

impl Decoder {
    pub(crate) fn decode_batch(
        &mut self,
        batch: &RecordBatch,
        select: Select,
        out: &mut Vec<SpanData>,
    ) -> Result<(), BlockError> {
        let trace_id = column::<FixedSizeBinaryArray>(batch, 0, "trace_id")?;
        let span_id = column::<FixedSizeBinaryArray>(batch, 1, "span_id")?;
        let parent = column::<BinaryArray>(batch, 2, "parent_span_id")?;
        let start = column::<UInt64Array>(batch, 3, "start_unix_nano")?;
        let duration = column::<UInt64Array>(batch, 4, "duration_nanos")?;
        let name = column::<StringArray>(batch, 5, "name")?;
        let kind = column::<Int32Array>(batch, 7, "kind")?;
        let status = column::<Int32Array>(batch, 8, "status_code")?;
        if batch.num_columns() == LIGHT_COLUMNS {
            let service = column::<StringArray>(batch, 6, "service_name")?;
            for row in 0..batch.num_rows() {
                let code = status.value(row);
                let span = Span {
                    trace_id: trace_id.value(row).to_vec(),
                    span_id: span_id.value(row).to_vec(),
                    parent_span_id: parent.value(row).to_vec(),
                    name: name.value(row).to_string(),
                    kind: kind.value(row),
                    start_time_unix_nano: start.value(row),
                    end_time_unix_nano: start.value(row) + duration.value(row),
                    status: (code != 0).then(|| Status { code, message: String::new() }),
                    ..Span::default()
                };
                let resource = self.service(service.value(row));
                out.push(SpanData { resource, scope: self.empty_scope.clone(), span });
            }
            return Ok(());
        }
        let resource = column::<BinaryArray>(batch, 9, "resource")?;
        let scope = column::<BinaryArray>(batch, 10, "scope")?;
        let rest = column::<BinaryArray>(batch, 11, "span")?;
        for row in 0..batch.num_rows() {
            if let Select::Trace(id) = select
                && trace_id.value(row) != id
            {
                continue;
            }
            let resource = self.resource(resource.value(row))?;
            let scope = self.scope(scope.value(row))?;
            let mut span = Span::decode(rest.value(row))
                .map_err(|source| BlockError::Protobuf { column: "span", source })?;
            span.trace_id = trace_id.value(row).to_vec();
            span.span_id = span_id.value(row).to_vec();
            span.parent_span_id = parent.value(row).to_vec();
            span.name = name.value(row).to_string();
            span.kind = kind.value(row);
            span.start_time_unix_nano = start.value(row);
            span.end_time_unix_nano = start.value(row) + duration.value(row);
            let code = status.value(row);
            if code != 0 || span.status.is_some() {
                span.status.get_or_insert_with(Status::default).code = code;
            }
            out.push(SpanData { resource, scope, span });
        }
        Ok(())
    }

    fn service(&mut self, name: &str) -> Arc<ResourceInfo> {
        if let Some(r) = self.services.get(name) {
            return r.clone();
        }
        let attributes = if name == crate::model::UNKNOWN_SERVICE {
            Vec::new()
        } else {
            vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(name.to_string())) }),
                ..KeyValue::default()
            }]
        };
        let info = Arc::new(ResourceInfo::new(Resource { attributes, ..Resource::default() }, String::new()));
        self.services.insert(name.to_string(), info.clone());
        info
    }

    fn resource(&mut self, bytes: &[u8]) -> Result<Arc<ResourceInfo>, BlockError> {
        if let Some(r) = self.resources.get(bytes) {
            return Ok(r.clone());
        }
        let decoded = ResourceSpans::decode(bytes)
            .map_err(|source| BlockError::Protobuf { column: "resource", source })?;
        let info = Arc::new(ResourceInfo::new(decoded.resource.unwrap_or_default(), decoded.schema_url));
        self.resources.insert(bytes.to_vec(), info.clone());
        Ok(info)
    }

    fn scope(&mut self, bytes: &[u8]) -> Result<Arc<ScopeInfo>, BlockError> {
        if let Some(s) = self.scopes.get(bytes) {
            return Ok(s.clone());
        }
        let decoded =
            ScopeSpans::decode(bytes).map_err(|source| BlockError::Protobuf { column: "scope", source })?;
        let info =
            Arc::new(ScopeInfo { scope: decoded.scope.unwrap_or_default(), schema_url: decoded.schema_url });
        self.scopes.insert(bytes.to_vec(), info.clone());
        Ok(info)
    }
}
