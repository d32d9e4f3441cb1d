use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

/// The value used in place of a label value once a [`LabelCap`] is full.
pub const OTHER_LABEL_VALUE: &str = "_other";

/// Keeps a self-telemetry label (such as the tenant) bounded: the first `max` distinct values are
/// used as they are, every later one is reported as [`OTHER_LABEL_VALUE`].
#[derive(Clone)]
pub struct LabelCap {
    seen: Arc<Mutex<HashSet<String>>>,
    max: usize,
}

impl LabelCap {
    pub fn new(max: usize) -> LabelCap {
        LabelCap { seen: Arc::default(), max }
    }

    pub fn value(&self, v: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(v) {
            return v.to_string();
        }
        if seen.len() < self.max {
            seen.insert(v.to_string());
            return v.to_string();
        }
        OTHER_LABEL_VALUE.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_cap_folds_values_past_the_limit_into_other() {
        let cap = LabelCap::new(2);
        assert_eq!(cap.value("a"), "a");
        assert_eq!(cap.value("b"), "b");
        assert_eq!(cap.value("c"), OTHER_LABEL_VALUE);
        assert_eq!(cap.value("a"), "a");
    }
}
