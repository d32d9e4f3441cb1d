//! The log block format (version 2): one Parquet object `data.parquet` and `meta.json`.
//!
//! Rows are sorted by stream (in label order) then by time; a stream's rows are contiguous,
//! and `meta.json` lists every stream with its labels, its time range and its rows, so a query
//! reads only the rows of the streams its selector matches (a Parquet row selection, which
//! skips whole pages). Columns:
//! - `stream` (uint32): the stream's index in `meta.json`'s `streams`;
//! - `timestamp` (int64, unix nanoseconds, delta-encoded);
//! - `line` (utf8);
//! - `metadata` (binary, nullable): the structured metadata pairs, each name and value
//!   prefixed with its length as a LEB128 varint;
//! - the dedicated metadata columns ([`DEDICATED_METADATA`]);
//! - `shared` (binary, nullable, dictionary-encoded; since version 2): pairs shared by many
//!   entries (their resource's and scope's attributes), which come before `metadata`'s.
//!
//! See `docs/formats/log-blocks.md`.

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{
    Array, BinaryArray, BooleanArray, GenericByteArray, Int64Array, RecordBatch, StringArray,
    StringViewArray, UInt32Array,
    builder::{BinaryBuilder, GenericByteBuilder, Int64Builder, StringBuilder, UInt32Builder},
    types::ByteArrayType,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::{
    arrow::{
        ArrowWriter, ProjectionMask,
        arrow_reader::{
            ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
            RowFilter, RowSelection, RowSelector,
        },
        arrow_writer::ArrowWriterOptions,
    },
    basic::{Compression, Encoding, ZstdLevel},
    file::{
        metadata::PageIndexPolicy,
        properties::{EnabledStatistics, WriterProperties},
    },
    schema::types::ColumnPath,
};
use serde::{Deserialize, Serialize};

use crate::decode::{is_label_name_char, push_hex};
use crate::model::{Entry, Labels, LineTest, StreamEntries};

/// The format version written.
pub const VERSION: u32 = 2;
/// The data object's name in a block directory.
pub const DATA_FILE: &str = "data.parquet";
/// Rows per row group.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Rows per record batch handed to the Parquet writer.
const BATCH_ROWS: usize = 4096;

/// A block failure.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("corrupt block: {0}")]
    Corrupt(String),
}

/// What `meta.json` says about a block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBlockMeta {
    pub version: u32,
    pub id: String,
    /// 0 for a block written from the head; one more than its inputs' for a compacted one.
    pub level: u32,
    /// The oldest and newest entry times, unix nanoseconds.
    pub min_time: i64,
    pub max_time: i64,
    pub entries: u64,
    /// The bytes of the lines (and metadata) held, uncompressed.
    pub raw_bytes: u64,
    /// The size of `data.parquet`.
    pub size_bytes: u64,
    pub streams: Vec<BlockStream>,
}

/// One stream of a block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockStream {
    pub labels: Labels,
    pub min_time: i64,
    pub max_time: i64,
    /// Its rows are `first_row .. first_row + rows`.
    pub first_row: u64,
    pub rows: u64,
    /// The bytes of its lines.
    pub bytes: u64,
}

impl pharos_storage::BlockMeta for LogBlockMeta {
    fn id(&self) -> &str {
        &self.id
    }

    fn time_range(&self) -> (u64, u64) {
        (self.min_time.max(0) as u64, self.max_time.max(0) as u64)
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

/// Structured metadata names with a column of their own (nullable utf8, dictionary-encoded
/// where that pays): a query that needs only these does not decode the `metadata` column.
pub const DEDICATED_METADATA: &[&str] = &["severity_text", "trace_id"];

/// The index of the `shared` column (after the dedicated ones; blocks of version 1 end before it).
const SHARED_COLUMN: usize = 4 + DEDICATED_METADATA.len();

fn schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("stream", DataType::UInt32, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("line", DataType::Utf8, false),
        Field::new("metadata", DataType::Binary, true),
    ];
    fields.extend(DEDICATED_METADATA.iter().map(|name| Field::new(*name, DataType::Utf8, true)));
    fields.push(Field::new("shared", DataType::Binary, true));
    Arc::new(Schema::new(fields))
}

/// The position of `name` in [`DEDICATED_METADATA`], if it is one.
fn dedicated_index(name: &[u8]) -> Option<usize> {
    DEDICATED_METADATA.iter().position(|d| d.as_bytes() == name)
}

/// Whether encoded metadata holds a pair of a dedicated name.
fn has_dedicated(metadata: &[u8]) -> Result<bool, BlockError> {
    for pair in pairs(metadata) {
        if dedicated_index(pair?.0).is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Iterates the (name, value) byte slices of encoded metadata.
fn pairs(buf: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), BlockError>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let corrupt = || BlockError::Corrupt("undecodable structured metadata".into());
        let mut field = || -> Result<&[u8], BlockError> {
            let len = get_varint(buf, &mut at).ok_or_else(corrupt)?;
            let bytes = buf.get(at..at + len).ok_or_else(corrupt)?;
            at += len;
            Ok(bytes)
        };
        let pair = field().and_then(|k| Ok((k, field()?)));
        if pair.is_err() {
            at = buf.len();
        }
        Some(pair)
    })
}

fn properties() -> Result<WriterProperties, BlockError> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Readers select rows by stream and time; statistics of the other columns (every
        // line compared with the page's least and greatest) would cost writes and be unused.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("stream"), EnabledStatistics::Page)
        .set_column_statistics_enabled(ColumnPath::from("timestamp"), EnabledStatistics::Page)
        .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
        .set_column_encoding(ColumnPath::from("timestamp"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("line"), false)
        // An entry's own pairs hold its span id, or other values of its own: nearly always
        // unique, so a dictionary would be hashed into and then given up on.
        .set_column_dictionary_enabled(ColumnPath::from("metadata"), false)
        .set_column_compression(ColumnPath::from("line"), Compression::LZ4_RAW)
        .build())
}

