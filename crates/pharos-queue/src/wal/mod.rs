//! The embedded write-ahead log: the default [`Queue`](crate::Queue).
//!
//! Layout: `{dir}/partition-{NNNN}/` holds the partition's segments (`{base offset:020}.wal`) and one
//! `commit-{group}` file per consumer group. Each partition has one writer thread that takes every
//! append waiting in its channel, writes them with one `write`, and makes them durable with one
//! `fdatasync` (group commit) before it answers any of them. See `docs/formats/wal.md`.

mod commit;
mod consumer;
mod inspect;
mod segment;
mod writer;

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::{
    metrics::{counter::Counter, histogram::Histogram},
    registry::Registry,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

pub use inspect::{PartitionReport, SegmentReport, WalReport, inspect};

use crate::{Consumer, Offset, PartitionStats, Queue, QueueError};

/// When the writer makes appended records durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before acknowledging (group commit). Survives power loss.
    Always,
    /// Acknowledge after `write`, fsync on this period. Survives a process crash, not power loss.
    Interval(Duration),
}

#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub partitions: u32,
    pub fsync: FsyncPolicy,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Appends are refused with [`QueueError::Full`] while the segments use this much disk.
    pub disk_budget_bytes: u64,
    pub max_record_bytes: u32,
}

impl WalConfig {
    pub fn new(dir: impl Into<PathBuf>, partitions: u32) -> WalConfig {
        WalConfig {
            dir: dir.into(),
            partitions,
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            disk_budget_bytes: 4 << 30,
            max_record_bytes: 64 << 20,
        }
    }
}

#[derive(Clone)]
struct WalMetrics {
    fsync_seconds: Histogram,
    fsyncs: Counter,
    appended_records: Counter,
    appended_bytes: Counter,
    damaged_records: Counter,
}

impl Default for WalMetrics {
    fn default() -> Self {
        WalMetrics {
            fsync_seconds: Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0]),
            fsyncs: Counter::default(),
            appended_records: Counter::default(),
            appended_bytes: Counter::default(),
            damaged_records: Counter::default(),
        }
    }
}

/// The embedded write-ahead log.
pub struct Wal {
    shared: Arc<Shared>,
}

struct Shared {
    config: WalConfig,
    partitions: Vec<Arc<Partition>>,
    used_bytes: Arc<AtomicU64>,
    metrics: WalMetrics,
    closed: AtomicBool,
}

struct Partition {
    id: u32,
    dir: PathBuf,
    tx: mpsc::Sender<writer::Command>,
    /// The offset after the last durable record.
    end: watch::Sender<Offset>,
    state: Mutex<PartitionState>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct PartitionState {
    /// Segment base offset → size in bytes. The last one is the active segment.
    segments: BTreeMap<Offset, u64>,
    committed: HashMap<String, Offset>,
}

impl Partition {
    fn state(&self) -> MutexGuard<'_, PartitionState> {
        // A poisoned lock means a thread panicked mid-update; the state is still a valid map.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn segment_path(&self, base: Offset) -> PathBuf {
        self.dir.join(segment::file_name(base))
    }

    fn min_committed(&self) -> Offset {
        self.state().committed.values().copied().min().unwrap_or(0)
    }
}

fn partition_dir(root: &Path, id: u32) -> PathBuf {
    root.join(format!("partition-{id:04}"))
}

fn count_partition_dirs(root: &Path) -> Result<u32, QueueError> {
    let mut n = 0;
    for entry in fs::read_dir(root).map_err(QueueError::io("list wal directory", root))? {
        let entry = entry.map_err(QueueError::io("list wal directory", root))?;
        if entry.file_name().to_string_lossy().starts_with("partition-") {
            n += 1;
        }
    }
    Ok(n)
}

/// Lists a partition directory's segments, sorted by base offset.
fn list_segments(dir: &Path) -> Result<Vec<(Offset, u64)>, QueueError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(QueueError::io("list partition directory", dir))? {
        let entry = entry.map_err(QueueError::io("list partition directory", dir))?;
        if let Some(base) = segment::parse_file_name(&entry.file_name().to_string_lossy()) {
            let len = entry.metadata().map_err(QueueError::io("stat segment", entry.path()))?.len();
            out.push((base, len));
        }
    }
    out.sort_unstable();
    Ok(out)
}

