//! The durable queue between ingestion and processing.
//!
//! [`Queue`] is the contract: `append` returns only once the records are durable, consumers read a
//! partition in offset order from their group's committed offset, and `commit` moves that offset
//! (at-least-once delivery: whatever was read but not committed is read again after a restart).
//! The embedded write-ahead log ([`wal::Wal`]) is the default implementation; Redis Streams and Kafka
//! fit the same shape (a partition is a stream or a topic partition, a group is a consumer group).

mod error;
pub mod wal;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::QueueError;

/// A record's position in its partition. Offsets are dense: the records appended together get
/// consecutive offsets.
pub type Offset = u64;

/// One record read back from a partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub offset: Offset,
    pub payload: Bytes,
}

/// What a partition holds, for self-telemetry and `wal inspect`.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionStats {
    pub partition: u32,
    /// The offset the next appended record will get.
    pub next_offset: Offset,
    /// The lowest offset committed by any consumer group (0 if none has committed).
    pub committed: Offset,
    pub bytes: u64,
}

impl PartitionStats {
    /// Records appended but not yet committed.
    pub fn depth(&self) -> u64 {
        self.next_offset.saturating_sub(self.committed)
    }
}

/// A partitioned, durable, replayable queue.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    fn partitions(&self) -> u32;

    /// Appends `records` to `partition` and returns the offset of the first once all of them are
    /// durable. On error, none of them is acknowledged (some may still be delivered: at least once).
    async fn append(&self, partition: u32, records: Vec<Bytes>) -> Result<Offset, QueueError>;

    /// A consumer of `partition` for consumer group `group`, positioned at the group's committed
    /// offset.
    async fn consumer(&self, group: &str, partition: u32) -> Result<Box<dyn Consumer>, QueueError>;

    fn stats(&self) -> Vec<PartitionStats>;

    /// Stops taking appends, makes everything appended durable, and releases the queue.
    async fn close(&self) -> Result<(), QueueError>;
}

/// Reads one partition in offset order on behalf of one consumer group.
#[async_trait]
pub trait Consumer: Send {
    fn partition(&self) -> u32;

    /// The offset of the next record `poll` returns.
    fn position(&self) -> Offset;

    /// Moves the read position, e.g. past records a store already holds.
    fn seek(&mut self, offset: Offset);

    /// The offset after the last durable record: everything below it can be read.
    fn end_offset(&self) -> Offset;

    /// The group's committed offset: where a new consumer of this group starts.
    fn committed(&self) -> Offset;

    /// Up to `max_records` records from the position on, waiting at most `max_wait` for the first.
    /// Returns an empty batch when nothing arrived in time.
    async fn poll(&mut self, max_records: usize, max_wait: Duration) -> Result<Vec<Record>, QueueError>;

    /// Records that everything below `next` is processed; durable when this returns.
    async fn commit(&mut self, next: Offset) -> Result<(), QueueError>;
}
