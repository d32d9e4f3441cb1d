//! The loop that moves one partition from the queue into a sink.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use pharos_core::Envelope;
use pharos_queue::{Offset, Queue};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{PipelineError, PipelineMetrics};

/// Where processed envelopes go.
#[async_trait]
pub trait Sink: Send {
    /// The offset the sink's durable state already covers: records below it are skipped on replay.
    fn resume_from(&self) -> Offset;

    /// Takes a batch of envelopes; `offsets[i]` is the queue offset of `envelopes[i]`.
    async fn write(&mut self, envelopes: Vec<(Offset, Envelope)>) -> Result<(), PipelineError>;

    /// Makes what was written durable, up to offsets below `next`, and returns the offset below
    /// which everything is durable (the runner commits it). A sink may hold back, flushing on
    /// its own schedule and returning less than `next`; `closing` (shutdown) asks it not to.
    async fn flush(&mut self, next: Offset, closing: bool) -> Result<Offset, PipelineError>;
}

#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub group: String,
    pub max_batch: usize,
    pub poll_wait: Duration,
    /// How long to keep draining the queue after shutdown begins.
    pub drain_timeout: Duration,
    /// How often the sink is flushed and the offset committed while records flow (each flush
    /// and commit costs an fsync). Records read since the last commit are read again after a crash.
    pub commit_interval: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            group: "processor".into(),
            max_batch: 1024,
            poll_wait: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_millis(200),
        }
    }
}

pub struct Runner {
    pub queue: Arc<dyn Queue>,
    pub partition: u32,
    pub options: RunnerOptions,
    pub metrics: PipelineMetrics,
}

impl Runner {
    /// Consumes until `cancel` fires, then drains what is in the queue (up to the drain timeout),
    /// flushes and commits.
    pub async fn run(self, mut sink: impl Sink, cancel: CancellationToken) -> Result<(), PipelineError> {
        let Runner { queue, partition, options, metrics } = self;
        let mut consumer = queue.consumer(&options.group, partition).await?;
        let committed = consumer.committed();
        let resume = sink.resume_from().max(committed);
        consumer.seek(resume);
        let replay_end = consumer.end_offset();
        if replay_end > committed {
            info!(
                partition,
                committed,
                resume_from = resume,
                end = replay_end,
                records = replay_end - resume.min(replay_end),
                "replaying queue partition"
            );
        }
        let mut replaying = replay_end > resume;
        let mut last_progress = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        // The offset after the last record handed to the sink, and the last one committed.
        let mut written = consumer.position();
        let mut committed_at = written;
        let mut last_commit = Instant::now();
        loop {
            if written > committed_at
                && (last_commit.elapsed() >= options.commit_interval || drain_deadline.is_some())
            {
                let durable = sink.flush(written, false).await?.min(written);
                if durable > committed_at {
                    consumer.commit(durable).await?;
                    committed_at = durable;
                }
                last_commit = Instant::now();
            }
            if drain_deadline.is_none() && cancel.is_cancelled() {
                drain_deadline = Some(Instant::now() + options.drain_timeout);
            }
            if let Some(deadline) = drain_deadline {
                if consumer.position() >= consumer.end_offset() {
                    break;
                }
                if Instant::now() >= deadline {
                    warn!(
                        partition,
                        left = consumer.end_offset() - consumer.position(),
                        "drain timeout reached, the rest stays in the queue for the next start"
                    );
                    break;
                }
            }
            let wait = if drain_deadline.is_some() { Duration::from_millis(10) } else { options.poll_wait };
            let records = tokio::select! {
                r = consumer.poll(options.max_batch, wait) => r?,
                () = cancel.cancelled(), if drain_deadline.is_none() => continue,
            };
            if records.is_empty() {
                continue;
            }
            let next = records.last().map_or(consumer.position(), |r| r.offset + 1);
            metrics.records(records.len() as u64);
            let mut envelopes = Vec::with_capacity(records.len());
            for record in records {
                match Envelope::decode(record.payload) {
                    Ok(env) => envelopes.push((record.offset, env)),
                    Err(e) => {
                        error!(partition, offset = record.offset, error = %e, "undecodable queue record, skipping it");
                        metrics.bad_record();
                    }
                }
            }
            sink.write(envelopes).await?;
            written = next;
            if replaying {
                if next >= replay_end {
                    replaying = false;
                    info!(partition, end = replay_end, "queue partition replay done");
                } else if last_progress.elapsed() >= Duration::from_secs(5) {
                    last_progress = Instant::now();
                    info!(
                        partition,
                        at = next,
                        end = replay_end,
                        percent = (100 * (next - resume) / (replay_end - resume).max(1)),
                        "replaying queue partition"
                    );
                }
            }
        }
        if written > committed_at {
            let durable = sink.flush(written, true).await?.min(written);
            if durable > committed_at {
                consumer.commit(durable).await?;
            }
        }
        Ok(())
    }
}
