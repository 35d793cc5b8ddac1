//! Whether the threads a [`crate::Database`] depends on (the batching
//! writers, the cache's loader) still run: `/readyz` answers 503 once one
//! has died.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts the threads started and those still running.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    started: AtomicUsize,
    running: Arc<AtomicUsize>,
}

impl Liveness {
    /// Counts one more thread; the thread keeps the guard for as long as it
    /// runs (a thread that cannot be spawned drops it at once).
    pub(crate) fn start(&self) -> Alive {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.running.fetch_add(1, Ordering::AcqRel);
        Alive(self.running.clone())
    }

    /// Whether every thread started still runs (and at least one started).
    pub(crate) fn all_alive(&self) -> bool {
        let started = self.started.load(Ordering::Acquire);
        started > 0 && self.running.load(Ordering::Acquire) == started
    }
}

/// Held by a running thread; dropped when it ends, panicking or not.
pub(crate) struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_ends_makes_the_set_not_alive() {
        let liveness = Liveness::default();
        assert!(!liveness.all_alive(), "nothing started");
        let a = liveness.start();
        let b = liveness.start();
        assert!(liveness.all_alive());
        let handle = std::thread::spawn(move || {
            let _b = b;
            panic!("a dying thread");
        });
        assert!(handle.join().is_err());
        assert!(!liveness.all_alive(), "one of two died");
        drop(a);
        assert!(!liveness.all_alive());
    }
}
