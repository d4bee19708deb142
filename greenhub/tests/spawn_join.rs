//! Spawning and joining green threads, naming them, and what `run` does with
//! the main green thread's value, its panic, and the green threads it leaves.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Once;
use std::time::Duration;

use greenhub::sync::Event;
use greenhub::{current, join_all, run, spawn, yield_now, Builder, Error, JoinError};

/// Adds one to its counter when dropped.
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// The message of a panic payload (`panic!` with a literal or a format).
fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string payload>")
}

/// Installs a panic hook that prints the message without a backtrace: the
/// default hook's backtrace (with RUST_BACKTRACE set) overflows a green
/// thread's 16 KiB default stack (see tests/panic.rs).
fn plain_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
}

/// Recurses `depth` times with a 1 KiB frame; returns a value the optimiser
/// cannot predict, so the frames are real.
fn use_stack(depth: usize) -> u8 {
    let buf = black_box([depth as u8; 1024]);
    if depth == 0 {
        buf[0]
    } else {
        use_stack(depth - 1).wrapping_add(buf[1023])
    }
}

#[test]
fn join_returns_the_value() {
    let v = run(|| {
        let h = spawn(|| String::from("hello"));
        h.join().unwrap()
    })
    .unwrap();
    assert_eq!(v, "hello");
}

#[test]
fn ten_thousand_green_threads() {
    let sum = run(|| {
        let handles: Vec<_> = (0..10_000u64).map(|i| spawn(move || i * 2)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    })
    .unwrap();
    assert_eq!(sum, 2 * (10_000 * 9_999 / 2));
}

#[test]
fn builder_names_the_green_thread() {
    run(|| {
        let h = Builder::new()
            .name("worker")
            .spawn(|| (current().id(), current().name().map(String::from)))
            .unwrap();
        assert_eq!(h.name(), Some("worker"));
        assert_eq!(h.thread().name(), Some("worker"));
        assert_eq!(h.thread().id(), h.id());
        let id = h.id();
        let (inner_id, inner_name) = h.join().unwrap();
        assert_eq!(inner_id, id);
        assert_eq!(inner_name.as_deref(), Some("worker"));

        let unnamed = spawn(|| current().name().map(String::from));
        assert_eq!(unnamed.name(), None);
        assert_eq!(unnamed.join().unwrap(), None);
    })
    .unwrap();
}

#[test]
fn main_green_thread_is_named_main() {
    let name = run(|| current().name().map(String::from)).unwrap();
    assert_eq!(name.as_deref(), Some("main"));
}

#[test]
fn ids_are_unique() {
    let ids = run(|| {
        let mut ids = vec![current().id()];
        let handles: Vec<_> = (0..100).map(|_| spawn(|| current().id())).collect();
        ids.extend(handles.iter().map(|h| h.id()));
        for h in handles {
            let id = h.id();
            assert_eq!(
                h.join().unwrap(),
                id,
                "current().id() inside matches the handle"
            );
        }
        ids
    })
    .unwrap();
    let distinct: HashSet<_> = ids.iter().map(|id| id.as_u64()).collect();
    assert_eq!(distinct.len(), ids.len());
    assert_eq!(ids[0].to_string(), ids[0].as_u64().to_string());
}

#[test]
fn builder_stack_size_gives_room_to_recurse() {
    // About 200 KiB of frames: far past the 16 KiB default, which would
    // overflow (and abort the test binary) if the size were ignored.
    let v = run(|| {
        Builder::new()
            .stack_size(1024 * 1024)
            .spawn(|| use_stack(black_box(200)))
            .unwrap()
            .join()
            .unwrap()
    })
    .unwrap();
    assert_eq!(v, (200 * 201 / 2 % 256) as u8);
}

#[test]
fn is_finished_follows_the_green_thread() {
    run(|| {
        let ev = Rc::new(Event::new());
        let ev2 = ev.clone();
        let h = spawn(move || ev2.wait());
        assert!(!h.is_finished(), "not started yet");
        yield_now();
        assert!(!h.is_finished(), "parked on the event");
        ev.set();
        for _ in 0..100 {
            if h.is_finished() {
                break;
            }
            yield_now();
        }
        assert!(h.is_finished());
        h.join().unwrap();
    })
    .unwrap();
}

#[test]
fn join_all_keeps_order_and_outcomes() {
    plain_panic_hook();
    let results = run(|| {
        let handles = vec![
            spawn(|| 1),
            spawn(|| -> i32 { panic!("second fails") }),
            spawn(|| {
                greenhub::sleep(Duration::from_secs(10));
                3
            }),
            spawn(|| 4),
        ];
        handles[2].kill();
        join_all(handles)
    })
    .unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().ok(), Some(&1));
    assert_eq!(
        results[1].as_ref().unwrap_err().panic_message(),
        Some("second fails")
    );
    assert!(matches!(results[2], Err(JoinError::Killed)));
    assert_eq!(results[3].as_ref().ok(), Some(&4));
}

#[test]
fn spawned_green_thread_waits_for_the_spawner_to_yield() {
    run(|| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let h = spawn(move || l.borrow_mut().push("child"));
        // Plenty of non-blocking work: the child must not run meanwhile.
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = black_box(x.wrapping_add(i));
        }
        log.borrow_mut().push("spawner before yield");
        yield_now();
        log.borrow_mut().push("spawner after yield");
        h.join().unwrap();
        assert_eq!(
            *log.borrow(),
            ["spawner before yield", "child", "spawner after yield"]
        );
    })
    .unwrap();
}

