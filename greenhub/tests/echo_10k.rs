//! Ten thousand concurrent connections on one hub: an echo server
//! ([`StreamServer`]) on a hub of this process, and 10,000 client green
//! threads on a hub of a child process (this test binary, re-executed). Each
//! client sends 64 KiB of pseudo-random bytes (xorshift, seeded per
//! connection) in 4 KiB chunks and checks every byte that comes back.
//!
//! All 10,000 connections are open at once: the clients move no data until
//! every one has connected, and close only once every one has been checked;
//! the server checks that 10,000 handlers ran at the same time.
//!
//! Descriptors: each process holds one end of every connection, so each
//! raises `RLIMIT_NOFILE` to what it needs (the soft limit up to the hard
//! one; with privilege, the hard one too). The clients are in another
//! process so that a hard limit of 20,000 (common) is enough; where the
//! limit is lower still, the test uses as many connections as fit and says
//! so.
//!
//! Time: about 7 s in a debug build on 2 cores (the full 64 KiB per
//! connection; chunks are compared whole), about 3 s in release.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use greenhub::net::TcpStream;
use greenhub::server::StreamServer;
use greenhub::sync::{Event, Semaphore};

const CONNECTIONS: usize = 10_000;
const BYTES: usize = 64 * 1024;
/// Clients send and check in chunks of this, one chunk in flight each.
const CHUNK: usize = 4096;
/// Connects in progress at once (the listen backlog is finite).
const CONNECTING: usize = 256;
/// Descriptors besides the connections' (epoll, wakers, the listener, …).
const SPARE_FDS: u64 = 200;

/// xorshift64*: the byte stream of one connection.
struct Bytes(u64);

