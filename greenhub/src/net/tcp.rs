//! TCP: [`TcpListener`] and [`TcpStream`], with the methods of their
//! `std::net` twins.
//!
//! The user-facing story (an example, where greenhub differs from std,
//! sharing a socket) is in [`TcpStream`]'s docs: this module is private,
//! its items are re-exported by `net`. It also holds what every socket type
//! of `net` is built from: [`Settings`] and [`Cooperative`].

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{self, Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::dns::{each_addr, ToSocketAddrs};
use crate::hub::reactor::{Direction, IoSource};

// ---------------------------------------------------------------------------
// Shared by every socket type of `net` (TCP, UDP, Unix).
// ---------------------------------------------------------------------------

/// Per-socket settings that std keeps in the kernel, kept here instead
/// because our descriptors are always non-blocking. Shared (through an `Arc`)
/// by a handle and its `try_clone`s, as the kernel's are.
#[derive(Default)]
pub(super) struct Settings {
    /// Nanoseconds; 0 means none (std refuses a zero timeout).
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
    /// std's non-blocking mode: calls return `WouldBlock` instead of parking.
    nonblocking: AtomicBool,
}

impl Settings {
    fn slot(&self, dir: Direction) -> &AtomicU64 {
        match dir {
            Direction::Read => &self.read_timeout,
            Direction::Write => &self.write_timeout,
        }
    }

    /// Sets a timeout; `Some(Duration::ZERO)` is an error, as in std.
    pub(super) fn set_timeout(&self, dir: Direction, timeout: Option<Duration>) -> io::Result<()> {
        let nanos = match timeout {
            None => 0,
            Some(t) if t.is_zero() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot set a 0 duration timeout",
                ))
            }
            // Beyond u64 nanoseconds (584 years) is as good as for ever.
            Some(t) => u64::try_from(t.as_nanos()).unwrap_or(u64::MAX),
        };
        self.slot(dir).store(nanos, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn timeout(&self, dir: Direction) -> Option<Duration> {
        match self.slot(dir).load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    pub(super) fn set_nonblocking(&self, nonblocking: bool) {
        self.nonblocking.store(nonblocking, Ordering::Relaxed);
    }

    pub(super) fn nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }
}

/// A non-blocking std socket made cooperative: an [`IoSource`] plus the
/// [`Settings`] that decide how long (and whether) an operation may wait.
pub(super) struct Cooperative<S: AsRawFd> {
    io: IoSource<S>,
    settings: Arc<Settings>,
}

impl<S: AsRawFd> Cooperative<S> {
    /// Wraps `source`, which must already be in non-blocking mode.
    pub(super) fn new(source: S) -> Cooperative<S> {
        Cooperative::with_settings(source, Arc::default())
    }

    /// Wraps `source` (non-blocking) with settings shared with another handle.
    pub(super) fn with_settings(source: S, settings: Arc<Settings>) -> Cooperative<S> {
        Cooperative {
            io: IoSource::new(source),
            settings,
        }
    }

    /// A handle on `dup`, a duplicate of this one's descriptor: its own
    /// registration, the same settings.
    pub(super) fn duplicate(&self, dup: S) -> Cooperative<S> {
        Cooperative::with_settings(dup, self.settings.clone())
    }

    pub(super) fn get_ref(&self) -> &S {
        self.io.get_ref()
    }

    pub(super) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Runs a read-side operation, parking until readable while it would
    /// block (up to the read timeout).
    pub(super) fn read<R>(
        &self,
        what: &'static &'static str,
        op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        self.run(Direction::Read, what, op)
    }

    /// Runs a write-side operation, parking until writable while it would
    /// block (up to the write timeout).
    pub(super) fn write<R>(
        &self,
        what: &'static &'static str,
        op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        self.run(Direction::Write, what, op)
    }

    fn run<R>(
        &self,
        dir: Direction,
        what: &'static &'static str,
        mut op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        if self.settings.nonblocking() {
            return op(self.get_ref());
        }
        let deadline = self
            .settings
            .timeout(dir)
            .and_then(|t| Instant::now().checked_add(t));
        self.io.do_io(dir, deadline, what, op)
    }

