//! The labels of one entry while its pipeline runs: the stream's labels (shared, never
//! copied), the entry's metadata and what stages add, remove or rewrite.

use std::borrow::Cow;
use std::sync::Arc;

use crate::model::Labels;

pub(super) const ERROR_LABEL: &str = "__error__";
pub(super) const ERROR_DETAILS_LABEL: &str = "__error_details__";

pub(super) const JSON_PARSER_ERR: &str = "JSONParserErr";
pub(super) const LOGFMT_PARSER_ERR: &str = "LogfmtParserErr";
pub(super) const LABEL_FILTER_ERR: &str = "LabelFilterErr";
pub(super) const TEMPLATE_FORMAT_ERR: &str = "TemplateFormatErr";
pub(super) const SAMPLE_EXTRACTION_ERR: &str = "SampleExtractionErr";

const DUPLICATE_SUFFIX: &str = "_extracted";

/// Where a non-stream label came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Metadata,
    Parsed,
    Formatted,
}

#[derive(Debug)]
struct Extra {
    name: String,
    value: String,
    origin: Origin,
}

/// One entry's labels. Names are unique: a stream label that a stage overrides is marked
/// removed, and parsed names that collide get `_extracted`.
///
/// The state is reused from entry to entry: the strings of metadata and extracted labels
/// keep their buffers (`extra[live..]` are spare), so a pipeline allocates nothing per entry
/// once it has seen a few.
#[derive(Debug)]
pub(super) struct LabelState {
    stream: Arc<Labels>,
    removed: Vec<bool>,
    any_removed: bool,
    extra: Vec<Extra>,
    live: usize,
    error: Option<&'static str>,
    details: Option<String>,
}

/// How many extra labels there were, to undo a parser that failed half way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark(usize);

impl LabelState {
    pub(super) fn new() -> Self {
        Self {
            stream: Arc::new(Labels::default()),
            removed: Vec::new(),
            any_removed: false,
            extra: Vec::new(),
            live: 0,
            error: None,
            details: None,
        }
    }

    fn live(&self) -> &[Extra] {
        &self.extra[..self.live]
    }

    /// Appends a label, reusing a spare buffer; `suffix` is appended to the name.
    fn push(&mut self, name: &str, suffix: &str, value: &str, origin: Origin) {
        if self.live < self.extra.len() {
            let spare = &mut self.extra[self.live];
            spare.name.clear();
            spare.name.push_str(name);
            spare.name.push_str(suffix);
            spare.value.clear();
            spare.value.push_str(value);
            spare.origin = origin;
        } else {
            self.extra.push(Extra { name: format!("{name}{suffix}"), value: value.to_owned(), origin });
        }
        self.live += 1;
    }

    fn remove_extra_at(&mut self, i: usize) {
        self.extra.swap(i, self.live - 1);
        self.live -= 1;
    }

    fn find_extra(&self, name: &str, suffix: &str) -> Option<usize> {
        self.live().iter().position(|e| {
            e.name.len() == name.len() + suffix.len() && e.name.starts_with(name) && e.name.ends_with(suffix)
        })
    }

    /// Starts a new entry of `stream` with its structured `metadata`.
    pub(super) fn reset(&mut self, stream: &Arc<Labels>, metadata: &[(String, String)]) {
        if !Arc::ptr_eq(&self.stream, stream) {
            self.stream = Arc::clone(stream);
        }
        self.removed.clear();
        self.removed.resize(self.stream.len(), false);
        self.any_removed = false;
        self.live = 0;
        self.error = None;
        self.details = None;
        for (name, value) in metadata {
            if value.is_empty() {
                continue;
            }
            let name = sanitize_label_name(name);
            if name.is_empty() || is_error_label(&name) {
                continue;
            }
            let suffix = if self.stream_index(&name).is_some() { DUPLICATE_SUFFIX } else { "" };
            match self.find_extra(&name, suffix) {
                Some(i) => self.extra[i].value.clone_from(value),
                None => self.push(&name, suffix, value, Origin::Metadata),
            }
        }
    }

    /// Whether the labels are exactly the stream's: no metadata, nothing added or removed,
    /// no error.
    pub(super) fn is_pristine(&self) -> bool {
        self.live == 0 && !self.any_removed && self.error.is_none() && self.details.is_none()
    }

    fn stream_index(&self, name: &str) -> Option<usize> {
        self.stream.iter().position(|(k, _)| k == name)
    }

