//! The `queue` command: queues between tasks, on each system.
//!
//! - **queue_pingpong**: two tasks pass a counter back and forth through two
//!   unbounded queues; time per round trip (two puts, two gets, two
//!   switches). greenhub: two green threads of one hub, `sync::Queue`;
//!   tokio: two tasks on a current-thread runtime, `mpsc::unbounded_channel`;
//!   threads: two OS threads, `crossbeam_channel::unbounded`.
//! - **queue_throughput**: one producer and four consumers move N items
//!   through a queue bounded at [`CAPACITY`]; items per second, from the
//!   first put until every consumer has seen the close. greenhub: five green
//!   threads of one hub, `Queue::bounded`; tokio: five tasks on a
//!   current-thread runtime, `mpsc::channel` — single-consumer, so the four
//!   consumers share its receiver behind tokio's `Mutex`, the usual way;
//!   threads: five OS threads, `crossbeam_channel::bounded`.
//!
//! Consumers add up what they get, and the sum is checked: a lost or doubled
//! item is a refusal, not a figure. Each function runs in a fresh child
//! process and reports with [`report::emit_ok`] / [`report::emit_refused`].

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::report::{self, emit_ok, emit_refused, Metrics, System, Value};

/// The bound of the throughput benchmark's queue.
pub const CAPACITY: usize = 1024;
/// Consumers in the throughput benchmark.
pub const CONSUMERS: usize = 4;
/// The queues are compared with greenhub's default stacks only.
const NOT_COMPACT: &str = "the queue command measures greenhub with dedicated stacks only";
/// Round trips run before the clock starts (caches, allocator, stacks).
const WARM_UP: usize = 10_000;

pub fn throughput_metrics(items: usize, elapsed: Duration) -> Metrics {
    vec![
        (
            "per_sec",
            Value::float(items as f64 / elapsed.as_secs_f64().max(1e-9), 0),
        ),
        ("items", Value::Int(items as i64)),
        ("wall_s", Value::float(elapsed.as_secs_f64(), 4)),
    ]
}

/// Reports a throughput run whose consumers saw `got` items adding up to
/// `sum`, out of `0..items`.
fn report_throughput(items: usize, got: (u64, u64), elapsed: Duration) {
    let expected = (
        items as u64,
        (items as u64).saturating_sub(1) * items as u64 / 2,
    );
    if got != expected {
        return emit_refused(
            None,
            &format!(
                "consumers got {} items summing to {}; expected {} summing to {}",
                got.0, got.1, expected.0, expected.1
            ),
        );
    }
    emit_ok(None, &throughput_metrics(items, elapsed));
}

fn add((n1, s1): (u64, u64), (n2, s2): (u64, u64)) -> (u64, u64) {
    (n1 + n2, s1 + s2)
}

pub fn pingpong(system: System, round_trips: usize) {
    match system {
        System::Greenhub => greenhub_pingpong(round_trips),
        System::Tokio => tokio_pingpong(round_trips),
        System::Threads => crossbeam_pingpong(round_trips),
        System::GreenhubCompact => emit_refused(None, NOT_COMPACT),
        System::Floor => emit_refused(None, "not a runtime"),
    }
}

pub fn throughput(system: System, items: usize) {
    match system {
        System::Greenhub => greenhub_throughput(items),
        System::Tokio => tokio_throughput(items),
        System::Threads => crossbeam_throughput(items),
        System::GreenhubCompact => emit_refused(None, NOT_COMPACT),
        System::Floor => emit_refused(None, "not a runtime"),
    }
}

// ---------------------------------------------------------------------------
// greenhub

fn on_hub(f: impl FnOnce() + 'static) {
    if let Err(e) = greenhub::run(f) {
        emit_refused(None, &format!("greenhub::run: {e}"));
    }
}

fn greenhub_pingpong(round_trips: usize) {
    use greenhub::sync::Queue;
    on_hub(move || {
        let ping = Rc::new(Queue::new());
        let pong = Rc::new(Queue::new());
        let echo = {
            let (ping, pong) = (ping.clone(), pong.clone());
            greenhub::spawn(move || {
                while let Ok(n) = ping.get() {
                    pong.put(n + 1).expect("pong is never closed");
                }
            })
        };
        let trip = |n: u64| {
            ping.put(n).expect("ping is open");
            pong.get().expect("pong is never closed")
        };
        for i in 0..WARM_UP as u64 {
            trip(i);
        }
        let start = Instant::now();
        let mut n = 0;
        for _ in 0..round_trips {
            n = trip(n);
        }
        let elapsed = start.elapsed();
        ping.close();
        if let Err(e) = echo.join() {
            return emit_refused(None, &format!("the echo green thread failed: {e}"));
        }
        if n != round_trips as u64 {
            return emit_refused(None, &format!("counted {n} round trips"));
        }
        emit_ok(None, &report::pingpong_metrics(round_trips, elapsed));
    });
}

