//! Splitting large work over the cores: queries over many series or streams.

/// `f` over consecutive parts of `items`, one per core when `split` (else one part on the
/// calling thread), in order; `f` gets each part's first index. A panic in a part is raised
/// again here.
pub fn in_parts<T: Sync, R: Send>(items: &[T], split: bool, f: impl Fn(usize, &[T]) -> R + Sync) -> Vec<R> {
    in_weighted_parts(items, split, |_| 1, f)
}

/// [`in_parts`] with parts of about equal total `weight` (each part has at least one item).
pub fn in_weighted_parts<T: Sync, R: Send>(
    items: &[T],
    split: bool,
    weight: impl Fn(&T) -> usize,
    f: impl Fn(usize, &[T]) -> R + Sync,
) -> Vec<R> {
    let threads = if split { std::thread::available_parallelism().map_or(1, |p| p.get()) } else { 1 };
    if threads <= 1 || items.len() <= 1 {
        return vec![f(0, items)];
    }
    // Cut after the item that takes the running weight to the next share.
    let total: usize = items.iter().map(&weight).sum();
    let share = total.div_ceil(threads).max(1);
    let mut cuts = vec![0];
    let mut running = 0;
    for (i, item) in items.iter().enumerate() {
        running += weight(item);
        if running >= share * cuts.len() && i + 1 < items.len() && cuts.len() < threads {
            cuts.push(i + 1);
        }
    }
    cuts.push(items.len());
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = cuts
            .windows(2)
            .map(|w| {
                let (first, part) = (w[0], &items[w[0]..w[1]]);
                scope.spawn(move || f(first, part))
            })
            .collect();
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

    #[test]
    fn weighted_parts_cover_every_item_once_in_order_and_share_the_weight() {
        let items: Vec<usize> = (0..200).map(|i| if i % 50 == 0 { 1000 } else { i % 7 }).collect();
        let parts = in_weighted_parts(&items, true, |w| *w, |first, part| (first, part.to_vec()));
        let mut next = 0;
        for (first, part) in &parts {
            assert_eq!(*first, next);
            assert!(!part.is_empty());
            next += part.len();
        }
        assert_eq!(next, items.len());
        let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
        assert!(parts.len() <= threads.max(1));
        if threads > 1 {
            let total: usize = items.iter().sum();
            let heaviest = parts.iter().map(|(_, p)| p.iter().sum::<usize>()).max().unwrap();
            assert!(heaviest < total, "the weight is shared: {heaviest} of {total}");
        }
        assert_eq!(in_weighted_parts(&[5usize], true, |w| *w, |_, p| p.len()), vec![1]);
    }
}
