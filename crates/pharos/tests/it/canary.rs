//! `pharos canary` against a real Pharos: nothing is missing across SIGKILL and restart; items
//! whose blocks were deleted are reported missing and the canary exits nonzero.

use std::{
    io::Read,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::harness::{BIN, Pharos, metric_value, read_stderr};

/// The ports the first Pharos bound (it picks them: port 0), so that a restarted Pharos is where
/// the canary writes and reads.
struct Ports {
    sets: Vec<String>,
    api: String,
    http: String,
}

impl Ports {
    /// Starts the first Pharos on ports of its choosing and remembers them.
    fn first(dir: &Path, extra: &[&str]) -> (Ports, Pharos) {
        let pharos = Pharos::start(dir, extra);
        let ports = Ports {
            sets: vec![
                format!("api.listen={}", pharos.api),
                format!("otlp.http.listen={}", pharos.http),
                format!("otlp.grpc.listen={}", pharos.grpc),
            ],
            api: format!("http://{}", pharos.api),
            http: format!("http://{}", pharos.http),
        };
        (ports, pharos)
    }

    /// Starts Pharos again on the same ports. Between the stop and now another process may have
    /// taken one for a moment: a few tries, then a panic that says so.
    fn restart(&self, dir: &Path, extra: &[&str]) -> Pharos {
        let sets: Vec<&str> = self.sets.iter().map(String::as_str).chain(extra.iter().copied()).collect();
        const TRIES: u32 = 5;
        for attempt in 1..=TRIES {
            match Pharos::try_start(dir, &sets) {
                Ok(pharos) => return pharos,
                Err(log) if attempt < TRIES => {
                    eprintln!(
                        "restart on {:?} failed (try {attempt} of {TRIES}), again in 500ms:\n{log}",
                        self.sets
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(log) => panic!(
                    "Pharos could not be started again on the ports of the first start {:?} ({TRIES} tries; a port taken by another process?):\n{log}",
                    self.sets
                ),
            }
        }
        unreachable!("the last try returns or panics")
    }
}

struct Canary {
    child: Child,
    metrics: String,
    run: String,
    log: Arc<Mutex<String>>,
}

impl Canary {
    fn start(ports: &Ports, flags: &[&str]) -> Canary {
        let mut child = Command::new(BIN)
            .args(["canary", "--otlp-http", &ports.http, "--api", &ports.api, "--listen", "127.0.0.1:0"])
            .args(flags)
            .env("PHAROS_LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pharos canary");
        let (log, rx) = read_stderr(child.stderr.take().unwrap(), "canary is running");
        let ready = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the canary did not start:\n{}", log.lock().unwrap())
        });
        let start = ready.find("metrics=").expect("metrics address in the start line") + "metrics=".len();
        let metrics = ready[start..].split_whitespace().next().unwrap().to_string();
        let start = ready.find("run=").expect("run id in the start line") + "run=".len();
        let run = ready[start..].split_whitespace().next().unwrap().to_string();
        Canary { child, metrics, run, log }
    }

    /// One series of the canary's own metrics, e.g. `pharos_canary_written_total{signal="logs"}`.
    async fn metric(&self, series: &str) -> f64 {
        let text =
            reqwest::get(format!("http://{}/metrics", self.metrics)).await.unwrap().text().await.unwrap();
        metric_value(&text, series)
    }

    /// Waits for the exit (the canary's `--duration` ends the run) and returns the status, the
    /// JSON summary from stdout and the log.
    fn wait(mut self, limit: Duration) -> (ExitStatus, Value, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the canary did not finish in {limit:?}:\n{}", self.log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stdout = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        std::thread::sleep(Duration::from_millis(50)); // let the log reader finish
        let log = self.log.lock().unwrap().clone();
        let summary =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("summary {stdout:?}: {e}\n{log}"));
        (status, summary, log)
    }
}

impl Canary {
    /// SIGTERM: the canary stops writing, runs its final check and exits.
    fn terminate(&self) {
        signal(self.child.id(), "-TERM");
    }