/// Encodes streams (each one's entries sorted by time; streams in any order, each once) into
/// a block. Returns the data object and the meta (with `size_bytes` set).
pub fn encode<'a>(
    id: String,
    level: u32,
    streams: impl IntoIterator<Item = (&'a Labels, &'a [StoredEntry])>,
) -> Result<(Bytes, LogBlockMeta), BlockError> {
    let mut order: Vec<(&Labels, &[StoredEntry])> = streams.into_iter().filter(|s| !s.1.is_empty()).collect();
    order.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new_with_options(
        &mut out,
        schema(),
        ArrowWriterOptions::new().with_properties(properties()?).with_skip_arrow_metadata(true),
    )?;
    let mut meta = LogBlockMeta {
        version: VERSION,
        id,
        level,
        min_time: i64::MAX,
        max_time: i64::MIN,
        entries: 0,
        raw_bytes: 0,
        size_bytes: 0,
        streams: Vec::with_capacity(order.len()),
    };
    let mut batch = Batch::default();
    let mut rest = Vec::new();
    let mut combined = Vec::new();
    // Shared pairs seen (by address; the entries hold them while this runs) and whether they
    // hold a dedicated name.
    let mut seen_shared = [(std::ptr::null::<u8>(), false); 256];
    let mut row = 0u64;
    for (index, (labels, entries)) in order.iter().enumerate() {
        let mut info = BlockStream {
            labels: (*labels).clone(),
            min_time: i64::MAX,
            max_time: i64::MIN,
            first_row: row,
            rows: 0,
            bytes: 0,
        };
        for entry in entries.iter() {
            info.min_time = info.min_time.min(entry.timestamp);
            info.max_time = info.max_time.max(entry.timestamp);
            info.rows += 1;
            info.bytes += entry.line.len() as u64;
            meta.raw_bytes += entry.raw_bytes() as u64;
            batch.stream.append_value(index as u32);
            batch.timestamp.append_value(entry.timestamp);
            batch.line.append_value(&entry.line);
            // Shared pairs go to the `shared` column as they are, unless they hold a dedicated
            // name (never seen in practice): then they are the start of the entry's own.
            let (metadata, prefix) = match &entry.shared {
                Some(shared) if !shared.is_empty() => {
                    // Entries of many requests interleave in time: a small cache by address.
                    let ptr = Arc::as_ptr(shared).cast::<u8>();
                    let slot = &mut seen_shared[(ptr as usize >> 4) % seen_shared.len()];
                    if slot.0 != ptr {
                        *slot = (ptr, has_dedicated(shared)?);
                    }
                    if slot.1 {
                        combined.clear();
                        combined.extend_from_slice(shared);
                        combined.extend_from_slice(&entry.metadata);
                        batch.shared.append_null();
                        (&combined[..], None)
                    } else {
                        batch.shared.append_value(shared);
                        (&entry.metadata[..], entry.dedicated_prefix)
                    }
                }
                _ => {
                    batch.shared.append_null();
                    (&entry.metadata[..], entry.dedicated_prefix)
                }
            };
            // Dedicated names go to their columns, the rest stays in the blob.
            let (dedicated, kept) = split_dedicated(metadata, prefix, &mut rest)?;
            if kept.is_empty() {
                batch.metadata.append_null();
            } else {
                batch.metadata.append_value(kept);
            }
            for (column, value) in batch.dedicated.iter_mut().zip(dedicated) {
                match value.map(std::str::from_utf8) {
                    Some(Ok(v)) => column.append_value(v),
                    Some(Err(_)) => {
                        return Err(BlockError::Corrupt("structured metadata is not UTF-8".into()));
                    }
                    None => column.append_null(),
                }
            }
            batch.rows += 1;
            // Small batches: the builders' buffers stay small and are reused by the allocator
            // (one batch per row group would regrow tens of MB of fresh memory each time); the
            // writer still cuts row groups of ROW_GROUP_ROWS.
            if batch.rows == BATCH_ROWS {
                writer.write(&batch.finish()?)?;
            }
        }
        row += info.rows;
        meta.min_time = meta.min_time.min(info.min_time);
        meta.max_time = meta.max_time.max(info.max_time);
        meta.streams.push(info);
    }
    if batch.rows > 0 {
        writer.write(&batch.finish()?)?;
    }
    writer.close()?;
    meta.entries = row;
    if row == 0 {
        meta.min_time = 0;
        meta.max_time = 0;
    }
    meta.size_bytes = out.len() as u64;
    Ok((Bytes::from(out), meta))
}

/// An entry as the head keeps it and blocks store it: its structured metadata already in the
/// block encoding (two allocations per entry, instead of two per metadata pair).
///
/// Its structured metadata is `shared` followed by `metadata`: the pairs of its resource and
/// scope are made once per resource and scope of a request and shared by their entries (in the
/// head and in blocks) instead of being copied into each.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    pub timestamp: i64,
    pub line: Box<str>,
    /// Pairs shared with other entries, before the entry's own.
    pub shared: Option<Arc<[u8]>>,
    /// The entry's own pairs.
    pub metadata: Box<[u8]>,
    /// When known: `metadata[..n]` holds only pairs of dedicated names ([`DEDICATED_METADATA`],
    /// each at most once) and no pair after it has a dedicated name, so a block is written
    /// without reading the other pairs. `None`: not known (every pair is read). Set by the
    /// decoders, which write the dedicated pairs first ([`dedicated_prefix`]).
    pub(crate) dedicated_prefix: Option<u32>,
}

/// Equal when the time, the line and the pairs (shared then own) are, however they are split.
impl PartialEq for StoredEntry {
    fn eq(&self, other: &Self) -> bool {
        self.timestamp == other.timestamp
            && self.line == other.line
            && self.shared_bytes().len() + self.metadata.len()
                == other.shared_bytes().len() + other.metadata.len()
            && self
                .shared_bytes()
                .iter()
                .chain(&*self.metadata)
                .eq(other.shared_bytes().iter().chain(&*other.metadata))
    }
}

impl Eq for StoredEntry {}

impl StoredEntry {
    pub fn from_entry(entry: &Entry) -> Self {
        let mut metadata = Vec::new();
        encode_metadata(&entry.metadata, &mut metadata);
        Self {
            timestamp: entry.timestamp,
            line: entry.line.as_str().into(),
            shared: None,
            metadata: metadata.into(),
            dedicated_prefix: None,
        }
    }

    /// The shared pairs (empty when there are none).
    pub fn shared_bytes(&self) -> &[u8] {
        self.shared.as_deref().unwrap_or_default()
    }

    /// The entry with its metadata decoded.
    pub fn to_entry(&self) -> Result<Entry, BlockError> {
        self.to_entry_with(None, true)
    }

    /// The entry with its metadata decoded: only the names in `only`, when given; its line
    /// left empty unless `line`.
    pub fn to_entry_with(&self, only: Option<&[String]>, line: bool) -> Result<Entry, BlockError> {
        Ok(Entry {
            timestamp: self.timestamp,
            line: if line { self.line.to_string() } else { String::new() },
            metadata: {
                let mut pairs = Vec::new();
                decode_metadata_into(self.shared_bytes(), only, &mut pairs)?;
                decode_metadata_into(&self.metadata, only, &mut pairs)?;
                pairs
            },
        })
    }

