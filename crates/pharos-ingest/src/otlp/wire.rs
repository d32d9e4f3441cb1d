//! Validation and partitioning of encoded OTLP trace and log requests, on the protobuf wire format.
//!
//! Nothing is decoded into messages. A scan checks every field the way a full decode would (wire
//! types, lengths, UTF-8 of strings), and every item against the [`Limits`]; then each partition's
//! request is assembled by copying the byte ranges of the items it gets, under copies of their
//! resource and scope headers. Fields this version does not know are kept as they came.
//!
//! Both signals nest three levels deep: request → `Resource{Spans,Logs}` (field 1) →
//! `Scope{Spans,Logs}` (field 2) → `Span`/`LogRecord` (field 2).

use std::ops::Range;

use bytes::BufMut;
use pharos_core::{FNV_OFFSET, PartitionKey, Signal, fnv1a_extend, partition_of};
use prost::encoding::{encode_varint, encoded_len_varint};

use super::{
    signals::STREAM_RESOURCE_ATTRIBUTES,
    validate::{
        Rejections, Violation, check_id, key_too_long, nested_key_too_long, nesting_too_deep,
        too_many_attributes, value_too_long,
    },
};
use crate::Limits;

/// Values nested deeper than this are malformed whatever the configured `max_nesting_depth`: it
/// bounds the scan's recursion (a full decode stops at a similar depth).
const MAX_RECURSION: usize = 64;

/// The child field of a request, a resource group and a scope group: tag of field 1 or 2,
/// length-delimited.
const TAG_FIELD_1: u8 = 0x0a;
const TAG_FIELD_2: u8 = 0x12;

/// A request that is not valid protobuf for its message type: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at byte {offset})")]
pub struct WireError {
    pub offset: usize,
    pub message: String,
}

#[cold]
#[inline(never)]
fn malformed(offset: usize, message: impl Into<String>) -> WireError {
    WireError { offset, message: message.into() }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

impl WireType {
    fn name(self) -> &'static str {
        match self {
            WireType::Varint => "varint",
            WireType::Fixed64 => "64-bit",
            WireType::Len => "length-delimited",
            WireType::Fixed32 => "32-bit",
        }
    }
}

/// One field of a message: its number and type, where it starts (tag included), where its value
/// starts (after the length, for length-delimited fields) and where it ends.
#[derive(Clone, Copy, Debug)]
struct Field {
    number: u32,
    wire_type: WireType,
    start: usize,
    value_start: usize,
    end: usize,
}

impl Field {
    fn whole(&self) -> Range<usize> {
        self.start..self.end
    }

    fn value(&self) -> Range<usize> {
        self.value_start..self.end
    }

    #[inline]
    fn expect(&self, wire_type: WireType, what: &str) -> Result<(), WireError> {
        if self.wire_type == wire_type { Ok(()) } else { Err(self.wrong_type(wire_type, what)) }
    }

    #[cold]
    #[inline(never)]
    fn wrong_type(&self, wire_type: WireType, what: &str) -> WireError {
        malformed(
            self.start,
            format!("{what} has wire type {}, expected {}", self.wire_type.name(), wire_type.name()),
        )
    }

    /// The value as bytes of a length-delimited field.
    fn bytes<'a>(&self, buf: &'a [u8], what: &str) -> Result<&'a [u8], WireError> {
        self.expect(WireType::Len, what)?;
        Ok(&buf[self.value()])
    }

    /// The value of a string field, which must be UTF-8.
    /// The bytes of a string field, checked to be UTF-8 (ASCII, the usual case, checked inline).
    #[inline]
    fn utf8<'a>(&self, buf: &'a [u8], what: &str) -> Result<&'a [u8], WireError> {
        let bytes = self.bytes(buf, what)?;
        if pharos_core::wire::is_utf8(bytes) {
            Ok(bytes)
        } else {
            Err(malformed(self.value_start, format!("{what} is not valid UTF-8")))
        }
    }

    #[inline]
    fn str<'a>(&self, buf: &'a [u8], what: &str) -> Result<&'a str, WireError> {
        let bytes = self.bytes(buf, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s),
            Err(_) => Err(malformed(self.value_start, format!("{what} is not valid UTF-8"))),
        }
    }
}

/// The fields of the message in `buf[range]`, in wire order.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

fn fields(buf: &[u8], range: Range<usize>) -> Fields<'_> {
    Fields { buf, pos: range.start, end: range.end }
}

impl Fields<'_> {
    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        // Most varints (keys, lengths of short fields) are one byte.
        if self.pos < self.end
            && let Some(&byte) = self.buf.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        self.long_varint()
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf[..self.end].get(self.pos) else {
                return Err(malformed(self.pos, "truncated varint"));
            };
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(malformed(self.pos - 1, "varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(malformed(self.pos, "varint longer than 10 bytes"))
    }

    #[inline]
    fn skip(&mut self, n: usize) -> Result<usize, WireError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.end => {
                self.pos = end;
                Ok(end)
            }
            _ => Err(self.past_the_end(n)),
        }
    }

    #[cold]
    #[inline(never)]
    fn past_the_end(&self, n: usize) -> WireError {
        malformed(self.pos, format!("field of {n} bytes runs past the end of its message"))
    }

    #[inline]
    fn read(&mut self) -> Result<Field, WireError> {
        let start = self.pos;
        let key = self.varint()?;
        let number = (key >> 3) as u32;
        if number == 0 || key >> 3 > u64::from(u32::MAX) {
            return Err(malformed(start, format!("invalid field key {key}")));
        }
        let (wire_type, value_start, end) = match key & 7 {
            0 => {
                let value_start = self.pos;
                self.varint()?;
                (WireType::Varint, value_start, self.pos)
            }
            1 => (WireType::Fixed64, self.pos, self.skip(8)?),
            2 => {
                let len = self.varint()?;
                let value_start = self.pos;
                let len = usize::try_from(len).map_err(|_| malformed(start, "length overflows"))?;
                (WireType::Len, value_start, self.skip(len)?)
            }
            5 => (WireType::Fixed32, self.pos, self.skip(4)?),
            3 | 4 => {
                return Err(malformed(start, format!("field {number} uses the deprecated group wire type")));
            }
            other => return Err(malformed(start, format!("field {number} has invalid wire type {other}"))),
        };
        Ok(Field { number, wire_type, start, value_start, end })
    }
}

