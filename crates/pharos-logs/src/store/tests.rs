use std::time::Duration;

use pharos_core::{
    PayloadFormat, Signal,
    loki::{self, PushRequest, Timestamp},
};
use prost::Message;

use super::*;
use crate::query::MatchOp;

const MAX: u64 = u64::MAX;

fn push(streams: &[(&str, &[(i64, &str)])]) -> Envelope {
    let request = PushRequest {
        streams: streams
            .iter()
            .map(|(labels, entries)| loki::Stream {
                labels: labels.to_string(),
                entries: entries
                    .iter()
                    .map(|(ts, line)| loki::Entry {
                        timestamp: Some(Timestamp::from_unix_nanos(*ts)),
                        line: line.to_string(),
                        structured_metadata: vec![],
                        parsed: vec![],
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
    };
    Envelope {
        tenant: Tenant::default(),
        signal: Signal::Logs,
        format: PayloadFormat::LokiPush,
        received_at_unix_nanos: 0,
        items: streams.iter().map(|s| s.1.len() as u32).sum(),
        metadata: Vec::new(),
        payload: request.encode_to_vec().into(),
    }
}

fn eq(name: &str, value: &str) -> Matcher {
    Matcher { name: name.into(), op: MatchOp::Eq, value: value.into() }
}

fn re(name: &str, value: &str) -> Matcher {
    Matcher { name: name.into(), op: MatchOp::Re, value: value.into() }
}

/// What the store selects, without a line test.
async fn select(
    store: &LogStore,
    tenant: &Tenant,
    matchers: &[Matcher],
    start: i64,
    end: i64,
    max_bytes: u64,
) -> Result<Vec<StreamEntries>, StoreError> {
    let selection = Selection { matchers, start, end, lines: None, metadata: None, lines_needed: true };
    store.select(tenant, &selection, max_bytes).await.map(|s| s.streams)
}

async fn open(dir: &std::path::Path, options: StoreOptions) -> Arc<LogStore> {
    LogStore::open(ObjectStorage::local(dir).unwrap(), options).await.unwrap()
}

/// (labels, [(time, line)]) of what a select returns.
fn lines(streams: &[StreamEntries]) -> Vec<(String, Vec<(i64, String)>)> {
    streams
        .iter()
        .map(|s| (s.labels.to_string(), s.entries.iter().map(|e| (e.timestamp, e.line.clone())).collect()))
        .collect()
}

#[tokio::test]
async fn entries_are_queryable_from_the_head_then_from_blocks_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let tenant = Tenant::default();
    let mut writer = PartitionWriter::new(store.clone(), 0);
    writer.write(0, &push(&[(r#"{app="api", env="prod"}"#, &[(30, "c"), (10, "a")])]));
    writer.write(1, &push(&[(r#"{app="web"}"#, &[(20, "w")]), (r#"{env="prod", app="api"}"#, &[(20, "b")])]));
    assert_eq!(writer.durable_below(2), 0, "nothing is durable before a flush");

    let want = vec![
        (
            r#"{app="api", env="prod"}"#.to_string(),
            vec![(10, "a".into()), (20, "b".into()), (30, "c".into())],
        ),
        (r#"{app="web"}"#.to_string(), vec![(20, "w".into())]),
    ];
    let all = select(&store, &tenant, &[re("app", ".+")], 0, 100, MAX).await.unwrap();
    assert_eq!(lines(&all), want, "from the head, sorted by time");

    assert!(writer.flush_due(true));
    let report = writer.flush().await.unwrap();
    assert_eq!((report.blocks, report.entries), (1, 4));
    assert_eq!(writer.durable_below(2), 2);
    assert!(store.with_heads(&tenant, |p| p.entries).iter().all(|&n| n == 0), "the head part is gone");
    let all = select(&store, &tenant, &[re("app", ".+")], 0, 100, MAX).await.unwrap();
    assert_eq!(lines(&all), want, "from the block");

    // Selection by labels and time: [start, end).
    let api = select(&store, &tenant, &[eq("app", "api")], 10, 30, MAX).await.unwrap();
    assert_eq!(lines(&api), [(want[0].0.clone(), vec![(10, "a".into()), (20, "b".into())])]);
    assert!(
        select(&store, &Tenant::parse("other").unwrap(), &[re("app", ".+")], 0, 100, MAX)
            .await
            .unwrap()
            .is_empty()
    );

    drop(writer);
    drop(store);
    let store = open(dir.path(), StoreOptions::default()).await;
    let all = select(&store, &tenant, &[re("app", ".+")], 0, 100, MAX).await.unwrap();
    assert_eq!(lines(&all), want, "after a restart");
}

#[tokio::test]
async fn a_replay_of_flushed_records_does_not_duplicate_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let tenant = Tenant::default();
    // Recent: older blocks would be past the retention.
    let t = now_nanos();
    let record = push(&[(r#"{app="api"}"#, &[(t + 1, "x"), (t + 1, "y"), (t + 2, "x")])]);
    let mut writer = PartitionWriter::new(store.clone(), 0);
    writer.write(0, &record);
    writer.flush().await.unwrap();
    // A crash before the queue commit: the record comes again.
    writer.write(0, &record);
    let got = select(&store, &tenant, &[eq("app", "api")], t, t + 10, MAX).await.unwrap();
    assert_eq!(
        lines(&got),
        [(r#"{app="api"}"#.into(), vec![(t + 1, "x".into()), (t + 1, "y".into()), (t + 2, "x".into())])]
    );
    writer.flush().await.unwrap();
    assert_eq!(store.block_metas(&tenant).len(), 2);
    store.compact().await.unwrap();
    let blocks = store.block_metas(&tenant);
    assert_eq!(blocks.len(), 1, "the two small blocks merged");
    assert_eq!((blocks[0].entries, blocks[0].level), (3, 1), "repeats written once");
    let got = select(&store, &tenant, &[eq("app", "api")], t, t + 10, MAX).await.unwrap();
    assert_eq!(got[0].entries.len(), 3);
}

/// An OTLP logs request: one resource (`service.name` and a shared `host.name`), one record per
/// time, each with an attribute and a severity.
fn otlp(times: &[i64]) -> Envelope {
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        common::v1::{AnyValue, any_value::Value},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        resource::v1::Resource,
    };
    let kv = crate::decode::string_attribute;
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api"), kv("host.name", "node-1")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: times
                    .iter()
                    .map(|&t| LogRecord {
                        time_unix_nano: t as u64,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue { value: Some(Value::StringValue(format!("line {t}"))) }),
                        attributes: vec![kv("user.id", &format!("u{t}"))],
                        trace_id: vec![7; 16],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Envelope {
        tenant: Tenant::default(),
        signal: Signal::Logs,
        format: PayloadFormat::Otlp,
        received_at_unix_nanos: 0,
        items: times.len() as u32,
        metadata: Vec::new(),
        payload: request.encode_to_vec().into(),
    }
}

#[tokio::test]
async fn compaction_keeps_every_pair_and_the_shared_ones_shared() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let tenant = Tenant::default();
    let t = now_nanos();
    let mut writer = PartitionWriter::new(store.clone(), 0);
    writer.write(0, &otlp(&[t + 1, t + 3]));
    writer.flush().await.unwrap();
    writer.write(1, &otlp(&[t + 2, t + 3]));
    writer.flush().await.unwrap();
    let entries = |got: Vec<StreamEntries>| -> Vec<Entry> {
        got.into_iter()
            .flat_map(|s| s.entries)
            .map(|mut e| {
                e.metadata.sort();
                e
            })
            .collect()
    };
    let before =
        entries(select(&store, &tenant, &[eq("service_name", "api")], t, t + 10, MAX).await.unwrap());
    assert_eq!(before.len(), 3, "the repeat of t + 3 read once");
    assert!(before.iter().all(|e| e.metadata.contains(&("host_name".into(), "node-1".into()))));
    assert!(before.iter().all(|e| e.metadata.iter().any(|(k, _)| k == "trace_id")));
    assert_eq!(store.compact().await.unwrap(), (0, 2));
    let blocks = store.block_metas(&tenant);
    assert_eq!((blocks.len(), blocks[0].entries), (1, 3));
    let after = entries(select(&store, &tenant, &[eq("service_name", "api")], t, t + 10, MAX).await.unwrap());
    assert_eq!(after, before, "the same lines and pairs");
    // The resource's pairs are still stored once per distinct set, not in every entry.
    let data = store
        .catalog
        .storage()
        .get(&store.catalog.object_path(&tenant, &blocks[0].id, block::DATA_FILE))
        .await
        .unwrap();
    let stored: Vec<StoredEntry> =
        block::read_stored(data).unwrap().into_iter().flat_map(|(_, e)| e).collect();
    assert!(
        stored
            .iter()
            .all(|e| e.shared.as_ref().is_some_and(|s| Arc::ptr_eq(s, stored[0].shared.as_ref().unwrap())))
    );
    assert!(stored.iter().all(|e| !e.metadata.windows(9).any(|w| w == b"host_name")));
}

#[tokio::test]
async fn retention_deletes_old_blocks_and_keeps_recent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        retention: Duration::from_secs(3600),
        deletion_delay: Duration::ZERO,
        // No merging: this test is about retention.
        compaction_small_bytes: 0,
        ..StoreOptions::default()
    };
    let store = open(dir.path(), options).await;
    let tenant = Tenant::default();
    let now = now_nanos();
    let mut writer = PartitionWriter::new(store.clone(), 0);
    writer.write(0, &push(&[(r#"{app="old"}"#, &[(now - 2 * 3600 * 1_000_000_000, "old")])]));
    writer.flush().await.unwrap();
    writer.write(1, &push(&[(r#"{app="new"}"#, &[(now, "new")])]));
    writer.flush().await.unwrap();
    let (deleted, merged) = store.compact().await.unwrap();
    assert_eq!((deleted, merged), (1, 0));
    let left = select(&store, &tenant, &[re("app", ".+")], 0, i64::MAX, MAX).await.unwrap();
    assert_eq!(lines(&left), [(r#"{app="new"}"#.into(), vec![(now, "new".into())])]);
}

#[tokio::test]
async fn label_names_values_and_streams_come_from_head_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let tenant = Tenant::default();
    let mut writer = PartitionWriter::new(store.clone(), 0);
    writer.write(0, &push(&[(r#"{app="api", env="prod"}"#, &[(10, "a")])]));
    writer.flush().await.unwrap();
    writer.write(
        1,
        &push(&[
            (r#"{app="web", region="eu"}"#, &[(50, "bb")]),
            (r#"{app="api", env="prod"}"#, &[(60, "c")]),
        ]),
    );

    let names: Vec<String> = store.label_names(&tenant, 0, 100).unwrap().into_iter().collect();
    assert_eq!(names, ["app", "env", "region"]);
    let names: Vec<String> = store.label_names(&tenant, 0, 20).unwrap().into_iter().collect();
    assert_eq!(names, ["app", "env"], "only streams with entries in the range");
    let apps: Vec<String> = store.label_values(&tenant, "app", None, 0, 100).unwrap().into_iter().collect();
    assert_eq!(apps, ["api", "web"]);
    let apps: Vec<String> = store
        .label_values(&tenant, "app", Some(&[eq("region", "eu")]), 0, 100)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(apps, ["web"]);
    let streams = store.streams(&tenant, &[vec![eq("app", "api")]], 0, 100).unwrap();
    let stats = &streams[&Labels::new([("app".into(), "api".into()), ("env".into(), "prod".into())])];
    assert_eq!((stats.streams, stats.chunks, stats.entries, stats.bytes), (1, 2, 2, 2));
}

#[tokio::test]
async fn a_query_over_the_bytes_limit_is_refused_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let mut writer = PartitionWriter::new(store.clone(), 0);
    writer.write(0, &push(&[(r#"{app="api"}"#, &[(1, "0123456789")])]));
    let e = select(&store, &Tenant::default(), &[eq("app", "api")], 0, 10, 5).await.unwrap_err();
    assert!(e.to_string().contains("logs.max_query_bytes"), "{e}");
    writer.flush().await.unwrap();
    let e = select(&store, &Tenant::default(), &[eq("app", "api")], 0, 10, 5).await.unwrap_err();
    assert!(e.to_string().contains("more than 5 bytes"), "{e}");
}

#[tokio::test]
async fn a_failed_block_write_keeps_entries_in_the_head_and_the_offset_behind_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let mut writer = PartitionWriter::new(store.clone(), 0);
    writer.write(7, &push(&[(r#"{app="api"}"#, &[(1, "kept")])]));
    // The object store's directory becomes a file: every write fails.
    let logs = dir.path().join(SIGNAL_DIR);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::write(&logs, b"not a directory").unwrap();
    assert!(writer.flush().await.is_err());
    assert_eq!(writer.durable_below(8), 7);
    let got = select(&store, &Tenant::default(), &[eq("app", "api")], 0, 10, MAX).await.unwrap();
    assert_eq!(lines(&got), [(r#"{app="api"}"#.into(), vec![(1, "kept".into())])]);
    std::fs::remove_file(&logs).unwrap();
    writer.flush().await.unwrap();
    assert_eq!(writer.durable_below(8), 8);
}

#[tokio::test]
async fn a_selection_of_metadata_names_leaves_the_others_out_in_head_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let tenant = Tenant::default();
    let t = now_nanos();
    let mut request = PushRequest::decode(push(&[(r#"{app="api"}"#, &[(t, "x")])]).payload).unwrap();
    request.streams[0].entries[0].structured_metadata = vec![
        loki::LabelPair { name: "keep".into(), value: "1".into() },
        loki::LabelPair { name: "skip".into(), value: "2".into() },
    ];
    let mut envelope = push(&[]);
    envelope.payload = request.encode_to_vec().into();
    let mut writer = PartitionWriter::new(store.clone(), 0);
    writer.write(0, &envelope);
    let names: Arc<[String]> = vec!["keep".to_string()].into();
    let matchers = [eq("app", "api")];
    let selection = Selection {
        matchers: &matchers,
        start: t,
        end: t + 1,
        lines: None,
        metadata: Some(names),
        lines_needed: true,
    };
    let want = vec![("keep".to_string(), "1".to_string())];
    let head = store.select(&tenant, &selection, MAX).await.unwrap();
    assert_eq!(head.streams[0].entries[0].metadata, want, "from the head");
    writer.flush().await.unwrap();
    let blocks = store.select(&tenant, &selection, MAX).await.unwrap();
    assert_eq!(blocks.streams[0].entries[0].metadata, want, "from a block");
    let all = select(&store, &tenant, &matchers, t, t + 1, MAX).await.unwrap();
    assert_eq!(all[0].entries[0].metadata.len(), 2, "without a selection of names: all of it");
}
