//! Prometheus remote write 1.0 and 2.0: POST `/api/v1/write` (and `/api/v1/push`).
//!
//! The version comes from the content type (`proto=io.prometheus.write.v2.Request` is 2.0; no
//! `proto` or `proto=prometheus.WriteRequest` is 1.0). Bodies are block snappy; the declared
//! decompressed length is checked against the limit before anything is allocated. Series are
//! validated one by one: invalid ones are refused with 400 (as Prometheus does, the valid ones of
//! the request are kept). Series go to the partition their label set hashes to. Success is 204
//! with the `X-Prometheus-Remote-Write-*-Written` headers.

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
    routing::post,
};
use bytes::Bytes;
use pharos_core::{PartitionKey, PayloadFormat, Signal, Tenant, label_set_hash, partition_of, prompb};
use prost::Message;

use crate::{
    IngestError, Ingestor, Limits, TENANT_HEADER,
    body::read_body,
    otlp::{
        Outcome, Prepared, Rejections, encode_envelope, http::HttpOptions, now_unix_nanos,
        validate::Violation,
    },
    tenant_from_header,
};

/// A sample the metrics store would refuse: its position in the series' samples, a short
/// reason (a metric label) and the message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedSample {
    pub index: usize,
    pub reason: &'static str,
    pub message: String,
}

/// Which samples of a series the metrics store would refuse now (out of order, too old,
/// out of bounds, duplicate), so that remote write answers them with 400 as Prometheus does
/// while the rest of the request is written. The store is read as it is: a sample made out of
/// order only by data still in the queue passes here and is refused when it reaches the store
/// (counted there).
pub trait SampleCheck: Send + Sync {
    /// `labels`: the series' sorted `(name, value)` pairs; `samples` as sent (timestamps in ms).
    fn refused(
        &self,
        tenant: &Tenant,
        labels: &[(&str, &str)],
        samples: &[prompb::v1::Sample],
    ) -> Vec<RefusedSample>;
}

/// Removes the samples `check` refuses from one series (`labels` gives its sorted pairs),
/// recording them in `rejections`; true when it had samples and none is left.
fn drop_refused<'a>(
    check: Option<&dyn SampleCheck>,
    tenant: &Tenant,
    labels: impl FnOnce() -> Vec<(&'a str, &'a str)>,
    samples: &mut Vec<prompb::v1::Sample>,
    rejections: &mut Rejections,
) -> bool {
    let Some(check) = check else { return false };
    if samples.is_empty() {
        return false;
    }
    let refused = check.refused(tenant, &labels(), samples);
    if refused.is_empty() {
        return false;
    }
    let mut gone = vec![false; samples.len()];
    for r in refused {
        if let Some(g) = gone.get_mut(r.index) {
            *g = true;
            rejections.add(Violation { reason: r.reason, message: r.message }, 1);
        }
    }
    let mut i = 0;
    samples.retain(|_| {
        i += 1;
        !gone[i - 1]
    });
    samples.is_empty()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Version {
    V1,
    V2,
}

struct RwState {
    ingestor: Arc<Ingestor>,
    options: HttpOptions,
}

/// The remote-write routes, for the OTLP/HTTP port and the API port alike.
pub fn router(ingestor: Arc<Ingestor>, options: HttpOptions) -> Router {
    let state = Arc::new(RwState { ingestor, options });
    Router::new().route("/api/v1/write", post(handle)).route("/api/v1/push", post(handle)).with_state(state)
}

fn version_of(headers: &HeaderMap) -> Result<Version, IngestError> {
    let Some(raw) = headers.get(header::CONTENT_TYPE) else { return Ok(Version::V1) };
    let raw = raw.to_str().unwrap_or("(not text)");
    let mut parts = raw.split(';').map(str::trim);
    let essence = parts.next().unwrap_or("").to_ascii_lowercase();
    if essence != "application/x-protobuf" {
        return Err(IngestError::UnsupportedContentType(raw.to_string()));
    }
    for param in parts {
        if let Some(proto) = param.strip_prefix("proto=") {
            return match proto.trim_matches('"') {
                "prometheus.WriteRequest" => Ok(Version::V1),
                "io.prometheus.write.v2.Request" => Ok(Version::V2),
                _ => Err(IngestError::UnsupportedContentType(raw.to_string())),
            };
        }
    }
    Ok(Version::V1)
}

/// What a request wrote, for the `-Written` headers.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    samples: u64,
    histograms: u64,
    exemplars: u64,
}