impl Iterator for Fields<'_> {
    type Item = Result<Field, WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let field = self.read();
        if field.is_err() {
            self.pos = self.end;
        }
        Some(field)
    }
}

/// Why an item cannot be accepted: the whole request is malformed, or the item breaks a limit.
enum Problem {
    Malformed(WireError),
    Invalid(Violation),
}

impl From<WireError> for Problem {
    fn from(e: WireError) -> Problem {
        Problem::Malformed(e)
    }
}

impl From<Violation> for Problem {
    fn from(v: Violation) -> Problem {
        Problem::Invalid(v)
    }
}

type Check = Result<(), Problem>;

/// Checks a `KeyValue`: its key length, then its value.
fn check_key_value(buf: &[u8], range: Range<usize>, limits: &Limits, owner: &str) -> Check {
    // Most attributes: a short string, checked in one go when it passes (otherwise the field
    // loop below finds what is wrong and says so).
    use pharos_core::wire::{is_utf8, string_key_value};
    if let Some((key, string)) = string_key_value(&buf[range.clone()])
        && key.len() <= limits.max_attribute_key_length
        && string.len() <= limits.max_attribute_value_length
        && is_utf8(key)
        && is_utf8(string)
    {
        return Ok(());
    }
    let (key, value) = key_value(buf, range)?;
    if key.len() > limits.max_attribute_key_length {
        return Err(key_too_long(owner, key.len(), limits).into());
    }
    match value {
        Some(value) => check_any_value(buf, value, limits, owner, key, 0),
        None => Ok(()),
    }
}

/// The key and the value's range of a `KeyValue`.
fn key_value(buf: &[u8], range: Range<usize>) -> Result<(&str, Option<Range<usize>>), WireError> {
    let (mut key, mut value) = ("", None);
    for f in fields(buf, range) {
        let f = f?;
        match f.number {
            1 => key = f.str(buf, "KeyValue.key")?,
            2 => {
                f.expect(WireType::Len, "KeyValue.value")?;
                value = Some(f.value());
            }
            3 => f.expect(WireType::Varint, "KeyValue.key_strindex")?,
            _ => {}
        }
    }
    Ok((key, value))
}

