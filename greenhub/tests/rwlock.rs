//! `RwLock<T>`: readers share, a writer is alone, and both are served in
//! arrival order (a stream of readers cannot starve a writer; readers queued
//! together get in together). Kills and timeouts leave nothing locked.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenhub::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use greenhub::{run, sleep, spawn, with_timeout, yield_now, JoinError, JoinHandle};

const BOUND: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    with_timeout(BOUND, || h.join()).expect("join did not finish in time")
}

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}

/// `<T as NotSend<_>>::check()` compiles only if `T` is not `Send`.
trait NotSend<A> {
    fn check() {}
}
impl<T: ?Sized> NotSend<()> for T {}
impl<T: ?Sized + Send> NotSend<u8> for T {}

/// `<T as NotSync<_>>::check()` compiles only if `T` is not `Sync`.
trait NotSync<A> {
    fn check() {}
}
impl<T: ?Sized> NotSync<()> for T {}
impl<T: ?Sized + Sync> NotSync<u8> for T {}

#[test]
fn send_and_sync_like_std() {
    is_send::<RwLock<Vec<u8>>>();
    is_sync::<RwLock<Vec<u8>>>();
    is_send::<RwLock<Cell<u8>>>();
    <RwLock<Cell<u8>> as NotSync<_>>::check(); // readers would share a Cell
    <RwLock<Rc<u8>> as NotSend<_>>::check();
    <RwLockReadGuard<'static, u8> as NotSend<_>>::check();
    <RwLockWriteGuard<'static, u8> as NotSend<_>>::check();
    is_sync::<RwLockReadGuard<'static, u8>>();
}

#[test]
fn basics() {
    run(|| {
        let mut lock = RwLock::new(1);
        *lock.get_mut() += 1;
        {
            let a = lock.read();
            let b = lock.try_read().expect("readers share");
            assert_eq!(*a + *b, 4);
            assert!(lock.try_write().is_none());
            assert!(lock.write_timeout(ms(1)).is_none());
            assert_eq!(format!("{lock:?}"), "RwLock { data: 2, .. }");
        }
        {
            let mut w = lock.write();
            *w += 1;
            assert!(lock.try_read().is_none());
            assert!(lock.try_write().is_none());
            assert!(lock.read_timeout(ms(1)).is_none());
            assert_eq!(format!("{lock:?}"), "RwLock { data: <locked>, .. }");
        }
        assert_eq!(*lock.try_write().unwrap(), 3);
        assert_eq!(lock.into_inner(), 3);
    })
    .unwrap();
}

/// Counts who is inside, and the most readers seen inside at once.
#[derive(Default)]
struct Inside {
    readers: Cell<usize>,
    writers: Cell<usize>,
    most_readers: Cell<usize>,
}

impl Inside {
    fn read(&self) {
        assert_eq!(self.writers.get(), 0, "a reader beside a writer");
        self.readers.set(self.readers.get() + 1);
        self.most_readers
            .set(self.most_readers.get().max(self.readers.get()));
    }
    fn read_done(&self) {
        self.readers.set(self.readers.get() - 1);
    }
    fn write(&self) {
        assert_eq!(self.readers.get(), 0, "a writer beside a reader");
        assert_eq!(self.writers.get(), 0, "two writers");
        self.writers.set(1);
    }
    fn write_done(&self) {
        self.writers.set(0);
    }
}

