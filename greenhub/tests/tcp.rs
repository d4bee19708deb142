//! TCP: `greenhub::net::{TcpListener, TcpStream}` behave like std's, park only
//! the calling green thread, and behave when shared between green threads.
//!
//! Only loopback addresses. Every wait is bounded (`with_timeout` or a socket
//! timeout), so a lost wake-up fails the test instead of hanging it. Timing
//! checks are exact on "never early" and generous on "not too late".

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, BufWriter, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::net::{TcpListener, TcpStream};
use greenhub::{run, spawn, with_timeout, yield_now, JoinError, JoinHandle};

/// Generous bound for "promptly" on a loaded machine.
const BOUND: Duration = Duration::from_secs(10);

fn bounded<T>(f: impl FnOnce() -> T) -> T {
    with_timeout(BOUND, f).expect("did not finish in time")
}

fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    bounded(|| h.join())
}

fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A connected pair: (client, server side).
fn pair() -> (TcpStream, TcpStream) {
    let (listener, addr) = bind();
    let client = TcpStream::connect(addr).unwrap();
    let (server, peer) = listener.accept().unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    (client, server)
}

/// Echoes everything it reads until EOF, then closes.
fn echo(mut conn: TcpStream) -> usize {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            return total;
        }
        conn.write_all(&buf[..n]).unwrap();
        total += n;
    }
}

/// `len` pseudo-random bytes (xorshift), different for each `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn echo_round_trip() {
    run(|| {
        let (listener, addr) = bind();
        let server = spawn(move || echo(listener.accept().unwrap().0));
        bounded(|| {
            let mut client = TcpStream::connect(addr).unwrap();
            assert_eq!(client.peer_addr().unwrap(), addr);
            client.write_all(b"hello, hub").unwrap();
            let mut buf = [0u8; 10];
            client.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hello, hub");
            client.shutdown(Shutdown::Write).unwrap();
            assert_eq!(client.read(&mut buf).unwrap(), 0, "EOF after the echo");
        });
        assert_eq!(join_bounded(server).unwrap(), 10);
    })
    .unwrap();
}

