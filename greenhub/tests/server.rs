//! StreamServer: a handler per connection, bounded concurrency, fairness of
//! the accept loop, stopping, and surviving the accept errors a busy server
//! meets (running out of descriptors is tested in a child process whose
//! `RLIMIT_NOFILE` is 64).

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenhub::net::TcpStream;
use greenhub::server::StreamServer;
use greenhub::sync::Event;
use greenhub::{run, sleep, spawn, yield_now};

/// Echoes until EOF.
fn echo(mut stream: TcpStream, _peer: SocketAddr) {
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Sends `msg`, reads it back.
fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back)?;
    Ok(back)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

#[test]
fn a_handler_per_connection() {
    run(|| {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
        assert!(!server.is_running());
        server.start().unwrap();
        assert!(server.is_running());
        server.start().unwrap(); // a no-op while running
        let addr = server.local_addr();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        let clients: Vec<_> = (0..50)
            .map(|i| {
                spawn(move || {
                    let mut c = connect(addr);
                    let msg = format!("client {i}");
                    round_trip(&mut c, msg.as_bytes()).unwrap() == msg.as_bytes()
                })
            })
            .collect();
        assert!(clients.into_iter().all(|c| c.join().unwrap()));
        server.stop(Duration::from_secs(1));
        assert!(!server.is_running());
        assert_eq!(server.connections(), 0);
    })
    .unwrap();
}

#[test]
fn max_connections_stops_accepting_while_full() {
    run(|| {
        let (running, most) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let server = {
            let (running, most) = (running.clone(), most.clone());
            StreamServer::bind("127.0.0.1:0", move |stream, peer| {
                running.set(running.get() + 1);
                most.set(most.get().max(running.get()));
                echo(stream, peer);
                running.set(running.get() - 1);
            })
            .unwrap()
            .max_connections(2)
        };
        server.start().unwrap();
        let addr = server.local_addr();
        let mut first = connect(addr);
        let mut second = connect(addr);
        assert_eq!(round_trip(&mut first, b"1").unwrap(), b"1");
        assert_eq!(round_trip(&mut second, b"2").unwrap(), b"2");
        assert_eq!(server.connections(), 2);
        // The third connects (the kernel's backlog holds it) but is not
        // accepted while two handlers run.
        let mut third = connect(addr);
        third.write_all(b"3").unwrap();
        third
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let err = third.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(server.connections(), 2);
        // One ends: the third is accepted and served.
        drop(first);
        third
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut back = [0u8; 1];
        third.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"3");
        assert_eq!(most.get(), 2);
        drop((second, third));
        server.stop(Duration::from_secs(1));
        assert_eq!(running.get(), 0);
    })
    .unwrap();
}

#[test]
fn max_accept_lets_handlers_run_between_bursts() {
    run(|| {
        // What each handler saw when it started: the handlers spawned so far.
        let seen = Rc::new(RefCell::new(Vec::new()));
        let server: Rc<RefCell<Option<StreamServer>>> = Rc::default();
        let listener = greenhub::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Ten clients wait in the backlog before the server starts.
        let clients: Vec<TcpStream> = (0..10).map(|_| connect(addr)).collect();
        let s = {
            let (seen, server) = (seen.clone(), server.clone());
            StreamServer::new(listener, move |stream, peer| {
                let count = server.borrow().as_ref().unwrap().connections();
                seen.borrow_mut().push(count);
                echo(stream, peer)
            })
            .unwrap()
            .max_accept(3)
        };
        *server.borrow_mut() = Some(s.clone());
        s.start().unwrap();
        while seen.borrow().len() < 10 {
            sleep(Duration::from_millis(1));
        }
        // The accept loop yielded after each 3 accepts, so the first handler
        // ran when 3 had been spawned, not 10.
        assert_eq!(seen.borrow()[0], 3, "{:?}", seen.borrow());
        assert!(seen.borrow().iter().all(|&n| n <= 10));
        drop(clients);
        s.stop(Duration::from_secs(1));
        server.borrow_mut().take();
    })
    .unwrap();
}

