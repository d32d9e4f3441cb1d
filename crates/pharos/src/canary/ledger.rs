//! What the canary wrote and what it has seen of it since: one ledger per signal.
//!
//! An item enters the ledger when Pharos acknowledged its write. It is *pending* until a query
//! first shows it: then it is *found* (with the time from acknowledgement to visibility), or
//! *wrong* if what came back differs from what was written. A pending item still absent after
//! `late_after` is counted late (once), and so is one first seen after `late_after` without an
//! answer in between that counted it (e.g. while the queries failed); after `missing_after` it is
//! *missing*. Found items stay
//! in the ledger for `recheck_window` and are looked for again now and then: one that is gone
//! (absent from two answers in a row) is missing too, one that changed is wrong. Missing and
//! wrong are final. Memory is bounded: at most `max_pending` pending items (the writer skips
//! while the ledger is full) and at most `max_recheck` checked ones (the oldest are forgotten).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// How the ledger judges items.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub check_delay: Duration,
    pub late_after: Duration,
    pub missing_after: Duration,
    pub recheck_window: Duration,
    pub max_pending: usize,
    pub max_recheck: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending {
        late: bool,
    },
    /// Seen as written; `absences` counts answers in a row without it since.
    Found {
        absences: u8,
    },
    Missing,
    Wrong,
}

#[derive(Debug, Clone)]
struct Item {
    seq: u64,
    ts_ns: i64,
    acked: Instant,
    state: State,
}

/// An item to look for: its sequence number and the timestamp it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub seq: u64,
    pub ts_ns: i64,
}

/// What a query answer says about one probed item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// There, as written.
    Intact,
    /// There, but different: what differs.
    Different(String),
    /// Not in the answer.
    Absent,
}

/// What changed for one item after an answer; the caller counts and logs these.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// First seen as written. `late`: first seen at or after `late_after` and not counted late
    /// before (no answer without it came in time): count it late too.
    Found {
        seq: u64,
        latency: Duration,
        late: bool,
    },
    Late {
        seq: u64,
        age: Duration,
    },
    Missing {
        seq: u64,
        ts_ns: i64,
        age: Duration,
        was_found: bool,
    },
    Wrong {
        seq: u64,
        ts_ns: i64,
        what: String,
    },
}

/// Counts of items by state, now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Census {
    pub pending: usize,
    pub retained: usize,
}

#[derive(Debug)]
pub(crate) struct Ledger {
    items: VecDeque<Item>,
    limits: Limits,
    pending: usize,
}

impl Ledger {
    pub(crate) fn new(limits: Limits) -> Ledger {
        Ledger { items: VecDeque::new(), limits, pending: 0 }
    }

    /// Whether another pending item fits.
    pub(crate) fn has_room(&self) -> bool {
        self.pending < self.limits.max_pending
    }

    /// An acknowledged write. Sequence numbers must grow.
    pub(crate) fn record(&mut self, seq: u64, ts_ns: i64, acked: Instant) {
        debug_assert!(self.items.back().is_none_or(|i| i.seq < seq), "sequence numbers grow");
        self.items.push_back(Item { seq, ts_ns, acked, state: State::Pending { late: false } });
        self.pending += 1;
    }

    /// Pending items written at least `check_delay` ago, oldest first, at most `max`.
    pub(crate) fn due(&self, now: Instant, max: usize) -> Vec<Probe> {
        self.items
            .iter()
            .filter(|i| {
                matches!(i.state, State::Pending { .. })
                    && now.saturating_duration_since(i.acked) >= self.limits.check_delay
            })
            .take(max)
            .map(|i| Probe { seq: i.seq, ts_ns: i.ts_ns })
            .collect()
    }

    /// Found items (to look for again), oldest first.
    pub(crate) fn found(&self) -> Vec<Probe> {
        self.items
            .iter()
            .filter(|i| matches!(i.state, State::Found { .. }))
            .map(|i| Probe { seq: i.seq, ts_ns: i.ts_ns })
            .collect()
    }

