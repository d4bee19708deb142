//! Go's channel tests, ported to greenhub's `Channel` (Go's unbuffered
//! `chan`) and `Queue` (a buffered `chan`), in the spirit of
//! crossbeam-channel's `tests/golang.rs`. Go's `close` + receive of the zero
//! value becomes `Err(Closed)`; `select` with `default` becomes `try_*`.
//! The tests that need `select` proper live with `wait_any`.
//!
//! Sources: Go's `test/chan/{sieve1,goroutines,fifo,nonblock}.go` and
//! `runtime/chan_test.go` (`TestChan`, `TestMultiConsumer`,
//! `TestNonblockRecvRace`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use greenhub::sync::{Channel, Closed, GetTimeoutError, Queue, TryGetError, TryPutError};
use greenhub::{run, spawn, with_timeout, yield_now, JoinError, JoinHandle};

const BOUND: Duration = Duration::from_secs(20);

fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    with_timeout(BOUND, || h.join()).expect("join did not finish in time")
}

/// `test/chan/sieve1.go`: the concurrent prime sieve, one green thread per
/// prime found, each filtering the stream from the previous one.
#[test]
fn prime_sieve() {
    fn generate(ch: Rc<Channel<u32>>) {
        for i in 2.. {
            if ch.put(i).is_err() {
                return; // the sieve is done
            }
        }
    }

    fn filter(input: Rc<Channel<u32>>, output: Rc<Channel<u32>>, prime: u32) {
        for i in &*input {
            if i % prime != 0 && output.put(i).is_err() {
                break;
            }
        }
        input.close(); // stops the stage before this one
    }

    let primes = run(|| {
        let first = Rc::new(Channel::new());
        let g = first.clone();
        let mut threads = vec![spawn(move || generate(g))];
        let mut ch = first;
        let mut primes = Vec::new();
        for _ in 0..100 {
            let prime = with_timeout(BOUND, || ch.get().unwrap()).unwrap();
            primes.push(prime);
            let next = Rc::new(Channel::new());
            let (input, output) = (ch.clone(), next.clone());
            threads.push(spawn(move || filter(input, output, prime)));
            ch = next;
        }
        // Close the last stage: each stage then closes the one before it.
        ch.close();
        for h in threads {
            join_bounded(h).unwrap();
        }
        primes
    })
    .unwrap();
    let expected: Vec<u32> = (2..)
        .filter(|n: &u32| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0))
        .take(100)
        .collect();
    assert_eq!(primes, expected);
    assert_eq!(primes[99], 541);
}

/// Ping-pong: two green threads hand a counter back and forth 10,000
/// times through two channels.
#[test]
fn ping_pong() {
    const N: u32 = 10_000;
    run(|| {
        let (ping, pong) = (Rc::new(Channel::new()), Rc::new(Channel::new()));
        let (pi, po) = (ping.clone(), pong.clone());
        let player = spawn(move || {
            let mut hits = 0;
            for ball in &*pi {
                hits += 1;
                po.put(ball + 1).unwrap();
            }
            hits
        });
        let mut ball = 0;
        for _ in 0..N {
            ping.put(ball).unwrap();
            ball = with_timeout(BOUND, || pong.get().unwrap()).unwrap();
        }
        ping.close();
        assert_eq!(ball, N);
        assert_eq!(join_bounded(player).unwrap(), N);
    })
    .unwrap();
}

/// `test/chan/goroutines.go`: a chain of 1,000 green threads, each passing
/// the value it receives on its right, plus one, to its left.
#[test]
fn chain_of_a_thousand_green_threads() {
    const N: usize = 1_000;
    run(|| {
        let leftmost = Rc::new(Channel::new());
        let mut left = leftmost.clone();
        let mut threads = Vec::new();
        for _ in 0..N {
            let right = Rc::new(Channel::new());
            let (l, r) = (left, right.clone());
            threads.push(spawn(move || {
                let v: usize = r.get().unwrap();
                l.put(v + 1).unwrap();
            }));
            left = right;
        }
        left.put(0).unwrap();
        let got = with_timeout(BOUND, || leftmost.get().unwrap()).unwrap();
        assert_eq!(got, N);
        for h in threads {
            join_bounded(h).unwrap();
        }
    })
    .unwrap();
}

/// `test/chan/fifo.go`, AsynchFifo: a buffered channel keeps order.
#[test]
fn asynch_fifo() {
    const N: i32 = 10;
    let ch = Queue::bounded(N as usize);
    for i in 0..N {
        ch.put(i).unwrap();
    }
    for i in 0..N {
        assert_eq!(ch.try_get(), Ok(i));
    }
}

