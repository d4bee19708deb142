//! Where a green thread leaves its outcome for [`JoinHandle::join`]: the
//! *packet*, part of the green thread's header (hub/waker.rs), so that a
//! green thread costs one allocation for both (a million parked green
//! threads have a million of them).
//!
//! The header is shared with wakers, which may live on any thread; the
//! packet is not thread-safe (its result may be `!Send`, its links are
//! `!Send` closures) and is touched only on the thread of the green
//! thread's hub: by the green thread's body, which runs there, and by its
//! `JoinHandle`, which is `!Send`. What a packet holds when its header is
//! dropped, perhaps on another thread by the last waker, is always `Send`:
//! the result is taken by `join` or dropped when the handle goes (both on
//! the hub's thread), and the links are run and emptied when the green
//! thread finishes (a green thread that never finishes is leaked, header
//! and all).
//!
//! The result is typed only where it is made and taken (the body and the
//! `JoinHandle<T>` of one spawn, which agree on `T`): here it is stored
//! inline when it is small (16 bytes: `()` and most small results), boxed
//! otherwise. Only those two drop it, so the packet keeps no drop function:
//! the body drops a result nobody can take, and the handle the one it did
//! not take.
//!
//! [`JoinHandle::join`]: crate::JoinHandle::join

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::mem::{self, MaybeUninit};
use std::task::Waker;

/// A green thread's packet: its result slot and what waits for it. Its
/// flags are a byte of the header beside it ([`Flags`]; in the packet they
/// would cost a word of padding). All access goes through [`Packet::get`].
pub(crate) struct Packet {
    result: Slot,
    extra: Cell<Option<Box<Extra>>>,
}

/// The packet's flags, one bit each (see [`Inner`]).
pub(crate) struct Flags(Cell<u8>);

const DONE: u8 = 1;
const HANDLE_ALIVE: u8 = 2;
const LINKS_RAN: u8 = 4;
const READY: u8 = 8;
const FULL: u8 = 16;

/// The packet's fields, borrowed together: used from one thread.
pub(crate) struct Inner<'a> {
    /// Set once the body has finished (its result may have been taken).
    pub(crate) done: Flag<'a>,
    /// False once the JoinHandle is gone: a panic is then reported on stderr.
    pub(crate) handle_alive: Flag<'a>,
    /// Set once the links have run: a link added later runs at once.
    pub(crate) links_ran: Flag<'a>,
    /// Set once the result is there for `join` (after the links, and after
    /// the green-thread-local values are dropped, which may park).
    pub(crate) ready: Flag<'a>,
    /// Whether `result` holds a value.
    full: Flag<'a>,
    result: &'a Slot,
    extra: &'a Cell<Option<Box<Extra>>>,
}

/// One of the packet's flags: a bit of [`Flags`].
#[derive(Clone, Copy)]
pub(crate) struct Flag<'a> {
    flags: &'a Cell<u8>,
    bit: u8,
}

impl Flag<'_> {
    pub(crate) fn get(self) -> bool {
        self.flags.get() & self.bit != 0
    }

    pub(crate) fn set(self, on: bool) {
        let flags = self.flags.get();
        self.flags.set(if on {
            flags | self.bit
        } else {
            flags & !self.bit
        });
    }

    fn replace(self, on: bool) -> bool {
        let was = self.get();
        self.set(on);
        was
    }
}

/// A callback run when a green thread finishes, with a reference to its
/// `Result<T, JoinError>` (typed by `JoinHandle::link`, which made it).
pub(crate) type Link = Box<dyn FnOnce(&dyn Any)>;

/// What a packet needs only if somebody waits or links.
#[derive(Default)]
pub(crate) struct Extra {
    /// Green threads waiting in `join` (or `kill_all`), and watchers
    /// (`wait_any`), each under a key of `next_waiter` for its removal. All
    /// woken when the green thread finishes.
    pub(crate) waiters: Vec<(u64, Waker)>,
    pub(crate) next_waiter: u64,
    /// Links to run at the end, in order.
    pub(crate) links: Vec<Link>,
}

// SAFETY: see the module docs: the packet is used only on its hub's thread,
// and whatever it holds when the header is dropped elsewhere is `Send`
// (wakers, empty vectors) or never touched (a result slot, empty or holding
// the leaked result of a forgotten handle: it has no drop).
unsafe impl Send for Packet {}
// SAFETY: as above: no two threads ever use a packet; the header around it
// is shared only for its atomics.
unsafe impl Sync for Packet {}
// SAFETY: as for `Packet`, whose flags these are: a byte used on the hub's
// thread only.
unsafe impl Send for Flags {}
// SAFETY: as above.
unsafe impl Sync for Flags {}

impl Flags {
    pub(crate) fn new() -> Flags {
        Flags(Cell::new(HANDLE_ALIVE))
    }
}

impl Packet {
    pub(crate) fn new() -> Packet {
        Packet {
            result: Slot::empty(),
            extra: Cell::new(None),
        }
    }

    /// The packet's fields, with its `flags`.
    ///
    /// # Safety
    /// Only on the thread of the hub that owns the green thread (the body
    /// runs there; a `JoinHandle` is `!Send`).
    #[inline]
    pub(crate) unsafe fn get<'a>(&'a self, flags: &'a Flags) -> Inner<'a> {
        let flag = |bit| Flag {
            flags: &flags.0,
            bit,
        };
        Inner {
            done: flag(DONE),
            handle_alive: flag(HANDLE_ALIVE),
            links_ran: flag(LINKS_RAN),
            ready: flag(READY),
            full: flag(FULL),
            result: &self.result,
            extra: &self.extra,
        }
    }
}

