//! One trace's spans with what evaluation derives from them (the span tree, child counts,
//! the root, the trace's bounds), each computed once and only when a query needs it.
//!
//! The structural relations are linear in the number of spans: ids go into hash sets and
//! maps, ancestor walks remember what they have seen, and parent cycles in bad data end.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};

use crate::model::{SpanData, SpanId, hex};

/// A relation between a span and a set of spans of the same trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relation {
    /// The span's parent is in the set.
    Child,
    /// One of the span's ancestors is in the set.
    Descendant,
    /// The span is the parent of a span in the set.
    Parent,
    /// The span is an ancestor of a span in the set.
    Ancestor,
    /// The span has the same parent as another span in the set.
    Sibling,
}

/// The spans of one trace, indexed as given.
pub(crate) struct Trace<'a> {
    pub(crate) spans: &'a [SpanData],
    tree: OnceCell<Tree>,
    child_counts: OnceCell<HashMap<SpanId, i64>>,
    root: OnceCell<Option<usize>>,
    bounds: OnceCell<(u64, u64)>,
    trace_id: OnceCell<String>,
}

/// Ids and parent ids, and which span has which id (the first, if ids repeat).
struct Tree {
    ids: Vec<SpanId>,
    parents: Vec<Option<SpanId>>,
    by_id: HashMap<SpanId, usize>,
}

impl Tree {
    fn parent_index(&self, i: usize) -> Option<usize> {
        self.parents[i].and_then(|p| self.by_id.get(&p).copied())
    }
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
const VISITING: u8 = 3;

impl<'a> Trace<'a> {
    pub(crate) fn new(spans: &'a [SpanData]) -> Self {
        Self {
            spans,
            tree: OnceCell::new(),
            child_counts: OnceCell::new(),
            root: OnceCell::new(),
            bounds: OnceCell::new(),
            trace_id: OnceCell::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    fn tree(&self) -> &Tree {
        self.tree.get_or_init(|| {
            let ids: Vec<SpanId> = self.spans.iter().map(SpanData::span_id).collect();
            let parents = self.spans.iter().map(SpanData::parent_span_id).collect();
            let mut by_id = HashMap::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                by_id.entry(*id).or_insert(i);
            }
            Tree { ids, parents, by_id }
        })
    }

    /// How many spans of the trace name span `i` as their parent.
    pub(crate) fn child_count(&self, i: usize) -> i64 {
        let counts = self.child_counts.get_or_init(|| {
            let mut counts = HashMap::new();
            for parent in self.tree().parents.iter().flatten() {
                *counts.entry(*parent).or_insert(0) += 1;
            }
            counts
        });
        counts.get(&self.spans[i].span_id()).copied().unwrap_or(0)
    }

    /// The root span: the earliest-starting span without a parent, if the trace has one.
    pub(crate) fn root(&self) -> Option<&'a SpanData> {
        let root = *self.root.get_or_init(|| {
            (0..self.spans.len())
                .filter(|&i| self.spans[i].is_root())
                .min_by_key(|&i| (self.spans[i].span.start_time_unix_nano, i))
        });
        root.map(|i| &self.spans[i])
    }

    /// The earliest start and the latest end over the trace's spans.
    pub(crate) fn bounds(&self) -> (u64, u64) {
        *self.bounds.get_or_init(|| {
            let start = self.spans.iter().map(|s| s.span.start_time_unix_nano).min().unwrap_or(0);
            let end = self.spans.iter().map(|s| s.span.end_time_unix_nano).max().unwrap_or(0);
            (start, end.max(start))
        })
    }

    /// The trace id in hex (of the first span: all spans of a trace share it).
    pub(crate) fn trace_id_hex(&self) -> &str {
        self.trace_id.get_or_init(|| self.spans.first().map(|s| hex(&s.span.trace_id)).unwrap_or_default())
    }

    /// For each span of `to`, in order, whether it stands in `relation` to some span of
    /// `from` (a span is never its own sibling).
    pub(crate) fn related(&self, relation: Relation, from: &[usize], to: &[usize]) -> Vec<bool> {
        if from.is_empty() {
            return vec![false; to.len()];
        }
        let tree = self.tree();
        match relation {
            Relation::Child => {
                let ids: HashSet<SpanId> = from.iter().map(|&i| tree.ids[i]).collect();
                to.iter().map(|&r| tree.parents[r].is_some_and(|p| ids.contains(&p))).collect()
            }
            Relation::Parent => {
                let parents: HashSet<SpanId> = from.iter().filter_map(|&i| tree.parents[i]).collect();
                to.iter().map(|&r| parents.contains(&tree.ids[r])).collect()
            }
            Relation::Sibling => {
                // parent id -> (spans of `from` under it, one of them)
                let mut families: HashMap<SpanId, (usize, usize)> = HashMap::new();
                for &i in from {
                    if let Some(p) = tree.parents[i] {
                        families.entry(p).or_insert((0, i)).0 += 1;
                    }
                }
                to.iter()
                    .map(|&r| {
                        tree.parents[r]
                            .and_then(|p| families.get(&p))
                            .is_some_and(|&(count, one)| count > 1 || one != r)
                    })
                    .collect()
            }
            Relation::Ancestor => {
                // Mark every ancestor of `from`; a walk stops where an earlier one passed.
                let mut marked = vec![false; self.len()];
                for &a in from {
                    let mut p = tree.parent_index(a);
                    while let Some(i) = p {
                        if marked[i] {
                            break;
                        }
                        marked[i] = true;
                        p = tree.parent_index(i);
                    }
                }
                to.iter().map(|&r| marked[r]).collect()
            }
            Relation::Descendant => {
                let ids: HashSet<SpanId> = from.iter().map(|&i| tree.ids[i]).collect();
                let mut state = vec![UNKNOWN; self.len()];
                let mut path = Vec::new();
                to.iter()
                    .map(|&r| {
                        let mut x = r;
                        let found = loop {
                            match state[x] {
                                YES => break true,
                                NO | VISITING => break false,
                                _ => {}
                            }
                            state[x] = VISITING;
                            path.push(x);
                            let Some(parent) = tree.parents[x] else { break false };
                            if ids.contains(&parent) {
                                break true;
                            }
                            match tree.by_id.get(&parent) {
                                Some(&p) => x = p,
                                None => break false,
                            }
                        };
                        for y in path.drain(..) {
                            state[y] = if found { YES } else { NO };
                        }
                        found
                    })
                    .collect()
            }
        }
    }
}