#[test]
fn stop_waits_for_handlers_then_kills_the_rest() {
    run(|| {
        /// Records how a handler ended: "<name> returned" or "<name> killed".
        struct Ends(Rc<RefCell<Vec<String>>>, &'static str, bool);
        impl Drop for Ends {
            fn drop(&mut self) {
                let how = if self.2 { "returned" } else { "killed" };
                self.0.borrow_mut().push(format!("{} {how}", self.1));
            }
        }
        let ends = Rc::new(RefCell::new(Vec::new()));
        let server = {
            let ends = ends.clone();
            StreamServer::bind("127.0.0.1:0", move |mut stream: TcpStream, _| {
                let mut first = [0u8; 1];
                stream.read_exact(&mut first).unwrap();
                let mut end = Ends(
                    ends.clone(),
                    if first[0] == b'q' { "quick" } else { "stuck" },
                    false,
                );
                if first[0] == b'q' {
                    // Finishes within the grace period.
                    sleep(Duration::from_millis(50));
                } else {
                    // Never finishes by itself: its client never sends more.
                    let _ = stream.read(&mut [0u8; 1]);
                }
                end.2 = true;
            })
            .unwrap()
        };
        server.start().unwrap();
        let addr = server.local_addr();
        let mut quick = connect(addr);
        let mut stuck = connect(addr);
        quick.write_all(b"q").unwrap();
        stuck.write_all(b"s").unwrap();
        while server.connections() < 2 {
            sleep(Duration::from_millis(1));
        }
        sleep(Duration::from_millis(5)); // both have read their byte
        let start = Instant::now();
        server.stop(Duration::from_millis(200));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let mut ends = ends.borrow().clone();
        ends.sort();
        assert_eq!(ends, ["quick returned", "stuck killed"]);
        assert_eq!(server.connections(), 0);
        // The killed handler's socket was closed: its client sees EOF.
        assert_eq!(stuck.read(&mut [0u8; 1]).unwrap(), 0);
        // The listener is closed: new clients are refused.
        let refused = TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        // A stopped server stays stopped.
        server.stop(Duration::ZERO);
        assert!(server.start().is_err());
    })
    .unwrap();
}

#[test]
fn stop_returns_early_when_handlers_finish() {
    run(|| {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
        server.start().unwrap();
        let mut c = connect(server.local_addr());
        assert_eq!(round_trip(&mut c, b"x").unwrap(), b"x");
        let closer = spawn(move || {
            sleep(Duration::from_millis(30));
            c.shutdown(Shutdown::Both).unwrap();
        });
        let start = Instant::now();
        server.stop(Duration::from_secs(10));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(25), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        closer.join().unwrap();
    })
    .unwrap();
}

#[test]
fn stop_before_start() {
    run(|| {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
        let addr = server.local_addr();
        server.stop(Duration::from_secs(1));
        assert!(!server.is_running());
        assert!(server.start().is_err());
        assert!(server.serve_forever().is_err());
        let refused = TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    })
    .unwrap();
}

#[test]
fn serve_forever_returns_after_stop_from_another_green_thread() {
    run(|| {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
        let serving = {
            let server = server.clone();
            spawn(move || server.serve_forever())
        };
        yield_now();
        assert!(server.is_running());
        let mut c = connect(server.local_addr());
        assert_eq!(round_trip(&mut c, b"ping").unwrap(), b"ping");
        assert!(!serving.is_finished());
        drop(c);
        server.stop(Duration::from_secs(1));
        serving.join().unwrap().unwrap();
    })
    .unwrap();
}

#[test]
fn a_handler_may_stop_its_server() {
    run(|| {
        let server: Rc<RefCell<Option<StreamServer>>> = Rc::default();
        let s = {
            let server = server.clone();
            StreamServer::bind("127.0.0.1:0", move |mut stream: TcpStream, _| {
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                if line == "quit\n" {
                    let server = server.borrow().clone().unwrap();
                    // Waits for the other handlers (not this one), then kills them.
                    server.stop(Duration::from_millis(50));
                    let _ = stream.write_all(b"bye\n");
                }
            })
            .unwrap()
        };
        *server.borrow_mut() = Some(s.clone());
        let addr = s.local_addr();
        let quitter = spawn(move || {
            let _idle = connect(addr); // a handler that never ends by itself
            let mut c = connect(addr);
            c.write_all(b"quit\n").unwrap();
            let mut reply = String::new();
            BufReader::new(c).read_line(&mut reply).unwrap();
            reply
        });
        let start = Instant::now();
        s.serve_forever().unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(quitter.join().unwrap(), "bye\n");
        server.borrow_mut().take();
    })
    .unwrap();
}

#[test]
fn killing_serve_forever_stops_the_server() {
    run(|| {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
        let addr = server.local_addr();
        let serving = {
            let server = server.clone();
            spawn(move || server.serve_forever())
        };
        yield_now();
        let mut c = connect(addr);
        assert_eq!(round_trip(&mut c, b"a").unwrap(), b"a");
        serving.kill();
        assert!(serving.join().unwrap_err().is_killed());
        // The stop runs in a green thread of its own; the handler is killed
        // and the client sees the connection close.
        assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0);
        sleep(Duration::from_millis(5));
        assert!(!server.is_running());
        assert_eq!(server.connections(), 0);
    })
    .unwrap();
}

