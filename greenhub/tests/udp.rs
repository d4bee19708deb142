//! UDP: `greenhub::net::UdpSocket` behaves like std's and parks only the
//! receiving green thread. Loopback addresses only; every wait is bounded.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::net::UdpSocket;
use greenhub::{run, spawn, with_timeout, yield_now, JoinHandle};

const BOUND: Duration = Duration::from_secs(10);

fn bounded<T>(f: impl FnOnce() -> T) -> T {
    with_timeout(BOUND, f).expect("did not finish in time")
}

fn join_bounded<T>(h: JoinHandle<T>) -> T {
    bounded(|| h.join()).unwrap()
}

fn bind() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

#[test]
fn round_trip_between_two_green_threads() {
    run(|| {
        let (server, server_addr) = bind();
        let echo = spawn(move || {
            let mut buf = [0u8; 1500];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
            from
        });
        yield_now(); // the server parks in recv_from
        assert!(!echo.is_finished());
        let (client, client_addr) = bind();
        assert_eq!(client.send_to(b"datagram", server_addr).unwrap(), 8);
        let mut buf = [0u8; 1500];
        let (n, from) = bounded(|| client.recv_from(&mut buf)).unwrap();
        assert_eq!((&buf[..n], from), (&b"datagram"[..], server_addr));
        assert_eq!(join_bounded(echo), client_addr);
        // An address given as (host, port) works too.
        let (other, other_addr) = bind();
        client
            .send_to(b"pair", ("127.0.0.1", other_addr.port()))
            .unwrap();
        let (n, _) = bounded(|| other.recv_from(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"pair");
    })
    .unwrap();
}

#[test]
fn recv_from_times_out_with_timed_out() {
    run(|| {
        let (socket, _) = bind();
        let timeout = Duration::from_millis(80);
        socket.set_read_timeout(Some(timeout)).unwrap();
        assert_eq!(socket.read_timeout().unwrap(), Some(timeout));
        let start = Instant::now();
        let err = socket.recv_from(&mut [0u8; 16]).unwrap_err();
        let elapsed = start.elapsed();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(elapsed >= timeout, "never early: {elapsed:?}");
        assert!(
            elapsed < timeout + Duration::from_millis(500),
            "late: {elapsed:?}"
        );
        let err = socket.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    })
    .unwrap();
}

#[test]
fn connected_send_and_recv_ignore_strangers() {
    run(|| {
        let (a, a_addr) = bind();
        let (b, b_addr) = bind();
        let (stranger, _) = bind();
        a.connect(b_addr).unwrap();
        b.connect(a_addr).unwrap();
        assert_eq!(a.peer_addr().unwrap(), b_addr);
        // A connected socket drops datagrams from other addresses.
        stranger.send_to(b"noise", a_addr).unwrap();
        b.send(b"signal").unwrap();
        let mut buf = [0u8; 16];
        let n = bounded(|| a.recv(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"signal");
        a.send(b"reply").unwrap();
        let n = bounded(|| b.recv(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"reply");
        let (unconnected, _) = bind();
        assert_eq!(
            unconnected.peer_addr().unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
    })
    .unwrap();
}

#[test]
fn peek_leaves_the_datagram_queued() {
    run(|| {
        let (a, a_addr) = bind();
        let (b, b_addr) = bind();
        let peeker = spawn(move || {
            let mut buf = [0u8; 16];
            let (n, from) = a.peek_from(&mut buf).unwrap(); // parks
            assert_eq!(from, b_addr);
            let peeked = buf[..n].to_vec();
            let (n, _) = a.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &peeked[..], "the same datagram");
            a
        });
        yield_now();
        b.send_to(b"peekaboo", a_addr).unwrap();
        let a = join_bounded(peeker);
        // Connected peek, too.
        a.connect(b_addr).unwrap();
        b.send_to(b"again", a_addr).unwrap();
        let mut buf = [0u8; 16];
        let n = bounded(|| a.peek(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"again");
        let n = bounded(|| a.recv(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"again");
    })
    .unwrap();
}

#[test]
fn two_receivers_on_one_socket_each_get_a_datagram() {
    run(|| {
        let (socket, addr) = bind();
        let socket = Rc::new(socket);
        let got = Rc::new(RefCell::new(Vec::new()));
        let receivers: Vec<_> = (0..2)
            .map(|_| {
                let (socket, got) = (socket.clone(), got.clone());
                spawn(move || {
                    let mut buf = [0u8; 16];
                    let (n, _) = socket.recv_from(&mut buf).unwrap();
                    got.borrow_mut().push(buf[..n].to_vec());
                })
            })
            .collect();
        yield_now();
        let (sender, _) = bind();
        sender.send_to(b"one", addr).unwrap();
        sender.send_to(b"two", addr).unwrap();
        for r in receivers {
            join_bounded(r);
        }
        let mut got = got.borrow().clone();
        got.sort();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    })
    .unwrap();
}

#[test]
fn options_clones_and_conversions() {
    run(|| {
        let (socket, addr) = bind();
        socket.set_broadcast(true).unwrap();
        assert!(socket.broadcast().unwrap());
        socket.set_ttl(17).unwrap();
        assert_eq!(socket.ttl().unwrap(), 17);
        socket.set_multicast_loop_v4(false).unwrap();
        assert!(!socket.multicast_loop_v4().unwrap());
        socket.set_multicast_ttl_v4(3).unwrap();
        assert_eq!(socket.multicast_ttl_v4().unwrap(), 3);
        assert!(socket.take_error().unwrap().is_none());
        // Non-blocking mode: WouldBlock instead of parking.
        socket.set_nonblocking(true).unwrap();
        let err = socket.recv_from(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        socket.set_nonblocking(false).unwrap();
        // A clone shares the timeouts and receives on its own descriptor.
        let clone = socket.try_clone().unwrap();
        socket.set_write_timeout(Some(BOUND)).unwrap();
        assert_eq!(clone.write_timeout().unwrap(), Some(BOUND));
        let sender = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sender.send_to(b"to the clone", addr).unwrap();
        let mut buf = [0u8; 32];
        let (n, _) = bounded(|| clone.recv_from(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"to the clone");
        // To std and back.
        let std_socket = socket.into_std().unwrap();
        assert_eq!(std_socket.write_timeout().unwrap(), Some(BOUND));
        let socket = UdpSocket::from(std_socket);
        sender.send_to(b"back", addr).unwrap();
        let (n, _) = bounded(|| socket.recv_from(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"back");
    })
    .unwrap();
}

#[test]
fn sockets_are_send_and_sync_like_std() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<UdpSocket>();
}
