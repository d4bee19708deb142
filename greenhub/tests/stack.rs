//! Stacks: overflow reports, other faults, and running out of stacks. As in
//! Go's runtime/crash_test.go, each scenario runs in a child process (this
//! test binary, re-executed for one test with `CHILD_ENV` set) whose exit
//! status and stderr the parent checks.

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use greenhub::{current, kill_all, run, sleep, spawn, yield_now, Builder};

const CHILD_ENV: &str = "GREENHUB_TEST_STACK_CHILD";

fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

mod common;

/// Re-runs this binary's test `name` alone in a child process (see
/// `common::run_child`), with `CHILD_ENV` set and backtraces off.
fn run_child(name: &str) -> common::Child {
    common::run_child(name, &[(CHILD_ENV, "1"), ("RUST_BACKTRACE", "0")])
}

/// The value printed as `{key}=<value>` (to the end of its line) in `text`;
/// libtest may have printed "test name ... " before it on the same line.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    let at = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {key}= in child output:\n{text}"));
    text[at + prefix.len()..].lines().next().unwrap_or("")
}

/// Crashing children should not leave core files behind.
fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass and changes only this
    // process's limits.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// Limits this process's address space to `bytes`.
fn limit_address_space(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: as in `no_core_dumps`.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// This process's memory mappings and the kernel's limit on them.
fn mappings_and_limit() -> (usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap();
    (maps.lines().count(), limit.trim().parse().unwrap())
}

/// Uses up memory mappings until about `left` remain below the kernel's
/// limit, so that the limit is reached at the same scale whatever
/// vm.max_map_count is set to. Costs address space and kernel metadata only:
/// the pages are never touched.
fn leave_mappings(left: usize) {
    let (used, limit) = mappings_and_limit();
    let splits = limit.saturating_sub(used + left) / 2;
    if splits == 0 {
        return;
    }
    let page = 4096;
    let len = (2 * splits + 1) * page;
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choice;
    // it is never read or written, only split by changing the protection of
    // every other page (each split adds two mappings). It is leaked on purpose.
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        assert_ne!(
            base,
            libc::MAP_FAILED,
            "{}",
            std::io::Error::last_os_error()
        );
        for i in 0..splits {
            let at = base.cast::<u8>().add((2 * i + 1) * page).cast();
            let rc = libc::mprotect(at, page, libc::PROT_READ);
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        }
    }
}

/// Recurses without bound, 1 KiB a frame.
fn recurse(depth: u64) -> u64 {
    let buf = black_box([depth as u8; 1024]);
    if black_box(true) {
        recurse(depth + 1) + u64::from(buf[0])
    } else {
        0
    }
}

fn assert_died_of(child: &common::Child, signal: i32) {
    assert_eq!(
        child.status.signal(),
        Some(signal),
        "child status {:?}\nstdout:\n{}\nstderr:\n{}",
        child.status,
        child.stdout,
        child.stderr
    );
}

#[test]
fn overflow_in_a_green_thread_is_reported_and_aborts() {
    if in_child() {
        no_core_dumps();
        run(|| {
            let h = Builder::new().name("deep").spawn(|| recurse(0)).unwrap();
            println!("id={}", h.id());
            let _ = h.join();
        })
        .unwrap();
        println!("survived");
        return;
    }
    let child = run_child("overflow_in_a_green_thread_is_reported_and_aborts");
    assert_died_of(&child, libc::SIGABRT);
    let id = field(&child.stdout, "id");
    let report = format!("green thread {id} 'deep' has overflowed its stack (");
    assert!(
        child.stderr.contains(&report),
        "no {report:?} in:\n{}",
        child.stderr
    );
    assert!(!child.stdout.contains("survived"));
}

#[test]
fn overflow_in_the_main_green_thread_is_reported() {
    if in_child() {
        no_core_dumps();
        run(|| {
            println!("id={}", current().id());
            recurse(0)
        })
        .unwrap();
        return;
    }
    let child = run_child("overflow_in_the_main_green_thread_is_reported");
    assert_died_of(&child, libc::SIGABRT);
    let report = format!(
        "green thread {} 'main' has overflowed its stack (",
        field(&child.stdout, "id")
    );
    assert!(
        child.stderr.contains(&report),
        "no {report:?} in:\n{}",
        child.stderr
    );
}

