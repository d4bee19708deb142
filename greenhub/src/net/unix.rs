//! Unix domain sockets: [`UnixListener`], [`UnixStream`] and
//! [`UnixDatagram`], with the methods of their `std::os::unix::net` twins.
//!
//! The user-facing docs are on the types: this module is private, its
//! items are re-exported by `net`.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{self, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::tcp::{expect_nonblocking, Cooperative, Settings};
use crate::hub::reactor::Direction;

/// Sets a std socket's descriptor non-blocking, passing it on.
macro_rules! nonblocking {
    ($socket:expr) => {{
        let socket = $socket;
        socket.set_nonblocking(true)?;
        socket
    }};
}

/// Reads a std socket's timeouts into fresh [`Settings`] (for `From`).
macro_rules! settings_of {
    ($socket:expr) => {{
        let settings = Settings::default();
        // A zero timeout cannot come back from the kernel; errors leave none.
        let _ = settings.set_timeout(Direction::Read, $socket.read_timeout().unwrap_or(None));
        let _ = settings.set_timeout(Direction::Write, $socket.write_timeout().unwrap_or(None));
        Arc::new(settings)
    }};
}

/// Gives back a std socket with the timeouts of `$inner`'s settings, in
/// blocking mode unless its non-blocking mode is on (for `into_std`).
macro_rules! into_std {
    ($inner:expr) => {{
        let inner = $inner;
        let settings = inner.settings();
        let read_timeout = settings.timeout(Direction::Read);
        let write_timeout = settings.timeout(Direction::Write);
        let nonblocking = settings.nonblocking();
        let socket = inner.into_inner();
        socket.set_read_timeout(read_timeout)?;
        socket.set_write_timeout(write_timeout)?;
        socket.set_nonblocking(nonblocking)?;
        Ok(socket)
    }};
}

// ---------------------------------------------------------------------------
// UnixListener.
// ---------------------------------------------------------------------------

/// A Unix domain socket listening for connections, like
/// [`std::os::unix::net::UnixListener`]; [`accept`](UnixListener::accept)
/// parks the calling green thread until a connection arrives.
pub struct UnixListener {
    inner: Cooperative<net::UnixListener>,
}

impl UnixListener {
    /// Binds to `path` (which must not exist yet) and listens.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        Ok(UnixListener {
            inner: Cooperative::new(nonblocking!(net::UnixListener::bind(path)?)),
        })
    }

    /// Binds to `addr` and listens.
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixListener> {
        Ok(UnixListener {
            inner: Cooperative::new(nonblocking!(net::UnixListener::bind_addr(addr)?)),
        })
    }

    /// Accepts a connection, parking until one arrives.
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, addr) = self.inner.read(&"UnixListener::accept", |l| l.accept())?;
        stream.set_nonblocking(true)?;
        Ok((
            UnixStream {
                inner: Cooperative::new(stream),
            },
            addr,
        ))
    }

    /// An endless iterator over accepted connections, as std's.
    pub fn incoming(&self) -> UnixIncoming<'_> {
        UnixIncoming { listener: self }
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Another handle to this listener (a duplicated descriptor, registered
    /// on its own; it shares the non-blocking mode).
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        let dup = self.inner.get_ref().try_clone()?;
        Ok(UnixListener {
            inner: self.inner.duplicate(dup),
        })
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get_ref().take_error()
    }

    /// With `true`, [`accept`](UnixListener::accept) returns `WouldBlock`
    /// instead of parking when no connection is pending (std's non-blocking
    /// mode). The descriptor itself is non-blocking either way.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.settings().set_nonblocking(nonblocking);
        Ok(())
    }

    /// Gives back a std listener, in blocking mode unless
    /// [`set_nonblocking`](UnixListener::set_nonblocking) asked otherwise.
    pub fn into_std(self) -> io::Result<net::UnixListener> {
        let nonblocking = self.inner.settings().nonblocking();
        let listener = self.inner.into_inner();
        listener.set_nonblocking(nonblocking)?;
        Ok(listener)
    }
}

