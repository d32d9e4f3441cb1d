//! The log model: streams named by their labels, entries with a time, a line and structured
//! metadata, and the source trait the LogQL engine reads from.

use std::fmt::{self, Display, Formatter};
use std::sync::Arc;

/// A label set: sorted by name, names unique. Stream labels, and the labels of a query result
/// (stream labels plus what parsers extracted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Sorts `pairs` by name; of repeated names the last wins. Empty values are dropped (a
    /// label with an empty value does not exist, as in Loki and Prometheus).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut pairs: Vec<(String, String)> = pairs.into_iter().collect();
        // Stable: of equal names the later stays later, and dedup keeps the last.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        out.retain(|(_, v)| !v.is_empty());
        Self(out)
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok().map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_inner(self) -> Vec<(String, String)> {
        self.0
    }

    /// A stable 64-bit hash of the label set (FNV-1a over names and values), the same in
    /// every process and version: block indexes store it.
    pub fn fingerprint(&self) -> u64 {
        pharos_core::label_set_hash(self.iter())
    }
}

/// `{a="1", b="x\"y"}`: how Loki prints a label set (Go-quoted values).
impl Display for Labels {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&pharos_core::loki::format_labels(&self.0))
    }
}

/// In `meta.json` and JSON answers: an object of names to values.
impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(Labels::new(map))
    }
}

/// One log entry of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unix nanoseconds.
    pub timestamp: i64,
    pub line: String,
    /// Structured metadata: name/value pairs kept with the entry, queryable as labels
    /// without being stream labels (OTLP attributes, severity, trace and span ids).
    pub metadata: Vec<(String, String)>,
}

/// A stream's entries in a time range, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntries {
    pub labels: Arc<Labels>,
    pub entries: Vec<Entry>,
}

/// A test on a raw line that a source may apply before it builds entries: the query's line
/// filters that see the line as stored (those before any `line_format` or `decolorize`).
/// Entries it refuses would be dropped by the pipeline anyway, so a source that ignores it is
/// still correct, only slower.
pub trait LineTest: Send + Sync {
    fn keep(&self, line: &str) -> bool;
}

/// What a query asks a source for.
#[derive(Clone)]
pub struct Selection<'a> {
    /// The query's stream selector.
    pub matchers: &'a [crate::query::Matcher],
    /// Entries with timestamps in `[start, end)` (unix nanoseconds).
    pub start: i64,
    pub end: i64,
    pub lines: Option<Arc<dyn LineTest>>,
    /// When set, only these structured metadata names are needed: a source may leave the
    /// others out of the entries it returns.
    pub metadata: Option<Arc<[String]>>,
    /// False when the query only counts the entries that pass `lines`: a source may then
    /// return entries with empty lines (and skip reading them past the test).
    pub lines_needed: bool,
}

impl Selection<'_> {
    pub fn keeps(&self, line: &str) -> bool {
        self.lines.as_ref().is_none_or(|t| t.keep(line))
    }

    /// Whether the metadata `name` is needed.
    pub fn needs(&self, name: &str) -> bool {
        self.metadata.as_ref().is_none_or(|names| names.iter().any(|n| n == name))
    }
}

/// What a source answered, and how much it read to answer it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selected {
    pub streams: Vec<StreamEntries>,
    /// Lines (and their bytes) read, before the line test.
    pub lines_scanned: u64,
    pub bytes_scanned: u64,
}

/// Where the LogQL engine reads logs from. The store answers with the head and blocks; tests
/// answer from memory.
pub trait LogSource {
    /// Every stream whose labels match the selection's matchers, with its entries in the
    /// selection's time range that pass its line test, oldest first (lines left empty when
    /// the selection does not need them). Streams without an entry may be left out.
    fn select(&self, selection: &Selection<'_>) -> Result<Selected, SourceError>;
}

/// A source could not answer: why, and whose fault it is (a limit or a bad matcher: the
/// query's, `TooLarge` or `InvalidInput`; a storage error: `Unavailable`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String, pub pharos_core::ErrorCode);

/// An in-memory source: streams and their entries, for tests and for data already read.
#[derive(Debug, Clone, Default)]
pub struct MemSource {
    pub streams: Vec<StreamEntries>,
}

impl MemSource {
    /// Adds `entry` to the stream `labels`, creating it; entries are sorted at [`Self::finish`].
    pub fn push(&mut self, labels: &Labels, entry: Entry) {
        match self.streams.iter_mut().find(|s| *s.labels == *labels) {
            Some(stream) => stream.entries.push(entry),
            None => {
                self.streams.push(StreamEntries { labels: Arc::new(labels.clone()), entries: vec![entry] })
            }
        }
    }

