//! This process's memory and page-fault counters, and a description of the
//! machine, read from `/proc`.
//!
//! Prog 2 measures memory per parked task as a difference of resident set
//! sizes (RSS), so it needs the RSS of the measuring process at two moments.
//! Prog 1 reports the minor page faults of each phase for greenhub: a fault is
//! a page of memory touched for the first time (a fresh page of stack, of
//! heap, of a pooled stack the kernel had taken back), so the count shows how
//! much memory a phase had to obtain from the kernel, and a warm phase that
//! reuses pooled stacks should show far fewer.
//!
//! Everything here parses text (or, for the page size, the auxiliary vector)
//! from `/proc/self`, so the bench needs neither `libc` nor `unsafe`.

use std::fs;
use std::io;
use std::sync::OnceLock;

/// `AT_PAGESZ` in the auxiliary vector (see getauxval(3)).
const AT_PAGESZ: u64 = 6;

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The page size, from `/proc/self/auxv` (the value the kernel handed this
/// process at exec); 4096 if that cannot be read.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| auxv_value(AT_PAGESZ).unwrap_or(4096))
}

/// One entry of the auxiliary vector: pairs of native-endian `u64` (key, value)
/// on a 64-bit target, ending with key 0.
fn auxv_value(key: u64) -> Option<u64> {
    let bytes = fs::read("/proc/self/auxv").ok()?;
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |chunk: &[u8]| -> u64 {
        let mut buf = [0u8; WORD];
        buf.copy_from_slice(chunk);
        usize::from_ne_bytes(buf) as u64
    };
    bytes.chunks_exact(2 * WORD).find_map(|pair| {
        let k = word(&pair[..WORD]);
        (k == key).then(|| word(&pair[WORD..]))
    })
}

/// Resident set size of this process in bytes: the second field of
/// `/proc/self/statm` (resident pages) times the page size.
pub fn rss_bytes() -> io::Result<u64> {
    let statm = fs::read_to_string("/proc/self/statm")?;
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("cannot parse /proc/self/statm"))?;
    Ok(resident * page_size())
}

/// Minor page faults of this process so far (all its threads): field 10 of
/// `/proc/self/stat`. The command name (field 2) is in parentheses and may
/// hold spaces, so fields are counted from after its closing parenthesis,
/// where field 3 is the first.
pub fn minor_faults() -> io::Result<u64> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| invalid("cannot parse /proc/self/stat"))?;
    rest.split_whitespace()
        .nth(10 - 3)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("cannot parse minflt in /proc/self/stat"))
}

/// What the machine is, for the heading of a report.
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub mem_total_bytes: u64,
    /// `vm.max_map_count`: each thread stack (and each separately mapped
    /// green-thread stack) costs mappings, so this bounds how many exist.
    pub max_map_count: Option<u64>,
    pub threads_max: Option<u64>,
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

pub fn machine() -> Machine {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into());
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem_total_bytes = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    let number = |path| read_trimmed(path).and_then(|s| s.parse().ok());
    Machine {
        nproc,
        kernel,
        cpu,
        mem_total_bytes,
        max_map_count: number("/proc/sys/vm/max_map_count"),
        threads_max: number("/proc/sys/kernel/threads-max"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_readable_and_move() {
        let ps = page_size();
        assert!(ps >= 4096 && ps.is_power_of_two(), "page size {ps}");
        let rss0 = rss_bytes().unwrap();
        let f0 = minor_faults().unwrap();
        // Touch 16 MiB of fresh memory: RSS and minor faults both grow.
        let v = vec![1u8; 16 << 20];
        let rss1 = rss_bytes().unwrap();
        let f1 = minor_faults().unwrap();
        assert!(v.iter().map(|&b| b as u64).sum::<u64>() == 16 << 20);
        assert!(rss1 >= rss0 + (8 << 20), "rss {rss0} -> {rss1}");
        assert!(f1 > f0, "minflt {f0} -> {f1}");
    }

    #[test]
    fn machine_is_described() {
        let m = machine();
        assert!(m.nproc >= 1);
        assert!(m.mem_total_bytes > 0);
        assert_ne!(m.kernel, "?");
    }
}
