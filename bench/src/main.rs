//! `greenhub-bench`: the two programs of the talk greenhub starts from
//! ("Greenlet-based concurrency", EuroPython 2013), plus micro-benchmarks,
//! run on greenhub beside OS threads and tokio in the same run.
//!
//! greenhub is measured in both of its stack modes, as two systems:
//! `greenhub` (a dedicated stack per green thread, the default) and
//! `greenhub-compact` (compact stacks: green threads take turns on 8 shared
//! execution stacks of 256 KiB, and a suspended one keeps the stack bytes it
//! used on the heap; see `greenhub_sys`).
//!
//! - **prog1**: N tasks each sleep 200 ms; wall time from the first spawn until
//!   all are joined (and, for greenhub, minor page faults per phase). With
//!   greenhub comes its *page-fault floor* (system name `floor`, in
//!   `floor_sys`): the time to first-touch one 4 KiB page in each of N fresh
//!   36 KiB stack slots: what N new dedicated stacks cost the kernel at the
//!   least; greenhub's cold round is shown as a ratio to it.
//! - **prog2**: N tasks parked (each sleeps an hour); resident memory per task.
//! - **pingpong**: two tasks hand a token back and forth; time per round trip.
//! - **spawn**: spawn and join trivial tasks; tasks per second.
//! - **switch**: the copying path of compact stacks: two green threads on ONE
//!   shared execution stack, each holding a live frame of 64 B, 1 KiB or
//!   4 KiB, switching with `yield_now`; time per round trip, beside the same
//!   on dedicated stacks (no copying), the memcpy floor of the round
//!   trip's four copies and the switch floor (two bare corosensei
//!   coroutines switching, no hub). greenhub's two systems only. With
//!   greenhub-compact, also the stack bytes a green thread uses (its image)
//!   and keeps on the heap while parked in `sleep` or `Event::wait`.
//! - **queue** (not in `talk`): queues between tasks (see `queue_bench`).
//! - **echo** (not in `talk`): TCP echo servers under load, and their memory
//!   per idle connection (see `echo_bench`); the servers run in child
//!   processes (`__echo_server <system>`), the load in this one.
//!
//! Every measurement runs in a fresh child process: this binary re-executes
//! itself as `__child <bench> <system> <n>`. That keeps Prog 2's RSS baseline
//! clean, and turns a system's failure (EAGAIN on thread creation, the OOM
//! killer, a crash, a hang past the timeout) into a reported refusal while
//! the run goes on. Once a system is refused at some N, larger N are skipped
//! for it.
//!
//! No `unsafe` except where `greenhub_sys` turns compact stacks on
//! (`HubBuilder::compact_stacks` is an `unsafe fn`: its contract is that no one
//! outside a parked green thread touches its stack).

#![deny(unsafe_code)]

mod echo_bench;
mod floor_sys;
mod greenhub_sys;
mod proc;
mod queue_bench;
mod report;
mod threads_sys;
mod tokio_sys;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use std::{env, thread};

use greenhub_sys::Stacks;
use report::{Bench, Outcome, Parked, Record, System};

/// How long each task of Prog 1 sleeps.
pub const SLEEP: Duration = Duration::from_millis(200);
/// How long each task of Prog 2 sleeps: far longer than the measurement,
/// after which the child process ends with the tasks still asleep.
pub const PARK: Duration = Duration::from_secs(3600);
/// The spawn benchmark spawns this many tasks, then joins them, and repeats,
/// so memory stays bounded.
pub const BATCH: usize = 1000;
/// Phases of the runtimes that have a warm-up worth showing.
pub const PHASES: [&str; 2] = ["cold", "warm"];

