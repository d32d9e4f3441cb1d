use bytes::{BufMut, Bytes, BytesMut};

use crate::{Signal, Tenant, TenantError};

/// The unit that travels through the queue: one tenant's batch of one signal.
///
/// The payload is the request as it arrived, in its own wire format (decoded once, re-encoded
/// only to split it by partition): an OTLP export request, or a Prometheus remote-write request.
/// The header carries what a consumer needs before decoding the payload.
///
/// Encoding (version 2, or 3 with request metadata), all integers little-endian; see
/// `docs/formats/envelope.md`: `b"PE"` | version u8 | signal u8 | payload format u8 | tenant
/// length u8 | tenant bytes | received at (unix ns) u64 | item count u32 | (version 3: metadata
/// count u8, then per entry key length u8, key, value length u16, value) | payload. Version 1
/// had no format byte (always OTLP) and is still read.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub tenant: Tenant,
    pub signal: Signal,
    pub format: PayloadFormat,
    pub received_at_unix_nanos: u64,
    pub items: u32,
    /// Request metadata kept with the data (the request headers named in
    /// `otlp.include_metadata`, for processors' `from_context: metadata.<name>`); usually empty.
    pub metadata: Metadata,
    pub payload: Bytes,
}

/// Request metadata: lowercase header names and their values, bounded by
/// [`MAX_METADATA_ENTRIES`], [`MAX_METADATA_KEY_BYTES`] and [`MAX_METADATA_VALUE_BYTES`].
pub type Metadata = Vec<(String, String)>;

/// The most metadata entries an envelope carries.
pub const MAX_METADATA_ENTRIES: usize = 16;
/// The longest metadata key.
pub const MAX_METADATA_KEY_BYTES: usize = 128;
/// The longest metadata value; longer ones are cut (at a character boundary).
pub const MAX_METADATA_VALUE_BYTES: usize = 4096;

/// `value` cut to at most `max` bytes at a character boundary.
fn cut(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// The wire format of an envelope's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// The signal's OTLP export request, protobuf.
    Otlp,
    /// A Prometheus remote-write 1.0 `prometheus.WriteRequest`, protobuf (not snappy-compressed).
    PrometheusWriteV1,
    /// A Prometheus remote-write 2.0 `io.prometheus.write.v2.Request`, protobuf.
    PrometheusWriteV2,
    /// A Loki `logproto.PushRequest`, protobuf (not snappy-compressed).
    LokiPush,
}

impl PayloadFormat {
    fn code(self) -> u8 {
        match self {
            PayloadFormat::Otlp => 0,
            PayloadFormat::PrometheusWriteV1 => 1,
            PayloadFormat::PrometheusWriteV2 => 2,
            PayloadFormat::LokiPush => 3,
        }
    }

    fn from_code(code: u8) -> Option<PayloadFormat> {
        match code {
            0 => Some(PayloadFormat::Otlp),
            1 => Some(PayloadFormat::PrometheusWriteV1),
            2 => Some(PayloadFormat::PrometheusWriteV2),
            3 => Some(PayloadFormat::LokiPush),
            _ => None,
        }
    }
}

const MAGIC: &[u8; 2] = b"PE";
const VERSION: u8 = 2;
/// Version 2 with request metadata after the item count.
const VERSION_METADATA: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is {len} bytes, shorter than its header")]
    Truncated { len: usize },
    #[error("envelope magic is {found:?}, expected \"PE\"")]
    BadMagic { found: [u8; 2] },
    #[error("envelope version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("envelope signal code {0} is unknown")]
    UnknownSignal(u8),
    #[error("envelope payload format code {0} is unknown")]
    UnknownFormat(u8),
    #[error("envelope tenant is invalid")]
    Tenant(#[from] TenantError),
    #[error("envelope metadata is not valid UTF-8")]
    Metadata,
}

impl Envelope {
    pub fn encode(&self) -> Bytes {
        let mut buf = Envelope::encode_header(
            &self.tenant,
            self.signal,
            self.format,
            self.received_at_unix_nanos,
            self.items,
            &self.metadata,
            self.payload.len(),
        );
        buf.put_slice(&self.payload);
        buf.freeze()
    }

