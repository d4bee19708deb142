//! The blocking pool: run code that would block the hub on other OS threads.
//!
//! A green thread must not make a blocking system call (a file read,
//! `getaddrinfo`, a C library that waits): it would stall the whole hub and
//! every green thread on it. [`unblock`] sends such a closure to a pool of OS
//! threads and parks only the calling green thread until it returns.
//!
//! ```
//! use std::time::Duration;
//!
//! let sum = greenhub::run(|| {
//!     // Ten green threads, each running 50 ms of blocking work at once.
//!     let handles: Vec<_> = (0..10u64)
//!         .map(|i| greenhub::spawn(move || {
//!             greenhub::blocking::unblock(move || {
//!                 std::thread::sleep(Duration::from_millis(50)); // blocks a pool thread
//!                 i
//!             })
//!         }))
//!         .collect();
//!     handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
//! })
//! .unwrap();
//! assert_eq!(sum, 45);
//! ```
//!
//! # The pool
//!
//! One pool serves the whole process (every hub). Threads are started on
//! demand, up to [`max_threads`] (64 unless [`set_max_threads`] says
//! otherwise: blocking work mostly waits, so the bound is about the number of
//! OS threads, not the number of cores). When all are busy, jobs wait in a
//! FIFO queue. A thread that has had nothing to do for the idle timeout (10 s
//! unless [`set_idle_timeout`] says otherwise) exits, so an idle process
//! keeps no pool threads. Pool threads are named `greenhub-blocking` and have
//! std's default stack size.
//!
//! # Cost
//!
//! A job costs two allocations, a hand-off to a pool thread (a futex wake
//! when one is idle, a thread start when none is) and a cross-thread wake of
//! the hub: a few microseconds. Batch small operations into one job where
//! you can.
//!
//! # Cancellation
//!
//! A running job cannot be stopped. If the waiting green thread is killed or
//! its [`with_timeout`](crate::with_timeout) expires, it unwinds at once;
//! the job runs on to completion on its pool thread, and its result (or
//! panic) is dropped there.

use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::hub::{self, Wait};
use crate::sync::wait_queue::WaitQueue;

/// The default bound on pool threads.
const DEFAULT_MAX_THREADS: usize = 64;
/// The default time an idle pool thread waits for work before it exits.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

const UNBLOCK: Wait = Wait::shared(&"blocking::unblock");

/// Runs `f` on the blocking pool and parks the calling green thread until it
/// returns; returns its value. If `f` panics, the panic is resumed in the
/// caller (the pool thread's panic hook has printed it, as for
/// `std::thread::spawn`). Other green threads of the hub run meanwhile.
///
/// `f` must be `Send + 'static`: it runs on another OS thread and cannot
/// borrow from the caller's stack, so move owned data in and out.
///
/// Called outside a green thread (from a plain OS thread), `unblock` runs `f`
/// right there: blocking a plain thread harms nobody.
///
/// If the caller is killed or its `with_timeout` expires while it waits, it
/// unwinds at once; `f` runs on to completion and its result is dropped on
/// the pool thread.
///
/// # Panics
///
/// Resumes `f`'s panic. Panics if the pool has no thread and cannot start
/// one (the OS refused to create a thread).
pub fn unblock<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if hub::current_header_ptr().is_none() {
        return f();
    }
    // The result travels through the heap: the pool thread never touches the
    // green thread's stack (which compact mode may move while it is parked).
    let slot: Arc<WaitQueue<Option<thread::Result<T>>>> = Arc::new(WaitQueue::new(None));
    let done = slot.clone();
    submit(Box::new(move || {
        let result = catch_unwind(AssertUnwindSafe(f));
        let mut locked = done.lock();
        locked.state = Some(result);
        locked.notify_all();
        // If the waiter has gone, `done` is the last reference: the result
        // is dropped here, on the pool thread, after the lock is released.
    }));
    let result = slot
        .wait(UNBLOCK, None, |state, _| state.take(), |_, ()| {})
        .expect("a wait without deadline ends with the result");
    match result {
        Ok(value) => value,
        Err(payload) => resume_unwind(payload),
    }
}

