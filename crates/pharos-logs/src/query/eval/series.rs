//! Interning label sets: many entries map to few series, so an entry's labels are looked up by
//! hash as borrowed pairs and only copied into a [`Labels`] the first time they are seen.

use std::collections::HashMap;

use pharos_core::{FNV_OFFSET, fnv1a_extend};

use crate::model::Labels;

/// Label sets and their ids, in the order first seen.
#[derive(Debug, Default)]
pub(super) struct SeriesIndex {
    labels: Vec<Labels>,
    by_hash: HashMap<u64, Vec<u32>>,
}

fn hash_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = FNV_OFFSET;
    for (k, v) in pairs {
        fnv1a_extend(&mut h, k.as_bytes());
        fnv1a_extend(&mut h, &[0xff]);
        fnv1a_extend(&mut h, v.as_bytes());
        fnv1a_extend(&mut h, &[0xfe]);
    }
    h
}

impl SeriesIndex {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// The id of the label set of `pairs` (sorted by name, names unique; empty values are
    /// skipped, as label sets have none).
    pub(super) fn id_of_pairs(&mut self, pairs: &[(&str, &str)]) -> u32 {
        let nonempty = || pairs.iter().copied().filter(|(_, v)| !v.is_empty());
        let hash = hash_pairs(nonempty());
        if let Some(ids) = self.by_hash.get(&hash) {
            for &id in ids {
                if self.labels[id as usize].iter().eq(nonempty()) {
                    return id;
                }
            }
        }
        let id = self.labels.len() as u32;
        self.labels.push(Labels::new(nonempty().map(|(k, v)| (k.to_owned(), v.to_owned()))));
        self.by_hash.entry(hash).or_default().push(id);
        id
    }

    /// The id of `labels`.
    pub(super) fn id_of(&mut self, labels: Labels) -> u32 {
        let hash = hash_pairs(labels.iter());
        if let Some(ids) = self.by_hash.get(&hash) {
            for &id in ids {
                if self.labels[id as usize] == labels {
                    return id;
                }
            }
        }
        let id = self.labels.len() as u32;
        self.labels.push(labels);
        self.by_hash.entry(hash).or_default().push(id);
        id
    }

    pub(super) fn len(&self) -> usize {
        self.labels.len()
    }

    pub(super) fn get(&self, id: u32) -> &Labels {
        &self.labels[id as usize]
    }

    pub(super) fn into_labels(self) -> Vec<Labels> {
        self.labels
    }
}
