//! The manifest (`--manifest FILE`): one JSON line per acknowledged request saying what it
//! carried, so that a checker can query all of it back: trace ids, log streams with their time
//! range and entry count, series selectors with their sample time range.

use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;

/// The entries of one stream in one request.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StreamRange {
    /// A LogQL stream selector matching the stream, e.g. `{service_name="cart"}`.
    pub labels: String,
    /// First and last entry time, unix nanoseconds (inclusive).
    pub from_ns: u64,
    pub to_ns: u64,
    pub count: u64,
}

impl StreamRange {
    pub(crate) fn new(labels: String) -> StreamRange {
        StreamRange { labels, from_ns: u64::MAX, to_ns: 0, count: 0 }
    }
    pub(crate) fn add(&mut self, t: u64) {
        self.from_ns = self.from_ns.min(t);
        self.to_ns = self.to_ns.max(t);
        self.count += 1;
    }
    pub(crate) fn shifted(&self, by: u64) -> StreamRange {
        StreamRange { from_ns: self.from_ns + by, to_ns: self.to_ns + by, ..self.clone() }
    }
}

/// What one request carried.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    Traces {
        /// Hex trace ids; every span of each is in the request.
        trace_ids: Vec<String>,
        /// Earliest span start and latest span end, unix nanoseconds.
        from_ns: u64,
        to_ns: u64,
    },
    Logs {
        streams: Vec<StreamRange>,
    },
    Samples {
        /// PromQL selectors of the series, one sample each per appearance.
        series: Vec<String>,
        /// Earliest and latest sample timestamp, unix milliseconds.
        from_ms: i64,
        to_ms: i64,
    },
}

/// One line of the manifest.
#[derive(Serialize)]
struct Line<'a> {
    /// The send's sequence number (in the history mode, the request number within its worker's shard).
    seq: u64,
    signal: &'a str,
    items: u64,
    /// Items the receiver refused in its successful answer (OTLP partial success; remote write
    /// 2.0: what its `-Written` headers fall short of what was sent); the content lists what was
    /// sent, so with `rejected` > 0 some of it may be missing.
    rejected: u64,
    #[serde(flatten)]
    content: &'a Content,
}

pub(crate) struct Manifest {
    out: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Manifest {
    pub(crate) fn create(path: &std::path::Path) -> anyhow::Result<Manifest> {
        let f = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create the manifest {}: {e}", path.display()))?;
        Ok(Manifest { out: Mutex::new(std::io::BufWriter::new(f)) })
    }

    pub(crate) fn record(&self, seq: u64, signal: &str, items: u64, rejected: u64, content: &Content) {
        let line = serde_json::to_string(&Line { seq, signal, items, rejected, content }).expect("JSON");
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(out, "{line}") {
            tracing::error!(error = %e, "writing the manifest failed");
        }
    }

    pub(crate) fn finish(&self) -> anyhow::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.flush().map_err(|e| anyhow::anyhow!("flushing the manifest: {e}"))
    }
}
