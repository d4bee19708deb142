//! The talk's URL crawler: fetch many pages concurrently with plain blocking
//! code, at most 20 requests in flight.
//!
//! `cargo run --release -p greenhub --example crawler`
//!
//! To stay self-contained (and off the internet) it first starts a tiny HTTP
//! server on 127.0.0.1 serving `/page/N` (each answer takes 10 ms, like a
//! remote site), then fetches 100 pages through a `Pool` of 20: about 50 ms
//! instead of the 1 s one page after another would take. The client is
//! std-only code (`write`, `read_to_end`) on greenhub's `TcpStream`.
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use greenhub::net::TcpStream;
use greenhub::server::StreamServer;
use greenhub::sync::Pool;

const PAGES: usize = 100;

fn page(n: usize) -> String {
    format!("<html><body>{}</body></html>\n", "page ".repeat(n + 1))
}

/// The server: one request per connection (HTTP/1.0).
fn serve(stream: TcpStream, _peer: SocketAddr) {
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let n = request
        .split(' ')
        .nth(1)
        .and_then(|p| p.strip_prefix("/page/"));
    let (status, body) = match n.and_then(|n| n.parse().ok()) {
        Some(n) => ("200 OK", page(n)),
        None => ("404 Not Found", String::new()),
    };
    greenhub::sleep(Duration::from_millis(10)); // a far-away server
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = (&stream).write_all((head + &body).as_bytes());
}

/// The client: what you would write with std, but on greenhub's TcpStream.
fn fetch(addr: SocketAddr, path: &str) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(response)
}

fn main() -> io::Result<()> {
    greenhub::run(|| {
        let server = StreamServer::bind("127.0.0.1:0", serve)?;
        server.start()?;
        let addr = server.local_addr();
        let urls: Vec<String> = (0..PAGES).map(|n| format!("/page/{n}")).collect();
        let start = Instant::now();
        let pool = Pool::new(20);
        let mut bytes = 0;
        for response in pool.imap(urls, move |url| fetch(addr, &url)) {
            let response = response?;
            assert!(response.starts_with(b"HTTP/1.0 200 OK\r\n"));
            bytes += response.len();
        }
        let elapsed = start.elapsed();
        server.stop(Duration::from_secs(1));
        println!("fetched {PAGES} pages, {bytes} bytes in {elapsed:?} (20 at a time)");
        Ok(())
    })
    .map_err(io::Error::other)?
}
