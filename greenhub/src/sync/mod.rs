//! Synchronisation between green threads, and between green threads and OS
//! threads: every primitive here parks a green thread (never its OS thread)
//! and blocks a plain OS thread. All of them stand on one wait queue
//! (`wait_queue.rs`): FIFO, with hand-off, so waiters are served in order and
//! a killed or timed-out waiter never loses what it was handed.

mod async_result;
mod channel;
mod condvar;
mod event;
mod group;
mod mutex;
mod pool;
mod queue;
mod rwlock;
mod semaphore;
mod wait_any;
pub(crate) mod wait_queue;

pub use async_result::AsyncResult;
pub use channel::*;
pub use condvar::*;
pub use event::Event;
pub use group::*;
pub use mutex::*;
pub use pool::*;
pub use queue::*;
pub use rwlock::*;
pub use semaphore::*;
pub use wait_any::*;
