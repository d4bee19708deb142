//! Name resolution: host names go to the blocking pool, numeric addresses
//! never do, and bad names are errors, not panics.
//!
//! Whether the pool was used is read from `blocking::stats().submitted`, a
//! process-wide count, so every test here takes `serial()` first.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use greenhub::blocking;
use greenhub::net::{lookup_host, resolve, ToSocketAddrs};
use greenhub::{run, sleep, spawn, with_timeout};

const BOUND: Duration = Duration::from_secs(5);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` and returns its value and how many pool jobs were submitted
/// meanwhile.
fn jobs<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = blocking::stats().submitted;
    let v = f();
    (v, blocking::stats().submitted - before)
}

#[test]
fn localhost_resolves_to_loopback_on_the_pool() {
    let _serial = serial();
    run(|| {
        let (addrs, jobs) = jobs(|| lookup_host("localhost:80").unwrap().collect::<Vec<_>>());
        assert!(!addrs.is_empty());
        for a in &addrs {
            assert!(a.ip().is_loopback(), "{a}");
            assert_eq!(a.port(), 80);
        }
        assert_eq!(jobs, 1, "one pool job");
    })
    .unwrap();
}

#[test]
fn numeric_addresses_do_not_use_the_pool() {
    let _serial = serial();
    run(|| {
        let v4: SocketAddr = "1.2.3.4:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        let one = |a: io::Result<Vec<SocketAddr>>| a.unwrap();
        let (results, jobs) = jobs(|| {
            vec![
                one(lookup_host("1.2.3.4:80").map(Iterator::collect)),
                one(lookup_host("[::1]:443").map(Iterator::collect)),
                one(lookup_host(String::from("1.2.3.4:80")).map(Iterator::collect)),
                one(lookup_host(("1.2.3.4", 80)).map(Iterator::collect)),
                one(lookup_host(("::1", 443)).map(Iterator::collect)),
                one(lookup_host((String::from("1.2.3.4"), 80)).map(Iterator::collect)),
                one(lookup_host(v4).map(Iterator::collect)),
                one(lookup_host(&v6).map(Iterator::collect)),
                one(lookup_host(SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 80))
                    .map(Iterator::collect)),
                one(lookup_host(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 443, 0, 0))
                    .map(Iterator::collect)),
                one(lookup_host((IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)), 80))
                    .map(Iterator::collect)),
                one(lookup_host((Ipv4Addr::new(1, 2, 3, 4), 80)).map(Iterator::collect)),
                one(lookup_host((Ipv6Addr::LOCALHOST, 443)).map(Iterator::collect)),
                one(lookup_host(&[v4][..]).map(Iterator::collect)),
                one("1.2.3.4:80".to_socket_addrs().map(Iterator::collect)),
                one(resolve("1.2.3.4:80")),
                one(resolve(String::from("[::1]:443"))),
                one(resolve(v4)),
            ]
        });
        assert_eq!(jobs, 0, "numeric addresses made pool jobs");
        for r in results {
            assert!(r == [v4] || r == [v6], "{r:?}");
        }
    })
    .unwrap();
}

#[test]
fn invalid_names_are_errors() {
    let _serial = serial();
    run(|| {
        for bad in ["no-port", "localhost:http", "localhost:99999", ""] {
            let (r, jobs) = jobs(|| lookup_host(bad).map(Iterator::count));
            let e = r.expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}: {e}");
            assert_eq!(jobs, 0, "{bad}: a malformed address needs no pool job");
        }
        // `.invalid` is reserved (RFC 2606): it never resolves.
        let r = with_timeout(BOUND, || {
            lookup_host("no-such-host.invalid:80").map(Iterator::count)
        })
        .expect("resolution ends");
        assert!(r.is_err(), "{r:?}");
    })
    .unwrap();
}

/// A type that implements only std's trait.
struct Mine(u16);

impl std::net::ToSocketAddrs for Mine {
    type Iter = std::vec::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        std::net::ToSocketAddrs::to_socket_addrs(&("localhost", self.0))
    }
}

#[test]
fn resolve_takes_std_only_types_to_the_pool() {
    let _serial = serial();
    run(|| {
        let (addrs, jobs) = jobs(|| resolve(Mine(7)).unwrap());
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
        assert!(addrs.iter().all(|a| a.port() == 7));
        assert_eq!(jobs, 1);
    })
    .unwrap();
}

#[test]
fn many_green_threads_resolve_while_the_hub_runs() {
    let _serial = serial();
    run(|| {
        let ticks = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let t = ticks.clone();
        let ticker = spawn(move || loop {
            sleep(Duration::from_millis(1));
            t.set(t.get() + 1);
        });
        let handles: Vec<_> = (0..50u16)
            .map(|i| spawn(move || lookup_host(("localhost", i)).unwrap().collect::<Vec<_>>()))
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let addrs = with_timeout(BOUND, || h.join()).unwrap().unwrap();
            assert!(!addrs.is_empty() && addrs.iter().all(|a| a.port() == i as u16));
        }
        ticker.kill();
    })
    .unwrap();
}

#[test]
fn outside_a_hub_it_blocks_the_calling_thread() {
    let _serial = serial();
    let (addrs, jobs) = jobs(|| lookup_host("localhost:1").unwrap().collect::<Vec<_>>());
    assert!(!addrs.is_empty());
    assert_eq!(jobs, 0);
}
