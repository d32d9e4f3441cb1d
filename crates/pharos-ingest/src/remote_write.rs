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
use pharos_core::{
    PartitionKey, PayloadFormat, Signal, Tenant, label_set_hash, partition_of, prompb, wire::put_bytes_field,
};
use prost::Message;

use crate::{
    IngestError, Ingestor, Limits, TENANT_HEADER,
    body::read_body,
    otlp::{
        EncodedBody, Outcome, Prepared, Rejections, encode_envelope, http::HttpOptions, now_unix_nanos,
        validate::Violation,
    },
    tenant_from_header,
};

/// A sample the metrics store would refuse: its series (position in the list given to
/// [`SampleCheck::refused`]), its position in the series' samples, a short reason (a metric
/// label) and the message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedSample {
    pub series: usize,
    pub index: usize,
    pub reason: &'static str,
    pub message: String,
}

/// One series for [`SampleCheck::refused`].
#[derive(Debug, Clone, Copy)]
pub struct CheckedSeries<'s> {
    /// [`label_set_hash`] of `labels`.
    pub hash: u64,
    /// Sorted `(name, value)` pairs.
    pub labels: &'s [(&'s str, &'s str)],
    /// As sent (timestamps in ms).
    pub samples: &'s [prompb::v1::Sample],
}

/// Which samples the metrics store would refuse now (out of order, too old, out of bounds,
/// duplicate), so that remote write answers them with 400 as Prometheus does while the rest of
/// the request is written. The store is read as it is: a sample made out of order only by data
/// still in the queue passes here and is refused when it reaches the store (counted there).
pub trait SampleCheck: Send + Sync {
    /// The refused samples of a request's series, in the order of `series`.
    fn refused(&self, tenant: &Tenant, series: &[CheckedSeries<'_>]) -> Vec<RefusedSample>;
}

/// Asks `check` about `series` and records what it refuses in `rejections`; returns, per
/// series, which of its samples are refused (`None` for a series with none refused).
fn refusals(
    check: Option<&dyn SampleCheck>,
    tenant: &Tenant,
    series: &[CheckedSeries<'_>],
    rejections: &mut Rejections,
) -> Vec<Option<Vec<bool>>> {
    let mut gone: Vec<Option<Vec<bool>>> = vec![None; series.len()];
    let Some(check) = check else { return gone };
    for r in check.refused(tenant, series) {
        let Some(s) = series.get(r.series) else { continue };
        let g = gone[r.series].get_or_insert_with(|| vec![false; s.samples.len()]);
        if let Some(g) = g.get_mut(r.index) {
            *g = true;
            rejections.add(Violation { reason: r.reason, message: r.message }, 1);
        }
    }
    gone
}

/// Removes the samples marked in `gone`.
fn drop_marked(samples: &mut Vec<prompb::v1::Sample>, gone: &[bool]) {
    let mut i = 0;
    samples.retain(|_| {
        i += 1;
        !gone.get(i - 1).copied().unwrap_or(false)
    });
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
            // Read in place: labels borrowed from the body, each series forwarded as it came.
            let view = prompb::view::WriteRequestView::read(&raw)?;
            // What the view does not look into is checked as decoding the request would.
            view.metadata()?;
            let mut checked = Vec::with_capacity(view.series.len());
            let mut which = Vec::with_capacity(view.series.len());
            for (i, series) in view.series.iter().enumerate() {
                let (labels, samples) = (view.labels(series), view.samples(series));
                if let Err(v) = check_labels(labels.iter().copied(), limits) {
                    rejections.add(v, (samples.len() + series.histograms).max(1) as u64);
                    continue;
                }
                if series.histograms > 0 || view.exemplar_count(series) > 0 {
                    prompb::v1::TimeSeries::decode(series.raw)?;
                }
                checked.push(CheckedSeries { hash: label_set_hash(labels.iter().copied()), labels, samples });
                which.push(i);
            }
            let gone = refusals(ingestor.sample_check(), tenant, &checked, &mut rejections);
            // Per partition: the encoded request and its items.
            let mut per: Vec<(Vec<u8>, u64)> = vec![(Vec::new(), 0); partitions as usize];
            for ((c, &i), gone) in checked.iter().zip(&which).zip(gone) {
                let series = &view.series[i];
                let exemplars = view.exemplar_count(series);
                let (body, items) = &mut per[partition_of(PartitionKey::Hash(c.hash), partitions) as usize];
                let samples = match gone {
                    None => {
                        put_bytes_field(body, 1, series.raw);
                        c.samples.len()
                    }
                    Some(gone) => {
                        let mut ts = prompb::v1::TimeSeries::decode(series.raw)?;
                        drop_marked(&mut ts.samples, &gone);
                        if ts.samples.is_empty() && series.histograms == 0 && exemplars == 0 {
                            continue;
                        }
                        put_bytes_field(body, 1, &ts.encode_to_vec());
                        ts.samples.len()
                    }
                };
                *items += (samples + series.histograms) as u64;
                written.samples += samples as u64;
                written.histograms += series.histograms as u64;
                written.exemplars += exemplars as u64;
            }
            // Metadata is small and per metric family: it travels with the first partition's part.
            if let Some((body, _)) = per.iter_mut().find(|(body, _)| !body.is_empty()) {
                for m in &view.metadata {
                    put_bytes_field(body, 3, m);
                }
            }
            per.into_iter()
                .enumerate()
                .filter(|(_, (body, _))| !body.is_empty())
                .map(|(p, (body, n))| {
                    let envelope = encode_envelope(
                        tenant,
                        Signal::Metrics,
                        PayloadFormat::PrometheusWriteV1,
                        received_at,
                        n,
                        &[],
                        &EncodedBody(&body),
                    );
                    (p as u32, envelope, n)
                })
                .collect()
        }
        Version::V2 => {
            let req = prompb::v2::Request::decode(&raw[..])?;
            if req.symbols.first().is_some_and(|s| !s.is_empty()) {
                return Err(IngestError::Invalid("symbols[0] must be the empty string".into()));
            }
            let (symbols, mut timeseries) = (&req.symbols, req.timeseries);
            // The valid series: position, labels, hash.
            type Valid<'s> = (usize, Vec<(&'s str, &'s str)>, u64);
            let mut valid: Vec<Valid<'_>> = Vec::with_capacity(timeseries.len());
            for (i, series) in timeseries.iter().enumerate() {
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
                let hash = label_set_hash(labels.iter().copied());
                valid.push((i, labels, hash));
            }
            let checked: Vec<CheckedSeries<'_>> = valid
                .iter()
                .map(|(i, labels, hash)| CheckedSeries {
                    hash: *hash,
                    labels,
                    samples: &timeseries[*i].samples,
                })
                .collect();
            let gone = refusals(ingestor.sample_check(), tenant, &checked, &mut rejections);
            drop(checked);
            let mut per: Vec<Vec<prompb::v2::TimeSeries>> = vec![Vec::new(); partitions as usize];
            for ((i, _, hash), gone) in valid.iter().zip(gone) {
                let mut series = std::mem::take(&mut timeseries[*i]);
                if let Some(gone) = gone {
                    drop_marked(&mut series.samples, &gone);
                    if series.samples.is_empty()
                        && series.histograms.is_empty()
                        && series.exemplars.is_empty()
                    {
                        continue;
                    }
                }
                written.samples += series.samples.len() as u64;
                written.histograms += series.histograms.len() as u64;
                written.exemplars += series.exemplars.len() as u64;
                per[partition_of(PartitionKey::Hash(*hash), partitions) as usize].push(series);
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
