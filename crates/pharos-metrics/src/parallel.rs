//! Splitting large work over the cores: queries over many series.

/// `f` over consecutive parts of `items`, one per core when `split` (else one part on the
/// calling thread), in order; `f` gets each part's first index. A panic in a part is raised
/// again here.
pub(crate) fn in_parts<T: Sync, R: Send>(
    items: &[T],
    split: bool,
    f: impl Fn(usize, &[T]) -> R + Sync,
) -> Vec<R> {
    let threads = if split { std::thread::available_parallelism().map_or(1, |p| p.get()) } else { 1 };
    if threads <= 1 || items.len() <= 1 {
        return vec![f(0, items)];
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> =
            items.chunks(per).enumerate().map(|(i, part)| scope.spawn(move || f(i * per, part))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_every_item_once_in_order() {
        let items: Vec<u32> = (0..1001).collect();
        for split in [false, true] {
            let parts = in_parts(&items, split, |first, part| (first, part.to_vec()));
            let mut next = 0;
            for (first, part) in &parts {
                assert_eq!(*first, next);
                next += part.len();
            }
            let joined: Vec<u32> = parts.into_iter().flat_map(|(_, p)| p).collect();
            assert_eq!(joined, items);
        }
        assert_eq!(in_parts(&[] as &[u32], true, |_, p| p.len()), vec![0]);
    }
}
