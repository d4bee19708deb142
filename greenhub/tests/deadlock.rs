//! Deadlock detection: when the main green thread waits and nothing can ever
//! wake anything, `run` returns `Error::Deadlock` naming who waits on what.
//!
//! An `Event` or `AsyncResult` could be set by another OS thread, so a wait on
//! one is only called a deadlock when the process has no other OS thread. This
//! file therefore runs without libtest's harness (`harness = false`): `main`
//! runs each scenario on the process's only thread, prints `name ... ok` or
//! `name ... FAILED: why`, ends with `N passed, M failed`, and exits non-zero
//! on failure. The one scenario that starts a second OS thread runs last but
//! one; the last checks that detection works again once that thread is gone.
//!
//! A scenario that fails to detect a deadlock would hang: `alarm(2)` kills the
//! process instead (a watchdog thread would itself defeat the detection).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use greenhub::sync::{AsyncResult, Event};
use greenhub::{current, run, sleep, spawn, Builder, Error, JoinHandle, ParkedThread};

/// Adds one to its counter when dropped.
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

type Outcome = Result<(), String>;
/// A named check, run on the process's only OS thread.
type Scenario = (&'static str, fn() -> Outcome);

/// Fails the scenario with a message unless `cond` holds.
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// The parked green threads of a deadlock, or why there are none.
fn deadlock<T: std::fmt::Debug>(
    r: Result<T, Error>,
) -> Result<(Vec<ParkedThread>, String), String> {
    match r {
        Err(e @ Error::Deadlock(_)) => {
            let text = e.to_string();
            let Error::Deadlock(parked) = e else {
                unreachable!()
            };
            Ok((parked, text))
        }
        other => Err(format!("expected Err(Deadlock), got {other:?}")),
    }
}

fn event_wait_with_nothing_to_set_it() -> Outcome {
    let main_id = Rc::new(Cell::new(0));
    let m = main_id.clone();
    let (parked, text) = deadlock(run(move || {
        m.set(current().id().as_u64());
        Event::new().wait();
    }))?;
    check!(parked.len() == 1, "one parked green thread: {parked:?}");
    let p = &parked[0];
    check!(p.id.as_u64() == main_id.get(), "it is main: {p:?}");
    check!(p.name.as_deref() == Some("main"), "named main: {p:?}");
    check!(p.waiting_on == "Event::wait", "waits on Event::wait: {p:?}");
    let line = format!("green thread {} 'main' waits on Event::wait", main_id.get());
    check!(text.contains(&line), "Display names it: {text}");
    check!(text.starts_with("deadlock"), "Display: {text}");
    Ok(())
}

fn async_result_get_with_nothing_to_set_it() -> Outcome {
    let (parked, text) = deadlock(run(|| AsyncResult::<u8>::new().get()))?;
    check!(parked.len() == 1, "{parked:?}");
    check!(parked[0].waiting_on == "AsyncResult::get", "{parked:?}");
    check!(text.contains("'main' waits on AsyncResult::get"), "{text}");
    Ok(())
}

/// Every primitive of `sync` names itself in the report: a green thread
/// blocked on each of them, with nothing left that could wake any.
fn every_primitive_names_itself() -> Outcome {
    use greenhub::sync::{Channel, Condvar, Mutex, Queue, RwLock, Semaphore};
    let (parked, text) = deadlock(run(|| {
        let mutex = Rc::new(Mutex::new(0));
        let rw = Rc::new(RwLock::new(0));
        let held = (mutex.clone(), rw.clone());
        // Hold the locks in a green thread that then waits for ever.
        let holder = greenhub::Builder::new()
            .name("holder")
            .spawn(move || {
                let _m = held.0.lock();
                let _w = held.1.write();
                Queue::<u8>::new().get().ok();
            })
            .unwrap();
        greenhub::yield_now();
        let waiters = [
            greenhub::spawn(move || drop(mutex.lock())),
            greenhub::spawn(move || drop(rw.read())),
            greenhub::spawn(|| Semaphore::new(0).acquire()),
            greenhub::spawn(|| Channel::<u8>::new().put(1).ok().unwrap_or(())),
            greenhub::spawn(|| {
                let m = Mutex::new(());
                let c = Condvar::new();
                drop(c.wait(m.lock()));
            }),
        ];
        greenhub::join_all(waiters);
        drop(holder);
    }))?;
    for what in [
        "Queue::get",
        "Mutex::lock",
        "RwLock::read",
        "Semaphore::acquire",
        "Channel::put",
        "Condvar::wait",
    ] {
        check!(
            parked.iter().any(|p| p.waiting_on == what),
            "someone waits on {what}: {text}"
        );
    }
    check!(text.contains("'holder' waits on Queue::get"), "{text}");
    Ok(())
}

/// Idle blocking-pool threads are not "other threads" that could wake
/// anyone: after an `unblock`, a real deadlock is still reported at once
/// (not after the pool's idle timeout).
fn idle_pool_threads_do_not_hide_a_deadlock() -> Outcome {
    let started = std::time::Instant::now();
    let (parked, _text) = deadlock(run(|| {
        assert_eq!(greenhub::blocking::unblock(|| 6 * 7), 42);
        Event::new().wait();
    }))?;
    check!(parked.len() == 1, "{parked:?}");
    let took = started.elapsed();
    check!(
        took < std::time::Duration::from_secs(5),
        "reported after {took:?}, not after the idle timeout (10 s)"
    );
    Ok(())
}

/// Green threads "a" and "b" join each other; main joins "c", which waits on
/// an AsyncResult that nobody sets. (Main cannot join "a" or "b" itself: a
/// `JoinHandle` has one owner, and both are owned inside the cycle.)
fn join_cycle() -> Outcome {
    let ids = Rc::new(RefCell::new(Vec::new()));
    let i = ids.clone();
    let (parked, text) = deadlock(run(move || {
        let cell_a: Rc<RefCell<Option<JoinHandle<()>>>> = Rc::default();
        let cell_b: Rc<RefCell<Option<JoinHandle<()>>>> = Rc::default();
        let (ca, cb) = (cell_a.clone(), cell_b.clone());
        let a = Builder::new()
            .name("a")
            .spawn(move || {
                let b = cb.borrow_mut().take().expect("b's handle");
                b.join().unwrap();
            })
            .unwrap();
        let b = Builder::new()
            .name("b")
            .spawn(move || {
                let a = ca.borrow_mut().take().expect("a's handle");
                a.join().unwrap();
            })
            .unwrap();
        let c = Builder::new()
            .name("c")
            .spawn(|| AsyncResult::<u8>::new().get())
            .unwrap();
        i.borrow_mut()
            .extend([current().id(), a.id(), b.id(), c.id()].map(|id| id.as_u64()));
        *cell_a.borrow_mut() = Some(a);
        *cell_b.borrow_mut() = Some(b);
        c.join().unwrap();
    }))?;
    let [main, a, b, c] = ids.borrow()[..] else {
        return Err(format!("ids not recorded: {ids:?}"));
    };
    check!(parked.len() == 4, "four parked: {parked:?}");
    for (id, name, waits) in [
        (main, "main", format!("JoinHandle::join (green thread {c})")),
        (a, "a", format!("JoinHandle::join (green thread {b})")),
        (b, "b", format!("JoinHandle::join (green thread {a})")),
        (c, "c", "AsyncResult::get".to_string()),
    ] {
        let found = parked.iter().find(|p| p.id.as_u64() == id);
        check!(found.is_some(), "{name} ({id}) missing from {parked:?}");
        let p = found.unwrap();
        check!(p.name.as_deref() == Some(name), "name of {id}: {p:?}");
        check!(p.waiting_on == waits, "{name} waits on {waits}: {p:?}");
        let line = format!("green thread {id} '{name}' waits on {waits}");
        check!(text.contains(&line), "Display lacks {line:?}: {text}");
    }
    Ok(())
}

fn parked_green_threads_are_unwound_after_a_deadlock() -> Outcome {
    let drops = Rc::new(Cell::new(0));
    let after = Rc::new(Cell::new(0));
    let (d, a) = (drops.clone(), after.clone());
    deadlock(run(move || {
        let ev = Rc::new(Event::new());
        for _ in 0..3 {
            let (g, e, a) = (DropCount(d.clone()), ev.clone(), a.clone());
            spawn(move || {
                let _g = g;
                e.wait();
                a.set(a.get() + 1);
            });
        }
        let _g = DropCount(d);
        ev.wait();
        a.set(a.get() + 1);
    }))?;
    check!(
        drops.get() == 4,
        "3 green threads and main dropped, got {}",
        drops.get()
    );
    check!(after.get() == 0, "no wait returned");
    Ok(())
}

fn a_pending_sleep_is_not_a_deadlock() -> Outcome {
    let r = run(|| sleep(Duration::from_millis(30)));
    check!(r.is_ok(), "main sleeping: {r:?}");
    // Main waits on an event that a sleeping green thread will set.
    let r = run(|| {
        let ev = Rc::new(Event::new());
        let e = ev.clone();
        spawn(move || {
            sleep(Duration::from_millis(30));
            e.set();
        });
        ev.wait();
        "woken"
    });
    check!(matches!(r, Ok("woken")), "main waiting on a sleeper: {r:?}");
    Ok(())
}

fn event_set_by_another_os_thread_is_not_a_deadlock() -> Outcome {
    let ev = Arc::new(Event::new());
    let e = ev.clone();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        e.set();
    });
    let r = run(move || ev.wait());
    setter
        .join()
        .map_err(|_| "setter thread panicked".to_string())?;
    check!(r.is_ok(), "{r:?}");
    Ok(())
}

