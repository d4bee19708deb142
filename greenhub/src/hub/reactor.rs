//! The hub's event loop side: readiness of file descriptors registered with
//! `mio` (epoll, kqueue), and [`IoSource`], the wrapper every cooperative
//! socket is built on.
//!
//! # Readiness
//!
//! Sources are registered once, edge-triggered, for reading and writing. The
//! hub keeps, per source, a readiness bit per direction and the green threads
//! waiting in that direction. An operation runs the syscall on the green
//! thread's own stack; on `WouldBlock` it clears the bit and parks until an
//! event sets it again, then retries ([`IoSource::do_io`]). No event can slip
//! between the `WouldBlock` and the park: the hub only polls while no green
//! thread of it runs. An error or hang-up event wakes both directions, so a
//! blocked reader sees its EOF or error at once (a `shutdown` from another
//! green thread included).
//!
//! Several green threads may wait on one source in one direction: an event
//! wakes them all and each retries (whoever gets the data first has it; the
//! others park again).
//!
//! # Ownership
//!
//! A source is registered with the hub of the first green thread that has to
//! wait on it, for its whole life. A green thread of another hub that must
//! wait on it gets an error (`ErrorKind::Unsupported`); a plain OS thread
//! waits with `poll(2)` on the descriptor, blocking its OS thread. A source is
//! deregistered before its descriptor is closed, so a reused descriptor number
//! never receives a stale event.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::task::Waker;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use slab::Slab;

use super::{with_hub, Hub, Shared, Wait};

/// A direction of readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl Direction {
    fn bit(self) -> u8 {
        match self {
            Direction::Read => READ,
            Direction::Write => WRITE,
        }
    }
}

const READ: u8 = 1;
const WRITE: u8 = 2;

/// Per-source state, hub-local.
#[derive(Default)]
pub(crate) struct IoState {
    ready: u8,
    /// Directions that saw a hang-up or an error: sticky (epoll reports it
    /// once), so a drained direction is not taken for one that will get
    /// another event.
    closed: u8,
    readers: Vec<Waker>,
    writers: Vec<Waker>,
}

impl IoState {
    /// Who waits for `dir`.
    fn waiters(&mut self, dir: Direction) -> &mut Vec<Waker> {
        match dir {
            Direction::Read => &mut self.readers,
            Direction::Write => &mut self.writers,
        }
    }
}

/// The hub's registered sources.
#[derive(Default)]
pub(crate) struct Reactor {
    ios: RefCell<Slab<IoState>>,
}

impl Reactor {
    /// A waiter just saw WouldBlock: whatever readiness `token` had recorded
    /// in `dir` is used up.
    #[inline(never)]
    fn used_up(&self, token: usize, dir: Direction) {
        self.ios.borrow_mut()[token].ready &= !dir.bit();
    }

    /// True if `token` is ready in `dir`; else makes sure `waker` is among
    /// its waiters, to be woken when it is.
    #[inline(never)]
    fn arm(&self, token: usize, dir: Direction, waker: &Waker) -> bool {
        let mut ios = self.ios.borrow_mut();
        let io = &mut ios[token];
        if io.ready & dir.bit() != 0 {
            return true;
        }
        let list = io.waiters(dir);
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
        }
        false
    }

    /// How many sources are registered (while any is, waiting is no deadlock).
    pub(crate) fn len(&self) -> usize {
        self.ios.borrow().len()
    }

    /// Frees a source's slot (it was deregistered), waking any waiter so it
    /// sees the source gone rather than hanging.
    pub(crate) fn release(&self, token: usize) {
        let io = self.ios.borrow_mut().try_remove(token);
        if let Some(io) = io {
            for waker in io.readers.into_iter().chain(io.writers) {
                waker.wake();
            }
        }
    }

    /// Applies one event: sets readiness, wakes the waiters it concerns.
    pub(crate) fn dispatch(&self, event: &mio::event::Event) {
        let mut ios = self.ios.borrow_mut();
        let Some(io) = ios.get_mut(event.token().0) else {
            return; // released meanwhile
        };
        let trouble = event.is_error() || event.is_read_closed() && event.is_write_closed();
        let mut woken = Vec::new();
        if event.is_read_closed() || trouble {
            io.closed |= READ;
        }
        if event.is_write_closed() || trouble {
            io.closed |= WRITE;
        }
        if event.is_readable() || event.is_read_closed() || trouble {
            io.ready |= READ;
            woken.append(&mut io.readers);
        }
        if event.is_writable() || event.is_write_closed() || trouble {
            io.ready |= WRITE;
            woken.append(&mut io.writers);
        }
        drop(ios);
        for waker in woken {
            waker.wake();
        }
    }
}

/// Where a source is registered.
#[derive(Clone, Copy)]
struct Registration {
    /// Identity of the hub (its `Shared`'s address).
    hub: usize,
    token: usize,
}

