//! The one place that touches corosensei: a coroutine on a [`GreenStack`]
//! that the hub resumes and that suspends itself back to the hub.
//!
//! There is no scheduling here (greenlet's layer, not gevent's): `resume`
//! runs the coroutine until it calls [`Suspender::suspend`] or returns.

use std::cell::Cell;

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
pub(crate) struct Suspender(std::ptr::NonNull<Yielder<(), ()>>);

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
        unsafe { self.0.as_ref().suspend(()) }
    }

    /// Like [`suspend`](Suspender::suspend), recording the stack pointer
    /// first (see [`last_suspend_sp`]): compact stacks save
    /// `[sp - depth, base)` of a suspended coroutine, where `depth`
    /// ([`suspend_depth`]) covers what the switch pushes below it.
    ///
    /// Never inlined: every compact park path and the depth probe run this
    /// one compiled body, so what lies below the recorded pointer is the
    /// same for all of them whatever the compiler inlines inside it (a copy
    /// inlined per call site could differ from the probe's, and a depth too
    /// small would lose live bytes).
    ///
    /// # Safety
    /// As for [`suspend`](Suspender::suspend).
    #[inline(never)]
    pub(crate) unsafe fn suspend_recording_sp(self) {
        LAST_SP.with(|sp| sp.set(stack_pointer()));
        // SAFETY: as for `suspend`, which the caller's contract covers.
        unsafe { self.0.as_ref().suspend(()) }
    }
}

thread_local! {
    static LAST_SP: Cell<usize> = const { Cell::new(0) };
}

/// The stack pointer recorded by the last [`Suspender::suspend_recording_sp`] on this OS
/// thread: after `resume` returns `false`, that of the coroutine just
/// suspended.
pub(crate) fn last_suspend_sp() -> usize {
    LAST_SP.with(Cell::get)
}

/// Zeroes the callee-saved registers that inline assembly may name. Not
/// rbx and rbp (x19 and x29 on aarch64), which LLVM keeps for itself: what
/// the resumer leaves there reaches the first frames too, and where it
/// differs between green threads of a kind, their shared stack tops have a
/// hole (see `stack::compact`). The compiler saves the caller's values
/// around this, on the resumer's stack.
#[inline(always)]
fn clear_callee_saved() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: writes only registers declared as clobbered; no memory or
    // stack effects.
    unsafe {
        std::arch::asm!(
            "xor r12d, r12d",
            "xor r13d, r13d",
            "xor r14d, r14d",
            "xor r15d, r15d",
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            options(nomem, nostack),
        )
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    unsafe {
        std::arch::asm!(
            "mov x20, xzr",
            "mov x21, xzr",
            "mov x22, xzr",
            "mov x23, xzr",
            "mov x24, xzr",
            "mov x25, xzr",
            "mov x26, xzr",
            "mov x27, xzr",
            "mov x28, xzr",
            out("x20") _,
            out("x21") _,
            out("x22") _,
            out("x23") _,
            out("x24") _,
            out("x25") _,
            out("x26") _,
            out("x27") _,
            out("x28") _,
            options(nomem, nostack, preserves_flags),
        )
    };
}

/// The current stack pointer (a little above it where there is no way to
/// read it exactly).
#[inline(always)]
fn stack_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let sp: usize;
        // SAFETY: reads a register; no memory, stack or flag effects.
        unsafe {
            std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let sp: usize;
        // SAFETY: reads a register; no memory, stack or flag effects.
        unsafe {
            std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let marker = 0u8;
        std::hint::black_box(&marker) as *const u8 as usize
    }
}

/// How many bytes below the recorded stack pointer a suspended coroutine
/// still uses (the switch's own frames and saved registers), measured once
/// per process: a coroutine on a painted stack suspends, and the lowest
/// painted byte it changed tells the depth. Two paints, so that a byte
/// written with the paint's own value is still seen.
pub(crate) fn suspend_depth(stack: GreenStack) -> (usize, GreenStack) {
    const PROBE: usize = 4096;
    let (mut deepest, mut stack) = (0, stack);
    for paint in [0xA5u8, 0x5A] {
        let base = stack.base();
        let low = base.saturating_sub(PROBE).max(stack.lowest_usable());
        // SAFETY: [low, base) is usable memory of a stack we own and that no
        // coroutine runs on now.
        unsafe { std::ptr::write_bytes(low as *mut u8, paint, base - low) };
        let mut co = Coroutine::new(stack, |suspender| {
            // SAFETY: we run on the coroutine this suspender came from.
            unsafe { suspender.suspend_recording_sp() }
        });
        assert!(!co.resume(), "the probe suspends once");
        let sp = last_suspend_sp();
        let mut lowest = sp;
        let mut addr = low;
        while addr < sp {
            // SAFETY: [low, sp) lies inside the stack we own; the coroutine
            // is suspended, nothing writes it concurrently.
            if unsafe { std::ptr::read_volatile(addr as *const u8) } != paint {
                lowest = addr;
                break;
            }
            addr += 1;
        }
        deepest = deepest.max(sp - lowest);
        assert!(co.resume(), "the probe finishes");
        stack = co.into_stack();
    }
    // The switch below the recorded frame is the same code for every
    // caller, so what the probe measured is what every suspension uses;
    // rounded up to keep images 16-byte aligned.
    (deepest.next_multiple_of(16), stack)
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
                body(Suspender(std::ptr::NonNull::from(yielder)))
            }),
        }
    }

    /// Runs the coroutine until it suspends (false) or finishes (true).
    #[inline]
    pub(crate) fn resume(&mut self) -> bool {
        matches!(self.raw.resume(()), CoroutineResult::Return(()))
    }

    /// The first resume, with the callee-saved registers cleared first.
    ///
    /// A coroutine starts with whatever its resumer held in those registers,
    /// and its first frames save them as they go: left alone, a compact
    /// green thread's stack top would hold the hub's values of that moment
    /// (its slab key, say), different for every green thread, and no two of
    /// a kind would share their top bytes (see `stack::compact`). Cleared,
    /// what the first frames save comes from the coroutine's own code.
    #[inline(never)]
    pub(crate) fn start(&mut self) -> bool {
        clear_callee_saved();
        self.resume()
    }

    /// Gives back the stack of a finished coroutine.
    pub(crate) fn into_stack(self) -> GreenStack {
        self.raw.into_stack()
    }
}
