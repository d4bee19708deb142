//! The stack-overflow report.
//!
//! A green thread that overflows its stack touches the guard page at the bottom
//! of its slot. The SIGSEGV/SIGBUS handler installed here runs on the alternate
//! signal stack, looks the fault address up in a fixed table of chunks, and if
//! it lies in a guard page, reads the slot's header and prints
//! `green thread <id> '<name>' has overflowed its stack (<size> KiB)` with
//! `write(2)`, then aborts. Any other fault goes to the handler that was there
//! before (Rust's own, which reports main-thread overflows), or to the default
//! action. Only async-signal-safe calls are made inside the handler: loads of
//! atomics, reads of mapped memory, `write`, `sigaction`, `abort`.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Once;

use super::{Header, HEADER_SIZE, NAME_MAX};

/// Chunks the handler knows; beyond this, overflows are plain SIGSEGVs.
const REGISTRY_SIZE: usize = 8192;

/// One registered chunk. `start == 0` means the entry is free. Entries are
/// reused, so each has a sequence number (a seqlock): a writer makes it odd,
/// writes, makes it even again; the handler reads it before and after the
/// fields and ignores the entry if it changed or was odd, so it never pairs
/// an old `start` with a new `end`.
struct Entry {
    seq: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    slot: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    seq: AtomicUsize::new(0),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    slot: AtomicUsize::new(0),
};
static REGISTRY: [Entry; REGISTRY_SIZE] = [EMPTY; REGISTRY_SIZE];
/// Entries below this index may be in use (a high-water mark).
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);
/// Claims of entries: 0 free, 1 taken (registration is not async-signal-safe
/// and need not be).
static CLAIMED: [AtomicUsize; REGISTRY_SIZE] = [const { AtomicUsize::new(0) }; REGISTRY_SIZE];

/// Records a chunk of slots of `slot` bytes spanning `[start, end)`.
pub(super) fn register_chunk(start: usize, end: usize, slot: usize) -> Option<usize> {
    for (i, claim) in CLAIMED.iter().enumerate() {
        if claim
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let entry = &REGISTRY[i];
            entry.seq.fetch_add(1, Ordering::AcqRel); // odd: being written
            entry.end.store(end, Ordering::Release);
            entry.slot.store(slot, Ordering::Release);
            entry.start.store(start, Ordering::Release);
            entry.seq.fetch_add(1, Ordering::AcqRel); // even: stable
            HIGH_WATER.fetch_max(i + 1, Ordering::Release);
            return Some(i);
        }
    }
    None
}

/// Forgets a chunk before it is unmapped.
pub(super) fn unregister_chunk(i: usize) {
    let entry = &REGISTRY[i];
    entry.seq.fetch_add(1, Ordering::AcqRel);
    entry.start.store(0, Ordering::Release);
    entry.seq.fetch_add(1, Ordering::AcqRel);
    CLAIMED[i].store(0, Ordering::Release);
}

/// The handlers that were installed before ours, to chain to.
static OLD_SEGV: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
static OLD_BUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());

/// Installs the SIGSEGV/SIGBUS handler once per process.
pub(crate) fn install_overflow_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The handler reads the page size; make sure it never computes it.
        super::sys::page_size();
        for (sig, old) in [(libc::SIGSEGV, &OLD_SEGV), (libc::SIGBUS, &OLD_BUS)] {
            let prev = Box::into_raw(Box::new(MaybeUninit::<libc::sigaction>::zeroed()));
            // SAFETY: a zeroed sigaction is a valid value; we fill the fields
            // we use. `prev` points to writable memory that we leak on purpose
            // (the handler may read it at any time for the rest of the process).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(sig, &action, (*prev).as_mut_ptr()) == 0 {
                    old.store((*prev).as_mut_ptr(), Ordering::Release);
                }
            }
        }
    });
}

