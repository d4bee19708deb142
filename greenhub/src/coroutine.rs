//! The one place that touches corosensei: a coroutine on a [`GreenStack`]
//! that the hub resumes and that suspends itself back to the hub.
//!
//! There is no scheduling here (greenlet's layer, not gevent's): `resume`
//! runs the coroutine until it calls [`Suspender::suspend`] or returns.

use corosensei::{Coroutine as Raw, CoroutineResult, Yielder};

use crate::stack::GreenStack;

/// A stackful coroutine running a `'static` body on its own stack.
pub(crate) struct Coroutine {
    raw: Raw<(), (), (), GreenStack>,
}

/// What a running coroutine suspends itself through. It points at the
/// coroutine's yielder, which lives on that coroutine's stack and stays at the
/// same address for the coroutine's whole life.
#[derive(Clone, Copy)]
pub(crate) struct Suspender(*const Yielder<(), ()>);

impl Suspender {
    /// Switches back to whoever resumed the current coroutine.
    ///
    /// # Safety
    /// Must be called on the coroutine this suspender came from, while it is
    /// running (that is: from code running on its stack).
    #[inline]
    pub(crate) unsafe fn suspend(self) {
        // SAFETY: the caller guarantees we run on this suspender's coroutine,
        // so the yielder (on that coroutine's stack) is alive and is the one
        // linked to the current resume.
        unsafe { (*self.0).suspend(()) }
    }
}

impl Coroutine {
    /// Prepares `body` to run on `stack`; nothing runs until [`resume`].
    ///
    /// `body` must not let a panic escape (the hub catches panics inside the
    /// green thread's entry; a panic escaping here would resume in the hub).
    ///
    /// [`resume`]: Coroutine::resume
    pub(crate) fn new(stack: GreenStack, body: impl FnOnce(Suspender) + 'static) -> Coroutine {
        Coroutine {
            raw: Raw::with_stack(stack, move |yielder: &Yielder<(), ()>, ()| {
                body(Suspender(yielder as *const _))
            }),
        }
    }

    /// Runs the coroutine until it suspends (false) or finishes (true).
    #[inline]
    pub(crate) fn resume(&mut self) -> bool {
        matches!(self.raw.resume(()), CoroutineResult::Return(()))
    }

    /// Gives back the stack of a finished coroutine.
    pub(crate) fn into_stack(self) -> GreenStack {
        self.raw.into_stack()
    }
}