    /// The bytes it counts for: its line and encoded metadata (shared pairs included).
    pub fn raw_bytes(&self) -> usize {
        self.line.len() + self.shared_bytes().len() + self.metadata.len()
    }
}

/// Whether an encoded pair (or pairs: the first is looked at) has a dedicated name.
pub(crate) fn is_dedicated_pair(pair: &[u8]) -> bool {
    let mut at = 0;
    get_varint(pair, &mut at)
        .and_then(|n| pair.get(at..at + n))
        .is_some_and(|name| dedicated_index(name).is_some())
}

/// The [`StoredEntry::dedicated_prefix`] of pairs whose first `prefix` bytes are the entry's
/// dedicated pairs (the caller's word), found by reading the pairs after them: `None` when one
/// has a dedicated name too, or `prefix` is out of range.
pub(crate) fn dedicated_prefix(metadata: &[u8], prefix: usize) -> Option<u32> {
    let rest = metadata.get(prefix..)?;
    let clean = pairs(rest).all(|pair| pair.is_ok_and(|(name, _)| dedicated_index(name).is_none()));
    clean.then(|| u32::try_from(prefix).ok()).flatten()
}

/// The value of each dedicated name, if the entry has one.
type DedicatedValues<'a> = [Option<&'a [u8]>; DEDICATED_METADATA.len()];

/// An entry's dedicated values and the pairs that stay in the `metadata` column (in `rest`
/// when they had to be gathered). With a known prefix only the prefix is read.
fn split_dedicated<'a>(
    metadata: &'a [u8],
    prefix: Option<u32>,
    rest: &'a mut Vec<u8>,
) -> Result<(DedicatedValues<'a>, &'a [u8]), BlockError> {
    let mut dedicated: DedicatedValues<'_> = [None; DEDICATED_METADATA.len()];
    if let Some((head, tail)) = prefix.and_then(|p| metadata.split_at_checked(p as usize)) {
        let mut whole = true;
        for pair in pairs(head) {
            match pair.map(|(k, v)| (dedicated_index(k), v)) {
                Ok((Some(i), v)) if dedicated[i].is_none() => dedicated[i] = Some(v),
                // Not what the prefix promises: read every pair instead.
                _ => whole = false,
            }
        }
        if whole {
            return Ok((dedicated, tail));
        }
        dedicated = [None; DEDICATED_METADATA.len()];
    }
    // The first pair of each dedicated name goes to its column; the runs of other pairs between
    // them are copied whole.
    rest.clear();
    let (mut run_start, mut pair_start) = (0, 0);
    for pair in pairs(metadata) {
        let (k, v) = pair?;
        let pair_end = v.as_ptr() as usize - metadata.as_ptr() as usize + v.len();
        if let Some(i) = dedicated_index(k)
            && dedicated[i].is_none()
        {
            dedicated[i] = Some(v);
            rest.extend_from_slice(&metadata[run_start..pair_start]);
            run_start = pair_end;
        }
        pair_start = pair_end;
    }
    if run_start == 0 {
        return Ok((dedicated, metadata));
    }
    rest.extend_from_slice(&metadata[run_start..]);
    Ok((dedicated, &rest[..]))
}

/// Appends one metadata pair in the block encoding to `out` (a [`StoredEntry`]'s `metadata`).
pub fn encode_pair(name: &str, value: &str, out: &mut Vec<u8>) {
    encode_bytes_pair(name.as_bytes(), value.as_bytes(), out);
}

/// [`encode_pair`] of a name and value already checked to be UTF-8.
pub(crate) fn encode_bytes_pair(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    put_varint(name.len(), out);
    out.extend_from_slice(name);
    put_varint(value.len(), out);
    out.extend_from_slice(value);
}

/// Each byte as it is in a label name: itself for `[a-zA-Z0-9_]`, `_` for any other.
const LABEL_BYTE: [u8; 256] = {
    let mut table = [b'_'; 256];
    let mut b = 0;
    while b < 256 {
        if is_label_name_char(b as u8 as char) {
            table[b] = b as u8;
        }
        b += 1;
    }
    table
};

/// Appends the pair `encode_pair(&sanitize_label_name(name), value, out)` appends (`name` and
/// `value` UTF-8), without making the valid name first: each character that may not be in a
/// label name becomes `_`, and a leading digit gets a `_` before it.
pub(crate) fn encode_label_pair(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let digit = name.first().is_some_and(u8::is_ascii_digit);
    out.reserve(name.len() + value.len() + 5);
    if name.is_ascii() {
        // One byte per character, each mapped in one pass.
        put_varint(name.len() + usize::from(digit), out);
        if digit {
            out.push(b'_');
        }
        out.extend(name.iter().map(|&b| LABEL_BYTE[usize::from(b)]));
        put_varint(value.len(), out);
        out.extend_from_slice(value);
        return;
    }
    // Every character becomes one byte, read off the UTF-8 bytes without decoding them: the
    // first byte of a character stands for it (a byte of a multi-byte character is never a
    // label-name character, so it becomes `_`) and continuation bytes (0b10xx_xxxx) are dropped.
    let chars = name.iter().filter(|&&b| b & 0xC0 != 0x80);
    put_varint(chars.clone().count() + usize::from(digit), out);
    if digit {
        out.push(b'_');
    }
    out.extend(chars.map(|&b| LABEL_BYTE[usize::from(b)]));
    put_varint(value.len(), out);
    out.extend_from_slice(value);
}

/// Appends the pair `encode_pair(name, &hex(bytes), out)` appends, without making the string.
pub(crate) fn encode_hex_pair(name: &str, bytes: &[u8], out: &mut Vec<u8>) {
    put_varint(name.len(), out);
    out.extend_from_slice(name.as_bytes());
    put_varint(bytes.len() * 2, out);
    push_hex(bytes, out);
}

struct Batch {
    stream: UInt32Builder,
    timestamp: Int64Builder,
    line: StringBuilder,
    metadata: BinaryBuilder,
    dedicated: Vec<StringBuilder>,
    shared: BinaryBuilder,
    rows: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            stream: UInt32Builder::new(),
            timestamp: Int64Builder::new(),
            line: StringBuilder::new(),
            metadata: BinaryBuilder::new(),
            dedicated: DEDICATED_METADATA.iter().map(|_| StringBuilder::new()).collect(),
            shared: BinaryBuilder::new(),
            rows: 0,
        }
    }
}

