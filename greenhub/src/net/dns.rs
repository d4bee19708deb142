//! Name resolution that never blocks the hub.
//!
//! `getaddrinfo(3)` blocks, so a host name is resolved on the
//! [blocking pool](crate::blocking), while only the asking green thread
//! parks. An address that is already numeric (a [`SocketAddr`], an IP
//! literal such as `"1.2.3.4:80"` or `"[::1]:80"`) is parsed on the spot
//! and costs no pool job.
//!
//! [`ToSocketAddrs`] mirrors [`std::net::ToSocketAddrs`] — same method, same
//! implementing types — so code moves over by changing the import. It is a
//! trait of its own because std's cannot be resolved elsewhere: its `&str`
//! borrows from the caller, and a pool thread may not borrow from a green
//! thread's stack. Ours copies the host name into an owned `String` first.
//! For a type of your own that implements only std's trait, use [`resolve`].
//!
//! ```
//! use greenhub::net::lookup_host;
//!
//! greenhub::run(|| {
//!     let addrs: Vec<_> = lookup_host("localhost:80").unwrap().collect();
//!     assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
//! })
//! .unwrap();
//! ```

use std::any::Any;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::{iter, option, slice, vec};

use crate::blocking::unblock;

/// Something that names one or more socket addresses, as
/// [`std::net::ToSocketAddrs`] does, resolved without blocking the hub.
///
/// Implemented for the same types as std's trait: [`SocketAddr`],
/// [`SocketAddrV4`], [`SocketAddrV6`], `(IpAddr, u16)`, `(Ipv4Addr, u16)`,
/// `(Ipv6Addr, u16)`, `(&str, u16)`, `(String, u16)`, `str` and `String`
/// (`"host:port"`), `&[SocketAddr]`, and references to any of these.
///
/// Host names are resolved with `getaddrinfo` on the
/// [blocking pool](crate::blocking) (one pool job per call; only the calling
/// green thread waits); numeric addresses are parsed at once. Outside a green
/// thread, resolution blocks the calling OS thread, as std's does.
pub trait ToSocketAddrs {
    /// The addresses, in the resolver's order.
    type Iter: Iterator<Item = SocketAddr>;

    /// Resolves to socket addresses. Errors as std's does: a malformed
    /// `"host:port"` gives [`io::ErrorKind::InvalidInput`]; an unknown host
    /// gives the resolver's error.
    fn to_socket_addrs(&self) -> io::Result<Self::Iter>;
}

/// Resolves `host` (`"host:port"`, or anything [`ToSocketAddrs`]) to its
/// socket addresses, as tokio's `lookup_host` does; host names on the
/// blocking pool, never on the hub thread.
///
/// ```
/// greenhub::run(|| {
///     let mut addrs = greenhub::net::lookup_host("127.0.0.1:8080").unwrap();
///     assert_eq!(addrs.next(), Some("127.0.0.1:8080".parse().unwrap()));
/// })
/// .unwrap();
/// ```
pub fn lookup_host<T: ToSocketAddrs>(host: T) -> io::Result<T::Iter> {
    host.to_socket_addrs()
}

/// Resolves anything that implements only [`std::net::ToSocketAddrs`] (a
/// type of your own, say) without blocking the hub: it is moved to the
/// blocking pool and resolved there. Types whose resolution cannot block
/// (socket addresses, IP pairs) and strings holding numeric addresses are
/// resolved on the spot, with no pool job.
pub fn resolve<A>(addr: A) -> io::Result<Vec<SocketAddr>>
where
    A: std::net::ToSocketAddrs + Send + 'static,
{
    let any: &dyn Any = &addr;
    macro_rules! ours {
        ($($t:ty),*) => {$(
            if let Some(a) = any.downcast_ref::<$t>() {
                return ToSocketAddrs::to_socket_addrs(a).map(Iterator::collect);
            }
        )*};
    }
    ours!(
        SocketAddr,
        SocketAddrV4,
        SocketAddrV6,
        (IpAddr, u16),
        (Ipv4Addr, u16),
        (Ipv6Addr, u16),
        &'static str,
        String,
        (&'static str, u16),
        (String, u16)
    );
    unblock(move || addr.to_socket_addrs().map(Iterator::collect))
}

/// Calls `f` on each address `addr` resolves to, until one succeeds; else
/// returns the last error (as std's sockets do for `bind` and `connect`).
/// Resolution errors are returned as they are; no address at all is
/// `InvalidInput`, "could not resolve to any addresses".
pub(crate) fn each_addr<A, T>(
    addr: A,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T>
where
    A: ToSocketAddrs,
{
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match f(a) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

/// Resolves `host` with `getaddrinfo` on the blocking pool (owned copies
/// only: the pool thread cannot borrow the caller's stack).
fn getaddrinfo(host: &str, port: u16) -> io::Result<vec::IntoIter<SocketAddr>> {
    let host = host.to_owned();
    let addrs = unblock(move || {
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .map(Iterator::collect::<Vec<_>>)
    })?;
    Ok(addrs.into_iter())
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

macro_rules! numeric {
    ($($t:ty),*) => {$(
        impl ToSocketAddrs for $t {
            type Iter = option::IntoIter<SocketAddr>;
            fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
                std::net::ToSocketAddrs::to_socket_addrs(self)
            }
        }
    )*};
}

numeric!(
    SocketAddr,
    SocketAddrV4,
    SocketAddrV6,
    (IpAddr, u16),
    (Ipv4Addr, u16),
    (Ipv6Addr, u16)
);

impl ToSocketAddrs for (&str, u16) {
    type Iter = vec::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        let (host, port) = *self;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)].into_iter());
        }
        getaddrinfo(host, port)
    }
}

impl ToSocketAddrs for (String, u16) {
    type Iter = vec::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        (self.0.as_str(), self.1).to_socket_addrs()
    }
}

impl ToSocketAddrs for str {
    type Iter = vec::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        if let Ok(addr) = self.parse::<SocketAddr>() {
            return Ok(vec![addr].into_iter());
        }
        // The same checks and messages as std, before any pool job.
        let (host, port) = self
            .rsplit_once(':')
            .ok_or_else(|| invalid("invalid socket address"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("invalid port value"))?;
        (host, port).to_socket_addrs()
    }
}

impl ToSocketAddrs for String {
    type Iter = vec::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        self.as_str().to_socket_addrs()
    }
}

impl<'a> ToSocketAddrs for &'a [SocketAddr] {
    type Iter = iter::Cloned<slice::Iter<'a, SocketAddr>>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        Ok(self.iter().cloned())
    }
}

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {
    type Iter = T::Iter;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        (**self).to_socket_addrs()
    }
}