/// Sets the most threads the pool may run at once (at least 1; default 64).
/// Raising it starts threads for queued jobs at once; lowering it ends idle
/// threads above the bound at once and busy ones as they finish their job.
pub fn set_max_threads(n: usize) {
    let mut state = pool().lock();
    state.max = n.max(1);
    while state.threads > state.max {
        let Some(worker) = state.idle.pop() else {
            break;
        };
        IDLE.store(state.idle.len(), Ordering::SeqCst);
        state.threads -= 1;
        worker.lock().exit = true;
        worker.wake.notify_one();
    }
    while state.threads < state.max {
        let Some(job) = state.queue.pop_front() else {
            break;
        };
        if let Err(job) = start_thread(&mut state, job) {
            state.queue.push_front(job);
            break;
        }
    }
}

/// The most threads the pool may run at once.
pub fn max_threads() -> usize {
    pool().lock().max
}

/// Sets how long a pool thread with nothing to do waits for work before it
/// exits (default 10 s). Applies at once, to idle threads too.
pub fn set_idle_timeout(timeout: Duration) {
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let pool = pool();
    pool.idle_timeout.store(nanos, Ordering::SeqCst);
    let state = pool.lock();
    for worker in &state.idle {
        // Lock order: pool, then worker. The lock makes the notification land
        // either before the worker reads the timeout or while it waits.
        let _mailbox = worker.lock();
        worker.wake.notify_one();
    }
}

/// A snapshot of the pool, for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Pool threads alive (busy or idle).
    pub threads: usize,
    /// Pool threads waiting for work.
    pub idle: usize,
    /// Jobs waiting for a thread.
    pub queued: usize,
    /// Jobs submitted since the process started.
    pub submitted: u64,
}

/// The pool's state now.
pub fn stats() -> Stats {
    let state = pool().lock();
    Stats {
        threads: state.threads,
        idle: idle_threads(),
        queued: state.queue.len(),
        submitted: SUBMITTED.load(Ordering::SeqCst),
    }
}

/// How many pool threads are idle: they run nothing and will run nothing
/// until a job is submitted, so they cannot wake anybody. For the hub's
/// deadlock check, which may discount them from the OS threads that exist.
///
/// Ordering: a pool thread wakes its green thread (setting the hub's pending
/// flag) before it counts itself idle, so a reader that loads this and then
/// the hub's pending flag cannot miss a wake from a thread it discounted.
pub(crate) fn idle_threads() -> usize {
    IDLE.load(Ordering::SeqCst)
}

type Job = Box<dyn FnOnce() + Send>;

static POOL: Pool = Pool {
    state: Mutex::new(State {
        queue: VecDeque::new(),
        idle: Vec::new(),
        threads: 0,
        max: DEFAULT_MAX_THREADS,
    }),
    idle_timeout: AtomicU64::new(DEFAULT_IDLE_TIMEOUT.as_nanos() as u64),
};
/// Mirrors `State::idle.len()`, readable without the lock.
static IDLE: AtomicUsize = AtomicUsize::new(0);
static SUBMITTED: AtomicU64 = AtomicU64::new(0);

fn pool() -> &'static Pool {
    &POOL
}

struct Pool {
    state: Mutex<State>,
    /// Nanoseconds.
    idle_timeout: AtomicU64,
}

/// Invariant: `queue` is non-empty only while `idle` is empty (a job is
/// queued only when no thread is idle, and a thread goes idle only when the
/// queue is empty, both under the lock).
struct State {
    /// Jobs waiting for a thread, FIFO.
    queue: VecDeque<Job>,
    /// Idle workers, the most recently idle last (it gets the next job, so
    /// the others can time out).
    idle: Vec<Arc<Worker>>,
    /// Threads started and not yet exiting.
    threads: usize,
    max: usize,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; never poisoned in practice.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_nanos(self.idle_timeout.load(Ordering::SeqCst))
    }
}

