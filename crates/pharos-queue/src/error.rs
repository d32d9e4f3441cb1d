use std::{io, path::PathBuf};

use pharos_core::ErrorCode;

use crate::Offset;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue is full: {used} of the disk budget of {budget} bytes are in use")]
    Full { used: u64, budget: u64 },
    #[error("queue is closed")]
    Closed,
    #[error("partition {partition} does not exist (the queue has {partitions})")]
    NoSuchPartition { partition: u32, partitions: u32 },
    #[error("record of {size} bytes is over the limit of {limit} bytes")]
    RecordTooLarge { size: usize, limit: usize },
    #[error("consumer group name {0:?} is invalid: use 1 to 64 of [A-Za-z0-9_-]")]
    InvalidGroup(String),
    #[error("cannot commit offset {offset}: the partition ends at {end}")]
    CommitBeyondEnd { offset: Offset, end: Offset },
    #[error(
        "wal directory {dir:?} has {found} partitions but the configuration asks for {configured}; \
         drain it or set queue.partitions to {found}"
    )]
    PartitionMismatch { dir: PathBuf, found: u32, configured: u32 },
    #[error("{op} {path:?}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the wal writer of partition {partition} failed earlier: {message}")]
    WriterFailed { partition: u32, message: String },
}

impl QueueError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| QueueError::Io { op, path, source }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            QueueError::Full { .. } => ErrorCode::Unavailable,
            QueueError::Closed => ErrorCode::Unavailable,
            QueueError::RecordTooLarge { .. } => ErrorCode::TooLarge,
            QueueError::NoSuchPartition { .. }
            | QueueError::InvalidGroup(_)
            | QueueError::CommitBeyondEnd { .. }
            | QueueError::PartitionMismatch { .. }
            | QueueError::Io { .. }
            | QueueError::WriterFailed { .. } => ErrorCode::Internal,
        }
    }
}
