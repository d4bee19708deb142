//! The `echo` command: TCP echo servers under load, on loopback only.
//!
//! - **echo**: C connections (C = 10, 100, 1,000) each do 64-byte
//!   request/response round trips with the server for [`RUN`] (after
//!   [`WARM_UP`]); round trips per second and the 50th/99th percentile
//!   latency of a round trip.
//! - **echo_idle**: [`IDLE_CONNECTIONS`] connections, each having made one
//!   round trip (so the server holds a task parked in `read` for each), then
//!   idle; the server's RSS growth divided by the connections.
//!
//! The servers, each in a fresh child process (this binary re-executed as
//! `__echo_server <system>`), all read into a 1 KiB buffer and write back
//! what they read, with `TCP_NODELAY`:
//! - `greenhub`: [`StreamServer`](greenhub::server::StreamServer) on one hub, a green thread per connection
//!   (dedicated stacks); `greenhub-compact`: the same with compact stacks;
//! - `tokio`: a current-thread runtime, a task per connection;
//! - `threads`: std's blocking sockets, an OS thread per connection.
//!
//! The load is the same for all: this (parent) process's [`CLIENT_THREADS`]
//! OS threads with std's blocking sockets, each driving its share of the C
//! connections in rounds: write a request on each of its connections, then
//! read each reply (so C requests are in flight, and a round trip's latency
//! is measured from its write to the end of its reply's read). Every reply
//! is checked.
//!
//! With two CPUs or more, the server process is pinned to the last CPU and
//! the load's threads to the others: every server gets one core (the
//! thread-per-connection server too), and the scheduler's placement of three
//! busy threads on two CPUs stops adding noise between runs.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use crate::report::{Bench, Metrics, Outcome, Record, System, Value};
use crate::{proc, Args};

/// The connection counts of the `echo` benchmark.
pub const CONNECTIONS: [u64; 3] = [10, 100, 1_000];
/// The connections of the `echo_idle` benchmark.
pub const IDLE_CONNECTIONS: u64 = 10_000;
/// Bytes of each request (and reply).
const MESSAGE: usize = 64;
/// Each server's read buffer.
const BUFFER: usize = 1024;
/// The load's OS threads.
const CLIENT_THREADS: usize = 2;
/// Measured time per connection count, after the warm-up.
const RUN: Duration = Duration::from_secs(2);
const WARM_UP: Duration = Duration::from_millis(300);
/// Descriptors besides the connections.
const SPARE_FDS: u64 = 256;
/// A reply slower than this fails the measurement.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The systems the `echo` command runs: those chosen (not the floor).
pub fn systems(chosen: &[System]) -> Vec<System> {
    chosen
        .iter()
        .copied()
        .filter(|&s| s != System::Floor)
        .collect()
}

/// Runs `bench` (echo or echo_idle) on each system; prints JSON lines as it
/// goes in `--json` mode, and progress on stderr.
pub fn run(bench: Bench, args: &Args, systems: &[System]) -> Vec<Record> {
    raise_fd_limit(IDLE_CONNECTIONS + SPARE_FDS);
    let sizes: &[u64] = match bench {
        Bench::Echo => &CONNECTIONS,
        _ => &[IDLE_CONNECTIONS],
    };
    let mut all = Vec::new();
    for &c in sizes {
        for &system in systems {
            let started = Instant::now();
            let outcome = match measure(bench, system, c as usize, args.timeout) {
                Ok(metrics) => Outcome::Measured(
                    metrics
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                ),
                Err(why) => Outcome::Refused(why),
            };
            let record = Record {
                bench,
                system,
                n: Some(c),
                phase: None,
                outcome,
            };
            eprintln!(
                "  {} {:<16} c={:<6} {:>6.1} s{}",
                bench.name(),
                system.name(),
                c,
                started.elapsed().as_secs_f64(),
                if matches!(record.outcome, Outcome::Refused(_)) {
                    "  refused"
                } else {
                    ""
                }
            );
            if args.json {
                println!("{}", record.json());
            }
            all.push(record);
        }
    }
    all
}

/// One measurement against a fresh server process.
fn measure(bench: Bench, system: System, c: usize, timeout: Duration) -> Result<Metrics, String> {
    let server = Server::start(system)?;
    let deadline = Instant::now() + timeout;
    let result = match bench {
        Bench::Echo => load(server.addr, c, deadline),
        _ => idle(&server, c),
    };
    server.finish(result)
}

// ---------------------------------------------------------------------------
// The parent: the server's process, and the load.

struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: thread::JoinHandle<String>,
}