    /// Sorts each stream's entries by time (stable: equal times keep their order).
    pub fn finish(mut self) -> Self {
        for stream in &mut self.streams {
            stream.entries.sort_by_key(|e| e.timestamp);
        }
        self
    }
}

impl LogSource for MemSource {
    fn select(&self, selection: &Selection<'_>) -> Result<Selected, SourceError> {
        let matchers = Matchers::compile(selection.matchers)?;
        let mut out = Selected::default();
        for stream in &self.streams {
            if !matchers.matches(&stream.labels) {
                continue;
            }
            let mut entries = Vec::new();
            for e in &stream.entries {
                if e.timestamp >= selection.start && e.timestamp < selection.end {
                    out.lines_scanned += 1;
                    out.bytes_scanned += e.line.len() as u64;
                    if selection.keeps(&e.line) {
                        let mut e = e.clone();
                        if !selection.lines_needed {
                            e.line.clear();
                        }
                        entries.push(e);
                    }
                }
            }
            if !entries.is_empty() {
                out.streams.push(StreamEntries { labels: stream.labels.clone(), entries });
            }
        }
        Ok(out)
    }
}

/// Stream matchers with their regexes compiled once (a missing label has the empty value;
/// regexes are anchored at both ends).
#[derive(Debug, Clone)]
pub struct Matchers(Vec<(crate::query::Matcher, Option<regex::Regex>)>);

impl Matchers {
    pub fn compile(matchers: &[crate::query::Matcher]) -> Result<Self, SourceError> {
        let compiled = matchers
            .iter()
            .map(|m| {
                let re = if m.op.is_regex() {
                    Some(regex::Regex::new(&format!("^(?:{})$", m.value)).map_err(|e| {
                        SourceError(
                            format!("invalid regex in {}{}\"{}\": {e}", m.name, m.op.as_str(), m.value),
                            pharos_core::ErrorCode::InvalidInput,
                        )
                    })?)
                } else {
                    None
                };
                Ok((m.clone(), re))
            })
            .collect::<Result<_, SourceError>>()?;
        Ok(Self(compiled))
    }

    /// Whether `labels` satisfy every matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        use crate::query::MatchOp;
        self.0.iter().all(|(m, re)| {
            let value = labels.get(&m.name).unwrap_or("");
            match (m.op, re) {
                (MatchOp::Eq, _) => value == m.value,
                (MatchOp::Neq, _) => value != m.value,
                (MatchOp::Re, Some(re)) => re.is_match(value),
                (MatchOp::Nre, Some(re)) => !re.is_match(value),
                (_, None) => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn labels_sort_keep_the_last_repeat_and_drop_empty_values() {
        let labels = l(&[("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(labels.to_string(), r#"{a="1", b="3"}"#);
        assert_eq!(labels.get("b"), Some("3"));
        assert_eq!(labels.get("c"), None);
        assert_eq!(l(&[("q", "x\"y\\z")]).to_string(), r#"{q="x\"y\\z"}"#);
    }

    #[test]
    fn fingerprints_depend_on_names_and_values_not_on_order() {
        assert_eq!(l(&[("a", "1"), ("b", "2")]).fingerprint(), l(&[("b", "2"), ("a", "1")]).fingerprint());
        assert_ne!(l(&[("a", "12")]).fingerprint(), l(&[("a1", "2")]).fingerprint());
        // Stable across versions: blocks store it.
        assert_eq!(Labels::default().fingerprint(), 0xcbf2_9ce4_8422_2325);
    }
}
