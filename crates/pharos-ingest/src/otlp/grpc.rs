//! OTLP/gRPC: the `Export` methods of the trace, metrics and logs services.
//!
//! The services are written out here rather than generated, so that a request reaches the
//! [`Ingestor`] still encoded: traces and logs are validated and split on the wire format, and
//! decoding them into messages first would be most of the work.

use std::{
    convert::Infallible,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut, Bytes};
use pharos_core::Signal;
use tonic::{
    Code, Status,
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{BoxFuture, StdError, http},
    server::{Grpc, NamedService, UnaryService},
    service::Routes,
};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Ingestor, Outcome, encode_response};
use crate::{IngestError, TENANT_HEADER, tenant_from_header};

/// Requests above this size are prepared off the async runtime.
const BLOCKING_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct GrpcReceiver {
    ingestor: Arc<Ingestor>,
    retry_after: Duration,
}

/// The three OTLP services, ready to serve. `max_message_size` bounds each decoded (and
/// decompressed) request.
pub fn routes(ingestor: Arc<Ingestor>, max_message_size: usize, retry_after: Duration) -> Routes {
    let receiver = GrpcReceiver { ingestor, retry_after };
    Routes::new(ExportServer::<TraceExport>::new(receiver.clone(), max_message_size))
        .add_service(ExportServer::<MetricsExport>::new(receiver.clone(), max_message_size))
        .add_service(ExportServer::<LogsExport>::new(receiver, max_message_size))
}

/// One OTLP `Export` method: its service, its path and its signal.
pub trait ExportMethod: Send + Sync + 'static {
    const SERVICE: &'static str;
    const PATH: &'static str;
    const SIGNAL: Signal;
}

pub struct TraceExport;
pub struct MetricsExport;
pub struct LogsExport;

impl ExportMethod for TraceExport {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const SIGNAL: Signal = Signal::Traces;
}

impl ExportMethod for MetricsExport {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    const SIGNAL: Signal = Signal::Metrics;
}

impl ExportMethod for LogsExport {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const SIGNAL: Signal = Signal::Logs;
}

/// The gRPC service of one export method.
pub struct ExportServer<M> {
    receiver: GrpcReceiver,
    max_message_size: usize,
    method: PhantomData<fn() -> M>,
}

impl<M> Clone for ExportServer<M> {
    fn clone(&self) -> Self {
        ExportServer {
            receiver: self.receiver.clone(),
            max_message_size: self.max_message_size,
            method: PhantomData,
        }
    }
}

impl<M: ExportMethod> ExportServer<M> {
    fn new(receiver: GrpcReceiver, max_message_size: usize) -> Self {
        ExportServer { receiver, max_message_size, method: PhantomData }
    }
}

impl<M: ExportMethod> NamedService for ExportServer<M> {
    const NAME: &'static str = M::SERVICE;
}

impl<M, B> tonic::codegen::Service<http::Request<B>> for ExportServer<M>
where
    M: ExportMethod,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != M::PATH {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let method = ExportCall::<M> { receiver: self.receiver.clone(), method: PhantomData };
        let max = self.max_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(max);
            Ok(grpc.unary(method, req).await)
        })
    }
}

struct ExportCall<M> {
    receiver: GrpcReceiver,
    method: PhantomData<fn() -> M>,
}

impl<M: ExportMethod> UnaryService<Bytes> for ExportCall<M> {
    type Response = Vec<u8>;
    type Future = BoxFuture<tonic::Response<Vec<u8>>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let receiver = self.receiver.clone();
        Box::pin(async move {
            let outcome = receiver.export(M::SIGNAL, request).await?;
            Ok(tonic::Response::new(encode_response(&outcome)))
        })
    }
}

/// A codec that hands the request over as the bytes that came (after decompression) and sends
/// the response as already encoded.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
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
    async fn export(&self, signal: Signal, request: tonic::Request<Bytes>) -> Result<Outcome, Status> {
        let started = Instant::now();
        let result = self.export_inner(signal, request).await;
        let outcome = match &result {
            Ok(o) if o.rejected > 0 => "partial",
            Ok(_) => "ok",
            Err(e) => e.reason(),
        };
        self.ingestor.metrics().request(signal, "grpc", outcome, started.elapsed().as_secs_f64());
        result.map_err(|e| {
            tracing::debug!(error = %e, %signal, "otlp grpc export refused");
            status_of(&e, self.retry_after)
        })
    }

    async fn export_inner(
        &self,
        signal: Signal,
        request: tonic::Request<Bytes>,
    ) -> Result<Outcome, IngestError> {
        let tenant = tenant_from_header(request.metadata().get(TENANT_HEADER).map(|v| v.as_bytes()))?;
        let metadata = self.ingestor.metadata(|name| request.metadata().get(name).map(|v| v.as_bytes()));
        let body = request.into_inner();
        let prepared = if body.len() > BLOCKING_BYTES {
            let ingestor = self.ingestor.clone();
            let t = tenant.clone();
            tokio::task::spawn_blocking(move || ingestor.prepare_encoded(signal, &t, &metadata, body))
                .await
                .map_err(|e| IngestError::ReadBody(e.to_string()))??
        } else {
            self.ingestor.prepare_encoded(signal, &tenant, &metadata, body)?
        };
        self.ingestor.commit(prepared).await
    }
}