/// `test/chan/fifo.go`, SynchFifo: a chain of green threads, each of which
/// waits for its turn, sends its number on a shared unbuffered channel, and
/// passes the turn on: the numbers arrive in chain order.
#[test]
fn synch_fifo() {
    const N: usize = 100;
    run(|| {
        let ch = Rc::new(Channel::new());
        let first_turn = Rc::new(Channel::new());
        let mut turn = first_turn.clone();
        let mut threads = Vec::new();
        for i in 0..N {
            let next = Rc::new(Channel::new());
            let (ch, mine, next_turn) = (ch.clone(), turn, next.clone());
            threads.push(spawn(move || {
                mine.get().unwrap();
                ch.put(i).unwrap();
                next_turn.put(()).unwrap();
            }));
            turn = next;
        }
        let last_turn = turn;
        first_turn.put(()).unwrap();
        for i in 0..N {
            assert_eq!(with_timeout(BOUND, || ch.get().unwrap()).unwrap(), i);
        }
        with_timeout(BOUND, || last_turn.get().unwrap()).unwrap();
        for h in threads {
            join_bounded(h).unwrap();
        }
    })
    .unwrap();
}

/// `runtime/chan_test.go`, TestChan, for an unbuffered channel and buffered
/// ones of several capacities.
#[test]
fn test_chan() {
    run(|| {
        for cap in [0usize, 1, 2, 16] {
            // A receive from an empty channel blocks.
            let c = Rc::new(AnyChan::new(cap));
            let c2 = c.clone();
            let recv = spawn(move || c2.get());
            yield_now();
            yield_now();
            assert!(!recv.is_finished(), "cap {cap}: receive from empty chan");
            // A send unblocks it.
            c.put(0).unwrap();
            assert_eq!(join_bounded(recv).unwrap(), Ok(0));

            // A send to a full channel blocks.
            let c = Rc::new(AnyChan::new(cap));
            for i in 0..cap {
                c.put(i).unwrap();
            }
            let c2 = c.clone();
            let send = spawn(move || c2.put(99));
            yield_now();
            yield_now();
            assert!(!send.is_finished(), "cap {cap}: send to full chan");
            for i in 0..cap {
                assert_eq!(c.get(), Ok(i));
            }
            assert_eq!(with_timeout(BOUND, || c.get()).unwrap(), Ok(99));
            assert_eq!(join_bounded(send).unwrap(), Ok(()));

            // A receive from a closed channel returns at once: Closed, once
            // what was buffered is drained.
            let c = Rc::new(AnyChan::new(cap));
            if cap > 0 {
                c.put(7).unwrap();
            }
            c.close();
            if cap > 0 {
                assert_eq!(c.get(), Ok(7));
            }
            for _ in 0..3 {
                assert_eq!(c.get(), Err(Closed(())));
            }

            // Close unblocks a blocked receive.
            let c = Rc::new(AnyChan::new(cap));
            let c2 = c.clone();
            let recv = spawn(move || c2.get());
            yield_now();
            c.close();
            assert_eq!(join_bounded(recv).unwrap(), Err(Closed(())));

            // 100 integers are received in the order sent.
            let c = Rc::new(AnyChan::new(cap));
            let c2 = c.clone();
            let sender = spawn(move || {
                for i in 0..100 {
                    c2.put(i).unwrap();
                }
            });
            for i in 0..100 {
                assert_eq!(with_timeout(BOUND, || c.get()).unwrap(), Ok(i));
            }
            join_bounded(sender).unwrap();

            // 4 senders of 1,000 integers each: every one is received once.
            let c = Rc::new(AnyChan::new(cap));
            let senders: Vec<_> = (0..4)
                .map(|_| {
                    let c = c.clone();
                    spawn(move || {
                        for i in 0..1000 {
                            c.put(i).unwrap();
                        }
                    })
                })
                .collect();
            let mut seen = vec![0u8; 1000];
            for _ in 0..4000 {
                let v = with_timeout(BOUND, || c.get()).unwrap().unwrap();
                seen[v] += 1;
            }
            assert!(seen.iter().all(|&n| n == 4), "cap {cap}");
            for h in senders {
                join_bounded(h).unwrap();
            }
        }
    })
    .unwrap();
}

/// A Go channel of capacity `cap`: a `Channel` for 0, a bounded `Queue`
/// otherwise.
enum AnyChan {
    Unbuffered(Channel<usize>),
    Buffered(Queue<usize>),
}

impl AnyChan {
    fn new(cap: usize) -> Self {
        match cap {
            0 => AnyChan::Unbuffered(Channel::new()),
            n => AnyChan::Buffered(Queue::bounded(n)),
        }
    }
    fn put(&self, v: usize) -> Result<(), Closed<usize>> {
        match self {
            AnyChan::Unbuffered(c) => c.put(v),
            AnyChan::Buffered(q) => q.put(v),
        }
    }
    fn get(&self) -> Result<usize, Closed> {
        match self {
            AnyChan::Unbuffered(c) => c.get(),
            AnyChan::Buffered(q) => q.get(),
        }
    }
    fn close(&self) {
        match self {
            AnyChan::Unbuffered(c) => c.close(),
            AnyChan::Buffered(q) => q.close(),
        }
    }
}

