//! `Group`: a set of green threads to join, kill and map work over (ported
//! from gevent's `test__pool.py` group scenarios).

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Once;
use std::time::Duration;

use greenhub::sync::{Event, Group};
use greenhub::{current, run, sleep, spawn, with_timeout, yield_now, JoinError, JoinHandle};

const BOUND: Duration = Duration::from_secs(5);
const LONG: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Adds one to its counter when dropped.
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

fn plain_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
}

fn bounded<T>(f: impl FnOnce() -> T) -> T {
    with_timeout(BOUND, f).expect("did not finish in time")
}

#[test]
fn join_waits_for_every_member() {
    run(|| {
        let group = Group::new();
        let finished = Rc::new(Cell::new(0));
        for i in 0..5u64 {
            let f = finished.clone();
            group.spawn(move || {
                sleep(ms(5 * i));
                f.set(f.get() + 1);
            });
        }
        assert_eq!(group.len(), 5);
        bounded(|| group.join());
        assert_eq!(finished.get(), 5);
        assert!(group.is_empty());
        // An empty group joins at once.
        group.join();
    })
    .unwrap();
}

#[test]
fn members_leave_when_they_finish_however_they_finish() {
    plain_panic_hook();
    run(|| {
        let group = Group::new();
        let (end_a, end_b) = (Rc::new(Event::new()), Rc::new(Event::new()));
        let e = end_a.clone();
        let returns = group.spawn(move || e.wait());
        let e = end_b.clone();
        let panics = group.spawn(move || {
            e.wait();
            panic!("on purpose");
        });
        let killed = group.spawn(|| sleep(LONG));
        let (r, p, k) = (returns.id(), panics.id(), killed.id());
        assert!(group.contains(r) && group.contains(p) && group.contains(k));
        assert_eq!(group.len(), 3);

        end_a.set();
        bounded(|| returns.wait());
        assert!(!group.contains(r));
        assert_eq!(group.len(), 2);

        end_b.set();
        assert!(bounded(|| panics.join()).unwrap_err().is_panic());
        assert!(!group.contains(p));
        assert_eq!(group.len(), 1);

        killed.kill();
        assert!(bounded(|| killed.join()).unwrap_err().is_killed());
        assert!(group.is_empty());
    })
    .unwrap();
}

#[test]
fn kill_kills_every_member_and_waits_for_them() {
    run(|| {
        let group = Group::new();
        let drops = Rc::new(Cell::new(0));
        let handles: Vec<JoinHandle<()>> = (0..10)
            .map(|_| {
                let d = DropCount(drops.clone());
                group.spawn(move || {
                    let _d = d;
                    sleep(LONG);
                })
            })
            .collect();
        yield_now();
        bounded(|| group.kill());
        assert!(group.is_empty());
        assert_eq!(drops.get(), 10, "every member's destructors ran");
        assert!(handles
            .into_iter()
            .all(|h| matches!(h.join(), Err(JoinError::Killed))));
    })
    .unwrap();
}

#[test]
fn a_member_that_kills_or_joins_its_group_waits_for_the_others_only() {
    run(|| {
        let group = Rc::new(Group::new());
        let others: Vec<_> = (0..3).map(|_| group.spawn(|| sleep(LONG))).collect();
        let g = group.clone();
        let killer = group.spawn(move || {
            g.kill(); // kills the three others, not itself
            assert_eq!(g.len(), 1, "only the killer is left");
            g.join(); // returns at once: nobody else is left
            current().id()
        });
        let killer_id = killer.id();
        assert_eq!(bounded(|| killer.join()).unwrap(), killer_id);
        assert!(others.iter().all(|h| h.is_finished()));
        assert!(group.is_empty());
    })
    .unwrap();
}

#[test]
fn join_timeout_and_kill_timeout_report_whether_the_group_emptied() {
    run(|| {
        let group = Group::new();
        let go = Rc::new(Event::new());
        let g = go.clone();
        group.spawn(move || g.wait());
        assert!(!group.join_timeout(ms(5)), "still running");
        assert_eq!(group.len(), 1);
        go.set();
        assert!(group.join_timeout(BOUND));

        group.spawn(|| sleep(LONG));
        yield_now();
        assert!(group.kill_timeout(BOUND));
        assert!(group.is_empty());
    })
    .unwrap();
}

