//! Cooperative networking with the API of `std::net` (and
//! `std::os::unix::net`): code written for std moves over by changing an
//! import. A blocking call parks only the calling green thread; the hub's
//! event loop (epoll via mio) wakes it when the socket is ready. From a plain
//! OS thread, the same calls block that thread.

/// The descriptor conversions every socket type has.
macro_rules! fd_conversions {
    ($ty:ident, $std:ty) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.inner.get_ref(), f)
            }
        }

        impl AsRawFd for $ty {
            fn as_raw_fd(&self) -> RawFd {
                self.inner.as_raw_fd()
            }
        }

        impl AsFd for $ty {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.inner.get_ref().as_fd()
            }
        }

        impl FromRawFd for $ty {
            /// Takes over a socket's descriptor, switching it to non-blocking
            /// mode.
            ///
            /// # Safety
            /// `fd` must be an open socket descriptor that nothing else owns.
            unsafe fn from_raw_fd(fd: RawFd) -> $ty {
                // SAFETY: the caller passes ownership of an open socket descriptor.
                $ty::from(unsafe { <$std>::from_raw_fd(fd) })
            }
        }

        impl IntoRawFd for $ty {
            /// Gives up the descriptor (still in non-blocking mode).
            fn into_raw_fd(self) -> RawFd {
                self.inner.into_inner().into_raw_fd()
            }
        }

        impl From<OwnedFd> for $ty {
            fn from(fd: OwnedFd) -> $ty {
                $ty::from(<$std>::from(fd))
            }
        }

        impl From<$ty> for OwnedFd {
            /// Gives up the descriptor (still in non-blocking mode).
            fn from(socket: $ty) -> OwnedFd {
                socket.inner.into_inner().into()
            }
        }
    };
}

mod dns;
mod tcp;
mod udp;
mod unix;

pub use dns::*;
pub use tcp::*;
pub use udp::*;
pub use unix::*;
