//! How a hub ends: the deadlock check (nothing can ever wake anyone) and
//! the shutdown that unwinds the green threads left when main returns.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{describe, other_threads_exist, warn, Header, Hub, REMOTE_RECHECK};

impl Hub {
    /// When nothing local can make progress: the list of parked green threads
    /// if nothing can ever wake them, None if another OS thread might.
    pub(super) fn deadlock_report(&self) -> Option<Vec<crate::ParkedThread>> {
        let tasks = self.tasks.borrow();
        if tasks.iter().any(|(_, t)| t.wait.is_shared()) && other_threads_exist() {
            return None;
        }
        // A thread may have woken someone and exited since the inbox was
        // drained: that wake is still pending, so this is no deadlock.
        if self.shared.pending.load(Ordering::SeqCst) {
            return None;
        }
        Some(
            tasks
                .iter()
                .map(|(_, t)| crate::ParkedThread {
                    id: crate::GreenId(t.header.id),
                    name: t.header.name.as_deref().map(str::to_owned),
                    waiting_on: t.wait.to_string(),
                })
                .collect(),
        )
    }

    /// After main: kills every green thread left and lets them unwind. Returns
    /// false if some could not finish (they are then leaked, not dropped).
    pub(super) fn shutdown(&self) -> bool {
        loop {
            let headers: Vec<Arc<Header>> = self
                .tasks
                .borrow()
                .iter()
                .map(|(_, t)| t.header.clone())
                .collect();
            if headers.is_empty() {
                return true;
            }
            for header in &headers {
                self.kill(header);
            }
            loop {
                let next = self.run_queue.borrow_mut().pop_front();
                let Some(key) = next else { break };
                self.resume(key);
            }
            self.drain_inbox();
            let now = Instant::now();
            self.expire_timers(now);
            if self.tasks.borrow().is_empty() {
                return true;
            }
            if self.run_queue.borrow().is_empty() {
                let next_timer = self.timers.borrow().next_deadline();
                match next_timer {
                    Some(deadline) => self.poll(Some(deadline.saturating_duration_since(now))),
                    // Only another OS thread could still end a wait, and only
                    // a wait on something it can reach (as in deadlock_report).
                    None if self.tasks.borrow().iter().any(|(_, t)| t.wait.is_shared())
                        && other_threads_exist() =>
                    {
                        self.poll(Some(REMOTE_RECHECK))
                    }
                    None => return false,
                }
            }
        }
    }

    /// Forgets green threads that could not unwind: their stacks stay mapped
    /// and their destructors never run (dropping a suspended corosensei
    /// coroutine would force an unwind that aborts if a destructor parks).
    pub(super) fn leak_remaining(&self) {
        let mut tasks = self.tasks.borrow_mut();
        let names: Vec<String> = tasks
            .iter()
            .map(|(_, t)| {
                format!(
                    "{} ({})",
                    describe(t.header.id, t.header.name.as_deref()),
                    t.wait
                )
            })
            .collect();
        warn(format_args!(
            "greenhub: {} green thread(s) could not be unwound at shutdown and were leaked: {}",
            names.len(),
            names.join(", ")
        ));
        for task in tasks.drain() {
            std::mem::forget(task);
        }
    }
}
