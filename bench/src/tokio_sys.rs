//! tokio, on its current-thread runtime (time enabled): the stackless
//! counterpart of a green-thread hub on one OS thread.
//!
//! A tokio task is a heap-allocated state machine (the future) with a small
//! header; parking it keeps only that allocation, so it is the lower bound on
//! memory per task that a stackful design is compared with. Like greenhub's
//! hub, the current-thread runtime runs everything on the calling thread.
//!
//! Prog 1 and spawn run two rounds in the same runtime: `cold` (the first, in
//! a fresh process) and `warm` (right after, with the runtime's and the
//! allocator's memory already obtained). Each function runs in a fresh child
//! process and reports with [`report::emit_ok`] / [`report::emit_refused`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::{Builder, Runtime};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::proc;
use crate::report::{self, emit_ok, emit_refused};
use crate::{BATCH, PARK, PHASES, SLEEP};

fn runtime() -> Option<Runtime> {
    match Builder::new_current_thread().enable_time().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            emit_refused(None, &format!("cannot build the runtime: {e}"));
            None
        }
    }
}

/// Awaits all the handles, returning the first failure as text.
async fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => {
                first_err.get_or_insert_with(|| format!("a task failed: {e}"));
            }
        }
    }
    first_err.map_or(Ok(out), Err)
}

/// Prog 1: spawn `n` tasks that each sleep 200 ms, await them all; twice.
pub fn prog1(n: usize) {
    let Some(rt) = runtime() else { return };
    rt.block_on(async {
        for phase in PHASES {
            let f0 = proc::minor_faults().unwrap_or(0);
            let start = Instant::now();
            let mut handles = Vec::with_capacity(n);
            for _ in 0..n {
                // The sleep starts when the task first runs, as a green
                // thread's does.
                handles.push(tokio::spawn(async { tokio::time::sleep(SLEEP).await }));
            }
            if let Err(e) = join_all(handles).await {
                return emit_refused(Some(phase), &e);
            }
            let wall = start.elapsed();
            let faults = proc::minor_faults().unwrap_or(0) - f0;
            emit_ok(Some(phase), &report::prog1_metrics(wall, faults));
        }
    });
}

/// Prog 2: `n` tasks sleeping for an hour; RSS per task. The child process
/// ends right after the measurement, with the tasks still asleep.
pub fn prog2(n: usize) {
    let Some(rt) = runtime() else { return };
    rt.block_on(async {
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
            handles.push(tokio::spawn(async move {
                // Counted in the same poll that starts the sleep (its timer
                // is registered on its first poll), so a count of n means
                // all n are parked.
                parked.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(PARK).await;
            }));
        }
        while parked.load(Ordering::Relaxed) < n {
            tokio::task::yield_now().await;
        }
        match proc::rss_bytes() {
            Ok(after) => emit_ok(None, &report::prog2_metrics(n, before, after)),
            Err(e) => emit_refused(None, &format!("cannot read RSS: {e}")),
        }
        crate::end_child()
    });
}

/// Ping-pong: two tasks and two `Notify`s (each holds one permit, so a
/// notification sent before the other side waits is not lost).
pub fn pingpong(round_trips: usize) {
    let Some(rt) = runtime() else { return };
    rt.block_on(async {
        let ping = Arc::new(Notify::new());
        let pong = Arc::new(Notify::new());
        let start = Instant::now();
        let a = {
            let (ping, pong) = (ping.clone(), pong.clone());
            tokio::spawn(async move {
                for _ in 0..round_trips {
                    ping.notify_one();
                    pong.notified().await;
                }
            })
        };
        let b = tokio::spawn(async move {
            for _ in 0..round_trips {
                ping.notified().await;
                pong.notify_one();
            }
        });
        if let Err(e) = join_all(vec![a, b]).await {
            return emit_refused(None, &e);
        }
        emit_ok(
            None,
            &report::pingpong_metrics(round_trips, start.elapsed()),
        );
    });
}

/// Spawn: spawn and await `n` tasks returning a small integer, in batches;
/// twice.
pub fn spawn_bench(n: usize) {
    let Some(rt) = runtime() else { return };
    rt.block_on(async {
        for phase in PHASES {
            let start = Instant::now();
            let mut sum = 0u64;
            let mut done = 0;
            while done < n {
                let batch = BATCH.min(n - done);
                let mut handles = Vec::with_capacity(batch);
                for i in 0..batch {
                    handles.push(tokio::spawn(async move { (i % 2) as u64 + 1 }));
                }
                match join_all(handles).await {
                    Ok(v) => sum += v.iter().sum::<u64>(),
                    Err(e) => return emit_refused(Some(phase), &e),
                }
                done += batch;
            }
            let elapsed = start.elapsed();
            if sum != crate::spawn_checksum(n) {
                return emit_refused(Some(phase), &format!("wrong results: sum {sum}"));
            }
            emit_ok(Some(phase), &report::spawn_metrics(n, elapsed));
        }
    });
}