async fn handle(State(state): State<Arc<RwState>>, request: Request) -> Response {
    let started = Instant::now();
    let result = receive(&state, request).await;
    let (version, outcome) = match &result {
        Ok((v, _, o)) if o.rejected > 0 => (Some(*v), "partial"),
        Ok((v, _, _)) => (Some(*v), "ok"),
        Err((v, e)) => (*v, e.reason()),
    };
    let protocol = match version {
        Some(Version::V2) => "prometheus_remote_write_v2",
        _ => "prometheus_remote_write_v1",
    };
    state.ingestor.metrics().request(Signal::Metrics, protocol, outcome, started.elapsed().as_secs_f64());
    match result {
        Ok((_, written, o)) if o.rejected > 0 => {
            response(StatusCode::BAD_REQUEST, o.message.unwrap_or_default(), Some(written), &state.options)
        }
        Ok((_, written, _)) => response(StatusCode::NO_CONTENT, String::new(), Some(written), &state.options),
        Err((version, e)) => {
            let code = e.code();
            // Remote write 1.0 predates 415: an encoding it does not know is a bad request.
            let status = match (&e, version) {
                (IngestError::UnsupportedEncoding(_), Some(Version::V1)) => StatusCode::BAD_REQUEST,
                _ => StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            };
            tracing::debug!(error = %e, "remote write refused");
            response(status, e.public_message(), None, &state.options)
        }
    }
}

fn response(
    status: StatusCode,
    message: String,
    written: Option<Written>,
    options: &HttpOptions,
) -> Response {
    let mut r = Response::new(Body::from(if message.is_empty() { message } else { message + "\n" }));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(w) = written {
        headers.insert("x-prometheus-remote-write-samples-written", HeaderValue::from(w.samples));
        headers.insert("x-prometheus-remote-write-histograms-written", HeaderValue::from(w.histograms));
        headers.insert("x-prometheus-remote-write-exemplars-written", HeaderValue::from(w.exemplars));
    }
    if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(options.retry_after.as_secs().max(1)));
    }
    r
}

type Received = (Version, Written, Outcome);

async fn receive(state: &RwState, request: Request) -> Result<Received, (Option<Version>, IngestError)> {
    let (parts, body) = request.into_parts();
    let version = version_of(&parts.headers).map_err(|e| (None, e))?;
    let fail = |e: IngestError| (Some(version), e);
    let tenant = tenant_from_header(parts.headers.get(TENANT_HEADER).map(|v| v.as_bytes()))
        .map_err(|e| fail(e.into()))?;
    match parts.headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("(not text)")) {
        // Prometheus treats a missing encoding as snappy, so as not to break old senders.
        None | Some("snappy") => {}
        Some(other) => return Err(fail(IngestError::UnsupportedEncoding(other.to_string()))),
    }
    let timeout = state.options.request_timeout;
    let body = tokio::time::timeout(timeout, read_body(body, state.ingestor.limits().max_body_size))
        .await
        .map_err(|_| fail(IngestError::BodyTimeout { secs: timeout.as_secs_f64() }))?
        .map_err(fail)?;
    let ingestor = state.ingestor.clone();
    let work = move || prepare(&ingestor, &tenant, version, &body);
    // Snappy, decoding and validation are CPU work: off the async runtime.
    let (prepared, written) = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| fail(IngestError::ReadBody(e.to_string())))?
        .map_err(fail)?;
    let outcome = state.ingestor.commit(prepared).await.map_err(fail)?;
    Ok((version, written, outcome))
}

