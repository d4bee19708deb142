//! Regressions found by the soundness review of the core (each test is named
//! after what broke).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use greenhub::sync::Event;
use greenhub::{sleep, spawn, with_timeout, JoinError};

/// Installs a quiet panic hook once (these tests panic on purpose).
fn quiet() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::env::var_os("GREENHUB_TEST_LOUD").is_some() {
                previous(info);
            }
        }));
    });
}

/// `thread::panicking()` counts for the whole OS thread: while one green
/// thread was parked in a destructor during its panic, no other green thread
/// could be timed out or killed.
#[test]
fn one_green_thread_unwinding_does_not_block_cancellation_of_the_others() {
    quiet();
    greenhub::run(|| {
        struct SlowDrop;
        impl Drop for SlowDrop {
            fn drop(&mut self) {
                sleep(Duration::from_millis(400));
            }
        }
        let a = spawn(|| {
            let _slow = SlowDrop;
            panic!("a panics, and its destructor parks while unwinding");
        });
        let b = spawn(|| {
            greenhub::yield_now(); // let `a` start unwinding first
            let start = Instant::now();
            let r = with_timeout(Duration::from_millis(20), || sleep(Duration::from_secs(10)));
            (r.is_err(), start.elapsed())
        });
        let c = spawn(|| sleep(Duration::from_secs(10)));
        sleep(Duration::from_millis(30));
        let killed_at = Instant::now();
        c.kill();
        assert!(matches!(c.join(), Err(JoinError::Killed)));
        let kill_took = killed_at.elapsed();
        let (timed_out, took) = b.join().unwrap();
        assert!(timed_out);
        assert!(took < Duration::from_millis(300), "timeout took {took:?}");
        assert!(
            kill_took < Duration::from_millis(300),
            "kill took {kill_took:?}"
        );
        assert!(a.join().unwrap_err().is_panic());
    })
    .unwrap();
}

/// A destructor that parks for ever during shutdown's kill-unwind could only
/// be leaked, but shutdown polled for ever whenever any other OS thread
/// existed (even an idle one that could not reach it).
#[test]
fn shutdown_does_not_wait_for_ever_on_a_local_wait_because_other_threads_exist() {
    let (done_tx, done_rx) = mpsc::channel();
    let idle = std::thread::spawn(move || {
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
    });
    let (tx, rx) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        let r = greenhub::run(|| {
            struct Stubborn;
            impl Drop for Stubborn {
                fn drop(&mut self) {
                    sleep(Duration::MAX); // parks while unwinding: never woken
                }
            }
            let _h = spawn(|| {
                let _s = Stubborn;
                sleep(Duration::from_secs(3600));
            });
            greenhub::yield_now();
            7
        });
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("run returned (leaking the stubborn green thread)");
    assert_eq!(result, Ok(7));
    runner.join().unwrap();
    let _ = done_tx.send(());
    idle.join().unwrap();
}

/// Wakes raced with the hub's own state change (store-buffering): stress a
/// green thread woken from another OS thread many times; every wake must get
/// through (the test would hang, bounded by the timeout, if one were lost).
#[test]
fn cross_thread_wakes_are_never_lost() {
    greenhub::run(|| {
        let ping = std::sync::Arc::new((Event::new(), Event::new()));
        let pong = ping.clone();
        let rounds = 5_000;
        let t = std::thread::spawn(move || {
            for _ in 0..rounds {
                assert!(pong.0.wait_timeout(Duration::from_secs(10)), "ping lost");
                pong.0.clear();
                pong.1.set();
            }
        });
        for _ in 0..rounds {
            ping.0.set();
            assert!(ping.1.wait_timeout(Duration::from_secs(10)), "pong lost");
            ping.1.clear();
        }
        t.join().unwrap();
    })
    .unwrap();
}

/// A waiter that leaves (timeout) while another OS thread wakes everyone
/// must not be woken through a freed header (the old lock-free fast path).
#[test]
fn waiters_leaving_while_another_thread_notifies_is_safe() {
    greenhub::run(|| {
        let event = std::sync::Arc::new(Event::new());
        let setter = event.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let t = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                setter.set();
                setter.clear();
                std::thread::yield_now();
            }
        });
        let finished = Rc::new(Cell::new(0));
        let handles: Vec<_> = (0..2_000u64)
            .map(|i| {
                let (event, finished) = (event.clone(), finished.clone());
                spawn(move || {
                    event.wait_timeout(Duration::from_micros(100 + i % 900));
                    finished.set(finished.get() + 1);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        t.join().unwrap();
        assert_eq!(finished.get(), 2_000);
    })
    .unwrap();
}

/// The value of a detached green thread is dropped at its end, on the green
/// thread; a destructor that panics there escaped into the hub and made `run`
/// panic.
#[test]
fn a_panicking_destructor_of_an_unjoined_result_stays_in_its_green_thread() {
    quiet();
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("Bomb::drop");
        }
    }
    let r = greenhub::run(|| {
        drop(spawn(|| Bomb)); // detached: nobody joins it
        sleep(Duration::from_millis(10));
        5
    });
    assert_eq!(r.unwrap(), 5);
}

/// Reports on stderr used `eprintln!`, which panics when stderr is a closed
/// pipe: a detached panicking green thread then took the process down.
#[test]
fn reports_on_a_closed_stderr_do_not_take_the_hub_down() {
    if std::env::var_os("GREENHUB_CLOSED_STDERR_CHILD").is_some() {
        let r = greenhub::run(|| {
            drop(spawn(|| panic!("nobody joins me")));
            sleep(Duration::from_millis(10));
            "survived"
        });
        // stdout is still open: tell the parent.
        println!("{}", r.unwrap());
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "reports_on_a_closed_stderr_do_not_take_the_hub_down",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GREENHUB_CLOSED_STDERR_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // close the read end: the child's writes fail
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child: {:?}\n{stdout}", out.status);
    assert!(stdout.contains("survived"), "{stdout}");
}
