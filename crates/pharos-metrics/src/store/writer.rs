//! Durable writing into the heads: what one queue partition's processor does with metrics.
//!
//! A [`PartitionWriter`] decodes each metrics record (remote write 1.0/2.0, OTLP), appends its
//! samples to the tenant's head and logs which series took them in a [`PendingPart`] per tenant
//! (the part is read out of the head when written). Every flush interval the pending parts are written by the [`PartStore`] (one file per
//! tenant, fsynced, then renamed into place), and only then does the writer report the queue
//! offset they cover as durable, so the processor may commit it. On start, [`PartStore::load`]
//! puts every part back into the heads, and the records after the committed offset are replayed;
//! a record a part already covers (written before a crash, not yet committed) is skipped.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use pharos_core::{Envelope, PayloadFormat, Signal, Tenant};
use tracing::{error, info, warn};

use super::{
    exemplar::Exemplar,
    head::Heads,
    metadata::Metadata,
    part::{Part, PendingPart},
};
use crate::model::{Labels, Sample};

/// Series, exemplars and metadata decoded from one queue record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// Samples per series.
    pub series: Vec<(Labels, Vec<Sample>)>,
    /// Exemplars, each with the series it belongs to.
    pub exemplars: Vec<(Labels, Exemplar)>,
    /// Metadata per metric name.
    pub metadata: Vec<(String, Metadata)>,
    /// Items that could not be turned into samples, by reason.
    pub dropped: Vec<(&'static str, u64)>,
}

impl Batch {
    /// Number of samples over all series.
    pub fn samples(&self) -> usize {
        self.series.iter().map(|(_, s)| s.len()).sum()
    }

    /// Number of items dropped for any reason.
    pub fn dropped_points(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    /// Counts `n` items dropped for `reason`.
    pub(crate) fn drop_items(&mut self, reason: &'static str, n: u64) {
        count_reason(&mut self.dropped, reason, n);
    }
}

/// Adds `n` to the count of `reason` in a short list of counts by reason.
fn count_reason(counts: &mut Vec<(&'static str, u64)>, reason: &'static str, n: u64) {
    if n == 0 {
        return;
    }
    match counts.iter_mut().find(|(r, _)| *r == reason) {
        Some((_, count)) => *count += n,
        None => counts.push((reason, n)),
    }
}

/// Why the part store failed.
#[derive(Debug, thiserror::Error)]
pub enum PartStoreError {
    #[error("{op} {path:?}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PartStoreError + use<> {
    let path = path.to_owned();
    move |source| PartStoreError::Io { op, path, source }
}

/// What loading the parts found.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Parts loaded.
    pub parts: usize,
    /// Samples put back into the heads.
    pub samples: u64,
    /// Exemplars put back into the heads.
    pub exemplars: u64,
    /// Damaged parts, moved aside (renamed `*.corrupt`).
    pub damaged: usize,
    /// Per partition and tenant, the offset below which every record is in a part.
    pub coverage: HashMap<(u32, Tenant), u64>,
}

/// The parts on disk: `{dir}/{tenant}/p{partition:05}-{covers_below:020}.part`.
#[derive(Debug)]
pub struct PartStore {
    dir: PathBuf,
    /// Every part on disk, with what deciding its removal needs.
    files: Mutex<Vec<PartFile>>,
}

#[derive(Debug)]
struct PartFile {
    tenant: Tenant,
    partition: u32,
    covers_below: u64,
    /// Newest sample timestamp in the part (`i64::MIN` without samples).
    max_t: i64,
    path: PathBuf,
}

impl PartStore {
    /// Opens (creating) the part directory.
    pub fn open(dir: &Path) -> Result<PartStore, PartStoreError> {
        fs::create_dir_all(dir).map_err(io_error("create part directory", dir))?;
        Ok(PartStore { dir: dir.to_owned(), files: Mutex::new(Vec::new()) })
    }

    fn files_lock(&self) -> std::sync::MutexGuard<'_, Vec<PartFile>> {
        self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number of parts on disk.
    pub fn len(&self) -> usize {
        self.files_lock().len()
    }