impl Bytes {
    fn new(connection: usize) -> Bytes {
        Bytes((connection as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Raises the soft limit on descriptors as far as allowed toward `want`;
/// returns the limit in force.
fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads the struct it is given. Raising the hard limit
    // needs privilege; without it this fails and changes nothing.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return want;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above; the soft limit may always rise to the hard one.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    lim.rlim_cur
}

/// The server's hub: echoes until every connection has ended; returns the
/// most handlers that ran at once.
fn serve(connections: usize, addr_tx: mpsc::Sender<SocketAddr>) -> usize {
    greenhub::run(move || {
        let (running, most, ended) = (
            Rc::new(Cell::new(0)),
            Rc::new(Cell::new(0)),
            Rc::new(Cell::new(0)),
        );
        let all_ended = Rc::new(Event::new());
        let server = {
            let (running, most, ended, all_ended) = (
                running.clone(),
                most.clone(),
                ended.clone(),
                all_ended.clone(),
            );
            StreamServer::bind("127.0.0.1:0", move |mut stream: TcpStream, _peer| {
                running.set(running.get() + 1);
                most.set(most.get().max(running.get()));
                let mut buf = [0u8; CHUNK];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                running.set(running.get() - 1);
                ended.set(ended.get() + 1);
                if ended.get() == connections {
                    all_ended.set();
                }
            })
            .unwrap()
        };
        server.start().unwrap();
        addr_tx.send(server.local_addr()).unwrap();
        all_ended.wait();
        server.stop(Duration::from_secs(1));
        most.get()
    })
    .unwrap()
}

/// One client: connects, waits for all, sends and checks its bytes in
/// chunks, waits for all, closes. Returns the bytes checked.
fn client(i: usize, addr: SocketAddr, shared: Rc<Clients>) -> io::Result<usize> {
    let mut stream = {
        let _permit = shared.connecting.acquire_guard();
        TcpStream::connect(addr)?
    };
    shared.arrive(&shared.connected, &shared.all_connected);
    shared.all_connected.wait();
    let (mut sent, mut expected) = (Bytes::new(i), Bytes::new(i));
    let mut out = [0u8; CHUNK];
    let mut back = [0u8; CHUNK];
    let mut want = [0u8; CHUNK];
    let mut checked = 0;
    while checked < BYTES {
        let n = CHUNK.min(BYTES - checked);
        sent.fill(&mut out[..n]);
        stream.write_all(&out[..n])?;
        stream.read_exact(&mut back[..n])?;
        expected.fill(&mut want[..n]);
        if back[..n] != want[..n] {
            let at = (0..n).find(|&k| back[k] != want[k]).unwrap();
            return Err(io::Error::other(format!(
                "connection {i}: byte {} came back as {:#04x}, sent {:#04x}",
                checked + at,
                back[at],
                want[at]
            )));
        }
        checked += n;
    }
    shared.arrive(&shared.checked, &shared.all_checked);
    shared.all_checked.wait();
    Ok(checked)
}

/// The clients' hub: one green thread per connection; the bytes checked.
fn run_clients(connections: usize, addr: SocketAddr) -> Result<usize, String> {
    let shared = Rc::new(Clients {
        total: connections,
        connecting: Semaphore::new(CONNECTING),
        connected: Cell::new(0),
        all_connected: Event::new(),
        checked: Cell::new(0),
        all_checked: Event::new(),
    });
    let handles: Vec<_> = (0..connections)
        .map(|i| {
            let shared = shared.clone();
            greenhub::spawn(move || client(i, addr, shared))
        })
        .collect();
    let mut total = 0;
    for h in handles {
        match h.join() {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(format!("a client failed: {e}")),
        }
    }
    Ok(total)
}

struct Clients {
    total: usize,
    connecting: Semaphore,
    connected: Cell<usize>,
    all_connected: Event,
    checked: Cell<usize>,
    all_checked: Event,
}

impl Clients {
    fn arrive(&self, count: &Cell<usize>, all: &Event) {
        count.set(count.get() + 1);
        if count.get() == self.total {
            all.set();
        }
    }
}

const CHILD_ENV: &str = "GREENHUB_TEST_ECHO_10K_SERVER";

/// The clients' process: connects to the server named by `CHILD_ENV`
/// ("ADDR CONNECTIONS") and prints how many bytes it checked.
#[test]
#[ignore = "run by ten_thousand_concurrent_echo_connections_on_one_hub in a child process"]
fn clients_child() {
    let Ok(job) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (addr, connections) = job.split_once(' ').expect("ADDR CONNECTIONS");
    let addr: SocketAddr = addr.parse().unwrap();
    let connections: usize = connections.parse().unwrap();
    let limit = raise_fd_limit(connections as u64 + SPARE_FDS);
    assert!(
        limit >= connections as u64 + SPARE_FDS,
        "RLIMIT_NOFILE {limit}"
    );
    match greenhub::run(move || run_clients(connections, addr)).unwrap() {
        Ok(checked) => println!("checked={checked}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn ten_thousand_concurrent_echo_connections_on_one_hub() {
    let limit = raise_fd_limit(CONNECTIONS as u64 + SPARE_FDS);
    let connections = CONNECTIONS.min(limit.saturating_sub(SPARE_FDS) as usize);
    if connections < CONNECTIONS {
        println!("RLIMIT_NOFILE is {limit}: {connections} connections instead of {CONNECTIONS}");
    }
    assert!(connections >= 1000, "RLIMIT_NOFILE {limit} is far too low");
    let start = Instant::now();
    let (addr_tx, addr_rx) = mpsc::channel();
    let (most_tx, most_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let _ = most_tx.send(serve(connections, addr_tx));
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server starts");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "clients_child",
            "--exact",
            "--include-ignored",
            "--nocapture",
        ])
        .arg("--test-threads=1")
        .env(CHILD_ENV, format!("{addr} {connections}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(240);
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the clients did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the clients failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let checked: usize = stdout
        .split("checked=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no checked= in the clients' output:\n{stdout}"));
    let most = most_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server ends once the clients have");
    server.join().unwrap();
    let elapsed = start.elapsed();
    assert_eq!(checked, connections * BYTES, "every byte came back");
    assert_eq!(most, connections, "all connections were open at once");
    println!(
        "{connections} connections x {} KiB echoed and checked in {elapsed:.2?}",
        BYTES / 1024
    );
}
