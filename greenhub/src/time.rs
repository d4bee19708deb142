//! Time: [`sleep`], [`yield_now`], [`spawn_later`] and [`with_timeout`].

use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::hub::{self, TimedOut};
use crate::task::{spawn, JoinHandle};

/// Parks the current green thread for at least `duration` (never less; timers
/// have a resolution of 1 ms, rounded up). `sleep(Duration::ZERO)` is
/// [`yield_now`], as in gevent.
///
/// # Panics
/// Outside a green thread. Unwinds if the green thread is killed meanwhile.
#[track_caller]
pub fn sleep(duration: Duration) {
    if duration.is_zero() {
        return yield_now();
    }
    // Longer than an Instant can express (None): for ever (a kill still
    // ends it). A tail call: no frame of `sleep` stays while it sleeps.
    let deadline = hub::deadline_after(duration);
    hub::expect_hub("sleep", |hub| hub.sleep_current(deadline));
}

/// Parks the current green thread until `deadline` has passed.
///
/// # Panics
/// Outside a green thread.
#[track_caller]
pub fn sleep_until(deadline: Instant) {
    hub::expect_hub("sleep_until", |hub| hub.sleep_current(Some(deadline)));
}

/// Lets every other ready green thread run once before the caller goes on.
///
/// # Panics
/// Outside a green thread.
#[track_caller]
pub fn yield_now() {
    hub::expect_hub("yield_now", |hub| hub.yield_current());
}

/// Spawns `f` to start after `delay`. Killing it before then means `f` never runs.
#[track_caller]
pub fn spawn_later<F, T>(delay: Duration, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    spawn(move || {
        sleep(delay);
        f()
    })
}

/// The error of [`with_timeout`]: the time ran out first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Runs `f`, but cuts it short if it is still running after `duration`: the
/// green thread unwinds from the blocking call it is parked in (destructors
/// run) and `with_timeout` returns `Err(Elapsed)`. Code that never blocks is
/// never interrupted (scheduling is cooperative).
///
/// Timeouts nest: when an outer one expires first, the outer `with_timeout`
/// returns `Elapsed` and the inner one only sees the unwind pass through.
///
/// # Panics
/// Outside a green thread. Panics of `f` pass through unchanged.
#[track_caller]
pub fn with_timeout<T>(duration: Duration, f: impl FnOnce() -> T) -> Result<T, Elapsed> {
    let Some(deadline) = hub::deadline_after(duration) else {
        // Beyond what an Instant can hold: no timeout at all.
        return Ok(f());
    };
    let (id, timer) = hub::expect_hub("with_timeout", |hub| hub.add_timeout(deadline));
    struct Scope(u64, crate::hub::timer::TimerKey);
    impl Drop for Scope {
        fn drop(&mut self) {
            hub::with_hub(|hub| hub.remove_timeout(self.0, self.1));
        }
    }
    let scope = Scope(id, timer);
    let result = catch_unwind(AssertUnwindSafe(f));
    drop(scope);
    match result {
        Ok(value) => Ok(value),
        Err(payload) => match payload.downcast_ref::<TimedOut>() {
            Some(TimedOut(fired)) if *fired == id => Err(Elapsed(())),
            _ => resume_unwind(payload),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    /// A wake that comes before the deadline (a waker left from an earlier
    /// wait, say) does not end a sleep: it parks again until its timer.
    fn early_wakes_do_not_end_a_sleep(builder: crate::HubBuilder) {
        builder
            .run(|| {
                let waker = Rc::new(RefCell::new(None));
                let theirs = waker.clone();
                let sleeper = crate::spawn(move || {
                    *theirs.borrow_mut() = crate::hub::current_waker();
                    let start = Instant::now();
                    super::sleep(Duration::from_millis(30));
                    start.elapsed()
                });
                crate::yield_now(); // the sleeper parks
                for _ in 0..3 {
                    waker.borrow().as_ref().expect("a waker").wake_by_ref();
                    crate::yield_now();
                }
                let slept = sleeper.join().unwrap();
                assert!(slept >= Duration::from_millis(30), "woke after {slept:?}");
            })
            .unwrap();
    }

    #[test]
    fn early_wakes_do_not_end_a_sleep_dedicated() {
        early_wakes_do_not_end_a_sleep(crate::HubBuilder::new());
    }

    #[test]
    fn early_wakes_do_not_end_a_sleep_compact() {
        // SAFETY: the test lends no stack memory to other threads or the
        // kernel.
        early_wakes_do_not_end_a_sleep(unsafe {
            crate::HubBuilder::new().compact_stacks(1, 64 * 1024)
        });
    }
}
