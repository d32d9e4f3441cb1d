//! The small binary codec shared by part files and block indexes: LEB128 varints,
//! length-prefixed strings, and a bounds-checked reader.

/// Where a truncated or malformed encoding was found (a byte offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) usize);

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A signed varint, zigzag-encoded so small negative numbers stay short.
pub(crate) fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads a buffer front to back; every read checks the bounds.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(Malformed(self.pos))?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        Ok(self.bytes(N)?.try_into().expect("N bytes"))
    }

    pub(crate) fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.bytes(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(Malformed(self.pos))
    }

    pub(crate) fn signed(&mut self) -> Result<i64, Malformed> {
        let u = self.varint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    /// A count that must fit in what is left of the buffer (each item takes a byte or more),
    /// so a damaged count cannot make the caller allocate without bound.
    pub(crate) fn count(&mut self) -> Result<usize, Malformed> {
        let at = self.pos;
        let n = self.varint()?;
        usize::try_from(n).ok().filter(|&n| n <= self.buf.len() - self.pos).ok_or(Malformed(at))
    }

    pub(crate) fn string(&mut self) -> Result<String, Malformed> {
        let len = self.varint()? as usize;
        let at = self.pos;
        String::from_utf8(self.bytes(len)?.to_vec()).map_err(|_| Malformed(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_varints_signed_and_strings() {
        let mut out = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            put_varint(&mut out, v);
        }
        for v in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            put_signed(&mut out, v);
        }
        put_str(&mut out, "ünï");
        let mut r = Reader::new(&out, 0);
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(r.varint(), Ok(v));
        }
        for v in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            assert_eq!(r.signed(), Ok(v));
        }
        assert_eq!(r.string().as_deref(), Ok("ünï"));
        assert!(r.at_end());
        assert_eq!(r.varint(), Err(Malformed(out.len())));
    }
}