impl Batch {
    fn finish(&mut self) -> Result<RecordBatch, BlockError> {
        self.rows = 0;
        // Each builder is replaced by one with room for a batch like this one: a finished
        // builder starts empty and would regrow its buffers, copying them, batch after batch.
        let mut columns: Vec<arrow_array::ArrayRef> = vec![
            Arc::new(std::mem::replace(&mut self.stream, UInt32Builder::with_capacity(BATCH_ROWS)).finish()),
            Arc::new(
                std::mem::replace(&mut self.timestamp, Int64Builder::with_capacity(BATCH_ROWS)).finish(),
            ),
            Arc::new(take_sized(&mut self.line)),
            Arc::new(take_sized(&mut self.metadata)),
        ];
        columns.extend(self.dedicated.iter_mut().map(|b| Arc::new(take_sized(b)) as arrow_array::ArrayRef));
        columns.push(Arc::new(take_sized(&mut self.shared)));
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

/// The builder's array; the builder is left empty with room for as many rows and bytes.
fn take_sized<T: ByteArrayType>(builder: &mut GenericByteBuilder<T>) -> GenericByteArray<T> {
    let bytes = builder.values_slice().len();
    std::mem::replace(builder, GenericByteBuilder::with_capacity(BATCH_ROWS, bytes)).finish()
}

fn put_varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(buf: &[u8], at: &mut usize) -> Option<usize> {
    // One byte (lengths under 128: nearly every name and value) without the loop.
    let first = *buf.get(*at)?;
    if first < 0x80 {
        *at += 1;
        return Some(usize::from(first));
    }
    let mut n = 0usize;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        n |= usize::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

fn encode_metadata(pairs: &[(String, String)], out: &mut Vec<u8>) {
    for (k, v) in pairs {
        encode_pair(k, v, out);
    }
}

/// Appends the pairs of encoded metadata to `pairs`; with `only`, just the pairs with those
/// names (the others are skipped without being copied).
fn decode_metadata_into(
    buf: &[u8],
    only: Option<&[String]>,
    pairs: &mut Vec<(String, String)>,
) -> Result<(), BlockError> {
    let corrupt = || BlockError::Corrupt("undecodable structured metadata".into());
    let mut at = 0;
    let field = |at: &mut usize| -> Result<&[u8], BlockError> {
        let len = get_varint(buf, at).ok_or_else(corrupt)?;
        let bytes = buf.get(*at..*at + len).ok_or_else(corrupt)?;
        *at += len;
        Ok(bytes)
    };
    let text = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_string).map_err(|_| corrupt());
    while at < buf.len() {
        let k = field(&mut at)?;
        let v = field(&mut at)?;
        if only.is_none_or(|names| names.iter().any(|n| n.as_bytes() == k)) {
            pairs.push((text(k)?, text(v)?));
        }
    }
    Ok(())
}

/// What a block read found, and how much it scanned.
#[derive(Debug, Default)]
pub struct Scan {
    pub streams: Vec<StreamEntries>,
    /// Lines in the time range (and their bytes) tested against the line test.
    pub lines: u64,
    pub bytes: u64,
}

/// The column `name` of `batch` as a `T` (`kind` names the type in the error), if the batch
/// has it.
fn optional_column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    kind: &str,
) -> Result<Option<&'a T>, BlockError> {
    batch
        .column_by_name(name)
        .map(|c| {
            c.as_any().downcast_ref::<T>().ok_or_else(|| BlockError::Corrupt(format!("{name} is not {kind}")))
        })
        .transpose()
}

/// [`optional_column`] for a column every read projects.
fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str, kind: &str) -> Result<&'a T, BlockError> {
    optional_column(batch, name, kind)?.ok_or_else(|| BlockError::Corrupt(format!("no column {name}")))
}

/// What [`read_streams`] keeps of a block's entries.
#[derive(Clone)]
pub struct Keep {
    /// Entries with timestamps in `[start, end)`.
    pub start: i64,
    pub end: i64,
    /// Only lines that pass this test.
    pub lines: Option<Arc<dyn LineTest>>,
    /// Only these structured metadata names (all of them when `None`).
    pub only_metadata: Option<Arc<[String]>>,
    /// False: the entries' lines are left empty (and not read past the line test).
    pub lines_needed: bool,
}

impl Keep {
    /// Every entry in `[start, end)`, whole.
    pub fn range(start: i64, end: i64) -> Keep {
        Keep { start, end, lines: None, only_metadata: None, lines_needed: true }
    }
}

