//! Prometheus remote write messages (1.0 `prometheus.WriteRequest`, 2.0
//! `io.prometheus.write.v2.Request`: the fields the load generator sends), and the history mode
//! (past samples in time order per series).

/// Remote write 2.0 (`io.prometheus.write.v2.Request`).
pub(crate) mod v2 {
    pub(crate) const METRIC_TYPE_COUNTER: i32 = 1;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Request {
        /// Every string of the request; `symbols[0]` is the empty string.
        #[prost(string, repeated, tag = "4")]
        pub(crate) symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub(crate) timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct TimeSeries {
        /// Pairs of indices into `symbols`: name, value, name, value, ...
        #[prost(uint32, repeated, tag = "1")]
        pub(crate) labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub(crate) samples: Vec<super::Sample>,
        #[prost(message, repeated, tag = "4")]
        pub(crate) exemplars: Vec<Exemplar>,
        #[prost(message, optional, tag = "5")]
        pub(crate) metadata: Option<Metadata>,
        /// When the counter started, in ms.
        #[prost(int64, tag = "6")]
        pub(crate) created_timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Exemplar {
        #[prost(uint32, repeated, tag = "1")]
        pub(crate) labels_refs: Vec<u32>,
        #[prost(double, tag = "2")]
        pub(crate) value: f64,
        #[prost(int64, tag = "3")]
        pub(crate) timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Metadata {
        #[prost(int32, tag = "1")]
        pub(crate) r#type: i32,
        #[prost(uint32, tag = "3")]
        pub(crate) help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub(crate) unit_ref: u32,
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub(crate) labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Label {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Sample {
    #[prost(double, tag = "1")]
    pub(crate) value: f64,
    #[prost(int64, tag = "2")]
    pub(crate) timestamp: i64,
}

/// What the samples of the history mode look like.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Values {
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

    /// The series of request number `k` of worker `w` (one sample each), or None when its
    /// shard is done.
    pub(crate) fn request(&self, w: u64, k: u64) -> Option<Vec<TimeSeries>> {
        let len = self.shard_len(w);
        let end = len * self.steps;
        let first = k * self.batch;
        if first >= end {
            return None;
        }
        Some(
            (first..(first + self.batch).min(end))
                .map(|g| {
                    let s = w + (g % len) * self.workers;
                    let c = g / len;
                    self.sample(s, c)
                })
                .collect(),
        )
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
                        (
                            format!("bench_memory_{}_bytes", s % 25),
                            (base + mix(h ^ (c / period)) % 1000 * 4096) as f64,
                        )
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
