use std::{fs, io::Write, time::Duration};

use bytes::Bytes;

use super::*;

fn config(dir: &Path, partitions: u32) -> WalConfig {
    WalConfig::new(dir, partitions)
}

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("record-{i}-{}", "x".repeat((i % 50) as usize)))
}

async fn read_all(wal: &Wal, partition: u32) -> Vec<Record> {
    let mut c = wal.consumer("processor", partition).await.unwrap();
    let mut out = Vec::new();
    loop {
        let batch = c.poll(1000, Duration::from_millis(50)).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

use crate::Record;

#[tokio::test]
async fn wal_append_returns_dense_offsets_and_records_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(config(dir.path(), 2)).unwrap();
    assert_eq!(wal.append(0, vec![payload(0), payload(1)]).await.unwrap(), 0);
    assert_eq!(wal.append(0, vec![payload(2)]).await.unwrap(), 2);
    assert_eq!(wal.append(1, vec![payload(9)]).await.unwrap(), 0);
    let got = read_all(&wal, 0).await;
    let want: Vec<_> = (0..3).map(|i| Record { offset: i, payload: payload(i) }).collect();
    assert_eq!(got, want);
    assert_eq!(read_all(&wal, 1).await, vec![Record { offset: 0, payload: payload(9) }]);
}

#[tokio::test]
async fn wal_concurrent_appends_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(config(dir.path(), 1)).unwrap());
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                wal.append(0, vec![payload(t * 1000 + i)]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = read_all(&wal, 0).await;
    assert_eq!(got.len(), 800);
    let mut seen: Vec<_> = got.iter().map(|r| r.payload.clone()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 800, "duplicates or losses");
    // Group commit: concurrent appends share fsyncs.
    let fsyncs = wal.shared.metrics.fsyncs.get();
    assert!(fsyncs < 800, "{fsyncs} fsyncs for 800 appends");
}

#[tokio::test]
async fn wal_reopen_resumes_from_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(config(dir.path(), 1)).unwrap();
        for i in 0..10 {
            wal.append(0, vec![payload(i)]).await.unwrap();
        }
        let mut c = wal.consumer("processor", 0).await.unwrap();
        let batch = c.poll(4, Duration::from_millis(50)).await.unwrap();
        assert_eq!(batch.len(), 4);
        c.commit(4).await.unwrap();
        wal.close().await.unwrap();
    }
    let wal = Wal::open(config(dir.path(), 1)).unwrap();
    let got = read_all(&wal, 0).await;
    assert_eq!(got.first().map(|r| r.offset), Some(4));
    assert_eq!(got.len(), 6);
    assert_eq!(wal.append(0, vec![payload(10)]).await.unwrap(), 10);
}

#[tokio::test]
async fn wal_reopen_after_torn_write_drops_partial_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(config(dir.path(), 1)).unwrap();
        for i in 0..5 {
            wal.append(0, vec![payload(i)]).await.unwrap();
        }
        wal.close().await.unwrap();
    }
    let seg = partition_dir(dir.path(), 0).join(segment::file_name(0));
    let len = fs::metadata(&seg).unwrap().len();
    // Half of the last record's bytes never reached the disk.
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    let wal = Wal::open(config(dir.path(), 1)).unwrap();
    let got = read_all(&wal, 0).await;
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    // Writing resumes after the last intact record, and the new record reads back.
    assert_eq!(wal.append(0, vec![payload(77)]).await.unwrap(), 4);
    let mut c = wal.consumer("other", 0).await.unwrap();
    let all = c.poll(100, Duration::from_millis(50)).await.unwrap();
    assert_eq!(all.last().unwrap().payload, payload(77));
}

#[tokio::test]
async fn wal_reopen_after_bit_flip_in_tail_truncates_from_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(config(dir.path(), 1)).unwrap();
        for i in 0..6 {
            wal.append(0, vec![payload(i)]).await.unwrap();
        }
        wal.close().await.unwrap();
    }
    let seg = partition_dir(dir.path(), 0).join(segment::file_name(0));
    let mut bytes = fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40; // inside the payload of the last record
    fs::write(&seg, &bytes).unwrap();
    let wal = Wal::open(config(dir.path(), 1)).unwrap();
    assert_eq!(read_all(&wal, 0).await.len(), 5);
    assert!(fs::metadata(&seg).unwrap().len() < n as u64);
}

