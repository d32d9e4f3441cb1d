//! The per-partition writer thread: group commit.
//!
//! It blocks for one command, then takes every other command already waiting (up to a byte
//! budget), writes all their records with one `write`, fsyncs once, publishes the new end offset to
//! consumers, and only then answers the appends.

use std::{
    fs::{File, OpenOptions},
    io::{Seek, SeekFrom, Write},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use super::{FsyncPolicy, Partition, WalConfig, WalMetrics, commit, segment};
use crate::{Offset, QueueError};

/// The most bytes one group commit writes; more waiting appends go in the next one.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// Appended records and where to send their first offset once durable.
type Append = (Vec<Bytes>, oneshot::Sender<Result<Offset, QueueError>>);

pub(super) enum Command {
    Append {
        records: Vec<Bytes>,
        reply: oneshot::Sender<Result<Offset, QueueError>>,
    },
    /// Time to fsync (interval policy).
    Tick,
    Close {
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
}

/// The segment being written.
pub(super) struct Active {
    pub(super) base: Offset,
    pub(super) len: u64,
    /// The offset the next record gets.
    pub(super) next: Offset,
}

struct Writer {
    partition: Arc<Partition>,
    config: WalConfig,
    used_bytes: Arc<AtomicU64>,
    metrics: WalMetrics,
    active: Active,
    file: File,
    buf: Vec<u8>,
    /// Written but not yet fsync'd (interval policy).
    dirty: bool,
    /// Set after an I/O failure that left the segment in an unknown state: every later append fails.
    failed: Option<String>,
}

pub(super) fn spawn(
    partition: Arc<Partition>,
    rx: mpsc::Receiver<Command>,
    active: Active,
    config: WalConfig,
    used_bytes: Arc<AtomicU64>,
    metrics: WalMetrics,
) -> Result<std::thread::JoinHandle<()>, QueueError> {
    let path = partition.segment_path(active.base);
    let mut file =
        OpenOptions::new().write(true).open(&path).map_err(QueueError::io("open segment", &path))?;
    file.seek(SeekFrom::Start(active.len)).map_err(QueueError::io("seek segment", &path))?;
    let writer = Writer {
        partition,
        config,
        used_bytes,
        metrics,
        active,
        file,
        buf: Vec::with_capacity(1 << 20),
        dirty: false,
        failed: None,
    };
    std::thread::Builder::new()
        .name(format!("pharos-wal-{}", writer.partition.id))
        .spawn(move || writer.run(rx))
        .map_err(QueueError::io("spawn wal writer thread", "-"))
}

/// Sends a tick to every partition's writer each `period`, until the log is gone.
pub(super) fn spawn_ticker(partitions: &[Arc<Partition>], period: Duration) {
    let senders: Vec<_> = partitions.iter().map(|p| p.tx.downgrade()).collect();
    let _ = std::thread::Builder::new().name("pharos-wal-fsync".into()).spawn(move || {
        loop {
            std::thread::sleep(period);
            let mut alive = false;
            for tx in &senders {
                if let Some(tx) = tx.upgrade() {
                    alive = true;
                    // A full channel means the writer is busy and will fsync with its next batch.
                    let _ = tx.try_send(Command::Tick);
                }
            }
            if !alive {
                return;
            }
        }
    });
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut appends = Vec::new();
            let mut close = None;
            let mut tick = false;
            let mut bytes = 0usize;
            let mut take = |cmd: Command, bytes: &mut usize| match cmd {
                Command::Append { records, reply } => {
                    *bytes += records.iter().map(|r| r.len() + 8).sum::<usize>();
                    appends.push((records, reply));
                }
                Command::Tick => tick = true,
                Command::Close { reply } => close = Some(reply),
            };
            take(first, &mut bytes);
            while bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(cmd) => take(cmd, &mut bytes),
                    Err(_) => break,
                }
            }
            if !appends.is_empty() {
                self.write_batch(appends);
            }
            if (tick || close.is_some()) && self.dirty {
                let _ = self.sync();
            }
            if self.failed.is_none()
                && self.active.len >= self.config.segment_bytes
                && let Err(e) = self.rotate()
            {
                error!(partition = self.partition.id, error = %e, "wal segment rotation failed");
                self.failed = Some(e.to_string());
            }
            if let Some(reply) = close {
                let result = match &self.failed {
                    None => self.sync(),
                    Some(message) => Err(self.failed_error(message)),
                };
                let _ = reply.send(result);
                debug!(partition = self.partition.id, "wal writer closed");
                return;
            }
        }
        if self.dirty {
            let _ = self.sync();
        }
    }

    fn failed_error(&self, message: &str) -> QueueError {
        QueueError::WriterFailed { partition: self.partition.id, message: message.to_string() }
    }

    fn write_batch(&mut self, appends: Vec<Append>) {
        if let Some(message) = self.failed.clone() {
            for (_, reply) in appends {
                let _ = reply.send(Err(self.failed_error(&message)));
            }
            return;
        }
        self.buf.clear();
        let mut next = self.active.next;
        let mut firsts = Vec::with_capacity(appends.len());
        let mut records = 0u64;
        for (batch, _) in &appends {
            firsts.push(next);
            for r in batch {
                segment::encode_record(&mut self.buf, r);
            }
            next += batch.len() as u64;
            records += batch.len() as u64;
        }
        let result = self.write_and_sync();
        match result {
            Ok(()) => {
                let written = self.buf.len() as u64;
                self.active.len += written;
                self.active.next = next;
                self.used_bytes.fetch_add(written, Ordering::Relaxed);
                self.metrics.appended_records.inc_by(records);
                self.metrics.appended_bytes.inc_by(written);
                self.partition.state().segments.insert(self.active.base, self.active.len);
                self.partition.end.send_replace(next);
                for ((_, reply), first) in appends.into_iter().zip(firsts) {
                    let _ = reply.send(Ok(first));
                }
            }
            Err(e) => {
                error!(partition = self.partition.id, error = %e, "wal append failed");
                // Cut off whatever part of the batch reached the file, so the segment ends on a
                // record boundary again; if even that fails, stop writing to this partition.
                let path = self.partition.segment_path(self.active.base);
                let restored = self
                    .file
                    .set_len(self.active.len)
                    .and_then(|()| self.file.seek(SeekFrom::Start(self.active.len)).map(|_| ()));
                if let Err(e2) = restored {
                    error!(partition = self.partition.id, error = %e2, segment = %path.display(),
                        "cannot restore the wal segment after a failed append, refusing further appends");
                    self.failed = Some(e2.to_string());
                }
                let message = e.to_string();
                for (_, reply) in appends {
                    let _ = reply.send(Err(QueueError::Io {
                        op: "append to wal",
                        path: path.clone(),
                        source: std::io::Error::other(message.clone()),
                    }));
                }
            }
        }
    }

    fn write_and_sync(&mut self) -> Result<(), QueueError> {
        let path = || self.partition.segment_path(self.active.base);
        self.file.write_all(&self.buf).map_err(QueueError::io("write segment", path()))?;
        match self.config.fsync {
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Interval(_) => {
                self.dirty = true;
                Ok(())
            }
        }
    }

    fn sync(&mut self) -> Result<(), QueueError> {
        let started = Instant::now();
        let result = self.file.sync_data();
        self.metrics.fsync_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.fsyncs.inc();
        self.dirty = false;
        result.map_err(QueueError::io("fsync segment", self.partition.segment_path(self.active.base)))
    }

    /// Closes the active segment and starts a new one at the next offset.
    fn rotate(&mut self) -> Result<(), QueueError> {
        self.sync()?;
        let base = self.active.next;
        let path = self.partition.segment_path(base);
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(QueueError::io("create segment", &path))?;
        file.write_all(&segment::header()).map_err(QueueError::io("write segment header", &path))?;
        file.sync_all().map_err(QueueError::io("fsync segment", &path))?;
        commit::sync_dir(&self.partition.dir)?;
        self.file = file;
        self.active = Active { base, len: segment::HEADER_LEN, next: base };
        self.used_bytes.fetch_add(segment::HEADER_LEN, Ordering::Relaxed);
        self.partition.state().segments.insert(base, segment::HEADER_LEN);
        debug!(partition = self.partition.id, base, "wal segment rotated");
        Ok(())
    }
}
