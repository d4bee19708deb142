//! [`StreamServer`]: a TCP server that runs a handler green thread per
//! connection (gevent's `StreamServer`).
//!
//! # The accept loop
//!
//! One green thread accepts: it parks in [`TcpListener::accept`] until a
//! connection arrives, spawns the handler in a new green thread (a member of
//! the server's [`Pool`]), and goes on. Around that:
//!
//! - **Bounded concurrency.** With [`max_connections(n)`], the loop parks
//!   *before* accepting while `n` handlers run, so the kernel's listen
//!   backlog holds newcomers (and pushes back on clients once it is full)
//!   instead of the server taking descriptors it will not serve. A handler's
//!   end frees its slot and wakes the loop.
//! - **Fairness.** After [`max_accept`] accepts in a row the loop yields, so
//!   the handlers it spawned (and every other ready green thread) run before
//!   it accepts more: a burst of connections cannot keep the hub to itself.
//! - **Errors** never end the loop; what it does depends on the error:
//!
//!   | `accept` failed with | what the loop does |
//!   |---|---|
//!   | `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` (out of descriptors or memory) | sleeps 10 ms, then 20, 40, … up to 1 s between tries until an accept succeeds; says so on stderr when it starts failing |
//!   | `ECONNABORTED`, `EINTR`, and the network errors Linux passes on from a pending connection (`EPROTO`, `ENOPROTOOPT`, `ENETDOWN`, `ENONET`, `EHOSTDOWN`, `EHOSTUNREACH`, `ENETUNREACH`, `EPERM`): that connection is gone, the next may be fine | tries again at once (after 100 in a row, it says so and backs off as for `EMFILE`) |
//!   | anything else | writes it on stderr and backs off as for `EMFILE` |
//!
//!   The backoff parks the accept loop in [`sleep`](crate::sleep): the other
//!   green threads run on, and a server that is out of descriptors costs
//!   (almost) no CPU while its clients wait in the backlog. Once handlers
//!   end and free descriptors, the next try accepts them.
//!
//! # Stopping
//!
//! [`stop(timeout)`](StreamServer::stop) stops the accept loop and closes
//! the listening socket (new clients are refused by the kernel), waits up to
//! `timeout` for the handlers to finish, then kills those still running
//! (they unwind from the call they are blocked in; their sockets close) and
//! waits for them to end.
//!
//! [`max_connections(n)`]: StreamServer::max_connections
//! [`max_accept`]: StreamServer::max_accept

use std::cell::{Cell, OnceCell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::net::{TcpListener, TcpStream, ToSocketAddrs};
use crate::sync::{Event, Pool};
use crate::{Builder, JoinHandle};

/// The first backoff delay after a resource error (`EMFILE`, …).
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// The longest backoff delay.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Errors retried at once, in a row, before the loop backs off anyway (an
/// error that keeps coming back must not spin the hub at full CPU).
const MAX_QUICK_RETRIES: u32 = 100;
/// The default of [`StreamServer::max_accept`] (gevent's).
const DEFAULT_MAX_ACCEPT: usize = 100;

/// A TCP server that runs `handler(stream, peer)` in a new green thread for
/// each connection it accepts (gevent's `StreamServer`).
///
/// The handler is an `Fn` that lives on the server's hub: it may capture
/// `Rc`/`RefCell` state shared by all connections. When the handler returns
/// (or panics, which is reported on stderr and ends only that connection),
/// the stream is dropped and the connection closed. See the
/// [module docs](self) for the accept loop's behaviour under load and on
/// errors.
///
/// `StreamServer` is a cheap handle (`Clone`): one green thread may
/// [`serve_forever`](StreamServer::serve_forever) while another holds a clone
/// to [`stop`](StreamServer::stop) it. Dropping the handles does not stop a
/// started server; `stop` does (and so does the end of [`run`](crate::run),
/// which kills every green thread).
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use greenhub::net::TcpStream;
/// use greenhub::server::StreamServer;
///
/// greenhub::run(|| -> std::io::Result<()> {
///     // An echo server: one green thread per connection, at most 10,000.
///     let server = StreamServer::bind("127.0.0.1:0", |mut stream: TcpStream, _peer| {
///         let mut buf = [0u8; 1024];
///         while let Ok(n @ 1..) = stream.read(&mut buf) {
///             if stream.write_all(&buf[..n]).is_err() {
///                 break;
///             }
///         }
///     })?
///     .max_connections(10_000);
///     server.start()?;
///
///     let mut client = TcpStream::connect(server.local_addr())?;
///     client.write_all(b"hello")?;
///     let mut reply = [0u8; 5];
///     client.read_exact(&mut reply)?;
///     assert_eq!(&reply, b"hello");
///     drop(client); // the handler reads EOF and returns
///
///     server.stop(Duration::from_secs(1));
///     assert!(!server.is_running());
///     Ok(())
/// })
/// .unwrap()
/// .unwrap();
/// ```
#[derive(Clone)]
pub struct StreamServer {
    inner: Rc<Inner>,
}

/// The server's lifecycle: `NotStarted → Running → Stopping → Stopped`
/// (or `NotStarted → Stopped` when stopped before it started). Only `start`
/// leaves `NotStarted`; only `stop` (or its finisher, if the green thread
/// stopping it is killed) enters `Stopping` and `Stopped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    NotStarted,
    Running,
    Stopping,
    Stopped,
}