    /// The encoded header, in a buffer with room for `payload_len` more bytes: write the payload
    /// after it to encode an envelope without copying the payload twice. Metadata past the
    /// limits is left out (entries) or cut (keys and values).
    pub fn encode_header(
        tenant: &Tenant,
        signal: Signal,
        format: PayloadFormat,
        received_at_unix_nanos: u64,
        items: u32,
        metadata: &[(String, String)],
        payload_len: usize,
    ) -> BytesMut {
        let tenant = tenant.as_str().as_bytes();
        let metadata = &metadata[..metadata.len().min(MAX_METADATA_ENTRIES)];
        let metadata_len: usize = metadata.iter().map(|(k, v)| 3 + k.len() + v.len()).sum();
        let mut buf = BytesMut::with_capacity(2 + 4 + tenant.len() + 13 + metadata_len + payload_len);
        buf.put_slice(MAGIC);
        buf.put_u8(if metadata.is_empty() { VERSION } else { VERSION_METADATA });
        buf.put_u8(signal.code());
        buf.put_u8(format.code());
        // Tenant ids are at most 150 bytes (MAX_TENANT_BYTES), so the length fits in a byte.
        buf.put_u8(tenant.len() as u8);
        buf.put_slice(tenant);
        buf.put_u64_le(received_at_unix_nanos);
        buf.put_u32_le(items);
        if !metadata.is_empty() {
            buf.put_u8(metadata.len() as u8);
            for (key, value) in metadata {
                let key = cut(key, MAX_METADATA_KEY_BYTES);
                let value = cut(value, MAX_METADATA_VALUE_BYTES);
                buf.put_u8(key.len() as u8);
                buf.put_slice(key.as_bytes());
                buf.put_u16_le(value.len() as u16);
                buf.put_slice(value.as_bytes());
            }
        }
        buf
    }

    pub fn decode(bytes: Bytes) -> Result<Envelope, EnvelopeError> {
        let len = bytes.len();
        let truncated = || EnvelopeError::Truncated { len };
        if len < 5 {
            return Err(truncated());
        }
        if &bytes[..2] != MAGIC {
            return Err(EnvelopeError::BadMagic { found: [bytes[0], bytes[1]] });
        }
        let signal = Signal::from_code(bytes[3]).ok_or(EnvelopeError::UnknownSignal(bytes[3]))?;
        // Version 1 had no format byte: its payloads are all OTLP.
        let (format, tenant_at) = match bytes[2] {
            1 => (PayloadFormat::Otlp, 4),
            VERSION | VERSION_METADATA => {
                let format =
                    PayloadFormat::from_code(bytes[4]).ok_or(EnvelopeError::UnknownFormat(bytes[4]))?;
                (format, 5)
            }
            v => return Err(EnvelopeError::UnsupportedVersion(v)),
        };
        if len <= tenant_at {
            return Err(truncated());
        }
        let tenant_len = usize::from(bytes[tenant_at]);
        let tenant_start = tenant_at + 1;
        let fixed_end = tenant_start + tenant_len + 12;
        if len < fixed_end {
            return Err(truncated());
        }
        let tenant_str = std::str::from_utf8(&bytes[tenant_start..tenant_start + tenant_len])
            .map_err(|_| EnvelopeError::Tenant(TenantError::Empty))?;
        let tenant = Tenant::parse(tenant_str)?;
        let mut u64_bytes = [0u8; 8];
        u64_bytes.copy_from_slice(&bytes[tenant_start + tenant_len..tenant_start + tenant_len + 8]);
        let mut u32_bytes = [0u8; 4];
        u32_bytes.copy_from_slice(&bytes[tenant_start + tenant_len + 8..fixed_end]);
        let (metadata, payload_at) = if bytes[2] == VERSION_METADATA {
            decode_metadata(&bytes, fixed_end)?
        } else {
            (Vec::new(), fixed_end)
        };
        Ok(Envelope {
            tenant,
            signal,
            format,
            received_at_unix_nanos: u64::from_le_bytes(u64_bytes),
            items: u32::from_le_bytes(u32_bytes),
            metadata,
            payload: bytes.slice(payload_at..),
        })
    }
}

