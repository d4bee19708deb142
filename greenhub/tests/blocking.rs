//! The blocking pool: `unblock` runs a closure on other OS threads and parks
//! only its caller; the hub keeps running everyone else.
//!
//! The pool is one per process and some tests change its settings or count
//! its threads, so every test here takes `serial()` first.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use greenhub::blocking::{self, unblock};
use greenhub::{run, sleep, spawn, with_timeout, yield_now, JoinError};

/// Bound on every wait in this file.
const BOUND: Duration = Duration::from_secs(5);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits (on this plain thread) until `cond` holds, failing after `BOUND`.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Counts running jobs and remembers the most at once.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Concurrency {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Adds one to its counter when dropped.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn returns_the_value() {
    let _serial = serial();
    let v = run(|| {
        let here = std::thread::current().id();
        unblock(move || (std::thread::current().id() != here, vec![1, 2, 3]))
    })
    .unwrap();
    assert_eq!(v, (true, vec![1, 2, 3]), "ran on another OS thread");
}

#[test]
fn a_panic_is_resumed_in_the_caller() {
    let _serial = serial();
    run(|| {
        let r = catch_unwind(AssertUnwindSafe(|| {
            unblock(|| -> u32 { panic!("boom from the pool") })
        }));
        let payload = r.expect_err("the panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom from the pool"));
        // The pool survives it.
        assert_eq!(unblock(|| 5), 5);
    })
    .unwrap();
}

#[test]
fn a_panicking_green_thread_reports_the_job_panic_to_join() {
    let _serial = serial();
    run(|| {
        let h = spawn(|| unblock(|| -> () { panic!("job failed") }));
        let err = with_timeout(BOUND, || h.join()).unwrap().unwrap_err();
        assert!(err.is_panic());
    })
    .unwrap();
}

#[test]
fn jobs_run_concurrently() {
    let _serial = serial();
    let count = Arc::new(Concurrency::default());
    let start = Instant::now();
    let c = count.clone();
    run(move || {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let c = c.clone();
                spawn(move || {
                    unblock(move || {
                        c.enter();
                        std::thread::sleep(Duration::from_millis(50));
                        c.leave();
                    })
                })
            })
            .collect();
        for h in handles {
            with_timeout(BOUND, || h.join()).unwrap().unwrap();
        }
    })
    .unwrap();
    let max = count.max.load(Ordering::SeqCst);
    assert!(max >= 8, "at most {max} jobs ran at once");
    assert!(max <= blocking::max_threads(), "{max} exceeds the bound");
    assert!(
        start.elapsed() < Duration::from_millis(100 * 50 / 2),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn the_hub_runs_other_green_threads_meanwhile() {
    let _serial = serial();
    run(|| {
        let ticks = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let t = ticks.clone();
        let ticker = spawn(move || loop {
            sleep(Duration::from_millis(5));
            t.set(t.get() + 1);
        });
        unblock(|| std::thread::sleep(Duration::from_millis(200)));
        // 200 ms of 5 ms ticks: 40 if the hub never stalled; allow slow CI.
        assert!(ticks.get() >= 10, "only {} ticks", ticks.get());
        ticker.kill();
    })
    .unwrap();
}

#[test]
fn killing_the_waiter_leaves_the_job_running_and_drops_its_result() {
    let _serial = serial();
    let finished = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (f, d) = (finished.clone(), dropped.clone());
    run(move || {
        let release = Arc::new(AtomicBool::new(false));
        let r = release.clone();
        let after = std::rc::Rc::new(std::cell::Cell::new(false));
        let a = after.clone();
        let h = spawn(move || {
            let result = unblock(move || {
                while !r.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                f.store(true, Ordering::SeqCst);
                DropCount(d)
            });
            a.set(true);
            drop(result);
        });
        yield_now(); // it submits its job and parks
        h.kill();
        let start = Instant::now();
        assert!(matches!(
            with_timeout(BOUND, || h.join()).unwrap(),
            Err(JoinError::Killed)
        ));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the kill waited for the job"
        );
        assert!(!after.get(), "code after unblock never ran");
        release.store(true, Ordering::SeqCst);
    })
    .unwrap();
    eventually("the job to finish and drop its result", || {
        dropped.load(Ordering::SeqCst) == 1
    });
    assert!(finished.load(Ordering::SeqCst));
}