    /// Whether no part is on disk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes `tenant`'s parts whose samples are all older than `t` (they are in blocks),
    /// except each partition's newest part: its offset coverage keeps a replay after a crash
    /// from applying records twice. Returns the number of parts deleted.
    pub fn remove_below(&self, tenant: &Tenant, t: i64) -> Result<usize, PartStoreError> {
        let mut files = self.files_lock();
        let newest: HashMap<u32, u64> =
            files.iter().filter(|f| &f.tenant == tenant).fold(HashMap::new(), |mut m, f| {
                let e = m.entry(f.partition).or_insert(f.covers_below);
                *e = (*e).max(f.covers_below);
                m
            });
        let mut removed = 0;
        let mut error = None;
        files.retain(|f| {
            let obsolete =
                &f.tenant == tenant && f.max_t < t && newest.get(&f.partition) != Some(&f.covers_below);
            if !obsolete || error.is_some() {
                return true;
            }
            match fs::remove_file(&f.path) {
                Ok(()) => {
                    removed += 1;
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => {
                    error = Some(PartStoreError::Io { op: "remove part", path: f.path.clone(), source: e });
                    true
                }
            }
        });
        error.map_or(Ok(removed), Err)
    }

    /// The tenants' part files, in load order (partition, then offset).
    fn files(&self) -> Result<Vec<(Tenant, PathBuf)>, PartStoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error("list part directory", &self.dir))? {
            let entry = entry.map_err(io_error("list part directory", &self.dir))?;
            let Some(tenant) = entry.file_name().to_str().and_then(|n| Tenant::parse(n).ok()) else {
                warn!(path = %entry.path().display(), "not a tenant directory, ignoring it");
                continue;
            };
            let dir = entry.path();
            let mut files = Vec::new();
            for f in fs::read_dir(&dir).map_err(io_error("list part directory", &dir))? {
                let path = f.map_err(io_error("list part directory", &dir))?.path();
                match path.extension().and_then(|e| e.to_str()) {
                    Some("part") => files.push(path),
                    Some("tmp") => {
                        // A flush that did not finish: its records were never reported durable.
                        fs::remove_file(&path).map_err(io_error("remove unfinished part", &path))?;
                    }
                    _ => {}
                }
            }
            files.sort();
            out.extend(files.into_iter().map(|f| (tenant.clone(), f)));
        }
        Ok(out)
    }

    /// Puts every part back into `heads`, logging progress; damaged parts are moved aside with
    /// an error in the log.
    pub fn load(&self, heads: &Heads) -> Result<LoadReport, PartStoreError> {
        let files = self.files()?;
        let mut report = LoadReport::default();
        if files.is_empty() {
            return Ok(report);
        }
        info!(parts = files.len(), dir = %self.dir.display(), "loading metrics parts");
        let mut last_progress = Instant::now();
        let total = files.len();
        for (i, (tenant, path)) in files.into_iter().enumerate() {
            let bytes = fs::read(&path).map_err(io_error("read part", &path))?;
            let part = match Part::decode(&bytes) {
                Ok(part) => part,
                Err(e) => {
                    report.damaged += 1;
                    let aside = path.with_extension("corrupt");
                    error!(path = %path.display(), error = %e, "damaged metrics part, moving it aside; its samples are lost");
                    fs::rename(&path, &aside).map_err(io_error("move damaged part aside", &path))?;
                    continue;
                }
            };
            self.files_lock().push(PartFile {
                tenant: tenant.clone(),
                partition: part.partition,
                covers_below: part.covers_below,
                max_t: part.max_t(),
                path: path.clone(),
            });
            let head = heads.head(&tenant);
            for (labels, samples) in &part.series {
                let outcome = head.restore_samples(labels, samples);
                report.samples += outcome.accepted as u64;
                if let Some(e) = outcome.first_error {
                    warn!(%tenant, series = %labels, error = %e, "part samples not restored");
                }
            }
            for (name, m) in &part.metadata {
                let _ = head.set_metadata(name, m.clone());
            }
            // Exemplars the head has (a later part or the replay brought them) are refused as
            // older than its newest or ignored as repeats.
            for (labels, exemplars) in &part.exemplars {
                for e in exemplars {
                    if head.append_exemplar(labels, e.clone()).is_ok() {
                        report.exemplars += 1;
                    }
                }
            }
            let covered = report.coverage.entry((part.partition, tenant)).or_default();
            *covered = (*covered).max(part.covers_below);
            report.parts += 1;
            if last_progress.elapsed() >= Duration::from_secs(5) {
                last_progress = Instant::now();
                info!(loaded = i + 1, total, samples = report.samples, "loading metrics parts");
            }
        }
        info!(
            parts = report.parts,
            samples = report.samples,
            exemplars = report.exemplars,
            damaged = report.damaged,
            "metrics parts loaded"
        );
        Ok(report)
    }