/// The iterator of [`UnixListener::incoming`]: accepts for ever. (std's is
/// `std::os::unix::net::Incoming`; renamed here, beside TCP's
/// [`Incoming`](super::Incoming) in one module.)
#[derive(Debug)]
pub struct UnixIncoming<'a> {
    listener: &'a UnixListener,
}

impl Iterator for UnixIncoming<'_> {
    type Item = io::Result<UnixStream>;
    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

impl From<net::UnixListener> for UnixListener {
    /// Takes over a std listener, switching it to non-blocking mode.
    ///
    /// # Panics
    /// If that switch fails (the descriptor is not a valid socket).
    fn from(listener: net::UnixListener) -> UnixListener {
        expect_nonblocking(listener.set_nonblocking(true));
        UnixListener {
            inner: Cooperative::new(listener),
        }
    }
}

fd_conversions!(UnixListener, net::UnixListener);

// ---------------------------------------------------------------------------
// UnixStream.
// ---------------------------------------------------------------------------

/// A connected Unix domain stream socket, like
/// [`std::os::unix::net::UnixStream`]: reads and writes park the calling
/// green thread until the socket is ready. From a plain OS thread, they
/// block that thread.
///
/// `Read` and `Write` are implemented for both `UnixStream` and
/// `&UnixStream`.
///
/// ```
/// use std::io::{Read, Write};
/// use greenhub::net::UnixStream;
///
/// greenhub::run(|| {
///     let (a, mut b) = UnixStream::pair().unwrap();
///     let echo = greenhub::spawn(move || {
///         let mut a = a;
///         let mut buf = [0u8; 4];
///         a.read_exact(&mut buf).unwrap(); // parks until b writes
///         a.write_all(&buf).unwrap();
///     });
///     b.write_all(b"ping").unwrap();
///     let mut buf = [0u8; 4];
///     b.read_exact(&mut buf).unwrap();
///     assert_eq!(&buf, b"ping");
///     echo.join().unwrap();
/// })
/// .unwrap();
/// ```
///
/// Timeouts, non-blocking mode, clones, conversions and sharing between
/// green threads behave as described for [`TcpStream`](super::TcpStream):
/// an expired timeout is [`io::ErrorKind::TimedOut`], clones duplicate the
/// descriptor and share the timeouts, a `shutdown` wakes blocked readers.
///
/// A connect to a listener whose backlog is full cannot wait for readiness
/// (the kernel sends no event when the backlog drains), so it retries after
/// short sleeps (1 ms, doubling up to 100 ms) until the listener accepts.
pub struct UnixStream {
    inner: Cooperative<net::UnixStream>,
}