fn detection_works_again_once_the_other_thread_is_gone() -> Outcome {
    // The setter thread of the previous scenario has been joined, but the
    // kernel may take a moment to reap it.
    for _ in 0..100 {
        if thread_count() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check!(thread_count() == 1, "threads: {}", thread_count());
    deadlock(run(|| Event::new().wait()))?;
    Ok(())
}

/// This process's OS threads, from /proc/self/status.
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let scenarios: [Scenario; 9] = [
        ("every_primitive_names_itself", every_primitive_names_itself),
        (
            "event_wait_with_nothing_to_set_it",
            event_wait_with_nothing_to_set_it,
        ),
        (
            "async_result_get_with_nothing_to_set_it",
            async_result_get_with_nothing_to_set_it,
        ),
        ("join_cycle", join_cycle),
        (
            "parked_green_threads_are_unwound_after_a_deadlock",
            parked_green_threads_are_unwound_after_a_deadlock,
        ),
        (
            "a_pending_sleep_is_not_a_deadlock",
            a_pending_sleep_is_not_a_deadlock,
        ),
        // Starts a second OS thread: keep it after the single-thread ones.
        (
            "event_set_by_another_os_thread_is_not_a_deadlock",
            event_set_by_another_os_thread_is_not_a_deadlock,
        ),
        (
            "detection_works_again_once_the_other_thread_is_gone",
            detection_works_again_once_the_other_thread_is_gone,
        ),
        // Leaves an idle pool thread behind: last of all.
        (
            "idle_pool_threads_do_not_hide_a_deadlock",
            idle_pool_threads_do_not_hide_a_deadlock,
        ),
    ];
    // libtest-style arguments: `--list`, `--ignored` (there are none), and
    // name filters; other flags (--nocapture, --test-threads=N, ...) are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &scenarios {
            println!("{name}: test");
        }
        return;
    }
    let only_ignored = args.iter().any(|a| a == "--ignored");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    // SAFETY: alarm(2) only arms a timer; its SIGALRM ends the process if a
    // scenario hangs (the default action), which is the point.
    unsafe { libc::alarm(60) };
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        if only_ignored
            || !(filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        {
            continue;
        }
        match std::panic::catch_unwind(scenario) {
            Ok(Ok(())) => {
                println!("{name} ... ok");
                passed += 1;
            }
            Ok(Err(why)) => {
                println!("{name} ... FAILED: {why}");
                failed += 1;
            }
            Err(_) => {
                println!("{name} ... FAILED: panicked");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