/// Reads the entries the streams `wanted` (indexes into `meta.streams`, ascending) have in a
/// block's data object, as `keep` says. The time range and the line test run first, as a
/// Parquet row filter over the `timestamp` and `line` columns: the other columns are decoded
/// only for the rows that pass.
pub fn read_streams(
    data: Bytes,
    meta: &LogBlockMeta,
    wanted: &[usize],
    keep: Keep,
) -> Result<Scan, BlockError> {
    let Keep { start, end, lines, only_metadata, lines_needed } = keep;
    if wanted.is_empty() {
        return Ok(Scan::default());
    }
    let mut selectors = Vec::new();
    let mut at = 0u64;
    for &i in wanted {
        let s = meta.streams.get(i).ok_or_else(|| BlockError::Corrupt(format!("no stream {i}")))?;
        if s.first_row < at {
            return Err(BlockError::Corrupt("streams out of row order".into()));
        }
        if s.first_row > at {
            selectors.push(RowSelector::skip((s.first_row - at) as usize));
        }
        selectors.push(RowSelector::select(s.rows as usize));
        at = s.first_row + s.rows;
    }
    // Lines are read as string views: each view points into its decompressed page instead of
    // the page's bytes being copied into one growing buffer per batch.
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let file = ArrowReaderMetadata::load(&data, options.clone())?;
    let fields: Vec<Field> = file
        .schema()
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "line" => Field::new("line", DataType::Utf8View, f.is_nullable()),
            _ => (**f).clone(),
        })
        .collect();
    let file = ArrowReaderMetadata::try_new(
        file.metadata().clone(),
        options.with_schema(Arc::new(Schema::new(fields))),
    )?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(data, file);
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let seen = counts.clone();
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [1, 2]);
    let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
        let times = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| arrow_schema::ArrowError::SchemaError("timestamp is not int64".into()))?;
        let texts = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringViewArray>()
            .ok_or_else(|| arrow_schema::ArrowError::SchemaError("line is not utf8".into()))?;
        let (mut n, mut bytes) = (0u64, 0u64);
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                let ts = times.value(row);
                if ts < start || ts >= end {
                    return Some(false);
                }
                let line = texts.value(row);
                n += 1;
                bytes += line.len() as u64;
                Some(lines.as_ref().is_none_or(|t| t.keep(line)))
            })
            .collect();
        seen.0.fetch_add(n, Ordering::Relaxed);
        seen.1.fetch_add(bytes, Ordering::Relaxed);
        Ok(keep)
    });
    // Without a name outside the dedicated columns to find, the metadata blob is not read.
    let blob_needed = only_metadata
        .as_ref()
        .is_none_or(|names| names.iter().any(|n| !DEDICATED_METADATA.contains(&n.as_str())));
    // Lines the query does not need past the line test, and dedicated metadata columns it
    // does not need, are not read (the test reads the lines on its own).
    let wanted = |name: &str| only_metadata.as_ref().is_none_or(|names| names.iter().any(|n| n == name));
    let present = builder.parquet_schema().root_schema().get_fields().len();
    let columns: Vec<usize> = (0..present.min(SHARED_COLUMN + 1))
        .filter(|&c| match c {
            2 => lines_needed,
            3 | SHARED_COLUMN => blob_needed,
            c if c >= 4 => wanted(DEDICATED_METADATA[c - 4]),
            _ => true,
        })
        .collect();
    let projection = ProjectionMask::roots(builder.parquet_schema(), columns);
    let reader = builder
        .with_projection(projection)
        .with_row_selection(RowSelection::from(selectors))
        .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
        .with_batch_size(8192)
        .build()?;
    let mut out: Vec<StreamEntries> = Vec::new();
    let mut current: Option<u32> = None;
    for batch in reader {
        let batch = batch?;
        let streams = column::<UInt32Array>(&batch, "stream", "uint32")?;
        let times = column::<Int64Array>(&batch, "timestamp", "int64")?;
        let texts = optional_column::<StringViewArray>(&batch, "line", "utf8")?;
        let blob = optional_column::<BinaryArray>(&batch, "metadata", "binary")?;
        let shared = optional_column::<BinaryArray>(&batch, "shared", "binary")?;
        let dedicated = DEDICATED_METADATA
            .iter()
            .filter(|name| wanted(name))
            .map(|name| Ok((*name, column::<StringArray>(&batch, name, "utf8")?)))
            .collect::<Result<Vec<_>, BlockError>>()?;
        for row in 0..batch.num_rows() {
            let stream = streams.value(row);
            if current != Some(stream) {
                let labels = &meta
                    .streams
                    .get(stream as usize)
                    .ok_or_else(|| BlockError::Corrupt(format!("row of unknown stream {stream}")))?
                    .labels;
                out.push(StreamEntries { labels: Arc::new(labels.clone()), entries: Vec::new() });
                current = Some(stream);
            }
            let mut metadata = Vec::with_capacity(dedicated.len());
            for column in [shared, blob].into_iter().flatten() {
                if !column.is_null(row) {
                    decode_metadata_into(column.value(row), only_metadata.as_deref(), &mut metadata)?;
                }
            }
            for (name, values) in &dedicated {
                if !values.is_null(row) {
                    metadata.push((name.to_string(), values.value(row).to_string()));
                }
            }
            if let Some(last) = out.last_mut() {
                last.entries.push(Entry {
                    timestamp: times.value(row),
                    line: texts.map_or_else(String::new, |t| t.value(row).to_string()),
                    metadata,
                });
            }
        }
    }
    Ok(Scan {
        streams: out,
        lines: counts.0.load(Ordering::Relaxed),
        bytes: counts.1.load(Ordering::Relaxed),
    })
}