    /// Applies what an answer said about `seq`. Unknown or forgotten items are ignored.
    pub(crate) fn observe(&mut self, seq: u64, seen: Seen, now: Instant) -> Option<Event> {
        let limits = self.limits;
        let index = self.items.binary_search_by_key(&seq, |i| i.seq).ok()?;
        let item = &mut self.items[index];
        let age = now.saturating_duration_since(item.acked);
        let (state, event) = match (item.state, seen) {
            (State::Pending { late }, Seen::Intact) => {
                let late = !late && age >= limits.late_after;
                (State::Found { absences: 0 }, Some(Event::Found { seq, latency: age, late }))
            }
            (State::Pending { .. } | State::Found { .. }, Seen::Different(what)) => {
                (State::Wrong, Some(Event::Wrong { seq, ts_ns: item.ts_ns, what }))
            }
            (State::Pending { .. }, Seen::Absent) if age >= limits.missing_after => {
                (State::Missing, Some(Event::Missing { seq, ts_ns: item.ts_ns, age, was_found: false }))
            }
            (State::Pending { late: false }, Seen::Absent) if age >= limits.late_after => {
                (State::Pending { late: true }, Some(Event::Late { seq, age }))
            }
            (State::Found { .. }, Seen::Intact) => (State::Found { absences: 0 }, None),
            // One answer without a found item may be a race with a block being published; two in
            // a row is a loss.
            (State::Found { absences }, Seen::Absent) if absences >= 1 => {
                (State::Missing, Some(Event::Missing { seq, ts_ns: item.ts_ns, age, was_found: true }))
            }
            (State::Found { absences }, Seen::Absent) => (State::Found { absences: absences + 1 }, None),
            (state, _) => (state, None),
        };
        if matches!(item.state, State::Pending { .. }) && !matches!(state, State::Pending { .. }) {
            self.pending -= 1;
        }
        item.state = state;
        event
    }

    /// Forgets checked items older than the recheck window, and the oldest checked items beyond
    /// `max_recheck`. Pending items are never forgotten.
    pub(crate) fn expire(&mut self, now: Instant) {
        let mut checked = self.items.len() - self.pending;
        self.items.retain(|i| {
            if matches!(i.state, State::Pending { .. }) {
                return true;
            }
            let keep = checked <= self.limits.max_recheck
                && now.saturating_duration_since(i.acked) < self.limits.recheck_window;
            if !keep {
                checked -= 1;
            }
            keep
        });
    }

    pub(crate) fn census(&self) -> Census {
        Census { pending: self.pending, retained: self.items.len() }
    }

