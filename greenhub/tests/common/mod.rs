//! What the integration tests that run a scenario in a child process share:
//! the child is this test binary, re-executed for one test, as Go's
//! runtime/crash_test.go does, so crashes, aborts and process limits stay
//! out of the test runner.

#![allow(dead_code)] // each test binary uses what it needs

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a child process left behind.
pub struct Child {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Re-runs this binary's test `name` alone (even if it is ignored) in a
/// child process with the environment variables `env` set; kills it and
/// fails if it runs longer than a minute.
pub fn run_child(name: &str, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([name, "--exact", "--include-ignored", "--nocapture"])
        .arg("--test-threads=1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn the test binary");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("child process {name} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Child {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}
