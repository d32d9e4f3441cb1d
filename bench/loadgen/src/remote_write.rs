//! Prometheus remote write 1.0 requests: `--series` active series, each written once per
//! cycle through them, one second of sample time apart, so no series ever goes backwards.

use bytes::Bytes;
use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// Builds the request of each send: batch `seq` carries the samples `seq * batch ..` of the
/// endless sequence series 0, 1, ..., N-1, 0, 1, ...; sample time = start + cycle seconds.
pub struct RemoteWriteGen {
    pub series: u64,
    pub batch: u64,
    pub start_ms: i64,
}

impl RemoteWriteGen {
    /// The snappy-compressed request for send number `seq`.
    pub fn request(&self, seq: u64) -> Bytes {
        let first = seq * self.batch;
        let timeseries = (first..first + self.batch)
            .map(|g| {
                let s = g % self.series;
                let cycle = g / self.series;
                TimeSeries {
                    labels: vec![
                        Label { name: "__name__".into(), value: format!("bench_metric_{}", s % 100) },
                        Label { name: "instance".into(), value: format!("host-{}", s / 100) },
                        Label { name: "job".into(), value: "loadgen".into() },
                    ],
                    samples: vec![Sample {
                        value: (cycle * 10 + s % 7) as f64,
                        timestamp: self.start_ms + cycle as i64 * 1000,
                    }],
                }
            })
            .collect();
        let raw = WriteRequest { timeseries }.encode_to_vec();
        Bytes::from(snap::raw::Encoder::new().compress_vec(&raw).expect("snappy"))
    }
}
