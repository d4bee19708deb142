//! greenhub: stackful green threads on a per-OS-thread hub (gevent's model),
//! measured as two systems, one per way of giving green threads stacks
//! ([`Stacks`]):
//!
//! - `greenhub`: each green thread has its own stack, taken from the hub's
//!   pool; only the pages it touches become resident, so memory per parked
//!   task is about the stack pages in use plus the task's bookkeeping.
//! - `greenhub-compact`: compact stacks (greenlet's technique): green threads
//!   take turns on [`COMPACT_STACKS`] shared execution stacks of
//!   [`COMPACT_STACK_SIZE`] bytes each, and a suspended one keeps only the
//!   stack bytes it really used, copied to the heap; a switch to a green
//!   thread whose execution stack holds another's bytes copies them out and
//!   its own back in.
//!
//! A switch is a user-space context switch through the hub. Everything runs
//! with the hub's and `Builder`'s defaults, as a user gets them (32 KiB
//! stacks), except two settings, said in the output: the stack mode, set
//! explicitly either way (a build with `--cfg greenhub_compact` would change
//! the default), and the pool keeps up to N freed stacks warm (the default
//! keeps 65,536), as a server sized for N concurrent green threads would be
//! configured.
//!
//! Prog 1 and spawn run two rounds on the same hub: `cold` (the first, in a
//! fresh process: stacks are mapped and first touched) and `warm` (right
//! after: stacks come back from the pool), and Prog 1 reports the minor page
//! faults of each, so what the pool saves shows (and where it stops saving:
//! stacks freed beyond its warm limit are given back to the kernel and fault
//! again when reused).
//!
//! [`switch`] measures the copying path of compact stacks on its own: two
//! green threads on ONE execution stack, each with a live frame of a given
//! size, switching back and forth; beside it, the same on dedicated stacks,
//! the least its copying can cost (`copy_floor`), and the least a switch
//! through a library call can cost on this machine (`switch_floor`).
//! [`switch_parked`] measures the stack bytes a compact green thread used
//! when it parked in `sleep` or `Event::wait`, and what it keeps on the heap.
//!
//! Tasks are spawned with `greenhub::Builder` so that running out of stacks is
//! an error to report (a refusal), not a panic. Each function runs in a fresh
//! child process and reports with [`report::emit_ok`] /
//! [`report::emit_refused`].

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use std::hint::black_box;
use std::time::Duration;

use corosensei::{Coroutine, Yielder};
use greenhub::sync::Event;
use greenhub::{Builder, HubBuilder, JoinHandle};

use crate::proc;
use crate::report::{self, emit_ok, emit_progress, emit_refused, Parked, System};
use crate::{BATCH, PARK, PHASES, SLEEP};

/// Shared execution stacks of a `greenhub-compact` hub.
pub const COMPACT_STACKS: usize = 8;
/// Usable bytes of each of them.
pub const COMPACT_STACK_SIZE: usize = 256 * 1024;
/// The `switch` benchmark's hub: one shared execution stack of 64 KiB, so
/// that its two green threads take turns on it.
pub const SWITCH_STACK_SIZE: usize = 64 * 1024;
/// The `switch` benchmark's runs; the median is reported.
pub const SWITCH_RUNS: usize = 5;
/// How often [`switch_parked`]'s main green thread yields before it reads
/// the evicted bytes: enough for the parked green thread to park and the
/// second one to run and finish.
const PARKED_YIELDS: usize = 4;

/// How a hub's green threads get their stacks: the two greenhub systems.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stacks {
    /// A stack of its own for each green thread (system `greenhub`).
    Dedicated,
    /// [`COMPACT_STACKS`] shared execution stacks of [`COMPACT_STACK_SIZE`]
    /// (system `greenhub-compact`).
    Compact,
}

impl Stacks {
    /// The mode a greenhub system measures (dedicated for any other).
    pub fn of(system: System) -> Stacks {
        match system {
            System::GreenhubCompact => Stacks::Compact,
            _ => Stacks::Dedicated,
        }
    }

    /// A hub in this mode, with the hub's defaults otherwise.
    fn hub(self) -> HubBuilder {
        match self {
            Stacks::Dedicated => HubBuilder::new().dedicated_stacks(),
            Stacks::Compact => compact_hub(COMPACT_STACKS, COMPACT_STACK_SIZE),
        }
    }
}

/// A hub with compact stacks: `stacks` shared execution stacks of
/// `stack_size` usable bytes.
#[allow(unsafe_code)]
fn compact_hub(stacks: usize, stack_size: usize) -> HubBuilder {
    // SAFETY: `compact_stacks` requires that nothing outside a parked green
    // thread reads or writes its stack. The bench's green threads lend no
    // stack memory to anyone: they only sleep, yield, wait on `Event`s and
    // return values through their `JoinHandle`s; what they share (counters,
    // events) is on the heap behind `Rc`; they start no OS threads, scoped or
    // not, hand no pointer into their stacks to another thread, and do no
    // completion-based I/O (the kernel writes into none of their buffers).
    unsafe { HubBuilder::new().compact_stacks(stacks, stack_size) }
}

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

