use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::model::stale_nan;
use crate::query::{CancelToken, Engine, MemSource, parse};
use crate::store::{AppendError, HeadOptions, MetricType};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn tenant() -> Tenant {
    Tenant::parse("acme").unwrap()
}

async fn open(dir: &Path, opts: StoreOptions) -> (Arc<MetricsStore>, LoadReport) {
    let storage = ObjectStorage::local(&dir.join("blocks")).unwrap();
    let heads = Arc::new(Heads::new(HeadOptions { max_series: 0, ..HeadOptions::default() }));
    MetricsStore::open(storage, heads, &dir.join("parts"), opts).await.unwrap()
}

fn options() -> StoreOptions {
    StoreOptions { deletion_delay: Duration::ZERO, segment_bytes: 1 << 10, ..StoreOptions::default() }
}

/// Counters and gauges scraped every 15 s from `from` to `to` (ms), into the head and a
/// reference source.
fn scrape(head: &Head, mem: &mut MemSource, from: i64, to: i64) {
    for i in 0..40 {
        let labels = Labels::from_pairs([
            ("__name__", if i % 2 == 0 { "http_requests_total" } else { "node_load" }),
            ("instance", &*format!("host-{i}")),
            ("job", ["api", "db", "web", "cache"][i % 4]),
        ]);
        let mut t = from;
        while t < to {
            let step = t / 15_000;
            let v = match (i % 2, step % 97) {
                (_, 13) if i == 3 => stale_nan(),
                (0, _) => (step * (i as i64 + 1)) as f64,
                _ => ((step * 7 + i as i64) % 23) as f64 / 4.0,
            };
            head.append(&labels, t, v).unwrap();
            mem.add(labels.clone(), t, v);
            t += 15_000;
        }
    }
}

/// Runs `f` on a blocking thread, as the API does.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn bits(series: &[Series]) -> Vec<(String, Vec<(i64, u64)>)> {
    series
        .iter()
        .map(|s| (s.labels.to_string(), s.samples.iter().map(|p| (p.t, p.v.to_bits())).collect()))
        .collect()
}

const QUERIES: &[&str] = &[
    "http_requests_total",
    "rate(http_requests_total[5m])",
    "sum by (job) (rate(http_requests_total[5m]))",
    "max_over_time(node_load{job!=\"db\"}[10m])",
    "node_load offset 1h",
    "avg_over_time(node_load[30m:1m])",
    "count by (job) ({__name__=~\"node_.*|http_.*\"})",
];