/// The metadata section of a version 3 envelope starting at `at`; returns it and where the
/// payload starts.
fn decode_metadata(bytes: &[u8], mut at: usize) -> Result<(Metadata, usize), EnvelopeError> {
    let truncated = || EnvelopeError::Truncated { len: bytes.len() };
    let take = |n: usize, at: &mut usize| -> Result<&[u8], EnvelopeError> {
        let end = at.checked_add(n).filter(|&e| e <= bytes.len()).ok_or_else(truncated)?;
        let slice = &bytes[*at..end];
        *at = end;
        Ok(slice)
    };
    let text = |b: &[u8]| std::str::from_utf8(b).map(str::to_string).map_err(|_| EnvelopeError::Metadata);
    let count = usize::from(take(1, &mut at)?[0]);
    let mut metadata = Vec::with_capacity(count);
    for _ in 0..count {
        let key_len = usize::from(take(1, &mut at)?[0]);
        let key = text(take(key_len, &mut at)?)?;
        let len = take(2, &mut at)?;
        let value_len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let value = text(take(value_len, &mut at)?)?;
        metadata.push((key, value));
    }
    Ok((metadata, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_its_encoding() {
        let env = Envelope {
            tenant: Tenant::parse("team-a").unwrap(),
            signal: Signal::Logs,
            format: PayloadFormat::Otlp,
            received_at_unix_nanos: 1_700_000_000_123_456_789,
            items: 42,
            metadata: Vec::new(),
            payload: Bytes::from_static(b"\x0a\x03abc"),
        };
        assert_eq!(Envelope::decode(env.encode()).unwrap(), env);
        assert_eq!(env.encode()[2], VERSION, "no metadata: version 2, as before");
    }

    #[test]
    fn envelope_metadata_round_trips_and_is_bounded() {
        let mut env = Envelope {
            tenant: Tenant::parse("team-a").unwrap(),
            signal: Signal::Traces,
            format: PayloadFormat::Otlp,
            received_at_unix_nanos: 7,
            items: 1,
            metadata: vec![("x-team".into(), "payments".into()), ("x-region".into(), "é".repeat(3000))],
            payload: Bytes::from_static(b"\x0a\x00"),
        };
        let bytes = env.encode();
        assert_eq!(bytes[2], VERSION_METADATA);
        let decoded = Envelope::decode(bytes.clone()).unwrap();
        assert_eq!(decoded.metadata[0], ("x-team".to_string(), "payments".to_string()));
        assert_eq!(decoded.metadata[1].1.len(), MAX_METADATA_VALUE_BYTES, "cut at a character boundary");
        assert_eq!(decoded.payload, env.payload);
        for cut in 0..bytes.len() - env.payload.len() {
            assert!(Envelope::decode(bytes.slice(..cut)).is_err(), "cut at {cut} decoded");
        }
        env.metadata = (0..40).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(Envelope::decode(env.encode()).unwrap().metadata.len(), MAX_METADATA_ENTRIES);
    }

    #[test]
    fn envelope_decode_rejects_damage_without_panicking() {
        let env = Envelope {
            tenant: Tenant::default(),
            signal: Signal::Traces,
            format: PayloadFormat::PrometheusWriteV2,
            received_at_unix_nanos: 1,
            items: 1,
            metadata: Vec::new(),
            payload: Bytes::from_static(b"xyz"),
        };
        let bytes = env.encode();
        for cut in 0..bytes.len() - 3 {
            assert!(Envelope::decode(bytes.slice(..cut)).is_err(), "cut at {cut} decoded");
        }
        let mut bad = bytes.to_vec();
        bad[3] = 9;
        assert!(matches!(Envelope::decode(bad.into()), Err(EnvelopeError::UnknownSignal(9))));
        let mut bad = bytes.to_vec();
        bad[6] = b'/';
        assert!(matches!(Envelope::decode(bad.into()), Err(EnvelopeError::Tenant(_))));
    }

    #[test]
    fn envelope_version_1_is_still_read_as_otlp() {
        // b"PE", version 1, signal logs, tenant "ab", received at 7, 3 items, payload "xyz".
        let mut v1 = b"PE\x01\x03\x02ab".to_vec();
        v1.extend_from_slice(&7u64.to_le_bytes());
        v1.extend_from_slice(&3u32.to_le_bytes());
        v1.extend_from_slice(b"xyz");
        let env = Envelope::decode(v1.into()).unwrap();
        assert_eq!((env.signal, env.format, env.tenant.as_str()), (Signal::Logs, PayloadFormat::Otlp, "ab"));
        assert_eq!((env.received_at_unix_nanos, env.items, &env.payload[..]), (7, 3, &b"xyz"[..]));
    }
}