/// Prog 1 and Prog 2 sizes, as in the talk (plus 1M).
const SIZES: [u64; 5] = [100, 1_000, 10_000, 100_000, 1_000_000];
const PINGPONG_TRIPS: usize = 1_000_000;
/// Threads are two orders of magnitude slower at ping-pong and at spawning:
/// fewer iterations keep the run short without making the figure less exact.
const PINGPONG_TRIPS_THREADS: usize = 100_000;
const SPAWN_TASKS: u64 = 1_000_000;
const SPAWN_TASKS_THREADS: u64 = 10_000;
/// The `switch` benchmark's live frames (bytes), and its round trips per run.
const SWITCH_LIVE: [u64; 3] = [64, 1024, 4096];
const SWITCH_TRIPS: usize = 200_000;
/// Round trips and items of the `queue` command (OS threads: fewer trips).
const QUEUE_TRIPS: usize = 1_000_000;
const QUEUE_TRIPS_THREADS: usize = 100_000;
const QUEUE_ITEMS: usize = 1_000_000;
/// A child still running after this is killed and reported as refused.
const CHILD_TIMEOUT_SECS: u64 = 120;

/// The sum the spawn benchmark's tasks return: in each batch task `i`
/// returns `i % 2 + 1`.
pub fn spawn_checksum(n: usize) -> u64 {
    let batch_sum = |b: usize| (0..b).map(|i| (i % 2) as u64 + 1).sum::<u64>();
    (n / BATCH) as u64 * batch_sum(BATCH) + batch_sum(n % BATCH)
}

