//! Results: what a measurement produces, how a child process hands it to the
//! parent, and how the parent prints it (tables in the talk's shape, or one
//! JSON object per line).
//!
//! A child prints each result as one line of a small tab-separated protocol
//! (`@rec`, phase, `ok` and `key=value` pairs, or `refused` and a message), so
//! the parent needs no JSON parser; the metric names are the JSON keys.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::proc::Machine;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Bench {
    Prog1,
    Prog2,
    PingPong,
    Spawn,
    Switch,
    /// Part of the `switch` command: the stack bytes a compact green thread
    /// uses and keeps while parked in the given blocking point.
    SwitchParked(Parked),
    QueuePingPong,
    QueueThroughput,
    Echo,
    EchoIdle,
}

impl Bench {
    /// The `talk` command.
    pub const ALL: [Bench; 5] = [
        Bench::Prog1,
        Bench::Prog2,
        Bench::PingPong,
        Bench::Spawn,
        Bench::Switch,
    ];
    /// The `queue` command (not part of `talk`).
    pub const QUEUE: [Bench; 2] = [Bench::QueuePingPong, Bench::QueueThroughput];
    /// The `echo` command (not part of `talk`).
    pub const ECHO: [Bench; 2] = [Bench::Echo, Bench::EchoIdle];
    /// The parked images the `switch` command measures besides its round
    /// trips (not commands of their own).
    pub const PARKED: [Bench; 2] = [
        Bench::SwitchParked(Parked::Sleep),
        Bench::SwitchParked(Parked::EventWait),
    ];

    /// The name a child process is given, and (but for the parked images,
    /// which are `switch` records with a `parked_in`) the JSON `bench`.
    pub fn name(self) -> &'static str {
        match self {
            Bench::Prog1 => "prog1",
            Bench::Prog2 => "prog2",
            Bench::PingPong => "pingpong",
            Bench::Spawn => "spawn",
            Bench::Switch => "switch",
            Bench::SwitchParked(Parked::Sleep) => "switch_parked_sleep",
            Bench::SwitchParked(Parked::EventWait) => "switch_parked_event_wait",
            Bench::QueuePingPong => "queue_pingpong",
            Bench::QueueThroughput => "queue_throughput",
            Bench::Echo => "echo",
            Bench::EchoIdle => "echo_idle",
        }
    }

    /// A benchmark a command may name, by name.
    pub fn parse(s: &str) -> Option<Bench> {
        Bench::ALL
            .into_iter()
            .chain(Bench::QUEUE)
            .chain(Bench::ECHO)
            .find(|b| b.name() == s)
    }

    /// Any benchmark, the parked images too, by name (for a child process's
    /// arguments).
    pub fn parse_any(s: &str) -> Option<Bench> {
        Bench::parse(s).or_else(|| Bench::PARKED.into_iter().find(|b| b.name() == s))
    }

    /// Whether a record of this benchmark has a size ([`Record::n`]).
    pub fn sized(self) -> bool {
        matches!(
            self,
            Bench::Prog1 | Bench::Prog2 | Bench::Switch | Bench::Echo | Bench::EchoIdle
        )
    }

    /// The JSON key of a record's size: the number of tasks, for `switch`
    /// the bytes of each green thread's live frame, for `echo` the
    /// connections.
    fn size_key(self) -> &'static str {
        match self {
            Bench::Switch => "live_bytes",
            Bench::Echo | Bench::EchoIdle => "connections",
            _ => "n",
        }
    }
}

/// Where the `switch` command's parked green thread blocks.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Parked {
    /// `greenhub::sleep` (for an hour).
    Sleep,
    /// `greenhub::sync::Event::wait` (on an Event nobody sets).
    EventWait,
}

impl Parked {
    pub const ALL: [Parked; 2] = [Parked::Sleep, Parked::EventWait];

    /// The JSON `parked_in`.
    pub fn name(self) -> &'static str {
        match self {
            Parked::Sleep => "sleep",
            Parked::EventWait => "event_wait",
        }
    }

    /// As the table shows it.
    pub fn label(self) -> &'static str {
        match self {
            Parked::Sleep => "sleep",
            Parked::EventWait => "Event::wait",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum System {
    Threads,
    Tokio,
    /// greenhub with a dedicated stack per green thread (its default).
    Greenhub,
    /// greenhub with compact stacks: shared execution stacks, a suspended
    /// green thread's used bytes copied to the heap (see `greenhub_sys`).
    GreenhubCompact,
    /// Not a runtime: Prog 1's page-fault floor (see `floor_sys`), measured
    /// whenever greenhub's Prog 1 is.
    Floor,
}

impl System {
    /// The runtimes compared, which `--systems` chooses from, in the order of
    /// the tables' columns: the talk's baseline first.
    pub const ALL: [System; 4] = [
        System::Threads,
        System::Tokio,
        System::Greenhub,
        System::GreenhubCompact,
    ];
    /// Everything a child process may measure: the runtimes and the floor.
    pub const EVERY: [System; 5] = [
        System::Threads,
        System::Tokio,
        System::Greenhub,
        System::GreenhubCompact,
        System::Floor,
    ];
    /// The two greenhub systems, one per stack mode.
    pub const GREENHUB: [System; 2] = [System::Greenhub, System::GreenhubCompact];

    pub fn name(self) -> &'static str {
        match self {
            System::Threads => "threads",
            System::Tokio => "tokio",
            System::Greenhub => "greenhub",
            System::GreenhubCompact => "greenhub-compact",
            System::Floor => "floor",
        }
    }

    /// One of the runtimes compared, by name.
    pub fn parse(s: &str) -> Option<System> {
        System::ALL.into_iter().find(|b| b.name() == s)
    }

    /// A runtime or the floor, by name (for a child process's arguments).
    pub fn parse_any(s: &str) -> Option<System> {
        System::EVERY.into_iter().find(|b| b.name() == s)
    }
}