type Handler = dyn Fn(TcpStream, SocketAddr);

struct Inner {
    local_addr: SocketAddr,
    handler: Rc<Handler>,
    /// The listening socket; `None` once stopped. The accept loop holds a
    /// clone while it runs, so the socket closes when both are gone.
    listener: RefCell<Option<Rc<TcpListener>>>,
    max_connections: Cell<Option<usize>>,
    max_accept: Cell<usize>,
    /// The handlers: made by `start`, sized by `max_connections`.
    pool: OnceCell<Pool>,
    state: Cell<State>,
    accept_loop: RefCell<Option<JoinHandle<()>>>,
    /// Set once the server is `Stopped`.
    stopped: Event,
}

impl StreamServer {
    /// Binds a listening socket to `addr` (as [`TcpListener::bind`]) and makes
    /// a server for it, not yet started.
    ///
    /// # Errors
    /// Those of [`TcpListener::bind`].
    pub fn bind<A, F>(addr: A, handler: F) -> io::Result<StreamServer>
    where
        A: ToSocketAddrs,
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        StreamServer::new(TcpListener::bind(addr)?, handler)
    }

    /// Makes a server for a listening socket (for one made with options of
    /// your own, or inherited: see `From<std::net::TcpListener>` for
    /// [`TcpListener`]), not yet started.
    ///
    /// # Errors
    /// If the socket's local address cannot be read (it is not bound).
    pub fn new<F>(listener: TcpListener, handler: F) -> io::Result<StreamServer>
    where
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        let local_addr = listener.local_addr()?;
        Ok(StreamServer {
            inner: Rc::new(Inner {
                local_addr,
                handler: Rc::new(handler),
                listener: RefCell::new(Some(Rc::new(listener))),
                max_connections: Cell::new(None),
                max_accept: Cell::new(DEFAULT_MAX_ACCEPT),
                pool: OnceCell::new(),
                state: Cell::new(State::NotStarted),
                accept_loop: RefCell::new(None),
                stopped: Event::new(),
            }),
        })
    }

    /// Runs at most `n` handlers at a time: while `n` run, the server stops
    /// accepting (clients wait in the listen backlog) and resumes as soon as
    /// one ends. Unbounded by default.
    ///
    /// # Panics
    /// If `n` is 0, or the server has started.
    #[track_caller]
    pub fn max_connections(self, n: usize) -> StreamServer {
        assert!(
            n > 0,
            "greenhub: StreamServer::max_connections needs n >= 1"
        );
        self.assert_not_started("max_connections");
        self.inner.max_connections.set(Some(n));
        self
    }

    /// Accepts at most `n` connections in a row before yielding to the other
    /// green threads (the handlers just spawned among them). Default 100.
    ///
    /// # Panics
    /// If `n` is 0, or the server has started.
    #[track_caller]
    pub fn max_accept(self, n: usize) -> StreamServer {
        assert!(n > 0, "greenhub: StreamServer::max_accept needs n >= 1");
        self.assert_not_started("max_accept");
        self.inner.max_accept.set(n);
        self
    }

    #[track_caller]
    fn assert_not_started(&self, what: &str) {
        assert!(
            self.inner.state.get() == State::NotStarted,
            "greenhub: StreamServer::{what} must be set before the server starts"
        );
    }

    /// The address the server listens on (with the port the system chose,
    /// if it was bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Whether the server has started and `stop` has not been called.
    pub fn is_running(&self) -> bool {
        self.inner.state.get() == State::Running
    }

    /// How many handlers are running now.
    pub fn connections(&self) -> usize {
        self.inner.pool.get().map_or(0, |pool| pool.len())
    }

    /// Starts accepting in a new green thread, and returns at once. Does
    /// nothing if the server is running.
    ///
    /// # Errors
    /// If the server was stopped (its socket is closed: make a new server),
    /// or the accept loop's green thread cannot be spawned (outside a hub,
    /// or no stack can be had).
    pub fn start(&self) -> io::Result<()> {
        let inner = &self.inner;
        match inner.state.get() {
            State::Running => return Ok(()),
            State::Stopping | State::Stopped => return Err(stopped_error()),
            State::NotStarted => {}
        }
        let listener = inner.listener.borrow().clone().ok_or_else(stopped_error)?;
        inner
            .pool
            .get_or_init(|| Pool::new(inner.max_connections.get().unwrap_or(usize::MAX)));
        let looped = inner.clone();
        let handle = Builder::new()
            .name(format!("StreamServer {}", inner.local_addr))
            .spawn(move || accept_loop(&looped, &listener))?;
        *inner.accept_loop.borrow_mut() = Some(handle);
        inner.state.set(State::Running);
        Ok(())
    }

    /// Starts the server (if it is not running) and parks until it has been
    /// stopped by [`stop`](StreamServer::stop) (from another green thread, or
    /// from a handler) and that `stop` has finished.
    ///
    /// If the green thread in `serve_forever` is killed, the server is
    /// stopped too, with no grace period: the accept loop ends and the
    /// handlers are killed (by a green thread spawned for it, as the killed
    /// one can no longer wait).
    ///
    /// # Errors
    /// As [`start`](StreamServer::start).
    pub fn serve_forever(&self) -> io::Result<()> {
        self.start()?;
        struct StopOnUnwind<'a>(&'a StreamServer, bool);
        impl Drop for StopOnUnwind<'_> {
            fn drop(&mut self) {
                if self.1 {
                    let server = self.0.clone();
                    // Spawning fails only when the hub is shutting down, and
                    // then every green thread is being killed anyway.
                    let _ = Builder::new().spawn(move || server.stop(Duration::ZERO));
                }
            }
        }
        let mut guard = StopOnUnwind(self, true);
        self.inner.stopped.wait();
        guard.1 = false;
        Ok(())
    }

    /// Stops the server: ends the accept loop and closes the listening
    /// socket, waits up to `timeout` for the running handlers to finish,
    /// then kills the rest and waits for them to end. Returns once no
    /// handler runs (but the caller, when a handler calls it).
    ///
    /// Stopping a stopped server does nothing; while another green thread is
    /// stopping it, `stop` waits for that stop to finish. A server that was
    /// never started is marked stopped and its socket closed.
    ///
    /// # Panics
    /// Outside a green thread of the server's hub.
    pub fn stop(&self, timeout: Duration) {
        let inner = &self.inner;
        match inner.state.get() {
            State::Stopped => return,
            State::Stopping => return inner.stopped.wait(),
            State::NotStarted => {
                inner.listener.borrow_mut().take();
                inner.state.set(State::Stopped);
                inner.stopped.set();
                return;
            }
            State::Running => {}
        }
        inner.state.set(State::Stopping);
        // If the caller is killed in one of the waits below, someone must
        // still kill the handlers and mark the server stopped.
        struct Finish<'a>(&'a StreamServer, bool);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                if self.1 {
                    let server = self.0.clone();
                    let spawned = Builder::new().spawn(move || {
                        if let Some(pool) = server.inner.pool.get() {
                            pool.kill();
                        }
                        server.inner.mark_stopped();
                    });
                    if spawned.is_err() {
                        self.0.inner.mark_stopped();
                    }
                }
            }
        }
        let mut finish = Finish(self, true);
        inner.listener.borrow_mut().take();
        let accept_loop = inner.accept_loop.borrow_mut().take();
        if let Some(accept_loop) = accept_loop {
            accept_loop.kill();
            // It unwinds at once from wherever it parks, dropping its
            // listener: the socket is closed when this returns.
            accept_loop.wait();
        }
        let pool = inner.pool.get().expect("a started server has a pool");
        if !pool.join_timeout(timeout) {
            pool.kill();
        }
        finish.1 = false;
        inner.mark_stopped();
    }
}