#[test]
fn add_and_discard() {
    run(|| {
        let group = Group::new();
        let outside = greenhub::Builder::new()
            .name("added")
            .spawn(|| sleep(ms(10)))
            .unwrap();
        group.add(&outside);
        group.add(&outside); // twice is once
        assert_eq!(group.len(), 1);
        assert!(group.contains(outside.id()));

        let discarded = group.spawn(|| sleep(LONG));
        assert!(group.discard(discarded.id()));
        assert!(!group.discard(discarded.id()));
        assert_eq!(group.len(), 1);

        bounded(|| group.join());
        assert!(outside.is_finished());
        assert!(
            !discarded.is_finished(),
            "a discarded green thread is not waited for"
        );
        // ... nor killed by the group.
        group.kill();
        assert!(!discarded.is_finished());
        discarded.kill();

        // Adding a finished green thread does nothing.
        group.add(&outside);
        assert!(group.is_empty());
    })
    .unwrap();
}

#[test]
fn map_returns_results_in_order_when_later_items_finish_first() {
    run(|| {
        let group = Group::new();
        // Item i waits for its event; the last item's is set first, and each
        // item, once done, releases the one before it.
        let events: Rc<Vec<Event>> = Rc::new((0..5).map(|_| Event::new()).collect());
        let finish_order = Rc::new(RefCell::new(Vec::new()));
        let (e, f) = (events.clone(), finish_order.clone());
        let starter = spawn(move || e[4].set());
        let results = bounded(|| {
            group.map(0..5usize, move |i| {
                events[i].wait();
                f.borrow_mut().push(i);
                if i > 0 {
                    events[i - 1].set();
                }
                i * 10
            })
        });
        assert_eq!(results, [0, 10, 20, 30, 40]);
        assert_eq!(*finish_order.borrow(), [4, 3, 2, 1, 0]);
        assert!(group.is_empty());
        starter.join().unwrap();
    })
    .unwrap();
}

#[test]
fn map_resumes_a_panic_and_kills_the_rest() {
    plain_panic_hook();
    run(|| {
        let group = Group::new();
        let drops = Rc::new(Cell::new(0));
        let d = drops.clone();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            group.map(0..4u32, move |i| {
                let _d = DropCount(d.clone());
                if i == 0 {
                    sleep(ms(5));
                    panic!("item {i} failed");
                }
                sleep(LONG);
            })
        }));
        let payload = outcome.unwrap_err();
        assert_eq!(payload.downcast_ref::<String>().unwrap(), "item 0 failed");
        bounded(|| group.join());
        assert_eq!(drops.get(), 4, "the three sleepers were killed");
    })
    .unwrap();
}

#[test]
fn imap_streams_results_in_order() {
    run(|| {
        let group = Group::new();
        let events: Rc<Vec<Event>> = Rc::new((0..3).map(|_| Event::new()).collect());
        let done = Rc::new(RefCell::new(Vec::new()));
        let (e, d) = (events.clone(), done.clone());
        let mut results = group.imap(0..3usize, move |i| {
            e[i].wait();
            d.borrow_mut().push(i);
            i
        });
        events[0].set();
        assert_eq!(bounded(|| results.next()), Some(0));
        assert_eq!(
            *done.borrow(),
            [0],
            "the first result came before the others finished"
        );
        // The last finishes before the middle one: still yielded in order.
        events[2].set();
        let e = events.clone();
        let _later = spawn(move || {
            yield_now();
            e[1].set();
        });
        assert_eq!(bounded(|| results.next()), Some(1));
        assert_eq!(results.next(), Some(2));
        assert_eq!(results.next(), None);
        assert_eq!(*done.borrow(), [0, 2, 1]);
    })
    .unwrap();
}

#[test]
fn imap_unordered_yields_results_as_they_finish() {
    run(|| {
        let group = Group::new();
        let events: Rc<Vec<Event>> = Rc::new((0..4).map(|_| Event::new()).collect());
        let e = events.clone();
        // Releases the items in the order 2, 0, 3, 1, one per turn.
        let conductor = spawn(move || {
            for i in [2, 0, 3, 1] {
                e[i].set();
                yield_now();
            }
        });
        let e = events.clone();
        let results: Vec<usize> = bounded(|| {
            group
                .imap_unordered(0..4usize, move |i| {
                    e[i].wait();
                    i
                })
                .collect()
        });
        assert_eq!(results, [2, 0, 3, 1]);
        conductor.join().unwrap();
    })
    .unwrap();
}

#[test]
fn dropping_an_imap_early_kills_the_work_in_flight() {
    run(|| {
        let group = Group::new();
        let drops = Rc::new(Cell::new(0));
        let d = drops.clone();
        let mut results = group.imap_unordered(0..5u64, move |i| {
            let _d = DropCount(d.clone());
            sleep(if i == 0 { ms(1) } else { LONG });
            i
        });
        assert_eq!(bounded(|| results.next()), Some(0));
        assert_eq!(group.len(), 4);
        drop(results);
        bounded(|| group.join());
        assert_eq!(drops.get(), 5);
    })
    .unwrap();
}