/// One pool thread, as the pool sees it: its mailbox, where a job is handed
/// to it directly while it is idle.
struct Worker {
    mailbox: Mutex<Mailbox>,
    wake: Condvar,
}

struct Mailbox {
    job: Option<Job>,
    /// Set (with the thread already uncounted) to end an idle thread when
    /// the bound is lowered.
    exit: bool,
}

impl Worker {
    fn lock(&self) -> MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hands `job` to an idle thread, or to a new one, or queues it.
fn submit(job: Job) {
    SUBMITTED.fetch_add(1, Ordering::SeqCst);
    let mut state = pool().lock();
    if let Some(worker) = state.idle.pop() {
        IDLE.store(state.idle.len(), Ordering::SeqCst);
        worker.lock().job = Some(job);
        worker.wake.notify_one();
        return;
    }
    if state.threads >= state.max {
        state.queue.push_back(job);
        return;
    }
    if let Err(job) = start_thread(&mut state, job) {
        if state.threads == 0 {
            drop(state);
            drop(job);
            panic!("greenhub::blocking: cannot start a pool thread, and none is running");
        }
        // The running threads take it when they finish their job.
        state.queue.push_back(job);
    }
}

/// Starts a pool thread whose first job is `job`; gives the job back if the
/// OS refuses a new thread (a warning says why).
fn start_thread(state: &mut State, job: Job) -> Result<(), Job> {
    let worker = Arc::new(Worker {
        mailbox: Mutex::new(Mailbox {
            job: Some(job),
            exit: false,
        }),
        wake: Condvar::new(),
    });
    let mine = worker.clone();
    let started = thread::Builder::new()
        .name("greenhub-blocking".into())
        .spawn(move || work(mine));
    match started {
        Ok(_) => {
            state.threads += 1;
            Ok(())
        }
        Err(e) => {
            hub::warn(format_args!(
                "greenhub::blocking: cannot start a pool thread: {e}"
            ));
            let job = worker
                .lock()
                .job
                .take()
                .expect("the job is still in the mailbox");
            Err(job)
        }
    }
}

/// A pool thread: runs its first job, then whatever comes, until idle for
/// the idle timeout.
fn work(me: Arc<Worker>) {
    let mut job = me.lock().job.take();
    while let Some(next) = job {
        // A panic of the job itself is caught inside the job; this catches
        // one from dropping its result, so that the thread goes on.
        let _ = catch_unwind(AssertUnwindSafe(next));
        job = next_job(&me);
    }
}

/// The next job: the queue's first, or one handed while idle. None: this
/// thread must exit (it has been removed from the count).
fn next_job(me: &Arc<Worker>) -> Option<Job> {
    let pool = pool();
    {
        let mut state = pool.lock();
        if state.threads > state.max {
            state.threads -= 1;
            return None;
        }
        if let Some(job) = state.queue.pop_front() {
            return Some(job);
        }
        state.idle.push(me.clone());
        IDLE.store(state.idle.len(), Ordering::SeqCst);
    }
    let since = Instant::now();
    let mut mailbox = me.lock();
    loop {
        if let Some(job) = mailbox.job.take() {
            return Some(job);
        }
        if mailbox.exit {
            return None;
        }
        let waited = since.elapsed();
        let timeout = pool.idle_timeout();
        if waited < timeout {
            mailbox = me
                .wake
                .wait_timeout(mailbox, timeout - waited)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        // Timed out: leave, unless someone took this worker off the idle list
        // — then, under the pool lock, they put a job or the exit flag in the
        // mailbox.
        drop(mailbox);
        let mut state = pool.lock();
        if let Some(i) = state.idle.iter().position(|w| Arc::ptr_eq(w, me)) {
            state.idle.remove(i);
            IDLE.store(state.idle.len(), Ordering::SeqCst);
            state.threads -= 1;
            return None;
        }
        drop(state);
        mailbox = me.lock();
    }
}
