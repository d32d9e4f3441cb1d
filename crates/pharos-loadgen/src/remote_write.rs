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
pub(crate) struct RemoteWriteGen {
    pub(crate) series: u64,
    pub(crate) batch: u64,
    pub(crate) start_ms: i64,
}

impl RemoteWriteGen {
    /// The snappy-compressed request for send number `seq`.
    pub(crate) fn request(&self, seq: u64) -> Bytes {
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

/// What the samples of the history mode look like.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Values {
    /// Every series is an integer counter `bench_requests_total`; 100 per instance, 10 jobs.
    Counter,
    /// A mix shaped like a node's scrape: 40% integer counters, 15% counters of seconds with
    /// two decimals, 25% gauges of bytes that change every few scrapes, 20% constants; one
    /// timestamp per target and scrape, a few milliseconds late on one scrape in ten.
    Typical,
}

/// The history mode: `series` series over `steps` scrapes `step_ms` apart from `start_ms`,
/// split into one shard of series per worker (series `s` belongs to worker `s % workers`), so
/// each worker sends its shard's samples in time order, one request at a time, and no series
/// ever receives a sample out of order. Each worker's stream is finite.
pub(crate) struct HistoryGen {
    pub(crate) series: u64,
    pub(crate) batch: u64,
    pub(crate) workers: u64,
    pub(crate) steps: u64,
    pub(crate) step_ms: i64,
    pub(crate) start_ms: i64,
    pub(crate) values: Values,
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl HistoryGen {
    /// Series in worker `w`'s shard.
    fn shard_len(&self, w: u64) -> u64 {
        if w >= self.series { 0 } else { (self.series - w).div_ceil(self.workers) }
    }

    /// Samples the whole run sends.
    pub(crate) fn total(&self) -> u64 {
        self.series * self.steps
    }

    /// Request number `k` of worker `w` and the samples in it, or None when its shard is done.
    pub(crate) fn request(&self, w: u64, k: u64) -> Option<(Bytes, u64)> {
        let len = self.shard_len(w);
        let end = len * self.steps;
        let first = k * self.batch;
        if first >= end {
            return None;
        }
        let timeseries: Vec<TimeSeries> = (first..(first + self.batch).min(end))
            .map(|g| {
                let s = w + (g % len) * self.workers;
                let c = g / len;
                self.sample(s, c)
            })
            .collect();
        let n = timeseries.len() as u64;
        let raw = WriteRequest { timeseries }.encode_to_vec();
        Some((Bytes::from(snap::raw::Encoder::new().compress_vec(&raw).expect("snappy")), n))
    }

    fn sample(&self, s: u64, c: u64) -> TimeSeries {
        let h = mix(s);
        let label = |name: &str, value: String| Label { name: name.into(), value };
        let instance = s / 100;
        let mut t = self.start_ms + c as i64 * self.step_ms;
        let (name, value) = match self.values {
            Values::Counter => {
                let r = 1 + (h >> 8) % 50;
                ("bench_requests_total".to_string(), (r * c + mix(h ^ c) % (r + 1)) as f64)
            }
            Values::Typical => {
                let late = mix(instance.wrapping_mul(31) ^ c);
                if late.is_multiple_of(10) {
                    t += 1 + (late >> 8) as i64 % 5;
                }
                match h % 20 {
                    0..=7 => {
                        let r = 1 + (h >> 8) % 200;
                        (format!("bench_requests_{}_total", s % 40), (r * c + mix(h ^ c) % (r + 1)) as f64)
                    }
                    8..=10 => (
                        format!("bench_cpu_{}_seconds_total", s % 15),
                        (c * 1500 + mix(h ^ c) % 300) as f64 / 100.0,
                    ),
                    11..=15 => {
                        let period = 2 + (h >> 8) % 8;
                        let base = 1_000_000_000 + (h >> 16) % 1000 * 1_000_000;
                        (format!("bench_memory_{}_bytes", s % 25), (base + mix(h ^ (c / period)) % 1000 * 4096) as f64)
                    }
                    _ => (format!("bench_info_{}", s % 20), ((h >> 8) % 4 + 1) as f64),
                }
            }
        };
        TimeSeries {
            labels: vec![
                label("__name__", name),
                label("instance", format!("host-{instance}:9100")),
                label("job", format!("job-{}", instance % 10)),
                label("slot", format!("{}", s % 100)),
            ],
            samples: vec![Sample { value, timestamp: t }],
        }
    }
}