    /// Writes the parts of a flush, each durably: written to a temporary file, fsynced,
    /// renamed into place, and the directory fsynced. A part's samples are released once it
    /// is written (the flush keeps what [`PartitionWriter::flushed`] needs).
    pub fn write(&self, flush: &mut Flush) -> Result<(), PartStoreError> {
        for (tenant, part) in &mut flush.parts {
            let dir = self.dir.join(tenant.as_str());
            fs::create_dir_all(&dir).map_err(io_error("create tenant part directory", &dir))?;
            let name = format!("p{:05}-{:020}", part.partition, part.covers_below);
            let tmp = dir.join(format!("{name}.tmp"));
            let path = dir.join(format!("{name}.part"));
            let bytes = part.encode();
            {
                use std::io::Write;
                let mut f = fs::File::create(&tmp).map_err(io_error("create part", &tmp))?;
                f.write_all(&bytes).map_err(io_error("write part", &tmp))?;
                f.sync_all().map_err(io_error("fsync part", &tmp))?;
            }
            fs::rename(&tmp, &path).map_err(io_error("rename part into place", &path))?;
            fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error("fsync part directory", &dir))?;
            let mut files = self.files_lock();
            files.retain(|f| f.path != path);
            files.push(PartFile {
                tenant: tenant.clone(),
                partition: part.partition,
                covers_below: part.covers_below,
                max_t: part.max_t(),
                path,
            });
            // Written: the samples (and the series they hold) are let go here, off the
            // processor's loop.
            part.release_samples();
        }
        Ok(())
    }
}

/// Pending parts taken for writing, and the offset they cover.
#[derive(Debug)]
pub struct Flush {
    /// One part per tenant with new samples.
    pub parts: Vec<(Tenant, PendingPart)>,
    /// Every record below this offset is covered once the parts are written.
    pub next: u64,
}

/// What writing one record did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WriteStats {
    /// Samples the head took.
    pub accepted: u64,
    /// Samples or items refused, by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// The record was already in a part (replay after a crash).
    pub skipped: bool,
}

impl WriteStats {
    fn reject(&mut self, reason: &'static str, n: u64) {
        count_reason(&mut self.rejected, reason, n);
    }
}

/// Turns an OTLP metrics payload into a batch (the OTLP→Prometheus mapping, with its state).
pub trait OtlpDecoder: Send {
    /// Decodes and converts one `ExportMetricsServiceRequest`.
    fn decode(&mut self, payload: &[u8]) -> Result<Batch, prost::DecodeError>;

    /// Converts one decoded request (the processing pipeline's output).
    fn convert_request(&mut self, request: &ExportMetricsServiceRequest) -> Batch;
}

/// The metrics writer of one queue partition.
pub struct PartitionWriter {
    heads: Arc<Heads>,
    partition: u32,
    coverage: HashMap<Tenant, u64>,
    pending: HashMap<Tenant, PendingPart>,
    durable_below: u64,
    flush_interval: Duration,
    last_flush: Instant,
    otlp: Box<dyn OtlpDecoder>,
}

impl PartitionWriter {
    /// A writer for `partition`; `report` is what [`PartStore::load`] found.
    pub fn new(
        heads: Arc<Heads>,
        partition: u32,
        report: &LoadReport,
        flush_interval: Duration,
        otlp: Box<dyn OtlpDecoder>,
    ) -> PartitionWriter {
        let coverage = report
            .coverage
            .iter()
            .filter(|((p, _), _)| *p == partition)
            .map(|((_, t), offset)| (t.clone(), *offset))
            .collect();
        PartitionWriter {
            heads,
            partition,
            coverage,
            pending: HashMap::new(),
            durable_below: 0,
            flush_interval,
            last_flush: Instant::now(),
            otlp,
        }
    }