#[test]
fn one_mib_both_ways_every_byte_verified() {
    const LEN: usize = 1 << 20;
    run(|| {
        let (listener, addr) = bind();
        let server = spawn(move || echo(listener.accept().unwrap().0));
        let client = Rc::new(TcpStream::connect(addr).unwrap());
        let data = Rc::new(pattern(LEN, 1));
        // Write and read at once: echoing 1 MiB would fill both socket
        // buffers if the client only wrote first.
        let writer = {
            let (client, data) = (client.clone(), data.clone());
            spawn(move || {
                (&*client).write_all(&data).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut back = Vec::with_capacity(LEN);
        bounded(|| (&*client).read_to_end(&mut back)).unwrap();
        join_bounded(writer).unwrap();
        assert_eq!(back.len(), LEN);
        assert!(back == *data, "every byte echoed unchanged");
        assert_eq!(join_bounded(server).unwrap(), LEN);
    })
    .unwrap();
}

#[test]
fn half_close_echoes_every_byte_before_eof() {
    const LEN: usize = 256 * 1024;
    run(|| {
        let (listener, addr) = bind();
        let server = spawn(move || echo(listener.accept().unwrap().0));
        let client = Rc::new(TcpStream::connect(addr).unwrap());
        let data = Rc::new(pattern(LEN, 2));
        let writer = {
            let (client, data) = (client.clone(), data.clone());
            spawn(move || {
                for chunk in data.chunks(1000) {
                    (&*client).write_all(chunk).unwrap();
                }
                // Half-close: the server sees EOF but may still answer.
                client.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut back = Vec::new();
        bounded(|| (&*client).read_to_end(&mut back)).unwrap();
        join_bounded(writer).unwrap();
        assert!(back == *data, "all {LEN} bytes echoed before EOF");
        assert_eq!(join_bounded(server).unwrap(), LEN);
    })
    .unwrap();
}

#[test]
fn read_timeout_fires_on_time_with_timed_out() {
    run(|| {
        let (client, _server) = pair();
        let timeout = Duration::from_millis(100);
        client.set_read_timeout(Some(timeout)).unwrap();
        assert_eq!(client.read_timeout().unwrap(), Some(timeout));
        for _ in 0..3 {
            let start = Instant::now();
            let err = (&client).read(&mut [0u8; 8]).unwrap_err();
            let elapsed = start.elapsed();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            assert!(elapsed >= timeout, "never early: {elapsed:?}");
            assert!(
                elapsed < timeout + Duration::from_millis(500),
                "late: {elapsed:?}"
            );
        }
        // The socket still works after a timeout.
        (&_server).write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        (&client).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
        // A zero timeout is refused, as in std; None clears it.
        let err = client.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        client.set_read_timeout(None).unwrap();
        assert_eq!(client.read_timeout().unwrap(), None);
    })
    .unwrap();
}

#[test]
fn write_timeout_fires_when_the_peer_does_not_read() {
    run(|| {
        let (client, _server) = pair();
        let timeout = Duration::from_millis(50);
        client.set_write_timeout(Some(timeout)).unwrap();
        assert_eq!(client.write_timeout().unwrap(), Some(timeout));
        let chunk = vec![7u8; 64 * 1024];
        let start = Instant::now();
        let err = bounded(|| loop {
            if let Err(e) = (&client).write(&chunk) {
                break e;
            }
        });
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= timeout);
    })
    .unwrap();
}

#[test]
fn shutdown_from_another_green_thread_wakes_a_blocked_reader() {
    for how in [Shutdown::Read, Shutdown::Both] {
        run(move || {
            let (client, _server) = pair();
            let client = Rc::new(client);
            let reader = {
                let client = client.clone();
                spawn(move || (&*client).read(&mut [0u8; 16]))
            };
            yield_now(); // it parks in read
            assert!(!reader.is_finished());
            let start = Instant::now();
            client.shutdown(how).unwrap();
            let n = join_bounded(reader).unwrap().unwrap();
            assert_eq!(n, 0, "{how:?}: the reader sees EOF");
            assert!(start.elapsed() < Duration::from_secs(1), "promptly");
        })
        .unwrap();
    }
}

#[test]
fn killing_a_blocked_reader_leaves_the_socket_usable() {
    run(|| {
        let (client, server) = pair();
        let client = Rc::new(client);
        let victim = {
            let client = client.clone();
            spawn(move || (&*client).read(&mut [0u8; 16]))
        };
        yield_now();
        assert!(!victim.is_finished());
        victim.kill();
        assert!(matches!(join_bounded(victim), Err(JoinError::Killed)));
        // Another reader is woken by the next data, and so is a writer.
        let reader = {
            let client = client.clone();
            spawn(move || {
                let mut buf = [0u8; 5];
                (&*client).read_exact(&mut buf).unwrap();
                buf
            })
        };
        yield_now();
        (&server).write_all(b"after").unwrap();
        assert_eq!(&join_bounded(reader).unwrap(), b"after");
        (&*client).write_all(b"ok").unwrap();
        let mut buf = [0u8; 2];
        bounded(|| (&server).read_exact(&mut buf)).unwrap();
        assert_eq!(&buf, b"ok");
    })
    .unwrap();
}

#[test]
fn two_readers_on_one_socket_are_both_served() {
    run(|| {
        let (client, server) = pair();
        let client = Rc::new(client);
        let got = Rc::new(RefCell::new(Vec::new()));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (client, got) = (client.clone(), got.clone());
                spawn(move || {
                    let mut buf = [0u8; 16];
                    let n = (&*client).read(&mut buf).unwrap();
                    got.borrow_mut().push(buf[..n].to_vec());
                })
            })
            .collect();
        yield_now(); // both park in read, in the same direction
        assert!(readers.iter().all(|r| !r.is_finished()));
        (&server).write_all(b"first").unwrap();
        bounded(|| {
            while got.borrow().is_empty() {
                yield_now();
            }
        });
        (&server).write_all(b"second").unwrap();
        for r in readers {
            join_bounded(r).unwrap();
        }
        let mut got = got.borrow().clone();
        got.sort();
        assert_eq!(got, [b"first".to_vec(), b"second".to_vec()]);
    })
    .unwrap();
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    run(|| {
        let addr = bind().1; // bound, then closed again
        let err = bounded(|| TcpStream::connect(addr)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    })
    .unwrap();
}

#[test]
fn connect_by_host_name() {
    run(|| {
        let (listener, addr) = bind();
        let server = spawn(move || echo(listener.accept().unwrap().0));
        // "localhost" may resolve to ::1 first: connect tries each address.
        let mut client =
            bounded(|| TcpStream::connect(format!("localhost:{}", addr.port()))).unwrap();
        assert_eq!(client.peer_addr().unwrap(), addr);
        client.write_all(b"by name").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        bounded(|| client.read_to_string(&mut back)).unwrap();
        assert_eq!(back, "by name");
        join_bounded(server).unwrap();
        // And a (host, port) pair, and an IP pair.
        let err = bounded(|| TcpStream::connect(("localhost", addr.port()))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let err = TcpStream::connect((Ipv4Addr::LOCALHOST, addr.port())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let err = TcpStream::connect("localhost").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "no port");
    })
    .unwrap();
}

#[test]
fn connect_timeout_connects_and_refuses_a_zero_timeout() {
    run(|| {
        let (listener, addr) = bind();
        let client = bounded(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5))).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let err = TcpStream::connect_timeout(&addr, Duration::ZERO).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    })
    .unwrap();
}

#[test]
fn read_and_write_through_shared_references() {
    run(|| {
        let (client, server) = pair();
        let (client, server) = (&client, &server);
        let mut c = client;
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        let mut s = server;
        bounded(|| s.read_exact(&mut buf)).unwrap();
        assert_eq!(&buf, b"ping");
        // Vectored, too.
        let n = s
            .write_vectored(&[IoSlice::new(b"po"), IoSlice::new(b"ng")])
            .unwrap();
        assert_eq!(n, 4);
        let (mut a, mut b) = ([0u8; 2], [0u8; 2]);
        let mut got = 0;
        while got < 4 {
            let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
            let mut bufs: &mut [IoSliceMut] = &mut bufs;
            IoSliceMut::advance_slices(&mut bufs, got);
            got += bounded(|| c.read_vectored(bufs)).unwrap();
        }
        assert_eq!((&a, &b), (b"po", b"ng"));
    })
    .unwrap();
}

#[test]
fn peek_does_not_consume() {
    run(|| {
        let (client, server) = pair();
        let peeker = {
            let client = client.try_clone().unwrap();
            spawn(move || {
                let mut buf = [0u8; 3];
                let n = client.peek(&mut buf).unwrap(); // parks until data
                buf[..n].to_vec()
            })
        };
        yield_now();
        (&server).write_all(b"abc").unwrap();
        let peeked = join_bounded(peeker).unwrap();
        assert!(!peeked.is_empty() && b"abc".starts_with(&peeked));
        let mut buf = [0u8; 3];
        bounded(|| (&client).read_exact(&mut buf)).unwrap();
        assert_eq!(&buf, b"abc");
    })
    .unwrap();
}

#[test]
fn serde_json_reads_and_writes_over_a_green_stream() {
    run(|| {
        let (listener, addr) = bind();
        let server = spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            // A sync crate that takes Read/Write, unchanged.
            let request: serde_json::Value = serde_json::from_reader(&conn).unwrap();
            let n = request["numbers"].as_array().unwrap().len();
            let sum: u64 = request["numbers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .sum();
            serde_json::to_writer(&conn, &serde_json::json!({ "count": n, "sum": sum })).unwrap();
        });
        let client = TcpStream::connect(addr).unwrap();
        let numbers: Vec<u64> = (0..10_000).collect();
        serde_json::to_writer(&client, &serde_json::json!({ "numbers": numbers })).unwrap();
        client.shutdown(Shutdown::Write).unwrap(); // from_reader reads to EOF
        let reply: serde_json::Value = bounded(|| serde_json::from_reader(&client)).unwrap();
        assert_eq!(reply["count"], 10_000);
        assert_eq!(reply["sum"], 10_000 * 9_999 / 2);
        join_bounded(server).unwrap();
    })
    .unwrap();
}

#[test]
fn bufreader_lines_and_bufwriter() {
    run(|| {
        let (listener, addr) = bind();
        let server = spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut out = BufWriter::new(&conn);
            for line in BufReader::new(&conn).lines() {
                let line = line.unwrap();
                writeln!(out, "{}", line.to_uppercase()).unwrap();
                out.flush().unwrap();
            }
        });
        let client = TcpStream::connect(addr).unwrap();
        let mut reader = BufReader::new(&client);
        for word in ["green", "threads", "on", "a", "hub"] {
            writeln!(&client, "{word}").unwrap();
            let mut line = String::new();
            bounded(|| reader.read_line(&mut line)).unwrap();
            assert_eq!(line, format!("{}\n", word.to_uppercase()));
        }
        client.shutdown(Shutdown::Write).unwrap();
        join_bounded(server).unwrap();
    })
    .unwrap();
}