/// `runtime/chan_test.go`, TestMultiConsumer: one producer, several
/// consumers on other OS threads (two hubs and a plain thread), results
/// through a second channel; the sums agree.
#[test]
fn multi_consumer() {
    const NWORK: usize = 23;
    const NITER: u64 = 5_000;
    let work = Arc::new(Queue::bounded(NWORK * 3));
    let results = Arc::new(Queue::bounded(NWORK * 3));
    let consumers: Vec<_> = (0..3)
        .map(|t| {
            let (q, r) = (work.clone(), results.clone());
            std::thread::spawn(move || {
                let consume = move || {
                    let mut count = 0u64;
                    loop {
                        match q.get_timeout(BOUND) {
                            Ok(v) => {
                                count += 1;
                                r.put_timeout(v, BOUND).unwrap();
                            }
                            Err(GetTimeoutError::Closed) => return count,
                            Err(GetTimeoutError::Timeout) => panic!("lost wake-up"),
                        }
                    }
                };
                if t < 2 {
                    // On a hub: several green consumers.
                    run(move || {
                        let consume = Rc::new(consume);
                        let hs: Vec<_> = (0..4)
                            .map(|_| {
                                let c = consume.clone();
                                spawn(move || c())
                            })
                            .collect();
                        hs.into_iter().map(|h| join_bounded(h).unwrap()).sum()
                    })
                    .unwrap()
                } else {
                    consume()
                }
            })
        })
        .collect();
    let (w, r) = (work.clone(), results.clone());
    let producer = std::thread::spawn(move || {
        run(move || {
            let mut expect = 0u64;
            for i in 0..NITER {
                let v = i * 7 % 101;
                expect += v;
                with_timeout(BOUND, || w.put(v).unwrap()).unwrap();
            }
            w.close();
            expect
        })
        .unwrap()
    });
    let collector = std::thread::spawn(move || {
        let (mut n, mut sum) = (0u64, 0u64);
        while n < NITER {
            sum += r.get_timeout(BOUND).expect("a result");
            n += 1;
        }
        (n, sum)
    });
    let expect = producer.join().unwrap();
    let consumed: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    let (n, sum) = collector.join().unwrap();
    assert_eq!(consumed, NITER);
    assert_eq!(n, NITER);
    assert_eq!(sum, expect);
}

/// `runtime/chan_test.go`, TestNonblockRecvRace: a buffered item is still
/// there for a non-blocking receive racing with `close`.
#[test]
fn nonblock_recv_race() {
    for _ in 0..200 {
        let c = Arc::new(Queue::bounded(1));
        c.put(1).unwrap();
        let c2 = c.clone();
        let receiver = std::thread::spawn(move || c2.try_get());
        c.close();
        assert_eq!(receiver.join().unwrap(), Ok(1), "try_get lost the item");
        assert_eq!(c.try_get(), Err(TryGetError::Closed));
    }
}

/// `test/chan/nonblock.go`: non-blocking sends and receives succeed exactly
/// when a partner (or buffer room, or a buffered item) is there.
#[test]
fn nonblock() {
    run(|| {
        // Unbuffered: nothing without a partner.
        let c = Rc::new(Channel::new());
        assert_eq!(c.try_get(), Err(TryGetError::Empty));
        assert_eq!(c.try_put(1), Err(TryPutError::Full(1)));
        // A receiver waiting: the non-blocking send goes through.
        let c2 = c.clone();
        let recv = spawn(move || c2.get());
        let mut sent = false;
        for _ in 0..10 {
            yield_now();
            if c.try_put(2).is_ok() {
                sent = true;
                break;
            }
        }
        assert!(sent);
        assert_eq!(join_bounded(recv).unwrap(), Ok(2));
        // A sender waiting: the non-blocking receive goes through.
        let c2 = c.clone();
        let send = spawn(move || c2.put(3));
        let mut got = None;
        for _ in 0..10 {
            yield_now();
            if let Ok(v) = c.try_get() {
                got = Some(v);
                break;
            }
        }
        assert_eq!(got, Some(3));
        assert_eq!(join_bounded(send).unwrap(), Ok(()));

        // Buffered: room and items, no partner needed.
        let q = Queue::bounded(1);
        assert_eq!(q.try_put(4), Ok(()));
        assert_eq!(q.try_put(5), Err(TryPutError::Full(5)));
        assert_eq!(q.try_get(), Ok(4));
        assert_eq!(q.try_get(), Err(TryGetError::Empty));
    })
    .unwrap();
}