    /// Applies one queue record: metrics go to the tenant's head and the pending part; other
    /// signals are not this writer's business.
    pub fn write(&mut self, offset: u64, envelope: &Envelope) -> WriteStats {
        let mut stats = WriteStats::default();
        if envelope.signal != Signal::Metrics {
            return stats;
        }
        if self.coverage.get(&envelope.tenant).is_some_and(|&c| offset < c) {
            stats.skipped = true;
            return stats;
        }
        let decoded = match envelope.format {
            PayloadFormat::PrometheusWriteV1 => {
                return match pharos_core::prompb::view::WriteRequestView::read(&envelope.payload) {
                    Ok(view) => self.append_v1(&envelope.tenant, &view, stats),
                    Err(e) => {
                        error!(partition = self.partition, offset, error = %e, "undecodable metrics record, skipping it");
                        stats.reject("undecodable", u64::from(envelope.items));
                        stats
                    }
                };
            }
            PayloadFormat::PrometheusWriteV2 => crate::remote_write::decode_v2(&envelope.payload),
            PayloadFormat::Otlp => self.otlp.decode(&envelope.payload),
            PayloadFormat::LokiPush => {
                error!(
                    partition = self.partition,
                    offset, "a metrics record in the Loki push format, skipping it"
                );
                stats.reject("unsupported_format", u64::from(envelope.items));
                return stats;
            }
        };
        match decoded {
            Ok(batch) => self.append(&envelope.tenant, batch, stats),
            Err(e) => {
                error!(partition = self.partition, offset, error = %e, "undecodable metrics record, skipping it");
                stats.reject("undecodable", u64::from(envelope.items));
                stats
            }
        }
    }

    /// Applies a decoded OTLP metrics request (the processing pipeline's output). A request
    /// from a queue record (`from_record`) is skipped when a part already covers its offset,
    /// as [`PartitionWriter::write`] does; one a processor made (span metrics) is not a replay
    /// of a record and is always applied.
    pub fn write_request(
        &mut self,
        offset: u64,
        tenant: &Tenant,
        request: &ExportMetricsServiceRequest,
        from_record: bool,
    ) -> WriteStats {
        if from_record && self.coverage.get(tenant).is_some_and(|&c| offset < c) {
            return WriteStats { skipped: true, ..WriteStats::default() };
        }
        let batch = self.otlp.convert_request(request);
        self.append(tenant, batch, WriteStats::default())
    }

