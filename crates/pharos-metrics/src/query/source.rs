//! Where the engine reads series from: a small trait, and an in-memory implementation.

use std::collections::BTreeMap;

use regex::{Regex, RegexBuilder};

use crate::model::{Labels, Sample, Series};

use super::error::QueryError;

/// Upper bound for a compiled label-matcher regex, in bytes.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How a matcher compares a label value.
#[derive(Debug, Clone)]
pub enum MatchKind {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored)
    Regex(Regex),
    /// `!~` (fully anchored)
    NotRegex(Regex),
}

/// A label matcher: `name op value`; a missing label has the value `""`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// The operator, with a compiled regex for regex matchers.
    pub kind: MatchKind,
    /// The literal value or the regex source.
    pub value: String,
}

impl Matcher {
    /// `name = value`
    pub fn equal(name: &str, value: &str) -> Self {
        Self { name: name.to_owned(), kind: MatchKind::Equal, value: value.to_owned() }
    }

    /// `name != value`
    pub fn not_equal(name: &str, value: &str) -> Self {
        Self { name: name.to_owned(), kind: MatchKind::NotEqual, value: value.to_owned() }
    }

    /// `name =~ pattern` or `name !~ pattern`, anchored at both ends, with a size limit.
    pub fn regex(name: &str, pattern: &str, negated: bool) -> Result<Self, QueryError> {
        let re = compile_anchored(pattern)?;
        Ok(Self {
            name: name.to_owned(),
            kind: if negated { MatchKind::NotRegex(re) } else { MatchKind::Regex(re) },
            value: pattern.to_owned(),
        })
    }

    /// Whether `value` satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match &self.kind {
            MatchKind::Equal => self.value == value,
            MatchKind::NotEqual => self.value != value,
            MatchKind::Regex(re) => re.is_match(value),
            MatchKind::NotRegex(re) => !re.is_match(value),
        }
    }

    /// Whether the matcher selects series that lack the label (it matches `""`).
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

/// Compiles a PromQL regex: fully anchored, `.` matches newlines, bounded in size.
pub fn compile_anchored(pattern: &str) -> Result<Regex, QueryError> {
    RegexBuilder::new(&format!("^(?s:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|source| QueryError::InvalidRegex { pattern: pattern.to_owned(), source: Box::new(source) })
}

/// Whether a label set satisfies every matcher.
pub fn matches_all(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers.iter().all(|m| m.matches(labels.get(&m.name)))
}

/// Read access to stored series, as Prometheus's `storage.Querier`.
pub trait SeriesSource: Send + Sync {
    /// Every series matching all `matchers`, with its samples in `[mint, maxt]` (ms,
    /// inclusive) in time order, series sorted by labels. Series without samples in the
    /// range may be left out.
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError>;
}

/// Series held in memory, for tests and small embedded uses.
#[derive(Debug, Default, Clone)]
pub struct MemSource {
    series: BTreeMap<Labels, Vec<Sample>>,
}

impl MemSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a sample; samples of one series are kept sorted, a repeated timestamp
    /// replaces the earlier value.
    pub fn add(&mut self, labels: Labels, t: i64, v: f64) {
        let samples = self.series.entry(labels).or_default();
        match samples.binary_search_by(|s| s.t.cmp(&t)) {
            Ok(i) => samples[i].v = v,
            Err(i) => samples.insert(i, Sample { t, v }),
        }
    }

    /// Drops all data.
    pub fn clear(&mut self) {
        self.series.clear();
    }

    /// Number of series held.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series is held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

impl SeriesSource for MemSource {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError> {
        let mut out = Vec::new();
        for (labels, samples) in &self.series {
            if !matches_all(labels, matchers) {
                continue;
            }
            let lo = samples.partition_point(|s| s.t < mint);
            let hi = samples.partition_point(|s| s.t <= maxt);
            if lo >= hi {
                continue;
            }
            out.push(Series { labels: labels.clone(), samples: samples[lo..hi].to_vec() });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_matcher_is_fully_anchored() {
        let m = Matcher::regex("job", "api", false).expect("valid regex");
        assert!(m.matches("api"));
        assert!(!m.matches("api-server"));
        assert!(!m.matches("my-api"));
    }

    #[test]
    fn mem_source_select_returns_samples_within_bounds() {
        let mut src = MemSource::new();
        let l = Labels::from_pairs([("__name__", "m")]);
        for t in 0..10 {
            src.add(l.clone(), t * 1000, t as f64);
        }
        let got = src.select(&[Matcher::equal("__name__", "m")], 2000, 4000).expect("select");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples.len(), 3);
    }
}