impl UnixStream {
    /// Connects to the socket bound at `path`.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        UnixStream::connect_to(&SockAddr::unix(path)?)
    }

    /// Connects to the socket bound at `addr`.
    pub fn connect_addr(addr: &SocketAddr) -> io::Result<UnixStream> {
        UnixStream::connect_to(&sockaddr(addr)?)
    }

    /// A non-blocking connect; see the module docs for a full backlog.
    fn connect_to(addr: &SockAddr) -> io::Result<UnixStream> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        let mut backoff = Duration::from_millis(1);
        let in_progress = loop {
            match socket.connect(addr) {
                Ok(()) => break false,
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The backlog is full: no event will say when it drains.
                    sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        };
        let stream = UnixStream {
            inner: Cooperative::new(net::UnixStream::from(OwnedFd::from(socket))),
        };
        if in_progress {
            // Where the platform completes Unix connects later (not Linux).
            stream
                .inner
                .do_io(Direction::Write, None, &"UnixStream::connect", |s| {
                    if let Some(e) = s.take_error()? {
                        return Err(e);
                    }
                    match s.peer_addr() {
                        Ok(_) => Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                            Err(io::ErrorKind::WouldBlock.into())
                        }
                        Err(e) => Err(e),
                    }
                })?;
        }
        Ok(stream)
    }

    /// A pair of connected sockets.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = net::UnixStream::pair()?;
        Ok((
            UnixStream {
                inner: Cooperative::new(nonblocking!(a)),
            },
            UnixStream {
                inner: Cooperative::new(nonblocking!(b)),
            },
        ))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// Another handle to this stream: a duplicated descriptor, registered
    /// for readiness on its own, sharing this handle's timeouts and
    /// non-blocking mode.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        let dup = self.inner.get_ref().try_clone()?;
        Ok(UnixStream {
            inner: self.inner.duplicate(dup),
        })
    }

    /// Sets how long a read may wait (None: for ever). An expired read fails
    /// with [`io::ErrorKind::TimedOut`]. A zero duration is an error, as in
    /// std.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.settings().set_timeout(Direction::Read, timeout)
    }

    /// Sets how long a write may wait (None: for ever). An expired write
    /// fails with [`io::ErrorKind::TimedOut`].
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

    /// With `true`, reads and writes on this handle (and its clones) return
    /// `WouldBlock` instead of parking (std's non-blocking mode). The
    /// descriptor itself is non-blocking either way.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.settings().set_nonblocking(nonblocking);
        Ok(())
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get_ref().take_error()
    }

    /// Shuts down the read half, the write half or both. Green threads
    /// blocked reading this socket wake at once and see EOF (`Read` or
    /// `Both`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get_ref().shutdown(how)
    }

    /// Gives back a std stream with this one's timeouts, in blocking mode
    /// unless [`set_nonblocking`](UnixStream::set_nonblocking) asked
    /// otherwise.
    pub fn into_std(self) -> io::Result<net::UnixStream> {
        into_std!(self.inner)
    }
}

impl Read for &UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(&"UnixStream::read", |mut s| s.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.inner
            .read(&"UnixStream::read", |mut s| s.read_vectored(bufs))
    }
}

