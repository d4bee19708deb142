//! Every example in `examples/` runs, and does what its docs say.
//!
//! The examples are separate programs, so each test runs the example's
//! binary as a child process. `cargo test` builds the examples along with
//! the tests (into `target/<profile>/examples/`, beside this test's
//! `target/<profile>/deps/`); when this test is built alone (`cargo test
//! --test examples`) or an example's source is newer than its binary, the
//! test builds them first with the cargo that runs it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EXAMPLES: [&str; 3] = ["echo", "chat", "crawler"];

/// The binary of example `name`. The first call builds the examples if any
/// is missing or older than its source.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        // <target dir>/<profile>/deps/examples-<hash>
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("<target dir>/<profile>");
        let examples = profile_dir.join("examples");
        let sources = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
        let modified = |p: PathBuf| p.metadata().and_then(|m| m.modified()).ok();
        let stale = EXAMPLES.iter().any(|name| {
            match (
                modified(examples.join(name)),
                modified(sources.join(format!("{name}.rs"))),
            ) {
                (Some(built), Some(written)) => built < written,
                _ => true,
            }
        });
        if stale {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "greenhub", "--examples", "--target-dir"]);
            // Explicit: a relative CARGO_TARGET_DIR would be taken from this
            // test's working directory (the package), not the workspace.
            build.arg(profile_dir.parent().expect("<target dir>"));
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo to build the examples");
            assert!(status.success(), "cargo build --examples failed");
        }
        examples
    });
    let bin = dir.join(name);
    assert!(bin.exists(), "no example binary at {}", bin.display());
    bin
}

/// Runs an example to its end (killed after a minute).
fn run_to_end(name: &str, args: &[&str]) -> Output {
    let mut child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("example {name} ran for over a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// A server example, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts example `name` on a free port and reads the address it prints
    /// ("... on 127.0.0.1:PORT").
    fn start(name: &str) -> Server {
        let mut child = Command::new(example(name))
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn echo_serves_clients_of_its_own() {
    let out = run_to_end("echo", &["--clients", "500"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("500 of 500 clients got their echo"),
        "{stdout}"
    );
}

#[test]
fn echo_serves_outside_clients() {
    let server = Server::start("echo");
    let mut clients: Vec<TcpStream> = (0..20).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("line {i}\n").as_bytes()).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        assert_eq!(line, format!("line {i}\n"));
    }
}

#[test]
fn chat_broadcasts_to_every_client() {
    let server = Server::start("chat");
    let mut readers: Vec<BufReader<TcpStream>> =
        (0..3).map(|_| BufReader::new(server.connect())).collect();
    let mut line = String::new();
    // Each is greeted once it is in the client list.
    for (i, r) in readers.iter_mut().enumerate() {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("* welcome"), "{line:?}");
        assert!(line.ends_with(&format!("{} online\n", i + 1)), "{line:?}");
    }
    let sender = readers[0].get_ref().local_addr().unwrap();
    readers[0].get_mut().write_all(b"hello, all\n").unwrap();
    for r in &mut readers {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, format!("{sender}: hello, all\n"));
    }
    // One leaves: the others are told.
    let gone = readers.pop().unwrap();
    let gone_addr = gone.get_ref().local_addr().unwrap();
    drop(gone);
    for r in &mut readers {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, format!("* {gone_addr} left\n"));
    }
}

#[test]
fn crawler_fetches_every_page() {
    let out = run_to_end("crawler", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Page n's body is 27 + 5 (n + 1) bytes, its head 37 plus its length's digits.
    let expected: usize = (0..100)
        .map(|n| {
            let body = 27 + 5 * (n + 1);
            body + 37 + body.to_string().len()
        })
        .sum();
    assert!(
        stdout.contains(&format!("fetched 100 pages, {expected} bytes")),
        "{stdout}"
    );
}
