//! SIGTERM: stop accepting, drain, fsync, exit 0, and nothing acknowledged is lost or repeated.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    harness::{BIN, Pharos, pipeline_items},
    load::{Tally, run_workers},
};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_drains_and_exits_zero_with_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["queue.partitions=2"]);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load =
        tokio::spawn(run_workers(pharos.http_url("/v1/traces"), "drain", 3, 0, stop.clone(), tally.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, log) = tokio::task::spawn_blocking(move || pharos.terminate()).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(status.success(), "exit {status:?}\n{log}");
    for stage in [
        "receivers stop accepting",
        "processors drain the queue",
        "closing the write-ahead log",
        "pharos stopped",
    ] {
        assert!(log.contains(stage), "missing shutdown stage {stage:?}:\n{log}");
    }
    let acked = tally.acked.load(Ordering::Relaxed) as f64;
    assert!(acked > 0.0);

    // After a restart the counts come back, exactly what was acknowledged, and nothing is left
    // in the queue to replay.
    let pharos = Pharos::start(dir.path(), &["queue.partitions=2"]);
    assert_eq!(pharos.metric(&pipeline_items("traces", "drain")).await, acked);
    assert!(!pharos.log().contains("replaying queue partition"), "{}", pharos.log());
    let (status, _) = pharos.terminate();
    assert!(status.success());

    let out = std::process::Command::new(BIN)
        .args(["wal", "inspect", "--json"])
        .arg(dir.path().join("wal"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let partitions = report["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2);
    for p in partitions {
        assert_eq!(p["committed"]["processor"], p["end_offset"], "everything committed: {p}");
    }
}