impl Write for &UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(&"UnixStream::write", |mut s| s.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner
            .write(&"UnixStream::write", |mut s| s.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for UnixStream {
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

impl From<net::UnixStream> for UnixStream {
    /// Takes over a std stream, switching it to non-blocking mode; its read
    /// and write timeouts carry over.
    ///
    /// # Panics
    /// If that switch fails (the descriptor is not a valid socket).
    fn from(stream: net::UnixStream) -> UnixStream {
        expect_nonblocking(stream.set_nonblocking(true));
        let settings = settings_of!(stream);
        UnixStream {
            inner: Cooperative::with_settings(stream, settings),
        }
    }
}

fd_conversions!(UnixStream, net::UnixStream);

// ---------------------------------------------------------------------------
// UnixDatagram.
// ---------------------------------------------------------------------------

/// A Unix domain datagram socket, like
/// [`std::os::unix::net::UnixDatagram`], whose receives (and full sends)
/// park the calling green thread.
///
/// A send to an unconnected receiver whose queue is full parks until this
/// socket's own queued datagrams are read (the kernel's only signal); give
/// it a write timeout if the queue may be full of others' datagrams.
pub struct UnixDatagram {
    inner: Cooperative<net::UnixDatagram>,
}

impl UnixDatagram {
    fn wrap(socket: net::UnixDatagram) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            inner: Cooperative::new(nonblocking!(socket)),
        })
    }

    /// A socket bound to `path` (which must not exist yet).
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        UnixDatagram::wrap(net::UnixDatagram::bind(path)?)
    }

    /// A socket bound to `addr`.
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixDatagram> {
        UnixDatagram::wrap(net::UnixDatagram::bind_addr(addr)?)
    }

    /// A socket bound to no address.
    pub fn unbound() -> io::Result<UnixDatagram> {
        UnixDatagram::wrap(net::UnixDatagram::unbound()?)
    }

    /// A pair of connected, unnamed sockets.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = net::UnixDatagram::pair()?;
        Ok((UnixDatagram::wrap(a)?, UnixDatagram::wrap(b)?))
    }

    /// Connects to the socket bound at `path`: [`send`](UnixDatagram::send)
    /// goes there, and only its datagrams are received.
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        self.inner.get_ref().connect(path)
    }

    /// Connects to `addr` (see [`connect`](UnixDatagram::connect)).
    pub fn connect_addr(&self, addr: &SocketAddr) -> io::Result<()> {
        self.inner.get_ref().connect_addr(addr)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// Receives a datagram, parking until one arrives; returns its length
    /// (truncated to `buf`) and sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner
            .read(&"UnixDatagram::recv_from", |s| s.recv_from(buf))
    }

    /// Receives a datagram (from the connected peer, if connected), parking
    /// until one arrives.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(&"UnixDatagram::recv", |s| s.recv(buf))
    }

    /// Sends a datagram to the socket bound at `path`.
    pub fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let path = path.as_ref();
        self.inner
            .write(&"UnixDatagram::send_to", |s| s.send_to(buf, path))
    }

    /// Sends a datagram to `addr`.
    pub fn send_to_addr(&self, buf: &[u8], addr: &SocketAddr) -> io::Result<usize> {
        self.inner
            .write(&"UnixDatagram::send_to", |s| s.send_to_addr(buf, addr))
    }

    /// Sends a datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(&"UnixDatagram::send", |s| s.send(buf))
    }

    /// Another handle to this socket: a duplicated descriptor, registered
    /// for readiness on its own, sharing this handle's timeouts and
    /// non-blocking mode.
    pub fn try_clone(&self) -> io::Result<UnixDatagram> {
        let dup = self.inner.get_ref().try_clone()?;
        Ok(UnixDatagram {
            inner: self.inner.duplicate(dup),
        })
    }

    /// Sets how long a receive may wait (None: for ever). An expired receive
    /// fails with [`io::ErrorKind::TimedOut`]. A zero duration is an error,
    /// as in std.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.settings().set_timeout(Direction::Read, timeout)
    }

    /// Sets how long a send may wait (None: for ever). An expired send fails
    /// with [`io::ErrorKind::TimedOut`].
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

    /// With `true`, sends and receives on this handle (and its clones)
    /// return `WouldBlock` instead of parking (std's non-blocking mode). The
    /// descriptor itself is non-blocking either way.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.settings().set_nonblocking(nonblocking);
        Ok(())
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get_ref().take_error()
    }

    /// Shuts down the read half, the write half or both; blocked receivers
    /// wake at once (`Read` or `Both`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get_ref().shutdown(how)
    }

    /// Gives back a std socket with this one's timeouts, in blocking mode
    /// unless [`set_nonblocking`](UnixDatagram::set_nonblocking) asked
    /// otherwise.
    pub fn into_std(self) -> io::Result<net::UnixDatagram> {
        into_std!(self.inner)
    }
}

impl From<net::UnixDatagram> for UnixDatagram {
    /// Takes over a std socket, switching it to non-blocking mode; its read
    /// and write timeouts carry over.
    ///
    /// # Panics
    /// If that switch fails (the descriptor is not a valid socket).
    fn from(socket: net::UnixDatagram) -> UnixDatagram {
        expect_nonblocking(socket.set_nonblocking(true));
        let settings = settings_of!(socket);
        UnixDatagram {
            inner: Cooperative::with_settings(socket, settings),
        }
    }
}

fd_conversions!(UnixDatagram, net::UnixDatagram);

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

/// std's Unix socket address as socket2's, for a non-blocking connect.
fn sockaddr(addr: &SocketAddr) -> io::Result<SockAddr> {
    if let Some(path) = addr.as_pathname() {
        return SockAddr::unix(path);
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        if let Some(name) = addr.as_abstract_name() {
            // socket2 reads a leading NUL as the abstract namespace.
            let mut bytes = Vec::with_capacity(name.len() + 1);
            bytes.push(0);
            bytes.extend_from_slice(name);
            return SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "cannot connect to an unnamed Unix socket address",
    ))
}

/// Sleeps cooperatively in a green thread, or blocks a plain OS thread.
fn sleep(duration: Duration) {
    let green = crate::hub::with_hub(|hub| hub.current_key().is_some()).unwrap_or(false);
    if green {
        crate::sleep(duration);
    } else {
        std::thread::sleep(duration);
    }
}
