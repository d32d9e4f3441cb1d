//! Prometheus remote write 2.0 requests (as the queue holds them, decompressed) turned into
//! series, exemplars and metadata for the head (1.0 requests are read in place by the
//! partition writer).
//!
//! The receiver has already checked labels (names, sorting, duplicates, limits); this is total
//! anyway: whatever cannot be turned into a series is counted as dropped, never a panic.
//! Native histograms are dropped (reason `native_histogram`): the engine has no histogram samples.

use pharos_core::prompb::{v1, v2};
use prost::Message;

use crate::model::{Labels, Sample};
use crate::store::{Batch, Exemplar, Metadata, MetricType};

/// The metric type of a remote-write metadata type code (the same codes in 1.0 and 2.0, and
/// in part files); an unknown code is `Unknown`.
pub(crate) fn metric_type(code: i32) -> MetricType {
    u8::try_from(code).ok().and_then(MetricType::from_code).unwrap_or(MetricType::Unknown)
}

fn samples(samples: &[v1::Sample]) -> Vec<Sample> {
    samples.iter().map(|s| Sample { t: s.timestamp, v: s.value }).collect()
}

/// Decodes a remote write 2.0 `Request`, resolving its symbol references.
pub fn decode_v2(payload: &[u8]) -> Result<Batch, prost::DecodeError> {
    let req = v2::Request::decode(payload)?;
    let symbol = |i: u32| req.symbols.get(i as usize).map(String::as_str);
    let labels_of = |refs: &[u32]| -> Option<Labels> {
        if !refs.len().is_multiple_of(2) {
            return None;
        }
        let mut pairs = Vec::with_capacity(refs.len() / 2);
        for pair in refs.chunks_exact(2) {
            pairs.push((symbol(pair[0])?, symbol(pair[1])?));
        }
        Some(Labels::from_pairs(pairs))
    };
    let mut batch = Batch::default();
    for ts in &req.timeseries {
        let Some(labels) = labels_of(&ts.labels_refs) else {
            batch.drop_items("invalid_symbol_ref", (ts.samples.len() + ts.histograms.len()) as u64);
            continue;
        };
        batch.drop_items("native_histogram", ts.histograms.len() as u64);
        // An exemplar with a bad reference is left out (`dropped` counts samples only).
        for e in &ts.exemplars {
            if let Some(exemplar_labels) = labels_of(&e.labels_refs) {
                let exemplar = Exemplar { labels: exemplar_labels, value: e.value, t: e.timestamp };
                batch.exemplars.push((labels.clone(), exemplar));
            }
        }
        if let Some(m) = &ts.metadata {
            let name = labels.get("__name__");
            let (help, unit) = (symbol(m.help_ref).unwrap_or(""), symbol(m.unit_ref).unwrap_or(""));
            if !name.is_empty() && (m.r#type != 0 || !help.is_empty() || !unit.is_empty()) {
                batch.metadata.push((
                    name.to_owned(),
                    Metadata { kind: metric_type(m.r#type), help: help.to_owned(), unit: unit.to_owned() },
                ));
            }
        }
        if !ts.samples.is_empty() {
            batch.series.push((labels, samples(&ts.samples)));
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_v2_resolves_symbols_and_drops_bad_references() {
        let req = v2::Request {
            symbols: ["", "__name__", "http_requests_total", "code", "200", "Requests."]
                .map(String::from)
                .to_vec(),
            timeseries: vec![
                v2::TimeSeries {
                    labels_refs: vec![1, 2, 3, 4],
                    samples: vec![v1::Sample { value: 5.0, timestamp: 10 }],
                    metadata: Some(v2::Metadata { r#type: 1, help_ref: 5, unit_ref: 0 }),
                    ..Default::default()
                },
                v2::TimeSeries {
                    labels_refs: vec![1, 99],
                    samples: vec![v1::Sample { value: 1.0, timestamp: 10 }],
                    ..Default::default()
                },
            ],
        };
        let batch = decode_v2(&req.encode_to_vec()).unwrap();
        let want = Labels::from_pairs([("__name__", "http_requests_total"), ("code", "200")]);
        assert_eq!(batch.series, vec![(want, vec![Sample { t: 10, v: 5.0 }])]);
        assert_eq!(batch.metadata[0].0, "http_requests_total");
        assert_eq!(batch.metadata[0].1.kind, MetricType::Counter);
        assert_eq!(batch.metadata[0].1.help, "Requests.");
        assert_eq!(batch.dropped, vec![("invalid_symbol_ref", 1)]);
    }
}