    /// Waits for readiness in `dir` regardless of the settings (connects).
    pub(super) fn do_io<R>(
        &self,
        dir: Direction,
        deadline: Option<Instant>,
        what: &'static &'static str,
        op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io.do_io(dir, deadline, what, op)
    }

    /// Stops watching the descriptor and gives the source back.
    pub(super) fn into_inner(self) -> S {
        self.io.into_inner()
    }
}

impl<S: AsRawFd> AsRawFd for Cooperative<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.get_ref().as_raw_fd()
    }
}

/// Switches a socket handed over by the user to non-blocking mode, for the
/// infallible conversions (`From`, `FromRawFd`).
#[track_caller]
pub(super) fn expect_nonblocking(result: io::Result<()>) {
    if let Err(e) = result {
        panic!("greenhub: cannot put the socket in non-blocking mode: {e}");
    }
}

// ---------------------------------------------------------------------------
// TcpListener.
// ---------------------------------------------------------------------------

/// A TCP socket listening for connections, like [`std::net::TcpListener`];
/// [`accept`](TcpListener::accept) parks the calling green thread until a
/// connection arrives.
pub struct TcpListener {
    inner: Cooperative<net::TcpListener>,
}

impl TcpListener {
    /// Binds to the first of `addr`'s addresses that accepts the binding, and
    /// listens with the system's largest backlog (`SOMAXCONN`).
    /// `SO_REUSEADDR` is set, as std does.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(&addr, |addr| {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            socket.listen(libc::SOMAXCONN)?;
            Ok(TcpListener {
                inner: Cooperative::new(socket.into()),
            })
        })
    }

    /// Accepts a connection, parking until one arrives. The new stream is
    /// cooperative (non-blocking underneath) like this listener.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = self
            .inner
            .read(&"TcpListener::accept", accept_nonblocking)?;
        Ok((TcpStream::from_nonblocking(stream), addr))
    }

    /// An endless iterator over accepted connections, as std's.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Another handle to this listener (a duplicated descriptor, registered
    /// on its own; it shares the non-blocking mode).
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        let dup = self.inner.get_ref().try_clone()?;
        Ok(TcpListener {
            inner: self.inner.duplicate(dup),
        })
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.get_ref().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.get_ref().ttl()
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get_ref().take_error()
    }

    /// With `true`, [`accept`](TcpListener::accept) returns `WouldBlock`
    /// instead of parking when no connection is pending (std's non-blocking
    /// mode). The descriptor itself is non-blocking either way.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.settings().set_nonblocking(nonblocking);
        Ok(())
    }

    /// Gives back a std listener, in blocking mode unless
    /// [`set_nonblocking`](TcpListener::set_nonblocking) asked otherwise.
    pub fn into_std(self) -> io::Result<net::TcpListener> {
        let nonblocking = self.inner.settings().nonblocking();
        let listener = self.inner.into_inner();
        listener.set_nonblocking(nonblocking)?;
        Ok(listener)
    }
}

/// Accepts with the new socket already non-blocking (one syscall where the
/// platform has `accept4`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn accept_nonblocking(listener: &net::TcpListener) -> io::Result<(net::TcpStream, SocketAddr)> {
    let (socket, addr) =
        socket2::SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let addr = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "accept: not an IP address"))?;
    Ok((socket.into(), addr))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn accept_nonblocking(listener: &net::TcpListener) -> io::Result<(net::TcpStream, SocketAddr)> {
    let (stream, addr) = listener.accept()?;
    stream.set_nonblocking(true)?;
    Ok((stream, addr))
}

/// The iterator of [`TcpListener::incoming`]: accepts for ever.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

impl From<net::TcpListener> for TcpListener {
    /// Takes over a std listener, switching it to non-blocking mode.
    ///
    /// # Panics
    /// If that switch fails (the descriptor is not a valid socket).
    fn from(listener: net::TcpListener) -> TcpListener {
        expect_nonblocking(listener.set_nonblocking(true));
        TcpListener {
            inner: Cooperative::new(listener),
        }
    }
}

fd_conversions!(TcpListener, net::TcpListener);

