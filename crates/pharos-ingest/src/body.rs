//! Request bodies: content encodings and bounded decompression.

use std::io::Read;

use http_body_util::BodyExt;

use bytes::Bytes;

use crate::IngestError;

/// How much of an oversized body is read and thrown away so that the client, still sending,
/// gets to read the 413 (most clients read the answer only after sending everything).
pub(crate) const DISCARD_LIMIT: usize = 64 << 20;

/// Reads a body of at most `limit` bytes. A longer one is read on (and dropped) up to
/// [`DISCARD_LIMIT`] before the error, so it costs no memory.
pub(crate) async fn read_body(mut body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, IngestError> {
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| IngestError::ReadBody(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total <= limit {
            buf.extend_from_slice(&data);
        } else {
            buf = bytes::BytesMut::new();
            if total > DISCARD_LIMIT {
                break;
            }
        }
    }
    if total > limit {
        return Err(IngestError::BodyTooLarge { limit });
    }
    Ok(buf.freeze())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Parses a `Content-Encoding` header value.
    pub(crate) fn from_header(value: Option<&str>) -> Result<Compression, IngestError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(Compression::None),
            Some("gzip") | Some("x-gzip") => Ok(Compression::Gzip),
            Some("zstd") => Ok(Compression::Zstd),
            Some(other) => Err(IngestError::UnsupportedEncoding(other.to_string())),
        }
    }
}

/// Decompresses `body`, refusing as soon as the output would pass `limit` bytes: a decompression
/// bomb costs at most `limit` bytes of memory, never its claimed size.
pub(crate) fn decompress(body: Bytes, compression: Compression, limit: usize) -> Result<Bytes, IngestError> {
    match compression {
        Compression::None => {
            if body.len() > limit {
                return Err(IngestError::DecompressedTooLarge { limit });
            }
            Ok(body)
        }
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(&body[..]), limit, "gzip"),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|source| IngestError::Decompress { encoding: "zstd", source })?;
            read_bounded(decoder, limit, "zstd")
        }
    }
}

fn read_bounded(reader: impl Read, limit: usize, encoding: &'static str) -> Result<Bytes, IngestError> {
    let mut out = Vec::new();
    let read = reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|source| IngestError::Decompress { encoding, source })?;
    if read > limit {
        return Err(IngestError::DecompressedTooLarge { limit });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap().into()
    }

    #[test]
    fn decompress_round_trips_gzip_and_zstd() {
        let data = b"hello pharos".repeat(100);
        assert_eq!(&decompress(gzip(&data), Compression::Gzip, 1 << 20).unwrap()[..], &data[..]);
        let z = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(&decompress(z.into(), Compression::Zstd, 1 << 20).unwrap()[..], &data[..]);
    }

    #[test]
    fn decompress_gzip_bomb_is_refused_at_the_limit() {
        // 64 MiB of zeros compress to about 64 KiB.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let err = decompress(bomb, Compression::Gzip, 1 << 20).unwrap_err();
        assert!(matches!(err, IngestError::DecompressedTooLarge { limit } if limit == 1 << 20));
        assert!(err.to_string().contains("max_decompressed_size"));
    }

    #[test]
    fn decompress_zstd_bomb_is_refused_at_the_limit() {
        let bomb = zstd::encode_all(&vec![0u8; 64 << 20][..], 19).unwrap();
        let err = decompress(bomb.into(), Compression::Zstd, 1 << 20).unwrap_err();
        assert!(matches!(err, IngestError::DecompressedTooLarge { .. }));
    }

    #[test]
    fn decompress_garbage_is_invalid_input() {
        let err = decompress(Bytes::from_static(b"not gzip"), Compression::Gzip, 100).unwrap_err();
        assert_eq!(err.code(), pharos_core::ErrorCode::InvalidInput);
        assert_eq!(Compression::from_header(Some("br")).unwrap_err().reason(), "unsupported_encoding");
    }
}
