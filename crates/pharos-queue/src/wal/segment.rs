//! One segment file of a partition: a header, then framed records. See `docs/formats/wal.md`.
//!
//! ```text
//! header:  b"PHWALSEG" | version u32 LE | reserved u32
//! record:  length u32 LE | crc32c(length bytes ++ payload) u32 LE | payload
//! ```
//! The segment's first offset is in its file name (`{base:020}.wal`); the records that follow have
//! consecutive offsets.

use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use bytes::Bytes;

use crate::Offset;

pub(crate) const MAGIC: &[u8; 8] = b"PHWALSEG";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: u64 = 16;
pub(crate) const FRAME_LEN: u64 = 8;
pub(crate) const EXTENSION: &str = "wal";

pub(crate) fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

pub(crate) fn file_name(base: Offset) -> String {
    format!("{base:020}.{EXTENSION}")
}

pub(crate) fn parse_file_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

/// Appends one framed record to `buf`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Why reading stopped before the end of the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Damage {
    /// The file ends inside a record: the last write was torn.
    TornRecord,
    /// A record's checksum does not match its bytes.
    ChecksumMismatch,
    /// A record claims a length over the limit: the frame itself is damaged.
    ImpossibleLength(u32),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::TornRecord => f.write_str("torn record at the end"),
            Damage::ChecksumMismatch => f.write_str("checksum mismatch"),
            Damage::ImpossibleLength(n) => write!(f, "record length {n} is impossible"),
        }
    }
}

/// The outcome of reading one record.
pub(crate) enum Next {
    Record(Bytes),
    End,
    Damaged(Damage),
}

/// Reads a segment's records in order.
pub(crate) struct SegmentReader {
    pub(crate) path: PathBuf,
    pub(crate) base: Offset,
    /// The offset of the record at `pos`.
    pub(crate) next: Offset,
    /// The byte position of the next record.
    pub(crate) pos: u64,
    file: BufReader<File>,
    max_record: u32,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad segment header")]
    BadHeader,
}

impl SegmentReader {
    pub(crate) fn open(path: &Path, base: Offset, max_record: u32) -> Result<Self, OpenError> {
        let file = File::open(path)?;
        let mut file = BufReader::with_capacity(1 << 20, file);
        let mut h = [0u8; HEADER_LEN as usize];
        match file.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(OpenError::BadHeader),
            Err(e) => return Err(e.into()),
        }
        if &h[..8] != MAGIC || u32::from_le_bytes([h[8], h[9], h[10], h[11]]) != VERSION {
            return Err(OpenError::BadHeader);
        }
        Ok(SegmentReader { path: path.to_path_buf(), base, next: base, pos: HEADER_LEN, file, max_record })
    }

    /// Reads the next record. I/O errors are returned; damage is reported as [`Next::Damaged`],
    /// leaving `pos` at the start of the damaged record.
    pub(crate) fn next_record(&mut self) -> io::Result<Next> {
        let mut frame = [0u8; FRAME_LEN as usize];
        match read_full(&mut self.file, &mut frame)? {
            0 => return Ok(Next::End),
            n if n < frame.len() => return Ok(Next::Damaged(Damage::TornRecord)),
            _ => {}
        }
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if len > self.max_record {
            self.resync()?;
            return Ok(Next::Damaged(Damage::ImpossibleLength(len)));
        }
        // Read into spare capacity: a file reads into it without zeroing it first.
        let mut payload = Vec::with_capacity(len as usize);
        if (&mut self.file).take(u64::from(len)).read_to_end(&mut payload)? < len as usize {
            return Ok(Next::Damaged(Damage::TornRecord));
        }
        if crc32c::crc32c_append(crc32c::crc32c(&frame[..4]), &payload) != crc {
            self.resync()?;
            return Ok(Next::Damaged(Damage::ChecksumMismatch));
        }
        self.pos += FRAME_LEN + u64::from(len);
        self.next += 1;
        Ok(Next::Record(Bytes::from(payload)))
    }

    /// Puts the file cursor back at `pos` after a failed read.
    fn resync(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(self.pos)).map(|_| ())
    }
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What a full scan of a segment found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scan {
    pub(crate) records: u64,
    /// The end of the last intact record.
    pub(crate) valid_len: u64,
    pub(crate) file_len: u64,
    pub(crate) damage: Option<Damage>,
}

/// Reads a whole segment and reports how much of it is intact.
pub(crate) fn scan(path: &Path, base: Offset, max_record: u32) -> Result<Scan, OpenError> {
    let file_len = std::fs::metadata(path)?.len();
    let mut reader = SegmentReader::open(path, base, max_record)?;
    loop {
        match reader.next_record()? {
            Next::Record(_) => {}
            Next::End => {
                return Ok(Scan {
                    records: reader.next - base,
                    valid_len: reader.pos,
                    file_len,
                    damage: None,
                });
            }
            Next::Damaged(d) => {
                return Ok(Scan {
                    records: reader.next - base,
                    valid_len: reader.pos,
                    file_len,
                    damage: Some(d),
                });
            }
        }
    }
}
