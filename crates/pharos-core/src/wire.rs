//! Reading protobuf messages in place: the fields of a message as they are on the wire, for
//! decoders that borrow strings and bytes from the buffer instead of allocating them (prost
//! decodes into owned values; on hot paths that is most of the work).

/// A message that is not valid protobuf: what was wrong and the byte of the message it was
/// found at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf at byte {at}: {what}")]
pub struct WireError {
    pub what: &'static str,
    pub at: usize,
}

/// A field's value as encoded: its wire type decides the variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Reads a varint at `*at`, advancing past it. (Everything here is `#[inline]`: decoders in
/// other crates call it per field.)
#[inline]
pub fn varint(buf: &[u8], at: &mut usize) -> Result<u64, WireError> {
    // One byte (keys, small lengths) without the loop.
    if let Some(&b) = buf.get(*at)
        && b < 0x80
    {
        *at += 1;
        return Ok(u64::from(b));
    }
    let start = *at;
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at).ok_or(WireError { what: "truncated varint", at: start })?;
        *at += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(n);
        }
    }
    Err(WireError { what: "varint longer than 10 bytes", at: start })
}

/// The fields of a message in the order they are encoded, as `(number, value)`; the first
/// malformed field ends the iteration with its error. Groups (wire types 3 and 4, deprecated
/// since proto2) are refused.
#[inline]
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf, at: 0, failed: false }
}