/// A metric's value. Floats are rounded when made, so that every output shows
/// the same digits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    pub fn float(x: f64, decimals: i32) -> Value {
        let scale = 10f64.powi(decimals);
        Value::Float((x * scale).round() / scale)
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        }
    }

    fn parse(s: &str) -> Option<Value> {
        if let Ok(i) = s.parse::<i64>() {
            Some(Value::Int(i))
        } else {
            s.parse::<f64>().ok().map(Value::Float)
        }
    }

    /// As JSON: integers as they are, floats in their shortest exact form, and
    /// NaN or infinities (which JSON cannot hold) as `null`.
    fn json(self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.is_finite() => format!("{f}"),
            Value::Float(_) => "null".to_string(),
        }
    }
}

pub type Metrics = Vec<(&'static str, Value)>;

/// Prog 1: the wall time of one phase and the minor page faults during it.
pub fn prog1_metrics(wall: Duration, minflt: u64) -> Metrics {
    vec![
        ("wall_s", Value::float(wall.as_secs_f64(), 4)),
        ("minflt", Value::Int(minflt as i64)),
    ]
}

/// Prog 1's page-fault floor: like [`prog1_metrics`], but to the µs, as the
/// floor at small N is a fraction of a millisecond.
pub fn floor_metrics(wall: Duration, minflt: u64) -> Metrics {
    vec![
        ("wall_s", Value::float(wall.as_secs_f64(), 6)),
        ("minflt", Value::Int(minflt as i64)),
    ]
}

/// Prog 2: RSS before spawning and once all `n` tasks are parked.
pub fn prog2_metrics(n: usize, rss_before: u64, rss_parked: u64) -> Metrics {
    let total = rss_parked as i64 - rss_before as i64;
    vec![
        (
            "rss_bytes_per_task",
            Value::float(total as f64 / n.max(1) as f64, 1),
        ),
        ("rss_total_bytes", Value::Int(total)),
        ("rss_before_bytes", Value::Int(rss_before as i64)),
        ("rss_parked_bytes", Value::Int(rss_parked as i64)),
    ]
}

pub fn pingpong_metrics(round_trips: usize, elapsed: Duration) -> Metrics {
    vec![
        (
            "ns_per_round_trip",
            Value::float(elapsed.as_nanos() as f64 / round_trips.max(1) as f64, 1),
        ),
        ("round_trips", Value::Int(round_trips as i64)),
    ]
}

pub fn spawn_metrics(tasks: usize, elapsed: Duration) -> Metrics {
    vec![
        (
            "per_sec",
            Value::float(tasks as f64 / elapsed.as_secs_f64().max(1e-9), 0),
        ),
        ("tasks", Value::Int(tasks as i64)),
        ("wall_s", Value::float(elapsed.as_secs_f64(), 4)),
    ]
}

// ---------------------------------------------------------------------------
// The child → parent protocol.

const WIRE_TAG: &str = "@rec";

fn wire_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Prints a measured phase on stdout for the parent (a child's only output
/// there). `phase` is `None` for a benchmark that has a single phase.
pub fn emit_ok(phase: Option<&str>, metrics: &Metrics) {
    let mut line = format!("{WIRE_TAG}\t{}\tok", phase.unwrap_or("-"));
    for (k, v) in metrics {
        let v = match v {
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format!("{f:?}"),
        };
        let _ = write!(line, "\t{k}={v}");
    }
    println!("{line}");
}

/// Prints a refusal (the system could not do it, and why).
pub fn emit_refused(phase: Option<&str>, why: &str) {
    println!(
        "{WIRE_TAG}\t{}\trefused\t{}",
        phase.unwrap_or("-"),
        wire_text(why)
    );
}

/// How often a child says how many tasks it has spawned so far.
pub const PROGRESS_EVERY: usize = 4096;

/// Says how many tasks a child has spawned so far, every [`PROGRESS_EVERY`]
/// spawns, so that when the child dies (an abort, the OOM killer) the parent
/// can tell how far it got.
pub fn emit_progress(spawned: usize) {
    if spawned % PROGRESS_EVERY == 0 && spawned > 0 {
        println!("{PROGRESS_TAG}\t{spawned}");
    }
}

/// The last count a child reported with [`emit_progress`].
pub fn parse_progress(line: &str) -> Option<u64> {
    line.strip_prefix(PROGRESS_TAG)?.trim().parse().ok()
}

const PROGRESS_TAG: &str = "@spawned";

/// Reads one line of a child's stdout; lines that are not records are
/// ignored.
pub fn parse_wire(line: &str) -> Option<(Option<String>, Outcome)> {
    let mut fields = line.trim_end_matches(['\r', '\n']).split('\t');
    if fields.next()? != WIRE_TAG {
        return None;
    }
    let phase = match fields.next()? {
        "-" => None,
        p => Some(p.to_string()),
    };
    let outcome = match fields.next()? {
        "ok" => {
            let mut metrics = Vec::new();
            for kv in fields {
                let (k, v) = kv.split_once('=')?;
                metrics.push((k.to_string(), Value::parse(v)?));
            }
            Outcome::Measured(metrics)
        }
        "refused" => Outcome::Refused(fields.collect::<Vec<_>>().join(" ")),
        _ => return None,
    };
    Some((phase, outcome))
}

// ---------------------------------------------------------------------------
// Records, as the parent keeps them.

/// The refusal of a phase that was not run because an earlier one was refused.
pub const NOT_REACHED: &str = "not run: an earlier phase was refused";

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Measured(Vec<(String, Value)>),
    /// The system could not do it: the error it gave, or how its process died.
    Refused(String),
    /// Not run, because the system was refused at a smaller size.
    Skipped(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub bench: Bench,
    pub system: System,
    /// The size: the number of tasks for Prog 1 and Prog 2, the bytes of the
    /// live frame for switch (JSON key `live_bytes`); counts of the other
    /// benches are among their metrics.
    pub n: Option<u64>,
    pub phase: Option<String>,
    pub outcome: Outcome,
}

impl Record {
    pub fn metric(&self, key: &str) -> Option<Value> {
        match &self.outcome {
            Outcome::Measured(m) => m.iter().find(|(k, _)| k == key).map(|&(_, v)| v),
            _ => None,
        }
    }

    /// One JSON object, on one line.
    pub fn json(&self) -> String {
        // A parked image is a `switch` record that says where it parked.
        let (bench, parked) = match self.bench {
            Bench::SwitchParked(p) => (Bench::Switch, Some(p)),
            b => (b, None),
        };
        let mut s = format!(
            "{{\"bench\":{},\"system\":{}",
            json_str(bench.name()),
            json_str(self.system.name())
        );
        if let Some(p) = parked {
            let _ = write!(s, ",\"parked_in\":{}", json_str(p.name()));
        }
        if let Some(n) = self.n {
            let _ = write!(s, ",{}:{n}", json_str(self.bench.size_key()));
        }
        if let Some(p) = &self.phase {
            let _ = write!(s, ",\"phase\":{}", json_str(p));
        }
        match &self.outcome {
            Outcome::Measured(m) => {
                for (k, v) in m {
                    let _ = write!(s, ",{}:{}", json_str(k), v.json());
                }
            }
            Outcome::Refused(why) => {
                let _ = write!(s, ",\"refused\":{}", json_str(why));
            }
            Outcome::Skipped(why) => {
                let _ = write!(s, ",\"skipped\":{}", json_str(why));
            }
        }
        s.push('}');
        s
    }
}

/// A JSON string literal, escaped as RFC 8259 requires.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn machine_json(m: &Machine) -> String {
    let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    format!(
        "{{\"bench\":\"machine\",\"nproc\":{},\"kernel\":{},\"cpu\":{},\"mem_total_bytes\":{},\"max_map_count\":{},\"threads_max\":{}}}",
        m.nproc,
        json_str(&m.kernel),
        json_str(&m.cpu),
        m.mem_total_bytes,
        opt(m.max_map_count),
        opt(m.threads_max)
    )
}

// ---------------------------------------------------------------------------
// Human output.

pub fn machine_text(m: &Machine) -> String {
    let opt = |v: Option<u64>| v.map_or("?".to_string(), group);
    format!(
        "machine: {} CPUs ({}), {:.1} GiB, Linux {}, vm.max_map_count {}, kernel.threads-max {}",
        m.nproc,
        m.cpu,
        m.mem_total_bytes as f64 / (1u64 << 30) as f64,
        m.kernel,
        opt(m.max_map_count),
        opt(m.threads_max)
    )
}

/// 1234567 → "1,234,567".
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn group_signed(x: f64) -> String {
    let r = x.round();
    if r < 0.0 {
        format!("-{}", group((-r) as u64))
    } else {
        group(r as u64)
    }
}

/// Sizes as the talk writes them: 100, 1K, 10K, 100K, 1M.
pub fn size_label(n: u64) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n % 1000 == 0 {
        format!("{}K", n / 1000)
    } else {
        group(n)
    }
}