impl Wal {
    /// Opens (or creates) the log, recovering each partition: a torn or damaged tail of the active
    /// segment is cut off with a warning, and writing resumes after the last intact record.
    pub fn open(config: WalConfig) -> Result<Wal, QueueError> {
        let root = config.dir.clone();
        fs::create_dir_all(&root).map_err(QueueError::io("create wal directory", &root))?;
        let found = count_partition_dirs(&root)?;
        if found != 0 && found != config.partitions {
            return Err(QueueError::PartitionMismatch { dir: root, found, configured: config.partitions });
        }
        let used_bytes = Arc::new(AtomicU64::new(0));
        let metrics = WalMetrics::default();
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        for id in 0..config.partitions {
            partitions.push(open_partition(&config, id, &used_bytes, &metrics)?);
        }
        let wal = Wal {
            shared: Arc::new(Shared {
                config,
                partitions,
                used_bytes,
                metrics,
                closed: AtomicBool::new(false),
            }),
        };
        if let FsyncPolicy::Interval(period) = wal.shared.config.fsync {
            writer::spawn_ticker(&wal.shared.partitions, period);
        }
        Ok(wal)
    }

    pub fn config(&self) -> &WalConfig {
        &self.shared.config
    }

    /// Registers the log's metrics (`pharos_queue_*`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.shared.metrics;
        registry.register(
            "pharos_queue_fsync_duration_seconds",
            "Time the write-ahead log spends in fdatasync per group commit",
            m.fsync_seconds.clone(),
        );
        registry.register(
            "pharos_queue_fsyncs",
            "fdatasync calls of the write-ahead log (one covers every append of a group commit)",
            m.fsyncs.clone(),
        );
        registry.register(
            "pharos_queue_appended_records",
            "Records appended to the write-ahead log",
            m.appended_records.clone(),
        );
        registry.register(
            "pharos_queue_appended_bytes",
            "Bytes appended to the write-ahead log, framing included",
            m.appended_bytes.clone(),
        );
        registry.register(
            "pharos_queue_damaged_records",
            "Damaged records skipped while reading the write-ahead log",
            m.damaged_records.clone(),
        );
    }

    fn partition(&self, partition: u32) -> Result<&Arc<Partition>, QueueError> {
        self.shared
            .partitions
            .get(partition as usize)
            .ok_or(QueueError::NoSuchPartition { partition, partitions: self.shared.config.partitions })
    }
}

fn open_partition(
    config: &WalConfig,
    id: u32,
    used_bytes: &Arc<AtomicU64>,
    metrics: &WalMetrics,
) -> Result<Arc<Partition>, QueueError> {
    let dir = partition_dir(&config.dir, id);
    fs::create_dir_all(&dir).map_err(QueueError::io("create partition directory", &dir))?;
    // Consumed segments whose deletion a stop interrupted.
    for entry in fs::read_dir(&dir).map_err(QueueError::io("list partition directory", &dir))? {
        let path = entry.map_err(QueueError::io("list partition directory", &dir))?.path();
        if path.extension().is_some_and(|e| e == consumer::DELETING_EXTENSION) {
            consumer::delete_gently(&path);
        }
    }
    let committed = commit::load_all(&dir)?;
    let max_committed = committed.values().copied().max().unwrap_or(0);
    let mut segments: BTreeMap<Offset, u64> = list_segments(&dir)?.into_iter().collect();

    // Where the last segment's intact records end; writing resumes there.
    let mut last_end = None;
    if let Some((&base, &len)) = segments.iter().next_back() {
        let path = dir.join(segment::file_name(base));
        match segment::scan(&path, base, config.max_record_bytes) {
            Ok(scan) => {
                if let Some(damage) = &scan.damage {
                    warn!(
                        partition = id,
                        segment = %path.display(),
                        %damage,
                        kept_records = scan.records,
                        cut_bytes = scan.file_len - scan.valid_len,
                        "wal segment tail is damaged, truncating it"
                    );
                    truncate(&path, scan.valid_len)?;
                    segments.insert(base, scan.valid_len);
                }
                last_end = Some(base + scan.records);
            }
            Err(segment::OpenError::BadHeader) => {
                warn!(partition = id, segment = %path.display(), bytes = len,
                    "wal segment header is torn or damaged, starting the segment again");
                truncate(&path, 0)?;
                write_header(&path)?;
                segments.insert(base, segment::HEADER_LEN);
                last_end = Some(base);
            }
            Err(segment::OpenError::Io(e)) => {
                return Err(QueueError::Io { op: "read segment", path, source: e });
            }
        }
    }
    let mut next_offset = last_end.unwrap_or(0);
    if max_committed > next_offset {
        // Records that were committed are gone from the log (lost or cut away): never hand out
        // their offsets again.
        warn!(
            partition = id,
            committed = max_committed,
            end = next_offset,
            "wal ends before a committed offset, resuming after the committed offset"
        );
        next_offset = max_committed;
    }
    if last_end != Some(next_offset) {
        let path = dir.join(segment::file_name(next_offset));
        write_header(&path)?;
        commit::sync_dir(&dir)?;
        segments.insert(next_offset, segment::HEADER_LEN);
    }
    let (&active_base, &active_len) =
        segments.iter().next_back().expect("a segment was just ensured to exist");
    used_bytes.fetch_add(segments.values().sum::<u64>(), Ordering::Relaxed);

    let (tx, rx) = mpsc::channel(4096);
    let (end, _) = watch::channel(next_offset);
    let partition = Arc::new(Partition {
        id,
        dir,
        tx,
        end,
        state: Mutex::new(PartitionState { segments, committed }),
        writer: Mutex::new(None),
    });
    let handle = writer::spawn(
        partition.clone(),
        rx,
        writer::Active { base: active_base, len: active_len, next: next_offset },
        config.clone(),
        used_bytes.clone(),
        metrics.clone(),
    )?;
    *partition.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    info!(partition = id, next_offset, committed = max_committed, "wal partition open");
    Ok(partition)
}