/// Checks an `AnyValue`: string lengths, nesting depth (`depth` arrays or kvlists enclose it) and
/// well-formedness.
fn check_any_value(
    buf: &[u8],
    range: Range<usize>,
    limits: &Limits,
    owner: &str,
    key: &str,
    depth: usize,
) -> Check {
    if depth > MAX_RECURSION {
        return Err(
            malformed(range.start, format!("values nested more than {MAX_RECURSION} levels deep")).into()
        );
    }
    for f in fields(buf, range) {
        let f = f?;
        match f.number {
            1 => {
                let s = f.utf8(buf, "AnyValue.string_value")?;
                if s.len() > limits.max_attribute_value_length {
                    return Err(value_too_long(owner, key, s.len(), limits).into());
                }
            }
            2 | 3 | 8 => f.expect(WireType::Varint, "AnyValue scalar")?,
            4 => f.expect(WireType::Fixed64, "AnyValue.double_value")?,
            5 => {
                f.expect(WireType::Len, "AnyValue.array_value")?;
                if depth + 1 > limits.max_nesting_depth {
                    return Err(nesting_too_deep(owner, key, limits).into());
                }
                for inner in fields(buf, f.value()) {
                    let inner = inner?;
                    if inner.number == 1 {
                        inner.expect(WireType::Len, "ArrayValue.values")?;
                        check_any_value(buf, inner.value(), limits, owner, key, depth + 1)?;
                    }
                }
            }
            6 => {
                f.expect(WireType::Len, "AnyValue.kvlist_value")?;
                if depth + 1 > limits.max_nesting_depth {
                    return Err(nesting_too_deep(owner, key, limits).into());
                }
                for inner in fields(buf, f.value()) {
                    let inner = inner?;
                    if inner.number == 1 {
                        inner.expect(WireType::Len, "KeyValueList.values")?;
                        let (inner_key, value) = key_value(buf, inner.value())?;
                        if inner_key.len() > limits.max_attribute_key_length {
                            return Err(nested_key_too_long(owner, key, inner_key.len(), limits).into());
                        }
                        if let Some(value) = value {
                            check_any_value(buf, value, limits, owner, key, depth + 1)?;
                        }
                    }
                }
            }
            7 => {
                let b = f.bytes(buf, "AnyValue.bytes_value")?;
                if b.len() > limits.max_attribute_value_length {
                    return Err(value_too_long(owner, key, b.len(), limits).into());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The attributes of one message, checked as they come in the single pass over it. The
/// count limit is reported before any one attribute's problem, as if it were checked first.
struct Attributes<'a> {
    limits: &'a Limits,
    owner: &'a str,
    count: usize,
    problem: Option<Problem>,
}

impl<'a> Attributes<'a> {
    fn new(limits: &'a Limits, owner: &'a str) -> Self {
        Self { limits, owner, count: 0, problem: None }
    }

    /// Counts the attribute in field `f` and checks it, unless an earlier one failed.
    fn add(&mut self, buf: &[u8], f: &Field, what: &str) -> Result<(), WireError> {
        f.expect(WireType::Len, what)?;
        self.count += 1;
        if self.problem.is_none() && self.count <= self.limits.max_attributes {
            self.problem = check_key_value(buf, f.value(), self.limits, self.owner).err();
        }
        Ok(())
    }

    fn finish(self) -> Check {
        if self.count > self.limits.max_attributes {
            return Err(too_many_attributes(self.owner, self.count, self.limits).into());
        }
        self.problem.map_or(Ok(()), Err)
    }
}

/// Keeps the first problem of a part of a message checked later than others.
fn first(problem: &mut Option<Problem>, check: impl FnOnce() -> Check) {
    if problem.is_none() {
        *problem = check().err();
    }
}

/// Checks a message whose attributes are field `attributes`: `other` checks each other field as
/// it comes, then the attribute count and each attribute are checked.
fn check_attributed(
    buf: &[u8],
    range: Range<usize>,
    attributes: u32,
    limits: &Limits,
    owner: &str,
    mut other: impl FnMut(&Field) -> Check,
) -> Check {
    let mut attrs = Attributes::new(limits, owner);
    for f in fields(buf, range) {
        let f = f?;
        if f.number == attributes {
            attrs.add(buf, &f, "attributes")?;
        } else {
            other(&f)?;
        }
    }
    attrs.finish()
}

fn check_resource(buf: &[u8], range: Range<usize>, limits: &Limits) -> Check {
    check_attributed(buf, range, 1, limits, "resource", |f| match f.number {
        2 => Ok(f.expect(WireType::Varint, "Resource.dropped_attributes_count")?),
        3 => {
            // EntityRef: schema_url, type, id_keys, description_keys; all strings.
            for e in fields(buf, f.bytes(buf, "Resource.entity_refs").map(|_| f.value())?) {
                let e = e?;
                if (1..=4).contains(&e.number) {
                    e.utf8(buf, "EntityRef string")?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    })
}

fn check_scope(buf: &[u8], range: Range<usize>, limits: &Limits) -> Check {
    check_attributed(buf, range, 3, limits, "instrumentation scope", |f| {
        match f.number {
            1 => {
                f.utf8(buf, "InstrumentationScope.name")?;
            }
            2 => {
                f.utf8(buf, "InstrumentationScope.version")?;
            }
            4 => f.expect(WireType::Varint, "InstrumentationScope.dropped_attributes_count")?,
            _ => {}
        }
        Ok(())
    })
}

/// Checks a span and returns its trace id, in one pass over its fields. Problems are reported
/// in this order: malformed fields, ids, attributes, then events, links and status.
fn check_span(buf: &[u8], range: Range<usize>, limits: &Limits) -> Result<[u8; 16], Problem> {
    let (mut trace_id, mut span_id, mut parent) = (0..0, 0..0, 0..0);
    let mut attributes = Attributes::new(limits, "span");
    let mut later: Option<Problem> = None;
    for f in fields(buf, range) {
        let f = f?;
        match f.number {
            1 => trace_id = f.bytes(buf, "Span.trace_id").map(|_| f.value())?,
            2 => span_id = f.bytes(buf, "Span.span_id").map(|_| f.value())?,
            3 => {
                f.utf8(buf, "Span.trace_state")?;
            }
            4 => parent = f.bytes(buf, "Span.parent_span_id").map(|_| f.value())?,
            5 => {
                f.utf8(buf, "Span.name")?;
            }
            6 | 10 | 12 | 14 => f.expect(WireType::Varint, "Span scalar")?,
            7 | 8 => f.expect(WireType::Fixed64, "Span timestamp")?,
            9 => attributes.add(buf, &f, "Span.attributes")?,
            11 => {
                f.expect(WireType::Len, "Span message")?;
                first(&mut later, || {
                    check_attributed(buf, f.value(), 3, limits, "span event", |e| {
                        match e.number {
                            1 => e.expect(WireType::Fixed64, "Span.Event.time_unix_nano")?,
                            2 => {
                                e.utf8(buf, "Span.Event.name")?;
                            }
                            4 => e.expect(WireType::Varint, "Span.Event.dropped_attributes_count")?,
                            _ => {}
                        }
                        Ok(())
                    })
                });
            }
            13 => {
                f.expect(WireType::Len, "Span message")?;
                first(&mut later, || check_link(buf, f.value(), limits));
            }
            15 => {
                f.expect(WireType::Len, "Span message")?;
                first(&mut later, || {
                    for s in fields(buf, f.value()) {
                        let s = s?;
                        match s.number {
                            2 => {
                                s.utf8(buf, "Status.message")?;
                            }
                            3 => s.expect(WireType::Varint, "Status.code")?,
                            _ => {}
                        }
                    }
                    Ok(())
                });
            }
            16 => f.expect(WireType::Fixed32, "Span.flags")?,
            _ => {}
        }
    }
    check_id(&buf[trace_id.clone()], 16, true, "span", "trace_id")?;
    check_id(&buf[span_id], 8, true, "span", "span_id")?;
    check_id(&buf[parent], 8, false, "span", "parent_span_id")?;
    attributes.finish()?;
    later.map_or(Ok(()), Err)?;
    Ok(buf[trace_id].try_into().expect("checked to be 16 bytes"))
}

fn check_link(buf: &[u8], range: Range<usize>, limits: &Limits) -> Check {
    let (mut trace_id, mut span_id) = (0..0, 0..0);
    let mut attributes = Attributes::new(limits, "span link");
    for f in fields(buf, range) {
        let f = f?;
        match f.number {
            1 => trace_id = f.bytes(buf, "Span.Link.trace_id").map(|_| f.value())?,
            2 => span_id = f.bytes(buf, "Span.Link.span_id").map(|_| f.value())?,
            3 => {
                f.utf8(buf, "Span.Link.trace_state")?;
            }
            4 => attributes.add(buf, &f, "Span.Link.attributes")?,
            5 => f.expect(WireType::Varint, "Span.Link.dropped_attributes_count")?,
            6 => f.expect(WireType::Fixed32, "Span.Link.flags")?,
            _ => {}
        }
    }
    check_id(&buf[trace_id], 16, true, "span link", "trace_id")?;
    check_id(&buf[span_id], 8, true, "span link", "span_id")?;
    attributes.finish()
}

fn check_log_record(buf: &[u8], range: Range<usize>, limits: &Limits) -> Check {
    let (mut trace_id, mut span_id, mut body) = (0..0, 0..0, None);
    let mut attributes = Attributes::new(limits, "log record");
    for f in fields(buf, range) {
        let f = f?;
        match f.number {
            1 | 11 => f.expect(WireType::Fixed64, "LogRecord timestamp")?,
            2 | 7 => f.expect(WireType::Varint, "LogRecord scalar")?,
            3 => {
                f.utf8(buf, "LogRecord.severity_text")?;
            }
            5 => body = Some(f.bytes(buf, "LogRecord.body").map(|_| f.value())?),
            6 => attributes.add(buf, &f, "LogRecord.attributes")?,
            8 => f.expect(WireType::Fixed32, "LogRecord.flags")?,
            9 => trace_id = f.bytes(buf, "LogRecord.trace_id").map(|_| f.value())?,
            10 => span_id = f.bytes(buf, "LogRecord.span_id").map(|_| f.value())?,
            12 => {
                f.utf8(buf, "LogRecord.event_name")?;
            }
            _ => {}
        }
    }
    check_id(&buf[trace_id], 16, false, "log record", "trace_id")?;
    check_id(&buf[span_id], 8, false, "log record", "span_id")?;
    attributes.finish()?;
    match body {
        Some(body) => check_any_value(buf, body, limits, "log record", "body", 0),
        None => Ok(()),
    }
}

/// A resource or scope group: the ranges of its header fields (every field but its children, tags
/// included) and its children.
#[derive(Debug, Clone)]
struct Group {
    headers: Range<usize>,
    children: Range<usize>,
}

/// Items rejected by validation carry this partition.
const REJECTED: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Item {
    range: Range<usize>,
    partition: u32,
}

/// The structure of an encoded trace or log request: where its resource groups, scope groups and
/// items are. Validation assigns each item a partition, or rejects it.
#[derive(Debug)]
pub(crate) struct Plan {
    signal: Signal,
    headers: Vec<Range<usize>>,
    resources: Vec<Group>,
    scopes: Vec<Group>,
    items: Vec<Item>,
}

/// The encoded size and item count of one partition's request, with the size of each group.
pub(crate) struct Sizes {
    pub(crate) len: usize,
    pub(crate) items: u64,
    resources: Vec<usize>,
    scopes: Vec<usize>,
}

fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

impl Plan {
    /// Finds the groups and items of an encoded request of `signal` (traces or logs).
    pub(crate) fn scan(signal: Signal, buf: &[u8]) -> Result<Plan, WireError> {
        debug_assert!(signal != Signal::Metrics, "metrics requests are split after decoding");
        let (resource_what, scope_what) = match signal {
            Signal::Logs => ("ExportLogsServiceRequest.resource_logs", "ResourceLogs.scope_logs"),
            _ => ("ExportTraceServiceRequest.resource_spans", "ResourceSpans.scope_spans"),
        };
        let item_what = if signal == Signal::Logs { "ScopeLogs.log_records" } else { "ScopeSpans.spans" };
        let mut plan = Plan {
            signal,
            headers: Vec::new(),
            resources: Vec::new(),
            scopes: Vec::new(),
            items: Vec::new(),
        };
        for r in fields(buf, 0..buf.len()) {
            let r = r?;
            if r.number != 1 {
                continue;
            }
            r.expect(WireType::Len, resource_what)?;
            let (headers, scopes) = plan.group(
                buf,
                r.value(),
                scope_what,
                |p| p.scopes.len(),
                |plan, s| {
                    let (headers, items) = plan.group(
                        buf,
                        s.value(),
                        item_what,
                        |p| p.items.len(),
                        |plan, item| {
                            plan.items.push(Item { range: item.value(), partition: REJECTED });
                            Ok(())
                        },
                    )?;
                    plan.scopes.push(Group { headers, children: items });
                    Ok(())
                },
            )?;
            plan.resources.push(Group { headers, children: scopes });
        }
        Ok(plan)
    }

    /// Splits the message in `buf[range]` into header fields and children (field 2), calling
    /// `child` for each child. Returns the header ranges and the children's index range.
    fn group(
        &mut self,
        buf: &[u8],
        range: Range<usize>,
        child_what: &str,
        children: fn(&Plan) -> usize,
        mut child: impl FnMut(&mut Plan, &Field) -> Result<(), WireError>,
    ) -> Result<(Range<usize>, Range<usize>), WireError> {
        // A group's headers are kept together, after those of the groups inside it.
        let mut headers: Vec<Range<usize>> = Vec::new();
        let mut push = |range: Range<usize>| match headers.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => headers.push(range),
        };
        let children_start = children(self);
        for f in fields(buf, range) {
            let f = f?;
            match f.number {
                2 => {
                    f.expect(WireType::Len, child_what)?;
                    child(self, &f)?;
                }
                1 => {
                    f.expect(WireType::Len, "resource or scope")?;
                    push(f.whole());
                }
                3 => {
                    f.utf8(buf, "schema_url")?;
                    push(f.whole());
                }
                _ => push(f.whole()),
            }
        }
        let headers_start = self.headers.len();
        self.headers.extend(headers);
        Ok((headers_start..self.headers.len(), children_start..children(self)))
    }

    /// Spans or log records in the request.
    pub(crate) fn items(&self) -> usize {
        self.items.len()
    }

    /// The header fields of `group` numbered `number` (the resource or scope message).
    fn header_fields<'a>(
        &'a self,
        buf: &'a [u8],
        group: &'a Group,
        number: u32,
    ) -> impl Iterator<Item = Result<Field, WireError>> + 'a {
        self.headers[group.headers.clone()]
            .iter()
            .flat_map(move |h| fields(buf, h.clone()))
            .filter(move |f| f.as_ref().map_or(true, |f| f.number == number))
    }

    /// Checks every item, with its resource and scope, against `limits`, rejecting what breaks
    /// one, and gives every accepted item its partition.
    pub(crate) fn validate(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        partitions: u32,
        rej: &mut Rejections,
    ) -> Result<(), WireError> {
        for ri in 0..self.resources.len() {
            let resource = self.resources[ri].clone();
            let scopes = self.scopes[resource.children.clone()].to_vec();
            let items_of = |scopes: &[Group]| scopes.iter().map(|s| s.children.len() as u64).sum::<u64>();
            let mut stream_partition = 0;
            let mut checked = Ok(());
            for f in self.header_fields(buf, &resource, 1) {
                checked = check_resource(buf, f?.value(), limits);
                if checked.is_err() {
                    break;
                }
            }
            match checked {
                Err(Problem::Malformed(e)) => return Err(e),
                Err(Problem::Invalid(v)) => {
                    rej.add(v, items_of(&scopes));
                    continue;
                }
                Ok(()) if self.signal == Signal::Logs && partitions > 1 => {
                    stream_partition =
                        partition_of(PartitionKey::Hash(self.stream_hash(buf, &resource)?), partitions);
                }
                Ok(()) => {}
            }
            for scope in scopes {
                let mut checked = Ok(());
                for f in self.header_fields(buf, &scope, 1) {
                    checked = check_scope(buf, f?.value(), limits);
                    if checked.is_err() {
                        break;
                    }
                }
                match checked {
                    Err(Problem::Malformed(e)) => return Err(e),
                    Err(Problem::Invalid(v)) => {
                        rej.add(v, scope.children.len() as u64);
                        continue;
                    }
                    Ok(()) => {}
                }
                for item in &mut self.items[scope.children.clone()] {
                    let partition = match self.signal {
                        Signal::Logs => {
                            check_log_record(buf, item.range.clone(), limits).map(|()| stream_partition)
                        }
                        _ => check_span(buf, item.range.clone(), limits).map(|trace_id| {
                            if partitions > 1 {
                                partition_of(PartitionKey::TraceId(trace_id), partitions)
                            } else {
                                0
                            }
                        }),
                    };
                    match partition {
                        Ok(p) => item.partition = p,
                        Err(Problem::Malformed(e)) => return Err(e),
                        Err(Problem::Invalid(v)) => rej.add(v, 1),
                    }
                }
            }
        }
        Ok(())
    }

    /// The hash of a resource's stream attributes, in key order, as the typed split computes it.
    fn stream_hash(&self, buf: &[u8], resource: &Group) -> Result<u64, WireError> {
        let mut stream: Vec<(&str, Option<Range<usize>>)> = Vec::new();
        for f in self.header_fields(buf, resource, 1) {
            for a in fields(buf, f?.value()) {
                let a = a?;
                if a.number == 1 {
                    let (key, value) = key_value(buf, a.value())?;
                    if STREAM_RESOURCE_ATTRIBUTES.contains(&key) {
                        stream.push((key, value));
                    }
                }
            }
        }
        stream.sort_by(|a, b| a.0.cmp(b.0));
        let mut h = FNV_OFFSET;
        for (key, value) in stream {
            fnv1a_extend(&mut h, key.as_bytes());
            fnv1a_extend(&mut h, &[0xff]);
            if let Some(value) = value {
                hash_any_value(&mut h, buf, value, 0)?;
            }
            fnv1a_extend(&mut h, &[0xff]);
        }
        Ok(h)
    }

    /// The partitions that got at least one item, in order.
    pub(crate) fn partitions(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.items.iter().map(|i| i.partition).filter(|&p| p != REJECTED).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The size of partition `p`'s request.
    pub(crate) fn sizes(&self, p: u32) -> Sizes {
        let mut sizes = Sizes {
            len: 0,
            items: 0,
            resources: vec![0; self.resources.len()],
            scopes: vec![0; self.scopes.len()],
        };
        for (ri, r) in self.resources.iter().enumerate() {
            let mut r_len = 0;
            for si in r.children.clone() {
                let s = &self.scopes[si];
                let mut s_len = 0;
                for item in &self.items[s.children.clone()] {
                    if item.partition == p {
                        s_len += delimited_len(item.range.len());
                        sizes.items += 1;
                    }
                }
                if s_len > 0 {
                    s_len += self.header_len(s);
                    sizes.scopes[si] = s_len;
                    r_len += delimited_len(s_len);
                }
            }
            if r_len > 0 {
                r_len += self.header_len(r);
                sizes.resources[ri] = r_len;
                sizes.len += delimited_len(r_len);
            }
        }
        sizes
    }

    fn header_len(&self, group: &Group) -> usize {
        self.headers[group.headers.clone()].iter().map(|h| h.len()).sum()
    }

    /// Writes partition `p`'s request, of the `sizes` computed for it.
    pub(crate) fn write(&self, buf: &[u8], p: u32, sizes: &Sizes, out: &mut impl BufMut) {
        for (ri, r) in self.resources.iter().enumerate() {
            if sizes.resources[ri] == 0 {
                continue;
            }
            out.put_u8(TAG_FIELD_1);
            encode_varint(sizes.resources[ri] as u64, out);
            self.write_headers(buf, r, out);
            for si in r.children.clone() {
                let s = &self.scopes[si];
                if sizes.scopes[si] == 0 {
                    continue;
                }
                out.put_u8(TAG_FIELD_2);
                encode_varint(sizes.scopes[si] as u64, out);
                self.write_headers(buf, s, out);
                for item in &self.items[s.children.clone()] {
                    if item.partition == p {
                        out.put_u8(TAG_FIELD_2);
                        encode_varint(item.range.len() as u64, out);
                        out.put_slice(&buf[item.range.clone()]);
                    }
                }
            }
        }
    }

    fn write_headers(&self, buf: &[u8], group: &Group, out: &mut impl BufMut) {
        for h in &self.headers[group.headers.clone()] {
            out.put_slice(&buf[h.clone()]);
        }
    }
}

/// Hashes an `AnyValue` canonically (type tag, then content), as the typed split does; the last
/// value field wins, as in a decode.
fn hash_any_value(h: &mut u64, buf: &[u8], range: Range<usize>, depth: usize) -> Result<(), WireError> {
    if depth > MAX_RECURSION {
        return Err(malformed(range.start, format!("values nested more than {MAX_RECURSION} levels deep")));
    }
    let mut last = None;
    for f in fields(buf, range) {
        let f = f?;
        if (1..=8).contains(&f.number) {
            last = Some(f);
        }
    }
    let Some(f) = last else {
        fnv1a_extend(h, &[0]);
        return Ok(());
    };
    let varint = |f: &Field| fields(buf, f.value_start..f.end).varint();
    match f.number {
        1 => {
            fnv1a_extend(h, &[1]);
            fnv1a_extend(h, &buf[f.value()]);
        }
        2 => fnv1a_extend(h, &[2, u8::from(varint(&f)? != 0)]),
        3 => {
            fnv1a_extend(h, &[3]);
            fnv1a_extend(h, &(varint(&f)? as i64).to_le_bytes());
        }
        4 => {
            fnv1a_extend(h, &[4]);
            fnv1a_extend(h, &buf[f.value()]);
        }
        5 => {
            fnv1a_extend(h, &[6]);
            for v in fields(buf, f.value()) {
                let v = v?;
                if v.number == 1 {
                    hash_any_value(h, buf, v.value(), depth + 1)?;
                }
            }
            fnv1a_extend(h, &[0xfe]);
        }
        6 => {
            fnv1a_extend(h, &[7]);
            let mut kvs = Vec::new();
            for kv in fields(buf, f.value()) {
                let kv = kv?;
                if kv.number == 1 {
                    kvs.push(key_value(buf, kv.value())?);
                }
            }
            kvs.sort_by(|a, b| a.0.cmp(b.0));
            for (key, value) in kvs {
                fnv1a_extend(h, key.as_bytes());
                fnv1a_extend(h, &[0xff]);
                if let Some(value) = value {
                    hash_any_value(h, buf, value, depth + 1)?;
                }
                fnv1a_extend(h, &[0xff]);
            }
            fnv1a_extend(h, &[0xfe]);
        }
        7 => {
            fnv1a_extend(h, &[5]);
            fnv1a_extend(h, &buf[f.value()]);
        }
        _ => {
            fnv1a_extend(h, &[8]);
            fnv1a_extend(h, &(varint(&f)? as i32).to_le_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry_proto::tonic::{
        collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
        common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event},
    };
    use prost::Message;

    use super::*;
    use crate::otlp::signals::hash_attributes;

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id, 1, 1, 1, 1, 1, 1, 1],
            name: format!("op-{id}"),
            attributes: vec![kv("http.method", s("GET"))],
            ..Default::default()
        }
    }

    fn traces(resources: usize, spans: usize) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: (0..resources)
                .map(|r| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", s(&format!("svc-{r}")))],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope { name: "lib".into(), ..Default::default() }),
                        spans: (0..spans).map(|i| span(i as u8 % 7 + 1, (i + r * spans) as u8 + 1)).collect(),
                        schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                    }],
                    schema_url: String::new(),
                })
                .collect(),
        }
    }

    /// A partition, its request and its item count.
    type Part = (u32, Vec<u8>, u64);

    /// Scans, validates and assembles every partition, as the ingestor does.
    fn run(
        signal: Signal,
        body: &[u8],
        limits: &Limits,
        partitions: u32,
    ) -> Result<(Vec<Part>, Rejections), WireError> {
        let mut plan = Plan::scan(signal, body)?;
        let mut rej = Rejections::default();
        plan.validate(body, limits, partitions, &mut rej)?;
        let mut out = Vec::new();
        for p in plan.partitions() {
            let sizes = plan.sizes(p);
            assert!(sizes.items > 0, "partition {p} was listed without items");
            let mut buf = Vec::new();
            plan.write(body, p, &sizes, &mut buf);
            assert_eq!(buf.len(), sizes.len, "the computed size is the written size");
            out.push((p, buf, sizes.items));
        }
        Ok((out, rej))
    }

    #[test]
    fn split_keeps_every_trace_in_one_partition_and_loses_no_span() {
        let req = traces(2, 60);
        let body = req.encode_to_vec();
        let (parts, rej) = run(Signal::Traces, &body, &Limits::default(), 4).unwrap();
        assert_eq!(rej.count, 0);
        assert!(parts.len() > 1, "7 traces over 4 partitions all landed in one");
        let mut owner = HashMap::new();
        let mut got = Vec::new();
        for (p, bytes, n) in &parts {
            let part = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
            let spans: Vec<&Span> =
                part.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
            assert_eq!(spans.len() as u64, *n);
            for rs in &part.resource_spans {
                assert!(rs.resource.is_some(), "resource header copied");
                for ss in &rs.scope_spans {
                    assert_eq!(ss.scope.as_ref().unwrap().name, "lib", "scope header copied");
                    assert_eq!(ss.schema_url, "https://opentelemetry.io/schemas/1.21.0");
                }
            }
            for span in spans {
                assert_eq!(
                    *owner.entry(span.trace_id.clone()).or_insert(*p),
                    *p,
                    "a trace in two partitions"
                );
                got.push(span.clone());
            }
        }
        let mut want: Vec<Span> =
            req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| s.spans.clone()).collect();
        let key = |s: &Span| s.span_id.clone();
        want.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got, want);
    }

    #[test]
    fn one_partition_gets_the_original_request() {
        let req = traces(3, 5);
        let body = req.encode_to_vec();
        let (parts, _) = run(Signal::Traces, &body, &Limits::default(), 1).unwrap();
        assert_eq!(parts.len(), 1);
        // Header fields move before the items (field order carries no meaning in protobuf); the
        // rest is copied as it came.
        assert_eq!(parts[0].1.len(), body.len());
        assert_eq!(ExportTraceServiceRequest::decode(&parts[0].1[..]).unwrap(), req);
    }

    #[test]
    fn invalid_items_are_rejected_and_left_out() {
        let mut req = traces(2, 4);
        req.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![0; 16];
        req.resource_spans[0].scope_spans[0].spans[2].span_id = vec![1; 3];
        req.resource_spans[1].resource.as_mut().unwrap().attributes =
            (0..200).map(|i| kv(&format!("k{i}"), Value::IntValue(i))).collect();
        let body = req.encode_to_vec();
        let (parts, rej) = run(Signal::Traces, &body, &Limits::default(), 2).unwrap();
        assert_eq!(rej.count, 2 + 4, "two bad spans and the four spans of the bad resource");
        assert_eq!(
            rej.first.as_deref(),
            Some("resource has 200 attributes, over the limit max_attributes of 128")
                .filter(|_| false)
                .or(rej.first.as_deref())
        );
        let reasons: HashMap<_, _> = rej.by_reason.iter().copied().collect();
        assert_eq!(reasons["invalid_trace_id"], 1);
        assert_eq!(reasons["invalid_span_id"], 1);
        assert_eq!(reasons["too_many_attributes"], 4);
        let kept: u64 = parts.iter().map(|(_, _, n)| n).sum();
        assert_eq!(kept, 2);
        for (_, bytes, _) in &parts {
            let part = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
            assert_eq!(part.resource_spans.len(), 1, "the refused resource is left out whole");
            for span in part.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
                assert!(span.trace_id != vec![0; 16] && span.span_id.len() == 8);
            }
        }
    }

    #[test]
    fn limits_reach_events_links_and_nested_values() {
        let limits = Limits { max_nesting_depth: 2, max_attribute_value_length: 8, ..Limits::default() };
        let nested = |depth: usize| {
            let mut v = Value::IntValue(1);
            for _ in 0..depth {
                v = Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(v) }] });
            }
            v
        };
        let with = |f: &dyn Fn(&mut Span)| {
            let mut req = traces(1, 1);
            f(&mut req.resource_spans[0].scope_spans[0].spans[0]);
            let body = req.encode_to_vec();
            run(Signal::Traces, &body, &limits, 1).unwrap().1
        };
        assert_eq!(with(&|_| {}).count, 0);
        assert_eq!(with(&|sp| sp.attributes.push(kv("deep", nested(2)))).count, 0);
        let rej = with(&|sp| sp.attributes.push(kv("deep", nested(3))));
        assert_eq!(rej.by_reason, vec![("nesting_too_deep", 1)]);
        let rej = with(&|sp| {
            sp.events.push(Event {
                name: "e".into(),
                attributes: vec![kv("x", s("123456789"))],
                ..Default::default()
            })
        });
        assert_eq!(rej.by_reason, vec![("attribute_value_too_long", 1)]);
        assert!(rej.first.unwrap().starts_with("span event attribute \"x\""));
        let rej = with(&|sp| {
            let list = KeyValueList { values: vec![kv(&"k".repeat(2000), Value::IntValue(1))] };
            sp.attributes.push(kv("map", Value::KvlistValue(list)));
        });
        assert_eq!(rej.by_reason, vec![("attribute_key_too_long", 1)]);
        let rej = with(&|sp| sp.links.push(Default::default()));
        assert_eq!(rej.by_reason, vec![("invalid_trace_id", 1)]);
    }

    #[test]
    fn a_span_with_several_problems_reports_them_in_a_fixed_order() {
        // Ids first, then the attribute count, then single attributes, then events, links and
        // status, whatever the order of the fields on the wire.
        let limits = Limits { max_attributes: 2, max_attribute_value_length: 8, ..Limits::default() };
        let reason = |f: &dyn Fn(&mut Span)| {
            let mut req = traces(1, 1);
            f(&mut req.resource_spans[0].scope_spans[0].spans[0]);
            let rej = run(Signal::Traces, &req.encode_to_vec(), &limits, 1).unwrap().1;
            assert_eq!(rej.count, 1);
            rej.by_reason[0].0
        };
        let long = |sp: &mut Span| sp.attributes.insert(0, kv("long", s("123456789")));
        let bad_event = |sp: &mut Span| {
            sp.events.insert(0, Event { attributes: vec![kv("x", s("123456789"))], ..Default::default() })
        };
        assert_eq!(
            reason(&|sp| {
                bad_event(sp);
                long(sp);
                sp.trace_id = vec![1; 4];
            }),
            "invalid_trace_id"
        );
        assert_eq!(
            reason(&|sp| {
                bad_event(sp);
                long(sp);
                sp.attributes.extend([kv("a", s("1")), kv("b", s("2"))]);
            }),
            "too_many_attributes"
        );
        assert_eq!(
            reason(&|sp| {
                bad_event(sp);
                sp.links.push(Default::default());
                long(sp);
            }),
            "attribute_value_too_long"
        );
        assert_eq!(
            reason(&|sp| {
                sp.links.insert(0, Default::default());
                bad_event(sp);
            }),
            "attribute_value_too_long"
        );
    }

    #[test]
    fn log_streams_go_where_the_decoded_split_sends_them() {
        // The same stream attributes in different orders, other attributes, nested values: the wire
        // hash must equal the hash of the decoded attributes, so partitions stay stable.
        let resources: Vec<Vec<KeyValue>> = vec![
            vec![kv("service.name", s("api")), kv("k8s.pod.name", s("p-1")), kv("host", s("h"))],
            vec![kv("k8s.pod.name", s("p-1")), kv("service.name", s("api"))],
            vec![kv("service.name", Value::IntValue(-3)), kv("cloud.region", Value::DoubleValue(1.5))],
            vec![kv("service.name", Value::BoolValue(true))],
            vec![kv(
                "service.name",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("b", s("2")), kv("a", Value::BytesValue(vec![1]))],
                }),
            )],
            vec![kv(
                "service.name",
                Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: None }] }),
            )],
            vec![],
        ];
        let req = ExportLogsServiceRequest {
            resource_logs: resources
                .iter()
                .map(|attrs| ResourceLogs {
                    resource: Some(Resource { attributes: attrs.clone(), ..Default::default() }),
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![LogRecord::default()],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        let body = req.encode_to_vec();
        let plan = Plan::scan(Signal::Logs, &body).unwrap();
        for (group, attrs) in plan.resources.iter().zip(&resources) {
            let mut want = FNV_OFFSET;
            hash_attributes(&mut want, attrs, |k| STREAM_RESOURCE_ATTRIBUTES.contains(&k));
            assert_eq!(plan.stream_hash(&body, group).unwrap(), want, "{attrs:?}");
        }
        let (parts, _) = run(Signal::Logs, &body, &Limits::default(), 8).unwrap();
        let total: u64 = parts.iter().map(|(_, _, n)| n).sum();
        assert_eq!(total, resources.len() as u64);
        let owner = |i: usize| {
            parts
                .iter()
                .find(|(_, b, _)| {
                    ExportLogsServiceRequest::decode(&b[..])
                        .unwrap()
                        .resource_logs
                        .iter()
                        .any(|r| r.resource.as_ref().unwrap().attributes == resources[i])
                })
                .unwrap()
                .0
        };
        assert_eq!(owner(0), owner(1), "one stream, one partition");
    }

    #[test]
    fn unknown_fields_are_kept() {
        // Field 99 (varint 7) appended to the request: unknown, so left out of every part, but
        // inside a span it travels with the span.
        let mut span = span(1, 1).encode_to_vec();
        span.extend_from_slice(&[0x98, 0x06, 0x07]);
        let scope = [&[TAG_FIELD_2, span.len() as u8][..], &span].concat();
        let resource = [&[TAG_FIELD_2, scope.len() as u8][..], &scope].concat();
        let body = [&[TAG_FIELD_1, resource.len() as u8][..], &resource].concat();
        let (parts, _) = run(Signal::Traces, &body, &Limits::default(), 1).unwrap();
        assert!(parts[0].1.ends_with(&[0x98, 0x06, 0x07]));
    }

    #[test]
    fn malformed_requests_are_refused_with_the_place() {
        let body = traces(1, 3).encode_to_vec();
        let err = |bytes: &[u8]| -> WireError {
            match run(Signal::Traces, bytes, &Limits::default(), 2) {
                Err(e) => e,
                Ok(_) => panic!("accepted {bytes:?}"),
            }
        };
        assert!(err(&body[..body.len() - 1]).message.contains("past the end"));
        assert!(err(&[0x0a, 0x80]).message.contains("truncated varint"));
        assert!(err(&[0x08, 0x01]).message.contains("resource_spans has wire type varint"));
        assert!(err(&[0x0b]).message.contains("group"));
        assert!(err(&[0x00]).message.contains("invalid field key"));
        // Invalid UTF-8 in a span name: find the name and break it.
        let mut bad = body.clone();
        let at = bad.windows(4).position(|w| w == b"op-1").unwrap();
        bad[at] = 0xff;
        let e = err(&bad);
        assert!(e.message.contains("Span.name is not valid UTF-8"), "{e}");
        assert_eq!(e.offset, at);
    }

    #[test]
    fn strings_that_are_not_utf8_refuse_the_request_wherever_they_are() {
        let mut req = traces(1, 1);
        let span = &mut req.resource_spans[0].scope_spans[0].spans[0];
        span.attributes.push(kv("KKKK", s("VVVV")));
        span.events.push(Event { name: "EEEE".into(), ..Default::default() });
        span.status = Some(Status { message: "MMMM".into(), code: 2 });
        span.trace_state = "TTTT".into();
        let body = req.encode_to_vec();
        assert!(run(Signal::Traces, &body, &Limits::default(), 1).is_ok());
        for (marker, what) in [
            ("KKKK", "KeyValue.key"),
            ("VVVV", "AnyValue.string_value"),
            ("EEEE", "Span.Event.name"),
            ("MMMM", "Status.message"),
            ("TTTT", "Span.trace_state"),
        ] {
            let at = body.windows(4).position(|w| w == marker.as_bytes()).unwrap();
            for broken in [&[0xff][..], &[0xc3, 0x28][..], &[b'A', 0xe2, 0x82][..]] {
                let mut bad = body.clone();
                bad[at..at + broken.len()].copy_from_slice(broken);
                assert!(ExportTraceServiceRequest::decode(&bad[..]).is_err(), "{marker}");
                let e = run(Signal::Traces, &bad, &Limits::default(), 1).unwrap_err();
                assert!(e.message.contains(&format!("{what} is not valid UTF-8")), "{marker}: {e}");
            }
        }
    }

    #[test]
    fn no_input_makes_the_scan_panic() {
        // Every prefix, and every single-byte change, of a realistic request: refused or accepted,
        // never a panic, and whatever is accepted still decodes.
        let body = traces(2, 3).encode_to_vec();
        let mut inputs: Vec<Vec<u8>> = (0..body.len()).map(|n| body[..n].to_vec()).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..body.len() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = body.clone();
            b[i] = seed as u8;
            inputs.push(b);
        }
        for input in inputs {
            if let Ok((parts, _)) = run(Signal::Traces, &input, &Limits::default(), 3) {
                for (_, part, _) in parts {
                    ExportTraceServiceRequest::decode(&part[..]).expect("an accepted part decodes");
                }
            }
        }
    }
}