/// Wall times as the talk writes them: "207 ms", "2.55 s".
fn secs_label(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// Short times to three significant digits or so: "412 µs", "41.2 ms",
/// "4.12 s".
fn fine_secs_label(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn mib_label(bytes: f64) -> String {
    let mib = bytes / (1u64 << 20) as f64;
    if mib.abs() < 1.0 {
        format!("{} KiB", group_signed(bytes / 1024.0))
    } else if mib.abs() < 10.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{} MiB", group_signed(mib))
    }
}

fn ns_label(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// A caption, and what `greenhub-compact` is when it is among `systems`.
fn caption(text: &str, systems: &[System]) -> String {
    if systems.contains(&System::GreenhubCompact) {
        format!("{text}\n{COMPACT_NOTE}")
    } else {
        text.to_string()
    }
}

/// Numbered notes under a table, for refusals and skipped sizes.
#[derive(Default)]
struct Notes {
    notes: Vec<String>,
    by_text: BTreeMap<String, usize>,
}

impl Notes {
    fn mark(&mut self, text: String) -> String {
        let len = self.notes.len();
        let idx = *self.by_text.entry(text.clone()).or_insert_with(|| len + 1);
        if idx == len + 1 {
            self.notes.push(text);
        }
        format!("[{idx}]")
    }
}

/// Looks records up by what identifies them.
struct Index<'a> {
    records: &'a [Record],
}

impl<'a> Index<'a> {
    fn get(
        &self,
        bench: Bench,
        system: System,
        n: Option<u64>,
        phase: Option<&str>,
    ) -> Option<&'a Record> {
        self.records.iter().find(|r| {
            r.bench == bench && r.system == system && r.n == n && r.phase.as_deref() == phase
        })
    }
}

/// A cell for a record: its formatted metric, or a marked refusal.
fn cell(
    rec: Option<&Record>,
    notes: &mut Notes,
    format: impl Fn(&Record) -> Option<String>,
) -> String {
    let Some(rec) = rec else {
        return String::new();
    };
    match &rec.outcome {
        Outcome::Measured(_) => format(rec).unwrap_or_else(|| "?".into()),
        Outcome::Refused(why) if why == NOT_REACHED => "—".into(),
        Outcome::Refused(why) => {
            let at = match (rec.bench, rec.n) {
                (Bench::Switch, Some(n)) => format!(" with {} B live", group(n)),
                (Bench::SwitchParked(p), _) => format!(" parked in {}", p.label()),
                (_, Some(n)) => format!(" at N={}", group(n)),
                (_, None) => String::new(),
            };
            let mark = notes.mark(format!("{} refused{at}: {why}", rec.system.name()));
            format!("refused {mark}")
        }
        Outcome::Skipped(_) => "—".into(),
    }
}