#[test]
fn with_timeout_cuts_the_wait_short() {
    let _serial = serial();
    run(|| {
        let start = Instant::now();
        let r = with_timeout(Duration::from_millis(20), || {
            unblock(|| std::thread::sleep(Duration::from_millis(300)))
        });
        assert!(r.is_err());
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
    })
    .unwrap();
}

#[test]
fn outside_a_green_thread_it_runs_inline() {
    let _serial = serial();
    let here = std::thread::current().id();
    let before = blocking::stats().submitted;
    assert_eq!(unblock(move || std::thread::current().id()), here);
    assert_eq!(blocking::stats().submitted, before, "no pool job");
}

/// Restores the pool's defaults when a test that changed them ends.
struct Defaults;

impl Drop for Defaults {
    fn drop(&mut self) {
        blocking::set_max_threads(64);
        blocking::set_idle_timeout(Duration::from_secs(10));
    }
}

/// Runs `n` jobs from `n` green threads spawned in order; returns the order
/// in which the jobs started and the most that ran at once.
fn run_jobs(n: usize, each: Duration) -> (Vec<usize>, usize) {
    let count = Arc::new(Concurrency::default());
    let order = Arc::new(Mutex::new(Vec::new()));
    let (c, o) = (count.clone(), order.clone());
    run(move || {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (c, o) = (c.clone(), o.clone());
                spawn(move || {
                    unblock(move || {
                        c.enter();
                        o.lock().unwrap().push(i);
                        std::thread::sleep(each);
                        c.leave();
                    })
                })
            })
            .collect();
        for h in handles {
            with_timeout(BOUND, || h.join()).unwrap().unwrap();
        }
    })
    .unwrap();
    let order = order.lock().unwrap().clone();
    (order, count.max.load(Ordering::SeqCst))
}

#[test]
fn jobs_queue_in_fifo_order_beyond_the_bound() {
    let _serial = serial();
    let _defaults = Defaults;
    // Leave several idle threads behind, then lower the bound below them.
    let (_, max) = run_jobs(8, Duration::from_millis(20));
    assert!(max > 1);
    blocking::set_max_threads(1);
    assert_eq!(blocking::max_threads(), 1);
    assert!(
        blocking::stats().threads <= 1,
        "idle threads above the bound end"
    );
    let (order, max) = run_jobs(8, Duration::from_millis(5));
    assert_eq!(max, 1);
    assert_eq!(order, (0..8).collect::<Vec<_>>(), "FIFO");
    // Raising the bound lets them run together again.
    blocking::set_max_threads(4);
    let (_, max) = run_jobs(8, Duration::from_millis(20));
    assert!((2..=4).contains(&max), "{max} at once");
}

#[test]
fn idle_threads_exit() {
    let _serial = serial();
    let _defaults = Defaults;
    blocking::set_idle_timeout(Duration::from_millis(100));
    run(|| {
        let handles: Vec<_> = (0..4)
            .map(|_| spawn(|| unblock(|| std::thread::sleep(Duration::from_millis(20)))))
            .collect();
        for h in handles {
            with_timeout(BOUND, || h.join()).unwrap().unwrap();
        }
    })
    .unwrap();
    assert!(blocking::stats().threads >= 1);
    let start = Instant::now();
    eventually("the pool to have no thread", || {
        blocking::stats().threads == 0
    });
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "left before the timeout"
    );
    let stats = blocking::stats();
    assert_eq!((stats.idle, stats.queued), (0, 0));
    // And it starts again on demand.
    assert_eq!(run(|| unblock(|| 7)).unwrap(), 7);
}

#[test]
fn hubs_on_several_os_threads_share_the_pool() {
    let _serial = serial();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                run(move || {
                    let handles: Vec<_> = (0..10u64)
                        .map(|i| spawn(move || unblock(move || t * 100 + i)))
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
                })
                .unwrap()
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, (0..4u64).map(|t| t * 1000 + 45).sum());
}
