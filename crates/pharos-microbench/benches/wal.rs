//! Write-ahead log append, in process, into a temporary directory, with fsync out of the
//! way (`FsyncPolicy::Interval` of an hour): the cost of framing, checksumming, handing the
//! records to the partition's writer thread and `write`, not the disk's fsync latency.
//!
//! Each iteration is one `Queue::append` of a batch, awaited until the writer answers.
//! Between measurements a consumer group commits everything written, so consumed segments
//! are deleted and the directory stays small.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pharos_microbench::{MEASUREMENT_TIME, Rng, SEED, WARM_UP_TIME};
use pharos_queue::{
    Queue,
    wal::{FsyncPolicy, Wal, WalConfig},
};

/// (records per append, bytes per record): many small records, and one envelope the size of
/// a 500-span OTLP request.
const SHAPES: [(usize, usize); 3] = [(1, 1 << 10), (64, 1 << 10), (1, 128 << 10)];

fn records(count: usize, size: usize) -> Vec<Bytes> {
    let mut rng = Rng::new(SEED);
    (0..count)
        .map(|_| {
            let bytes: Vec<u8> = (0..size).map(|_| rng.below(256) as u8).collect();
            Bytes::from(bytes)
        })
        .collect()
}

fn wal_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = WalConfig {
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        segment_bytes: 16 << 20,
        ..WalConfig::new(dir.path(), 1)
    };
    let wal = Wal::open(config).expect("open the wal");
    let mut consumer = runtime.block_on(wal.consumer("bench", 0)).expect("a consumer");
    let mut group = c.benchmark_group("wal/append_fsync_interval");
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME);
    for (count, size) in SHAPES {
        let batch = records(count, size);
        group.throughput(Throughput::Bytes((count * size) as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{count}x{}KiB", size >> 10)),
            &batch,
            |b, batch| {
                b.iter_custom(|iters| {
                    let elapsed = runtime.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            wal.append(0, batch.clone()).await.expect("append");
                        }
                        start.elapsed()
                    });
                    // Not measured: let the log drop what was written.
                    runtime.block_on(consumer.commit(consumer.end_offset())).expect("commit");
                    elapsed
                })
            },
        );
    }
    group.finish();
    runtime.block_on(wal.close()).expect("close the wal");
}

criterion_group!(benches, wal_append);
criterion_main!(benches);