#[test]
fn many_readers_at_once_writers_alone() {
    run(|| {
        let lock = Rc::new(RwLock::new(0u64));
        let inside = Rc::new(Inside::default());
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let (lock, inside) = (lock.clone(), inside.clone());
                spawn(move || {
                    for _ in 0..20 {
                        if i % 5 == 0 {
                            let mut g = lock.write();
                            inside.write();
                            *g += 1;
                            yield_now();
                            inside.write_done();
                        } else {
                            let g = lock.read();
                            inside.read();
                            let _ = *g;
                            yield_now();
                            inside.read_done();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            join_bounded(h).unwrap();
        }
        assert_eq!(*lock.read(), 6 * 20);
        assert!(inside.most_readers.get() > 1, "readers never shared");

        // All readers in together while nobody writes.
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let (lock, inside) = (lock.clone(), inside.clone());
                spawn(move || {
                    let _g = lock.read();
                    inside.read();
                    sleep(ms(10));
                    inside.read_done();
                })
            })
            .collect();
        yield_now();
        assert_eq!(inside.readers.get(), 10);
        for h in handles {
            join_bounded(h).unwrap();
        }
    })
    .unwrap();
}

/// A writer that queues behind a reader gets in before the readers that came
/// after it, although those could have shared with the first reader.
#[test]
fn a_stream_of_readers_does_not_starve_a_writer() {
    run(|| {
        let lock = Rc::new(RwLock::new(()));
        let log = Rc::new(RefCell::new(Vec::new()));
        let first = lock.read();
        let (l, g) = (lock.clone(), log.clone());
        let writer = spawn(move || {
            let _w = l.write();
            g.borrow_mut().push("writer");
        });
        yield_now(); // the writer queues, waiting for `first`
        assert!(
            lock.try_read().is_none(),
            "a reader got past a queued writer"
        );
        let readers: Vec<_> = (0..5)
            .map(|_| {
                let (l, g) = (lock.clone(), log.clone());
                spawn(move || {
                    let _r = l.read();
                    g.borrow_mut().push("reader");
                })
            })
            .collect();
        yield_now();
        assert!(log.borrow().is_empty());
        drop(first);
        join_bounded(writer).unwrap();
        for r in readers {
            join_bounded(r).unwrap();
        }
        let log = log.borrow();
        assert_eq!(log[0], "writer");
        assert_eq!(log.len(), 6);
    })
    .unwrap();
}

/// Readers and writers are admitted in arrival order, consecutive readers
/// together: W1 holds; R1 R2 R3 W2 R4 queue. Then R1-R3 are in at once, W2
/// after they all left, R4 after W2.
#[test]
fn queued_readers_enter_together_in_arrival_order() {
    run(|| {
        let lock = Rc::new(RwLock::new(()));
        let inside = Rc::new(Inside::default());
        let log = Rc::new(RefCell::new(Vec::new()));
        let w1 = lock.write();
        let mut handles = Vec::new();
        for name in ["r1", "r2", "r3", "w2", "r4"] {
            let (l, i, g) = (lock.clone(), inside.clone(), log.clone());
            handles.push(spawn(move || {
                if name.starts_with('r') {
                    let _r = l.read();
                    i.read();
                    g.borrow_mut().push(name);
                    sleep(ms(10)); // stay inside a while
                    i.read_done();
                } else {
                    let _w = l.write();
                    i.write();
                    g.borrow_mut().push(name);
                    sleep(ms(10));
                    i.write_done();
                }
            }));
            yield_now(); // queue in this order
        }
        drop(w1);
        for h in handles {
            join_bounded(h).unwrap();
        }
        assert_eq!(*log.borrow(), ["r1", "r2", "r3", "w2", "r4"]);
        assert_eq!(inside.most_readers.get(), 3, "r1-r3 were in together");
    })
    .unwrap();
}

/// A writer killed while queued, or while waiting for readers to leave,
/// passes the gate on: the readers behind it get in.
#[test]
fn killed_writers_pass_the_gate_on() {
    run(|| {
        let lock = Rc::new(RwLock::new(0));
        // Killed while waiting for a reader inside to leave (it holds the gate).
        let reader = lock.read();
        let l = lock.clone();
        let writer = spawn(move || *l.write() += 1);
        yield_now();
        let l = lock.clone();
        let late_reader = spawn(move || *l.read());
        yield_now();
        assert!(!late_reader.is_finished(), "queued behind the writer");
        writer.kill();
        assert!(matches!(join_bounded(writer), Err(JoinError::Killed)));
        assert_eq!(join_bounded(late_reader).unwrap(), 0);
        drop(reader);
        assert!(lock.try_write().is_some(), "nothing left locked");

        // Killed while queued behind another writer.
        let w = lock.write();
        let l = lock.clone();
        let writer = spawn(move || *l.write() += 1);
        yield_now();
        let l = lock.clone();
        let reader = spawn(move || *l.read());
        yield_now();
        drop(w); // handed to `writer`...
        writer.kill(); // ...which dies before it runs
        assert!(matches!(join_bounded(writer), Err(JoinError::Killed)));
        assert_eq!(join_bounded(reader).unwrap(), 0);
        assert!(lock.try_write().is_some());
    })
    .unwrap();
}

#[test]
fn timeouts_around_read_and_write() {
    run(|| {
        let lock = Rc::new(RwLock::new(()));
        let w = lock.write();
        assert!(with_timeout(ms(20), || drop(lock.read())).is_err());
        assert!(with_timeout(ms(20), || drop(lock.write())).is_err());
        let start = Instant::now();
        assert!(lock.read_timeout(ms(30)).is_none());
        assert!(start.elapsed() >= ms(30));
        drop(w);
        assert!(lock.try_write().is_some(), "no timed-out waiter holds it");

        // A writer times out while waiting for readers: the readers queued
        // behind it then get in.
        let r = lock.read();
        let l = lock.clone();
        let writer = spawn(move || l.write_timeout(ms(20)).is_some());
        yield_now();
        let l = lock.clone();
        let reader = spawn(move || drop(l.read()));
        assert!(!join_bounded(writer).unwrap(), "the writer timed out");
        join_bounded(reader).unwrap();
        drop(r);
        assert!(lock.try_write().is_some());
    })
    .unwrap();
}

/// A plain OS thread writes while green threads of two hubs read: every
/// reader sees a consistent pair.
#[test]
fn readers_on_two_hubs_and_a_writer_on_a_plain_thread() {
    let lock = Arc::new(RwLock::new((0u64, 0u64)));
    let reads = Arc::new(AtomicUsize::new(0));
    let l = lock.clone();
    let writer = std::thread::spawn(move || {
        for i in 1..=2_000 {
            let mut g = l.write();
            g.0 = i;
            std::hint::spin_loop();
            g.1 = i;
        }
    });
    let hub = |lock: Arc<RwLock<(u64, u64)>>, reads: Arc<AtomicUsize>| {
        std::thread::spawn(move || {
            run(move || {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        let (lock, reads) = (lock.clone(), reads.clone());
                        spawn(move || {
                            for i in 0..1_000 {
                                let g = lock.read();
                                if i % 10 == 0 {
                                    yield_now();
                                }
                                assert_eq!(g.0, g.1, "a torn write");
                                reads.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    join_bounded(h).unwrap();
                }
            })
            .unwrap();
        })
    };
    let a = hub(lock.clone(), reads.clone());
    let b = hub(lock.clone(), reads.clone());
    a.join().unwrap();
    b.join().unwrap();
    writer.join().unwrap();
    assert_eq!(reads.load(Ordering::Relaxed), 8_000);
    assert_eq!(*lock.read(), (2_000, 2_000));
}