const USAGE: &str = "\
usage: greenhub-bench <talk|prog1|prog2|pingpong|spawn|switch|queue|echo> [--json] [--max-n N] [--systems a,b]

  talk       everything but queue and echo: prog1, prog2, pingpong, spawn, switch
  prog1      N tasks each sleep 200 ms; wall time (cold and warm rounds); with
             greenhub, its page-fault floor (first touch of N fresh stack pages)
  prog2      N tasks parked (each sleeps an hour); resident memory per task
  pingpong   two tasks hand a token back and forth; time per round trip
  spawn      spawn and join trivial tasks; tasks per second
  switch     compact stacks' copying: two green threads on one shared
             execution stack, each with a live frame of 64 B / 1 KiB / 4 KiB,
             switching with yield_now; time per round trip, beside the same
             on dedicated stacks (greenhub-compact and greenhub only), and
             the memcpy floor (the round trip's four copies timed alone)
             and the switch floor (two bare coroutines, no hub);
             and the stack bytes a compact green thread uses and keeps while
             parked in sleep / Event::wait
  queue      (not in talk) ping-pong through two queues, and 1 producer /
             4 consumers through a bounded queue: greenhub's Queue, tokio's
             mpsc, crossbeam-channel between OS threads (system `threads`);
             not greenhub-compact
  echo       (not in talk) TCP echo servers on 127.0.0.1: C = 10, 100, 1,000
             connections doing 64-byte round trips for 2 s (round trips per
             second, p99 latency), and RSS per idle connection with 10,000
             idle connections; servers in child processes, the same client
             (2 OS threads, blocking std sockets) for all

  Systems: threads (OS threads), tokio (current-thread runtime), greenhub
  (a dedicated stack per green thread), greenhub-compact (8 shared execution
  stacks of 256 KiB; a parked green thread's used stack bytes on the heap).

  --json          one JSON object per line instead of tables
  --max-n N       largest N for prog1/prog2, and at most N spawned tasks
                  (default 1000000; 100K or 1M are accepted too)
  --systems a,b   a subset of threads,tokio,greenhub,greenhub-compact
                  (default all); the page-fault floor is measured whenever
                  greenhub is
  --timeout SECS  kill a measurement's child process after SECS and report
                  it as refused (default 120)
";

struct Args {
    benches: Vec<Bench>,
    json: bool,
    max_n: u64,
    systems: Vec<System>,
    timeout: Duration,
}

fn parse_count(s: &str) -> Option<u64> {
    let s = s.replace(['_', ','], "");
    let (digits, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1_000),
        'm' | 'M' => (&s[..s.len() - 1], 1_000_000),
        _ => (&s[..], 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut benches = None;
    let mut json = false;
    let mut max_n = 1_000_000;
    let mut systems = System::ALL.to_vec();
    let mut timeout = Duration::from_secs(CHILD_TIMEOUT_SECS);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--json" => json = true,
            "--max-n" => {
                let v = value("--max-n")?;
                max_n = parse_count(&v)
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--max-n: not a positive count: {v}"))?;
            }
            "--timeout" => {
                let v = value("--timeout")?;
                let secs =
                    v.parse::<u64>().ok().filter(|&s| s > 0).ok_or_else(|| {
                        format!("--timeout: not a positive number of seconds: {v}")
                    })?;
                timeout = Duration::from_secs(secs);
            }
            "--systems" => {
                let v = value("--systems")?;
                let mut chosen = Vec::new();
                for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    chosen.push(System::parse(name).ok_or_else(|| {
                        let known: Vec<&str> = System::ALL.iter().map(|s| s.name()).collect();
                        format!("--systems: unknown system {name:?} ({})", known.join(", "))
                    })?);
                }
                if chosen.is_empty() {
                    return Err("--systems: name at least one system".into());
                }
                // Table columns keep their usual order.
                systems = System::ALL
                    .into_iter()
                    .filter(|s| chosen.contains(s))
                    .collect();
            }
            "-h" | "--help" => return Err(String::new()),
            cmd if benches.is_none() && !cmd.starts_with('-') => {
                benches =
                    Some(match cmd {
                        "talk" => Bench::ALL.to_vec(),
                        "queue" => Bench::QUEUE.to_vec(),
                        "echo" => Bench::ECHO.to_vec(),
                        other => vec![Bench::parse(other)
                            .ok_or_else(|| format!("unknown command {other:?}"))?],
                    });
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Args {
        benches: benches.ok_or_else(String::new)?,
        json,
        max_n,
        systems,
        timeout,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__child") {
        return child_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("__echo_server") {
        return echo_bench::server_main(&args[1..]);
    }
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    run(&args);
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------
// The child: one measurement, reported on stdout.

fn child_main(args: &[String]) -> ExitCode {
    let parsed = match args {
        [b, s, n] => Bench::parse_any(b)
            .zip(System::parse_any(s))
            .zip(n.parse::<usize>().ok()),
        _ => None,
    };
    let Some(((bench, system), n)) = parsed else {
        eprintln!("usage: greenhub-bench __child <bench> <system> <n>");
        return ExitCode::from(2);
    };
    // Read once before measuring (it is cached).
    proc::page_size();
    match (system, bench) {
        (System::Threads, Bench::Prog1) => threads_sys::prog1(n),
        (System::Threads, Bench::Prog2) => threads_sys::prog2(n),
        (System::Threads, Bench::PingPong) => threads_sys::pingpong(n),
        (System::Threads, Bench::Spawn) => threads_sys::spawn_bench(n),
        (System::Tokio, Bench::Prog1) => tokio_sys::prog1(n),
        (System::Tokio, Bench::Prog2) => tokio_sys::prog2(n),
        (System::Tokio, Bench::PingPong) => tokio_sys::pingpong(n),
        (System::Tokio, Bench::Spawn) => tokio_sys::spawn_bench(n),
        (_, Bench::Echo | Bench::EchoIdle) => {
            report::emit_refused(None, "echo runs its servers as __echo_server")
        }
        (System::Greenhub | System::GreenhubCompact, bench) => {
            let stacks = Stacks::of(system);
            match bench {
                Bench::Prog1 => greenhub_sys::prog1(stacks, n),
                Bench::Prog2 => greenhub_sys::prog2(stacks, n),
                Bench::PingPong => greenhub_sys::pingpong(stacks, n),
                Bench::Spawn => greenhub_sys::spawn_bench(stacks, n),
                Bench::Switch => greenhub_sys::switch(stacks, n, SWITCH_TRIPS),
                Bench::SwitchParked(parked) => greenhub_sys::switch_parked(stacks, parked),
                Bench::QueuePingPong => queue_bench::pingpong(system, n),
                Bench::QueueThroughput => queue_bench::throughput(system, n),
                Bench::Echo | Bench::EchoIdle => unreachable!("matched above"),
            }
        }
        (System::Floor, Bench::Prog1) => floor_sys::prog1(n),
        (system, Bench::QueuePingPong) => queue_bench::pingpong(system, n),
        (system, Bench::QueueThroughput) => queue_bench::throughput(system, n),
        (System::Threads | System::Tokio, Bench::Switch | Bench::SwitchParked(_)) => {
            report::emit_refused(
                None,
                "switch measures greenhub's stack modes only (greenhub, greenhub-compact)",
            )
        }
        (System::Floor, _) => {
            report::emit_refused(None, "the page-fault floor is measured for prog1 only")
        }
    }
    println!("@end");
    ExitCode::SUCCESS
}

/// Ends a child process at once, its report complete. Prog 2 ends so, its N
/// tasks still asleep: tearing them down is not what it measures, and the
/// exit frees them all at once.
pub fn end_child() -> ! {
    println!("@end");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(0)
}

/// The phases a child reports for a benchmark and system.
fn expected_phases(bench: Bench, system: System) -> &'static [Option<&'static str>] {
    match (bench, system) {
        (
            Bench::Prog1 | Bench::Spawn,
            System::Tokio | System::Greenhub | System::GreenhubCompact,
        ) => &[Some("cold"), Some("warm")],
        (Bench::Prog1, System::Floor) => &[Some("cold")],
        _ => &[None],
    }
}

/// Why a child that did not finish its report ended.
fn failure(status: Option<ExitStatus>, timeout: Duration, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match status {
        None => format!("timed out after {} s (killed)", timeout.as_secs()),
        Some(st) => match (st.code(), st.signal()) {
            (_, Some(9)) => "killed by SIGKILL (out of memory?)".to_string(),
            (_, Some(11)) => "crashed with SIGSEGV (stack overflow?)".to_string(),
            (_, Some(6)) => "aborted (SIGABRT)".to_string(),
            (_, Some(sig)) => format!("killed by signal {sig}"),
            (Some(code), _) => format!("exited with status {code}"),
            (None, None) => format!("ended: {st}"),
        },
    };
    // A panic's message (the lines after "panicked at", up to a backtrace
    // or a note), else the last meaningful lines of stderr.
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = match lines.iter().rposition(|l| l.contains("panicked at")) {
        Some(i) => lines[i + 1..]
            .iter()
            .take_while(|l| {
                ![
                    "stack backtrace:",
                    "note:",
                    "fatal runtime error",
                    "thread '",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
        None => {
            let meaningful: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| !l.starts_with("note:"))
                .collect();
            meaningful[meaningful.len().saturating_sub(2)..].join(" ")
        }
    };
    let tail: String = tail.chars().take(300).collect();
    if tail.is_empty() {
        format!("child process {how}")
    } else {
        format!("child process {how}: {tail}")
    }
}

/// Runs one measurement in a fresh child process and returns its records,
/// one per expected phase (a missing one becomes a refusal saying why).
fn run_child(bench: Bench, system: System, n: u64, timeout: Duration) -> Vec<Record> {
    let size = bench.sized().then_some(n);
    let record = |phase: Option<&str>, outcome| Record {
        bench,
        system,
        n: size,
        phase: phase.map(str::to_string),
        outcome,
    };
    let exe = match env::current_exe() {
        Ok(e) => e,
        Err(e) => return vec![record(None, Outcome::Refused(format!("current_exe: {e}")))],
    };
    let spawned = Command::new(exe)
        .args(["__child", bench.name(), system.name(), &n.to_string()])
        // A panic's message is what the report needs, not its backtrace.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return vec![record(
                None,
                Outcome::Refused(format!("cannot start child: {e}")),
            )]
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(_) => break child.wait().ok(),
        }
    };
    let lines = out_reader.join().unwrap_or_default();
    let err_text = err_reader.join().unwrap_or_default();
    let finished = lines.iter().any(|l| l == "@end") && status.is_some_and(|s| s.success());

    let mut got: Vec<(Option<String>, Outcome)> =
        lines.iter().filter_map(|l| report::parse_wire(l)).collect();
    let spawned = lines.iter().rev().find_map(|l| report::parse_progress(l));
    let died = |status| {
        let why = failure(status, timeout, &err_text);
        match spawned {
            Some(k) => format!("{why} (it had spawned {} or more)", report::group(k)),
            None => why,
        }
    };
    let mut records = Vec::new();
    for &phase in expected_phases(bench, system) {
        let pos = got.iter().position(|(p, _)| p.as_deref() == phase);
        let outcome = match pos {
            Some(i) => got.remove(i).1,
            None => {
                // A refusal without a phase (the runtime itself failed)
                // stands for every phase it did not reach.
                let general = got.iter().find_map(|(p, o)| match (p, o) {
                    (None, Outcome::Refused(why)) => Some(why.clone()),
                    _ => None,
                });
                Outcome::Refused(match general {
                    Some(why) => why,
                    None if !finished => died(status),
                    None => report::NOT_REACHED.to_string(),
                })
            }
        };
        records.push(record(phase, outcome));
    }
    if !finished
        && records
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Measured(_)))
    {
        eprintln!(
            "  note: {} {} n={n}: measured, but then the {}",
            bench.name(),
            system.name(),
            failure(status, timeout, &err_text)
        );
    }
    records
}

