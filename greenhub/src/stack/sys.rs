//! Operating-system calls for stacks: reserve, guard, trim, release.
//!
//! Contract of this module (every platform must provide it):
//! - [`reserve`] maps `len` bytes of private, anonymous, read-write memory that
//!   is *not* committed up front (pages become resident on first touch);
//! - [`install_guards`] makes each given page-aligned range inaccessible, so a
//!   touch faults with SIGSEGV (or SIGBUS), and reports how many ranges (from
//!   the front) it guarded before failing;
//! - [`trim`] gives the pages of a range back to the kernel (they read as zero
//!   afterwards); [`release`] unmaps what [`reserve`] mapped;
//! - [`populate`] makes a range's pages resident ahead of use, where it can.
//!
//! Every function is safe to call: each takes ranges that the caller owns and
//! nothing else points into (that is the caller's invariant, stated on the
//! callers in `stack/mod.rs`).

use std::io;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// `madvise` advice that installs a guard region without splitting the mapping
/// (Linux 6.13). glibc 2.36 does not define it.
#[cfg(target_os = "linux")]
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// How guard pages are installed on this machine, found out on first use.
const GUARD_UNKNOWN: u8 = 0;
#[cfg(target_os = "linux")]
const GUARD_PROCESS_MADVISE: u8 = 1;
#[cfg(target_os = "linux")]
const GUARD_MADVISE: u8 = 2;
const GUARD_MPROTECT: u8 = 3;
static GUARD_METHOD: AtomicU8 = AtomicU8::new(GUARD_UNKNOWN);

/// Forces the `mprotect` fallback (one extra mapping per stack): lets tests
/// reach the kernel's mapping limit on any kernel. Set before the first hub.
pub(crate) fn force_mprotect_guards() {
    GUARD_METHOD.store(GUARD_MPROTECT, Ordering::Relaxed);
}

/// The page size, read once (an atomic, so the signal handler may read it).
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
            PAGE.store(page, Ordering::Relaxed);
            page
        }
        page => page,
    }
}

/// Reserves `len` bytes (a multiple of the page size) of lazily committed memory.
pub(crate) fn reserve(len: usize) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = libc::MAP_PRIVATE | libc::MAP_ANON;
    // SAFETY: an anonymous mapping at an address of the kernel's choice touches
    // no existing memory.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(addr as usize)
}

/// Unmaps a range returned by [`reserve`].
pub(crate) fn release(addr: usize, len: usize) {
    // SAFETY: the caller owns [addr, addr+len), a whole mapping from `reserve`,
    // and nothing refers into it any more.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// Returns the pages of `[addr, addr+len)` to the kernel.
pub(crate) fn trim(addr: usize, len: usize) {
    // SAFETY: the caller owns the range and no live data is in it (the stack
    // is free); MADV_DONTNEED on private anonymous memory only zeroes it.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
}

/// Makes the pages of `[addr, addr+len)` resident and writable without
/// touching their bytes (Linux 5.14+: `MADV_POPULATE_WRITE`), so that the
/// first writes there take no page fault. False if the system cannot (an
/// older kernel, another system); a failure for want of memory is left to
/// the first touch, as if this had not been called.
pub(crate) fn populate(addr: usize, len: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        /// `MADV_POPULATE_WRITE`, which the libc crate lacks on some targets.
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        // SAFETY: the caller owns the range (part of a live allocation of
        // its own); populating changes no byte of it (each page reads as it
        // did, zero if it was never touched).
        let done = unsafe { libc::madvise(addr as *mut libc::c_void, len, MADV_POPULATE_WRITE) };
        done == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (addr, len);
        false
    }
}

