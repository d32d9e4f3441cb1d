//! The transports: OTLP/gRPC (tonic, raw bytes in and out) and HTTP/1.1 (hyper, one keep-alive
//! connection per worker) for OTLP/HTTP, remote write and Loki push; and what each answer means.

use anyhow::{Context, Result};
use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

use crate::Signal;

/// Sends bytes as they are and returns the response bytes undecoded.
#[derive(Clone, Copy, Default)]
pub(crate) struct RawCodec;
pub(crate) struct RawEncoder;
pub(crate) struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
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
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// What a remote write 2.0 receiver says it wrote (the `X-Prometheus-Remote-Write-*-Written`
/// headers of its answer).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Written {
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
}

/// Outcome of one request.
pub(crate) enum Outcome {
    /// Accepted; `rejected` items refused by a partial success; for remote write 2.0 what the
    /// headers said (None: no `-Written` headers, a 1.0 receiver).
    Ok { rejected: u64, written: Option<Written> },
    /// Refused or failed: the reason (`http_400`, `grpc_Unavailable`, `timeout`, ...).
    Err(String),
}

/// How an HTTP request is sent and its answer read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum HttpKind {
    OtlpProtobuf,
    OtlpJson,
    RemoteWrite1,
    RemoteWrite2,
    LokiProtobuf,
    LokiJson,
}

/// Per-worker transport.
pub(crate) enum Client {
    Grpc {
        grpc: tonic::client::Grpc<Channel>,
        path: http::uri::PathAndQuery,
    },
    Http {
        addr: String,
        path: &'static str,
        kind: HttpKind,
        tenant: Option<String>,
        sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    },
}

/// Items refused by an OTLP partial success answer (protobuf or JSON).
fn otlp_rejected(signal: Signal, body: &[u8], json: bool) -> u64 {
    fn get<T: Message + Default + serde::de::DeserializeOwned>(body: &[u8], json: bool) -> Option<T> {
        if body.is_empty() {
            return None;
        }
        if json { serde_json::from_slice(body).ok() } else { T::decode(body).ok() }
    }
    match signal {
        Signal::Traces => get::<ExportTraceServiceResponse>(body, json)
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_spans.max(0) as u64),
        Signal::Logs => get::<ExportLogsServiceResponse>(body, json)
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_log_records.max(0) as u64),
        Signal::Metrics => get::<ExportMetricsServiceResponse>(body, json)
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_data_points.max(0) as u64),
    }
}

fn header_u64(headers: &http::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

impl Client {
    pub(crate) async fn send(&mut self, signal: Signal, body: Bytes) -> Outcome {
        match self {
            Client::Grpc { grpc, path } => {
                if let Err(e) = grpc.ready().await {
                    return Outcome::Err(format!("grpc_not_ready: {e}"));
                }
                match grpc.unary(tonic::Request::new(body), path.clone(), RawCodec).await {
                    Ok(resp) => {
                        Outcome::Ok { rejected: otlp_rejected(signal, resp.get_ref(), false), written: None }
                    }
                    Err(st) => Outcome::Err(format!("grpc_{:?}", st.code())),
                }
            }
            Client::Http { addr, path, kind, tenant, sender } => {
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    match http1_connect(addr).await {
                        Ok(s) => *sender = Some(s),
                        Err(e) => return Outcome::Err(format!("connect: {}", e.root_cause())),
                    }
                }
                let s = sender.as_mut().expect("connected");
                if s.ready().await.is_err() {
                    *sender = None;
                    return Outcome::Err("http_conn_closed".into());
                }
                let content_type = match kind {
                    HttpKind::OtlpJson | HttpKind::LokiJson => "application/json",
                    HttpKind::RemoteWrite2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                    _ => "application/x-protobuf",
                };
                let mut req = http::Request::post(*path)
                    .header(http::header::HOST, addr.as_str())
                    .header(http::header::USER_AGENT, "pharos-loadgen")
                    .header(http::header::CONTENT_TYPE, content_type);
                if let Some(t) = tenant {
                    req = req.header("X-Scope-OrgID", t.as_str());
                }
                match kind {
                    HttpKind::RemoteWrite1 => {
                        req = req
                            .header(http::header::CONTENT_ENCODING, "snappy")
                            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
                    }
                    HttpKind::RemoteWrite2 => {
                        req = req
                            .header(http::header::CONTENT_ENCODING, "snappy")
                            .header("X-Prometheus-Remote-Write-Version", "2.0.0");
                    }
                    _ => {}
                }
                let req = req.body(Full::new(body)).expect("request");
                let kind = *kind;
                match s.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let written = (kind == HttpKind::RemoteWrite2).then(|| {
                            let h = resp.headers();
                            let samples = header_u64(h, "X-Prometheus-Remote-Write-Samples-Written");
                            let histograms = header_u64(h, "X-Prometheus-Remote-Write-Histograms-Written");
                            let exemplars = header_u64(h, "X-Prometheus-Remote-Write-Exemplars-Written");
                            (samples.is_some() || histograms.is_some() || exemplars.is_some()).then(|| {
                                Written {
                                    samples: samples.unwrap_or(0),
                                    histograms: histograms.unwrap_or(0),
                                    exemplars: exemplars.unwrap_or(0),
                                }
                            })
                        });
                        match resp.into_body().collect().await {
                            Ok(b) if status.is_success() => {
                                let b = b.to_bytes();
                                let rejected = match kind {
                                    HttpKind::OtlpProtobuf => otlp_rejected(signal, &b, false),
                                    HttpKind::OtlpJson => otlp_rejected(signal, &b, true),
                                    _ => 0,
                                };
                                Outcome::Ok { rejected, written: written.flatten() }
                            }
                            Ok(_) => Outcome::Err(format!("http_{}", status.as_u16())),
                            Err(_) => {
                                *sender = None;
                                Outcome::Err("http_body_error".into())
                            }
                        }
                    }
                    Err(e) => {
                        *sender = None;
                        Outcome::Err(if e.is_canceled() {
                            "http_canceled".into()
                        } else {
                            "http_send_error".into()
                        })
                    }
                }
            }
        }
    }

    /// Drops the connection (after a timeout: the answer may still come on it).
    pub(crate) fn reset(&mut self) {
        if let Client::Http { sender, .. } = self {
            *sender = None;
        }
    }
}

pub(crate) async fn http1_connect(
    addr: &str,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