#[test]
fn a_timeout_around_map_kills_the_work_in_flight() {
    run(|| {
        let group = Group::new();
        let drops = Rc::new(Cell::new(0));
        let d = drops.clone();
        let outcome = with_timeout(ms(20), || {
            group.map(0..3, move |_| {
                let _d = DropCount(d.clone());
                sleep(LONG);
            })
        });
        assert!(outcome.is_err());
        bounded(|| group.join());
        assert_eq!(drops.get(), 3);
    })
    .unwrap();
}

#[test]
fn apply_runs_in_a_member_or_inline_from_a_member() {
    run(|| {
        let group = Rc::new(Group::new());
        let main_id = current().id();
        let ran_on = bounded(|| group.apply(|| current().id()));
        assert_ne!(ran_on, main_id, "a new green thread ran it");
        assert!(group.is_empty());

        let g = group.clone();
        let member = group.spawn(move || {
            let me = current().id();
            let inner = g.apply(move || current().id());
            (me, inner)
        });
        let (me, inner) = bounded(|| member.join()).unwrap();
        assert_eq!(me, inner, "called by a member: runs inline");
    })
    .unwrap();
}

#[test]
fn members_can_spawn_more_members_and_join_sees_them() {
    run(|| {
        let group = Rc::new(Group::new());
        let count = Rc::new(Cell::new(0));
        fn crawl(group: Rc<Group>, count: Rc<Cell<u32>>, depth: u32) {
            count.set(count.get() + 1);
            sleep(ms(1));
            if depth > 0 {
                for _ in 0..2 {
                    let (g, c) = (group.clone(), count.clone());
                    group.spawn(move || crawl(g, c, depth - 1));
                }
            }
        }
        let (g, c) = (group.clone(), count.clone());
        group.spawn(move || crawl(g, c, 4));
        bounded(|| group.join());
        assert_eq!(count.get(), 31, "1 + 2 + 4 + 8 + 16");
    })
    .unwrap();
}

#[test]
fn a_member_added_while_a_kill_is_under_way_is_killed_too() {
    run(|| {
        let group = Rc::new(Group::new());
        let late = Rc::new(RefCell::new(None));
        let (g, l) = (group.clone(), late.clone());
        group.spawn(move || {
            struct SpawnOnDrop(Rc<Group>, Rc<RefCell<Option<JoinHandle<()>>>>);
            impl Drop for SpawnOnDrop {
                fn drop(&mut self) {
                    *self.1.borrow_mut() = Some(self.0.spawn(|| sleep(LONG)));
                }
            }
            let _s = SpawnOnDrop(g, l);
            sleep(LONG);
        });
        yield_now();
        bounded(|| group.kill());
        let late = late.borrow_mut().take().expect("the destructor spawned");
        assert!(matches!(bounded(|| late.join()), Err(JoinError::Killed)));
        assert!(group.is_empty());
    })
    .unwrap();
}

#[test]
fn join_is_woken_by_members_finishing_on_events() {
    run(|| {
        let group = Group::new();
        let go = Rc::new(Event::new());
        for _ in 0..3 {
            let go = go.clone();
            group.spawn(move || go.wait());
        }
        let setter = spawn({
            let go = go.clone();
            move || {
                sleep(ms(5));
                go.set();
            }
        });
        bounded(|| group.join());
        setter.join().unwrap();
    })
    .unwrap();
}

/// `<T as NotSend<_>>::check()` compiles only if `T` is not `Send` (the trick
/// of tests/send_sync.rs).
trait NotSend<A> {
    fn check() {}
}
impl<T: ?Sized> NotSend<()> for T {}
impl<T: ?Sized + Send> NotSend<u8> for T {}

#[test]
fn groups_pools_and_their_iterators_stay_on_their_os_thread() {
    <Group as NotSend<_>>::check();
    <greenhub::sync::Pool as NotSend<_>>::check();
    <greenhub::sync::Imap<'static, u8> as NotSend<_>>::check();
    <greenhub::sync::ImapUnordered<'static, u8> as NotSend<_>>::check();
    <greenhub::sync::Iwait<'static> as NotSend<_>>::check();
    // A green-local key is a static: it must be shareable.
    fn is_sync<T: Sync>() {}
    is_sync::<greenhub::local::LocalKey<Cell<u8>>>();
}