/// Makes each `[start, start+len)` inaccessible. Returns how many ranges from
/// the front are guarded; on failure also the error (never a panic).
// Elsewhere than on Linux only `mprotect` is left: the loop never loops.
#[cfg_attr(not(target_os = "linux"), allow(clippy::never_loop))]
pub(crate) fn install_guards(ranges: &[(usize, usize)]) -> (usize, Option<io::Error>) {
    loop {
        match GUARD_METHOD.load(Ordering::Relaxed) {
            #[cfg(target_os = "linux")]
            GUARD_UNKNOWN | GUARD_PROCESS_MADVISE => match linux::process_madvise_guards(ranges) {
                Ok(()) => {
                    GUARD_METHOD.store(GUARD_PROCESS_MADVISE, Ordering::Relaxed);
                    return (ranges.len(), None);
                }
                Err(_) => GUARD_METHOD.store(GUARD_MADVISE, Ordering::Relaxed),
            },
            #[cfg(target_os = "linux")]
            GUARD_MADVISE => {
                let mut done = 0;
                for &(start, len) in ranges {
                    // SAFETY: the caller owns the range; the advice only
                    // changes its protection (or fails with EINVAL).
                    let rc = unsafe {
                        libc::madvise(start as *mut libc::c_void, len, MADV_GUARD_INSTALL)
                    };
                    if rc != 0 {
                        break;
                    }
                    done += 1;
                }
                if done == ranges.len() {
                    return (done, None);
                }
                if done > 0 {
                    // It worked before: this is a real failure.
                    return (done, Some(io::Error::last_os_error()));
                }
                GUARD_METHOD.store(GUARD_MPROTECT, Ordering::Relaxed);
            }
            _ => return mprotect_guards(ranges),
        }
    }
}

fn mprotect_guards(ranges: &[(usize, usize)]) -> (usize, Option<io::Error>) {
    for (i, &(start, len)) in ranges.iter().enumerate() {
        // SAFETY: the caller owns the range and keeps nothing in it.
        let rc = unsafe { libc::mprotect(start as *mut libc::c_void, len, libc::PROT_NONE) };
        if rc != 0 {
            return (i, Some(io::Error::last_os_error()));
        }
    }
    (ranges.len(), None)
}

/// Whether guard pages cost mappings here (the `mprotect` fallback). Known
/// once the first guard has been installed.
pub(crate) fn guards_cost_mappings() -> bool {
    GUARD_METHOD.load(Ordering::Relaxed) == GUARD_MPROTECT
}

/// How many mappings the process has now (Linux: lines of /proc/self/maps).
pub(crate) fn mapping_count() -> Option<u64> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// The kernel's mapping limit, for error messages.
pub(crate) fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(target_os = "linux")]
mod linux {
    use super::MADV_GUARD_INSTALL;
    use std::io;

    /// Installs guards with `process_madvise(2)` on a pidfd of this process,
    /// up to 1024 ranges a call (the kernel's IOV_MAX).
    pub(super) fn process_madvise_guards(ranges: &[(usize, usize)]) -> io::Result<()> {
        // SAFETY: pidfd_open of our own pid has no memory effects.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        if pidfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let pidfd = pidfd as libc::c_int;
        let result = (|| {
            let mut iov: Vec<libc::iovec> = Vec::with_capacity(1024.min(ranges.len()));
            for batch in ranges.chunks(1024) {
                iov.clear();
                iov.extend(batch.iter().map(|&(start, len)| libc::iovec {
                    iov_base: start as *mut libc::c_void,
                    iov_len: len,
                }));
                let mut off = 0;
                while off < iov.len() {
                    // SAFETY: `iov` holds valid iovecs naming ranges the caller
                    // owns; the advice only changes their protection.
                    let n = unsafe {
                        libc::syscall(
                            libc::SYS_process_madvise,
                            pidfd,
                            iov[off..].as_ptr(),
                            iov.len() - off,
                            MADV_GUARD_INSTALL,
                            0,
                        )
                    };
                    if n < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if n == 0 {
                        return Err(io::Error::other("process_madvise made no progress"));
                    }
                    // The advice may stop early: skip what it covered, retry the rest.
                    let mut covered = n as usize;
                    while covered > 0 && off < iov.len() {
                        if covered >= iov[off].iov_len {
                            covered -= iov[off].iov_len;
                            off += 1;
                        } else {
                            // It stopped inside a guard range: give up on this method.
                            return Err(io::Error::other("process_madvise split a range"));
                        }
                    }
                }
            }
            Ok(())
        })();
        // SAFETY: we opened pidfd above and close it once.
        unsafe { libc::close(pidfd) };
        result
    }
}