    /// Waits until `series` is at least `want`.
    async fn wait_for(&self, series: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric(series).await < want {
            assert!(
                Instant::now() < deadline,
                "{series} never reached {want}:\n{}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill").arg(which).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill {which} {pid}");
}

impl Drop for Canary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count(summary: &Value, signal: &str, key: &str) -> u64 {
    summary["signals"][signal][key].as_u64().unwrap_or_else(|| panic!("no {signal}.{key} in {summary}"))
}

const SIGNALS: [&str; 3] = ["traces", "logs", "metrics"];

#[tokio::test(flavor = "multi_thread")]
async fn canary_across_sigkill_and_restart_reports_nothing_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, pharos) = Ports::first(dir.path(), &["queue.partitions=2"]);
    let canary = Canary::start(
        &ports,
        &[
            "--interval=100ms",
            "--check-delay=200ms",
            "--late-after=3s",
            "--missing-after=20s",
            "--recheck-interval=500ms",
            "--duration=8s",
        ],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    pharos.kill9();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pharos = ports.restart(dir.path(), &["queue.partitions=2"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    pharos.kill9();
    let pharos = ports.restart(dir.path(), &["queue.partitions=2"]);

    let (status, summary, log) =
        tokio::task::spawn_blocking(move || canary.wait(Duration::from_secs(40))).await.unwrap();
    println!("{summary:#}");
    let mut write_errors = 0;
    for signal in SIGNALS {
        let written = count(&summary, signal, "written");
        assert!(written > 20, "{signal}: only {written} written\n{log}");
        assert_eq!(count(&summary, signal, "missing"), 0, "{signal}\n{log}");
        assert_eq!(count(&summary, signal, "wrong"), 0, "{signal}\n{log}");
        assert_eq!(count(&summary, signal, "unchecked"), 0, "{signal}\n{log}");
        assert_eq!(
            count(&summary, signal, "found"),
            written,
            "{signal}: every acknowledged item seen\n{log}"
        );
        write_errors += count(&summary, signal, "write_errors");
    }
    assert!(write_errors > 0, "the canary never saw Pharos down:\n{log}");
    assert!(status.success(), "exit {status:?}\n{log}");
    assert_eq!(summary["ok"], true);
    let (status, plog) = tokio::task::spawn_blocking(move || pharos.terminate()).await.unwrap();
    assert!(status.success(), "{plog}");
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_reports_log_items_of_deleted_blocks_as_missing_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    // Blocks written often, so that most items are in blocks (and out of the WAL) soon.
    let quick = ["queue.partitions=2", "logs.flush_interval=200ms", "traces.flush_interval=200ms"];
    let (ports, pharos) = Ports::first(dir.path(), &quick);
    let canary = Canary::start(
        &ports,
        &[
            "--tenant=canary",
            "--interval=100ms",
            "--check-delay=200ms",
            "--late-after=1s",
            "--missing-after=10s",
            "--recheck-interval=300ms",
            "--duration=7s",
        ],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let found_before = canary.metric(r#"pharos_canary_found_total{signal="logs"}"#).await;
    assert!(found_before > 0.0, "no log item found before the damage:\n{}", canary.log.lock().unwrap());

    // A graceful stop writes every acknowledged entry into a block and commits the WAL: the
    // blocks are then the only copy of what the canary wrote so far.
    let (status, plog) = tokio::task::spawn_blocking(move || pharos.terminate()).await.unwrap();
    assert!(status.success(), "{plog}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written_before = canary.metric(r#"pharos_canary_written_total{signal="logs"}"#).await as u64;
    let blocks = dir.path().join("blocks/logs/canary");
    let deleted = std::fs::read_dir(&blocks).unwrap().count();
    assert!(deleted > 0, "no log blocks in {}", blocks.display());
    std::fs::remove_dir_all(&blocks).unwrap();

    let pharos = ports.restart(dir.path(), &quick);
    let (status, summary, log) =
        tokio::task::spawn_blocking(move || canary.wait(Duration::from_secs(40))).await.unwrap();
    println!("deleted {deleted} log blocks holding {written_before} canary lines\n{summary:#}");
    assert_eq!(
        count(&summary, "logs", "missing"),
        written_before,
        "every log item acknowledged before the damage is missing, no other\n{log}"
    );
    assert!(count(&summary, "logs", "written") > written_before, "writes went on after the restart");
    assert!(log.contains("canary item is missing: it was visible before and is gone now"), "{log}");
    for signal in ["traces", "metrics"] {
        assert_eq!(count(&summary, signal, "missing"), 0, "{signal}: untouched\n{log}");
        assert_eq!(count(&summary, signal, "wrong"), 0, "{signal}\n{log}");
    }
    assert_eq!(summary["ok"], false);
    assert_eq!(status.code(), Some(1), "{log}");
    let (status, plog) = tokio::task::spawn_blocking(move || pharos.terminate()).await.unwrap();
    assert!(status.success(), "{plog}");
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_reports_a_second_line_with_a_found_sequence_number_as_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, pharos) = Ports::first(dir.path(), &["queue.partitions=2"]);
    let canary = Canary::start(
        &ports,
        &[
            "--tenant=canary",
            "--signals=logs",
            "--interval=100ms",
            "--check-delay=200ms",
            "--recheck-interval=300ms",
            "--duration=60s", // ended below, once the damage is done
        ],
    );
    canary.wait_for(r#"pharos_canary_found_total{signal="logs"}"#, 3.0).await;
    // Someone else writes a line claiming to be the canary's item 3, in its stream and time range.
    let run = &canary.run;
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let body = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "pharos-canary"}},
            {"key": "service.instance.id", "value": {"stringValue": run}},
        ]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": (now_ns - 100_000_000).to_string(),
            "body": {"stringValue": format!("pharos canary run={run} seq=3 checksum=0000000000000000")},
        }]}],
    }]});
    let response = reqwest::Client::new()
        .post(format!("{}/v1/logs", ports.http))
        .header("content-type", "application/json")
        .header("x-scope-orgid", "canary")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text().await);
    // Enough for a recheck round or two; the final check at exit looks twice more in any case.
    tokio::time::sleep(Duration::from_secs(1)).await;
    canary.terminate();

    let (status, summary, log) =
        tokio::task::spawn_blocking(move || canary.wait(Duration::from_secs(40))).await.unwrap();
    println!("{summary:#}");
    assert_eq!(count(&summary, "logs", "wrong"), 1, "{log}");
    assert!(log.contains("canary item is wrong signal=logs seq=3"), "{log}");
    assert!(log.contains("2 entries with this sequence number"), "{log}");
    assert_eq!(count(&summary, "logs", "missing"), 0, "{log}");
    assert_eq!(status.code(), Some(1), "{log}");
    let (status, plog) = tokio::task::spawn_blocking(move || pharos.terminate()).await.unwrap();
    assert!(status.success(), "{plog}");
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_final_check_ends_at_its_timeout_when_pharos_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, pharos) = Ports::first(dir.path(), &["queue.partitions=2"]);
    let canary = Canary::start(
        &ports,
        &[
            "--interval=100ms",
            "--check-delay=200ms",
            "--request-timeout=2s",
            "--final-check-timeout=2s",
            "--duration=60s", // ended below
        ],
    );
    for signal in SIGNALS {
        canary.wait_for(&format!("pharos_canary_found_total{{signal=\"{signal}\"}}"), 3.0).await;
    }
    // Pharos stops answering (its sockets still take connections): every request of the final
    // check waits for its timeout. Without an overall bound the final check would wait for the
    // pending items up to --missing-after (2m) and then look up each found trace.
    signal(pharos.pid(), "-STOP");
    let stopped = Instant::now();
    canary.terminate();
    let (status, summary, log) =
        tokio::task::spawn_blocking(move || canary.wait(Duration::from_secs(40))).await.unwrap();
    let took = stopped.elapsed();
    signal(pharos.pid(), "-CONT");
    println!("exit {took:?} after SIGTERM\n{summary:#}");
    // The stop cuts the writes and checks in flight; the final check takes up to 2s.
    assert!(took < Duration::from_secs(8), "the canary took {took:?} to exit\n{log}");
    for signal in SIGNALS {
        let found = count(&summary, signal, "found");
        assert!(found >= 3, "{signal}\n{log}");
        assert_eq!(
            count(&summary, signal, "not_rechecked"),
            found,
            "{signal}: nothing answered at exit\n{log}"
        );
        assert_eq!(count(&summary, signal, "missing"), 0, "{signal}: nothing judged without answers\n{log}");
    }
    assert!(log.contains("the final check's time was up"), "{log}");
    // Items still pending (unchecked) fail the run; found items not looked at again do not.
    let unchecked: u64 = SIGNALS.iter().map(|s| count(&summary, s, "unchecked")).sum();
    assert_eq!(summary["ok"], unchecked == 0, "{log}");
    assert_eq!(status.code(), Some(if unchecked == 0 { 0 } else { 1 }), "{log}");
    let (status, plog) = tokio::task::spawn_blocking(move || pharos.terminate()).await.unwrap();
    assert!(status.success(), "{plog}");
}