#[test]
fn a_panicking_handler_ends_only_its_connection() {
    run(|| {
        let server = StreamServer::bind("127.0.0.1:0", |stream: TcpStream, peer| {
            let mut first = [0u8; 1];
            (&stream).read_exact(&mut first).unwrap();
            if first[0] == b'!' {
                panic!("this handler panics (expected by the test)");
            }
            (&stream).write_all(&first).unwrap();
            echo(stream, peer);
        })
        .unwrap();
        server.start().unwrap();
        let addr = server.local_addr();
        let mut bad = connect(addr);
        bad.write_all(b"!").unwrap();
        assert_eq!(bad.read(&mut [0u8; 1]).unwrap(), 0, "closed by the panic");
        let mut good = connect(addr);
        assert_eq!(round_trip(&mut good, b"ok").unwrap(), b"ok");
        drop(good);
        server.stop(Duration::from_secs(1));
    })
    .unwrap();
}

/// A connection reset while it waits in the backlog may make `accept` fail
/// with ECONNABORTED (or succeed with a dead socket, as Linux does): either
/// way the server goes on to the next client.
#[test]
fn a_connection_reset_before_accept_does_not_stop_the_server() {
    run(|| {
        let server = StreamServer::bind("127.0.0.1:0", echo)
            .unwrap()
            .max_connections(1);
        server.start().unwrap();
        let addr = server.local_addr();
        let mut holder = connect(addr);
        assert_eq!(round_trip(&mut holder, b"h").unwrap(), b"h");
        // The server is full: these wait in the backlog, then reset.
        for _ in 0..5 {
            let doomed = connect(addr);
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket and a `linger` that outlives the call.
            let rc = unsafe {
                libc::setsockopt(
                    doomed.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
            drop(doomed); // closing with a zero linger sends RST
        }
        let mut next = connect(addr);
        next.write_all(b"n").unwrap();
        drop(holder);
        let mut back = [0u8; 1];
        next.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"n");
        drop(next);
        server.stop(Duration::from_secs(1));
    })
    .unwrap();
}

// ---------------------------------------------------------------------------
// Out of descriptors: a child process with RLIMIT_NOFILE=64 serves, the
// parent connects until the child's accept fails with EMFILE.

const CHILD_ENV: &str = "GREENHUB_TEST_SERVER_CHILD";

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The child: an echo server that can open at most 64 descriptors. It
/// prints its port; on "measure" (stdin) it reports its CPU time over
/// 300 ms; when stdin closes it stops and exits.
#[test]
#[ignore = "run by emfile_backs_off_and_recovers in a child process"]
fn emfile_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    // Commands come on stdin, read by a plain OS thread (std's stdin would
    // block the hub).
    let measure = Arc::new(Event::new());
    let quit = Arc::new(Event::new());
    {
        let (measure, quit) = (measure.clone(), quit.clone());
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                match line.as_deref() {
                    Ok("measure") => measure.set(),
                    _ => break,
                }
            }
            quit.set();
        });
    }
    run(move || {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
        server.start().unwrap();
        println!("port={}", server.local_addr().port());
        measure.wait();
        let (wall, cpu) = (Instant::now(), cpu_time());
        sleep(Duration::from_millis(300));
        let (wall, cpu) = (wall.elapsed(), cpu_time() - cpu);
        println!(
            "wall_us={} cpu_us={} connections={}",
            wall.as_micros(),
            cpu.as_micros(),
            server.connections()
        );
        quit.wait();
        server.stop(Duration::from_secs(1));
    })
    .unwrap();
}

