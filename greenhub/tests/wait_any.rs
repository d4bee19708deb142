//! Waiting for the first of several things (`wait_any`, `iwait`, `wait_all`:
//! gevent's `wait`/`iwait`) and `select!` (Go's select on receives, with its
//! fairness test).
//!
//! Waits that another OS thread must end are bounded with `with_timeout` or a
//! timeout variant, so a lost wake-up fails the test instead of hanging it.

use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use greenhub::sync::{
    iwait, wait_all, wait_all_timeout, wait_any, wait_any_timeout, AsyncResult, Channel, Event,
    Queue, Waitable,
};
use greenhub::{run, select, sleep, spawn, spawn_later, with_timeout, yield_now, JoinError};

const BOUND: Duration = Duration::from_secs(5);
const LONG: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn bounded<T>(f: impl FnOnce() -> T) -> T {
    with_timeout(BOUND, f).expect("did not finish in time")
}

#[test]
fn wait_any_returns_the_first_to_be_ready_among_a_mix() {
    run(|| {
        let event = Rc::new(Event::new());
        let result = Rc::new(AsyncResult::<u32>::new());
        let queue = Rc::new(Queue::<u32>::new());
        let sleeper = spawn(|| sleep(LONG));

        let r = result.clone();
        let _setter = spawn_later(ms(5), move || r.set(7));
        let i = bounded(|| wait_any(&[&event, &sleeper, &result, &queue]));
        assert_eq!(i, 2, "the AsyncResult");
        assert_eq!(result.try_get(), Some(7));
        result.take();

        let q = queue.clone();
        let _putter = spawn_later(ms(5), move || q.put(1).unwrap());
        assert_eq!(
            bounded(|| wait_any(&[&event, &sleeper, &result, &queue])),
            3
        );
        assert_eq!(queue.try_get(), Ok(1));

        let finisher = spawn_later(ms(5), || ());
        let i = bounded(|| wait_any(&[&event, &sleeper, &result, &queue, &finisher]));
        assert_eq!(i, 4, "the JoinHandle, once finished");
        assert!(finisher.is_ready());

        let e = event.clone();
        let _ = spawn_later(ms(5), move || e.set());
        assert_eq!(bounded(|| wait_any(&[&sleeper, &event])), 1);
        sleeper.kill();
    })
    .unwrap();
}

#[test]
fn wait_any_prefers_the_lowest_index_and_does_not_park_when_ready() {
    run(|| {
        let (a, b, c) = (Event::new(), Event::new(), Event::new());
        b.set();
        c.set();
        let other = spawn(|| ());
        assert_eq!(wait_any(&[&a, &c, &b]), 1);
        assert!(!other.is_finished(), "returned without yielding");
        assert_eq!(wait_any(&[&b, &c]), 0);
        other.join().unwrap();
    })
    .unwrap();
}

#[test]
fn wait_any_timeout_gives_up() {
    run(|| {
        let (a, b) = (Event::new(), AsyncResult::<()>::new());
        assert_eq!(wait_any_timeout(&[&a, &b], ms(10)), None);
        b.set(());
        assert_eq!(wait_any_timeout(&[&a, &b], ms(10)), Some(1));
        // No items: sleeps for the timeout.
        assert_eq!(wait_any_timeout(&[], ms(1)), None);
    })
    .unwrap();
}

#[test]
fn wait_any_in_a_green_thread_is_woken_by_another_os_thread() {
    run(|| {
        let events: Arc<[Event; 3]> = Arc::new(Default::default());
        let e = events.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(ms(10));
            e[2].set();
        });
        let i = bounded(|| wait_any(&[&events[0], &events[1], &events[2]]));
        assert_eq!(i, 2);
        setter.join().unwrap();
    })
    .unwrap();
}

#[test]
fn wait_any_on_a_plain_os_thread_blocks_it_until_another_thread_sets() {
    let items: Arc<(Event, AsyncResult<u32>)> = Arc::new(Default::default());
    let it = items.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(wait_any_timeout(&[&it.0, &it.1], BOUND)).unwrap();
    });
    std::thread::sleep(ms(10));
    items.1.set(3);
    assert_eq!(rx.recv_timeout(BOUND).unwrap(), Some(1));
}

#[test]
fn a_wait_any_cut_short_by_a_kill_or_timeout_leaves_cleanly() {
    run(|| {
        let event = Rc::new(Event::new());
        let e = event.clone();
        let waiter = spawn(move || wait_any(&[&*e]));
        yield_now();
        waiter.kill();
        assert!(matches!(bounded(|| waiter.join()), Err(JoinError::Killed)));
        assert!(with_timeout(ms(5), || wait_any(&[&*event])).is_err());
        // The abandoned watchers are gone: a later set and wait work as usual.
        event.set();
        assert_eq!(wait_any(&[&*event]), 0);
    })
    .unwrap();
}