/// Runs `f` as the main green thread of a new hub in the `stacks` mode, its
/// pool keeping up to `n` freed stacks warm (at least the default 65,536); a
/// hub that cannot start is a refusal.
fn on_hub(stacks: Stacks, n: usize, f: impl FnOnce() + 'static) {
    let hub = stacks.hub().max_warm_stacks(n.max(65_536));
    if let Err(e) = hub.run(f) {
        emit_refused(None, &format!("greenhub::run: {e}"));
    }
}

/// Prog 1: spawn `n` green threads that each sleep 200 ms, join them all;
/// twice on the same hub.
pub fn prog1(stacks: Stacks, n: usize) {
    on_hub(stacks, n, move || {
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
pub fn prog2(stacks: Stacks, n: usize) {
    on_hub(stacks, n, move || {
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
pub fn pingpong(stacks: Stacks, round_trips: usize) {
    on_hub(stacks, 0, move || {
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
pub fn spawn_bench(stacks: Stacks, n: usize) {
    on_hub(stacks, 0, move || {
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

/// Switch: two green threads of one hub, each holding a live frame of
/// `live` bytes (`[u8; live]`, kept alive across the loop), hand the CPU back
/// and forth with `yield_now`; time per round trip (two switches), the median
/// of [`SWITCH_RUNS`] runs of `round_trips`, each on a fresh hub.
///
/// Compact: both share ONE execution stack ([`SWITCH_STACK_SIZE`]), so every
/// switch evicts one (copies its used bytes to the heap) and restores the
/// other; `image_bytes` is what the evicted one keeps, sampled halfway.
/// Dedicated: the same without copying, the baseline.
pub fn switch(stacks: Stacks, live: usize, round_trips: usize) {
    let run = match live {
        64 => switch_run::<64>,
        1024 => switch_run::<1024>,
        4096 => switch_run::<4096>,
        _ => {
            return emit_refused(
                None,
                &format!("no frame of {live} B: the sizes are 64, 1024, 4096"),
            )
        }
    };
    let mut times = Vec::with_capacity(SWITCH_RUNS);
    let mut image = (0, 0);
    for _ in 0..SWITCH_RUNS {
        let hub = match stacks {
            Stacks::Dedicated => HubBuilder::new().dedicated_stacks(),
            Stacks::Compact => compact_hub(1, SWITCH_STACK_SIZE),
        };
        match hub.run(move || run(round_trips)) {
            Ok(Ok((elapsed, bytes))) => {
                times.push(elapsed);
                image = bytes;
            }
            Ok(Err(e)) => return emit_refused(None, &e),
            Err(e) => return emit_refused(None, &format!("greenhub::run: {e}")),
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let mut metrics = report::pingpong_metrics(round_trips, median);
    metrics.push(("runs", report::Value::Int(SWITCH_RUNS as i64)));
    if stacks == Stacks::Compact {
        if image.0 == 0 {
            return emit_refused(None, "no green thread was evicted: nothing was copied");
        }
        metrics.push(("image_bytes", report::Value::Int(image.0 as i64)));
        metrics.push(("kept_bytes", report::Value::Int(image.1 as i64)));
        let floor = copy_floor(image.0);
        metrics.push((
            "copy_floor_ns",
            report::Value::float(floor.as_nanos() as f64 / f64::from(COPY_FLOOR_TRIPS), 1),
        ));
        let floor = switch_floor();
        metrics.push((
            "switch_floor_ns",
            report::Value::float(floor.as_nanos() as f64 / f64::from(SWITCH_FLOOR_TRIPS), 1),
        ));
    }
    emit_ok(None, &metrics);
}

/// Round trips [`copy_floor`] times.
const COPY_FLOOR_TRIPS: u32 = 200_000;

/// The least the copying of a compact round trip can cost on this machine:
/// the time of `COPY_FLOOR_TRIPS` rounds of its four copies of `image`
/// bytes (each side out of the execution stack, the other's back onto it),
/// memcpy alone, all in cache as in the switch; the best of three tries.
fn copy_floor(image: usize) -> Duration {
    let mut stack = vec![0u8; image];
    let (mut a, mut b) = (vec![1u8; image], vec![2u8; image]);
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..COPY_FLOOR_TRIPS {
                a.copy_from_slice(black_box(&stack));
                stack.copy_from_slice(black_box(&b));
                b.copy_from_slice(black_box(&stack));
                stack.copy_from_slice(black_box(&a));
            }
            black_box((&stack, &a, &b));
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Round trips [`switch_floor`] times, per try.
const SWITCH_FLOOR_TRIPS: u32 = 1_000_000;

/// The least a round trip between two green threads can cost on this
/// machine, copying and scheduling aside: two bare corosensei coroutines
/// (greenhub's switch, without a hub) resumed in turn by one loop, each
/// suspending from inside a function it calls, as a green thread does
/// inside `yield_now`. That call level is most of the cost: after each
/// switch the CPU's return predictions are the other side's, so the first
/// return on each side mispredicts. The best of three tries.
fn switch_floor() -> Duration {
    #[inline(never)]
    fn suspend(yielder: &Yielder<(), ()>) {
        yielder.suspend(());
    }
    let turns = 3 * SWITCH_FLOOR_TRIPS;
    let mut sides: Vec<Coroutine<(), (), ()>> = (0..2)
        .map(|_| {
            Coroutine::new(move |yielder: &Yielder<(), ()>, ()| {
                for _ in 0..turns {
                    suspend(yielder);
                }
            })
        })
        .collect();
    let best = (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..SWITCH_FLOOR_TRIPS {
                for side in &mut sides {
                    black_box(side.resume(()));
                }
            }
            start.elapsed()
        })
        .min()
        .unwrap_or_default();
    // Each side's last resume returns (its loop is done).
    for side in &mut sides {
        black_box(side.resume(()));
    }
    best
}

/// One run of [`switch`] with a `LIVE`-byte frame, inside a hub: the time of
/// `round_trips` round trips, and the bytes an evicted green thread keeps on
/// the heap halfway through (0 with dedicated stacks).
fn switch_run<const LIVE: usize>(round_trips: usize) -> Result<(Duration, (usize, usize)), String> {
    /// One side: a live frame, then `round_trips` yields; halfway, the bytes
    /// held by evicted green threads (the other side, in compact mode).
    fn side<const LIVE: usize>(round_trips: usize) -> (usize, usize) {
        let mut frame = [0u8; LIVE];
        black_box(&mut frame);
        let mut image = (0, 0);
        for i in 0..round_trips {
            if i == round_trips / 2 {
                image = (
                    greenhub::testing::evicted_stack_images().1,
                    greenhub::testing::evicted_stack_bytes().1,
                );
            }
            greenhub::yield_now();
        }
        black_box(&frame);
        image
    }
    let other = spawn(move || side::<LIVE>(round_trips)).map_err(|e| format!("spawn: {e}"))?;
    let me = spawn(move || {
        let start = Instant::now();
        let image = side::<LIVE>(round_trips);
        (start.elapsed(), image)
    })
    .map_err(|e| format!("spawn: {e}"))?;
    let other = other
        .join()
        .map_err(|e| format!("a green thread failed: {e}"))?;
    let (elapsed, image) = me
        .join()
        .map_err(|e| format!("a green thread failed: {e}"))?;
    black_box(other);
    Ok((elapsed, image))
}

/// Switch, parked image: the stack bytes a green thread used when it parked
/// in `parked` (its image), and those it keeps on the heap (compact stacks
/// only). On a hub with ONE shared
/// execution stack ([`SWITCH_STACK_SIZE`]), a green thread parks (doing
/// nothing else), a second one yields once and returns, taking the execution
/// stack so that the parked one is evicted; the main green thread yields a
/// few times, then reads the evicted bytes per evicted green thread. The
/// child process ends right after, the parked green thread still parked.
pub fn switch_parked(stacks: Stacks, parked: Parked) {
    if stacks != Stacks::Compact {
        return emit_refused(
            None,
            "the parked image is measured with compact stacks only (greenhub-compact)",
        );
    }
    let hub = compact_hub(1, SWITCH_STACK_SIZE);
    let ran = hub.run(move || {
        // Kept to the end: nobody sets it.
        let event = Rc::new(Event::new());
        let parker = match parked {
            Parked::Sleep => spawn(move || greenhub::sleep(PARK)),
            Parked::EventWait => {
                let ev = event.clone();
                spawn(move || ev.wait())
            }
        };
        let runner = spawn(greenhub::yield_now);
        // Kept to the end, like the event (the process ends first).
        let _handles = match (parker, runner) {
            (Ok(p), Ok(r)) => (p, r),
            (Err(e), _) | (_, Err(e)) => {
                emit_refused(None, &format!("spawn: {e}"));
                crate::end_child()
            }
        };
        for _ in 0..PARKED_YIELDS {
            greenhub::yield_now();
        }
        let (evicted, used) = greenhub::testing::evicted_stack_images();
        let (_, kept) = greenhub::testing::evicted_stack_bytes();
        match used.checked_div(evicted) {
            Some(image) => emit_ok(
                None,
                &vec![
                    ("image_bytes", report::Value::Int(image as i64)),
                    ("kept_bytes", report::Value::Int((kept / evicted) as i64)),
                    ("evicted", report::Value::Int(evicted as i64)),
                ],
            ),
            None => emit_refused(
                None,
                &format!(
                    "no green thread was evicted after {PARKED_YIELDS} yields: \
                     no image to measure"
                ),
            ),
        }
        crate::end_child()
    });
    if let Err(e) = ran {
        emit_refused(None, &format!("greenhub::run: {e}"));
    }
}
