//! The talk's Prog 1 in miniature: N green threads each sleep 200 ms.
//!
//! `cargo run --release --example sleepers -- 100000`
use std::time::{Duration, Instant};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let elapsed = greenhub::HubBuilder::new()
        .max_warm_stacks(n)
        .run(move || {
            let start = Instant::now();
            let handles: Vec<_> = (0..n)
                .map(|_| greenhub::spawn(|| greenhub::sleep(Duration::from_millis(200))))
                .collect();
            for h in handles {
                h.join().expect("sleeper finished");
            }
            start.elapsed()
        })
        .expect("hub ran");
    println!("{n} green threads slept 200 ms each in {elapsed:.2?}");
}
