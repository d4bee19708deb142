//! Micro-benchmarks of the core paths: `cargo bench -p greenhub`.
//!
//! Plain timing loops (no framework): each prints ns per operation, the
//! median of five runs. The talk's programs and the comparisons with tokio and
//! OS threads live in the bench binary (`greenhub-bench`).

use std::time::{Duration, Instant};

use greenhub::sync::Event;

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn report(name: &str, runs: Vec<f64>) {
    println!("{name:<40} {:>10.1} ns", median(runs));
}

/// Two green threads switching through `yield_now`: one round trip is two
/// switches into the hub and two out.
fn yield_round_trip(iters: u64) -> f64 {
    greenhub::run(move || {
        let other = greenhub::spawn(move || {
            for _ in 0..iters {
                greenhub::yield_now();
            }
        });
        let start = Instant::now();
        for _ in 0..iters {
            greenhub::yield_now();
        }
        other.join().unwrap();
        start.elapsed().as_nanos() as f64 / iters as f64
    })
    .unwrap()
}

/// Ping-pong through two Events.
fn event_ping_pong(iters: u64) -> f64 {
    greenhub::run(move || {
        let ping = std::rc::Rc::new((Event::new(), Event::new()));
        let pong = ping.clone();
        let other = greenhub::spawn(move || {
            for _ in 0..iters {
                pong.0.wait();
                pong.0.clear();
                pong.1.set();
            }
        });
        let start = Instant::now();
        for _ in 0..iters {
            ping.0.set();
            ping.1.wait();
            ping.1.clear();
        }
        other.join().unwrap();
        start.elapsed().as_nanos() as f64 / iters as f64
    })
    .unwrap()
}

/// Spawn and join trivial green threads in batches, stacks already pooled.
fn spawn_join(batches: u64, batch: u64) -> f64 {
    greenhub::run(move || {
        let round = || {
            for _ in 0..batches {
                let handles: Vec<_> = (0..batch).map(|i| greenhub::spawn(move || i)).collect();
                for h in handles {
                    std::hint::black_box(h.join().unwrap());
                }
            }
        };
        round(); // warm the stack pool
        let start = Instant::now();
        round();
        start.elapsed().as_nanos() as f64 / (batches * batch) as f64
    })
    .unwrap()
}

/// A sleep of zero: timer insert, park, expiry, wake.
fn sleep_zero(iters: u64) -> f64 {
    greenhub::run(move || {
        let start = Instant::now();
        for _ in 0..iters {
            greenhub::sleep(Duration::ZERO);
        }
        start.elapsed().as_nanos() as f64 / iters as f64
    })
    .unwrap()
}

/// Two green threads sharing one compact execution stack, each with `live`
/// bytes of frame below its entry: every switch evicts one and restores the
/// other. Round trip = two switches.
fn compact_switch<const LIVE: usize>(iters: u64) -> f64 {
    // SAFETY: nothing here lends stack memory out.
    let hub = unsafe { greenhub::HubBuilder::new().compact_stacks(1, 64 * 1024) };
    hub.run(move || {
        fn side<const LIVE: usize>(iters: u64) {
            let mut frame = [0u8; LIVE];
            std::hint::black_box(&mut frame);
            for _ in 0..iters {
                greenhub::yield_now();
            }
            std::hint::black_box(&frame);
        }
        let other = greenhub::spawn(move || side::<LIVE>(iters));
        let me = greenhub::spawn(move || {
            let start = Instant::now();
            side::<LIVE>(iters);
            start.elapsed().as_nanos() as f64 / iters as f64
        });
        other.join().unwrap();
        me.join().unwrap()
    })
    .unwrap()
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if want("yield") {
        report(
            "yield_now round trip",
            (0..5).map(|_| yield_round_trip(1_000_000)).collect(),
        );
    }
    if want("event") {
        report(
            "Event ping-pong round trip",
            (0..5).map(|_| event_ping_pong(1_000_000)).collect(),
        );
    }
    if want("spawn") {
        report(
            "spawn + join (warm)",
            (0..5).map(|_| spawn_join(1_000, 1_000)).collect(),
        );
    }
    if want("compact") {
        report(
            "compact switch round trip, 64 B live",
            (0..5).map(|_| compact_switch::<64>(200_000)).collect(),
        );
        report(
            "compact switch round trip, 1 KiB live",
            (0..5).map(|_| compact_switch::<1024>(200_000)).collect(),
        );
        report(
            "compact switch round trip, 4 KiB live",
            (0..5).map(|_| compact_switch::<4096>(200_000)).collect(),
        );
    }
    if want("sleep") {
        report("sleep(0)", (0..5).map(|_| sleep_zero(100_000)).collect());
    }
}