/// Snappy block decoding with the declared length checked before allocating.
pub(crate) fn unsnappy(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let bad = |e: snap::Error| IngestError::Decompress {
        encoding: "snappy",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    };
    let declared = match snap::raw::decompress_len(body) {
        Ok(n) => n,
        // A declared length past what snappy can even express.
        Err(snap::Error::TooBig { .. }) => return Err(IngestError::DecompressedTooLarge { limit }),
        Err(e) => return Err(bad(e)),
    };
    if declared > limit {
        return Err(IngestError::DecompressedTooLarge { limit });
    }
    snap::raw::Decoder::new().decompress_vec(body).map_err(bad)
}

/// Checks one series' labels: present, sorted without duplicates, none empty, within the limits,
/// and a metric name.
fn check_labels<'a>(
    labels: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    limits: &Limits,
) -> Result<(), Violation> {
    let invalid = |message: String| Violation { reason: "invalid_labels", message };
    let count = labels.len();
    if count > limits.max_labels_per_series {
        return Err(Violation {
            reason: "too_many_labels",
            message: format!(
                "series has {count} labels, over the limit max_labels_per_series of {}",
                limits.max_labels_per_series
            ),
        });
    }
    let mut previous: Option<&str> = None;
    let mut has_name = false;
    for (name, value) in labels {
        if name.is_empty() {
            return Err(invalid("a label has an empty name".into()));
        }
        if value.is_empty() {
            return Err(invalid(format!("label {name:?} has an empty value")));
        }
        if name.len() > limits.max_label_name_length {
            return Err(Violation {
                reason: "label_name_too_long",
                message: format!(
                    "label name of {} bytes is over the limit max_label_name_length of {}",
                    name.len(),
                    limits.max_label_name_length
                ),
            });
        }
        if value.len() > limits.max_label_value_length {
            return Err(Violation {
                reason: "label_value_too_long",
                message: format!(
                    "label {name:?} has a value of {} bytes, over the limit max_label_value_length of {}",
                    value.len(),
                    limits.max_label_value_length
                ),
            });
        }
        if let Some(p) = previous {
            if p == name {
                return Err(invalid(format!("duplicate label name {name:?}")));
            }
            if p > name {
                return Err(invalid(format!("labels are not sorted by name: {p:?} comes before {name:?}")));
            }
        }
        has_name |= name == "__name__";
        previous = Some(name);
    }
    if !has_name {
        return Err(invalid("series has no metric name (__name__ label)".into()));
    }
    Ok(())
}

fn series_partition<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>, partitions: u32) -> u32 {
    partition_of(PartitionKey::Hash(label_set_hash(labels)), partitions)
}