#[test]
fn iwait_yields_each_once_in_completion_order() {
    run(|| {
        let gates: Rc<Vec<Event>> = Rc::new((0..3).map(|_| Event::new()).collect());
        let member = |i: usize| {
            let g = gates.clone();
            spawn(move || g[i].wait())
        };
        let (a, b, c) = (member(0), member(1), member(2));
        let event = Rc::new(Event::new());
        let (g, e) = (gates.clone(), event.clone());
        // Finishing order: b, then the event, then a, then c.
        let conductor = spawn(move || {
            g[1].set();
            yield_now(); // b runs and finishes
            e.set();
            g[0].set();
            yield_now(); // a runs and finishes
            g[2].set();
        });
        let order: Vec<usize> = bounded(|| iwait(&[&a, &b, &*event, &c]).collect());
        assert_eq!(order, [1, 2, 0, 3]);
        conductor.join().unwrap();
    })
    .unwrap();
}

#[test]
fn iwait_records_the_order_while_the_caller_is_busy() {
    run(|| {
        let (x, y, z) = (Event::new(), Event::new(), Event::new());
        let mut waiting = iwait(&[&x, &y, &z]);
        assert_eq!(waiting.remaining(), 3);
        // Ready before the first `next`, in index order: none yet.
        assert_eq!(waiting.next_timeout(ms(1)), None);
        // Set in the order z, x while nobody iterates.
        z.set();
        x.set();
        assert_eq!(waiting.next(), Some(2), "z became ready first");
        assert_eq!(waiting.next(), Some(0));
        assert_eq!(waiting.remaining(), 1);
        y.set();
        assert_eq!(waiting.next(), Some(1));
        assert_eq!(waiting.next(), None);
    })
    .unwrap();
}

#[test]
fn iwait_yields_ready_items_first_in_index_order() {
    run(|| {
        let (x, y, z) = (Event::new(), Event::new(), Event::new());
        z.set();
        y.set();
        let order: Vec<usize> = {
            let mut waiting = iwait(&[&x, &y, &z]);
            let first_two = [waiting.next().unwrap(), waiting.next().unwrap()];
            x.set();
            first_two.into_iter().chain(waiting).collect()
        };
        assert_eq!(order, [1, 2, 0]);
    })
    .unwrap();
}

#[test]
fn iwait_waits_again_for_an_item_no_longer_ready() {
    run(|| {
        let (x, y) = (Rc::new(Event::new()), Event::new());
        let mut waiting = iwait(&[&*x, &y]);
        assert_eq!(waiting.next_timeout(ms(1)), None);
        x.set();
        x.clear(); // ready and unready before its turn
        y.set();
        assert_eq!(waiting.next(), Some(1));
        let x2 = x.clone();
        let _setter = spawn_later(ms(5), move || x2.set());
        assert_eq!(bounded(|| waiting.next()), Some(0));
        assert_eq!(waiting.next(), None);
    })
    .unwrap();
}

#[test]
fn wait_all_and_wait_all_timeout() {
    run(|| {
        let a = spawn(|| sleep(ms(5)));
        let b = spawn(|| sleep(ms(10)));
        let result = Rc::new(AsyncResult::new());
        let r = result.clone();
        let _setter = spawn_later(ms(1), move || r.set("x"));
        bounded(|| wait_all(&[&a, &b, &*result]));
        assert!(a.is_finished() && b.is_finished() && result.ready());

        let never = Event::new();
        assert!(!wait_all_timeout(&[&a, &never], ms(5)));
        never.set();
        assert!(wait_all_timeout(&[&a, &never], ms(5)));
    })
    .unwrap();
}

#[test]
fn queues_and_channels_are_ready_when_a_get_would_not_park() {
    run(|| {
        let queue = Rc::new(Queue::<u8>::new());
        let chan = Rc::new(Channel::<u8>::new());
        let never = Event::new();
        assert!(!queue.is_ready() && !chan.is_ready());

        // A putter waiting on the channel makes it readable.
        let c = chan.clone();
        let putter = spawn(move || c.put(9).unwrap());
        assert_eq!(bounded(|| wait_any(&[&never, &*queue, &*chan])), 2);
        assert_eq!(chan.try_get(), Ok(9));
        bounded(|| putter.join()).unwrap();

        // A closed queue is readable (a get returns Closed at once).
        let q = queue.clone();
        let _closer = spawn_later(ms(5), move || q.close());
        assert_eq!(bounded(|| wait_any(&[&never, &*queue, &*chan])), 1);
    })
    .unwrap();
}

