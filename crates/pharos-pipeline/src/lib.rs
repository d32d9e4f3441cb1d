//! Processing: consume the queue partition by partition, hand each batch to a [`Sink`], make it
//! durable, and only then commit the queue offset (invariant 2 of the architecture).
//!
//! Until the signal stores exist, the sink is the [`CountingSink`]: it decodes every envelope,
//! counts items per signal and tenant, and keeps those counts durably beside the offset they cover.

mod counting;
mod metrics;
mod pipeline;
pub mod processor;
mod runner;

pub use counting::{CountingSink, Counts};
pub use metrics::PipelineMetrics;
pub use pipeline::{Output, PARTITION_ATTRIBUTE, PipelineSpec, Pipelines, PipelinesConfig, ProcessorMetrics};
pub use runner::{Runner, RunnerOptions, Sink};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("queue")]
    Queue(#[from] pharos_queue::QueueError),
    #[error("{op} {path:?}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A store behind the sink failed.
    #[error("{0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl PipelineError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| PipelineError::Io { op, path, source }
    }
}
