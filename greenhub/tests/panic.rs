//! Panics in green threads: caught and handed to `join`; the hub and the other
//! green threads go on; a panic nobody joins is reported on stderr.

use std::hint::black_box;
use std::panic::{catch_unwind, panic_any, resume_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

use greenhub::{run, sleep, spawn, yield_now, Builder};

/// Installs a panic hook that prints the message without a backtrace. The
/// default hook captures one when RUST_BACKTRACE is set, and that overflows a
/// green thread's 16 KiB default stack (see
/// `a_panic_with_backtrace_fits_the_default_stack`): these tests are about
/// greenhub, not about the hook.
fn plain_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
}

#[test]
fn a_tenth_panic_and_the_rest_complete() {
    plain_panic_hook();
    run(|| {
        let handles: Vec<_> = (0..1000u32)
            .map(|i| {
                spawn(move || {
                    yield_now();
                    if i % 10 == 0 {
                        panic!("green thread {i} failed");
                    }
                    i
                })
            })
            .collect();
        let (mut ok, mut panicked) = (0, 0);
        for (i, h) in (0u32..).zip(handles) {
            match h.join() {
                Ok(v) => {
                    assert_eq!(v, i);
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.is_panic() && !e.is_killed());
                    let expected = format!("green thread {i} failed");
                    assert_eq!(e.panic_message(), Some(expected.as_str()));
                    panicked += 1;
                }
            }
        }
        assert_eq!((ok, panicked), (900, 100));
        // The hub is unharmed.
        let h = spawn(|| {
            sleep(Duration::from_millis(1));
            "still fine"
        });
        assert_eq!(h.join().unwrap(), "still fine");
    })
    .unwrap();
}

#[test]
fn a_panic_does_not_disturb_parked_green_threads() {
    plain_panic_hook();
    run(|| {
        let sleeper = spawn(|| {
            sleep(Duration::from_millis(20));
            1
        });
        let bad = spawn(|| -> u32 { panic!("bad") });
        yield_now();
        assert!(bad.join().unwrap_err().is_panic());
        assert_eq!(sleeper.join().unwrap(), 1);
    })
    .unwrap();
}

#[test]
fn join_error_carries_the_payload() {
    plain_panic_hook();
    run(|| {
        let e = spawn(|| panic_any(42u32)).join().unwrap_err();
        assert!(e.is_panic());
        assert_eq!(e.panic_message(), None, "not a string");
        assert_eq!(e.to_string(), "green thread panicked: <non-string payload>");
        assert_eq!(e.into_panic().downcast_ref::<u32>(), Some(&42));

        let e = spawn(|| panic!("with {}", black_box("format")))
            .join()
            .unwrap_err();
        assert_eq!(format!("{e:?}"), r#"Panicked("with format")"#);
        assert_eq!(e.to_string(), "green thread panicked: with format");
        // The payload resumes as the original panic.
        let resumed = catch_unwind(AssertUnwindSafe(|| resume_unwind(e.into_panic())));
        let payload = resumed.unwrap_err();
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some("with format")
        );

        let h = spawn(|| sleep(Duration::from_secs(10)));
        h.kill();
        let e = h.join().unwrap_err();
        assert!(e.is_killed() && !e.is_panic());
        assert_eq!(e.panic_message(), None);
        assert_eq!(e.to_string(), "green thread was killed");
        let into = catch_unwind(AssertUnwindSafe(|| e.into_panic()));
        assert!(into.is_err(), "into_panic of a kill panics");
    })
    .unwrap();
}

/// Which scenario the child process runs (see `unjoined_panic_is_reported_on_stderr`).
const CHILD_ENV: &str = "GREENHUB_TEST_PANIC_CHILD";

mod common;

/// Re-runs this binary's test `name` alone in a child process (see
/// `common::run_child`) with `CHILD_ENV` set and RUST_BACKTRACE as given;
/// returns (success, stdout, stderr).
fn run_child(name: &str, backtrace: &str) -> (bool, String, String) {
    let child = common::run_child(name, &[(CHILD_ENV, "1"), ("RUST_BACKTRACE", backtrace)]);
    (child.status.success(), child.stdout, child.stderr)
}

/// The value printed as `{key}=<value>` in `text` (libtest may have printed
/// "test name ... " before it on the same line).
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    let at = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {key}= in child output:\n{text}"));
    let rest = &text[at + prefix.len()..];
    rest.split_whitespace().next().unwrap_or("")
}

#[test]
fn unjoined_panic_is_reported_on_stderr() {
    if std::env::var_os(CHILD_ENV).is_some() {
        plain_panic_hook();
        run(|| {
            // Detached before it panics: reported when it panics.
            let early = Builder::new()
                .name("dropped early")
                .spawn(|| -> () { panic!("early boom") })
                .unwrap();
            println!("early={}", early.id());
            drop(early);
            // Panics first, detached afterwards: reported when the handle drops.
            let late = Builder::new()
                .name("dropped late")
                .spawn(|| -> () { panic!("late boom") })
                .unwrap();
            println!("late={}", late.id());
            // Joined: not reported by greenhub.
            let joined = Builder::new()
                .name("joined")
                .spawn(|| -> () { panic!("joined boom") })
                .unwrap();
            println!("joined={}", joined.id());
            yield_now();
            assert!(late.is_finished() && joined.is_finished());
            drop(late);
            assert!(joined.join().is_err());
        })
        .unwrap();
        return;
    }
    let (ok, out, err) = run_child("unjoined_panic_is_reported_on_stderr", "0");
    assert!(ok, "child failed:\n{out}\n{err}");
    let early = format!(
        "green thread {} 'dropped early' panicked and was never joined: early boom",
        field(&out, "early")
    );
    let late = format!(
        "green thread {} 'dropped late' panicked and was never joined: late boom",
        field(&out, "late")
    );
    assert!(err.contains(&early), "missing {early:?} in stderr:\n{err}");
    assert!(err.contains(&late), "missing {late:?} in stderr:\n{err}");
    let joined = format!("green thread {} 'joined' panicked", field(&out, "joined"));
    assert!(
        !err.contains(&joined),
        "a joined panic was reported:\n{err}"
    );
    assert_eq!(err.matches("was never joined").count(), 2, "{err}");
}

#[test]
fn a_panic_with_backtrace_fits_the_default_stack() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let e = run(|| spawn(|| -> () { panic!("boom") }).join().unwrap_err()).unwrap();
        assert_eq!(e.panic_message(), Some("boom"));
        return;
    }
    let (ok, out, err) = run_child("a_panic_with_backtrace_fits_the_default_stack", "1");
    assert!(ok, "child failed:\n{out}\n{err}");
    assert!(err.contains("stack backtrace"), "{err}");
}