#[test]
fn overflow_report_of_an_unnamed_green_thread_has_no_empty_name() {
    if in_child() {
        no_core_dumps();
        run(|| {
            let h = spawn(|| recurse(0));
            println!("id={}", h.id());
            let _ = h.join();
        })
        .unwrap();
        return;
    }
    let child = run_child("overflow_report_of_an_unnamed_green_thread_has_no_empty_name");
    assert_died_of(&child, libc::SIGABRT);
    let report = format!(
        "green thread {} has overflowed its stack (",
        field(&child.stdout, "id")
    );
    assert!(
        child.stderr.contains(&report),
        "no {report:?} in:\n{}",
        child.stderr
    );
}

#[test]
fn overflow_report_gives_the_stack_size_asked_for() {
    if in_child() {
        no_core_dumps();
        run(|| {
            let h = Builder::new()
                .name("sized")
                .stack_size(64 * 1024)
                .spawn(|| recurse(0))
                .unwrap();
            let _ = h.join();
        })
        .unwrap();
        return;
    }
    let child = run_child("overflow_report_gives_the_stack_size_asked_for");
    assert_died_of(&child, libc::SIGABRT);
    assert!(
        child
            .stderr
            .contains("'sized' has overflowed its stack (64 KiB)"),
        "{}",
        child.stderr
    );
}

/// Greenhub's fault handler passes faults that are not in a guard page to the
/// handler that was there before: Rust's own, which reports plain threads.
#[test]
fn overflow_in_a_plain_thread_is_still_reported_by_rust() {
    if in_child() {
        no_core_dumps();
        run(|| ()).unwrap(); // installs greenhub's handler
        let t = std::thread::Builder::new()
            .name("plain".into())
            .stack_size(256 * 1024)
            .spawn(|| recurse(0))
            .unwrap();
        let _ = t.join();
        return;
    }
    let child = run_child("overflow_in_a_plain_thread_is_still_reported_by_rust");
    assert_died_of(&child, libc::SIGABRT);
    // "thread 'plain' (<tid>) has overflowed its stack" in recent Rust.
    let report = child
        .stderr
        .lines()
        .find(|l| l.contains("has overflowed its stack"));
    assert!(
        report.is_some_and(|l| l.starts_with("thread 'plain'")),
        "{}",
        child.stderr
    );
    assert!(!child.stderr.contains("green thread"), "{}", child.stderr);
}

#[test]
fn a_null_pointer_write_is_a_plain_segfault() {
    if in_child() {
        no_core_dumps();
        run(|| {
            spawn(|| {
                let null = black_box(std::ptr::null_mut::<u8>());
                // SAFETY: none: this deliberately writes to address 0 to make
                // the process fault; the parent checks that it dies of SIGSEGV.
                unsafe { std::ptr::write_volatile(null, 1) };
            })
            .join()
        })
        .unwrap()
        .unwrap();
        println!("survived");
        return;
    }
    let child = run_child("a_null_pointer_write_is_a_plain_segfault");
    assert_died_of(&child, libc::SIGSEGV);
    assert!(!child.stderr.contains("overflowed"), "{}", child.stderr);
    assert!(!child.stdout.contains("survived"));
}

