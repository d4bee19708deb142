//! The wake primitive: a green thread's [`Header`], shared with every `Waker`
//! that can wake it.
//!
//! # States (`Header::state`)
//!
//! ```text
//!            spawn            hub resumes it           park()
//!   ───────▶ QUEUED ──────────▶ RUNNING ──────────────▶ PARKED
//!              ▲                 │  ▲ │                   │
//!              │      wake()     │  │ │ coroutine returns │ wake()
//!              │   (while running)  │ ▼                   │
//!              │                 ▼  │ DONE                │
//!              │              NOTIFIED                    │
//!              │   (park() sees it and returns at once)   │
//!              └──────────────────────────────────────────┘
//! ```
//!
//! - `QUEUED`: the key is in exactly one run queue (local or the remote inbox);
//!   only the hub moves it on, to `RUNNING`. A queued green thread is alive,
//!   so its slab key stays valid until the hub pops it.
//! - `RUNNING`: on its hub's OS thread. A wake turns it into `NOTIFIED`, so a
//!   wake that races ahead of `park` is never lost.
//! - `PARKED`: suspended; the first `wake` moves it to `QUEUED` and pushes it.
//! - `DONE`: never left; wakes are ignored (a waker may outlive its task).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Wake;

use super::Shared;
use crate::packet::{Flags, Inner, Packet};

/// A green thread's name, shared by its header and its handles: one word
/// in the header, since most green threads have none.
#[derive(Clone)]
pub(crate) struct Name(Arc<String>);

impl From<String> for Name {
    fn from(name: String) -> Name {
        Name(Arc::new(name))
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

pub(crate) const QUEUED: u8 = 0;
pub(crate) const RUNNING: u8 = 1;
pub(crate) const NOTIFIED: u8 = 2;
pub(crate) const PARKED: u8 = 3;
pub(crate) const DONE: u8 = 4;

/// `Header::cancel`: killed.
pub(crate) const KILLED: u8 = 1;
/// `Header::cancel`: a `with_timeout` expired.
pub(crate) const TIMED_OUT: u8 = 2;

/// What every waker of a green thread points to.
pub(crate) struct Header {
    pub(crate) state: AtomicU8,
    /// The slab key of the green thread in its hub (valid while not DONE).
    pub(crate) key: u32,
    pub(crate) id: u64,
    pub(crate) name: Option<Name>,
    /// The hub that owns the green thread.
    pub(crate) hub: Arc<Shared>,
    /// What waits to be delivered at the next blocking point: `KILLED` (set
    /// by `kill`, never unset: a kill is sticky) and `TIMED_OUT` (an expired
    /// `with_timeout`, whose id the hub keeps). Only the owning hub's thread
    /// touches it: atomic only so that the header can be shared.
    pub(crate) cancel: AtomicU8,
    /// Set while this green thread unwinds (a panic, a kill, a timeout):
    /// no cancellation is delivered then. Hub thread only.
    pub(crate) unwinding: AtomicBool,
    /// Where the green thread leaves its result for its `JoinHandle`: in the
    /// header, so that a green thread costs one allocation for both (see
    /// `packet`). Its flags sit with the header's other bytes.
    packet: Packet,
    packet_flags: Flags,
}

impl Header {
    pub(crate) fn new(key: u32, id: u64, name: Option<Name>, hub: Arc<Shared>) -> Header {
        Header {
            state: AtomicU8::new(QUEUED),
            key,
            id,
            name,
            hub,
            cancel: AtomicU8::new(0),
            unwinding: AtomicBool::new(false),
            packet: Packet::new(),
            packet_flags: Flags::new(),
        }
    }

    /// Whether a kill or a timeout waits to be delivered.
    #[inline]
    pub(crate) fn cancel_pending(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) != 0
    }

    /// The packet.
    ///
    /// # Safety
    /// As for [`Packet::get`].
    #[inline]
    pub(crate) unsafe fn packet(&self) -> Inner<'_> {
        // SAFETY: by the caller.
        unsafe { self.packet.get(&self.packet_flags) }
    }

    pub(crate) fn killed(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) & KILLED != 0
    }
}

impl Header {
    /// Makes the green thread runnable (see the state diagram).
    ///
    /// Every path is a read-modify-write, even when there is nothing to do
    /// (QUEUED, NOTIFIED, DONE): the hub moves the state on with a swap, which
    /// then reads from this write, so whatever the waker did before waking
    /// (made a condition true) is visible to the green thread when it runs.
    /// A plain load here would let both sides read stale values (the
    /// store-buffering pattern) and lose the wake.
    #[inline]
    pub(crate) fn wake_ref(&self) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                PARKED => QUEUED,
                RUNNING => NOTIFIED,
                other => other,
            };
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if state == PARKED => return super::schedule(self),
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_ref();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A million parked green threads have a million headers: with its two
    /// reference counts, one fits glibc's 80-byte chunks (a 72-byte request)
    /// on 64-bit targets.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_header_is_seven_words() {
        assert_eq!(std::mem::size_of::<Header>(), 56);
    }
}