#[test]
fn spawned_green_thread_runs_when_the_spawner_blocks() {
    run(|| {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let h = spawn(move || r.set(true));
        assert!(!ran.get());
        greenhub::sleep(Duration::from_millis(1));
        assert!(ran.get());
        h.join().unwrap();
    })
    .unwrap();
}

fn panic_message_of(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("should have panicked");
    message(payload.as_ref()).to_owned()
}

#[test]
fn spawn_outside_run_panics_clearly() {
    let msg = panic_message_of(|| drop(spawn(|| ())));
    assert!(msg.contains("outside"), "{msg}");
    assert!(msg.contains("spawn"), "{msg}");
}

#[test]
fn sleep_outside_run_panics_clearly() {
    let msg = panic_message_of(|| greenhub::sleep(Duration::from_millis(1)));
    assert!(msg.contains("outside"), "{msg}");
}

#[test]
fn sleep_outside_run_names_sleep() {
    let msg = panic_message_of(|| greenhub::sleep(Duration::from_millis(1)));
    assert!(msg.contains("`sleep`"), "{msg}");
}

#[test]
fn yield_now_outside_run_panics_clearly() {
    let msg = panic_message_of(yield_now);
    assert!(msg.contains("outside"), "{msg}");
    assert!(msg.contains("yield_now"), "{msg}");
}

#[test]
fn current_outside_run_panics_clearly() {
    let msg = panic_message_of(|| drop(current()));
    assert!(msg.contains("outside"), "{msg}");
    assert!(msg.contains("current"), "{msg}");
}

#[test]
fn builder_spawn_outside_run_is_an_error() {
    let err = Builder::new().name("x").spawn(|| ()).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
}

#[test]
fn nested_run_is_refused() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let (in_main, in_child) = run(move || {
        let r2 = r.clone();
        let in_main = run(move || r2.set(true));
        let in_child = spawn(move || run(move || r.set(true))).join().unwrap();
        (in_main, in_child)
    })
    .unwrap();
    assert!(matches!(in_main, Err(Error::NestedRun)), "{in_main:?}");
    assert!(matches!(in_child, Err(Error::NestedRun)), "{in_child:?}");
    assert!(!ran.get(), "the nested main never runs");
    assert!(in_main.unwrap_err().to_string().contains("nest"));
}

#[test]
fn run_returns_mains_value() {
    assert_eq!(run(|| 42).unwrap(), 42);
    assert_eq!(run(|| vec![1, 2, 3]).unwrap(), [1, 2, 3]);
}

#[test]
fn run_can_be_called_again_on_the_same_os_thread() {
    for i in 0..3 {
        assert_eq!(run(move || spawn(move || i).join().unwrap()).unwrap(), i);
    }
}

#[test]
fn mains_panic_is_resumed_by_run() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let result = catch_unwind(AssertUnwindSafe(|| {
        run(move || {
            let guard = DropCount(d);
            // A parked green thread: it must still be unwound at shutdown.
            spawn(move || {
                let _guard = guard;
                greenhub::sleep(Duration::from_secs(10));
            });
            yield_now();
            panic!("main failed with {}", 7);
        })
    }));
    let payload = result.expect_err("run resumes main's panic");
    assert_eq!(message(payload.as_ref()), "main failed with 7");
    assert_eq!(drops.get(), 1, "the other green thread was unwound first");
}

#[test]
fn green_threads_left_at_the_end_are_killed_and_dropped() {
    let drops = Rc::new(Cell::new(0));
    let after = Rc::new(Cell::new(0));
    let (d, a) = (drops.clone(), after.clone());
    let v = run(move || {
        let ev = Rc::new(Event::new());
        // One parked in sleep, one parked on an event, one never started.
        let (g, a1) = (DropCount(d.clone()), a.clone());
        spawn(move || {
            let _g = g;
            greenhub::sleep(Duration::from_secs(10));
            a1.set(a1.get() + 1);
        });
        let (g, a2, ev2) = (DropCount(d.clone()), a.clone(), ev.clone());
        spawn(move || {
            let _g = g;
            ev2.wait();
            a2.set(a2.get() + 1);
        });
        yield_now();
        let g = DropCount(d);
        spawn(move || drop(g));
        "main done"
    })
    .unwrap();
    assert_eq!(v, "main done");
    assert_eq!(drops.get(), 3, "every green thread's captures were dropped");
    assert_eq!(after.get(), 0, "none ran past its blocking call");
}

#[test]
fn green_thread_not_started_when_main_returns_never_runs() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    run(move || {
        spawn(move || r.set(true));
    })
    .unwrap();
    assert!(!ran.get(), "its body ran after main had returned");
}

#[test]
fn green_thread_woken_when_main_returns_does_not_go_on() {
    let after = Rc::new(Cell::new(false));
    let a = after.clone();
    run(move || {
        let ev = Rc::new(Event::new());
        let ev2 = ev.clone();
        spawn(move || {
            ev2.wait();
            a.set(true);
        });
        yield_now();
        ev.set();
    })
    .unwrap();
    assert!(
        !after.get(),
        "it ran past Event::wait after main had returned"
    );
}

#[test]
fn handle_that_outlives_run_reports_killed() {
    let h = run(|| {
        spawn(|| {
            greenhub::sleep(Duration::from_secs(10));
            1
        })
    })
    .unwrap();
    assert!(h.is_finished());
    assert!(matches!(h.join(), Err(JoinError::Killed)));
}
