//! `pharos serve`: every role in one process.
//!
//! Start: open the queue and the object store, open the metrics blocks and load the parts back
//! into the heads, start the compactors and the processors
//! (which replay what they had not committed), bind the listeners, report ready. Stop (Ctrl-C or SIGTERM), in stages, each bounded: the
//! receivers stop accepting and finish in-flight requests; the processors drain the queue and
//! commit; the queue fsyncs and closes; the API goes last.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use pharos_ingest::{
    IngestMetrics, Ingestor,
    otlp::{
        grpc,
        http::{self as otlp_http, HttpOptions},
    },
};
use pharos_metrics::{
    api::{ApiOptions, TenantReaders},
    otlp::{Converter, OtlpOptions},
    query::EngineOptions,
    store::{HeadOptions, Heads, MetricsStore, PartitionWriter},
};
use pharos_pipeline::{CountingSink, PipelineMetrics, Pipelines, ProcessorMetrics, Runner, RunnerOptions};
use pharos_queue::{
    Queue,
    wal::{FsyncPolicy, Wal, WalConfig},
};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    config::{Config, FsyncMode},
    server::serve_http,
    stores::{MetricsBlockMetrics, MetricsStoreMetrics, StoresSink},
    telemetry::SelfMetrics,
};

struct ApiState {
    metrics: SelfMetrics,
    ready: AtomicBool,
}