    /// Applies a remote write 1.0 request read in place: a series the head has is found from
    /// the request's label pairs, without building its labels.
    fn append_v1(
        &mut self,
        tenant: &Tenant,
        view: &pharos_core::prompb::view::WriteRequestView<'_>,
        mut stats: WriteStats,
    ) -> WriteStats {
        let head = self.heads.head(tenant);
        let part = self.pending.entry(tenant.clone()).or_insert_with(|| PendingPart::new(self.partition));
        // Samples first, every series under one read of the head's index.
        let with_samples = view.series.iter().filter(|s| !view.samples(s).is_empty()).map(|series| {
            let pairs = view.labels(series);
            let samples = view.samples(series).iter().map(|s| Sample { t: s.timestamp, v: s.value });
            (super::index::series_hash_of(pairs.iter().copied()), pairs, samples)
        });
        head.append_pairs_batch(
            with_samples,
            |series, s, placement| part.add(series, *s, placement),
            |outcome| {
                stats.accepted += outcome.accepted as u64;
                if let Some(e) = &outcome.first_error {
                    stats.reject(e.reason(), outcome.rejected as u64);
                }
            },
        );
        for series in &view.series {
            stats.reject("native_histogram", series.histograms as u64);
            if view.exemplar_count(series) == 0 {
                continue;
            }
            let Ok(exemplars) = view.exemplars(series) else {
                stats.reject("exemplar", view.exemplar_count(series) as u64);
                continue;
            };
            let labels = Labels::from_pairs(view.labels(series).iter().copied());
            for e in exemplars {
                let exemplar_labels = Labels::from_pairs(e.labels.into_iter().map(|l| (l.name, l.value)));
                let exemplar = Exemplar { labels: exemplar_labels, value: e.value, t: e.timestamp };
                match head.append_exemplar_to(&labels, exemplar) {
                    Ok(series) => part.add_exemplar(&series),
                    Err(_) => stats.reject("exemplar", 1),
                }
            }
        }
        for m in view.metadata().unwrap_or_default() {
            let metadata =
                Metadata { kind: crate::remote_write::metric_type(m.r#type), help: m.help, unit: m.unit };
            if head.set_metadata(&m.metric_family_name, metadata.clone()).is_ok() {
                part.metadata.insert(m.metric_family_name, metadata);
            }
        }
        stats
    }

    fn append(&mut self, tenant: &Tenant, batch: Batch, mut stats: WriteStats) -> WriteStats {
        for (reason, n) in &batch.dropped {
            stats.reject(reason, *n);
        }
        let head = self.heads.head(tenant);
        let partition = self.partition;
        let part = self.pending.entry(tenant.clone()).or_insert_with(|| PendingPart::new(partition));
        for (labels, samples) in &batch.series {
            let outcome = head
                .append_samples_with(labels, samples, |series, s, placement| part.add(series, *s, placement));
            stats.accepted += outcome.accepted as u64;
            if let Some(e) = &outcome.first_error {
                stats.reject(e.reason(), outcome.rejected as u64);
            }
        }
        for (labels, exemplar) in batch.exemplars {
            match head.append_exemplar_to(&labels, exemplar) {
                Ok(series) => part.add_exemplar(&series),
                Err(_) => stats.reject("exemplar", 1),
            }
        }
        for (name, metadata) in batch.metadata {
            if head.set_metadata(&name, metadata.clone()).is_ok() {
                part.metadata.insert(name, metadata);
            }
        }
        stats
    }

    /// The pending parts, when they are due (the flush interval passed, or `force`), to be
    /// written by [`PartStore::write`] and then confirmed with [`PartitionWriter::flushed`].
    /// `None` when nothing needs writing; then everything below `next` is durable already.
    pub fn take_flush(&mut self, next: u64, force: bool) -> Option<Flush> {
        self.pending.retain(|_, part| !part.is_empty());
        if self.pending.is_empty() {
            self.durable_below = self.durable_below.max(next);
            return None;
        }
        if !force && self.last_flush.elapsed() < self.flush_interval {
            return None;
        }
        let parts = self
            .pending
            .drain()
            .map(|(tenant, mut part)| {
                part.covers_below = next;
                (tenant, part)
            })
            .collect();
        Some(Flush { parts, next })
    }

    /// Records that `flush` is on disk.
    pub fn flushed(&mut self, flush: &Flush) {
        self.durable_below = self.durable_below.max(flush.next);
        self.last_flush = Instant::now();
        for (tenant, _) in &flush.parts {
            self.coverage.insert(tenant.clone(), flush.next);
        }
    }

    /// Every record below this offset is durable (in a part, or not a metrics record).
    pub fn durable_below(&self) -> u64 {
        self.durable_below
    }

    /// The queue partition this writer owns.
    pub fn partition(&self) -> u32 {
        self.partition
    }
}

impl OtlpDecoder for crate::otlp::Converter {
    fn decode(&mut self, payload: &[u8]) -> Result<Batch, prost::DecodeError> {
        use prost::Message;
        Ok(self.convert(&ExportMetricsServiceRequest::decode(payload)?))
    }

    fn convert_request(&mut self, request: &ExportMetricsServiceRequest) -> Batch {
        self.convert(request)
    }
}

#[cfg(test)]
mod tests {
    use pharos_core::prompb::v1;
    use prost::Message;

    use super::*;
    use crate::query::{Matcher, SeriesSource};

    struct NoOtlp;

    impl OtlpDecoder for NoOtlp {
        fn decode(&mut self, _: &[u8]) -> Result<Batch, prost::DecodeError> {
            Ok(Batch::default())
        }

        fn convert_request(&mut self, _: &ExportMetricsServiceRequest) -> Batch {
            Batch::default()
        }
    }

    fn envelope(tenant: &str, t0: i64, n: i64) -> Envelope {
        let req = v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![v1::Label { name: "__name__".into(), value: "up".into() }],
                samples: (0..n).map(|i| v1::Sample { value: i as f64, timestamp: t0 + i * 1000 }).collect(),
                ..Default::default()
            }],
            metadata: vec![],
        };
        Envelope {
            tenant: Tenant::parse(tenant).unwrap(),
            signal: Signal::Metrics,
            format: PayloadFormat::PrometheusWriteV1,
            received_at_unix_nanos: 0,
            items: n as u32,
            metadata: Vec::new(),
            payload: req.encode_to_vec().into(),
        }
    }

    fn count(heads: &Heads, tenant: &str) -> usize {
        let head = heads.head(&Tenant::parse(tenant).unwrap());
        head.select(&[Matcher::equal("__name__", "up")], i64::MIN, i64::MAX)
            .unwrap()
            .iter()
            .map(|s| s.samples.len())
            .sum()
    }

    fn writer(heads: &Arc<Heads>, report: &LoadReport) -> PartitionWriter {
        PartitionWriter::new(heads.clone(), 0, report, Duration::from_secs(3600), Box::new(NoOtlp))
    }

    #[test]
    fn writer_holds_the_offset_back_until_its_part_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::open(dir.path()).unwrap();
        let heads = Arc::new(Heads::default());
        let mut w = writer(&heads, &LoadReport::default());
        // Nothing pending: everything read so far is durable.
        assert!(w.take_flush(3, false).is_none());
        assert_eq!(w.durable_below(), 3);
        let stats = w.write(3, &envelope("a", 1000, 10));
        assert_eq!(stats.accepted, 10);
        assert_eq!(count(&heads, "a"), 10, "queryable at once");
        // Pending samples, interval not reached: the offset stays where it was.
        assert!(w.take_flush(4, false).is_none());
        assert_eq!(w.durable_below(), 3);
        let mut flush = w.take_flush(4, true).expect("forced");
        store.write(&mut flush).unwrap();
        w.flushed(&flush);
        assert_eq!(w.durable_below(), 4);

        // A restart: the part is loaded back, and replaying offset 3 is skipped.
        let heads = Arc::new(Heads::default());
        let report = store.load(&heads).unwrap();
        assert_eq!((report.parts, report.samples, report.exemplars), (1, 10, 0));
        assert_eq!(count(&heads, "a"), 10);
        let mut w = writer(&heads, &report);
        assert!(w.write(3, &envelope("a", 1000, 10)).skipped);
        // A later record is applied.
        assert_eq!(w.write(4, &envelope("a", 20_000, 5)).accepted, 5);
        assert_eq!(count(&heads, "a"), 15);
    }

    #[test]
    fn writer_applies_remote_write_series_exemplars_metadata_and_counts_histograms_dropped() {
        let label = |n: &str, v: &str| v1::Label { name: n.into(), value: v.into() };
        let req = v1::WriteRequest {
            timeseries: vec![
                v1::TimeSeries {
                    labels: vec![label("__name__", "up"), label("job", "node")],
                    samples: vec![
                        v1::Sample { value: 1.0, timestamp: 1000 },
                        v1::Sample { value: 0.0, timestamp: 2000 },
                    ],
                    exemplars: vec![v1::Exemplar {
                        labels: vec![label("trace_id", "abc")],
                        value: 1.0,
                        timestamp: 1000,
                    }],
                    histograms: vec![Default::default()],
                },
                // Labels not as the head keeps them (unsorted, an empty value): still one series.
                v1::TimeSeries {
                    labels: vec![label("job", "api"), label("__name__", "up"), label("zone", "")],
                    samples: vec![v1::Sample { value: 5.0, timestamp: 1000 }],
                    ..Default::default()
                },
            ],
            metadata: vec![v1::MetricMetadata {
                r#type: 2,
                metric_family_name: "up".into(),
                help: "Up.".into(),
                unit: String::new(),
            }],
        };
        let mut e = envelope("a", 0, 0);
        e.payload = req.encode_to_vec().into();
        let heads = Arc::new(Heads::default());
        let mut w = writer(&heads, &LoadReport::default());
        let stats = w.write(0, &e);
        assert_eq!(stats.accepted, 3);
        assert_eq!(stats.rejected, vec![("native_histogram", 1)]);
        let head = heads.head(&Tenant::parse("a").unwrap());
        let got: Vec<(Labels, Vec<Sample>)> = head
            .select(&[Matcher::equal("__name__", "up")], i64::MIN, i64::MAX)
            .unwrap()
            .into_iter()
            .map(|s| (s.labels, s.samples))
            .collect();
        assert_eq!(
            got,
            vec![
                (Labels::from_pairs([("__name__", "up"), ("job", "api")]), vec![Sample { t: 1000, v: 5.0 }]),
                (
                    Labels::from_pairs([("__name__", "up"), ("job", "node")]),
                    vec![Sample { t: 1000, v: 1.0 }, Sample { t: 2000, v: 0.0 }]
                ),
            ]
        );
        let exemplars = head.exemplars(&[vec![Matcher::equal("job", "node")]], i64::MIN, i64::MAX);
        assert_eq!(exemplars.len(), 1);
        assert_eq!(exemplars[0].exemplars[0].labels, Labels::from_pairs([("trace_id", "abc")]));
        // The same request again (a retry): every sample a repeat, taken unchanged, through the
        // series the head now has; then an older sample of a known series is refused.
        let again = w.write(1, &e);
        assert_eq!((again.accepted, again.rejected.clone()), (3, vec![("native_histogram", 1)]));
        let older = v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![label("__name__", "up"), label("job", "node")],
                samples: vec![
                    v1::Sample { value: 7.0, timestamp: 1500 },
                    v1::Sample { value: 8.0, timestamp: 3000 },
                ],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let mut e2 = e.clone();
        e2.payload = older.encode_to_vec().into();
        let stats = w.write(2, &e2);
        assert_eq!((stats.accepted, stats.rejected), (1, vec![("out_of_order", 1)]));
        let metadata = head.metadata(Some("up"), None);
        assert_eq!(metadata[0].1.kind, crate::store::MetricType::Gauge);
        assert_eq!(metadata[0].1.help, "Up.");
        // A record that is not a request is skipped and counted.
        e.payload = vec![0x0a, 0x05].into();
        e.items = 7;
        assert_eq!(w.write(3, &e).rejected, vec![("undecodable", 7)]);
    }

    #[test]
    fn exemplars_are_in_parts_and_come_back_after_a_restart() {
        let label = |n: &str, v: &str| v1::Label { name: n.into(), value: v.into() };
        let with_exemplar = |t: i64, trace: &str| {
            let req = v1::WriteRequest {
                timeseries: vec![v1::TimeSeries {
                    labels: vec![label("__name__", "up"), label("job", "node")],
                    samples: vec![v1::Sample { value: 1.0, timestamp: t }],
                    exemplars: vec![v1::Exemplar {
                        labels: vec![label("trace_id", trace)],
                        value: 1.0,
                        timestamp: t,
                    }],
                    ..Default::default()
                }],
                metadata: vec![],
            };
            let mut e = envelope("a", 0, 1);
            e.payload = req.encode_to_vec().into();
            e
        };
        let traces = |heads: &Heads| -> Vec<String> {
            let head = heads.head(&Tenant::parse("a").unwrap());
            head.exemplars(&[vec![Matcher::equal("job", "node")]], i64::MIN, i64::MAX)
                .iter()
                .flat_map(|s| s.exemplars.iter().map(|e| e.labels.get("trace_id").to_owned()))
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::open(dir.path()).unwrap();
        let heads = Arc::new(Heads::default());
        let mut w = writer(&heads, &LoadReport::default());
        w.write(0, &with_exemplar(1000, "first"));
        w.write(1, &with_exemplar(2000, "second"));
        let mut flush = w.take_flush(2, true).expect("forced");
        store.write(&mut flush).unwrap();
        w.flushed(&flush);
        // A restart: the exemplars come back from the part, a replayed record adds its own.
        let heads = Arc::new(Heads::default());
        let report = store.load(&heads).unwrap();
        assert_eq!((report.samples, report.exemplars), (2, 2));
        assert_eq!(traces(&heads), ["first", "second"]);
        let mut w = writer(&heads, &report);
        assert!(w.write(1, &with_exemplar(2000, "second")).skipped, "covered by the part");
        assert_eq!(w.write(2, &with_exemplar(3000, "third")).accepted, 1);
        assert_eq!(traces(&heads), ["first", "second", "third"]);
    }

    #[test]
    fn store_moves_damaged_parts_aside_and_removes_unfinished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::open(dir.path()).unwrap();
        let heads = Arc::new(Heads::default());
        let mut w = writer(&heads, &LoadReport::default());
        for (offset, tenant) in [(0, "a"), (1, "b")] {
            w.write(offset, &envelope(tenant, 1000, 3));
        }
        let mut flush = w.take_flush(2, true).unwrap();
        store.write(&mut flush).unwrap();
        let part_b = dir.path().join("b").join(format!("p00000-{:020}.part", 2));
        let mut bytes = fs::read(&part_b).unwrap();
        bytes[30] ^= 0xff;
        fs::write(&part_b, bytes).unwrap();
        fs::write(dir.path().join("a").join("p00000-00000000000000000009.tmp"), b"half").unwrap();

        let heads = Heads::default();
        let report = store.load(&heads).unwrap();
        assert_eq!((report.parts, report.damaged), (1, 1));
        assert_eq!(count(&heads, "a"), 3);
        assert_eq!(count(&heads, "b"), 0);
        assert!(part_b.with_extension("corrupt").exists());
        assert!(!dir.path().join("a").join("p00000-00000000000000000009.tmp").exists());
    }
}