impl Inner<'_> {
    /// Runs `f` on the extra part, made if there is none yet.
    pub(crate) fn with_extra<R>(&self, f: impl FnOnce(&mut Extra) -> R) -> R {
        let mut extra = self.extra.take().unwrap_or_default();
        let r = f(&mut extra);
        self.extra.set(Some(extra));
        r
    }

    /// The extra part, if somebody waited or linked; the packet has none
    /// after this.
    pub(crate) fn take_extra(&self) -> Option<Box<Extra>> {
        self.extra.take()
    }

    /// Gives the extra part back (after `take_extra`).
    pub(crate) fn put_extra(&self, extra: Box<Extra>) {
        self.extra.set(Some(extra));
    }

    /// Leaves the green thread's result.
    ///
    /// # Safety
    /// `V` is the type every `put_result`, `take_result` of this packet
    /// uses (`Result<T, JoinError>` for the `T` of its spawn).
    pub(crate) unsafe fn put_result<V>(&self, value: V) {
        // SAFETY: by the caller.
        unsafe { self.result.put(self.full, value) }
    }

    /// Takes the result, if there is one.
    ///
    /// # Safety
    /// As for [`put_result`](Inner::put_result).
    pub(crate) unsafe fn take_result<V>(&self) -> Option<V> {
        // SAFETY: by the caller.
        unsafe { self.result.take(self.full) }
    }
}

/// A slot's bytes: room for a small value, or a pointer to a boxed one.
type Bytes = MaybeUninit<[usize; 2]>;

/// A value of a type known only to its users, inline if small. It has no
/// drop of its own: the `JoinHandle` takes the value out (in `join`, or when
/// it is dropped), and a value left when the packet goes (its handle was
/// forgotten) is leaked with it.
/// Whether it holds a value, its `full` flag says (kept by its owner).
struct Slot {
    data: UnsafeCell<Bytes>,
}

/// Whether a `V` is stored in the slot's bytes (else a box of it is).
const fn inline<V>() -> bool {
    mem::size_of::<V>() <= mem::size_of::<[usize; 2]>()
        && mem::align_of::<V>() <= mem::align_of::<[usize; 2]>()
}

impl Slot {
    const fn empty() -> Slot {
        Slot {
            data: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Stores `value`, dropping any value there.
    ///
    /// # Safety
    /// Every `put` and `take` of this slot uses the same `V` and `full`.
    unsafe fn put<V>(&self, full: Flag<'_>, value: V) {
        // SAFETY: by the caller.
        drop(unsafe { self.take::<V>(full) });
        let data = self.data.get();
        if inline::<V>() {
            // SAFETY: the slot is empty (above) and has room and alignment
            // for a V (`inline`); nobody else holds a reference into it
            // (the slot is used from one thread, and never across a call
            // into user code).
            unsafe { data.cast::<V>().write(value) }
        } else {
            // SAFETY: as above, for a pointer.
            unsafe { data.cast::<*mut V>().write(Box::into_raw(Box::new(value))) }
        }
        full.set(true);
    }

    /// Takes the value out, if there is one.
    ///
    /// # Safety
    /// As for [`put`](Slot::put).
    unsafe fn take<V>(&self, full: Flag<'_>) -> Option<V> {
        if !full.replace(false) {
            return None;
        }
        let data = self.data.get();
        Some(if inline::<V>() {
            // SAFETY: a V was put (same V, by the caller) and not taken:
            // `full` was set; reading it out leaves the slot empty.
            unsafe { data.cast::<V>().read() }
        } else {
            // SAFETY: as above, for the box put there.
            *unsafe { Box::from_raw(data.cast::<*mut V>().read()) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn put<V>((packet, flags): &(Packet, Flags), value: V) {
        // SAFETY: tests use one thread, and one type per packet.
        unsafe { packet.get(flags).put_result(value) }
    }

    fn take<V>((packet, flags): &(Packet, Flags)) -> Option<V> {
        // SAFETY: as in `put`.
        unsafe { packet.get(flags).take_result() }
    }

    #[test]
    fn small_and_big_values_come_back() {
        let small = (Packet::new(), Flags::new());
        put::<Result<u8, ()>>(&small, Ok(7));
        assert_eq!(take::<Result<u8, ()>>(&small), Some(Ok(7)));
        assert_eq!(take::<Result<u8, ()>>(&small), None);

        let big = (Packet::new(), Flags::new());
        put::<[u64; 8]>(&big, [9; 8]);
        assert_eq!(take::<[u64; 8]>(&big), Some([9; 8]));
    }

    #[test]
    fn a_value_put_over_another_drops_it_once() {
        let counted = Rc::new(());
        let small = (Packet::new(), Flags::new());
        put::<Rc<()>>(&small, counted.clone());
        put::<Rc<()>>(&small, counted.clone());
        assert_eq!(Rc::strong_count(&counted), 2);
        drop(take::<Rc<()>>(&small));
        let big = (Packet::new(), Flags::new());
        put::<(Rc<()>, [u64; 4])>(&big, (counted.clone(), [0; 4]));
        put::<(Rc<()>, [u64; 4])>(&big, (counted.clone(), [0; 4]));
        assert_eq!(Rc::strong_count(&counted), 2);
        drop(take::<(Rc<()>, [u64; 4])>(&big));
        assert_eq!(Rc::strong_count(&counted), 1);
        assert!(take::<Rc<()>>(&small).is_none());
    }
}