fn prepare(
    ingestor: &Ingestor,
    tenant: &Tenant,
    version: Version,
    body: &Bytes,
) -> Result<(Prepared, Written), IngestError> {
    let limits = ingestor.limits();
    let raw = unsnappy(body, limits.max_decompressed_size)?;
    let partitions = ingestor.partitions().max(1);
    let mut rejections = Rejections::default();
    let mut written = Written::default();
    let received_at = now_unix_nanos();
    let parts: Vec<(u32, Bytes, u64)> = match version {
        Version::V1 => {
            let req = prompb::v1::WriteRequest::decode(&raw[..])?;
            let mut per: Vec<prompb::v1::WriteRequest> = vec![Default::default(); partitions as usize];
            let mut metadata = Some(req.metadata);
            for mut series in req.timeseries {
                let items = (series.samples.len() + series.histograms.len()) as u64;
                let labels = || series.labels.iter().map(|l| (l.name.as_str(), l.value.as_str()));
                if let Err(v) = check_labels(labels(), limits) {
                    rejections.add(v, items.max(1));
                    continue;
                }
                let pairs = || labels().collect();
                let emptied = drop_refused(
                    ingestor.sample_check(),
                    tenant,
                    pairs,
                    &mut series.samples,
                    &mut rejections,
                );
                if emptied && series.histograms.is_empty() && series.exemplars.is_empty() {
                    continue;
                }
                written.samples += series.samples.len() as u64;
                written.histograms += series.histograms.len() as u64;
                written.exemplars += series.exemplars.len() as u64;
                let p = series_partition(labels(), partitions) as usize;
                per[p].timeseries.push(series);
            }
            // Metadata is small and per metric family: it travels with the first partition's part.
            if let Some(first) = per.iter_mut().find(|r| !r.timeseries.is_empty()) {
                first.metadata = metadata.take().unwrap_or_default();
            }
            per.into_iter()
                .enumerate()
                .filter(|(_, r)| !r.timeseries.is_empty())
                .map(|(p, r)| {
                    let n = r.timeseries.iter().map(|s| (s.samples.len() + s.histograms.len()) as u64).sum();
                    (
                        p as u32,
                        encode_envelope(
                            tenant,
                            Signal::Metrics,
                            PayloadFormat::PrometheusWriteV1,
                            received_at,
                            n,
                            &[],
                            &r,
                        ),
                        n,
                    )
                })
                .collect()
        }
        Version::V2 => {
            let req = prompb::v2::Request::decode(&raw[..])?;
            if req.symbols.first().is_some_and(|s| !s.is_empty()) {
                return Err(IngestError::Invalid("symbols[0] must be the empty string".into()));
            }
            let symbols = &req.symbols;
            let mut per: Vec<Vec<prompb::v2::TimeSeries>> = vec![Vec::new(); partitions as usize];
            for mut series in req.timeseries {
                let items = (series.samples.len() + series.histograms.len()) as u64;
                let resolved: Option<Vec<(&str, &str)>> = (series.labels_refs.len() % 2 == 0)
                    .then(|| {
                        series
                            .labels_refs
                            .chunks(2)
                            .map(|pair| {
                                Some((
                                    symbols.get(pair[0] as usize)?.as_str(),
                                    symbols.get(pair[1] as usize)?.as_str(),
                                ))
                            })
                            .collect()
                    })
                    .flatten();
                let Some(labels) = resolved else {
                    let message = "series labels_refs are odd in number or point past the symbols".into();
                    rejections.add(Violation { reason: "invalid_labels", message }, items.max(1));
                    continue;
                };
                if !series.samples.is_empty() && !series.histograms.is_empty() {
                    let message = "a series carries both samples and histograms".into();
                    rejections.add(Violation { reason: "invalid_series", message }, items);
                    continue;
                }
                if let Err(v) = check_labels(labels.iter().copied(), limits) {
                    rejections.add(v, items.max(1));
                    continue;
                }
                let pairs = || labels.clone();
                let emptied = drop_refused(
                    ingestor.sample_check(),
                    tenant,
                    pairs,
                    &mut series.samples,
                    &mut rejections,
                );
                if emptied && series.histograms.is_empty() && series.exemplars.is_empty() {
                    continue;
                }
                written.samples += series.samples.len() as u64;
                written.histograms += series.histograms.len() as u64;
                written.exemplars += series.exemplars.len() as u64;
                let p = series_partition(labels.into_iter(), partitions) as usize;
                per[p].push(series);
            }
            // Each partition's part carries the whole symbol table: refs stay valid as they are.
            per.into_iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty())
                .map(|(p, timeseries)| {
                    let n = timeseries.iter().map(|s| (s.samples.len() + s.histograms.len()) as u64).sum();
                    let part = prompb::v2::Request { symbols: symbols.clone(), timeseries };
                    (
                        p as u32,
                        encode_envelope(
                            tenant,
                            Signal::Metrics,
                            PayloadFormat::PrometheusWriteV2,
                            received_at,
                            n,
                            &[],
                            &part,
                        ),
                        n,
                    )
                })
                .collect()
        }
    };
    let accepted: u64 = parts.iter().map(|(_, _, n)| n).sum();
    let metrics = ingestor.metrics();
    metrics.received(Signal::Metrics, tenant, accepted + rejections.count);
    for (reason, n) in &rejections.by_reason {
        metrics.rejected(Signal::Metrics, tenant, reason, *n);
    }
    if accepted == 0 && rejections.count > 0 {
        return Err(IngestError::AllRejected {
            signal: Signal::Metrics,
            count: rejections.count,
            message: rejections.first.unwrap_or_default(),
        });
    }
    let envelopes = parts.into_iter().map(|(p, envelope, _)| (p, envelope)).collect();
    Ok((
        Prepared { signal: Signal::Metrics, tenant: tenant.clone(), envelopes, accepted, rejections },
        written,
    ))
}
