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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::encode_varint;

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