/// PromQL over the store equals PromQL over the reference, instant and range, across
/// block and head boundaries.
async fn assert_promql_agrees(store: &Arc<MetricsStore>, mem: MemSource, end: i64) {
    let view = store.view(&tenant());
    blocking(move || {
        let engine = Engine::default();
        let cancel = CancelToken::new();
        for q in QUERIES {
            let expr = parse(q).unwrap();
            for t in [HOUR, 2 * HOUR, 2 * HOUR + 90_000, 5 * HOUR, end - 1] {
                let a = engine.instant(&view, &expr, t, &cancel).unwrap();
                let b = engine.instant(&mem, &expr, t, &cancel).unwrap();
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "{q} at {t}");
            }
            let a = engine.range(&view, &expr, 0, end, 5 * MIN, &cancel).unwrap();
            let b = engine.range(&mem, &expr, 0, end, 5 * MIN, &cancel).unwrap();
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "range {q}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_moves_complete_windows_to_blocks_and_reads_stay_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), options()).await;
    let head = store.heads().head(&tenant());
    let mut mem = MemSource::new();
    scrape(&head, &mut mem, 0, 7 * HOUR + MIN);
    let all = [Matcher::regex("__name__", ".+", false).unwrap()];
    let before = bits(&head.select(&all, i64::MIN, i64::MAX).unwrap());

    let report = store.cut().await.unwrap();
    // Newest sample past 7 h, half a block range past 6 h: the windows up to 6 h are complete.
    assert_eq!(report.blocks, 3, "{report:?}");
    assert_eq!(report.samples, 40 * 6 * 240);
    let blocks = store.blocks(&tenant());
    let windows: Vec<(i64, i64)> = blocks.iter().map(|b| (b.window_start, b.window_end)).collect();
    assert_eq!(windows, vec![(0, 2 * HOUR), (2 * HOUR, 4 * HOUR), (4 * HOUR, 6 * HOUR)]);
    assert!(blocks.iter().all(|b| b.segments > 1), "small segments in this test");
    assert_eq!(head.min_valid_time(), 6 * HOUR);
    let in_head: usize = head.select(&all, i64::MIN, i64::MAX).unwrap().iter().map(|s| s.samples.len()).sum();
    assert_eq!(in_head, 40 * 244, "only the last hour (and a minute) stays in the head");

    // Every sample reads back bit for bit through head and blocks.
    let view = store.view(&tenant());
    let after = blocking(move || bits(&view.select(&all, i64::MIN, i64::MAX).unwrap())).await;
    assert_eq!(after, before);

    // Older samples are refused now; newer ones are taken.
    let l = Labels::from_pairs([("__name__", "node_load"), ("instance", "host-1"), ("job", "db")]);
    assert_eq!(
        head.append(&l, 6 * HOUR - 1, 1.0),
        Err(AppendError::OutOfBounds { timestamp: 6 * HOUR - 1, min_valid: 6 * HOUR })
    );
    assert!(store.cut().await.unwrap().blocks == 0, "nothing more is complete");

    assert_promql_agrees(&store, mem, 7 * HOUR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_queries_read_blocks_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), options()).await;
    let head = store.heads().head(&tenant());
    let mut mem = MemSource::new();
    scrape(&head, &mut mem, 0, 4 * HOUR);
    // A series that lives only in the first window: after the cut it is in a block only.
    let gone = Labels::from_pairs([("__name__", "batch_done"), ("run", "nightly")]);
    head.append(&gone, 10 * MIN, 1.0).unwrap();
    store.cut().await.unwrap();
    assert_eq!(store.blocks(&tenant()).len(), 1);
    assert!(head.series_labels(crate::store::series_hash(&gone)).is_none(), "dropped from the head");
    let view = store.view(&tenant());
    blocking(move || {
        let names = view.label_names(&[], i64::MIN, i64::MAX).unwrap();
        assert_eq!(names, ["__name__", "instance", "job", "run"]);
        let values = view.label_values("__name__", &[], i64::MIN, i64::MAX).unwrap();
        assert_eq!(values, ["batch_done", "http_requests_total", "node_load"]);
        // Time-bounded: the batch series is not in the last two hours.
        let recent = view.label_values("__name__", &[], 3 * HOUR, 4 * HOUR).unwrap();
        assert_eq!(recent, ["http_requests_total", "node_load"]);
        let sets = vec![vec![Matcher::equal("run", "nightly")]];
        assert_eq!(view.series(&sets, 0, HOUR).unwrap(), vec![gone.clone()]);
        assert!(view.series(&sets, 3 * HOUR, 4 * HOUR).unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_restores_bounds_metadata_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut mem = MemSource::new();
    {
        let (store, _) = open(dir.path(), options()).await;
        let head = store.heads().head(&tenant());
        let md = Metadata { kind: MetricType::Counter, help: "Requests.".into(), unit: String::new() };
        head.set_metadata("http_requests_total", md).unwrap();
        scrape(&head, &mut mem, 0, 5 * HOUR + MIN);
        store.cut().await.unwrap();
    }
    let (store, _) = open(dir.path(), options()).await;
    let head = store.heads().head(&tenant());
    assert_eq!(head.min_valid_time(), 4 * HOUR);
    assert_eq!(head.metadata(Some("http_requests_total"), None)[0].1.help, "Requests.");
    let view = store.view(&tenant());
    let all = [Matcher::regex("__name__", ".+", false).unwrap()];
    let got: usize = blocking(move || view.select(&all, 0, 4 * HOUR - 1).unwrap())
        .await
        .iter()
        .map(|s| s.samples.len())
        .sum();
    assert_eq!(got, 40 * 4 * 240, "the blocks' samples; the head's were not in parts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_complete_windows_and_expires_old_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), options()).await;
    let head = store.heads().head(&tenant());
    let mut mem = MemSource::new();
    scrape(&head, &mut mem, 0, 7 * HOUR + MIN);
    store.cut().await.unwrap();
    let small: u64 = store.blocks(&tenant()).iter().map(|b| b.size_bytes).sum();

    let report = store.compact(7 * HOUR).await.unwrap();
    assert_eq!((report.expired, report.merged, report.written), (0, 3, 1), "{report:?}");
    let blocks = store.blocks(&tenant());
    assert_eq!(blocks.len(), 1);
    let b = &blocks[0];
    assert_eq!((b.window_start, b.window_end, b.level, b.sources.len()), (0, 6 * HOUR, 1, 3));
    assert_eq!(b.samples, 40 * 6 * 240);
    assert!(b.size_bytes <= small, "one index instead of three: {} > {small}", b.size_bytes);
    assert!(store.compact(7 * HOUR).await.unwrap() == CompactReport::default(), "nothing left to do");
    assert_promql_agrees(&store, mem, 7 * HOUR).await;

    // Fifteen days after the newest sample of the block, it goes.
    let later = 6 * HOUR + ms(StoreOptions::default().retention);
    assert_eq!(store.compact(later).await.unwrap().expired, 1);
    assert!(store.blocks(&tenant()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_blocks_of_one_window_read_once_and_merge() {
    // A crash after a merged block is published but before its sources are retired leaves
    // overlapping blocks: reads drop the repeats, and the next compaction merges them.
    let dir = tempfile::tempdir().unwrap();
    let mut mem = MemSource::new();
    let copy = |from: &Path, to: &Path| {
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::create_dir_all(to).unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    };
    {
        let (store, _) = open(dir.path(), options()).await;
        let head = store.heads().head(&tenant());
        scrape(&head, &mut mem, 0, 3 * HOUR + MIN);
        store.cut().await.unwrap();
        let b = &store.blocks(&tenant())[0];
        let tenant_dir = dir.path().join("blocks").join("metrics").join("acme");
        copy(&tenant_dir.join(&b.id), &tenant_dir.join(format!("{}ff", &b.id[..30])));
    }
    let (store, _) = open(dir.path(), options()).await;
    assert_eq!(store.blocks(&tenant()).len(), 2);
    let view = store.view(&tenant());
    let all = [Matcher::regex("__name__", ".+", false).unwrap()];
    let want = bits(&mem.select(&all, 0, 2 * HOUR - 1).unwrap());
    let got = blocking(move || bits(&view.select(&all, 0, 2 * HOUR - 1).unwrap())).await;
    assert_eq!(got, want);
    let report = store.compact(3 * HOUR).await.unwrap();
    assert_eq!((report.merged, report.written), (2, 1));
    assert_eq!(store.blocks(&tenant())[0].samples, 40 * 480);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_during_a_cut_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), options()).await;
    let head = store.heads().head(&tenant());
    let mut mem = MemSource::new();
    scrape(&head, &mut mem, 0, 5 * HOUR);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (head, stop) = (head.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut kept = 0usize;
            let mut t = 5 * HOUR;
            while !stop.load(Ordering::Relaxed) || kept < 1000 {
                for i in 0..40 {
                    // New series and existing ones, some of which the cut empties and drops.
                    let l = Labels::from_pairs([("__name__", "late"), ("i", &*i.to_string())]);
                    if head.append(&l, t, 1.0).is_ok() {
                        kept += 1;
                    }
                }
                t += 1000;
            }
            (kept, t)
        })
    };
    store.cut().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (kept, _) = writer.join().unwrap();
    let view = store.view(&tenant());
    let late = [Matcher::equal("__name__", "late")];
    let got: usize = blocking(move || view.select(&late, i64::MIN, i64::MAX).unwrap())
        .await
        .iter()
        .map(|s| s.samples.len())
        .sum();
    assert_eq!(got, kept);
}