/// The value of `key=` in a line of the child's output.
fn field(line: &str, key: &str) -> u64 {
    let prefix = format!("{key}=");
    let at = line
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    line[at + prefix.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad {key}= in {line:?}"))
}

#[test]
fn emfile_backs_off_and_recovers() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "emfile_child",
            "--exact",
            "--include-ignored",
            "--nocapture",
        ])
        .arg("--test-threads=1")
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Whatever happens, the child is not left running.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let mut child = Reap(child);
    let mut next_line = |what: &str| {
        let mut line = String::new();
        loop {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the child ended before printing {what}");
            if line.contains(what) {
                return line;
            }
        }
    };
    let port = field(&next_line("port="), "port") as u16;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Connect until one is not served: the child is out of descriptors.
    let try_echo = |c: &mut std::net::TcpStream, wait: Duration| -> bool {
        c.set_read_timeout(Some(wait)).unwrap();
        c.write_all(b"e").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).is_ok()
    };
    let mut served = Vec::new();
    let mut waiting = loop {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        if try_echo(&mut c, Duration::from_millis(300)) {
            served.push(c);
            assert!(
                served.len() < 64,
                "64 connections served under RLIMIT_NOFILE=64"
            );
        } else {
            break c;
        }
    };
    assert!(served.len() > 10, "only {} served", served.len());

    // While refused, the server backs off: little CPU.
    stdin.write_all(b"measure\n").unwrap();
    let report = next_line("cpu_us=");
    let (wall, cpu) = (field(&report, "wall_us"), field(&report, "cpu_us"));
    println!(
        "{} served before EMFILE; while refusing: {}",
        served.len(),
        report.trim()
    );
    assert!(wall >= 300_000, "{report}");
    assert!(
        cpu * 2 < wall,
        "the child used {cpu} µs of CPU in {wall} µs while refusing: {report}"
    );
    assert_eq!(field(&report, "connections") as usize, served.len());

    // Free some descriptors: the waiting client is accepted and served.
    served.truncate(served.len() - 3);
    let mut b = [0u8; 1];
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    waiting.read_exact(&mut b).unwrap(); // the echo of its "e"
    let mut fresh = std::net::TcpStream::connect(addr).unwrap();
    assert!(try_echo(&mut fresh, Duration::from_secs(10)));
    for c in &mut served {
        assert!(
            try_echo(c, Duration::from_secs(10)),
            "an old client still served"
        );
    }

    drop((served, waiting, fresh));
    drop(stdin); // the child stops its server and exits
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the child hung");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(status.success(), "child failed: {status}\n{err}");
    // It said once that it backs off, naming the error.
    assert_eq!(err.matches("accept failed").count(), 1, "{err}");
    assert!(err.contains("Too many open files"), "{err}");
}