pub(crate) async fn serve(config: Config) -> anyhow::Result<()> {
    let partitions = config.partitions();
    let wal_config = WalConfig {
        dir: config.wal_dir(),
        partitions,
        fsync: match config.wal().fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => FsyncPolicy::Interval(config.wal().fsync_interval.0),
        },
        segment_bytes: config.wal().segment_size.0,
        disk_budget_bytes: config.wal().disk_budget.0,
        max_record_bytes: (config.limits.max_decompressed_size.0.max(config.otlp.grpc.max_message_size.0)
            + (1 << 20))
            .min(u64::from(u32::MAX)) as u32,
    };
    info!(dir = %wal_config.dir.display(), partitions, fsync = ?wal_config.fsync, "opening the write-ahead log");
    let wal = tokio::task::spawn_blocking(move || Wal::open(wal_config))
        .await
        .context("open the write-ahead log")?
        .context("open the write-ahead log")?;
    let mut registry = Registry::default();
    wal.register_metrics(&mut registry);
    let queue: Arc<dyn Queue> = Arc::new(wal);

    // The metrics heads, with the parts written before this start put back.
    let heads = Arc::new(Heads::new(HeadOptions {
        max_series: config.metrics.max_series_per_tenant,
        max_label_name_length: config.limits.max_label_name_length,
        max_label_value_length: config.limits.max_label_value_length,
        max_labels_per_series: config.limits.max_labels_per_series,
        out_of_order_window: config.metrics.out_of_order_window.0,
        ..HeadOptions::default()
    }));
    // The object store, and the metrics blocks on it; the parts written before this start
    // are put back into the heads (what blocks hold already is skipped).
    let storage = pharos_storage::ObjectStorage::open(&config.storage, &config.data_dir)
        .context("open the object store")?;
    let parts_dir = config.data_dir.join("metrics").join("parts");
    let (metrics_store, load_report) =
        MetricsStore::open(storage.clone(), heads.clone(), &parts_dir, config.metrics_store_options())
            .await
            .context("open the metrics store")?;
    let parts = metrics_store.parts().clone();

    let log_store = pharos_logs::store::LogStore::open(storage.clone(), config.log_store_options())
        .await
        .context("open the log store")?;
    let trace_store = pharos_traces::store::TraceStore::open(storage, config.trace_store_options())
        .await
        .context("open the trace store")?;
    // Footers and bloom filters of the blocks on disk, loaded in the background: until then
    // a trace lookup loads what it needs itself.
    tokio::spawn({
        let store = trace_store.clone();
        async move {
            if let Err(e) = store.warm_caches().await {
                warn!(error = %e, "loading trace block footers and bloom filters failed; lookups load them as needed");
            }
        }
    });
    let compactor_stop = CancellationToken::new();
    let compactor = tokio::spawn(run_compactor(
        trace_store.clone(),
        config.traces.compaction_interval.0,
        compactor_stop.clone(),
    ));
    let log_compactor = tokio::spawn(run_log_compactor(
        log_store.clone(),
        config.logs.compaction_interval.0,
        compactor_stop.clone(),
    ));
    let block_metrics = MetricsBlockMetrics::default();
    block_metrics.register(&mut registry);
    block_metrics.observe(&metrics_store);
    let metrics_compactor = tokio::spawn(run_metrics_compactor(
        metrics_store.clone(),
        config.metrics.compaction_interval.0,
        block_metrics,
        compactor_stop.clone(),
    ));

    let store_metrics = MetricsStoreMetrics::default();
    store_metrics.register(&mut registry);

    // Processors.
    let pipeline_metrics = PipelineMetrics::default();
    pipeline_metrics.register(&mut registry);
    let processors_stop = CancellationToken::new();
    let mut processors = JoinSet::new();
    let counts_dir = config.data_dir.join("pipeline").join("counts");
    let processor_metrics = ProcessorMetrics::default();
    processor_metrics.register(&mut registry);
    let pipelines_config = config.pipelines_config();
    if !pipelines_config.is_empty() {
        info!(pipelines = ?pipelines_config.pipelines.keys().collect::<Vec<_>>(), "processing pipelines configured");
    }
    let build_pipelines = || {
        Pipelines::build(&pipelines_config).map_err(|errors| {
            anyhow::anyhow!(
                "invalid pipelines: {}",
                errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
            )
        })
    };
    // The request headers processors read (`from_context: metadata.<name>`): the receivers
    // keep them with the data.
    let metadata_keys = build_pipelines()?.metadata_keys();
    if !metadata_keys.is_empty() {
        info!(headers = ?metadata_keys, "request headers kept with OTLP and Zipkin data for the pipelines");
    }
    for partition in 0..partitions {
        // Each partition's runner has its own processors: they keep state (tail sampling).
        let pipelines = build_pipelines()?.with_telemetry(processor_metrics.clone()).for_partition(partition);
        let counting = CountingSink::open(&counts_dir, partition, pipeline_metrics.clone())
            .context("open the counting stage")?;
        let sink = StoresSink {
            counting,
            pipelines,
            metrics: PartitionWriter::new(
                heads.clone(),
                partition,
                &load_report,
                config.metrics.flush_interval.0,
                Box::new(Converter::new(OtlpOptions::default())),
            ),
            parts: parts.clone(),
            traces: pharos_traces::store::PartitionWriter::new(trace_store.clone(), partition),
            logs: pharos_logs::store::PartitionWriter::new(log_store.clone(), partition),
            telemetry: store_metrics.clone(),
        };
        let runner = Runner {
            queue: queue.clone(),
            partition,
            options: RunnerOptions {
                max_batch: config.processor.batch_size,
                drain_timeout: config.processor.drain_timeout.0,
                commit_interval: config.processor.commit_interval.0,
                ..RunnerOptions::default()
            },
            metrics: pipeline_metrics.clone(),
        };
        processors.spawn(runner.run(sink, processors_stop.clone()));
    }

    // Receivers.
    let ingest_metrics = IngestMetrics::default();
    ingest_metrics.register(&mut registry);
    let ingestor = Arc::new(
        Ingestor::new(queue.clone(), config.ingest_limits(), ingest_metrics)
            .with_metadata_keys(metadata_keys)
            .with_sample_check(Arc::new(crate::stores::HeadSampleCheck(heads.clone()))),
    );
    let retry_after = config.limits.retry_after.0;
    let http_options = HttpOptions { request_timeout: config.otlp.http.request_timeout.0, retry_after };
    let remote_write = pharos_ingest::remote_write::router(ingestor.clone(), http_options.clone());
    let loki_push = pharos_ingest::loki::router(ingestor.clone(), http_options.clone());
    let otlp_http_router = otlp_http::router(ingestor.clone(), http_options.clone())
        .merge(remote_write.clone())
        .merge(loki_push.clone())
        .merge(pharos_ingest::zipkin::router(ingestor.clone(), http_options));
    let grpc_routes =
        grpc::routes(ingestor.clone(), config.otlp.grpc.max_message_size.0 as usize, retry_after);

    let api_state = Arc::new(ApiState {
        metrics: SelfMetrics::new(registry, queue.clone()),
        ready: AtomicBool::new(false),
    });
    let api_router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(api_state.clone())
        // Prometheus users point remote_write at the same address they query; Loki users too.
        .merge(remote_write)
        .merge(loki_push)
        .merge(pharos_traces::api::router(
            trace_store.clone(),
            pharos_traces::api::ApiOptions {
                query_timeout: config.traces.query_timeout.0,
                ..pharos_traces::api::ApiOptions::default()
            },
        ))
        .merge(pharos_traces::jaeger::router(trace_store.clone(), config.traces.query_timeout.0))
        .merge(pharos_logs::api::router(log_store.clone(), config.log_api_options()))
        .merge(pharos_metrics::api::router(
            Arc::new(metrics_store.clone()) as Arc<dyn TenantReaders>,
            ApiOptions {
                engine: EngineOptions {
                    timeout: Some(config.metrics.query_timeout.0),
                    max_samples: config.metrics.max_query_samples,
                    ..EngineOptions::default()
                },
                ..ApiOptions::default()
            },
        ));

    let bind =
        |addr| async move { TcpListener::bind(addr).await.with_context(|| format!("listen on {addr}")) };
    let api_listener = bind(config.api.listen).await?;
    let http_listener = bind(config.otlp.http.listen).await?;
    let grpc_listener = bind(config.otlp.grpc.listen).await?;
    let api_addr = api_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;

    let receivers_stop = CancellationToken::new();
    let api_stop = CancellationToken::new();
    let grace = config.shutdown_timeout.0;
    let header_timeout = config.otlp.http.read_header_timeout.0;
    let mut receivers = JoinSet::new();
    receivers.spawn(serve_http(
        "otlp-http",
        http_listener,
        otlp_http_router,
        header_timeout,
        receivers_stop.clone(),
        grace,
    ));
    let grpc_stop = receivers_stop.clone();
    receivers.spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_routes(grpc_routes)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                grpc_stop.cancelled_owned(),
            )
            .await;
        if let Err(e) = result {
            error!(error = %e, "otlp grpc server failed");
        }
    });
    let api =
        tokio::spawn(serve_http("api", api_listener, api_router, header_timeout, api_stop.clone(), grace));

    api_state.ready.store(true, Ordering::Release);
    info!(otlp_grpc = %grpc_addr, otlp_http = %http_addr, api = %api_addr, partitions, "pharos is ready");

    tokio::select! {
        () = shutdown_signal() => {}
        Some(done) = processors.join_next() => {
            // A processor stopped on its own: something is badly wrong (e.g. the disk failed).
            error!(result = ?done.map(|r| r.map_err(|e| format!("{e:#}"))), "a processor stopped, shutting down");
        }
    }

    info!("shutting down: receivers stop accepting");
    api_state.ready.store(false, Ordering::Release);
    receivers_stop.cancel();
    if tokio::time::timeout(grace + Duration::from_secs(1), async {
        while receivers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!("receivers did not stop in time");
        receivers.abort_all();
    }

    info!("shutting down: processors drain the queue");
    processors_stop.cancel();
    let mut failed = false;
    while let Some(done) = processors.join_next().await {
        if let Ok(Err(e)) | Err(e) = done.map_err(anyhow::Error::from).map(|r| r.map_err(anyhow::Error::from))
        {
            error!(error = format!("{e:#}"), "processor failed");
            failed = true;
        }
    }

    compactor_stop.cancel();
    let _ = compactor.await;
    let _ = log_compactor.await;
    let _ = metrics_compactor.await;

    info!("shutting down: closing the write-ahead log");
    let closed = queue.close().await;
    api_stop.cancel();
    let _ = api.await;
    closed.context("close the write-ahead log")?;
    if failed {
        anyhow::bail!("a processor failed; uncommitted records stay in the write-ahead log");
    }
    info!("pharos stopped");
    Ok(())
}

