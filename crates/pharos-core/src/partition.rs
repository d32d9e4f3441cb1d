/// What decides an item's queue partition.
///
/// Every span of a trace goes to one partition (by trace id), every record of a log stream to one
/// (by the stream's labels), every point of a metric series to one (by its label set), so that each
/// trace, stream and series has exactly one owner when processors scale out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKey {
    /// A precomputed 64-bit hash (of a stream or a series).
    Hash(u64),
    /// A trace id (16 bytes).
    TraceId([u8; 16]),
}

/// The partition, in `0..partitions`, that a key belongs to. Stable across versions and restarts.
pub fn partition_of(key: PartitionKey, partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    let hash = match key {
        PartitionKey::Hash(h) => h,
        PartitionKey::TraceId(id) => fnv1a(&id),
    };
    // Multiply-shift maps the hash onto the range without the bias of a modulo on small ranges.
    ((u128::from(hash) * u128::from(partitions.max(1))) >> 64) as u32
}

/// FNV-1a, 64 bits: small, stable and good enough to spread ids and label sets.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    fnv1a_extend(&mut h, bytes);
    h
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub fn fnv1a_extend(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// FNV-1a over a label set given as sorted `(name, value)` pairs, each name and value followed
/// by `0xff` (which no UTF-8 text holds): the series hash remote write partitions by and the
/// metrics head's series id.
pub fn label_set_hash<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = FNV_OFFSET;
    for (name, value) in pairs {
        fnv1a_extend(&mut h, name.as_bytes());
        fnv1a_extend(&mut h, &[0xff]);
        fnv1a_extend(&mut h, value.as_bytes());
        fnv1a_extend(&mut h, &[0xff]);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_set_hash_is_fnv1a_of_names_and_values_each_followed_by_0xff() {
        // Stored in block indexes and used as series ids: the byte stream must not change.
        let bytes = b"__name__\xffup\xffjob\xffapi\xff";
        assert_eq!(label_set_hash([("__name__", "up"), ("job", "api")]), fnv1a(bytes));
        assert_eq!(label_set_hash([]), FNV_OFFSET);
        assert_ne!(label_set_hash([("a", "bc")]), label_set_hash([("ab", "c")]));
    }

    #[test]
    fn partition_of_stays_in_range_and_spreads() {
        let mut seen = [0u32; 4];
        for i in 0u64..4000 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_le_bytes());
            let p = partition_of(PartitionKey::TraceId(id), 4);
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "uneven spread: {seen:?}");
        assert_eq!(partition_of(PartitionKey::Hash(u64::MAX), 1), 0);
    }

    #[test]
    fn partition_of_is_stable() {
        // Golden values: data already in the queue relies on a key keeping its partition.
        assert_eq!(fnv1a(b"pharos"), 0xf54e_431a_ef38_e7b4);
        assert_eq!(partition_of(PartitionKey::TraceId([7; 16]), 8), 7);
    }
}