// ---------------------------------------------------------------------------
// The parent: which children to run, and the report.

fn run(args: &Args) {
    let machine = proc::machine();
    if args.json {
        println!("{}", report::machine_json(&machine));
    } else {
        println!("{}\n", report::machine_text(&machine));
    }
    let mut sizes: Vec<u64> = SIZES.into_iter().filter(|&n| n <= args.max_n).collect();
    if sizes.is_empty() {
        sizes.push(args.max_n);
    }
    let mut queue_records = Vec::new();
    let mut echo_records = Vec::new();
    let echo_systems = echo_bench::systems(&args.systems);
    let all = &args.systems;
    let queue_systems = queue_systems(all);
    let switch_systems = switch_systems(all);
    for &bench in &args.benches {
        let records = match bench {
            Bench::Prog1 | Bench::Prog2 => run_sized(bench, args, &sizes),
            Bench::PingPong => run_once(bench, args, all, |s| match s {
                System::Threads => PINGPONG_TRIPS_THREADS as u64,
                _ => PINGPONG_TRIPS as u64,
            }),
            Bench::Spawn => run_once(bench, args, all, |s| match s {
                System::Threads => SPAWN_TASKS_THREADS.min(args.max_n),
                _ => SPAWN_TASKS.min(args.max_n),
            }),
            Bench::Switch => run_switch(args, &switch_systems),
            Bench::SwitchParked(_) => unreachable!("measured by the switch command"),
            Bench::QueuePingPong => run_once(bench, args, &queue_systems, |s| match s {
                System::Threads => QUEUE_TRIPS_THREADS as u64,
                _ => QUEUE_TRIPS as u64,
            }),
            Bench::QueueThroughput => run_once(bench, args, &queue_systems, |_| QUEUE_ITEMS as u64),
            Bench::Echo | Bench::EchoIdle => echo_bench::run(bench, args, &echo_systems),
        };
        if !args.json {
            let text = match bench {
                Bench::Prog1 => report::prog1_table(&records, &args.systems, &sizes),
                Bench::Prog2 => report::prog2_table(&records, &args.systems, &sizes),
                Bench::PingPong => report::pingpong_table(&records, &args.systems),
                Bench::Spawn => report::spawn_table(&records, &args.systems),
                Bench::Switch | Bench::SwitchParked(_) => {
                    report::switch_table(&records, &switch_systems, &SWITCH_LIVE)
                }
                // One table for both, once both are measured.
                Bench::QueuePingPong => {
                    queue_records.extend(records);
                    continue;
                }
                Bench::QueueThroughput => {
                    queue_records.extend(records);
                    report::queue_table(&queue_records, &queue_systems)
                }
                Bench::Echo => {
                    echo_records.extend(records);
                    continue;
                }
                Bench::EchoIdle => {
                    echo_records.extend(records);
                    report::echo_table(
                        &echo_records,
                        &echo_systems,
                        &echo_bench::CONNECTIONS,
                        echo_bench::IDLE_CONNECTIONS,
                    )
                }
            };
            println!("{text}");
        }
    }
}

