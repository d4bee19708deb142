//! `Channel`: the rendezvous. A put waits for a getter and a get for a
//! putter; `try_*` succeed only with a partner waiting; close, kills and
//! timeouts lose nothing; it works between green threads, hubs and plain
//! OS threads.
//!
//! Waits that another OS thread must end are bounded (see tests/queue.rs).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenhub::sync::{Channel, Closed, GetTimeoutError, PutTimeoutError, TryGetError, TryPutError};
use greenhub::{run, sleep, spawn, with_timeout, yield_now, JoinError, JoinHandle};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const LONG: Duration = Duration::from_secs(10);
const BOUND: Duration = Duration::from_secs(10);

fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    with_timeout(BOUND, || h.join()).expect("join did not finish in time")
}

struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn channels_are_send_and_sync() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Channel<String>>();
}

#[test]
fn put_parks_until_a_getter_takes_the_item() {
    run(|| {
        let chan = Rc::new(Channel::new());
        let returned = Rc::new(Cell::new(false));
        let (c, r) = (chan.clone(), returned.clone());
        let putter = spawn(move || {
            c.put(1).unwrap();
            r.set(true);
        });
        yield_now();
        yield_now();
        assert!(!returned.get(), "no getter yet: the putter waits");
        assert!(chan.is_readable(), "a putter waits: get would not block");
        assert_eq!(chan.get(), Ok(1));
        join_bounded(putter).unwrap();
        assert!(returned.get());
        assert!(!chan.is_readable());
    })
    .unwrap();
}

#[test]
fn get_parks_until_a_putter_offers() {
    run(|| {
        let chan = Rc::new(Channel::new());
        let c = chan.clone();
        let getter = spawn(move || c.get());
        yield_now();
        assert!(!getter.is_finished());
        // A getter waits: put hands the item over and returns at once.
        chan.put("x").unwrap();
        assert_eq!(join_bounded(getter).unwrap(), Ok("x"));
    })
    .unwrap();
}

#[test]
fn try_put_and_try_get_succeed_only_with_a_partner_waiting() {
    run(|| {
        let chan = Rc::new(Channel::new());
        assert_eq!(chan.try_put(1), Err(TryPutError::Full(1)));
        assert_eq!(chan.try_get(), Err(TryGetError::Empty));
        // With a getter waiting, try_put succeeds.
        let c = chan.clone();
        let getter = spawn(move || c.get());
        yield_now();
        assert_eq!(chan.try_put(2), Ok(()));
        assert_eq!(join_bounded(getter).unwrap(), Ok(2));
        // With a putter waiting, try_get succeeds.
        let c = chan.clone();
        let putter = spawn(move || c.put(3));
        yield_now();
        assert_eq!(chan.try_get(), Ok(3));
        assert_eq!(join_bounded(putter).unwrap(), Ok(()));
        assert_eq!(chan.try_get(), Err(TryGetError::Empty));
    })
    .unwrap();
}

#[test]
fn timeouts_give_the_item_back() {
    run(|| {
        let chan = Channel::new();
        let start = Instant::now();
        assert_eq!(
            chan.put_timeout(5, ms(20)),
            Err(PutTimeoutError::Timeout(5))
        );
        assert!(start.elapsed() >= ms(20));
        let start = Instant::now();
        assert_eq!(chan.get_timeout(ms(20)), Err(GetTimeoutError::Timeout));
        assert!(start.elapsed() >= ms(20));
        // The timed-out putter left nothing behind.
        assert_eq!(chan.try_get(), Err(TryGetError::Empty));
    })
    .unwrap();
}

#[test]
fn putters_and_getters_are_served_in_order() {
    run(|| {
        let chan = Rc::new(Channel::new());
        let putters: Vec<_> = (0..4)
            .map(|i| {
                let c = chan.clone();
                spawn(move || c.put(i))
            })
            .collect();
        yield_now();
        let got: Vec<i32> = (0..4).map(|_| chan.get().unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 3]);
        for h in putters {
            assert_eq!(join_bounded(h).unwrap(), Ok(()));
        }
        let order = Rc::new(RefCell::new(Vec::new()));
        let getters: Vec<_> = (0..4)
            .map(|g| {
                let (c, o) = (chan.clone(), order.clone());
                spawn(move || {
                    let item = c.get().unwrap();
                    o.borrow_mut().push((g, item));
                })
            })
            .collect();
        yield_now();
        for i in 10..14 {
            with_timeout(BOUND, || chan.put(i).unwrap()).unwrap();
        }
        for h in getters {
            join_bounded(h).unwrap();
        }
        let mut order = order.borrow().clone();
        order.sort();
        assert_eq!(order, [(0, 10), (1, 11), (2, 12), (3, 13)]);
    })
    .unwrap();
}