/// Every entry of a block as stored: line, shared pairs (one allocation per distinct run of
/// shared pairs, as the head keeps them) and own pairs (the dedicated columns' values as
/// pairs, then the `metadata` column's). What the compactor merges: nothing is decoded into strings and the shared pairs
/// stay shared in the block it writes.
pub fn read_stored(data: Bytes) -> Result<Vec<(u32, Vec<StoredEntry>)>, BlockError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)?.with_batch_size(8192).build()?;
    let mut out: Vec<(u32, Vec<StoredEntry>)> = Vec::new();
    let mut distinct: std::collections::HashSet<Arc<[u8]>> = std::collections::HashSet::new();
    let mut metadata = Vec::new();
    for batch in reader {
        let batch = batch?;
        let streams = column::<UInt32Array>(&batch, "stream", "uint32")?;
        let times = column::<Int64Array>(&batch, "timestamp", "int64")?;
        let texts = column::<StringArray>(&batch, "line", "utf8")?;
        let blob = column::<BinaryArray>(&batch, "metadata", "binary")?;
        let shared = optional_column::<BinaryArray>(&batch, "shared", "binary")?;
        let dedicated = DEDICATED_METADATA
            .iter()
            .map(|name| Ok((*name, column::<StringArray>(&batch, name, "utf8")?)))
            .collect::<Result<Vec<_>, BlockError>>()?;
        for row in 0..batch.num_rows() {
            let stream = streams.value(row);
            if out.last().is_none_or(|(s, _)| *s != stream) {
                out.push((stream, Vec::new()));
            }
            // The dedicated pairs first: each stays the first pair of its name, so the next
            // encoding puts the same value in its column.
            metadata.clear();
            for (name, values) in &dedicated {
                if !values.is_null(row) {
                    encode_pair(name, values.value(row), &mut metadata);
                }
            }
            let prefix = metadata.len();
            if !blob.is_null(row) {
                metadata.extend_from_slice(blob.value(row));
            }
            let shared = match shared {
                Some(column) if !column.is_null(row) => {
                    let bytes = column.value(row);
                    Some(match distinct.get(bytes) {
                        Some(have) => Arc::clone(have),
                        None => {
                            let new: Arc<[u8]> = bytes.into();
                            distinct.insert(Arc::clone(&new));
                            new
                        }
                    })
                }
                _ => None,
            };
            if let Some((_, entries)) = out.last_mut() {
                entries.push(StoredEntry {
                    timestamp: times.value(row),
                    line: texts.value(row).into(),
                    shared,
                    metadata: metadata.as_slice().into(),
                    dedicated_prefix: dedicated_prefix(&metadata, prefix),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_entries_read_back_as_written_with_shared_pairs_shared() {
        let shared: Arc<[u8]> = {
            let mut b = Vec::new();
            encode_pair("service_namespace", "shop", &mut b);
            encode_pair("scope_name", "app", &mut b);
            b.into()
        };
        let entry = |t: i64, shared: Option<&Arc<[u8]>>, own: &[(&str, &str)]| {
            let mut metadata = Vec::new();
            own.iter().for_each(|(k, v)| encode_pair(k, v, &mut metadata));
            StoredEntry {
                timestamp: t,
                line: format!("line {t}").into(),
                shared: shared.cloned(),
                metadata: metadata.into(),
                dedicated_prefix: None,
            }
        };
        let a = labels("a");
        let b = labels("b");
        let written = vec![
            (
                &*a,
                vec![
                    entry(1, Some(&shared), &[("severity_text", "INFO"), ("user", "u1"), ("trace_id", "ab")]),
                    entry(2, Some(&shared), &[("span_id", "cd"), ("trace_id", "t1"), ("trace_id", "t2")]),
                    entry(3, None, &[]),
                ],
            ),
            (&*b, vec![entry(1, Some(&shared), &[("user", "u2")])]),
        ];
        let (data, meta) =
            super::encode("x".into(), 0, written.iter().map(|(l, e)| (*l, e.as_slice()))).unwrap();
        let read = read_stored(data).unwrap();
        assert_eq!(read.len(), 2);
        let sorted = |e: &StoredEntry| {
            let mut e = e.to_entry().unwrap();
            e.metadata.sort();
            e
        };
        for ((stream, got), (labels, want)) in read.iter().zip(&written) {
            assert_eq!(&meta.streams[*stream as usize].labels, *labels);
            assert_eq!(
                got.iter().map(sorted).collect::<Vec<_>>(),
                want.iter().map(sorted).collect::<Vec<_>>()
            );
        }
        // Of two pairs of a dedicated name, the one in its column (the first) stays first.
        let first_trace = |e: &StoredEntry| {
            pairs(&e.metadata).map(Result::unwrap).find(|(k, _)| *k == b"trace_id").map(|(_, v)| v.to_vec())
        };
        assert_eq!(first_trace(&read[0].1[1]), Some(b"t1".to_vec()));
        // One allocation for the shared pairs of every entry that has them.
        let with_shared: Vec<&Arc<[u8]>> =
            read.iter().flat_map(|(_, e)| e).filter_map(|e| e.shared.as_ref()).collect();
        assert_eq!(with_shared.len(), 3);
        assert!(with_shared.iter().all(|s| Arc::ptr_eq(s, with_shared[0])));
        assert_eq!(&**with_shared[0], &*shared);
    }

    fn refs(streams: &[StreamEntries]) -> Vec<(&Labels, Vec<StoredEntry>)> {
        streams
            .iter()
            .map(|s| (&*s.labels, s.entries.iter().map(StoredEntry::from_entry).collect()))
            .collect()
    }

    fn encode(id: &str, streams: &[StreamEntries]) -> Result<(Bytes, LogBlockMeta), BlockError> {
        let stored = refs(streams);
        super::encode(id.into(), 0, stored.iter().map(|(l, e)| (*l, e.as_slice())))
    }

    fn labels(app: &str) -> Arc<Labels> {
        Arc::new(Labels::new([("app".to_string(), app.to_string())]))
    }

    #[test]
    fn pairs_written_in_place_equal_pairs_of_made_strings() {
        use crate::decode::{hex, sanitize_label_name};
        let long = "k.".repeat(100);
        for name in
            ["service_name", "k8s.pod.name", "1st-try", "9", "", "é.x", "日本_ok", "a b\u{1F600}", &long]
        {
            let (mut direct, mut made) = (Vec::new(), Vec::new());
            encode_label_pair(name.as_bytes(), "value é".as_bytes(), &mut direct);
            encode_pair(&sanitize_label_name(name), "value é", &mut made);
            assert_eq!(direct, made, "{name:?}");
        }
        for bytes in [&[][..], &[0x00, 0xab, 0x7f][..], &[0xff; 16][..]] {
            let (mut direct, mut made) = (Vec::new(), Vec::new());
            encode_hex_pair("trace_id", bytes, &mut direct);
            encode_pair("trace_id", &hex(bytes), &mut made);
            assert_eq!(direct, made);
        }
    }

    fn entry(ts: i64, line: &str, metadata: &[(&str, &str)]) -> Entry {
        Entry {
            timestamp: ts,
            line: line.into(),
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn streams_come_back_by_selection_and_time_range() {
        let streams = vec![
            StreamEntries {
                labels: labels("web"),
                entries: vec![entry(10, "GET /", &[("trace_id", "ab")]), entry(20, "GET /x", &[])],
            },
            StreamEntries {
                labels: labels("api"),
                entries: vec![entry(5, "ünïcode", &[("k", ""), ("", "v")])],
            },
        ];
        let (data, meta) = encode("b1", &streams).unwrap();
        assert_eq!(meta.entries, 3);
        assert_eq!((meta.min_time, meta.max_time), (5, 20));
        // Sorted by labels: api first.
        assert_eq!(meta.streams[0].labels, *labels("api"));
        assert_eq!((meta.streams[1].first_row, meta.streams[1].rows), (1, 2));
        assert_eq!(meta.size_bytes, data.len() as u64);

        let all =
            read_streams(data.clone(), &meta, &[0, 1], Keep::range(i64::MIN, i64::MAX)).unwrap().streams;
        assert_eq!(all[0], streams[1]);
        assert_eq!(all[1], streams[0]);
        let web_late = read_streams(data.clone(), &meta, &[1], Keep::range(15, 100)).unwrap().streams;
        assert_eq!(web_late.len(), 1);
        assert_eq!(web_late[0].entries, [entry(20, "GET /x", &[])]);
        assert!(read_streams(data, &meta, &[0], Keep::range(6, 100)).unwrap().streams.is_empty());
    }

    #[test]
    fn a_block_larger_than_a_row_group_reads_back_whole() {
        let n = ROW_GROUP_ROWS + 100;
        let streams: Vec<StreamEntries> = ["a", "b", "c"]
            .iter()
            .map(|app| StreamEntries {
                labels: labels(app),
                entries: (0..n as i64).map(|i| entry(i, &format!("{app} line {i}"), &[])).collect(),
            })
            .collect();
        let (data, meta) = encode("b2", &streams).unwrap();
        let b = read_streams(data, &meta, &[1], Keep::range(0, i64::MAX)).unwrap().streams;
        assert_eq!(b, [streams[1].clone()]);
    }

    struct Contains(&'static str);

    impl LineTest for Contains {
        fn keep(&self, line: &str) -> bool {
            line.contains(self.0)
        }
    }

    #[test]
    fn the_line_test_and_time_range_keep_only_their_rows_and_count_what_they_scanned() {
        let entries: Vec<Entry> = (0..100i64)
            .map(|i| entry(i, &format!("{} {i}", if i % 10 == 0 { "error" } else { "ok" }), &[("k", "v")]))
            .collect();
        let streams = vec![StreamEntries { labels: labels("a"), entries: entries.clone() }];
        let (data, meta) = encode("b3", &streams).unwrap();
        let keep = Keep { lines: Some(Arc::new(Contains("error"))), ..Keep::range(20, 60) };
        let scan = read_streams(data.clone(), &meta, &[0], keep.clone()).unwrap();
        let want: Vec<Entry> = entries
            .into_iter()
            .filter(|e| (20..60).contains(&e.timestamp) && e.line.starts_with("error"))
            .collect();
        assert_eq!(scan.streams[0].entries, want, "rows 20, 30, 40, 50 with their metadata");
        assert_eq!(scan.lines, 40, "lines in the time range were tested");
        let bytes: u64 = (20..60)
            .map(|i: i64| format!("{} {i}", if i % 10 == 0 { "error" } else { "ok" }).len() as u64)
            .sum();
        assert_eq!(scan.bytes, bytes);
        // A query that only counts: the same rows, tested the same, without their lines.
        let counted = read_streams(data, &meta, &[0], Keep { lines_needed: false, ..keep }).unwrap();
        let blank: Vec<Entry> = want.into_iter().map(|e| Entry { line: String::new(), ..e }).collect();
        assert_eq!(counted.streams[0].entries, blank);
        assert_eq!((counted.lines, counted.bytes), (40, bytes));
    }

    #[test]
    fn dedicated_metadata_columns_hold_their_names_and_a_query_of_only_them_skips_the_rest() {
        let md = [("host", "n1"), ("severity_text", "ERROR"), ("trace_id", "abc"), ("user", "u7")];
        let streams = vec![StreamEntries {
            labels: labels("a"),
            entries: vec![entry(1, "x", &md), entry(2, "y", &[])],
        }];
        let (data, meta) = encode("b4", &streams).unwrap();
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        let all = read_streams(data.clone(), &meta, &[0], Keep::range(0, 10)).unwrap().streams;
        assert_eq!(
            sorted(all[0].entries[0].metadata.clone()),
            sorted(streams[0].entries[0].metadata.clone())
        );
        assert!(all[0].entries[1].metadata.is_empty());
        // Dedicated names first, twice (the second stays in the blob), last; long values.
        let long = "v".repeat(300);
        for md in [
            vec![
                ("severity_text", "A"),
                ("x", "1"),
                ("severity_text", "B"),
                ("y", long.as_str()),
                ("trace_id", "t"),
            ],
            vec![("trace_id", "t"), ("severity_text", long.as_str())],
            vec![("x", long.as_str()), ("y", "2")],
        ] {
            let streams = vec![StreamEntries { labels: labels("a"), entries: vec![entry(1, "x", &md)] }];
            let (data, meta) = encode("b5", &streams).unwrap();
            let read = read_streams(data, &meta, &[0], Keep::range(0, 10)).unwrap().streams;
            assert_eq!(
                sorted(read[0].entries[0].metadata.clone()),
                sorted(streams[0].entries[0].metadata.clone())
            );
        }
        let only: Arc<[String]> = vec!["severity_text".to_string()].into();
        let some = read_streams(data, &meta, &[0], Keep { only_metadata: Some(only), ..Keep::range(0, 10) })
            .unwrap()
            .streams;
        assert_eq!(some[0].entries[0].metadata, [("severity_text".to_string(), "ERROR".to_string())]);
    }

    /// Entries whose first pairs are shared (one allocation for several entries), as the
    /// decoders make them, including shared pairs that hold a dedicated name.
    #[test]
    fn shared_pairs_read_back_before_the_entry_own_in_any_query() {
        let pairs = |md: &[(&str, &str)]| {
            let mut buf = Vec::new();
            for (k, v) in md {
                encode_pair(k, v, &mut buf);
            }
            buf
        };
        let resource: Arc<[u8]> = pairs(&[("host", "n1"), ("pod", "p-1")]).into();
        let odd: Arc<[u8]> = pairs(&[("severity_text", "FROM_RESOURCE"), ("zone", "z")]).into();
        let own = |md: &[(&str, &str)]| pairs(md).into_boxed_slice();
        let stored = |ts, shared: Option<&Arc<[u8]>>, md: &[(&str, &str)]| StoredEntry {
            timestamp: ts,
            line: format!("line {ts}").into(),
            shared: shared.cloned(),
            metadata: own(md),
            dedicated_prefix: None,
        };
        let entries = vec![
            stored(1, Some(&resource), &[("user", "u1"), ("severity_text", "ERROR")]),
            stored(2, Some(&resource), &[]),
            stored(3, None, &[("user", "u3")]),
            stored(4, Some(&odd), &[("severity_text", "WARN"), ("trace_id", "t4")]),
            stored(5, Some(&resource), &[("trace_id", "t5")]),
        ];
        let a = labels("a");
        let (data, meta) = super::encode("s1".into(), 0, [(&*a, entries.as_slice())]).unwrap();
        assert_eq!(meta.raw_bytes, entries.iter().map(|e| e.raw_bytes() as u64).sum::<u64>());
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        let read = read_streams(data.clone(), &meta, &[0], Keep::range(0, 10)).unwrap().streams;
        assert_eq!(read[0].entries.len(), entries.len());
        for (got, want) in read[0].entries.iter().zip(&entries) {
            let want = want.to_entry().unwrap();
            assert_eq!((got.timestamp, &got.line), (want.timestamp, &want.line));
            assert_eq!(
                sorted(got.metadata.clone()),
                sorted(want.metadata.clone()),
                "entry {}",
                want.timestamp
            );
        }
        // The entry of the odd resource: its first severity_text (the resource's) is the
        // dedicated one, as if nothing were shared.
        let only: Arc<[String]> = vec!["severity_text".to_string(), "pod".to_string()].into();
        let some = read_streams(data, &meta, &[0], Keep { only_metadata: Some(only), ..Keep::range(0, 10) })
            .unwrap()
            .streams;
        let got: Vec<Vec<(String, String)>> =
            some[0].entries.iter().map(|e| sorted(e.metadata.clone())).collect();
        let s = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(
            got,
            [
                s(&[("pod", "p-1"), ("severity_text", "ERROR")]),
                s(&[("pod", "p-1")]),
                s(&[]),
                s(&[("severity_text", "FROM_RESOURCE"), ("severity_text", "WARN")]),
                s(&[("pod", "p-1")]),
            ]
        );
        // Split differently, the same entry.
        let whole = StoredEntry {
            shared: None,
            metadata: [&resource[..], &own(&[("user", "u1")])].concat().into(),
            ..stored(1, None, &[])
        };
        assert_eq!(whole, stored(1, Some(&resource), &[("user", "u1")]));
        assert_ne!(whole, stored(1, Some(&resource), &[("user", "u2")]));
    }

    /// The decoders' hint that an entry's dedicated pairs come first changes nothing in the
    /// block: the same bytes as with every pair read; a hint that is not true is not trusted.
    #[test]
    fn blocks_are_the_same_with_and_without_the_dedicated_prefix() {
        let pairs = |md: &[(&str, &str)]| {
            let mut buf = Vec::new();
            md.iter().for_each(|(k, v)| encode_pair(k, v, &mut buf));
            buf
        };
        let resource: Arc<[u8]> = pairs(&[("host", "n1")]).into();
        let cases: &[(&[(&str, &str)], usize)] = &[
            // (pairs, how many of them lead as dedicated)
            (&[("severity_text", "ERROR"), ("trace_id", "t1"), ("user", "u1"), ("span_id", "s1")], 2),
            (&[("trace_id", "t2"), ("user", "u2")], 1),
            (&[("user", "u3")], 0),
            (&[], 0),
            // A dedicated name again after the prefix: no hint.
            (&[("trace_id", "t4"), ("user", "u4"), ("trace_id", "again")], 1),
            (&[("severity_text", "WARN"), ("user", "u5"), ("severity_text", "again")], 1),
        ];
        let mut hinted = Vec::new();
        let mut plain = Vec::new();
        for (i, (md, leading)) in cases.iter().enumerate() {
            let metadata = pairs(md);
            let prefix = pairs(&md[..*leading]).len();
            let hint = dedicated_prefix(&metadata, prefix);
            assert_eq!(hint.is_none(), i >= 4, "case {i}");
            let entry = StoredEntry {
                timestamp: i as i64,
                line: format!("line {i}").into(),
                shared: (i % 2 == 0).then(|| Arc::clone(&resource)),
                metadata: metadata.into(),
                dedicated_prefix: hint,
            };
            hinted.push(entry.clone());
            plain.push(StoredEntry { dedicated_prefix: None, ..entry });
        }
        // A false hint (the prefix holds a name twice, or a name that is not dedicated).
        let twice = pairs(&[("trace_id", "a"), ("trace_id", "b"), ("user", "u")]);
        let not_dedicated = pairs(&[("user", "u"), ("trace_id", "t")]);
        for (i, (metadata, lie)) in
            [(twice, pairs(&[("trace_id", "a"), ("trace_id", "b")]).len()), (not_dedicated, 3)]
                .into_iter()
                .enumerate()
        {
            let entry = StoredEntry {
                timestamp: 10 + i as i64,
                line: "lie".into(),
                shared: None,
                metadata: metadata.into(),
                dedicated_prefix: Some(lie as u32),
            };
            hinted.push(entry.clone());
            plain.push(StoredEntry { dedicated_prefix: None, ..entry });
        }
        let a = labels("a");
        let (with_hint, _) = super::encode("h".into(), 0, [(&*a, hinted.as_slice())]).unwrap();
        let (without, meta) = super::encode("h".into(), 0, [(&*a, plain.as_slice())]).unwrap();
        assert_eq!(with_hint, without);
        // And what is read back is what was written.
        let read = read_streams(with_hint, &meta, &[0], Keep::range(0, 100)).unwrap().streams;
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        for (got, want) in read[0].entries.iter().zip(&plain) {
            assert_eq!(sorted(got.metadata.clone()), sorted(want.to_entry().unwrap().metadata));
        }
        assert_eq!(read[0].entries.len(), plain.len());
    }

    /// A block of format version 1 (no `shared` column) reads as before.
    #[test]
    fn version_1_blocks_without_a_shared_column_still_read() {
        let mut md = Vec::new();
        encode_pair("user", "u1", &mut md);
        let fields: Vec<Field> =
            schema().fields().iter().take(SHARED_COLUMN).map(|f| (**f).clone()).collect();
        let columns: Vec<arrow_array::ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![0u32, 0])),
            Arc::new(Int64Array::from(vec![1i64, 2])),
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(BinaryArray::from(vec![Some(&md[..]), None])),
            Arc::new(StringArray::from(vec![Some("ERROR"), None])),
            Arc::new(StringArray::from(vec![None::<&str>, Some("t2")])),
        ];
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let labels = labels("a");
        let meta = LogBlockMeta {
            version: 1,
            id: "v1".into(),
            level: 0,
            min_time: 1,
            max_time: 2,
            entries: 2,
            raw_bytes: 0,
            size_bytes: out.len() as u64,
            streams: vec![BlockStream {
                labels: (*labels).clone(),
                min_time: 1,
                max_time: 2,
                first_row: 0,
                rows: 2,
                bytes: 2,
            }],
        };
        let read = read_streams(Bytes::from(out), &meta, &[0], Keep::range(0, 10)).unwrap().streams;
        let pairs = |e: &Entry| {
            let mut v = e.metadata.clone();
            v.sort();
            v
        };
        assert_eq!(read[0].entries.len(), 2);
        assert_eq!(
            pairs(&read[0].entries[0]),
            [("severity_text".to_string(), "ERROR".to_string()), ("user".to_string(), "u1".to_string())]
        );
        assert_eq!(pairs(&read[0].entries[1]), [("trace_id".to_string(), "t2".to_string())]);
    }

    fn decode_metadata_of(buf: &[u8], only: Option<&[String]>) -> Result<Vec<(String, String)>, BlockError> {
        let mut pairs = Vec::new();
        decode_metadata_into(buf, only, &mut pairs)?;
        Ok(pairs)
    }

    #[test]
    fn metadata_round_trips_and_garbage_is_corrupt() {
        let pairs = vec![("a".to_string(), "x".repeat(300)), ("".to_string(), "".to_string())];
        let mut buf = Vec::new();
        encode_metadata(&pairs, &mut buf);
        assert_eq!(decode_metadata_of(&buf, None).unwrap(), pairs);
        assert!(decode_metadata_of(&[5, b'a'], None).is_err());
        assert!(decode_metadata_of(&[0xff], None).is_err());
        let only = ["b".to_string()];
        let mut buf = Vec::new();
        encode_pair("a", "1", &mut buf);
        encode_pair("b", "2", &mut buf);
        assert_eq!(decode_metadata_of(&buf, Some(&only)).unwrap(), [("b".to_string(), "2".to_string())]);
    }
}
