//! greenhub: stackful green threads on a per-OS-thread hub (gevent's model).
//!
//! Each green thread has its own stack, taken from the hub's pool; only the
//! pages it touches become resident, so memory per parked task is about the
//! stack pages in use plus the task's bookkeeping. A switch is a user-space
//! context switch through the hub. Everything runs with the hub's and
//! `Builder`'s defaults, as a user gets them (32 KiB stacks), except one
//! setting, said in the output: the pool keeps up to N freed stacks warm (the
//! default keeps 65,536), as a server sized for N concurrent green threads
//! would be configured.
//!
//! Prog 1 and spawn run two rounds on the same hub: `cold` (the first, in a
//! fresh process: stacks are mapped and first touched) and `warm` (right
//! after: stacks come back from the pool), and Prog 1 reports the minor page
//! faults of each, so what the pool saves shows (and where it stops saving:
//! stacks freed beyond its warm limit are given back to the kernel and fault
//! again when reused).
//!
//! Tasks are spawned with `greenhub::Builder` so that running out of stacks is
//! an error to report (a refusal), not a panic. Each function runs in a fresh
//! child process and reports with [`report::emit_ok`] /
//! [`report::emit_refused`].

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use greenhub::sync::Event;
use greenhub::{Builder, JoinHandle};

use crate::proc;
use crate::report::{self, emit_ok, emit_progress, emit_refused};
use crate::{BATCH, PARK, PHASES, SLEEP};

fn spawn<T: 'static>(f: impl FnOnce() -> T + 'static) -> std::io::Result<JoinHandle<T>> {
    Builder::new().spawn(f)
}

fn refusal(spawned: usize, n: usize, e: &std::io::Error) -> String {
    format!(
        "green thread {} of {} not spawned: {e}",
        report::group(spawned as u64 + 1),
        report::group(n as u64)
    )
}

/// Joins green threads, returning the first failure as text.
fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(v) => out.push(v),
            Err(e) => {
                first_err.get_or_insert_with(|| format!("a green thread failed: {e}"));
            }
        }
    }
    first_err.map_or(Ok(out), Err)
}

/// Runs `f` as the main green thread of a new hub; a hub that cannot start
/// is a refusal.
fn on_hub(n: usize, f: impl FnOnce() + 'static) {
    let hub = greenhub::HubBuilder::new().max_warm_stacks(n.max(65_536));
    if let Err(e) = hub.run(f) {
        emit_refused(None, &format!("greenhub::run: {e}"));
    }
}

/// Prog 1: spawn `n` green threads that each sleep 200 ms, join them all;
/// twice on the same hub.
pub fn prog1(n: usize) {
    on_hub(n, move || {
        for phase in PHASES {
            let f0 = proc::minor_faults().unwrap_or(0);
            let start = Instant::now();
            let mut handles = Vec::with_capacity(n);
            for _ in 0..n {
                match spawn(|| greenhub::sleep(SLEEP)) {
                    Ok(h) => {
                        handles.push(h);
                        emit_progress(handles.len());
                    }
                    Err(e) => {
                        let why = refusal(handles.len(), n, &e);
                        let _ = join_all(handles);
                        return emit_refused(Some(phase), &why);
                    }
                }
            }
            if let Err(e) = join_all(handles) {
                return emit_refused(Some(phase), &e);
            }
            let wall = start.elapsed();
            let faults = proc::minor_faults().unwrap_or(0) - f0;
            emit_ok(Some(phase), &report::prog1_metrics(wall, faults));
        }
    });
}

/// Prog 2: `n` green threads sleeping for an hour; RSS per task. The child
/// process ends right after the measurement, with the green threads still
/// asleep.
pub fn prog2(n: usize) {
    on_hub(n, move || {
        let parked = Rc::new(Cell::new(0usize));
        let mut handles = Vec::with_capacity(n);
        let before = match proc::rss_bytes() {
            Ok(b) => b,
            Err(e) => {
                emit_refused(None, &format!("cannot read RSS: {e}"));
                crate::end_child()
            }
        };
        for _ in 0..n {
            let my_parked = parked.clone();
            let r = spawn(move || {
                // Nothing switches between the count and the sleep, so when
                // the main green thread runs again and sees n, all n sleep.
                my_parked.set(my_parked.get() + 1);
                greenhub::sleep(PARK);
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
        while parked.get() < n {
            greenhub::yield_now();
        }
        match proc::rss_bytes() {
            Ok(after) => emit_ok(None, &report::prog2_metrics(n, before, after)),
            Err(e) => emit_refused(None, &format!("cannot read RSS: {e}")),
        }
        crate::end_child()
    });
}

/// Ping-pong: two green threads and two `Event`s; A sets `ping` and waits on
/// `pong`, B waits on `ping`, clears it and sets `pong`.
pub fn pingpong(round_trips: usize) {
    on_hub(0, move || {
        let ping = Rc::new(Event::new());
        let pong = Rc::new(Event::new());
        let start = Instant::now();
        let a = {
            let (ping, pong) = (ping.clone(), pong.clone());
            spawn(move || {
                for _ in 0..round_trips {
                    ping.set();
                    pong.wait();
                    pong.clear();
                }
            })
        };
        let b = spawn(move || {
            for _ in 0..round_trips {
                ping.wait();
                ping.clear();
                pong.set();
            }
        });
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return emit_refused(None, &format!("spawn: {e}")),
        };
        if let Err(e) = join_all(vec![a, b]) {
            return emit_refused(None, &e);
        }
        emit_ok(
            None,
            &report::pingpong_metrics(round_trips, start.elapsed()),
        );
    });
}

/// Spawn: spawn and join `n` green threads returning a small integer, in
/// batches; twice on the same hub (the warm round takes pooled stacks).
pub fn spawn_bench(n: usize) {
    on_hub(0, move || {
        for phase in PHASES {
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
                            return emit_refused(Some(phase), &why);
                        }
                    }
                }
                match join_all(handles) {
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
