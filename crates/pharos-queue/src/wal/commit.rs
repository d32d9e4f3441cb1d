//! Committed offsets, one small file per consumer group and partition: `commit-{group}`.
//!
//! ```text
//! b"PHCM" | version u8 | offset u64 LE | crc32c(of the preceding 13 bytes) u32 LE
//! ```
//! Written to `commit-{group}.tmp`, fsync'd, renamed over the old file, and the directory fsync'd,
//! so a crash leaves either the old or the new offset, never a mix.

use std::{
    collections::HashMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use tracing::warn;

use crate::{Offset, QueueError};

const MAGIC: &[u8; 4] = b"PHCM";
const VERSION: u8 = 1;
const PREFIX: &str = "commit-";
const LEN: usize = 17;

pub(crate) fn validate_group(group: &str) -> Result<(), QueueError> {
    let ok = !group.is_empty()
        && group.len() <= 64
        && group.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(QueueError::InvalidGroup(group.to_string())) }
}

fn path_of(dir: &Path, group: &str) -> PathBuf {
    dir.join(format!("{PREFIX}{group}"))
}

pub(crate) fn encode(offset: Offset) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..4].copy_from_slice(MAGIC);
    b[4] = VERSION;
    b[5..13].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&b[..13]);
    b[13..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Offset> {
    if b.len() != LEN || &b[..4] != MAGIC || b[4] != VERSION {
        return None;
    }
    let crc = u32::from_le_bytes([b[13], b[14], b[15], b[16]]);
    if crc32c::crc32c(&b[..13]) != crc {
        return None;
    }
    let mut o = [0u8; 8];
    o.copy_from_slice(&b[5..13]);
    Some(Offset::from_le_bytes(o))
}

/// Writes a group's committed offset durably.
pub(crate) fn store(dir: &Path, group: &str, offset: Offset) -> Result<(), QueueError> {
    let path = path_of(dir, group);
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(QueueError::io("create commit file", &tmp))?;
    f.write_all(&encode(offset)).map_err(QueueError::io("write commit file", &tmp))?;
    f.sync_data().map_err(QueueError::io("fsync commit file", &tmp))?;
    fs::rename(&tmp, &path).map_err(QueueError::io("rename commit file", &path))?;
    sync_dir(dir)
}

/// Loads every group's committed offset; stale `.tmp` files from a crash are removed.
pub(crate) fn load_all(dir: &Path) -> Result<HashMap<String, Offset>, QueueError> {
    load(dir, true)
}

/// Loads every group's committed offset without touching the directory.
pub(crate) fn load_all_read_only(dir: &Path) -> Result<HashMap<String, Offset>, QueueError> {
    load(dir, false)
}

fn load(dir: &Path, remove_stale: bool) -> Result<HashMap<String, Offset>, QueueError> {
    let mut out = HashMap::new();
    for entry in fs::read_dir(dir).map_err(QueueError::io("list partition directory", dir))? {
        let entry = entry.map_err(QueueError::io("list partition directory", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(group) = name.strip_prefix(PREFIX) else { continue };
        let path = entry.path();
        if group.ends_with(".tmp") {
            if !remove_stale {
                continue;
            }
            warn!(path = %path.display(), "removing a commit file left half-written by a crash");
            let _ = fs::remove_file(&path);
            continue;
        }
        let bytes = fs::read(&path).map_err(QueueError::io("read commit file", &path))?;
        match decode(&bytes) {
            Some(offset) => {
                out.insert(group.to_string(), offset);
            }
            None => {
                // A damaged commit file means the group re-reads from the start of what is kept:
                // duplicates, never loss.
                warn!(path = %path.display(), "commit file is damaged, ignoring it (records will be read again)");
            }
        }
    }
    Ok(out)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(QueueError::io("fsync directory", dir))
}