#[test]
fn a_plain_os_thread_blocks_with_poll() {
    // No hub on this thread: accept, read and write block the OS thread.
    let (listener, addr) = bind();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(BOUND)).unwrap();
        echo(conn)
    });
    run(move || {
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"from a hub to a thread").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        bounded(|| client.read_to_end(&mut back)).unwrap();
        assert_eq!(back, b"from a hub to a thread");
    })
    .unwrap();
    assert_eq!(server.join().unwrap(), 22);
    // And a plain thread as the client, with a read timeout as its bound.
    let (listener, addr) = bind();
    let server = std::thread::spawn(move || echo(listener.accept().unwrap().0));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(BOUND)).unwrap();
    client.write_all(b"thread").unwrap();
    let mut buf = [0u8; 6];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"thread");
    drop(client);
    assert_eq!(server.join().unwrap(), 6);
}

#[test]
fn a_clone_works_from_another_os_thread() {
    run(|| {
        let (client, server) = pair();
        let clone = client.try_clone().unwrap();
        assert_ne!(
            std::os::fd::AsRawFd::as_raw_fd(&clone),
            std::os::fd::AsRawFd::as_raw_fd(&client)
        );
        // The clone shares the timeouts, as std's clones share socket options.
        client.set_read_timeout(Some(BOUND)).unwrap();
        assert_eq!(clone.read_timeout().unwrap(), Some(BOUND));
        let writer = std::thread::spawn(move || {
            (&clone).write_all(b"from a thread").unwrap();
        });
        let mut buf = [0u8; 13];
        (&server)
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf, b"from a thread");
        writer.join().unwrap();
    })
    .unwrap();
}

