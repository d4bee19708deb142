//! A chat server: every line a client sends goes to every client.
//!
//! `cargo run --release -p greenhub --example chat [-- ADDR]` (default
//! 127.0.0.1:7001), then `nc 127.0.0.1 7001` from a few terminals.
//!
//! Each client has an outbox (a `sync::Queue`) and a writer green thread
//! that drains it, so a slow client delays nobody but itself. The handler
//! reads lines and puts each in every outbox. All green threads share the
//! client list through `Rc<RefCell<…>>`: they all run on one OS thread.
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::rc::Rc;

use greenhub::net::TcpStream;
use greenhub::server::StreamServer;
use greenhub::sync::Queue;

type Outboxes = Rc<RefCell<BTreeMap<SocketAddr, Rc<Queue<String>>>>>;

fn broadcast(clients: &Outboxes, line: String) {
    for outbox in clients.borrow().values() {
        let _ = outbox.put(line.clone()); // unbounded: never parks
    }
}

fn chat(clients: &Outboxes, stream: TcpStream, peer: SocketAddr) {
    let stream = Rc::new(stream);
    let outbox = Rc::new(Queue::<String>::new());
    let writer = {
        let (stream, outbox) = (stream.clone(), outbox.clone());
        greenhub::spawn(move || {
            for line in outbox.iter() {
                if (&*stream).write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
        })
    };
    clients.borrow_mut().insert(peer, outbox.clone());
    let online = clients.borrow().len();
    let _ = outbox.put(format!("* welcome {peer}: {online} online\n"));
    for line in BufReader::new(&*stream).lines() {
        let Ok(line) = line else { break };
        broadcast(clients, format!("{peer}: {line}\n"));
    }
    clients.borrow_mut().remove(&peer);
    outbox.close(); // the writer sends what is left, then ends
    let _ = writer.join();
    broadcast(clients, format!("* {peer} left\n"));
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".into());
    greenhub::run(move || {
        let clients = Outboxes::default();
        let server = StreamServer::bind(addr.as_str(), move |stream, peer| {
            chat(&clients, stream, peer)
        })?;
        println!("chat server on {}", server.local_addr());
        server.serve_forever()
    })
    .map_err(io::Error::other)?
}