#[test]
fn select_takes_from_the_ready_arm() {
    run(|| {
        // Rendezvous channels: each put waits for the select to take it, so
        // the order is fixed.
        let numbers = Rc::new(Channel::new());
        let words = Rc::new(Channel::new());
        let stop = Rc::new(Event::new());
        let (n, w, s) = (numbers.clone(), words.clone(), stop.clone());
        let producer = spawn(move || {
            n.put(1).unwrap();
            w.put("two").unwrap();
            sleep(ms(2));
            n.put(3).unwrap();
            s.set();
        });
        let mut log = Vec::new();
        loop {
            select! {
                n = numbers => log.push(format!("n{}", n.unwrap())),
                w = words => log.push(w.unwrap().to_string()),
                () = stop => break,
                timeout(BOUND) => panic!("nothing arrived"),
            }
        }
        assert_eq!(log, ["n1", "two", "n3"]);
        producer.join().unwrap();
    })
    .unwrap();
}

#[test]
fn select_binds_none_for_a_closed_queue_and_its_bodies_control_the_caller() {
    fn drain(a: &Queue<u32>, b: &Queue<u32>) -> Result<u32, &'static str> {
        let (mut sum, mut a_open, mut b_open) = (0, true, true);
        while a_open || b_open {
            // A closed, drained queue stays ready (binding None each time).
            select! {
                x = a => match x {
                    Some(x) => sum += x,
                    None => a_open = false,
                },
                x = b => match x {
                    Some(x) => sum += x,
                    None => b_open = false,
                },
                default => return Err("nothing ready"),
            }
        }
        Ok(sum)
    }
    run(|| {
        let (a, b) = (Queue::new(), Queue::new());
        for i in 1..=3 {
            a.put(i).unwrap();
            b.put(10 * i).unwrap();
        }
        a.close();
        b.close();
        assert_eq!(drain(&a, &b), Ok(66));
        let (c, d) = (Queue::new(), Queue::new());
        assert_eq!(drain(&c, &d), Err("nothing ready"));
    })
    .unwrap();
}

#[test]
fn select_timeout_and_default_arms() {
    run(|| {
        let never = Event::new();
        let result = AsyncResult::new();
        let got = select! {
            () = never => "event",
            timeout(ms(10)) => "timeout",
        };
        assert_eq!(got, "timeout");
        let got = select! {
            () = &never => 0,
            default => 1,
        };
        assert_eq!(got, 1);
        result.set(5u8);
        let got = select! {
            () = never => 0,
            v = result => v,
            default => 1,
        };
        assert_eq!(got, 5, "a ready arm wins over default");
        // Only a timeout: a plain sleep.
        let slept = select! { timeout(ms(1)) => true };
        assert!(slept);
    })
    .unwrap();
}

#[test]
fn select_waits_on_join_handles_and_parks_until_one_is_ready() {
    run(|| {
        let slow = spawn(|| {
            sleep(LONG);
            1
        });
        let fast = spawn(|| {
            sleep(ms(5));
            2
        });
        let winner = bounded(|| {
            select! {
                () = slow => "slow",
                () = fast => "fast",
            }
        });
        assert_eq!(winner, "fast");
        assert_eq!(fast.join().unwrap(), 2);
        slow.kill();
    })
    .unwrap();
}

/// Go's TestSelectFairness: with two sources always ready, each is picked
/// about half of the time.
#[test]
fn select_is_fair_between_always_ready_arms() {
    run(|| {
        const TRIALS: usize = 10_000;
        let (a, b) = (Event::new(), Event::new());
        a.set();
        b.set();
        let mut counts = [0usize; 2];
        for _ in 0..TRIALS {
            select! {
                () = a => counts[0] += 1,
                () = b => counts[1] += 1,
            }
        }
        // Binomial(10000, 0.5): sd 50; 4500 is ten deviations away.
        assert!(counts.iter().all(|&c| c > 4_500), "unfair: {counts:?}");

        // Same with queues that always have items.
        let (q1, q2) = (Queue::new(), Queue::new());
        let mut counts = [0usize; 2];
        for _ in 0..TRIALS {
            q1.put(()).unwrap();
            q2.put(()).unwrap();
            select! {
                _ = q1 => counts[0] += 1,
                _ = q2 => counts[1] += 1,
            }
        }
        assert!(counts.iter().all(|&c| c > 4_500), "unfair: {counts:?}");
    })
    .unwrap();
}

#[test]
#[should_panic(expected = "wait for ever")]
fn wait_any_on_nothing_is_refused() {
    wait_any(&[]);
}
