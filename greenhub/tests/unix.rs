//! Unix domain sockets: `greenhub::net::{UnixListener, UnixStream,
//! UnixDatagram}` behave like std's and park only the calling green thread.
//! Socket files get unique names in the temporary directory and are removed
//! afterwards; every wait is bounded.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use greenhub::net::{UnixDatagram, UnixListener, UnixStream};
use greenhub::{run, sleep, spawn, with_timeout, yield_now, JoinHandle};

const BOUND: Duration = Duration::from_secs(10);

fn bounded<T>(f: impl FnOnce() -> T) -> T {
    with_timeout(BOUND, f).expect("did not finish in time")
}

fn join_bounded<T>(h: JoinHandle<T>) -> T {
    bounded(|| h.join()).unwrap()
}

/// A unique socket path, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("greenhub-{tag}-{}-{n}.sock", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn stream_pair_round_trip() {
    run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let echo = spawn(move || {
            let mut buf = [0u8; 64];
            let n = (&a).read(&mut buf).unwrap(); // parks until b writes
            (&a).write_all(&buf[..n]).unwrap();
        });
        yield_now();
        assert!(!echo.is_finished());
        (&b).write_all(b"over a pair").unwrap();
        let mut buf = [0u8; 11];
        bounded(|| (&b).read_exact(&mut buf)).unwrap();
        assert_eq!(&buf, b"over a pair");
        join_bounded(echo);
    })
    .unwrap();
}

#[test]
fn listener_and_connect_on_a_temp_path() {
    let path = TempPath::new("listen");
    run(move || {
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(
            listener.local_addr().unwrap().as_pathname(),
            Some(path.as_ref())
        );
        let server = spawn(move || {
            let mut total = 0;
            for conn in listener.incoming().take(3) {
                let mut conn = conn.unwrap();
                let mut data = Vec::new();
                conn.read_to_end(&mut data).unwrap();
                conn.write_all(&data).unwrap();
                total += data.len();
            }
            total
        });
        for i in 0..3 {
            let mut client = bounded(|| UnixStream::connect(&path)).unwrap();
            assert_eq!(
                client.peer_addr().unwrap().as_pathname(),
                Some(path.as_ref())
            );
            let msg = format!("client {i}");
            client.write_all(msg.as_bytes()).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut back = String::new();
            bounded(|| client.read_to_string(&mut back)).unwrap();
            assert_eq!(back, msg);
        }
        assert_eq!(join_bounded(server), 3 * 8);
    })
    .unwrap();
}

#[test]
fn connect_errors() {
    let missing = TempPath::new("missing");
    let err = UnixStream::connect(&missing).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    // A socket file nobody listens on.
    let stale = TempPath::new("stale");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let err = run(move || UnixStream::connect(&stale).unwrap_err()).unwrap();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn connect_waits_while_the_backlog_is_full() {
    let path = TempPath::new("backlog");
    run(move || {
        // A listener with a backlog of one, from socket2 through std.
        let socket =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&socket2::SockAddr::unix(&path).unwrap())
            .unwrap();
        socket.listen(1).unwrap();
        let listener = UnixListener::from(std::os::unix::net::UnixListener::from(
            std::os::fd::OwnedFd::from(socket),
        ));
        let path = Rc::new(path);
        let clients: Vec<_> = (0..6u8)
            .map(|i| {
                let path = path.clone();
                spawn(move || {
                    let mut conn = UnixStream::connect(&*path).unwrap();
                    conn.write_all(&[i]).unwrap();
                })
            })
            .collect();
        sleep(Duration::from_millis(30)); // the backlog fills; the rest retry
        let mut seen = Vec::new();
        bounded(|| {
            while seen.len() < 6 {
                let (mut conn, _) = listener.accept().unwrap();
                let mut byte = [0u8; 1];
                conn.read_exact(&mut byte).unwrap();
                seen.push(byte[0]);
            }
        });
        for c in clients {
            join_bounded(c);
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    })
    .unwrap();
}

#[test]
fn shutdown_wakes_a_blocked_reader_and_timeouts_fire() {
    run(|| {
        let (a, _b) = UnixStream::pair().unwrap();
        let a = Rc::new(a);
        let reader = {
            let a = a.clone();
            spawn(move || (&*a).read(&mut [0u8; 8]))
        };
        yield_now();
        assert!(!reader.is_finished());
        a.shutdown(Shutdown::Read).unwrap();
        assert_eq!(join_bounded(reader).unwrap(), 0, "EOF");

        let (c, _d) = UnixStream::pair().unwrap();
        let timeout = Duration::from_millis(60);
        c.set_read_timeout(Some(timeout)).unwrap();
        let start = Instant::now();
        let err = (&c).read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= timeout);
    })
    .unwrap();
}

#[test]
fn a_plain_os_thread_blocks_with_poll() {
    let (a, b) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        a.set_read_timeout(Some(BOUND)).unwrap();
        let mut buf = [0u8; 5];
        (&a).read_exact(&mut buf).unwrap();
        (&a).write_all(&buf).unwrap();
    });
    run(move || {
        (&b).write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        bounded(|| (&b).read_exact(&mut buf)).unwrap();
        assert_eq!(&buf, b"hello");
    })
    .unwrap();
    t.join().unwrap();
}

#[test]
fn datagram_pair_round_trip() {
    run(|| {
        let (a, b) = UnixDatagram::pair().unwrap();
        let echo = spawn(move || {
            let mut buf = [0u8; 64];
            let n = a.recv(&mut buf).unwrap(); // parks
            a.send(&buf[..n]).unwrap();
        });
        yield_now();
        assert!(!echo.is_finished());
        b.send(b"one datagram").unwrap();
        let mut buf = [0u8; 64];
        let n = bounded(|| b.recv(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"one datagram");
        join_bounded(echo);
    })
    .unwrap();
}

#[test]
fn datagrams_between_bound_and_unbound_sockets() {
    let server_path = TempPath::new("dgram-server");
    let client_path = TempPath::new("dgram-client");
    run(move || {
        let server = UnixDatagram::bind(&server_path).unwrap();
        let client = UnixDatagram::bind(&client_path).unwrap();
        client.send_to(b"hi", &server_path).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = bounded(|| server.recv_from(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(from.as_pathname(), Some(client_path.as_ref()));
        server.send_to_addr(b"ho", &from).unwrap();
        let (n, _) = bounded(|| client.recv_from(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"ho");
        // An unbound socket, connected.
        let anon = UnixDatagram::unbound().unwrap();
        anon.connect(&server_path).unwrap();
        anon.send(b"anon").unwrap();
        let (n, from) = bounded(|| server.recv_from(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"anon");
        assert!(from.is_unnamed());
        // A receive timeout.
        server
            .set_read_timeout(Some(Duration::from_millis(30)))
            .unwrap();
        let err = server.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    })
    .unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn abstract_addresses() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let name = format!("greenhub-abstract-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    run(move || {
        let listener = UnixListener::bind_addr(&addr).unwrap();
        let client = bounded(|| UnixStream::connect_addr(&addr)).unwrap();
        let (server, _) = bounded(|| listener.accept()).unwrap();
        (&client).write_all(b"abstract").unwrap();
        let mut buf = [0u8; 8];
        bounded(|| (&server).read_exact(&mut buf)).unwrap();
        assert_eq!(&buf, b"abstract");
    })
    .unwrap();
}

#[test]
fn sockets_are_send_and_sync_like_std() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<UnixListener>();
    send_sync::<UnixStream>();
    send_sync::<UnixDatagram>();
}