/// Gives the calling OS thread an alternate signal stack if it has none, so
/// the handler can run while the faulting stack is unusable. Rust's runtime
/// already gives one to the main thread and to threads made by `std::thread`;
/// this covers threads made by other means. The stack is kept for the thread's
/// life (a few pages per hub thread).
pub(crate) fn ensure_alt_stack() {
    // SAFETY: sigaltstack with a null new stack only reads the current one;
    // the new stack installed below is memory from `reserve` that is never
    // unmapped, so it stays valid for any signal the thread may take.
    unsafe {
        let mut current: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut current) != 0 {
            return;
        }
        if current.ss_flags & libc::SS_DISABLE == 0 {
            return;
        }
        let size = libc::SIGSTKSZ.max(64 * 1024);
        let Ok(addr) = super::sys::reserve(size) else {
            return;
        };
        let stack = libc::stack_t {
            ss_sp: addr as *mut libc::c_void,
            ss_flags: 0,
            ss_size: size,
        };
        // The memory is leaked with the thread: an alternate stack must outlive
        // any signal the thread could still take.
        libc::sigaltstack(&stack, std::ptr::null_mut());
    }
}

/// Finds the slot whose guard page holds `addr`: returns the slot's header.
fn guard_hit(addr: usize) -> Option<(usize, usize)> {
    let page = super::sys::page_size();
    let high = HIGH_WATER.load(Ordering::Acquire);
    for entry in &REGISTRY[..high] {
        let seq = entry.seq.load(Ordering::Acquire);
        if seq % 2 == 1 {
            continue; // being rewritten: not a chunk in use by this thread
        }
        let start = entry.start.load(Ordering::Acquire);
        let end = entry.end.load(Ordering::Acquire);
        let slot = entry.slot.load(Ordering::Acquire);
        if entry.seq.load(Ordering::Acquire) != seq {
            continue;
        }
        if start == 0 || addr < start || addr >= end || slot == 0 {
            continue;
        }
        let slot_start = start + (addr - start) / slot * slot;
        if addr < slot_start + page {
            return Some((slot_start + slot - HEADER_SIZE, slot));
        }
    }
    None
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some((header_addr, _slot)) = guard_hit(addr) {
        // SAFETY: the header lies inside a registered slot of a consistent
        // registry entry (seqlock). Its chunk is mapped: the faulting thread
        // was running on a stack of it, and a chunk is unmapped only when no
        // stack of it is in use (its entry is cleared before that).
        let header = unsafe { &*(header_addr as *const Header) };
        let mut buf = Writer::new();
        buf.put(b"green thread ");
        buf.num(header.id);
        let len = (header.name_len as usize).min(NAME_MAX);
        if len > 0 {
            buf.put(b" '");
            buf.put(&header.name[..len]);
            buf.put(b"'");
        }
        buf.put(b" has overflowed its stack (");
        buf.num(header.size_kib as u64);
        buf.put(b" KiB)\nfatal: stack overflow in a green thread; raise its size with Builder::stack_size\n");
        // SAFETY: write(2) and abort(3) are async-signal-safe.
        unsafe {
            libc::write(2, buf.buf.as_ptr() as *const libc::c_void, buf.len);
            libc::abort();
        }
    }
    let old = if sig == libc::SIGSEGV {
        OLD_SEGV.load(Ordering::Acquire)
    } else {
        OLD_BUS.load(Ordering::Acquire)
    };
    // SAFETY: `old` is null or the leaked sigaction saved at install time.
    unsafe {
        if !old.is_null() {
            let old = &*old;
            let f = old.sa_sigaction;
            if f != libc::SIG_DFL && f != libc::SIG_IGN {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(f);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(f);
                    f(sig);
                }
                return;
            }
        }
        // Not ours and nobody else's: restore the default action and return,
        // so the faulting instruction runs again and the process dies of the
        // plain signal.
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

/// A fixed buffer for composing the report without allocating.
struct Writer {
    buf: [u8; 256],
    len: usize,
}

impl Writer {
    fn new() -> Writer {
        Writer {
            buf: [0; 256],
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn num(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }
}