fn greenhub_throughput(items: usize) {
    use greenhub::sync::Queue;
    on_hub(move || {
        let queue = Rc::new(Queue::bounded(CAPACITY));
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let q = queue.clone();
                greenhub::spawn(move || {
                    let (mut n, mut sum) = (0u64, 0u64);
                    while let Ok(v) = q.get() {
                        n += 1;
                        sum += v;
                    }
                    (n, sum)
                })
            })
            .collect();
        greenhub::yield_now(); // the consumers start and park
        let start = Instant::now();
        for i in 0..items as u64 {
            queue.put(i).expect("the queue is open");
        }
        queue.close();
        let mut got = (0, 0);
        for c in consumers {
            match c.join() {
                Ok(r) => got = add(got, r),
                Err(e) => return emit_refused(None, &format!("a consumer failed: {e}")),
            }
        }
        report_throughput(items, got, start.elapsed());
    });
}

// ---------------------------------------------------------------------------
// tokio

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            emit_refused(None, &format!("cannot build the runtime: {e}"));
            None
        }
    }
}

fn tokio_pingpong(round_trips: usize) {
    use tokio::sync::mpsc;
    let Some(rt) = runtime() else { return };
    rt.block_on(async move {
        let (ping_tx, mut ping_rx) = mpsc::unbounded_channel::<u64>();
        let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<u64>();
        let echo = tokio::spawn(async move {
            while let Some(n) = ping_rx.recv().await {
                if pong_tx.send(n + 1).is_err() {
                    break;
                }
            }
        });
        for i in 0..WARM_UP as u64 {
            ping_tx.send(i).expect("the echo task runs");
            pong_rx.recv().await.expect("the echo task runs");
        }
        let start = Instant::now();
        let mut n = 0;
        for _ in 0..round_trips {
            ping_tx.send(n).expect("the echo task runs");
            n = pong_rx.recv().await.expect("the echo task runs");
        }
        let elapsed = start.elapsed();
        drop(ping_tx);
        if let Err(e) = echo.await {
            return emit_refused(None, &format!("the echo task failed: {e}"));
        }
        if n != round_trips as u64 {
            return emit_refused(None, &format!("counted {n} round trips"));
        }
        emit_ok(None, &report::pingpong_metrics(round_trips, elapsed));
    });
}

fn tokio_throughput(items: usize) {
    use tokio::sync::{mpsc, Mutex};
    let Some(rt) = runtime() else { return };
    rt.block_on(async move {
        let (tx, rx) = mpsc::channel::<u64>(CAPACITY);
        let rx = Arc::new(Mutex::new(rx));
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let (mut n, mut sum) = (0u64, 0u64);
                    loop {
                        let next = rx.lock().await.recv().await;
                        match next {
                            Some(v) => {
                                n += 1;
                                sum += v;
                            }
                            None => return (n, sum),
                        }
                    }
                })
            })
            .collect();
        tokio::task::yield_now().await; // the consumers start and park
        let start = Instant::now();
        for i in 0..items as u64 {
            tx.send(i).await.expect("the consumers run");
        }
        drop(tx);
        let mut got = (0, 0);
        for c in consumers {
            match c.await {
                Ok(r) => got = add(got, r),
                Err(e) => return emit_refused(None, &format!("a consumer failed: {e}")),
            }
        }
        report_throughput(items, got, start.elapsed());
    });
}

// ---------------------------------------------------------------------------
// OS threads and crossbeam-channel

fn crossbeam_pingpong(round_trips: usize) {
    use crossbeam_channel::unbounded;
    let (ping_tx, ping_rx) = unbounded::<u64>();
    let (pong_tx, pong_rx) = unbounded::<u64>();
    let echo = std::thread::spawn(move || {
        while let Ok(n) = ping_rx.recv() {
            if pong_tx.send(n + 1).is_err() {
                break;
            }
        }
    });
    let warm_up = WARM_UP.min(round_trips);
    for i in 0..warm_up as u64 {
        ping_tx.send(i).expect("the echo thread runs");
        pong_rx.recv().expect("the echo thread runs");
    }
    let start = Instant::now();
    let mut n = 0;
    for _ in 0..round_trips {
        ping_tx.send(n).expect("the echo thread runs");
        n = pong_rx.recv().expect("the echo thread runs");
    }
    let elapsed = start.elapsed();
    drop(ping_tx);
    if echo.join().is_err() {
        return emit_refused(None, "the echo thread panicked");
    }
    if n != round_trips as u64 {
        return emit_refused(None, &format!("counted {n} round trips"));
    }
    emit_ok(None, &report::pingpong_metrics(round_trips, elapsed));
}

fn crossbeam_throughput(items: usize) {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAPACITY);
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let (mut n, mut sum) = (0u64, 0u64);
                for v in rx {
                    n += 1;
                    sum += v;
                }
                (n, sum)
            })
        })
        .collect();
    drop(rx);
    let start = Instant::now();
    for i in 0..items as u64 {
        tx.send(i).expect("the consumers run");
    }
    drop(tx);
    let mut got = (0, 0);
    for c in consumers {
        match c.join() {
            Ok(r) => got = add(got, r),
            Err(_) => return emit_refused(None, "a consumer thread panicked"),
        }
    }
    report_throughput(items, got, start.elapsed());
}
