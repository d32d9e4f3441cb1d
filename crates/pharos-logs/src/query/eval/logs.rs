//! Log queries: the newest (or oldest) `limit` entries after the pipeline, grouped into
//! streams by their final labels.

use std::collections::BinaryHeap;

use super::labels::LabelState;
use super::pipeline::Pipeline;
use super::series::SeriesIndex;
use super::{Budget, Direction, EvalError, Limits, LogStream, Needs, ResultEntry, Stats, read};
use crate::model::LogSource;
use crate::query::LogQuery;

/// An entry kept for the result. `key` orders entries from best to worst in the query's
/// direction: the timestamp (bit-inverted for backward, so newer is smaller), then the order
/// the entry was read in.
struct Candidate {
    key: (i64, u64),
    series: u32,
    entry: ResultEntry,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// Runs a log query over `[start, end)` (unix nanoseconds): at most `limit` entries
/// overall, the newest for [`Direction::Backward`] and the oldest for
/// [`Direction::Forward`]; streams grouped by their labels after the pipeline and sorted
/// by them; entries in each stream in the direction's order. Of entries with equal time,
/// those of the stream with the smaller labels are taken first, then those read first in
/// the query's direction.
pub fn select_logs(
    query: &LogQuery,
    source: &dyn LogSource,
    start: i64,
    end: i64,
    direction: Direction,
    limit: usize,
    limits: &Limits,
) -> Result<(Vec<LogStream>, Stats), EvalError> {
    if limit > limits.max_entries {
        return Err(EvalError::TooManyEntries { requested: limit, limit: limits.max_entries });
    }
    if end < start {
        return Err(EvalError::InvalidRange {
            start,
            end,
            step: 0,
            reason: "the end must not be before the start",
        });
    }
    let mut budget = Budget::new(limits.deadline);
    budget.check()?;
    let pipeline = Pipeline::new(&query.pipeline)?;
    let mut stats = Stats::default();
    let mut streams =
        read(source, query, start, end, Needs { metadata: None, lines: true }, &mut stats, limits)?;
    streams.sort_by(|a, b| a.labels.cmp(&b.labels));

    let backward = direction == Direction::Backward;
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(limit.min(4096));
    let mut index = SeriesIndex::new();
    let mut state = LabelState::new();
    let mut seq: u64 = 0;
    for stream in &streams {
        let mut stream_series: Option<u32> = None;
        let entries: Box<dyn Iterator<Item = _>> =
            if backward { Box::new(stream.entries.iter().rev()) } else { Box::new(stream.entries.iter()) };
        for entry in entries {
            budget.tick()?;
            if limit == 0 {
                break;
            }
            seq += 1;
            let key = (if backward { !entry.timestamp } else { entry.timestamp }, seq);
            // Later entries of this stream are no better than this one.
            if heap.len() == limit && heap.peek().is_some_and(|worst| key >= worst.key) {
                break;
            }
            state.reset(&stream.labels, &entry.metadata);
            let Some(line) = pipeline.process(entry.timestamp, &entry.line, &mut state) else { continue };
            let series = if state.is_pristine() {
                *stream_series.get_or_insert_with(|| {
                    let pairs: Vec<(&str, &str)> = stream.labels.iter().collect();
                    index.id_of_pairs(&pairs)
                })
            } else {
                index.id_of_pairs(&state.pairs_with_errors())
            };
            let entry = ResultEntry {
                timestamp: entry.timestamp,
                line: line.into_owned(),
                metadata: state.visible_metadata(),
            };
            heap.push(Candidate { key, series, entry });
            if heap.len() > limit {
                heap.pop();
            }
        }
    }

    let mut kept = heap.into_vec();
    kept.sort_unstable();
    let mut grouped: Vec<Vec<ResultEntry>> = vec![Vec::new(); index.len()];
    for candidate in kept {
        grouped[candidate.series as usize].push(candidate.entry);
    }
    stats.entries_returned = grouped.iter().map(|g| g.len() as u64).sum();
    let mut out: Vec<LogStream> = index
        .into_labels()
        .into_iter()
        .zip(grouped)
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(labels, entries)| LogStream { labels, entries })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok((out, stats))
}