impl Inner {
    fn mark_stopped(&self) {
        self.state.set(State::Stopped);
        self.stopped.set();
    }
}

impl fmt::Debug for StreamServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamServer")
            .field("local_addr", &self.inner.local_addr)
            .field("state", &self.inner.state.get())
            .field("connections", &self.connections())
            .field("max_connections", &self.inner.max_connections.get())
            .finish()
    }
}

fn stopped_error() -> io::Error {
    io::Error::other("greenhub: this StreamServer was stopped (its socket is closed)")
}

/// What the accept loop does after a failed accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnError {
    /// The failure concerned one connection: try again at once.
    RetryNow,
    /// Out of descriptors or memory: back off, say so once per episode.
    BackOffQuietly,
    /// Unexpected: say so each time, and back off.
    BackOffLoudly,
}

fn classify(e: &io::Error) -> OnError {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => OnError::BackOffQuietly,
        // accept(2), "Error handling": Linux passes pending network errors of
        // the new connection on as accept's error; retry as for EAGAIN.
        Some(
            libc::ECONNABORTED
            | libc::EINTR
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::ENETDOWN
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EPERM,
        ) => OnError::RetryNow,
        // Linux only ("machine is not on the network").
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(libc::ENONET) => OnError::RetryNow,
        _ => match e.kind() {
            io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => OnError::RetryNow,
            io::ErrorKind::OutOfMemory => OnError::BackOffQuietly,
            _ => OnError::BackOffLoudly,
        },
    }
}

