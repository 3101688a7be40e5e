//! Cancellation against the sends in flight, with no store read on the send path: a
//! message can be canceled until its send starts, never while it runs, so a message shown
//! CANCELED was never handed to its provider.

use std::collections::HashMap;
use std::sync::Mutex;

enum Mark {
    /// Sends under way: a retry or a fallback may start before the attempt that
    /// submitted it has finished.
    Sending(u32),
    /// The store is being asked; a send that comes due meanwhile waits for the answer.
    Canceling,
    /// Stored as CANCELED: its job is dropped when it comes due.
    Canceled,
}

/// What a send about to start should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    Go,
    /// A cancellation is being decided: try again shortly.
    Later,
    /// Canceled: do not send.
    Drop,
}

#[derive(Default)]
pub struct Marks(Mutex<HashMap<String, Mark>>);

impl Marks {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Mark>) -> R) -> R {
        // A poisoned map is still consistent: every change is a single insert or remove.
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut map)
    }

    pub fn start(&self, id: &str) -> Start {
        self.with(|map| match map.get_mut(id) {
            Some(Mark::Canceling) => Start::Later,
            Some(Mark::Sending(n)) => {
                *n += 1;
                Start::Go
            }
            Some(Mark::Canceled) => {
                map.remove(id);
                Start::Drop
            }
            None => {
                map.insert(id.to_string(), Mark::Sending(1));
                Start::Go
            }
        })
    }

    pub fn finish(&self, id: &str) {
        self.with(|map| match map.get_mut(id) {
            Some(Mark::Sending(n)) if *n > 1 => *n -= 1,
            _ => {
                map.remove(id);
            }
        });
    }

    /// Before the store cancels: false while a send of `id` runs.
    pub fn begin_cancel(&self, id: &str) -> bool {
        self.with(|map| match map.get(id) {
            Some(Mark::Sending(_)) => false,
            _ => {
                map.insert(id.to_string(), Mark::Canceling);
                true
            }
        })
    }

    /// After the store answered.
    pub fn end_cancel(&self, id: &str, canceled: bool) {
        self.with(|map| {
            if canceled {
                map.insert(id.to_string(), Mark::Canceled);
            } else {
                map.remove(id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{Marks, Start};

    #[test]
    fn a_send_and_a_cancellation_exclude_each_other() {
        let marks = Marks::default();
        assert_eq!(marks.start("a"), Start::Go);
        assert!(!marks.begin_cancel("a"), "no cancel while sending");
        marks.finish("a");

        assert!(marks.begin_cancel("b"));
        assert_eq!(marks.start("b"), Start::Later, "the send waits for the store's answer");
        marks.end_cancel("b", true);
        assert_eq!(marks.start("b"), Start::Drop);
        assert_eq!(marks.start("b"), Start::Go, "the mark is spent once the job is dropped");
        marks.finish("b");

        assert!(marks.begin_cancel("c"));
        marks.end_cancel("c", false);
        assert_eq!(marks.start("c"), Start::Go, "a refused cancellation lets it send");
        marks.finish("c");

        // A fallback starts before the attempt that submitted it has finished.
        assert_eq!(marks.start("d"), Start::Go);
        assert_eq!(marks.start("d"), Start::Go);
        marks.finish("d");
        assert!(!marks.begin_cancel("d"), "the fallback's send is still under way");
        marks.finish("d");
        assert!(marks.begin_cancel("d"));
    }
}