// ---------------------------------------------------------------------------
// TcpStream.
// ---------------------------------------------------------------------------

/// A TCP connection, like [`std::net::TcpStream`]: reads and writes park the
/// calling green thread (never the hub) until the socket is ready. From a
/// plain OS thread, they block that thread.
///
/// `Read` and `Write` are implemented for both `TcpStream` and `&TcpStream`,
/// so one green thread may read while another writes the same stream.
///
/// ```
/// use std::io::{Read, Write};
/// use greenhub::net::{TcpListener, TcpStream};
///
/// greenhub::run(|| {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let server = greenhub::spawn(move || {
///         let (mut conn, _) = listener.accept().unwrap();
///         let mut buf = [0u8; 5];
///         conn.read_exact(&mut buf).unwrap();
///         conn.write_all(&buf).unwrap(); // echo
///     });
///     let mut client = TcpStream::connect(addr).unwrap();
///     client.write_all(b"hello").unwrap();
///     let mut echoed = [0u8; 5];
///     client.read_exact(&mut echoed).unwrap();
///     assert_eq!(&echoed, b"hello");
///     server.join().unwrap();
/// })
/// .unwrap();
/// ```
///
/// # Where greenhub differs from std
///
/// - **Timeouts.** A read or write whose timeout
///   ([`TcpStream::set_read_timeout`]) expires fails with
///   [`io::ErrorKind::TimedOut`] on every platform (std gives `WouldBlock` or
///   `TimedOut` depending on the platform). Timeouts live in the handle, not
///   in the kernel; a [`try_clone`](TcpStream::try_clone) shares them with
///   its original, as std's clones share the socket's options.
/// - **Non-blocking mode.** The descriptor is always non-blocking underneath.
///   [`set_nonblocking(true)`](TcpStream::set_nonblocking) makes the calls on
///   this handle (and its clones) return `WouldBlock` instead of parking, as
///   in std.
/// - **Hubs and clones.** A handle waits for readiness on the hub of the
///   first green thread that had to wait on it, for life; green threads of
///   another hub get `ErrorKind::Unsupported` (plain OS threads may always
///   block on it). [`try_clone`](TcpStream::try_clone) duplicates the
///   descriptor, and the duplicate waits on its own: send a clone to use a
///   socket from another hub.
/// - **Host names** are resolved on the blocking pool, so the calls take
///   greenhub's [`ToSocketAddrs`], which std's address types (`SocketAddr`,
///   `"host:port"`, `(host, port)`, …) all implement.
/// - **Conversions** from std sockets switch them to non-blocking mode; the
///   descriptor of [`IntoRawFd::into_raw_fd`] stays non-blocking, while
///   [`TcpStream::into_std`] restores a blocking std socket.
///
/// Several green threads may use one socket at once (share it with `Rc`, or
/// use `&TcpStream`'s `Read`/`Write`): when two wait to read, a readiness
/// event wakes both and each tries again, so both are served as data comes.
/// A [`shutdown`](TcpStream::shutdown) from one green thread wakes the others
/// blocked on the socket at once (a reader sees EOF). Killing a green thread
/// blocked on a socket leaves the socket usable by the others.
pub struct TcpStream {
    inner: Cooperative<net::TcpStream>,
}

impl TcpStream {
    fn from_nonblocking(stream: net::TcpStream) -> TcpStream {
        TcpStream {
            inner: Cooperative::new(stream),
        }
    }