/// Runs a trace compaction round every `interval` until stopped.
async fn run_compactor(
    store: Arc<pharos_traces::store::TraceStore>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match store.compact(8).await {
            Ok(report) if report != Default::default() => {
                info!(
                    expired = report.expired,
                    merged = report.merged,
                    written = report.written,
                    "trace compaction round"
                );
            }
            Ok(_) => {}
            Err(e) => error!(error = %e, "trace compaction failed; retrying at the next round"),
        }
    }
}

/// Every `interval` until stopped: cuts the complete head windows into blocks, deletes
/// expired blocks and merges small ones.
async fn run_metrics_compactor(
    store: Arc<MetricsStore>,
    interval: Duration,
    telemetry: MetricsBlockMetrics,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match store.cut().await {
            Ok(report) => telemetry.cut(&report),
            Err(e) => {
                error!(error = %e, "cutting metrics blocks failed; the samples stay in the head, retrying at the next round")
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        match store.compact(now).await {
            Ok(report) => {
                if report != Default::default() {
                    info!(
                        expired = report.expired,
                        merged = report.merged,
                        written = report.written,
                        "metrics compaction round"
                    );
                }
                telemetry.compacted(&report);
            }
            Err(e) => error!(error = %e, "metrics compaction failed; retrying at the next round"),
        }
        telemetry.observe(&store);
    }
}

/// Runs a log compaction round every `interval` until stopped.
async fn run_log_compactor(
    store: Arc<pharos_logs::store::LogStore>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match store.compact().await {
            Ok((0, 0)) => {}
            Ok((expired, merged)) => info!(expired, merged, "log compaction round"),
            Err(e) => error!(error = %e, "log compaction failed; retrying at the next round"),
        }
    }
}

async fn readyz(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("received Ctrl-C"),
        () = term => info!("received SIGTERM"),
    }
}