    /// The value of `name`, `__error__` and `__error_details__` included.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        match name {
            ERROR_LABEL => return self.error,
            ERROR_DETAILS_LABEL => return self.details.as_deref(),
            _ => {}
        }
        if let Some(extra) = self.live().iter().find(|e| e.name == name) {
            return Some(&extra.value);
        }
        let index = self.stream_index(name)?;
        if self.removed[index] {
            return None;
        }
        self.stream.iter().nth(index).map(|(_, v)| v)
    }

    /// Whether `name` is a stream label or structured metadata (Loki's "base" labels).
    fn base_has(&self, name: &str) -> bool {
        self.stream_index(name).is_some()
            || self.live().iter().any(|e| e.origin == Origin::Metadata && e.name == name)
    }

    /// Adds a label a parser extracted (`name` already sanitised): `_extracted` when a base
    /// label has the name, ignored when the name was already extracted or is empty.
    pub(super) fn add_parsed(&mut self, name: &str, value: &str) {
        if value.is_empty() || name.is_empty() || is_error_label(name) {
            return;
        }
        let suffix = if self.base_has(name) { DUPLICATE_SUFFIX } else { "" };
        if self.find_extra(name, suffix).is_none() {
            self.push(name, suffix, value, Origin::Parsed);
        }
    }

    /// Where the extracted labels end now.
    pub(super) fn mark(&self) -> Mark {
        Mark(self.live)
    }

    /// Forgets the labels added since `mark` (only [`Self::add_parsed`] may run between).
    pub(super) fn rollback(&mut self, mark: Mark) {
        self.live = self.live.min(mark.0);
    }

    /// Sets `name` to `value`, overriding any label of that name (`label_format`); an empty
    /// value removes it.
    pub(super) fn set(&mut self, name: &str, value: &str) {
        if is_error_label(name) {
            return;
        }
        self.remove_from_stream(name);
        match self.find_extra(name, "") {
            Some(i) if value.is_empty() => self.remove_extra_at(i),
            Some(i) => {
                let extra = &mut self.extra[i];
                extra.value.clear();
                extra.value.push_str(value);
                extra.origin = Origin::Formatted;
            }
            None if value.is_empty() => {}
            None => self.push(name, "", value, Origin::Formatted),
        }
    }

    fn remove_from_stream(&mut self, name: &str) {
        if let Some(i) = self.stream_index(name)
            && !self.removed[i]
        {
            self.removed[i] = true;
            self.any_removed = true;
        }
    }

    /// Removes `name`; removing `__error__` also removes `__error_details__`.
    pub(super) fn remove(&mut self, name: &str) {
        match name {
            ERROR_LABEL => {
                self.error = None;
                self.details = None;
            }
            ERROR_DETAILS_LABEL => self.details = None,
            _ => {
                if let Some(i) = self.find_extra(name, "") {
                    self.remove_extra_at(i);
                }
                self.remove_from_stream(name);
            }
        }
    }

    /// Keeps the labels for which `keep(name, value)` holds; the error labels always stay.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        for (i, (name, value)) in self.stream.iter().enumerate() {
            if !self.removed[i] && !keep(name, value) {
                self.removed[i] = true;
                self.any_removed = true;
            }
        }
        let mut i = 0;
        while i < self.live {
            if keep(&self.extra[i].name, &self.extra[i].value) {
                i += 1;
            } else {
                self.remove_extra_at(i);
            }
        }
    }

    pub(super) fn set_error(&mut self, error: &'static str, details: String) {
        self.error = Some(error);
        self.details = if details.is_empty() { None } else { Some(details) };
    }

    pub(super) fn error(&self) -> Option<&'static str> {
        self.error
    }

    pub(super) fn has_error(&self) -> bool {
        self.error.is_some()
    }

    /// Every label with its value, sorted by name, without the error labels.
    pub(super) fn pairs(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::with_capacity(self.stream.len() + self.live + 2);
        for (i, pair) in self.stream.iter().enumerate() {
            if !self.removed[i] {
                out.push(pair);
            }
        }
        out.extend(self.live().iter().map(|e| (e.name.as_str(), e.value.as_str())));
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Every label with the error labels, sorted by name.
    pub(super) fn pairs_with_errors(&self) -> Vec<(&str, &str)> {
        let mut out = self.pairs();
        if let Some(error) = self.error {
            out.push((ERROR_LABEL, error));
        }
        if let Some(details) = &self.details {
            out.push((ERROR_DETAILS_LABEL, details));
        }
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// The labels as a label set, error labels included.
    pub(super) fn to_labels(&self) -> Labels {
        Labels::new(self.pairs_with_errors().into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())))
    }

    /// The metadata still among the labels, sorted by name.
    pub(super) fn visible_metadata(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .live()
            .iter()
            .filter(|e| e.origin == Origin::Metadata)
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        out.sort_unstable();
        out
    }
}

fn is_error_label(name: &str) -> bool {
    name == ERROR_LABEL || name == ERROR_DETAILS_LABEL
}

/// Makes `name` a label name as Loki's parsers do: surrounding whitespace trimmed, every
/// character but ASCII letters, digits, `_` and `:` replaced by `_`, and a leading digit
/// prefixed with `_`.
pub(super) fn sanitize_label_name(name: &str) -> Cow<'_, str> {
    let name = name.trim();
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let leading_digit = name.starts_with(|c: char| c.is_ascii_digit());
    if !leading_digit && name.chars().all(valid) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    if leading_digit {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if valid(c) { c } else { '_' }));
    Cow::Owned(out)
}