#[test]
fn nonblocking_mode_returns_would_block() {
    run(|| {
        let (listener, addr) = bind();
        listener.set_nonblocking(true).unwrap();
        let err = listener.accept().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let client = TcpStream::connect(addr).unwrap();
        client.set_nonblocking(true).unwrap();
        let err = (&client).read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        client.set_nonblocking(false).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (server, _) = bounded(|| listener.accept()).unwrap();
        (&server).write_all(b"!").unwrap();
        let mut buf = [0u8; 1];
        bounded(|| (&client).read_exact(&mut buf)).unwrap();
    })
    .unwrap();
}

#[test]
fn incoming_and_std_conversions() {
    run(|| {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listener = TcpListener::from(std_listener);
        let server = spawn(move || {
            let conn = listener.incoming().next().unwrap().unwrap();
            echo(conn)
        });
        let std_stream = std::net::TcpStream::connect(addr).unwrap();
        std_stream
            .set_read_timeout(Some(Duration::from_secs(7)))
            .unwrap();
        let stream = TcpStream::from(std_stream);
        assert_eq!(
            stream.read_timeout().unwrap(),
            Some(Duration::from_secs(7)),
            "the std stream's timeout carries over"
        );
        stream.set_nodelay(true).unwrap();
        assert!(stream.nodelay().unwrap());
        stream.set_ttl(42).unwrap();
        assert_eq!(stream.ttl().unwrap(), 42);
        assert!(stream.take_error().unwrap().is_none());
        (&stream).write_all(b"round").unwrap();
        let mut buf = [0u8; 5];
        bounded(|| (&stream).read_exact(&mut buf)).unwrap();
        // Back to std: blocking again, with its timeouts.
        let mut std_stream = stream.into_std().unwrap();
        assert_eq!(
            std_stream.read_timeout().unwrap(),
            Some(Duration::from_secs(7))
        );
        std_stream.write_all(b"trip").unwrap(); // fits the buffer: no wait
        std_stream.shutdown(Shutdown::Write).unwrap();
        // A blocking std read here would stall the hub (and the echo server
        // on it): back to greenhub for the reply.
        let mut stream = TcpStream::from(std_stream);
        let mut rest = Vec::new();
        bounded(|| stream.read_to_end(&mut rest)).unwrap();
        assert_eq!(rest, b"trip");
        assert_eq!(join_bounded(server).unwrap(), 9);
    })
    .unwrap();
}

/// Raises the soft limit on open descriptors to the hard limit.
fn raise_fd_limit() -> libc::rlim_t {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
    }
    rl.rlim_cur
}

#[test]
fn a_thousand_connections_on_one_hub() {
    const CONNS: usize = 1000;
    const LEN: usize = 4096;
    assert!(
        raise_fd_limit() >= (2 * CONNS + 64) as libc::rlim_t,
        "need two descriptors per connection"
    );
    run(|| {
        let (listener, addr) = bind();
        let server = spawn(move || {
            let mut handlers = Vec::new();
            for _ in 0..CONNS {
                let (conn, _) = listener.accept().unwrap();
                handlers.push(spawn(move || echo(conn)));
            }
            handlers
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
        });
        let clients: Vec<_> = (0..CONNS)
            .map(|i| {
                spawn(move || {
                    let data = pattern(LEN, i as u64 + 100);
                    let mut conn = TcpStream::connect(addr).unwrap();
                    conn.write_all(&data).unwrap();
                    conn.shutdown(Shutdown::Write).unwrap();
                    let mut back = Vec::with_capacity(LEN);
                    conn.read_to_end(&mut back).unwrap();
                    back == data
                })
            })
            .collect();
        with_timeout(Duration::from_secs(60), || {
            for c in clients {
                assert!(c.join().unwrap(), "every byte verified");
            }
            assert_eq!(server.join().unwrap(), CONNS * LEN);
        })
        .expect("1,000 connections in time");
    })
    .unwrap();
}

#[test]
fn sockets_are_send_and_sync_like_std() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<TcpListener>();
    send_sync::<TcpStream>();
}
