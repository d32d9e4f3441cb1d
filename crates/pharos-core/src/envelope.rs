use bytes::{BufMut, Bytes, BytesMut};

use crate::{Signal, Tenant, TenantError};

/// The unit that travels through the queue: one tenant's batch of one signal.
///
/// The payload is the OTLP export request of the signal (`ExportTraceServiceRequest`, ...),
/// protobuf-encoded. The header carries what a consumer needs before decoding the payload.
///
/// Encoding (version 1), all integers little-endian; see `docs/formats/envelope.md`:
/// `b"PE"` | version u8 | signal u8 | tenant length u8 | tenant bytes | received at (unix ns) u64 |
/// item count u32 | payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub tenant: Tenant,
    pub signal: Signal,
    pub received_at_unix_nanos: u64,
    pub items: u32,
    pub payload: Bytes,
}

const MAGIC: &[u8; 2] = b"PE";
const VERSION: u8 = 1;

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
    #[error("envelope tenant is invalid")]
    Tenant(#[from] TenantError),
}

impl Envelope {
    pub fn encode(&self) -> Bytes {
        let mut buf = Envelope::encode_header(
            &self.tenant,
            self.signal,
            self.received_at_unix_nanos,
            self.items,
            self.payload.len(),
        );
        buf.put_slice(&self.payload);
        buf.freeze()
    }

    /// The encoded header, in a buffer with room for `payload_len` more bytes: write the payload
    /// after it to encode an envelope without copying the payload twice.
    pub fn encode_header(
        tenant: &Tenant,
        signal: Signal,
        received_at_unix_nanos: u64,
        items: u32,
        payload_len: usize,
    ) -> BytesMut {
        let tenant = tenant.as_str().as_bytes();
        let mut buf = BytesMut::with_capacity(2 + 3 + tenant.len() + 12 + payload_len);
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(signal.code());
        // Tenant ids are at most 150 bytes (MAX_TENANT_BYTES), so the length fits in a byte.
        buf.put_u8(tenant.len() as u8);
        buf.put_slice(tenant);
        buf.put_u64_le(received_at_unix_nanos);
        buf.put_u32_le(items);
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
        if bytes[2] != VERSION {
            return Err(EnvelopeError::UnsupportedVersion(bytes[2]));
        }
        let signal = Signal::from_code(bytes[3]).ok_or(EnvelopeError::UnknownSignal(bytes[3]))?;
        let tenant_len = usize::from(bytes[4]);
        let fixed_end = 5 + tenant_len + 12;
        if len < fixed_end {
            return Err(truncated());
        }
        let tenant_str = std::str::from_utf8(&bytes[5..5 + tenant_len])
            .map_err(|_| EnvelopeError::Tenant(TenantError::Empty))?;
        let tenant = Tenant::parse(tenant_str)?;
        let mut u64_bytes = [0u8; 8];
        u64_bytes.copy_from_slice(&bytes[5 + tenant_len..5 + tenant_len + 8]);
        let mut u32_bytes = [0u8; 4];
        u32_bytes.copy_from_slice(&bytes[5 + tenant_len + 8..fixed_end]);
        Ok(Envelope {
            tenant,
            signal,
            received_at_unix_nanos: u64::from_le_bytes(u64_bytes),
            items: u32::from_le_bytes(u32_bytes),
            payload: bytes.slice(fixed_end..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_its_encoding() {
        let env = Envelope {
            tenant: Tenant::parse("team-a").unwrap(),
            signal: Signal::Logs,
            received_at_unix_nanos: 1_700_000_000_123_456_789,
            items: 42,
            payload: Bytes::from_static(b"\x0a\x03abc"),
        };
        assert_eq!(Envelope::decode(env.encode()).unwrap(), env);
    }

    #[test]
    fn envelope_decode_rejects_damage_without_panicking() {
        let env = Envelope {
            tenant: Tenant::default(),
            signal: Signal::Traces,
            received_at_unix_nanos: 1,
            items: 1,
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
        bad[5] = b'/';
        assert!(matches!(Envelope::decode(bad.into()), Err(EnvelopeError::Tenant(_))));
    }
}
