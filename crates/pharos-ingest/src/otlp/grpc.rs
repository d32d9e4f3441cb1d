//! OTLP/gRPC: the `Export` methods of the trace, metrics and logs services.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use tonic::{Code, Request, Response, Status, codec::CompressionEncoding, service::Routes};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Ingestor, OtlpRequest, Outcome};
use crate::{IngestError, TENANT_HEADER, tenant_from_header};

/// Items above which the CPU work of a request moves off the async runtime.
const BLOCKING_ITEMS: usize = 20_000;

#[derive(Clone)]
pub struct GrpcReceiver {
    ingestor: Arc<Ingestor>,
    retry_after: Duration,
}

/// The three OTLP services, ready to serve. `max_message_size` bounds each decoded (and
/// decompressed) request.
pub fn routes(ingestor: Arc<Ingestor>, max_message_size: usize, retry_after: Duration) -> Routes {
    let receiver = GrpcReceiver { ingestor, retry_after };
    let traces = TraceServiceServer::new(receiver.clone())
        .max_decoding_message_size(max_message_size)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    let metrics = MetricsServiceServer::new(receiver.clone())
        .max_decoding_message_size(max_message_size)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    let logs = LogsServiceServer::new(receiver)
        .max_decoding_message_size(max_message_size)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    Routes::new(traces).add_service(metrics).add_service(logs)
}

/// The gRPC status for an ingest error; retryable errors carry RetryInfo, others never do.
pub fn status_of(error: &IngestError, retry_after: Duration) -> Status {
    let code = error.code();
    let grpc = Code::from_i32(code.grpc_code());
    if code.retryable() {
        Status::with_error_details(
            grpc,
            error.public_message(),
            ErrorDetails::with_retry_info(Some(retry_after)),
        )
    } else {
        Status::new(grpc, error.public_message())
    }
}

impl GrpcReceiver {
    async fn export<R: OtlpRequest>(&self, request: Request<R>) -> Result<Outcome, Status> {
        let started = Instant::now();
        let result = self.export_inner(request).await;
        let outcome = match &result {
            Ok(o) if o.rejected > 0 => "partial",
            Ok(_) => "ok",
            Err(e) => e.reason(),
        };
        self.ingestor.metrics().request(R::SIGNAL, "grpc", outcome, started.elapsed().as_secs_f64());
        result.map_err(|e| {
            tracing::debug!(error = %e, signal = %R::SIGNAL, "otlp grpc export refused");
            status_of(&e, self.retry_after)
        })
    }

    async fn export_inner<R: OtlpRequest>(&self, request: Request<R>) -> Result<Outcome, IngestError> {
        let tenant = tenant_from_header(request.metadata().get(TENANT_HEADER).map(|v| v.as_bytes()))?;
        let req = request.into_inner();
        let prepared = if req.items() > BLOCKING_ITEMS {
            let ingestor = self.ingestor.clone();
            let t = tenant.clone();
            tokio::task::spawn_blocking(move || ingestor.prepare(&t, req))
                .await
                .map_err(|e| IngestError::ReadBody(e.to_string()))??
        } else {
            self.ingestor.prepare(&tenant, req)?
        };
        self.ingestor.commit(prepared).await
    }
}

fn rejected(o: &Outcome) -> Option<(i64, String)> {
    o.message.as_ref().map(|m| (o.rejected as i64, m.clone()))
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let o = GrpcReceiver::export(self, request).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: rejected(&o).map(|(rejected_spans, error_message)| ExportTracePartialSuccess {
                rejected_spans,
                error_message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let o = GrpcReceiver::export(self, request).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: rejected(&o).map(|(rejected_data_points, error_message)| {
                ExportMetricsPartialSuccess { rejected_data_points, error_message }
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let o = GrpcReceiver::export(self, request).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: rejected(&o).map(|(rejected_log_records, error_message)| {
                ExportLogsPartialSuccess { rejected_log_records, error_message }
            }),
        }))
    }
}
