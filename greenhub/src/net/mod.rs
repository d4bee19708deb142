//! Cooperative networking with the API of `std::net` (and
//! `std::os::unix::net`): code written for std moves over by changing an
//! import. A blocking call parks only the calling green thread; the hub's
//! event loop (epoll via mio) wakes it when the socket is ready. From a plain
//! OS thread, the same calls block that thread.

mod dns;
mod tcp;
mod udp;
mod unix;

pub use dns::*;
pub use tcp::*;
pub use udp::*;
pub use unix::*;