#[tokio::test]
async fn wal_zero_length_segment_from_crashed_rotation_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(config(dir.path(), 1)).unwrap();
        wal.append(0, vec![payload(0), payload(1)]).await.unwrap();
        wal.close().await.unwrap();
    }
    // A crash right after creating the next segment file, before its header was written.
    fs::File::create(partition_dir(dir.path(), 0).join(segment::file_name(2))).unwrap();
    let wal = Wal::open(config(dir.path(), 1)).unwrap();
    assert_eq!(wal.append(0, vec![payload(2)]).await.unwrap(), 2);
    let got = read_all(&wal, 0).await;
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[tokio::test]
async fn wal_segments_below_committed_offset_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1);
    cfg.segment_bytes = 256;
    let wal = Wal::open(cfg).unwrap();
    for i in 0..40 {
        wal.append(0, vec![payload(i)]).await.unwrap();
    }
    let pdir = partition_dir(dir.path(), 0);
    let before = list_segments(&pdir).unwrap().len();
    assert!(before > 3, "expected rotation, got {before} segments");
    let mut c = wal.consumer("processor", 0).await.unwrap();
    let got = c.poll(1000, Duration::from_millis(50)).await.unwrap();
    assert_eq!(got.len(), 40, "reading across segments");
    c.commit(40).await.unwrap();
    let after = list_segments(&pdir).unwrap();
    assert_eq!(after.len(), 1, "only the active segment stays: {after:?}");
    assert_eq!(wal.stats()[0].depth(), 0);
}

#[tokio::test]
async fn wal_disk_budget_pushes_back_until_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1);
    cfg.segment_bytes = 200;
    cfg.disk_budget_bytes = 1000;
    let wal = Wal::open(cfg).unwrap();
    let mut appended = 0;
    let err = loop {
        match wal.append(0, vec![Bytes::from(vec![7u8; 50])]).await {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
        assert!(appended < 100, "budget never enforced");
    };
    assert!(matches!(err, QueueError::Full { budget: 1000, .. }), "{err}");
    assert_eq!(err.code(), pharos_core::ErrorCode::Unavailable);
    let mut c = wal.consumer("processor", 0).await.unwrap();
    let got = c.poll(1000, Duration::from_millis(50)).await.unwrap();
    assert_eq!(got.len(), appended);
    c.commit(appended as u64).await.unwrap();
    wal.append(0, vec![Bytes::from(vec![7u8; 50])]).await.unwrap();
}

#[tokio::test]
async fn wal_with_other_partition_count_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    Wal::open(config(dir.path(), 2)).unwrap().close().await.unwrap();
    let err = Wal::open(config(dir.path(), 3)).err().unwrap();
    assert!(err.to_string().contains("has 2 partitions"), "{err}");
}

#[tokio::test]
async fn wal_consumer_waits_for_appends() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(config(dir.path(), 1)).unwrap());
    let mut c = wal.consumer("processor", 0).await.unwrap();
    let w = wal.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        w.append(0, vec![payload(1)]).await.unwrap();
    });
    let got = c.poll(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1);
    writer.await.unwrap();
}

#[tokio::test]
async fn wal_interval_fsync_acknowledges_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1);
    cfg.fsync = FsyncPolicy::Interval(Duration::from_millis(10));
    let wal = Wal::open(cfg).unwrap();
    wal.append(0, vec![payload(1)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(wal.shared.metrics.fsyncs.get() >= 1, "the ticker never fsync'd");
    assert_eq!(read_all(&wal, 0).await.len(), 1);
}

#[test]
fn wal_inspect_reports_segments_records_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let wal = Wal::open(config(dir.path(), 2)).unwrap();
        wal.append(1, vec![payload(0), payload(1), payload(2)]).await.unwrap();
        let mut c = wal.consumer("processor", 1).await.unwrap();
        c.commit(2).await.unwrap();
        wal.close().await.unwrap();
    });
    let seg = partition_dir(dir.path(), 1).join(segment::file_name(0));
    fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(&[1, 2, 3]).unwrap();
    let report = inspect(dir.path(), 1 << 20).unwrap();
    assert_eq!(report.partitions.len(), 2);
    let p1 = &report.partitions[1];
    assert_eq!(p1.committed.get("processor"), Some(&2));
    assert_eq!(p1.end_offset, 3);
    assert_eq!(p1.segments[0].records, 3);
    assert_eq!(p1.segments[0].damage.as_deref(), Some("torn record at the end"));
}

#[tokio::test]
async fn wal_consumed_segments_are_deleted_in_the_background_and_leftovers_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1);
    cfg.segment_bytes = 256;
    let wal = Wal::open(cfg.clone()).unwrap();
    for i in 0..40 {
        wal.append(0, vec![payload(i)]).await.unwrap();
    }
    let mut c = wal.consumer("processor", 0).await.unwrap();
    c.poll(1000, Duration::from_millis(50)).await.unwrap();
    c.commit(40).await.unwrap();
    let pdir = partition_dir(dir.path(), 0);
    let files = || {
        fs::read_dir(&pdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while files().iter().any(|f| f.ends_with(".deleting")) {
        assert!(std::time::Instant::now() < deadline, "segments still being deleted: {:?}", files());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wal.close().await.unwrap();
    // A deletion a stop interrupted: the file is gone after the next open, the log intact.
    fs::write(pdir.join("00000000000000000001.deleting"), vec![0u8; 4096]).unwrap();
    let wal = Wal::open(cfg).unwrap();
    assert!(!files().iter().any(|f| f.ends_with(".deleting")), "{:?}", files());
    assert_eq!(wal.stats()[0].depth(), 0);
    assert_eq!(wal.append(0, vec![payload(99)]).await.unwrap(), 40);
}
