//! UDP: [`UdpSocket`], with the methods of [`std::net::UdpSocket`].
//!
//! The user-facing docs are on the types: this module is private, its
//! items are re-exported by `net`.

use std::fmt;
use std::io;
use std::net::{self, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::dns::{each_addr, ToSocketAddrs};
use super::tcp::{expect_nonblocking, Cooperative, Settings};
use crate::hub::reactor::Direction;

/// A UDP socket, like [`std::net::UdpSocket`], whose receives (and full
/// sends) park the calling green thread instead of blocking the hub.
///
/// ```
/// use greenhub::net::UdpSocket;
///
/// greenhub::run(|| {
///     let server = UdpSocket::bind("127.0.0.1:0").unwrap();
///     let addr = server.local_addr().unwrap();
///     let echo = greenhub::spawn(move || {
///         let mut buf = [0u8; 64];
///         let (n, from) = server.recv_from(&mut buf).unwrap(); // parks
///         server.send_to(&buf[..n], from).unwrap();
///     });
///     let client = UdpSocket::bind("127.0.0.1:0").unwrap();
///     client.connect(addr).unwrap();
///     client.send(b"ping").unwrap();
///     let mut buf = [0u8; 64];
///     let n = client.recv(&mut buf).unwrap();
///     assert_eq!(&buf[..n], b"ping");
///     echo.join().unwrap();
/// })
/// .unwrap();
/// ```
///
/// Receives park the calling green thread until a datagram arrives; sends
/// park only while the socket's send buffer is full. Timeouts, non-blocking
/// mode, clones and conversions behave as described for
/// [`TcpStream`](super::TcpStream): an expired timeout is
/// [`io::ErrorKind::TimedOut`], clones duplicate the descriptor and share
/// the timeouts. Several green threads may receive on one socket at once:
/// each datagram goes to one of them.
pub struct UdpSocket {
    inner: Cooperative<net::UdpSocket>,
}

impl UdpSocket {
    /// Binds to the first of `addr`'s addresses that accepts the binding.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        each_addr(&addr, |addr| {
            let socket = net::UdpSocket::bind(addr)?;
            socket.set_nonblocking(true)?;
            Ok(UdpSocket {
                inner: Cooperative::new(socket),
            })
        })
    }

    /// Receives a datagram, parking until one arrives; returns its length
    /// (truncated to `buf`) and sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner
            .read(&"UdpSocket::recv_from", |s| s.recv_from(buf))
    }

    /// Like [`recv_from`](UdpSocket::recv_from), leaving the datagram queued.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner
            .read(&"UdpSocket::peek_from", |s| s.peek_from(buf))
    }

    /// Sends a datagram to the first address `addr` resolves to (as std
    /// does); a host name is resolved on the blocking pool.
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to")
        })?;
        self.inner
            .write(&"UdpSocket::send_to", |s| s.send_to(buf, addr))
    }

    /// Connects to the first of `addr`'s addresses that accepts, so that
    /// [`send`](UdpSocket::send) and [`recv`](UdpSocket::recv) may be used
    /// and datagrams from other addresses are dropped.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(&addr, |addr| self.inner.get_ref().connect(addr))
    }

    /// Sends a datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(&"UdpSocket::send", |s| s.send(buf))
    }

    /// Receives a datagram from the connected peer, parking until one arrives.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(&"UdpSocket::recv", |s| s.recv(buf))
    }

    /// Like [`recv`](UdpSocket::recv), leaving the datagram queued.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(&"UdpSocket::peek", |s| s.peek(buf))
    }

    /// The connected peer's address (`NotConnected` if none).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Another handle to this socket: a duplicated descriptor, registered
    /// for readiness on its own, sharing this handle's timeouts and
    /// non-blocking mode.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        let dup = self.inner.get_ref().try_clone()?;
        Ok(UdpSocket {
            inner: self.inner.duplicate(dup),
        })
    }

    /// Sets how long a receive may wait (None: for ever). An expired receive
    /// fails with [`io::ErrorKind::TimedOut`]. A zero duration is an error,
    /// as in std.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.settings().set_timeout(Direction::Read, timeout)
    }

    /// Sets how long a send may wait for buffer space (None: for ever). An
    /// expired send fails with [`io::ErrorKind::TimedOut`].
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

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, broadcast: bool) -> io::Result<()> {
        self.inner.get_ref().set_broadcast(broadcast)
    }

    /// `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.inner.get_ref().broadcast()
    }

    /// Sets `IP_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.inner.get_ref().set_multicast_loop_v4(on)
    }

    /// `IP_MULTICAST_LOOP`.
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.inner.get_ref().multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_TTL`.
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.inner.get_ref().set_multicast_ttl_v4(ttl)
    }

    /// `IP_MULTICAST_TTL`.
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.inner.get_ref().multicast_ttl_v4()
    }

    /// Sets `IPV6_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v6(&self, on: bool) -> io::Result<()> {
        self.inner.get_ref().set_multicast_loop_v6(on)
    }

    /// `IPV6_MULTICAST_LOOP`.
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.inner.get_ref().multicast_loop_v6()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.get_ref().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.get_ref().ttl()
    }

    /// Joins the IPv4 multicast group `multiaddr` on the interface with
    /// address `interface` (`UNSPECIFIED`: the system's choice).
    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.inner.get_ref().join_multicast_v4(multiaddr, interface)
    }

    /// Joins the IPv6 multicast group `multiaddr` on interface index
    /// `interface` (0: the system's choice).
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.inner.get_ref().join_multicast_v6(multiaddr, interface)
    }

    /// Leaves an IPv4 multicast group (see
    /// [`join_multicast_v4`](UdpSocket::join_multicast_v4)).
    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.inner
            .get_ref()
            .leave_multicast_v4(multiaddr, interface)
    }

    /// Leaves an IPv6 multicast group (see
    /// [`join_multicast_v6`](UdpSocket::join_multicast_v6)).
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.inner
            .get_ref()
            .leave_multicast_v6(multiaddr, interface)
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get_ref().take_error()
    }

    /// With `true`, sends and receives on this handle (and its clones)
    /// return `WouldBlock` instead of parking (std's non-blocking mode). The
    /// descriptor itself is non-blocking either way.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.settings().set_nonblocking(nonblocking);
        Ok(())
    }

    /// Gives back a std socket with this one's timeouts, in blocking mode
    /// unless [`set_nonblocking`](UdpSocket::set_nonblocking) asked otherwise.
    pub fn into_std(self) -> io::Result<net::UdpSocket> {
        let settings = self.inner.settings();
        let read_timeout = settings.timeout(Direction::Read);
        let write_timeout = settings.timeout(Direction::Write);
        let nonblocking = settings.nonblocking();
        let socket = self.inner.into_inner();
        socket.set_read_timeout(read_timeout)?;
        socket.set_write_timeout(write_timeout)?;
        socket.set_nonblocking(nonblocking)?;
        Ok(socket)
    }
}

impl From<net::UdpSocket> for UdpSocket {
    /// Takes over a std socket, switching it to non-blocking mode; its read
    /// and write timeouts carry over.
    ///
    /// # Panics
    /// If that switch fails (the descriptor is not a valid socket).
    fn from(socket: net::UdpSocket) -> UdpSocket {
        expect_nonblocking(socket.set_nonblocking(true));
        let settings = Settings::default();
        // A zero timeout cannot come back from the kernel; errors leave none.
        let _ = settings.set_timeout(Direction::Read, socket.read_timeout().unwrap_or(None));
        let _ = settings.set_timeout(Direction::Write, socket.write_timeout().unwrap_or(None));
        UdpSocket {
            inner: Cooperative::with_settings(socket, Arc::new(settings)),
        }
    }
}

fd_conversions!(UdpSocket, net::UdpSocket);
