//! The `pharos-loadgen` binary: parses the flags, runs the load (see the library), prints a
//! human summary and, as the last line, the JSON summary the bench scripts parse.

use anyhow::Result;
use clap::Parser;
use pharos_loadgen::{Args, Summary, run};
use std::time::Duration;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PHAROS_LOADGEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()?;
    // Hard bound: whatever happens, the process is gone shortly after the run.
    let hard =
        Duration::from_secs_f64(args.warmup.max(0.0) + args.duration.max(0.0) + args.timeout.max(0.0) + 15.0);
    std::thread::spawn(move || {
        std::thread::sleep(hard);
        tracing::error!("hard deadline reached, exiting");
        std::process::exit(3);
    });
    let summary = rt.block_on(run(args.clone()))?;
    print(&args, &summary)?;
    Ok(())
}

fn print(args: &Args, r: &Summary) -> Result<()> {
    let l = &r.latency;
    println!("== pharos-loadgen {} ==", r.label);
    println!(
        "  {:?} {:?} ({:?}) -> {}  batch={} workers={} connections={} rate={} duration={}s warmup={}s seed={}",
        r.protocol,
        r.signal,
        r.encoding,
        r.endpoint,
        r.batch,
        r.workers,
        r.connections,
        if args.rate == 0 { "max".to_string() } else { format!("{}/s", args.rate) },
        r.duration_s,
        args.warmup,
        r.seed
    );
    println!(
        "  sent: {} items in {} requests; acknowledged: {} items in {} requests = {:.0} items/s ({:.1} MB/s of {} B requests)",
        r.items_sent,
        r.requests_sent,
        r.items_accepted,
        r.requests_ok,
        r.items_per_sec,
        r.mb_per_sec,
        r.request_bytes_avg
    );
    println!("  rejected items by reason: {:?}", r.rejected_by_reason);
    println!("  failed requests: {} {:?}", r.requests_err, r.errors);
    if let Some(w) = &r.rw2_written {
        println!(
            "  remote write 2.0 written: {} samples, {} histograms, {} exemplars ({} answers without headers)",
            w.samples, w.histograms, w.exemplars, w.answers_without_headers
        );
    }
    if let Some(m) = &r.manifest {
        println!("  manifest: {} requests in {m}", r.manifest_requests);
    }
    println!("  load generator CPU: {:.1} s", r.loadgen_cpu_s);
    println!(
        "  latency ms: p50={:.2} p90={:.2} p99={:.2} p99.9={:.2} max={:.2} mean={:.2}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
    );
    if let Some(s) = &r.latency_from_schedule {
        println!(
            "  latency from schedule ms: p50={:.2} p90={:.2} p99={:.2} max={:.2}  (late starts: {})",
            s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, r.late_starts
        );
    }
    println!("{}", serde_json::to_string(r)?);
    Ok(())
}