impl Server {
    fn start(system: System) -> Result<Server, String> {
        let exe = env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .args(["__echo_server", system.name()])
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line);
        let Some(port) = line
            .trim()
            .strip_prefix("@port ")
            .and_then(|p| p.parse::<u16>().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            return Err(format!(
                "the server did not start: {}",
                err.lines().last().unwrap_or(line.trim())
            ));
        };
        Ok(Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stderr,
        })
    }

    /// The server's resident memory, from /proc.
    fn rss(&self) -> Result<u64, String> {
        let statm = fs::read_to_string(format!("/proc/{}/statm", self.child.id()))
            .map_err(|e| format!("cannot read the server's statm: {e}"))?;
        statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u64>().ok())
            .map(|pages| pages * proc::page_size())
            .ok_or_else(|| "cannot parse the server's statm".to_string())
    }

    /// Ends the server (closing its stdin tells it to exit) and returns
    /// `result`, or why the server died if it did.
    fn finish(mut self, result: Result<Metrics, String>) -> Result<Metrics, String> {
        let died = self.child.try_wait().ok().flatten();
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr.join().unwrap_or_default();
        match (result, died) {
            (Err(why), Some(status)) => Err(format!(
                "{why} (the server {status}: {})",
                stderr.lines().last().unwrap_or("")
            )),
            (result, _) => result,
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    Ok(stream)
}

/// One checked round trip.
fn round_trip(stream: &mut TcpStream, request: &[u8; MESSAGE]) -> io::Result<()> {
    stream.write_all(request)?;
    let mut reply = [0u8; MESSAGE];
    stream.read_exact(&mut reply)?;
    if &reply != request {
        return Err(io::Error::other("the echo differs from the request"));
    }
    Ok(())
}

/// Opens `n` connections, one after another, each making one round trip
/// (so that the server has accepted it and waits in `read`).
fn open(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, String> {
    let request = [0x5a; MESSAGE];
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect(addr).map_err(|e| format!("connect {} of {n}: {e}", i + 1))?;
        round_trip(&mut s, &request)
            .map_err(|e| format!("first round trip of connection {}: {e}", i + 1))?;
        conns.push(s);
    }
    Ok(conns)
}

/// The `echo` load: `c` connections for WARM_UP + RUN.
fn load(addr: SocketAddr, c: usize, deadline: Instant) -> Result<Metrics, String> {
    let conns = open(addr, c)?;
    let threads = CLIENT_THREADS.min(c);
    let mut shares: Vec<Vec<TcpStream>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in conns.into_iter().enumerate() {
        shares[i % threads].push(s);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let (from, until) = (start + WARM_UP, start + WARM_UP + RUN);
    let workers: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(t, conns)| {
            thread::spawn(move || {
                if let Some((_, load)) = cpus() {
                    pin(&load);
                }
                drive(conns, t as u8, from, until, deadline)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(
            w.join()
                .map_err(|_| "a client thread panicked".to_string())??,
        );
    }
    if latencies.is_empty() {
        return Err("no round trip completed".into());
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let trips = latencies.len();
    Ok(vec![
        (
            "round_trips_per_sec",
            Value::float(trips as f64 / RUN.as_secs_f64(), 0),
        ),
        ("p99_us", Value::float(pct(0.99), 1)),
        ("p50_us", Value::float(pct(0.50), 1)),
        ("round_trips", Value::Int(trips as i64)),
    ])
}

/// One client thread: rounds over its connections until `until`; the
/// latencies (ns) of the round trips that ended in `[from, until)`.
fn drive(
    mut conns: Vec<TcpStream>,
    tag: u8,
    from: Instant,
    until: Instant,
    deadline: Instant,
) -> Result<Vec<u64>, String> {
    let mut request = [0u8; MESSAGE];
    let mut reply = [0u8; MESSAGE];
    let mut sent = vec![Instant::now(); conns.len()];
    let mut latencies = Vec::with_capacity(1 << 20);
    let mut round = 0u64;
    let fail = |what: &str, i: usize, e: io::Error| format!("{what} on connection {i}: {e}");
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(latencies);
        }
        if now >= deadline {
            return Err("timed out".into());
        }
        round += 1;
        for (i, s) in conns.iter_mut().enumerate() {
            stamp(&mut request, round, tag, i);
            sent[i] = Instant::now();
            s.write_all(&request).map_err(|e| fail("write", i, e))?;
        }
        for (i, s) in conns.iter_mut().enumerate() {
            s.read_exact(&mut reply).map_err(|e| fail("read", i, e))?;
            let done = Instant::now();
            stamp(&mut request, round, tag, i);
            if reply != request {
                return Err(format!("a wrong echo on connection {i}"));
            }
            if done >= from && done < until {
                latencies.push((done - sent[i]).as_nanos() as u64);
            }
        }
    }
}

/// Makes each request unique to its round, client thread and connection,
/// so that a reply from the wrong connection or round is caught.
fn stamp(request: &mut [u8; MESSAGE], round: u64, tag: u8, i: usize) {
    request[..8].copy_from_slice(&round.to_le_bytes());
    request[8] = tag;
    request[9..11].copy_from_slice(&(i as u16).to_le_bytes());
}

/// The `echo_idle` measurement: the server's RSS growth per idle connection.
fn idle(server: &Server, n: usize) -> Result<Metrics, String> {
    // One connection first, so that lazily made things (stack pools, the
    // runtime's buffers) are in the baseline.
    drop(open(server.addr, 1)?);
    thread::sleep(Duration::from_millis(50));
    let before = server.rss()?;
    let conns = open(server.addr, n)?;
    thread::sleep(Duration::from_millis(100));
    let after = server.rss()?;
    drop(conns);
    let growth = after as f64 - before as f64;
    Ok(vec![
        ("rss_bytes_per_conn", Value::float(growth / n as f64, 1)),
        ("rss_before_bytes", Value::Int(before as i64)),
        ("rss_idle_bytes", Value::Int(after as i64)),
    ])
}

/// Which CPUs the server runs on (the last one), and the load (the
/// others); `None` on a single CPU, where nothing is pinned.
fn cpus() -> Option<(usize, Vec<usize>)> {
    let n = thread::available_parallelism().map_or(1, |n| n.get());
    (n >= 2).then(|| (n - 1, (0..n - 1).collect()))
}

/// Pins the calling thread (and the threads it starts later) to `cpus`.
/// Best effort: a failure leaves the thread where the scheduler puts it.
/// Linux only (other systems have no affinity call of this kind: nothing is
/// pinned there).
#[cfg(not(target_os = "linux"))]
fn pin(_cpus: &[usize]) {}

/// See the other `pin`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn pin(cpus: &[usize]) {
    // SAFETY: CPU_ZERO/CPU_SET write into the zeroed set we own;
    // sched_setaffinity(0, …) reads it for the calling thread.
    unsafe {
        let mut set = std::mem::zeroed::<libc::cpu_set_t>();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Raises this process's soft limit on descriptors toward `want` (up to the
/// hard limit).
#[allow(unsafe_code)]
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given; setrlimit reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---------------------------------------------------------------------------
// The child: a server, until its stdin closes.

/// `__echo_server <system>`: serves on 127.0.0.1 (a free port, printed as
/// `@port N`) until stdin closes.
pub fn server_main(args: &[String]) -> ExitCode {
    let Some(system) = args.first().and_then(|s| System::parse(s)) else {
        eprintln!("usage: greenhub-bench __echo_server <system>");
        return ExitCode::from(2);
    };
    raise_fd_limit(IDLE_CONNECTIONS + SPARE_FDS);
    if let Some((server, _)) = cpus() {
        pin(&[server]);
    }
    thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        std::process::exit(0);
    });
    let served = match system {
        System::Greenhub => greenhub_server(greenhub::HubBuilder::new().dedicated_stacks()),
        System::GreenhubCompact => greenhub_server(compact_hub()),
        System::Tokio => tokio_server(),
        System::Threads => threads_server(),
        System::Floor => Err(io::Error::other("not a server")),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn announce(addr: SocketAddr) {
    println!("@port {}", addr.port());
    let _ = io::stdout().flush();
}

/// greenhub_sys's compact mode: 8 shared execution stacks of 256 KiB.
#[allow(unsafe_code)]
fn compact_hub() -> greenhub::HubBuilder {
    // SAFETY: `compact_stacks` requires that nothing outside a parked green
    // thread reads or writes its stack. The echo server's green threads
    // read into and write from stack buffers with readiness-based I/O: each
    // syscall runs on the green thread itself while it runs; no OS thread
    // or kernel operation is handed a pointer into a stack, and no scope or
    // future outlives a park.
    unsafe { greenhub::HubBuilder::new().compact_stacks(8, 256 * 1024) }
}

fn greenhub_server(hub: greenhub::HubBuilder) -> io::Result<()> {
    use greenhub::server::StreamServer;
    hub.run(|| {
        let server =
            StreamServer::bind("127.0.0.1:0", |mut stream: greenhub::net::TcpStream, _| {
                let _ = stream.set_nodelay(true);
                let mut buf = [0u8; BUFFER];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            })?;
        announce(server.local_addr());
        server.serve_forever()
    })
    .map_err(io::Error::other)?
}

fn tokio_server() -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        announce(listener.local_addr()?);
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; BUFFER];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

fn threads_server() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    announce(listener.local_addr()?);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let spawned = thread::Builder::new().spawn(move || {
            let mut buf = [0u8; BUFFER];
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        if let Err(e) = spawned {
            eprintln!("echo server: cannot spawn a thread: {e}");
        }
    }
    Ok(())
}