    /// Connects to `addr`, trying each of its addresses in turn until one
    /// accepts (as std does); a host name is resolved on the blocking pool.
    /// Parks until the connection is made or refused.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        each_addr(&addr, |addr| TcpStream::connect_addr(&addr, None))
    }

    /// Connects to `addr`, giving up with [`io::ErrorKind::TimedOut`] after
    /// `timeout`. A zero timeout is an error (`InvalidInput`), as in std.
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        TcpStream::connect_addr(addr, Instant::now().checked_add(timeout))
    }

    /// A non-blocking connect: start it, wait until writable, then ask the
    /// socket how it went.
    fn connect_addr(addr: &SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
        let socket = Socket::new(
            Domain::for_address(*addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        match socket.connect(&(*addr).into()) {
            Ok(()) => {}
            // In progress; EINTR also leaves it going on asynchronously.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
        let stream = TcpStream::from_nonblocking(socket.into());
        stream
            .inner
            .do_io(Direction::Write, deadline, &"TcpStream::connect", |s| {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                match s.peer_addr() {
                    Ok(_) => Ok(()),
                    // Not yet (a spurious wake-up): wait again.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    Err(e) => Err(e),
                }
            })?;
        Ok(stream)
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Shuts down the read half, the write half or both. Green threads
    /// blocked reading this socket wake at once and see EOF (`Read` or
    /// `Both`); a peer's reads see EOF once the data sent is read (`Write`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get_ref().shutdown(how)
    }

    /// Another handle to this stream: a duplicated descriptor, registered
    /// for readiness on its own (so it may be used from another OS thread or
    /// hub), sharing this handle's timeouts and non-blocking mode.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let dup = self.inner.get_ref().try_clone()?;
        Ok(TcpStream {
            inner: self.inner.duplicate(dup),
        })
    }

    /// Sets how long a read may wait (None: for ever). An expired read fails
    /// with [`io::ErrorKind::TimedOut`] (never earlier than asked; timers
    /// have a 1 ms resolution). A zero duration is an error, as in std.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.settings().set_timeout(Direction::Read, timeout)
    }

    /// Sets how long a write may wait (None: for ever). An expired write
    /// fails with [`io::ErrorKind::TimedOut`]. A zero duration is an error.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.settings().set_timeout(Direction::Write, timeout)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.settings().timeout(Direction::Read))
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.settings().timeout(Direction::Write))
    }

    /// Reads without consuming: the next read returns the same bytes. Parks
    /// until data (or EOF) is there.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(&"TcpStream::peek", |s| s.peek(buf))
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.get_ref().set_nodelay(nodelay)
    }

    /// `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.get_ref().nodelay()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.get_ref().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.get_ref().ttl()
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get_ref().take_error()
    }

    /// With `true`, reads and writes on this handle (and its clones) return
    /// `WouldBlock` instead of parking (std's non-blocking mode). The
    /// descriptor itself is non-blocking either way.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.settings().set_nonblocking(nonblocking);
        Ok(())
    }

    /// Gives back a std stream with this one's timeouts, in blocking mode
    /// unless [`set_nonblocking`](TcpStream::set_nonblocking) asked otherwise.
    pub fn into_std(self) -> io::Result<net::TcpStream> {
        let settings = self.inner.settings();
        let read_timeout = settings.timeout(Direction::Read);
        let write_timeout = settings.timeout(Direction::Write);
        let nonblocking = settings.nonblocking();
        let stream = self.inner.into_inner();
        stream.set_read_timeout(read_timeout)?;
        stream.set_write_timeout(write_timeout)?;
        stream.set_nonblocking(nonblocking)?;
        Ok(stream)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len();
        let n = self.inner.read(&"TcpStream::read", |mut s| s.read(buf))?;
        if n > 0 && n < len {
            self.inner.io.drained(Direction::Read);
        }
        Ok(n)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.inner
            .read(&"TcpStream::read", |mut s| s.read_vectored(bufs))
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(&"TcpStream::write", |mut s| s.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner
            .write(&"TcpStream::write", |mut s| s.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl From<net::TcpStream> for TcpStream {
    /// Takes over a std stream, switching it to non-blocking mode; its read
    /// and write timeouts carry over.
    ///
    /// # Panics
    /// If that switch fails (the descriptor is not a valid socket).
    fn from(stream: net::TcpStream) -> TcpStream {
        expect_nonblocking(stream.set_nonblocking(true));
        let settings = Settings::default();
        // A zero timeout cannot come back from the kernel; errors leave none.
        let _ = settings.set_timeout(Direction::Read, stream.read_timeout().unwrap_or(None));
        let _ = settings.set_timeout(Direction::Write, stream.write_timeout().unwrap_or(None));
        TcpStream {
            inner: Cooperative::with_settings(stream, Arc::new(settings)),
        }
    }
}

fd_conversions!(TcpStream, net::TcpStream);
