//! A three-stage pipeline on green threads: a producer, a bounded pool of
//! workers, and a collector, talking through queues.
//!
//! `cargo run --release -p greenhub --example pipeline`
use std::rc::Rc;
use std::time::Duration;

use greenhub::sync::{Pool, Queue};

fn main() -> Result<(), greenhub::Error> {
    greenhub::run(|| {
        let jobs = Rc::new(Queue::bounded(100));
        let results = Rc::new(Queue::new());

        // Producer: 10,000 jobs, then close (getters drain, then see Closed).
        let producer = {
            let jobs = jobs.clone();
            greenhub::spawn(move || {
                for n in 1..=10_000u64 {
                    jobs.put(n).unwrap();
                }
                jobs.close();
            })
        };

        // Workers: at most 50 at once, each "waiting on I/O" for 1 ms.
        let pool = Pool::new(50);
        for job in jobs.iter() {
            let results = results.clone();
            pool.spawn(move || {
                greenhub::sleep(Duration::from_millis(1));
                results.put(job * job).unwrap();
            });
        }
        pool.join();
        producer.join().unwrap();
        results.close();

        let sum: u64 = results.iter().sum();
        println!("sum of squares 1..=10000 = {sum}");
        assert_eq!(sum, 10_000 * 10_001 * 20_001 / 6);
    })
}
