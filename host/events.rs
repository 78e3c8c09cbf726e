//! The live view's event feed: what just happened on the ports (clients coming and going,
//! threads and children starting and ending, refusals, reloads, games), newest last.
//!
//! It is bounded twice: it keeps the last [`KEEP`] events, and each kind of event on each port
//! may add at most [`PER_SECOND`] a second; what goes over is counted and shows once a second
//! as one line ("+1,234 more connected"). A flood of clients costs the feed a counter, not a
//! line each. Nothing is recorded until the admin endpoint turns the feed on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Events kept for the page.
pub const KEEP: usize = 300;

/// Events of one kind on one port shown per second; the rest are counted.
pub const PER_SECOND: u32 = 12;

/// What an event is about, for the page to colour and filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Connected,
    Left,
    Thread,
    Child,
    Queued,
    Refused,
    Reload,
    Game,
    Drive,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Connected => "clients connected",
            Kind::Left => "clients left",
            Kind::Thread => "thread events",
            Kind::Child => "child process events",
            Kind::Queued => "queue events",
            Kind::Refused => "clients refused",
            Kind::Reload => "reload events",
            Kind::Game => "game events",
            Kind::Drive => "load events",
        }
    }
}

/// One line of the feed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    /// Increases by one per event, so a reader can ask for what it has not seen.
    pub seq: u64,
    /// Seconds since the host started.
    pub at: f64,
    pub port: Option<u16>,
    pub kind: Kind,
    pub text: String,
}

/// The feed.
#[derive(Debug)]
pub struct Events {
    on: AtomicBool,
    started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    kept: VecDeque<Event>,
    next_seq: u64,
    /// The whole second the budgets below are for.
    second: u64,
    shown: BTreeMap<(Option<u16>, Kind), u32>,
    over: BTreeMap<(Option<u16>, Kind), u64>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            on: AtomicBool::new(false),
            started: Instant::now(),
            inner: Mutex::default(),
        }
    }
}

impl Events {
    /// Starts recording (the admin endpoint is on).
    pub fn turn_on(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    /// Seconds since the host started: the clock every event's `at` is read on.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::lock::lock(&self.inner)
    }

    /// Records an event, unless its kind is over budget on its port this second; `text` is
    /// only built when the event is shown.
    pub fn push(&self, port: Option<u16>, kind: Kind, text: impl FnOnce() -> String) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let at = self.started.elapsed();
        let mut inner = self.lock();
        inner.roll(at.as_secs(), at.as_secs_f64());
        let shown = inner.shown.entry((port, kind)).or_default();
        if *shown >= PER_SECOND {
            *inner.over.entry((port, kind)).or_default() += 1;
            return;
        }
        *shown += 1;
        inner.keep(at.as_secs_f64(), port, kind, text());
    }

    /// Writes the summaries of the second that has passed, if it has; called once a second.
    pub fn tick(&self) {
        let at = self.started.elapsed();
        self.lock().roll(at.as_secs(), at.as_secs_f64());
    }

    /// The events after `seq` (all kept ones for 0), oldest first.
    pub fn after(&self, seq: u64) -> Vec<Event> {
        self.lock()
            .kept
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect()
    }
}

impl Inner {
    /// Starts a new second's budgets, writing one summary line per kind that went over.
    fn roll(&mut self, second: u64, at: f64) {
        if second == self.second {
            return;
        }
        self.second = second;
        self.shown.clear();
        for ((port, kind), n) in std::mem::take(&mut self.over) {
            self.keep(at, port, kind, format!("+{n} more {}", kind.plural()));
        }
    }

    fn keep(&mut self, at: f64, port: Option<u16>, kind: Kind, text: String) {
        self.next_seq += 1;
        self.kept.push_back(Event {
            seq: self.next_seq,
            at,
            port,
            kind,
            text,
        });
        while self.kept.len() > KEEP {
            self.kept.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_recorded_until_turned_on() {
        let events = Events::default();
        events.push(Some(1), Kind::Connected, || "a".into());
        assert!(events.after(0).is_empty());
        events.turn_on();
        events.push(Some(1), Kind::Connected, || "b".into());
        assert_eq!(events.after(0).len(), 1);
    }

    #[test]
    fn a_flood_is_summarised_and_the_feed_stays_bounded() {
        let events = Events::default();
        events.turn_on();
        let mut built = 0;
        for _ in 0..10_000 {
            events.push(Some(7), Kind::Connected, || {
                built += 1;
                "client".into()
            });
        }
        // Within one second (on a slow machine, two), the budget lets few through.
        assert!(built <= 2 * PER_SECOND, "{built} lines built");
        let mut inner = events.lock();
        let second = inner.second;
        inner.roll(second + 1, 1.0);
        drop(inner);
        let all = events.after(0);
        let summary = all.last().unwrap();
        assert!(summary.text.starts_with('+'), "{summary:?}");
        assert!(
            summary.text.ends_with("more clients connected"),
            "{summary:?}"
        );
        for n in 0..(KEEP as u64 * 2) {
            events.push(Some(n as u16), Kind::Left, || "left".into());
        }
        assert_eq!(events.after(0).len(), KEEP);
        let last = events.after(0).last().unwrap().seq;
        assert!(events.after(last).is_empty());
    }
}