/// A non-blocking descriptor made cooperative: [`do_io`](IoSource::do_io)
/// parks the calling green thread until the descriptor is ready.
pub(crate) struct IoSource<S: AsRawFd> {
    registration: OnceLock<(Registration, Arc<Shared>)>,
    /// Always Some but in `into_inner`, which takes it out before the drop.
    source: Option<S>,
}

impl<S: AsRawFd> IoSource<S> {
    /// Wraps a source that is already in non-blocking mode.
    pub(crate) fn new(source: S) -> IoSource<S> {
        IoSource {
            registration: OnceLock::new(),
            source: Some(source),
        }
    }

    /// The wrapped source.
    pub(crate) fn get_ref(&self) -> &S {
        self.source.as_ref().expect("an IoSource holds its source")
    }

    /// Runs `op` until it returns anything but `WouldBlock`, parking between
    /// tries until the descriptor is ready in direction `dir`. After
    /// `deadline`, fails with `ErrorKind::TimedOut`. `what` names the wait in
    /// deadlock reports ("TcpStream::read").
    pub(crate) fn do_io<R>(
        &self,
        dir: Direction,
        deadline: Option<Instant>,
        what: &'static &'static str,
        mut op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        // After a short stream read the socket is known drained: park for
        // the next edge instead of trying a read bound to fail.
        let mut skip = self.known_not_ready(dir);
        loop {
            if !skip {
                match op(self.get_ref()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => return other,
                }
            }
            skip = false;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(timed_out());
            }
            self.wait(dir, deadline, what)?;
        }
    }

    /// Waits until `dir` may be ready: parks a green thread, blocks a plain
    /// thread in poll(2). Out of line, so that what stays on a parked green
    /// thread's stack is the caller's small loop, not this.
    #[inline(never)]
    fn wait(
        &self,
        dir: Direction,
        deadline: Option<Instant>,
        what: &'static &'static str,
    ) -> io::Result<()> {
        let waited = with_hub(|hub| {
            hub.current_key()
                .map(|_| self.wait_green(hub, dir, deadline, what))
        })
        .flatten();
        match waited {
            Some(result) => result,
            None => wait_thread(self.get_ref().as_raw_fd(), dir, deadline),
        }
    }

    /// Whether `dir` is known not ready: registered with the running hub,
    /// and no event since it was last found drained.
    fn known_not_ready(&self, dir: Direction) -> bool {
        let Some((reg, _)) = self.registration.get() else {
            return false;
        };
        with_hub(|hub| {
            Arc::as_ptr(&hub.shared) as usize == reg.hub
                && hub.current_key().is_some()
                && hub
                    .reactor
                    .ios
                    .borrow()
                    .get(reg.token)
                    .is_some_and(|io| (io.ready | io.closed) & dir.bit() == 0)
        })
        .unwrap_or(false)
    }

    /// Records that `dir` was drained (a stream read returned less than
    /// asked): the next operation parks until an event, with no try first.
    /// Sound with edge-triggered epoll: any data arriving after the read
    /// raises a new event, which sets the bit again.
    pub(crate) fn drained(&self, dir: Direction) {
        let Some((reg, _)) = self.registration.get() else {
            return;
        };
        with_hub(|hub| {
            if Arc::as_ptr(&hub.shared) as usize == reg.hub {
                if let Some(io) = hub.reactor.ios.borrow_mut().get_mut(reg.token) {
                    io.ready &= !dir.bit();
                }
            }
        });
    }

    /// Parks the current green thread until `dir` is ready (or the deadline).
    ///
    /// Its frame stays on the green thread's stack while it waits (a compact
    /// stack saves it with every idle connection): the bookkeeping is done
    /// out of line, in `register`, `used_up` and `arm`.
    fn wait_green(
        &self,
        hub: &Hub,
        dir: Direction,
        deadline: Option<Instant>,
        what: &'static &'static str,
    ) -> io::Result<()> {
        let token = self.register(hub)?;
        let reactor = &hub.reactor;
        let waker = super::current_waker().expect("a green thread has a waker");
        reactor.used_up(token, dir);
        struct Leave<'a>(&'a Reactor, usize, Direction, &'a Waker);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                if let Some(io) = self.0.ios.borrow_mut().get_mut(self.1) {
                    io.waiters(self.2).retain(|w| !w.will_wake(self.3));
                }
            }
        }
        let _leave = Leave(reactor, token, dir, &waker);
        let wait = Wait::shared(what);
        loop {
            if reactor.arm(token, dir, &waker) {
                return Ok(());
            }
            match deadline {
                Some(d) if Instant::now() >= d => return Err(timed_out()),
                Some(d) => super::park_until(wait, d),
                None => super::park(wait),
            }
        }
    }

    /// The source's token in `hub`, registering it on first use.
    #[inline(never)]
    fn register(&self, hub: &Hub) -> io::Result<usize> {
        let here = Arc::as_ptr(&hub.shared) as usize;
        if let Some((registration, _)) = self.registration.get() {
            return if registration.hub == here {
                Ok(registration.token)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "greenhub: this socket is registered with another hub's event loop; \
                     a socket is used by the green threads of one hub (plain OS threads \
                     may block on it)",
                ))
            };
        }
        let token = hub.reactor.ios.borrow_mut().insert(IoState::default());
        let fd = self.get_ref().as_raw_fd();
        if let Err(e) = hub.shared.registry.register(
            &mut SourceFd(&fd),
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            hub.reactor.ios.borrow_mut().remove(token);
            return Err(e);
        }
        let registration = Registration { hub: here, token };
        // Only the owning hub's thread gets here first (a green thread is
        // running), so this cannot race with another registration.
        let _ = self.registration.set((registration, hub.shared.clone()));
        Ok(token)
    }

    /// Stops watching the descriptor (before it is closed).
    fn deregister(&mut self) {
        let Some((registration, shared)) = self.registration.take() else {
            return;
        };
        let Some(source) = self.source.as_ref() else {
            return;
        };
        let fd = source.as_raw_fd();
        let _ = shared.registry.deregister(&mut SourceFd(&fd));
        let here = with_hub(|hub| Arc::as_ptr(&hub.shared) as usize);
        if here == Some(registration.hub) {
            with_hub(|hub| hub.release_io(registration.token));
        } else {
            // Dropped on another thread: the owning hub frees the slot later.
            shared.release_later(registration.token);
        }
    }

    /// Deregisters and gives the source back.
    pub(crate) fn into_inner(mut self) -> S {
        self.deregister();
        self.source.take().expect("an IoSource holds its source")
    }
}