/// Without MADV_GUARD_INSTALL each guard page costs two memory mappings; at
/// the kernel's limit (vm.max_map_count, 65530 by default: about 32K green
/// threads) spawning fails with an error that names the limit, and everything
/// spawned before can still be killed and joined.
#[test]
fn running_out_of_mappings_is_a_clear_error() {
    if in_child() {
        greenhub::testing::force_mprotect_guards();
        // About 20K green threads, on this machine or one with a raised limit.
        leave_mappings(40_000);
        // Dedicated stacks: compact ones share a few stacks and never reach the limit.
        greenhub::HubBuilder::new()
            .dedicated_stacks()
            .run(|| {
                let mut handles = Vec::with_capacity(100_000);
                let mut error = None;
                while handles.len() < 100_000 {
                    match Builder::new().spawn(|| sleep(Duration::from_secs(60))) {
                        Ok(h) => handles.push(h),
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                    if handles.len() % 1000 == 0 {
                        yield_now(); // let them start and park
                    }
                }
                let error = error.expect("the mapping limit was never reached");
                println!("spawned={}", handles.len());
                println!("error={error}");
                kill_all(&handles);
                let killed = handles
                    .into_iter()
                    .filter(|h| h.is_finished())
                    .map(|h| h.join())
                    .filter(|r| matches!(r, Err(greenhub::JoinError::Killed)))
                    .count();
                println!("killed={killed}");
                // Their stacks went back to the pool: spawning works again.
                assert_eq!(spawn(|| 5).join().unwrap(), 5);
            })
            .unwrap();
        println!("clean exit");
        return;
    }
    let child = run_child("running_out_of_mappings_is_a_clear_error");
    assert!(
        child.status.success(),
        "child status {:?}\nstdout:\n{}\nstderr:\n{}",
        child.status,
        child.stdout,
        child.stderr
    );
    let error = field(&child.stdout, "error");
    assert!(error.contains("vm.max_map_count"), "{error}");
    let spawned: usize = field(&child.stdout, "spawned").parse().unwrap();
    assert!(spawned > 1000, "{spawned}");
    assert_eq!(field(&child.stdout, "killed"), spawned.to_string());
    assert!(child.stdout.contains("clean exit"));
}

/// Greenhub takes mappings up to the kernel's limit, leaving none for the
/// rest of the process: after the error, creating an OS thread fails, and on
/// the main thread even `kill_all`'s own allocation aborts the process.
#[test]
fn the_mapping_limit_leaves_room_for_the_rest_of_the_process() {
    if in_child() {
        greenhub::testing::force_mprotect_guards();
        leave_mappings(40_000);
        greenhub::HubBuilder::new()
            .dedicated_stacks()
            .run(|| {
                let mut handles = Vec::new();
                while Builder::new()
                    .spawn(|| sleep(Duration::from_secs(60)))
                    .map(|h| handles.push(h))
                    .is_ok()
                {}
                let t = std::thread::Builder::new().spawn(|| 1);
                println!(
                    "thread={:?}",
                    t.map(|t| t.join().unwrap()).map_err(|e| e.to_string())
                );
                kill_all(&handles);
            })
            .unwrap();
        return;
    }
    let child = run_child("the_mapping_limit_leaves_room_for_the_rest_of_the_process");
    assert!(child.status.success(), "{}", child.stderr);
    assert_eq!(field(&child.stdout, "thread"), "Ok(1)");
}

/// Under an address-space limit, stacks that do not fit give an error that
/// says so (and the hub goes on).
#[test]
fn running_out_of_address_space_is_a_clear_error() {
    if in_child() {
        limit_address_space(1 << 30);
        run(|| {
            let mut handles = Vec::new();
            let mut error = None;
            for _ in 0..8 {
                match Builder::new().stack_size(512 << 20).spawn(|| 1) {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            let error = error.expect("1 GiB cannot hold 8 stacks of 512 MiB");
            println!("error={error}");
            assert_eq!(spawn(|| 5).join().unwrap(), 5, "default stacks still fit");
            for h in handles {
                h.join().unwrap();
            }
        })
        .unwrap();
        println!("clean exit");
        return;
    }
    let child = run_child("running_out_of_address_space_is_a_clear_error");
    assert!(
        child.status.success(),
        "child status {:?}\nstdout:\n{}\nstderr:\n{}",
        child.status,
        child.stdout,
        child.stderr
    );
    let error = field(&child.stdout, "error");
    assert!(error.contains("address space"), "{error}");
    assert!(error.contains("memory"), "{error}");
    assert!(child.stdout.contains("clean exit"));
}

/// `Builder::spawn` "fails, never panics"; sizes whose slot size overflows
/// must fail too. Run in a child: in release builds they are unsound.
#[test]
fn absurd_stack_sizes_are_errors() {
    if in_child() {
        no_core_dumps();
        run(|| {
            for size in [usize::MAX, usize::MAX - 8192, 1 << 62, 1 << 50] {
                let r = Builder::new().stack_size(size).spawn(|| 1);
                println!("{size:#x}={}", if r.is_err() { "Err" } else { "Ok" });
            }
        })
        .unwrap();
        return;
    }
    let child = run_child("absurd_stack_sizes_are_errors");
    assert!(
        child.status.success(),
        "child status {:?}\nstdout:\n{}\nstderr:\n{}",
        child.status,
        child.stdout,
        child.stderr
    );
    for size in [usize::MAX, usize::MAX - 8192, 1 << 62, 1 << 50] {
        assert_eq!(
            field(&child.stdout, &format!("{size:#x}")),
            "Err",
            "{size:#x}"
        );
    }
}

#[test]
fn one_big_stack_fits_under_an_address_space_limit() {
    if in_child() {
        limit_address_space(1 << 30);
        let r = run(|| {
            Builder::new()
                .stack_size(64 << 20)
                .spawn(|| 1)
                .map(|h| h.join().unwrap())
                .map_err(|e| e.to_string())
        })
        .unwrap();
        println!("result={r:?}");
        return;
    }
    let child = run_child("one_big_stack_fits_under_an_address_space_limit");
    assert!(child.status.success(), "{}", child.stderr);
    assert_eq!(field(&child.stdout, "result"), "Ok(1)");
}
