//! OS threads (`std::thread`, default stack size): the talk's baseline.
//!
//! Every task is a kernel thread with its own mapped stack (2 MiB of address
//! space by default, plus a guard page), scheduled preemptively. Creating one
//! is a `clone` and an `mmap`, a switch between two goes through the kernel's
//! scheduler, and how many can exist is bounded by `vm.max_map_count` (two
//! mappings per thread) and `kernel.threads-max`; past that `spawn` fails with
//! EAGAIN, which is reported as a refusal.
//!
//! Each function runs in a fresh child process and reports with
//! [`report::emit_ok`] / [`report::emit_refused`]; threads have one phase.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::proc;
use crate::report::{self, emit_ok, emit_progress, emit_refused};
use crate::{BATCH, PARK, SLEEP};

fn spawn<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    thread::Builder::new().spawn(f)
}

fn refusal(spawned: usize, n: usize, e: &std::io::Error) -> String {
    format!(
        "thread {} of {} not spawned: {e}",
        report::group(spawned as u64 + 1),
        report::group(n as u64)
    )
}

/// Joins threads, returning the first panic as text.
fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(v) => out.push(v),
            Err(_) if first_err.is_none() => first_err = Some("a thread panicked".to_string()),
            Err(_) => {}
        }
    }
    first_err.map_or(Ok(out), Err)
}

/// Prog 1: spawn `n` threads that each sleep 200 ms, join them all.
pub fn prog1(n: usize) {
    let f0 = proc::minor_faults().unwrap_or(0);
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        match spawn(|| thread::sleep(SLEEP)) {
            Ok(h) => {
                handles.push(h);
                emit_progress(handles.len());
            }
            Err(e) => {
                let why = refusal(handles.len(), n, &e);
                let _ = join_all(handles);
                return emit_refused(None, &why);
            }
        }
    }
    if let Err(e) = join_all(handles) {
        return emit_refused(None, &e);
    }
    let wall = start.elapsed();
    let faults = proc::minor_faults().unwrap_or(0) - f0;
    emit_ok(None, &report::prog1_metrics(wall, faults));
}

/// Prog 2: `n` threads sleeping for an hour; RSS per thread. The child
/// process ends right after the measurement, with the threads still asleep.
pub fn prog2(n: usize) {
    let parked = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(n);
    let before = match proc::rss_bytes() {
        Ok(b) => b,
        Err(e) => {
            emit_refused(None, &format!("cannot read RSS: {e}"));
            crate::end_child()
        }
    };
    for _ in 0..n {
        let parked = parked.clone();
        let r = spawn(move || {
            parked.fetch_add(1, Ordering::SeqCst);
            thread::sleep(PARK);
        });
        match r {
            Ok(h) => {
                handles.push(h);
                emit_progress(handles.len());
            }
            Err(e) => {
                emit_refused(None, &refusal(handles.len(), n, &e));
                crate::end_child()
            }
        }
    }
    while parked.load(Ordering::SeqCst) < n {
        thread::sleep(Duration::from_millis(1));
    }
    // Each thread counted itself just before its sleep: give the last ones
    // time to get into it.
    thread::sleep(Duration::from_millis(20));
    match proc::rss_bytes() {
        Ok(after) => emit_ok(None, &report::prog2_metrics(n, before, after)),
        Err(e) => emit_refused(None, &format!("cannot read RSS: {e}")),
    }
    crate::end_child()
}

/// Ping-pong: two threads and two channels; `round_trips` times A sends to B
/// and B answers.
pub fn pingpong(round_trips: usize) {
    let (to_b, from_a) = mpsc::channel::<()>();
    let (to_a, from_b) = mpsc::channel::<()>();
    let start = Instant::now();
    let a = spawn(move || {
        for _ in 0..round_trips {
            to_b.send(()).map_err(|_| "B hung up")?;
            from_b.recv().map_err(|_| "B hung up")?;
        }
        Ok::<(), &str>(())
    });
    let b = spawn(move || {
        for _ in 0..round_trips {
            from_a.recv().map_err(|_| "A hung up")?;
            to_a.send(()).map_err(|_| "A hung up")?;
        }
        Ok::<(), &str>(())
    });
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return emit_refused(None, &format!("spawn: {e}")),
    };
    match join_all(vec![a, b]) {
        Ok(r) => {
            if let Some(Err(e)) = r.into_iter().find(|r| r.is_err()) {
                return emit_refused(None, e);
            }
        }
        Err(e) => return emit_refused(None, &e),
    }
    emit_ok(
        None,
        &report::pingpong_metrics(round_trips, start.elapsed()),
    );
}

/// Spawn: spawn and join `n` threads that return a small integer, in batches.
pub fn spawn_bench(n: usize) {
    let start = Instant::now();
    let mut sum = 0u64;
    let mut done = 0;
    while done < n {
        let batch = BATCH.min(n - done);
        let mut handles = Vec::with_capacity(batch);
        for i in 0..batch {
            match spawn(move || (i % 2) as u64 + 1) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    let why = refusal(done + handles.len(), n, &e);
                    let _ = join_all(handles);
                    return emit_refused(None, &why);
                }
            }
        }
        match join_all(handles) {
            Ok(v) => sum += v.iter().sum::<u64>(),
            Err(e) => return emit_refused(None, &e),
        }
        done += batch;
    }
    let elapsed = start.elapsed();
    if sum != crate::spawn_checksum(n) {
        return emit_refused(None, &format!("wrong results: sum {sum}"));
    }
    emit_ok(None, &report::spawn_metrics(n, elapsed));
}