/// Prints records as JSON lines as they come (in `--json` mode), and keeps
/// them for the tables.
fn keep(args: &Args, all: &mut Vec<Record>, records: Vec<Record>) {
    if args.json {
        for r in &records {
            println!("{}", r.json());
        }
    }
    all.extend(records);
}

fn progress(bench: Bench, system: System, n: u64, started: Instant, records: &[Record]) {
    let refused = records
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Refused(_)));
    let (name, size) = match bench {
        Bench::Switch => ("switch", format!("live={n} B")),
        Bench::SwitchParked(p) => ("switch", format!("in {}", p.label())),
        _ => (bench.name(), format!("n={n}")),
    };
    eprintln!(
        "  {} {:<16} {:<14} {:>6.1} s{}",
        name,
        system.name(),
        size,
        started.elapsed().as_secs_f64(),
        if refused { "  refused" } else { "" }
    );
}

/// The systems a benchmark runs: those chosen, and for Prog 1 with greenhub,
/// the page-fault floor right after it.
fn systems_for(bench: Bench, chosen: &[System]) -> Vec<System> {
    let mut systems = chosen.to_vec();
    if bench == Bench::Prog1 && chosen.contains(&System::Greenhub) {
        systems.push(System::Floor);
    }
    systems
}

/// Prog 1 or Prog 2 at every size, smallest first, each system in turn; a
/// system refused at some N is not run at larger N.
fn run_sized(bench: Bench, args: &Args, sizes: &[u64]) -> Vec<Record> {
    let mut all = Vec::new();
    let mut refused_at: Vec<(System, u64)> = Vec::new();
    let systems = systems_for(bench, &args.systems);
    for &n in sizes {
        for &system in &systems {
            if let Some(&(_, at)) = refused_at.iter().find(|(s, _)| *s == system) {
                let skipped = expected_phases(bench, system)
                    .iter()
                    .map(|&phase| Record {
                        bench,
                        system,
                        n: Some(n),
                        phase: phase.map(str::to_string),
                        outcome: Outcome::Skipped(format!("refused at N={}", report::group(at))),
                    })
                    .collect();
                keep(args, &mut all, skipped);
                continue;
            }
            let started = Instant::now();
            let records = run_child(bench, system, n, args.timeout);
            progress(bench, system, n, started, &records);
            if records
                .iter()
                .any(|r| matches!(r.outcome, Outcome::Refused(_)))
            {
                refused_at.push((system, n));
            }
            keep(args, &mut all, records);
        }
    }
    all
}