/// The accept loop's green thread: runs until `stop` kills it.
fn accept_loop(inner: &Inner, listener: &TcpListener) {
    let pool = inner.pool.get().expect("start made the pool");
    let max_accept = inner.max_accept.get();
    let mut in_a_row = 0usize;
    let mut quick_retries = 0u32;
    let mut backoff: Option<Duration> = None;
    loop {
        if in_a_row >= max_accept {
            in_a_row = 0;
            crate::yield_now();
        }
        // Stop accepting while full; a handler's end wakes us.
        pool.wait_available();
        let error = match listener.accept() {
            Ok((stream, peer)) => {
                in_a_row += 1;
                quick_retries = 0;
                backoff = None;
                match spawn_handler(inner, pool, stream, peer) {
                    Ok(()) => continue,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        let mut how = classify(&error);
        if how == OnError::RetryNow {
            quick_retries += 1;
            if quick_retries <= MAX_QUICK_RETRIES {
                in_a_row += 1;
                continue;
            }
            how = OnError::BackOffLoudly;
        }
        quick_retries = 0;
        in_a_row = 0;
        let delay = backoff.map_or(MIN_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
        if how == OnError::BackOffLoudly || backoff.is_none() {
            crate::hub::warn(format_args!(
                "greenhub: StreamServer {}: accept failed: {error}; retrying in {delay:?} \
                 (backing off up to {MAX_BACKOFF:?} while it fails)",
                inner.local_addr
            ));
        }
        backoff = Some(delay);
        crate::sleep(delay);
    }
}

/// Spawns the handler of one connection in the pool (a slot is free: the
/// accept loop waited for one). A failed spawn (no stack) drops — closes —
/// the connection and is handled like an accept that failed for want of
/// memory.
fn spawn_handler(
    inner: &Inner,
    pool: &Pool,
    stream: TcpStream,
    peer: SocketAddr,
) -> io::Result<()> {
    let handler = inner.handler.clone();
    let handle = Builder::new().spawn(move || handler(stream, peer))?;
    // It has not started (a spawned green thread runs on a later turn), so
    // it is still running when it joins the pool; `add` does not park.
    pool.add(&handle);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let os = io::Error::from_raw_os_error;
        for e in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(classify(&os(e)), OnError::BackOffQuietly, "errno {e}");
        }
        for e in [
            libc::ECONNABORTED,
            libc::EINTR,
            libc::EPROTO,
            libc::ENETUNREACH,
        ] {
            assert_eq!(classify(&os(e)), OnError::RetryNow, "errno {e}");
        }
        for e in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK, libc::EOPNOTSUPP] {
            assert_eq!(classify(&os(e)), OnError::BackOffLoudly, "errno {e}");
        }
        let kind = io::Error::from;
        assert_eq!(
            classify(&kind(io::ErrorKind::ConnectionAborted)),
            OnError::RetryNow
        );
        assert_eq!(
            classify(&kind(io::ErrorKind::Other)),
            OnError::BackOffLoudly
        );
    }
}
