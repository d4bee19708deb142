//! An echo server: a green thread per connection, thousands of them on one
//! OS thread, written as plain blocking code.
//!
//! `cargo run --release -p greenhub --example echo [-- ADDR]` serves on ADDR
//! (default 127.0.0.1:7000) until killed; try `nc 127.0.0.1 7000`.
//! With `--clients N` it serves on a free port, connects N clients to itself
//! (green threads too), checks that each gets its bytes back, and exits.
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use greenhub::net::TcpStream;
use greenhub::server::StreamServer;

/// Each connection: send back whatever comes, until the client closes.
fn echo(mut stream: TcpStream, _peer: SocketAddr) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// A client: sends a line, reads it back.
fn client(addr: SocketAddr, i: usize) -> io::Result<bool> {
    let mut stream = TcpStream::connect(addr)?;
    let line = format!("hello from client {i}\n");
    stream.write_all(line.as_bytes())?;
    let mut back = vec![0u8; line.len()];
    stream.read_exact(&mut back)?;
    Ok(back == line.as_bytes())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let clients = match args.as_slice() {
        [flag, n] if flag == "--clients" => Some(n.parse::<usize>().expect("--clients N")),
        _ => None,
    };
    let addr = match (clients, args.first()) {
        (None, Some(addr)) => addr.clone(),
        (None, None) => "127.0.0.1:7000".to_string(),
        (Some(_), _) => "127.0.0.1:0".to_string(),
    };
    greenhub::run(move || {
        let server = StreamServer::bind(addr.as_str(), echo)?;
        let addr = server.local_addr();
        println!("echo server on {addr}");
        let Some(n) = clients else {
            return server.serve_forever();
        };
        server.start()?;
        let handles: Vec<_> = (0..n)
            .map(|i| greenhub::spawn(move || client(addr, i)))
            .collect();
        let ok = handles
            .into_iter()
            .map(|h| h.join())
            .filter(|r| matches!(r, Ok(Ok(true))))
            .count();
        server.stop(Duration::from_secs(1));
        println!("{ok} of {n} clients got their echo");
        match ok == n {
            true => Ok(()),
            false => Err(io::Error::other("some clients failed")),
        }
    })
    .map_err(io::Error::other)?
}
