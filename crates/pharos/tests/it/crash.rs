//! Acknowledged data survives SIGKILL at any moment and is counted exactly once after replay.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use crate::{
    harness::{Pharos, metric_value, pipeline_items},
    load::{Tally, run_workers},
};

/// A tiny xorshift, seeded from the clock: each run kills at other moments. The seed is printed.
fn rng() -> impl FnMut() -> u64 {
    let mut x = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("crash test seed {x}");
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

async fn depth(pharos: &Pharos) -> f64 {
    let text = pharos.metrics_text().await;
    text.lines()
        .filter(|l| l.starts_with("pharos_queue_depth_records{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_no_acknowledged_span_and_counts_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let tally = Arc::new(Tally::default());
    let mut next = rng();
    let rounds = 4;
    for round in 0..rounds {
        let pharos = Pharos::start(dir.path(), &["queue.partitions=3", "queue.segment_size=64KiB"]);
        if round == 2 {
            let log = pharos.log();
            assert!(
                log.contains("wal segment tail is damaged, truncating it"),
                "torn tail not reported:\n{log}"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(run_workers(
            pharos.http_url("/v1/traces"),
            "crash",
            4,
            (round as u64 + 1) << 32,
            stop.clone(),
            tally.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(300 + next() % 1200)).await;
        let log = pharos.kill9();
        if round > 0 {
            assert!(log.contains("replaying queue partition") || log.contains("wal partition open"), "{log}");
        }
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap();
        if round == 1 {
            // A torn write: the start of a record that never finished.
            let seg_dir = dir.path().join("wal/partition-0000");
            let mut segs: Vec<_> = std::fs::read_dir(&seg_dir).unwrap().map(|e| e.unwrap().path()).collect();
            segs.retain(|p| p.extension().is_some_and(|e| e == "wal"));
            segs.sort();
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(segs.last().unwrap()).unwrap();
            f.write_all(&[0x40, 0, 0, 0, 0xde, 0xad]).unwrap();
        }
    }
    let acked = tally.acked.load(Ordering::Relaxed) as f64;
    let unknown = tally.unknown.load(Ordering::Relaxed) as f64;
    assert!(acked > 0.0, "the load never got an answer");

    let pharos = Pharos::start(dir.path(), &["queue.partitions=3", "queue.segment_size=64KiB"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while depth(&pharos).await > 0.0 {
        assert!(std::time::Instant::now() < deadline, "the queue never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted = metric_value(&pharos.metrics_text().await, &pipeline_items("traces", "crash"));
    println!("acknowledged {acked}, unanswered {unknown}, counted {counted}");
    assert!(counted >= acked, "lost acknowledged spans: counted {counted} < acknowledged {acked}");
    assert!(
        counted <= acked + unknown,
        "double counting: counted {counted} > acknowledged {acked} + unanswered {unknown}"
    );
    let (status, log) = pharos.terminate();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
