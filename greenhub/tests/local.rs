//! Green-thread-local storage (`green_local!`): one value per green thread,
//! made on first use, dropped when the green thread finishes — returning,
//! panicking or killed — and one value per OS thread outside any hub.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use greenhub::{green_local, run, sleep, spawn, with_timeout, yield_now, JoinError, JoinHandle};

const BOUND: Duration = Duration::from_secs(5);

fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    with_timeout(BOUND, || h.join()).expect("join did not finish in time")
}

fn plain_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
}

/// Counts, per key, values made and dropped. Counters are process-wide (tests
/// run on several OS threads), so each test uses keys of its own.
struct Tracked {
    dropped: &'static AtomicUsize,
}

impl Tracked {
    fn new(made: &'static AtomicUsize, dropped: &'static AtomicUsize) -> Tracked {
        made.fetch_add(1, Ordering::SeqCst);
        Tracked { dropped }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn each_green_thread_has_its_own_value() {
    green_local! {
        static COUNT: Cell<u32> = Cell::new(100);
    }
    run(|| {
        let handles: Vec<_> = (0..5u32)
            .map(|i| {
                spawn(move || {
                    for _ in 0..=i {
                        COUNT.set(COUNT.get() + 1);
                        yield_now(); // the others run and change theirs
                    }
                    COUNT.get()
                })
            })
            .collect();
        let results: Vec<u32> = handles
            .into_iter()
            .map(|h| join_bounded(h).unwrap())
            .collect();
        assert_eq!(results, [101, 102, 103, 104, 105]);
        assert_eq!(COUNT.get(), 100, "main's value is untouched");
    })
    .unwrap();
}

#[test]
fn values_are_made_lazily_on_first_use() {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    green_local! {
        static LAZY: Tracked = Tracked::new(&MADE, &DROPPED);
    }
    run(|| {
        let idle: Vec<_> = (0..10)
            .map(|_| spawn(|| sleep(Duration::from_millis(1))))
            .collect();
        let users: Vec<_> = (0..3)
            .map(|_| {
                spawn(|| {
                    LAZY.with(|_| ());
                    LAZY.with(|_| ()); // the same value again
                })
            })
            .collect();
        for h in idle.into_iter().chain(users) {
            join_bounded(h).unwrap();
        }
        assert_eq!(
            MADE.load(Ordering::SeqCst),
            3,
            "only the green threads that used it"
        );
        assert_eq!(DROPPED.load(Ordering::SeqCst), 3);
    })
    .unwrap();
}

#[test]
fn values_are_dropped_when_the_green_thread_returns_panics_or_is_killed() {
    plain_panic_hook();
    static MADE: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    green_local! {
        static VALUE: Tracked = Tracked::new(&MADE, &DROPPED);
    }
    run(|| {
        let returns = spawn(|| VALUE.with(|_| ()));
        join_bounded(returns).unwrap();
        assert_eq!(
            DROPPED.load(Ordering::SeqCst),
            1,
            "dropped before join returned"
        );

        let panics = spawn(|| {
            VALUE.with(|_| ());
            panic!("on purpose");
        });
        assert!(join_bounded(panics).unwrap_err().is_panic());
        assert_eq!(DROPPED.load(Ordering::SeqCst), 2);

        let killed = spawn(|| {
            VALUE.with(|_| ());
            sleep(Duration::from_secs(60));
        });
        yield_now();
        assert_eq!(MADE.load(Ordering::SeqCst), 3);
        killed.kill();
        assert!(join_bounded(killed).unwrap_err().is_killed());
        assert_eq!(DROPPED.load(Ordering::SeqCst), 3);

        // A detached green thread drops its values too.
        let detached = spawn(|| VALUE.with(|_| ()));
        let id = detached.id();
        drop(detached);
        with_timeout(BOUND, || {
            while DROPPED.load(Ordering::SeqCst) < 4 {
                yield_now();
            }
        })
        .unwrap_or_else(|_| panic!("green thread {id} never dropped its value"));
        assert_eq!(MADE.load(Ordering::SeqCst), 4);
    })
    .unwrap();
}

#[test]
fn values_of_green_threads_killed_at_shutdown_are_dropped() {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    green_local! {
        static VALUE: Tracked = Tracked::new(&MADE, &DROPPED);
    }
    run(|| {
        for _ in 0..4 {
            spawn(|| {
                VALUE.with(|_| ());
                sleep(Duration::from_secs(60));
            });
        }
        yield_now();
        assert_eq!(MADE.load(Ordering::SeqCst), 4);
        // main returns: run kills the four sleepers
    })
    .unwrap();
    assert_eq!(DROPPED.load(Ordering::SeqCst), 4);
}

#[test]
fn a_value_lives_across_parks_and_links_still_see_it() {
    green_local! {
        static NAME: RefCell<String> = RefCell::new(String::new());
    }
    run(|| {
        let seen = Rc::new(RefCell::new(String::new()));
        let h = spawn(|| {
            NAME.set("worker".to_string());
            sleep(Duration::from_millis(5));
            NAME.with_borrow(String::clone)
        });
        let s = seen.clone();
        // A link runs on the finishing green thread, before its values go.
        h.link(move |_| *s.borrow_mut() = NAME.with_borrow(String::clone));
        assert_eq!(join_bounded(h).unwrap(), "worker");
        assert_eq!(*seen.borrow(), "worker");
        assert_eq!(NAME.take(), "", "main's own value");
    })
    .unwrap();
}

#[test]
fn keys_can_be_used_inside_each_other_and_from_initialisers() {
    green_local! {
        static BASE: Cell<u32> = Cell::new(5);
        static DERIVED: u32 = BASE.get() * 2;
    }
    run(|| {
        let h = spawn(|| {
            BASE.set(21);
            BASE.with(|base| DERIVED.with(|derived| base.get() + derived))
        });
        assert_eq!(join_bounded(h).unwrap(), 21 + 42);
    })
    .unwrap();
}

#[test]
fn a_destructor_may_use_another_key() {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    struct UsesOther;
    impl Drop for UsesOther {
        fn drop(&mut self) {
            OTHER.with(|_| ());
        }
    }
    green_local! {
        static OTHER: Tracked = Tracked::new(&MADE, &DROPPED);
        static FIRST: UsesOther = UsesOther;
    }
    run(|| {
        // FIRST is made after OTHER's value is gone (first use order: FIRST
        // only), so its destructor makes a new OTHER, dropped in turn.
        join_bounded(spawn(|| FIRST.with(|_| ()))).unwrap();
        assert_eq!(MADE.load(Ordering::SeqCst), 1);
        assert_eq!(DROPPED.load(Ordering::SeqCst), 1);
    })
    .unwrap();
}

#[test]
fn outside_a_hub_each_os_thread_has_its_own_value() {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    green_local! {
        static PER_THREAD: Cell<u32> = Cell::new(0);
        static TRACKED: Tracked = Tracked::new(&MADE, &DROPPED);
    }
    PER_THREAD.set(1);
    let other = std::thread::spawn(|| {
        TRACKED.with(|_| ());
        PER_THREAD.set(PER_THREAD.get() + 2);
        PER_THREAD.get()
    })
    .join()
    .unwrap();
    assert_eq!(other, 2);
    assert_eq!(PER_THREAD.get(), 1);
    assert_eq!(MADE.load(Ordering::SeqCst), 1);
    assert_eq!(
        DROPPED.load(Ordering::SeqCst),
        1,
        "dropped when its OS thread exited"
    );
    // Inside a hub, green threads do not see the OS thread's value.
    run(|| assert_eq!(PER_THREAD.get(), 0)).unwrap();
    assert_eq!(PER_THREAD.get(), 1);
}

#[test]
fn values_are_dropped_newest_first() {
    thread_local! {
        static LOG: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    }
    struct Named(&'static str);
    impl Drop for Named {
        fn drop(&mut self) {
            LOG.with(|log| log.borrow_mut().push(self.0));
        }
    }
    green_local! {
        static A: Named = Named("a");
        static B: Named = Named("b");
    }
    run(|| {
        join_bounded(spawn(|| {
            A.with(|_| ());
            B.with(|_| ());
        }))
        .unwrap();
        join_bounded(spawn(|| {
            B.with(|_| ());
            A.with(|_| ());
        }))
        .unwrap();
    })
    .unwrap();
    assert_eq!(LOG.with(|log| log.borrow().clone()), ["b", "a", "a", "b"]);
}
