//! The OTLP receivers. [`Ingestor`] is the transport-independent part: validate, partition,
//! append to the queue, and report what was accepted; `http` and `grpc` put it on the wire.

pub mod grpc;
pub mod http;
mod signals;
mod validate;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use pharos_core::{Envelope, Signal, Tenant};
use pharos_queue::Queue;

pub use signals::{OtlpRequest, STREAM_RESOURCE_ATTRIBUTES};
pub use validate::Rejections;

use crate::{IngestError, IngestMetrics, Limits};

/// What became of an export request that was (at least partly) accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub signal: Signal,
    pub accepted: u64,
    pub rejected: u64,
    /// Why items were rejected (set whenever `rejected > 0`), or a warning about an accepted request.
    pub message: Option<String>,
}

/// A request made ready for the queue: one envelope per partition.
pub struct Prepared {
    signal: Signal,
    tenant: Tenant,
    envelopes: Vec<(u32, Bytes)>,
    accepted: u64,
    rejections: Rejections,
}

/// Validates export requests, splits them by partition and makes them durable in the queue.
pub struct Ingestor {
    queue: Arc<dyn Queue>,
    limits: Limits,
    metrics: IngestMetrics,
}

impl Ingestor {
    pub fn new(queue: Arc<dyn Queue>, limits: Limits, metrics: IngestMetrics) -> Ingestor {
        Ingestor { queue, limits, metrics }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// The CPU-bound half of an export: count, validate, split and encode.
    pub fn prepare<R: OtlpRequest>(&self, tenant: &Tenant, mut req: R) -> Result<Prepared, IngestError> {
        let signal = R::SIGNAL;
        let items = req.items();
        self.metrics.received(signal, tenant, items as u64);
        if items > self.limits.max_items_per_request {
            self.metrics.rejected(signal, tenant, "too_many_items", items as u64);
            return Err(IngestError::TooManyItems {
                signal,
                count: items,
                limit: self.limits.max_items_per_request,
            });
        }
        let mut rejections = Rejections::default();
        req.validate(&self.limits, &mut rejections);
        for (reason, n) in &rejections.by_reason {
            self.metrics.rejected(signal, tenant, reason, *n);
        }
        let accepted = items as u64 - rejections.count;
        if accepted == 0 && rejections.count > 0 {
            return Err(IngestError::AllRejected {
                signal,
                count: rejections.count,
                message: rejections.first.unwrap_or_default(),
            });
        }
        let received_at_unix_nanos =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let envelopes = if accepted == 0 {
            Vec::new()
        } else {
            req.split(self.queue.partitions())
                .into_iter()
                .map(|(partition, part, n)| {
                    let envelope = Envelope {
                        tenant: tenant.clone(),
                        signal,
                        received_at_unix_nanos,
                        items: n as u32,
                        payload: Bytes::from(part.encode_to_vec()),
                    };
                    (partition, envelope.encode())
                })
                .collect()
        };
        Ok(Prepared { signal, tenant: tenant.clone(), envelopes, accepted, rejections })
    }

    /// The I/O half: append every envelope and wait until all are durable.
    pub async fn commit(&self, prepared: Prepared) -> Result<Outcome, IngestError> {
        let Prepared { signal, tenant, envelopes, accepted, rejections } = prepared;
        let appends = envelopes.into_iter().map(|(p, env)| self.queue.append(p, vec![env]));
        let results = futures::future::join_all(appends).await;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            let e = IngestError::Queue(e);
            self.metrics.rejected(signal, &tenant, e.reason(), accepted);
            return Err(e);
        }
        self.metrics.accepted(signal, &tenant, accepted);
        let message = rejections.first.map(|first| {
            format!(
                "{} of {} {} rejected; the first because: {first}",
                rejections.count,
                accepted + rejections.count,
                signal.item_name()
            )
        });
        Ok(Outcome { signal, accepted, rejected: rejections.count, message })
    }

    /// Validates `req` and makes it durable.
    pub async fn export<R: OtlpRequest>(&self, tenant: &Tenant, req: R) -> Result<Outcome, IngestError> {
        let prepared = self.prepare(tenant, req)?;
        self.commit(prepared).await
    }
}