#[test]
fn close_wakes_both_sides_and_gives_putters_their_items_back() {
    run(|| {
        let chan = Rc::new(Channel::<String>::new());
        let c = chan.clone();
        let getter = spawn(move || c.get());
        yield_now();
        chan.close();
        assert_eq!(join_bounded(getter).unwrap(), Err(Closed(())));

        let chan = Rc::new(Channel::new());
        let c = chan.clone();
        let putter = spawn(move || c.put(String::from("mine")));
        yield_now();
        chan.close();
        assert!(chan.is_closed());
        assert!(chan.is_readable(), "a closed channel is readable");
        let back = join_bounded(putter).unwrap().unwrap_err();
        assert_eq!(back.into_inner(), "mine");
        assert_eq!(chan.get(), Err(Closed(())), "a getter does not take it");
        assert_eq!(chan.put("late".into()), Err(Closed("late".into())));
        assert_eq!(
            chan.try_put("late".into()),
            Err(TryPutError::Closed("late".into()))
        );
        assert_eq!(chan.try_get(), Err(TryGetError::Closed));
        assert_eq!(chan.get_timeout(LONG), Err(GetTimeoutError::Closed));
    })
    .unwrap();
}

#[test]
fn a_killed_getter_passes_its_item_on() {
    run(|| {
        let chan = Rc::new(Channel::new());
        let (ca, cb) = (chan.clone(), chan.clone());
        let a = spawn(move || ca.get());
        let b = spawn(move || cb.get());
        yield_now();
        chan.put(1).unwrap(); // handed to a
        a.kill();
        assert!(matches!(join_bounded(a), Err(JoinError::Killed)));
        assert_eq!(join_bounded(b).unwrap(), Ok(1), "b got a's item");

        // No other getter: the item is kept for the next get.
        let ca = chan.clone();
        let a = spawn(move || ca.get());
        yield_now();
        chan.put(2).unwrap();
        a.kill();
        assert!(matches!(join_bounded(a), Err(JoinError::Killed)));
        assert!(chan.is_readable());
        assert_eq!(chan.try_get(), Ok(2));
    })
    .unwrap();
}

#[test]
fn a_killed_putter_takes_its_item_with_it() {
    run(|| {
        let drops = Rc::new(Cell::new(0));
        let chan = Rc::new(Channel::new());
        let (ca, cb) = (chan.clone(), chan.clone());
        let (da, db) = (DropCount(drops.clone()), DropCount(drops.clone()));
        let a = spawn(move || ca.put(("a", da)).is_ok());
        let b = spawn(move || cb.put(("b", db)).is_ok());
        yield_now();
        a.kill();
        assert!(matches!(join_bounded(a), Err(JoinError::Killed)));
        assert_eq!(drops.get(), 1);
        let (name, item) = chan.get().unwrap();
        assert_eq!(name, "b", "the getter never sees the killed putter's item");
        drop(item);
        assert!(join_bounded(b).unwrap());
        assert_eq!(drops.get(), 2);
    })
    .unwrap();
}

#[test]
fn with_timeout_around_put_and_get() {
    run(|| {
        let chan = Channel::new();
        assert!(with_timeout(ms(10), || chan.put(1)).is_err());
        assert!(with_timeout(ms(10), || chan.get()).is_err());
        // Neither left a ghost behind.
        assert_eq!(chan.try_get(), Err(TryGetError::Empty));
        assert_eq!(chan.try_put(2), Err(TryPutError::Full(2)));
    })
    .unwrap();
}

#[test]
fn iter_takes_until_closed() {
    run(|| {
        let chan = Rc::new(Channel::new());
        let c = chan.clone();
        let producer = spawn(move || {
            for i in 0..50 {
                c.put(i).unwrap();
            }
            c.close();
        });
        let got: Vec<i32> = chan.iter().collect();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        join_bounded(producer).unwrap();
    })
    .unwrap();
}

#[test]
fn between_hubs_and_plain_threads() {
    let chan = Arc::new(Channel::new());
    let c = chan.clone();
    let plain = std::thread::spawn(move || {
        for i in 0..500u32 {
            c.put_timeout(i, BOUND).unwrap(); // blocks until taken
        }
        let mut sum = 0;
        for _ in 0..500 {
            sum += c.get_timeout(BOUND).unwrap();
        }
        sum
    });
    let c = chan.clone();
    let other_hub = std::thread::spawn(move || {
        run(move || {
            spawn(move || {
                let got: Vec<u32> = (0..500)
                    .map(|_| with_timeout(BOUND, || c.get().unwrap()).unwrap())
                    .collect();
                assert_eq!(got, (0..500).collect::<Vec<_>>());
            })
            .join()
            .unwrap();
        })
        .unwrap()
    });
    other_hub.join().unwrap();
    run(move || {
        for i in 0..500u32 {
            with_timeout(BOUND, || chan.put(i).unwrap()).unwrap();
        }
        sleep(ms(1));
    })
    .unwrap();
    assert_eq!(plain.join().unwrap(), 499 * 500 / 2);
}

#[test]
fn debug_and_default() {
    let chan: Channel<u8> = Channel::default();
    assert_eq!(format!("{chan:?}"), "Channel { closed: false, .. }");
}