/// See [`fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    buf: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    #[inline]
    fn field(&mut self) -> Result<(u32, Value<'a>), WireError> {
        let (buf, start) = (self.buf, self.at);
        let key = varint(buf, &mut self.at)?;
        let number = u32::try_from(key >> 3).ok().filter(|&n| n > 0);
        let number = number.ok_or(WireError { what: "field number out of range", at: start })?;
        let at = &mut self.at;
        let value = match key & 7 {
            0 => Value::Varint(varint(buf, at)?),
            1 => {
                let b = buf.get(*at..*at + 8).ok_or(WireError { what: "truncated fixed64", at: *at })?;
                *at += 8;
                Value::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            2 => {
                let len = varint(buf, at)?;
                let end =
                    usize::try_from(len).ok().and_then(|l| at.checked_add(l)).filter(|&e| e <= buf.len());
                let end = end.ok_or(WireError { what: "length past the end of the message", at: *at })?;
                let b = &buf[*at..end];
                *at = end;
                Value::Bytes(b)
            }
            5 => {
                let b = buf.get(*at..*at + 4).ok_or(WireError { what: "truncated fixed32", at: *at })?;
                *at += 4;
                Value::Fixed32(u32::from_le_bytes(b.try_into().expect("4 bytes")))
            }
            _ => return Err(WireError { what: "unsupported wire type", at: start }),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.buf.len() {
            return None;
        }
        let field = self.field();
        self.failed = field.is_err();
        Some(field)
    }
}

/// Whether `bytes` are UTF-8: ASCII (the usual case) checked inline, without a call to the
/// validator, which dominates on short strings.
#[inline]
pub fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

/// Bytes of a `string` field, checked to be UTF-8 (as prost checks them).
#[inline]
pub fn text(bytes: &[u8]) -> Result<&str, WireError> {
    std::str::from_utf8(bytes)
        .map_err(|e| WireError { what: "string field is not UTF-8", at: e.valid_up_to() })
}

/// Appends a length-delimited field (`number`, wire type 2) holding `bytes` (prost's key and
/// varint encoders; prost's own `bytes::encode` wants an owned buffer).
pub fn put_bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A `KeyValue` (OpenTelemetry `common.proto`) whose value is a string, as encoders write it
/// when key and string are shorter than 128 bytes: `key` (field 1), then `value` (field 2)
/// holding `string_value` (field 1) and nothing else. Returns the key and the string, unchecked
/// for UTF-8; `None` for any other encoding, which [`fields`] reads. Most attributes are such,
/// and reading them so skips the field loop twice.
#[inline]
pub fn string_key_value(kv: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x0a, key_len, rest @ ..] = kv else { return None };
    let (key, rest) = rest.split_at_checked(usize::from(*key_len).min(0x80))?;
    let [0x12, value_len, 0x0a, string_len, string @ ..] = rest else { return None };
    let fits = *key_len < 0x80
        && *string_len < 0x7e
        && usize::from(*value_len) == usize::from(*string_len) + 2
        && string.len() == usize::from(*string_len);
    fits.then_some((key, string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::encode_varint;

    /// What the field loop reads from a `KeyValue`, if its value holds only a string.
    fn read_string_key_value(kv: &[u8]) -> Option<(&[u8], &[u8])> {
        let (mut key, mut value) = (&b""[..], None);
        for field in fields(kv) {
            match field.ok()? {
                (1, Value::Bytes(k)) => key = k,
                (2, Value::Bytes(v)) => value = Some(v),
                _ => return None,
            }
        }
        let mut string = None;
        for field in fields(value?) {
            match field.ok()? {
                (1, Value::Bytes(s)) => string = Some(s),
                _ => return None,
            }
        }
        Some((key, string?))
    }

    #[test]
    fn a_string_key_value_read_in_one_go_is_what_the_field_loop_reads() {
        let kv = |key: &[u8], string: &[u8]| {
            let mut value = Vec::new();
            put_bytes_field(&mut value, 1, string);
            let mut kv = Vec::new();
            put_bytes_field(&mut kv, 1, key);
            put_bytes_field(&mut kv, 2, &value);
            kv
        };
        let long = [b'x'; 200];
        for (key, string) in
            [(&b"service.name"[..], &b"checkout"[..]), (b"", b""), (b"k", &long[..125]), (&long[..127], b"v")]
        {
            let kv = kv(key, string);
            assert_eq!(string_key_value(&kv), Some((key, string)));
            assert_eq!(read_string_key_value(&kv), Some((key, string)));
        }
        // Longer strings, other values, other layouts: left to the field loop.
        let mut int_value = Vec::new();
        put_bytes_field(&mut int_value, 1, b"k");
        put_bytes_field(&mut int_value, 2, &[0x18, 0x05]);
        let mut value_first = Vec::new();
        put_bytes_field(&mut value_first, 2, &[0x0a, 0x01, b'v']);
        put_bytes_field(&mut value_first, 1, b"k");
        let mut trailing = kv(b"k", b"v");
        trailing.extend_from_slice(&[0x18, 0x01]);
        for other in [kv(b"k", &long[..126]), kv(&long[..128], b"v"), int_value, value_first, trailing] {
            assert_eq!(string_key_value(&other), None, "{other:?}");
        }
        // Whatever the bytes, a read in one go agrees with the field loop.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut agreed = 0;
        for _ in 0..200_000 {
            let mut bytes = kv(b"abc", b"de");
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state % bytes.len() as u64) as usize;
            bytes[at] = (state >> 32) as u8;
            if (state >> 40).is_multiple_of(3) {
                bytes.truncate(at);
            }
            if let Some(got) = string_key_value(&bytes) {
                assert_eq!(Some(got), read_string_key_value(&bytes), "{bytes:?}");
                agreed += 1;
            }
        }
        assert!(agreed > 1000, "{agreed}");
    }

    #[test]
    fn fields_read_every_wire_type_and_stop_at_the_first_malformed_one() {
        let mut buf = Vec::new();
        encode_varint(1 << 3, &mut buf); // field 1, varint
        encode_varint(300, &mut buf);
        buf.push((2 << 3) | 1);
        buf.extend_from_slice(&7u64.to_le_bytes());
        put_bytes_field(&mut buf, 3, b"abc");
        buf.push((4 << 3) | 5);
        buf.extend_from_slice(&9u32.to_le_bytes());
        let got: Vec<(u32, Value<'_>)> = fields(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![
                (1, Value::Varint(300)),
                (2, Value::Fixed64(7)),
                (3, Value::Bytes(b"abc")),
                (4, Value::Fixed32(9))
            ]
        );
        // A length past the end, a group, field number 0, a truncated varint.
        for bad in [&[0x1a, 0x05, b'a'][..], &[0x0b][..], &[0x00, 0x01][..], &[0x08, 0x80][..]] {
            let all: Vec<_> = fields(bad).collect();
            assert!(matches!(all.last(), Some(Err(_))), "{bad:?}: {all:?}");
        }
    }

    #[test]
    fn text_refuses_invalid_utf8() {
        assert_eq!(text(b"ok"), Ok("ok"));
        assert!(text(&[0xff, 0xfe]).is_err());
    }
}