impl<S: AsRawFd> Drop for IoSource<S> {
    fn drop(&mut self) {
        // Before `source` is dropped, which closes the descriptor.
        self.deregister();
    }
}

impl<S: AsRawFd> AsRawFd for IoSource<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.get_ref().as_raw_fd()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the operation timed out")
}

/// A plain OS thread waits for readiness with poll(2).
fn wait_thread(fd: RawFd, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
    let events = match dir {
        Direction::Read => libc::POLLIN,
        Direction::Write => libc::POLLOUT,
    };
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                left.as_millis().clamp(1, i32::MAX as u128) as i32
            }
        };
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::rc::Rc;
    use std::time::Duration;

    fn pair() -> (IoSource<UnixStream>, IoSource<UnixStream>) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (IoSource::new(a), IoSource::new(b))
    }

    #[test]
    fn a_reader_parks_until_a_writer_writes() {
        crate::run(|| {
            let (a, b) = pair();
            let a = Rc::new(a);
            let reader = {
                let a = a.clone();
                crate::spawn(move || {
                    let mut buf = [0u8; 5];
                    let n = a
                        .do_io(Direction::Read, None, &"test::read", |s| {
                            (&*s).read(&mut buf)
                        })
                        .unwrap();
                    buf[..n].to_vec()
                })
            };
            crate::sleep(Duration::from_millis(10));
            assert!(!reader.is_finished(), "the reader parked");
            b.do_io(Direction::Write, None, &"test::write", |s| {
                (&*s).write(b"hello")
            })
            .unwrap();
            assert_eq!(reader.join().unwrap(), b"hello");
        })
        .unwrap();
    }

    #[test]
    fn a_read_deadline_times_out_and_hang_up_wakes_readers() {
        crate::run(|| {
            let (a, b) = pair();
            let start = Instant::now();
            let deadline = Some(start + Duration::from_millis(30));
            let err = a
                .do_io(Direction::Read, deadline, &"test::read", |s| {
                    (&*s).read(&mut [0u8; 1])
                })
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            assert!(start.elapsed() >= Duration::from_millis(30));
            let a = Rc::new(a);
            let reader = {
                let a = a.clone();
                crate::spawn(move || {
                    a.do_io(Direction::Read, None, &"test::read", |s| {
                        (&*s).read(&mut [0u8; 1])
                    })
                })
            };
            crate::yield_now();
            b.get_ref().shutdown(std::net::Shutdown::Both).unwrap();
            assert_eq!(reader.join().unwrap().unwrap(), 0, "EOF");
        })
        .unwrap();
    }

    #[test]
    fn plain_threads_block_with_poll() {
        let (a, b) = pair();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 3];
            let n = a
                .do_io(Direction::Read, None, &"test::read", |s| {
                    (&*s).read(&mut buf)
                })
                .unwrap();
            buf[..n].to_vec()
        });
        std::thread::sleep(Duration::from_millis(10));
        b.get_ref().write_all(b"abc").unwrap();
        assert_eq!(t.join().unwrap(), b"abc");
    }
}
