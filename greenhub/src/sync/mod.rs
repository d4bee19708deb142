//! Synchronisation between green threads, and between green threads and OS
//! threads: every primitive here parks a green thread (never its OS thread)
//! and blocks a plain OS thread.

mod async_result;
mod event;
pub(crate) mod wait_queue;

pub use async_result::AsyncResult;
pub use event::Event;