fn truncate(path: &Path, len: u64) -> Result<(), QueueError> {
    let f = fs::OpenOptions::new().write(true).open(path).map_err(QueueError::io("open segment", path))?;
    f.set_len(len).map_err(QueueError::io("truncate segment", path))?;
    f.sync_all().map_err(QueueError::io("fsync segment", path))
}

fn write_header(path: &Path) -> Result<(), QueueError> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(QueueError::io("create segment", path))?;
    f.write_all(&segment::header()).map_err(QueueError::io("write segment header", path))?;
    f.sync_all().map_err(QueueError::io("fsync segment", path))
}

#[async_trait]
impl Queue for Wal {
    fn partitions(&self) -> u32 {
        self.shared.config.partitions
    }

    async fn append(&self, partition: u32, records: Vec<Bytes>) -> Result<Offset, QueueError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        let p = self.partition(partition)?;
        let limit = self.shared.config.max_record_bytes as usize;
        let mut size = 0u64;
        for r in &records {
            if r.len() > limit {
                return Err(QueueError::RecordTooLarge { size: r.len(), limit });
            }
            size += r.len() as u64 + segment::FRAME_LEN;
        }
        let used = self.shared.used_bytes.load(Ordering::Relaxed);
        let budget = self.shared.config.disk_budget_bytes;
        if used + size > budget {
            return Err(QueueError::Full { used, budget });
        }
        let (reply, rx) = oneshot::channel();
        p.tx.send(writer::Command::Append { records, reply }).await.map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    async fn consumer(&self, group: &str, partition: u32) -> Result<Box<dyn Consumer>, QueueError> {
        commit::validate_group(group)?;
        let p = self.partition(partition)?.clone();
        Ok(Box::new(consumer::WalConsumer::new(self.shared.clone(), p, group)))
    }

    fn stats(&self) -> Vec<PartitionStats> {
        self.shared
            .partitions
            .iter()
            .map(|p| {
                let next_offset = *p.end.borrow();
                PartitionStats {
                    partition: p.id,
                    next_offset,
                    committed: p.min_committed(),
                    bytes: p.state().segments.values().sum(),
                }
            })
            .collect()
    }

    async fn close(&self) -> Result<(), QueueError> {
        self.shared.closed.store(true, Ordering::Release);
        let mut first_error = None;
        for p in &self.shared.partitions {
            let (reply, rx) = oneshot::channel();
            if p.tx.send(writer::Command::Close { reply }).await.is_ok()
                && let Ok(Err(e)) = rx.await
            {
                first_error.get_or_insert(e);
            }
            let handle = p.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(handle) = handle {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests;