    /// Pending items (for the last word at exit).
    pub(crate) fn pending_items(&self) -> Vec<Probe> {
        self.items
            .iter()
            .filter(|i| matches!(i.state, State::Pending { .. }))
            .map(|i| Probe { seq: i.seq, ts_ns: i.ts_ns })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            check_delay: Duration::from_secs(1),
            late_after: Duration::from_secs(5),
            missing_after: Duration::from_secs(10),
            recheck_window: Duration::from_secs(60),
            max_pending: 3,
            max_recheck: 2,
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ledger_item_is_due_only_after_the_check_delay() {
        let t0 = Instant::now();
        let mut l = Ledger::new(limits());
        l.record(1, 10, t0);
        assert!(l.due(t0, 10).is_empty());
        assert_eq!(l.due(t0 + S, 10), vec![Probe { seq: 1, ts_ns: 10 }]);
    }

    #[test]
    fn ledger_absent_item_is_late_once_then_missing() {
        let t0 = Instant::now();
        let mut l = Ledger::new(limits());
        l.record(1, 10, t0);
        assert_eq!(l.observe(1, Seen::Absent, t0 + 2 * S), None);
        assert_eq!(l.observe(1, Seen::Absent, t0 + 6 * S), Some(Event::Late { seq: 1, age: 6 * S }));
        assert_eq!(l.observe(1, Seen::Absent, t0 + 7 * S), None, "late is counted once");
        assert_eq!(
            l.observe(1, Seen::Absent, t0 + 10 * S),
            Some(Event::Missing { seq: 1, ts_ns: 10, age: 10 * S, was_found: false })
        );
        assert_eq!(l.census().pending, 0);
        assert_eq!(l.observe(1, Seen::Intact, t0 + 11 * S), None, "missing is final");
    }

    #[test]
    fn ledger_item_first_seen_after_late_after_is_late_once() {
        let t0 = Instant::now();
        let mut l = Ledger::new(limits());
        l.record(1, 10, t0);
        l.record(2, 20, t0);
        // Item 1: no answer before late_after (the queries failed), then found: late as well.
        assert_eq!(
            l.observe(1, Seen::Intact, t0 + 6 * S),
            Some(Event::Found { seq: 1, latency: 6 * S, late: true })
        );
        // Item 2: counted late by an absent answer already; found later, not late a second time.
        assert_eq!(l.observe(2, Seen::Absent, t0 + 5 * S), Some(Event::Late { seq: 2, age: 5 * S }));
        assert_eq!(
            l.observe(2, Seen::Intact, t0 + 7 * S),
            Some(Event::Found { seq: 2, latency: 7 * S, late: false })
        );
        assert_eq!(l.census().pending, 0);
    }

    #[test]
    fn ledger_found_item_reports_latency_and_is_lost_after_two_absences() {
        let t0 = Instant::now();
        let mut l = Ledger::new(limits());
        l.record(1, 10, t0);
        assert_eq!(
            l.observe(1, Seen::Intact, t0 + 2 * S),
            Some(Event::Found { seq: 1, latency: 2 * S, late: false })
        );
        assert_eq!(l.found(), vec![Probe { seq: 1, ts_ns: 10 }]);
        assert_eq!(l.observe(1, Seen::Absent, t0 + 3 * S), None);
        assert_eq!(l.observe(1, Seen::Intact, t0 + 4 * S), None, "back: the absence was a race");
        assert_eq!(l.observe(1, Seen::Absent, t0 + 5 * S), None);
        assert_eq!(
            l.observe(1, Seen::Absent, t0 + 6 * S),
            Some(Event::Missing { seq: 1, ts_ns: 10, age: 6 * S, was_found: true })
        );
    }

    #[test]
    fn ledger_different_content_is_wrong_whether_pending_or_found() {
        let t0 = Instant::now();
        let mut l = Ledger::new(limits());
        l.record(1, 10, t0);
        l.record(2, 20, t0);
        let e = l.observe(1, Seen::Different("checksum".into()), t0 + S);
        assert_eq!(e, Some(Event::Wrong { seq: 1, ts_ns: 10, what: "checksum".into() }));
        l.observe(2, Seen::Intact, t0 + S);
        assert!(matches!(l.observe(2, Seen::Different("x".into()), t0 + 2 * S), Some(Event::Wrong { .. })));
        assert_eq!(l.census().pending, 0);
    }

    #[test]
    fn ledger_is_full_at_max_pending_and_forgets_old_checked_items() {
        let t0 = Instant::now();
        let mut l = Ledger::new(limits());
        for seq in 1..=3 {
            l.record(seq, seq as i64, t0);
        }
        assert!(!l.has_room());
        for seq in 1..=3 {
            l.observe(seq, Seen::Intact, t0 + S);
        }
        assert!(l.has_room());
        l.record(4, 4, t0 + S);
        l.expire(t0 + S);
        assert_eq!(l.census(), Census { pending: 1, retained: 3 }, "two checked kept, the oldest forgotten");
        assert_eq!(l.found().iter().map(|p| p.seq).collect::<Vec<_>>(), vec![2, 3]);
        l.expire(t0 + 61 * S);
        assert_eq!(l.census(), Census { pending: 1, retained: 1 }, "past the window: forgotten");
        assert_eq!(l.pending_items(), vec![Probe { seq: 4, ts_ns: 4 }]);
    }
}
