//! Starting, stopping and observing a `pharos serve` process.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc::Receiver},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_pharos");

pub struct Pharos {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    log: Arc<Mutex<String>>,
}

fn field(line: &str, key: &str) -> SocketAddr {
    let start = line.find(&format!("{key}=")).unwrap_or_else(|| panic!("no {key} in {line}")) + key.len() + 1;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

/// Collects a child's stderr lines into the returned log, on a thread; the first line containing
/// `ready` is also sent on the receiver (which disconnects when the child closes its stderr).
pub fn read_stderr(stderr: ChildStderr, ready: &'static str) -> (Arc<Mutex<String>>, Receiver<String>) {
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains(ready)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line.clone());
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    (log, rx)
}

impl Pharos {
    /// Starts pharos on `data_dir` with extra `--set key=value` overrides.
    pub fn start(data_dir: &Path, sets: &[&str]) -> Pharos {
        Pharos::try_start(data_dir, sets).unwrap_or_else(|log| panic!("pharos did not become ready:\n{log}"))
    }

    /// Like [`Pharos::start`], but a Pharos that exits or does not become ready is an `Err` with
    /// its log (e.g. a port taken).
    pub fn try_start(data_dir: &Path, sets: &[&str]) -> Result<Pharos, String> {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").arg("--data-dir").arg(data_dir);
        for s in ["api.listen=127.0.0.1:0", "otlp.http.listen=127.0.0.1:0", "otlp.grpc.listen=127.0.0.1:0"]
            .iter()
            .chain(sets)
        {
            cmd.arg("--set").arg(s);
        }
        cmd.env("PHAROS_LOG_LEVEL", "info").stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn pharos");
        let (log, rx) = read_stderr(child.stderr.take().unwrap(), "pharos is ready");
        let ready = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50)); // let the log reader finish
                return Err(log.lock().unwrap().clone());
            }
        };
        Ok(Pharos {
            child,
            grpc: field(&ready, "otlp_grpc"),
            http: field(&ready, "otlp_http"),
            api: field(&ready, "api"),
            data_dir: data_dir.to_path_buf(),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50)); // let the log reader finish
                return (status, self.log());
            }
            assert!(Instant::now() < deadline, "pharos did not exit after SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.log()
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.api)).await.unwrap().text().await.unwrap()
    }

    /// The value of one series, e.g. `pharos_pipeline_items_total{signal="traces",tenant="a"}`
    /// (labels in exposition order); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics_text().await, series)
    }

    /// Waits until `series` reaches `want` (the processors lag ingestion a little).
    pub async fn wait_for_metric(&self, series: &str, want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.metric(series).await;
            if v >= want || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Pharos {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

pub fn pipeline_items(signal: &str, tenant: &str) -> String {
    format!("pharos_pipeline_items_total{{signal=\"{signal}\",tenant=\"{tenant}\"}}")
}

pub fn accepted_items(signal: &str, tenant: &str) -> String {
    format!("pharos_ingest_items_accepted_total{{signal=\"{signal}\",tenant=\"{tenant}\"}}")
}

pub fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/otlp")
}

/// A peer program from the machine (`prometheus`, `promtool`), or `None` to skip the test, which
/// is allowed only when `PHAROS_REQUIRE_PEERS` is unset (CI sets it and installs the peers).
pub fn peer(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        assert!(
            std::env::var_os("PHAROS_REQUIRE_PEERS").is_none(),
            "{name} is not installed but PHAROS_REQUIRE_PEERS is set (CI installs it)"
        );
        eprintln!("skipping: {name} is not installed (apt-get install {package})");
    }
    found
}

/// A TCP port free at the moment of asking, for a peer that cannot take port 0.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