/// The systems the `queue` command runs: those chosen but greenhub-compact
/// (it compares queues, not stack modes).
fn queue_systems(chosen: &[System]) -> Vec<System> {
    chosen
        .iter()
        .copied()
        .filter(|&s| s != System::GreenhubCompact)
        .collect()
}

/// The systems the `switch` benchmark runs: greenhub's two stack modes, those
/// chosen, compact (what it measures) first.
fn switch_systems(chosen: &[System]) -> Vec<System> {
    [System::GreenhubCompact, System::Greenhub]
        .into_iter()
        .filter(|s| chosen.contains(s))
        .collect()
}

/// Switch: each live frame size on each system, in a child process each;
/// then, with greenhub-compact, the image of a green thread parked in each
/// blocking point, in a child process each.
fn run_switch(args: &Args, systems: &[System]) -> Vec<Record> {
    let mut all = Vec::new();
    for live in SWITCH_LIVE {
        for &system in systems {
            let started = Instant::now();
            let records = run_child(Bench::Switch, system, live, args.timeout);
            progress(Bench::Switch, system, live, started, &records);
            keep(args, &mut all, records);
        }
    }
    if systems.contains(&System::GreenhubCompact) {
        for parked in Parked::ALL {
            let bench = Bench::SwitchParked(parked);
            let system = System::GreenhubCompact;
            let started = Instant::now();
            let records = run_child(bench, system, 0, args.timeout);
            progress(bench, system, 0, started, &records);
            keep(args, &mut all, records);
        }
    }
    all
}

