//! The order in which green threads run: round robin on `yield_now`, wake-up
//! order of sleepers by deadline.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use greenhub::{run, sleep, spawn, yield_now};

type Log = Rc<RefCell<Vec<String>>>;

#[test]
fn yielding_green_threads_interleave() {
    let log: Log = Rc::default();
    let l = log.clone();
    run(move || {
        let worker = |n: u32| {
            let l = l.clone();
            spawn(move || {
                l.borrow_mut().push(format!("{n}A"));
                yield_now();
                l.borrow_mut().push(format!("{n}B"));
            })
        };
        let (one, two) = (worker(1), worker(2));
        one.join().unwrap();
        two.join().unwrap();
    })
    .unwrap();
    assert_eq!(*log.borrow(), ["1A", "2A", "1B", "2B"]);
}

#[test]
fn yield_is_round_robin_over_many_green_threads() {
    let log: Log = Rc::default();
    let l = log.clone();
    run(move || {
        let handles: Vec<_> = (0..3)
            .map(|n| {
                let l = l.clone();
                spawn(move || {
                    for step in 0..3 {
                        l.borrow_mut().push(format!("{n}.{step}"));
                        yield_now();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    })
    .unwrap();
    let expected: Vec<String> = (0..3)
        .flat_map(|step| (0..3).map(move |n| format!("{n}.{step}")))
        .collect();
    assert_eq!(*log.borrow(), expected);
}

#[test]
fn sleepers_wake_in_deadline_order() {
    let log: Log = Rc::default();
    let l = log.clone();
    run(move || {
        let handles: Vec<_> = [50u64, 10, 30]
            .into_iter()
            .map(|d| {
                let l = l.clone();
                spawn(move || {
                    sleep(Duration::from_millis(d));
                    l.borrow_mut().push(d.to_string());
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    })
    .unwrap();
    assert_eq!(*log.borrow(), ["10", "30", "50"]);
}