/// Renders rows as an aligned text table: first column left-aligned, others
/// right-aligned.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
            .chain(std::iter::once(header[i].chars().count()))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..cols).map(width).collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, w) in widths.iter().enumerate() {
            let c = cells.get(i).map_or("", |c| c.as_str());
            let pad = w - c.chars().count();
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(" | ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header);
    out.push('\n');
    let total: usize = widths.iter().sum::<usize>() + 3 * (cols - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

fn finish(title: &str, mut body: String, notes: Notes, skipped: &[String]) -> String {
    for (i, n) in notes.notes.iter().enumerate() {
        let _ = writeln!(body, "[{}] {n}", i + 1);
    }
    for s in skipped {
        let _ = writeln!(body, "—  {s}");
    }
    format!("{title}\n\n{body}")
}

/// One line per system (of `systems`) that was skipped at some size, saying
/// why.
fn skipped_lines(records: &[Record], bench: Bench, systems: &[System]) -> Vec<String> {
    let mut lines = Vec::new();
    for &system in systems {
        let skipped: Vec<&Record> = records
            .iter()
            .filter(|r| r.bench == bench && r.system == system)
            .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
            .collect();
        if let Some(first) = skipped.first() {
            if let Outcome::Skipped(why) = &first.outcome {
                let from = first
                    .n
                    .map_or(String::new(), |n| format!(" N ≥ {}", group(n)));
                lines.push(format!("{}:{from} not run ({why})", system.name()));
            }
        }
    }
    lines
}

/// What `greenhub-compact` is, under the tables that show it.
const COMPACT_NOTE: &str =
    "greenhub-compact (compact): greenhub with compact stacks; green threads take turns on\n\
     8 shared execution stacks of 256 KiB, and a suspended one keeps the stack bytes it used\n\
     on the heap";

/// Prog 1, what every table of it shows.
const PROG1_INTRO: &str =
    "Prog 1: N tasks each sleep 200 ms; wall time from the first spawn until all are joined\n\
     (cold: first round in a fresh process; warm: a second round right after in the same\n\
     runtime/hub, its stack pool sized to keep N stacks warm)\n\
     The talk (2013, Python), N = 100 / 1K / 10K / 100K:\n  \
     threads 207 ms / 327 ms / 2.55 s / 25.42 s; gevent 204 ms / 223 ms / 421 ms / 3.06 s";

/// Prog 1: the other runtimes in one table (rows N, a column per system and
/// phase); greenhub's two stack modes in another (a row per N and mode, with
/// their minor faults); then, when greenhub is among the systems, the
/// page-fault floor.
pub fn prog1_table(records: &[Record], systems: &[System], sizes: &[u64]) -> String {
    let (greens, others): (Vec<System>, Vec<System>) =
        systems.iter().partition(|s| System::GREENHUB.contains(s));
    let mut parts = Vec::new();
    if !others.is_empty() {
        parts.push(prog1_runtimes_table(records, &others, sizes));
    }
    if !greens.is_empty() {
        parts.push(prog1_greenhub_table(
            records,
            &greens,
            sizes,
            others.is_empty(),
        ));
    }
    if systems.contains(&System::Greenhub) {
        parts.push(prog1_floor_table(
            records,
            sizes,
            systems.contains(&System::GreenhubCompact),
        ));
    }
    parts.join("\n")
}

/// Prog 1's page-fault floor beside greenhub's cold round (and, with
/// `compact`, greenhub-compact's): rows N.
fn prog1_floor_table(records: &[Record], sizes: &[u64], compact: bool) -> String {
    let idx = Index { records };
    let mut notes = Notes::default();
    let mut header: Vec<String> = [
        "N",
        "page-fault floor",
        "floor minflt",
        "greenhub cold",
        "gh cold / floor",
    ]
    .map(String::from)
    .to_vec();
    if compact {
        header.push("compact cold".into());
        header.push("compact cold / floor".into());
    }
    let wall = |r: Option<&Record>| r.and_then(|r| r.metric("wall_s")).map(Value::as_f64);
    let ratio = |x: Option<f64>, floor: Option<f64>| match (x, floor) {
        (Some(x), Some(f)) if f > 0.0 => format!("{:.2}", x / f),
        _ => "—".into(),
    };
    let mut rows = Vec::new();
    for &n in sizes {
        let floor = idx.get(Bench::Prog1, System::Floor, Some(n), Some("cold"));
        let floor_cell = cell(floor, &mut notes, |r| {
            r.metric("wall_s").map(|v| fine_secs_label(v.as_f64()))
        });
        let floor_faults = floor
            .and_then(|r| r.metric("minflt"))
            .map(|v| group(v.as_f64() as u64))
            .unwrap_or_else(|| "—".into());
        let mut row = vec![size_label(n), floor_cell, floor_faults];
        let mut systems = vec![System::Greenhub];
        if compact {
            systems.push(System::GreenhubCompact);
        }
        for s in systems {
            let cold = wall(idx.get(Bench::Prog1, s, Some(n), Some("cold")));
            // A refusal is told in the table above.
            row.push(cold.map_or_else(|| "—".into(), secs_label));
            row.push(ratio(cold, wall(floor)));
        }
        rows.push(row);
    }
    let mut title = String::from(
        "Prog 1's page-fault floor: the time to first-touch one 4 KiB page in each of N fresh\n\
         36 KiB stack slots: what N new dedicated stacks cost the kernel at the least (32 KiB\n\
         stack + 4 KiB guard, greenhub's default slot; one byte written near the top of each,\n\
         in a fresh process; floor minflt: its minor page faults). gh cold / floor: greenhub's\n\
         cold round over the floor (the target at 1M: at most 1.20). Greenhub's round includes\n\
         the 200 ms sleep, so at small N the ratio says nothing; at 1M faults dominate.",
    );
    if compact {
        title.push_str(
            "\ncompact cold / floor: the same for greenhub-compact, whose parked green threads\n\
             keep their stack bytes on the heap instead of a fresh stack page each.",
        );
    }
    finish(
        &title,
        table(&header, &rows),
        notes,
        &skipped_lines(records, Bench::Prog1, &[System::Floor]),
    )
}

/// Prog 1 on threads and tokio: rows N, a column per system and phase.
fn prog1_runtimes_table(records: &[Record], systems: &[System], sizes: &[u64]) -> String {
    let idx = Index { records };
    let mut notes = Notes::default();
    let mut header = vec!["N".to_string()];
    let mut cols: Vec<(System, Option<&str>)> = Vec::new();
    for &s in systems {
        match s {
            System::Threads => cols.push((s, None)),
            _ => {
                cols.push((s, Some("cold")));
                cols.push((s, Some("warm")));
            }
        }
    }
    for (s, phase) in &cols {
        header.push(match phase {
            Some(p) => format!("{} {p}", s.name()),
            None => s.name().to_string(),
        });
    }
    let mut rows = Vec::new();
    for &n in sizes {
        let mut row = vec![size_label(n)];
        for &(s, phase) in &cols {
            let rec = idx.get(Bench::Prog1, s, Some(n), phase);
            row.push(cell(rec, &mut notes, |r| {
                r.metric("wall_s").map(|v| secs_label(v.as_f64()))
            }));
        }
        rows.push(row);
    }
    finish(
        PROG1_INTRO,
        table(&header, &rows),
        notes,
        &skipped_lines(records, Bench::Prog1, systems),
    )
}

/// Prog 1 on greenhub's stack modes (`systems`): a row per N and mode, the
/// wall time and minor faults of each round. `first`: no table of Prog 1
/// came before, so this one says what Prog 1 is.
fn prog1_greenhub_table(
    records: &[Record],
    systems: &[System],
    sizes: &[u64],
    first: bool,
) -> String {
    let idx = Index { records };
    let mut notes = Notes::default();
    let header: Vec<String> = ["N", "system", "cold", "warm", "minflt cold", "minflt warm"]
        .map(String::from)
        .to_vec();
    let mut rows = Vec::new();
    for &n in sizes {
        for &s in systems {
            let mut row = vec![size_label(n), s.name().to_string()];
            let recs = crate::PHASES.map(|p| idx.get(Bench::Prog1, s, Some(n), Some(p)));
            for rec in recs {
                row.push(cell(rec, &mut notes, |r| {
                    r.metric("wall_s").map(|v| secs_label(v.as_f64()))
                }));
            }
            for rec in recs {
                // A refusal is already told in the wall-time column.
                row.push(match rec.map(|r| &r.outcome) {
                    Some(Outcome::Measured(_)) => rec
                        .and_then(|r| r.metric("minflt"))
                        .map(|v| group(v.as_f64() as u64))
                        .unwrap_or_default(),
                    Some(_) => "—".into(),
                    None => String::new(),
                });
            }
            rows.push(row);
        }
    }
    let mut title = String::new();
    if first {
        title.push_str(PROG1_INTRO);
        title.push('\n');
    }
    title.push_str(
        "Prog 1 on greenhub, by stack mode: wall time of each round, and the minor page faults\n\
         during it (minflt)",
    );
    if systems.contains(&System::GreenhubCompact) {
        title.push('\n');
        title.push_str(COMPACT_NOTE);
    }
    finish(
        &title,
        table(&header, &rows),
        notes,
        &skipped_lines(records, Bench::Prog1, systems),
    )
}

/// Prog 2: rows N; bytes of RSS per parked task and the total, per system.
pub fn prog2_table(records: &[Record], systems: &[System], sizes: &[u64]) -> String {
    let idx = Index { records };
    let mut notes = Notes::default();
    let mut header = vec!["N".to_string()];
    for &s in systems {
        // Narrower: the caption says what compact is.
        let name = match s {
            System::GreenhubCompact => "compact",
            _ => s.name(),
        };
        header.push(format!("{name} B/task"));
        header.push(format!("{name} total"));
    }
    let mut rows = Vec::new();
    for &n in sizes {
        let mut row = vec![size_label(n)];
        for &s in systems {
            let rec = idx.get(Bench::Prog2, s, Some(n), None);
            row.push(cell(rec, &mut notes, |r| {
                r.metric("rss_bytes_per_task")
                    .map(|v| group_signed(v.as_f64()))
            }));
            row.push(match rec.map(|r| &r.outcome) {
                Some(Outcome::Measured(_)) => rec
                    .and_then(|r| r.metric("rss_total_bytes"))
                    .map(|v| mib_label(v.as_f64()))
                    .unwrap_or_default(),
                Some(_) => "—".into(),
                None => String::new(),
            });
        }
        rows.push(row);
    }
    let body = table(&header, &rows);
    finish(
        &caption(
            "Prog 2: N tasks parked, each sleeping an hour; resident memory per task = (RSS with\n\
             all N parked − RSS before spawning) / N, each in a fresh process\n\
             The talk (2013, Python, whole process), N = 100 / 1K / 10K / 100K:\n  \
             threads 4.9 GB / 11.8 GB / 82 GB / ?; gevent 33 MB / 41 MB / 114 MB / 858 MB",
            systems,
        ),
        body,
        notes,
        &skipped_lines(records, Bench::Prog2, &System::ALL),
    )
}

/// Ping-pong: one row per system.
pub fn pingpong_table(records: &[Record], systems: &[System]) -> String {
    let idx = Index { records };
    let mut notes = Notes::default();
    let header: Vec<String> = ["system", "round trips", "per round trip"]
        .map(String::from)
        .to_vec();
    let mut rows = Vec::new();
    for &s in systems {
        let rec = idx.get(Bench::PingPong, s, None, None);
        let trips = rec
            .and_then(|r| r.metric("round_trips"))
            .map(|v| group(v.as_f64() as u64))
            .unwrap_or_default();
        let per = cell(rec, &mut notes, |r| {
            r.metric("ns_per_round_trip").map(|v| ns_label(v.as_f64()))
        });
        rows.push(vec![s.name().to_string(), trips, per]);
    }
    finish(
        &caption("Ping-pong: two tasks hand a token back and forth", systems),
        table(&header, &rows),
        notes,
        &[],
    )
}

/// The `queue` command: ping-pong through queues and producer/consumer
/// throughput, one row per system.
pub fn queue_table(records: &[Record], systems: &[System]) -> String {
    let idx = Index { records };
    let mut notes = Notes::default();
    let header: Vec<String> = [
        "system",
        "queue",
        "ping-pong per round trip",
        "1P/4C items per second",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for &s in systems {
        let queue = match s {
            System::Greenhub => "sync::Queue",
            System::Tokio => "mpsc (current thread)",
            System::Threads => "crossbeam-channel",
            System::GreenhubCompact | System::Floor => "-",
        };
        let rec = idx.get(Bench::QueuePingPong, s, None, None);
        let per_trip = cell(rec, &mut notes, |r| {
            r.metric("ns_per_round_trip").map(|v| ns_label(v.as_f64()))
        });
        let rec = idx.get(Bench::QueueThroughput, s, None, None);
        let per_sec = cell(rec, &mut notes, |r| {
            r.metric("per_sec").map(|v| group(v.as_f64() as u64))
        });
        rows.push(vec![
            s.name().to_string(),
            queue.to_string(),
            per_trip,
            per_sec,
        ]);
    }
    finish(
        "Queues: ping-pong between two tasks through two queues; one producer \
         and four consumers moving items through a bounded queue",
        table(&header, &rows),
        notes,
        &[],
    )
}

/// Switch: rows the live frame's size; greenhub-compact's round trip (every
/// switch copying) beside greenhub's (dedicated stacks, no copying).
pub fn switch_table(records: &[Record], systems: &[System], sizes: &[u64]) -> String {
    let title = "Switch: two green threads hand the CPU back and forth with yield_now, each holding a\n\
                 live frame of the given size; time per round trip (two switches), median of 5 runs.\n\
                 greenhub-compact: both on ONE shared execution stack (compact_stacks(1, 64 KiB)), so\n\
                 every switch copies one's used stack bytes (its image) to the heap and the other's\n\
                 back; image: the stack bytes an evicted one used (its frames and the switch's\n\
                 own); kept: what it keeps on the heap (a parked one shares its top bytes with\n\
                 its kind; a runnable one, as here, keeps all of its image).\n\
                 greenhub: dedicated stacks, nothing copied (the baseline); copying: the difference.\n\
                 memcpy floor: the four copies of the image a round trip makes, timed alone (memcpy,\n\
                 all in cache): the least the copying can cost on this machine.\n\
                 switch floor: two bare corosensei coroutines (no hub) resumed in turn, each\n\
                 suspending inside a function it calls, as yield_now does: the least two switches\n\
                 cost here. A compact round trip costs at least the sum of the two floors.";
    let compact = systems.contains(&System::GreenhubCompact);
    let dedicated = systems.contains(&System::Greenhub);
    if !compact && !dedicated {
        return format!("{title}\n\n(not run: it measures greenhub-compact and greenhub only)\n");
    }
    let idx = Index { records };
    let mut notes = Notes::default();
    let mut header = vec!["live frame".to_string()];
    if compact {
        header.push("greenhub-compact".into());
        header.push("image".into());
        header.push("kept".into());
    }
    if dedicated {
        header.push("greenhub".into());
    }
    if compact && dedicated {
        header.push("copying".into());
    }
    if compact {
        header.push("memcpy floor".into());
        header.push("switch floor".into());
    }
    let per_trip = |r: Option<&Record>| r.and_then(|r| r.metric("ns_per_round_trip"));
    let mut rows = Vec::new();
    for &live in sizes {
        let mut row = vec![format!("{} B", group(live))];
        let c = idx.get(Bench::Switch, System::GreenhubCompact, Some(live), None);
        let d = idx.get(Bench::Switch, System::Greenhub, Some(live), None);
        if compact {
            row.push(cell(c, &mut notes, |r| {
                r.metric("ns_per_round_trip").map(|v| ns_label(v.as_f64()))
            }));
            for metric in ["image_bytes", "kept_bytes"] {
                row.push(
                    c.and_then(|r| r.metric(metric))
                        .map_or_else(|| "—".into(), |v| format!("{} B", group(v.as_f64() as u64))),
                );
            }
        }
        if dedicated {
            row.push(cell(d, &mut notes, |r| {
                r.metric("ns_per_round_trip").map(|v| ns_label(v.as_f64()))
            }));
        }
        if compact && dedicated {
            row.push(match (per_trip(c), per_trip(d)) {
                (Some(c), Some(d)) => ns_label(c.as_f64() - d.as_f64()),
                _ => "—".into(),
            });
        }
        if compact {
            for metric in ["copy_floor_ns", "switch_floor_ns"] {
                row.push(
                    c.and_then(|r| r.metric(metric))
                        .map_or_else(|| "—".into(), |v| ns_label(v.as_f64())),
                );
            }
        }
        rows.push(row);
    }
    let mut body = table(&header, &rows);
    if compact {
        let header: Vec<String> = ["parked in", "image", "kept"].map(String::from).to_vec();
        let rows: Vec<Vec<String>> = Parked::ALL
            .into_iter()
            .map(|p| {
                let rec = idx.get(Bench::SwitchParked(p), System::GreenhubCompact, None, None);
                let bytes = |metric: &str| {
                    rec.and_then(|r| r.metric(metric))
                        .map_or_else(|| "—".into(), |v| format!("{} B", group(v.as_f64() as u64)))
                };
                vec![
                    p.label().to_string(),
                    cell(rec, &mut notes, |r| {
                        r.metric("image_bytes")
                            .map(|v| format!("{} B", group(v.as_f64() as u64)))
                    }),
                    bytes("kept_bytes"),
                ]
            })
            .collect();
        let _ = write!(
            body,
            "\nParked image (compact): the stack bytes a green thread used when it parked (image)\n\
             and keeps on the heap (kept: the image but for the top bytes it shares with its\n\
             kind; alone of its kind here, it shares them with its own earlier self); it parks\n\
             (doing nothing else) on compact_stacks(1, 64 KiB), and is evicted when a second\n\
             green thread takes the execution stack.\n\n{}",
            table(&header, &rows)
        );
    }
    finish(title, body, notes, &[])
}

/// The `echo` command: round trips per second and p99 latency, a row per
/// connection count and a column pair per system; then RSS per idle
/// connection, a row per system.
pub fn echo_table(records: &[Record], systems: &[System], sizes: &[u64], idle: u64) -> String {
    let idx = Index { records };
    let mut notes = Notes::default();
    let mut header = vec!["connections".to_string()];
    for s in systems {
        header.push(format!("{} rt/s", s.name()));
        header.push("p99".into());
    }
    let mut rows = Vec::new();
    for &c in sizes {
        let mut row = vec![group(c)];
        for &s in systems {
            let rec = idx.get(Bench::Echo, s, Some(c), None);
            row.push(cell(rec, &mut notes, |r| {
                r.metric("round_trips_per_sec")
                    .map(|v| group(v.as_f64() as u64))
            }));
            row.push(
                rec.and_then(|r| r.metric("p99_us"))
                    .map_or_else(String::new, |v| fine_secs_label(v.as_f64() / 1e6)),
            );
        }
        rows.push(row);
    }
    let mut body = table(&header, &rows);
    let idle_header: Vec<String> = ["system", "RSS per idle connection"]
        .map(String::from)
        .to_vec();
    let idle_rows: Vec<Vec<String>> = systems
        .iter()
        .map(|&s| {
            let rec = idx.get(Bench::EchoIdle, s, Some(idle), None);
            vec![
                s.name().to_string(),
                cell(rec, &mut notes, |r| {
                    r.metric("rss_bytes_per_conn")
                        .map(|v| format!("{} B", group(v.as_f64().max(0.0) as u64)))
                }),
            ]
        })
        .collect();
    let _ = write!(
        body,
        "\nWith {} idle connections (each made one round trip; the server's RSS growth / connections):\n\n{}",
        group(idle),
        table(&idle_header, &idle_rows)
    );
    finish(
        &caption(
            "Echo: C connections each doing 64-byte round trips for 2 s (load: 2 OS threads of std\n\
             blocking sockets, each writing a request on all its connections, then reading every\n\
             reply); round trips per second and 99th-percentile latency. The server process is\n\
             pinned to the last CPU, the load to the others (one core per server, threads too)",
            systems,
        ),
        body,
        notes,
        &[],
    )
}

/// Spawn + join of trivial tasks: one row per system and phase.
pub fn spawn_table(records: &[Record], systems: &[System]) -> String {
    let mut notes = Notes::default();
    let header: Vec<String> = ["system", "phase", "tasks", "per second"]
        .map(String::from)
        .to_vec();
    let mut rows = Vec::new();
    for &s in systems {
        for rec in records
            .iter()
            .filter(|r| r.bench == Bench::Spawn && r.system == s)
        {
            let tasks = rec
                .metric("tasks")
                .map(|v| group(v.as_f64() as u64))
                .unwrap_or_default();
            let per = cell(Some(rec), &mut notes, |r| {
                r.metric("per_sec").map(|v| group(v.as_f64() as u64))
            });
            rows.push(vec![
                s.name().to_string(),
                rec.phase.clone().unwrap_or_else(|| "-".into()),
                tasks,
                per,
            ]);
        }
    }
    finish(
        &caption(
            "Spawn: spawn and join trivial tasks (in batches of 1,000)",
            systems,
        ),
        table(&header, &rows),
        notes,
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }

    #[test]
    fn wire_round_trip() {
        let line = format!(
            "{WIRE_TAG}\tcold\tok\twall_s={:?}\tminflt=12",
            Value::float(0.41234567, 4).as_f64()
        );
        let (phase, outcome) = parse_wire(&line).unwrap();
        assert_eq!(phase.as_deref(), Some("cold"));
        assert_eq!(
            outcome,
            Outcome::Measured(vec![
                ("wall_s".into(), Value::Float(0.4123)),
                ("minflt".into(), Value::Int(12)),
            ])
        );
        let (phase, outcome) = parse_wire(&format!("{WIRE_TAG}\t-\trefused\tno more")).unwrap();
        assert_eq!(phase, None);
        assert_eq!(outcome, Outcome::Refused("no more".into()));
        assert!(parse_wire("some other output").is_none());
    }

    #[test]
    fn record_json() {
        let r = Record {
            bench: Bench::Prog1,
            system: System::Greenhub,
            n: Some(1_000_000),
            phase: Some("cold".into()),
            outcome: Outcome::Measured(vec![
                ("wall_s".into(), Value::Float(0.41)),
                ("minflt".into(), Value::Int(1_000_123)),
            ]),
        };
        assert_eq!(
            r.json(),
            r#"{"bench":"prog1","system":"greenhub","n":1000000,"phase":"cold","wall_s":0.41,"minflt":1000123}"#
        );
        let r = Record {
            outcome: Outcome::Refused("EAGAIN \"x\"".into()),
            phase: None,
            ..r
        };
        assert_eq!(
            r.json(),
            r#"{"bench":"prog1","system":"greenhub","n":1000000,"refused":"EAGAIN \"x\""}"#
        );
    }

    #[test]
    fn prog1_floor_table() {
        let rec = |system, phase: &str, wall: f64, minflt: i64| Record {
            bench: Bench::Prog1,
            system,
            n: Some(1_000_000),
            phase: Some(phase.into()),
            outcome: Outcome::Measured(vec![
                ("wall_s".into(), Value::Float(wall)),
                ("minflt".into(), Value::Int(minflt)),
            ]),
        };
        let records = vec![
            rec(System::Greenhub, "cold", 4.7, 1_000_500),
            rec(System::Greenhub, "warm", 0.9, 30),
            rec(System::Floor, "cold", 3.9163, 1_000_012),
            rec(System::GreenhubCompact, "cold", 1.9581, 250_000),
            rec(System::GreenhubCompact, "warm", 0.8, 40),
        ];
        let text = prog1_table(&records, &System::ALL, &[1_000_000]);
        assert!(text.contains("page-fault floor"), "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with("1M"))
            .map(|l| l.split('|').map(str::trim).collect())
            .collect();
        // The runtimes' table (threads and tokio not measured here), then
        // greenhub's modes, a row each, then the floor.
        assert_eq!(rows.len(), 4, "{text}");
        assert_eq!(
            rows[1],
            ["1M", "greenhub", "4.70 s", "900 ms", "1,000,500", "30"]
        );
        assert_eq!(
            rows[2],
            [
                "1M",
                "greenhub-compact",
                "1.96 s",
                "800 ms",
                "250,000",
                "40"
            ]
        );
        assert_eq!(
            rows[3],
            [
                "1M",
                "3.92 s",
                "1,000,012",
                "4.70 s",
                "1.20",
                "1.96 s",
                "0.50"
            ]
        );
        // Without greenhub-compact, the floor table has no column for it.
        let text = prog1_table(&records, &[System::Greenhub], &[1_000_000]);
        let row = text.lines().rev().find(|l| l.starts_with("1M")).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells, ["1M", "3.92 s", "1,000,012", "4.70 s", "1.20"]);
        // No greenhub, no floor.
        let text = prog1_table(&records, &[System::Tokio], &[1_000_000]);
        assert!(!text.contains("page-fault floor"), "{text}");
        // greenhub-compact alone: its table says what Prog 1 is; no floor.
        let text = prog1_table(&records, &[System::GreenhubCompact], &[1_000_000]);
        assert!(text.starts_with("Prog 1: N tasks"), "{text}");
        assert!(!text.contains("page-fault floor"), "{text}");
    }

    #[test]
    fn switch_records() {
        let rec = |system, live: u64, ns: f64| Record {
            bench: Bench::Switch,
            system,
            n: Some(live),
            phase: None,
            outcome: Outcome::Measured(vec![
                ("ns_per_round_trip".into(), Value::Float(ns)),
                ("round_trips".into(), Value::Int(200_000)),
            ]),
        };
        let r = rec(System::GreenhubCompact, 1024, 180.5);
        assert_eq!(
            r.json(),
            r#"{"bench":"switch","system":"greenhub-compact","live_bytes":1024,"ns_per_round_trip":180.5,"round_trips":200000}"#
        );
        let records = vec![r, rec(System::Greenhub, 1024, 70.0)];
        let text = switch_table(&records, &System::GREENHUB, &[1024]);
        let row = text.lines().find(|l| l.starts_with("1,024 B")).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(
            cells,
            ["1,024 B", "180.5 ns", "—", "—", "70.0 ns", "110.5 ns", "—", "—"]
        );
        // A compact record with its image and floors fills those cells.
        let mut full = rec(System::GreenhubCompact, 1024, 180.5);
        if let Outcome::Measured(metrics) = &mut full.outcome {
            metrics.push(("image_bytes".into(), Value::Int(1296)));
            metrics.push(("kept_bytes".into(), Value::Int(1296)));
            metrics.push(("copy_floor_ns".into(), Value::Float(64.9)));
            metrics.push(("switch_floor_ns".into(), Value::Float(36.2)));
        }
        let text = switch_table(&[full], &[System::GreenhubCompact], &[1024]);
        let row = text.lines().find(|l| l.starts_with("1,024 B")).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(
            cells,
            ["1,024 B", "180.5 ns", "1,296 B", "1,296 B", "64.9 ns", "36.2 ns"]
        );
    }

    #[test]
    fn switch_parked_records() {
        let parked = |p, outcome| Record {
            bench: Bench::SwitchParked(p),
            system: System::GreenhubCompact,
            n: None,
            phase: None,
            outcome,
        };
        let sleep = parked(
            Parked::Sleep,
            Outcome::Measured(vec![
                ("image_bytes".into(), Value::Int(290)),
                ("kept_bytes".into(), Value::Int(34)),
                ("evicted".into(), Value::Int(1)),
            ]),
        );
        assert_eq!(
            sleep.json(),
            r#"{"bench":"switch","system":"greenhub-compact","parked_in":"sleep","image_bytes":290,"kept_bytes":34,"evicted":1}"#
        );
        let wait = parked(
            Parked::EventWait,
            Outcome::Measured(vec![("image_bytes".into(), Value::Int(1530))]),
        );
        assert_eq!(
            wait.json(),
            r#"{"bench":"switch","system":"greenhub-compact","parked_in":"event_wait","image_bytes":1530}"#
        );
        let cells = |text: &str, first: &str| -> Vec<String> {
            let row = text.lines().find(|l| l.starts_with(first)).unwrap();
            row.split('|').map(|c| c.trim().to_string()).collect()
        };
        let text = switch_table(&[sleep.clone(), wait], &System::GREENHUB, &[64]);
        assert!(text.contains("Parked image (compact)"), "{text}");
        assert_eq!(cells(&text, "sleep"), ["sleep", "290 B", "34 B"]);
        assert_eq!(cells(&text, "Event::wait"), ["Event::wait", "1,530 B", "—"]);
        // A refusal is a note, under both tables.
        let refused = parked(Parked::EventWait, Outcome::Refused("no image".into()));
        let text = switch_table(&[sleep, refused], &[System::GreenhubCompact], &[64]);
        assert_eq!(
            cells(&text, "Event::wait"),
            ["Event::wait", "refused [1]", "—"]
        );
        assert!(
            text.ends_with("[1] greenhub-compact refused parked in Event::wait: no image\n"),
            "{text}"
        );
        // Without greenhub-compact, no parked image.
        let text = switch_table(&[], &[System::Greenhub], &[64]);
        assert!(!text.contains("Parked image"), "{text}");
        // The child's names, which are not commands.
        for b in Bench::PARKED {
            assert_eq!(Bench::parse_any(b.name()), Some(b));
            assert_eq!(Bench::parse(b.name()), None);
        }
        assert_eq!(Bench::parse_any("switch"), Some(Bench::Switch));
    }

    #[test]
    fn echo_records() {
        let rec = |bench, system, c: u64, metrics: Vec<(&str, Value)>| Record {
            bench,
            system,
            n: Some(c),
            phase: None,
            outcome: Outcome::Measured(metrics.into_iter().map(|(k, v)| (k.into(), v)).collect()),
        };
        let r = rec(
            Bench::Echo,
            System::Greenhub,
            100,
            vec![
                ("round_trips_per_sec", Value::Float(150000.0)),
                ("p99_us", Value::Float(871.5)),
            ],
        );
        assert_eq!(
            r.json(),
            r#"{"bench":"echo","system":"greenhub","connections":100,"round_trips_per_sec":150000,"p99_us":871.5}"#
        );
        let idle = rec(
            Bench::EchoIdle,
            System::Greenhub,
            10_000,
            vec![("rss_bytes_per_conn", Value::Float(4868.2))],
        );
        assert_eq!(
            idle.json(),
            r#"{"bench":"echo_idle","system":"greenhub","connections":10000,"rss_bytes_per_conn":4868.2}"#
        );
        let text = echo_table(&[r, idle], &[System::Greenhub], &[100], 10_000);
        let row = text.lines().find(|l| l.starts_with("100 ")).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells, ["100", "150,000", "872 µs"]);
        assert!(text.contains("4,868 B"), "{text}");
        assert_eq!(Bench::parse("echo_idle"), Some(Bench::EchoIdle));
    }

    #[test]
    fn labels() {
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(group(999), "999");
        assert_eq!(size_label(100_000), "100K");
        assert_eq!(size_label(1_000_000), "1M");
        assert_eq!(secs_label(0.2071), "207 ms");
        assert_eq!(secs_label(2.554), "2.55 s");
        assert_eq!(fine_secs_label(0.000412), "412 µs");
        assert_eq!(fine_secs_label(0.04123), "41.2 ms");
        assert_eq!(fine_secs_label(4.123), "4.12 s");
        assert_eq!(Value::float(f64::NAN, 1).json(), "null");
    }
}