/// A benchmark with one size per system (of `systems`).
fn run_once(
    bench: Bench,
    args: &Args,
    systems: &[System],
    count: impl Fn(System) -> u64,
) -> Vec<Record> {
    let mut all = Vec::new();
    for &system in systems {
        let n = count(system);
        let started = Instant::now();
        let records = run_child(bench, system, n, args.timeout);
        progress(bench, system, n, started, &records);
        keep(args, &mut all, records);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn parses_arguments() {
        let a = args("talk --json --max-n 100K --systems tokio,greenhub").unwrap();
        assert_eq!(a.benches, Bench::ALL.to_vec());
        assert!(a.json);
        assert_eq!(a.max_n, 100_000);
        assert_eq!(a.systems, vec![System::Tokio, System::Greenhub]);
        let a = args("--max-n 1_000 prog2").unwrap();
        assert_eq!(a.benches, vec![Bench::Prog2]);
        assert_eq!(a.max_n, 1000);
        assert_eq!(a.systems, System::ALL.to_vec());
        assert!(a.systems.contains(&System::GreenhubCompact));
        let a = args("switch --systems greenhub-compact,greenhub").unwrap();
        assert_eq!(a.benches, vec![Bench::Switch]);
        assert_eq!(a.systems, vec![System::Greenhub, System::GreenhubCompact]);
        assert!(Bench::ALL.contains(&Bench::Switch));
        let a = args("echo --systems tokio,greenhub").unwrap();
        assert_eq!(a.benches, vec![Bench::Echo, Bench::EchoIdle]);
        assert!(args("").is_err());
        assert!(args("prog3").is_err());
        assert!(args("talk --systems go").is_err());
        assert!(args("talk --max-n 0").is_err());
    }

    #[test]
    fn floor_goes_with_greenhub_prog1() {
        use System::*;
        assert_eq!(
            systems_for(Bench::Prog1, &System::ALL),
            vec![Threads, Tokio, Greenhub, GreenhubCompact, Floor]
        );
        assert_eq!(
            systems_for(Bench::Prog1, &[GreenhubCompact]),
            vec![GreenhubCompact]
        );
        assert_eq!(
            systems_for(Bench::Prog1, &[Greenhub]),
            vec![Greenhub, Floor]
        );
        assert_eq!(systems_for(Bench::Prog1, &[Tokio]), vec![Tokio]);
        assert_eq!(
            systems_for(Bench::Prog2, &System::ALL),
            System::ALL.to_vec()
        );
        assert!(args("talk --systems floor").is_err());
        assert_eq!(System::parse_any("floor"), Some(Floor));
    }

    #[test]
    fn systems_of_switch_and_queue() {
        use System::*;
        assert_eq!(
            switch_systems(&System::ALL),
            vec![GreenhubCompact, Greenhub]
        );
        assert_eq!(switch_systems(&[Threads, Greenhub]), vec![Greenhub]);
        assert_eq!(queue_systems(&System::ALL), vec![Threads, Tokio, Greenhub]);
        assert_eq!(System::parse("greenhub-compact"), Some(GreenhubCompact));
    }

    #[test]
    fn checksum_matches_batches() {
        let direct = |n: usize| -> u64 { (0..n).map(|k| ((k % BATCH) % 2) as u64 + 1).sum() };
        for n in [0, 1, 999, 1000, 1001, 2500] {
            assert_eq!(spawn_checksum(n), direct(n), "n={n}");
        }
    }

    #[test]
    fn failure_reasons() {
        let t = Duration::from_secs(5);
        assert!(failure(None, t, "").contains("timed out after 5 s"));
        let why = failure(
            None,
            t,
            "thread 'main' panicked at x.rs:1:1:\nno stacks left\nnote: run with RUST_BACKTRACE=1",
        );
        assert!(why.ends_with("no stacks left"), "{why}");
        let why = failure(
            None,
            t,
            "thread 'main' (7) panicked at x.rs:1:1:\nno stacks\nleft\nstack backtrace:\n 0: foo",
        );
        assert!(why.ends_with(": no stacks left"), "{why}");
        let why = failure(None, t, "error one\nerror two\nerror three\n");
        assert!(why.ends_with(": error two error three"), "{why}");
    }
}
