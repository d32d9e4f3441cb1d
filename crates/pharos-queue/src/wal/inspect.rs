//! A read-only report of a log directory, for `pharos wal inspect`.

use std::path::Path;

use serde::Serialize;

use super::{commit, list_segments, segment};
use crate::{Offset, QueueError};

#[derive(Debug, Clone, Serialize)]
pub struct WalReport {
    pub partitions: Vec<PartitionReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub partition: u32,
    pub directory: String,
    /// Committed offset per consumer group.
    pub committed: std::collections::BTreeMap<String, Offset>,
    /// The offset after the last intact record.
    pub end_offset: Offset,
    pub segments: Vec<SegmentReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    pub file: String,
    pub base_offset: Offset,
    pub bytes: u64,
    pub records: u64,
    /// What is wrong with the segment, if anything (a torn tail is cut off at the next start).
    pub damage: Option<String>,
}

/// Reads every segment of every partition under `dir` without changing anything.
pub fn inspect(dir: &Path, max_record_bytes: u32) -> Result<WalReport, QueueError> {
    let mut partitions = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(QueueError::io("list wal directory", dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_prefix("partition-")?.parse::<u32>().ok()?;
            Some((id, e.path()))
        })
        .collect();
    entries.sort();
    for (id, pdir) in entries {
        let committed = commit::load_all_read_only(&pdir)?;
        let mut segments = Vec::new();
        let mut end_offset = committed.values().copied().max().unwrap_or(0);
        for (base, bytes) in list_segments(&pdir)? {
            let path = pdir.join(segment::file_name(base));
            let (records, damage) = match segment::scan(&path, base, max_record_bytes) {
                Ok(scan) => (scan.records, scan.damage.map(|d| d.to_string())),
                Err(segment::OpenError::BadHeader) => (0, Some("bad segment header".to_string())),
                Err(segment::OpenError::Io(e)) => {
                    return Err(QueueError::Io { op: "read segment", path, source: e });
                }
            };
            end_offset = end_offset.max(base + records);
            segments.push(SegmentReport {
                file: segment::file_name(base),
                base_offset: base,
                bytes,
                records,
                damage,
            });
        }
        partitions.push(PartitionReport {
            partition: id,
            directory: pdir.display().to_string(),
            committed: committed.into_iter().collect(),
            end_offset,
            segments,
        });
    }
    Ok(WalReport { partitions })
}
