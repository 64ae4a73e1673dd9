//! A NATS-protocol-aware TCP proxy in front of one server, for tests
//! that lose one message on the wire: a request that never reaches the
//! server, or a reply (a PubAck) that never reaches the client although
//! the server did what was asked. It forwards whole protocol frames
//! (`MSG`, `HMSG`, `PUB`, `HPUB` with their payloads; other lines as
//! they are) and drops the next frame that matches a rule.
//!
//! The server's `INFO` goes to the client without `connect_urls`, so the
//! client knows no other server and stays behind the proxy.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the client to the server (requests, publishes).
    ToServer,
    /// From the server to the client (replies, PubAcks, deliveries).
    ToClient,
}

#[derive(Default)]
struct Rules {
    /// Drop the next frame going `Dir` that contains the bytes.
    armed: Vec<(Dir, Vec<u8>)>,
    /// Hold the next frame going `Dir` that contains the bytes for the
    /// time given, then forward it (and what follows it) as usual.
    held: Vec<(Dir, Vec<u8>, std::time::Duration)>,
    /// Frames dropped so far.
    dropped: usize,
    /// Count the frames going `Dir` that contain the bytes.
    counted: Vec<(Dir, Vec<u8>, usize)>,
}

/// A running proxy; its threads end with their connections.
pub struct Proxy {
    port: u16,
    rules: Arc<Mutex<Rules>>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection
    /// to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port for the proxy");
        let port = listener.local_addr().expect("a bound address").port();
        let rules = Arc::new(Mutex::new(Rules::default()));
        let (upstream, r) = (upstream.to_string(), rules.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                pump(client.try_clone(), server.try_clone(), Dir::ToServer, &r);
                pump(Ok(server), Ok(client), Dir::ToClient, &r);
            }
        });
        Proxy { port, rules }
    }

    /// The URL a client connects to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Drops the next frame going `dir` whose bytes (protocol line and
    /// payload) contain `pattern`.
    pub fn drop_next(&self, dir: Dir, pattern: &str) {
        let mut rules = self.rules.lock().unwrap();
        rules.armed.push((dir, pattern.as_bytes().to_vec()));
    }

    /// Holds back the next frame going `dir` whose bytes contain
    /// `pattern` for `by` (frames behind it in that direction wait too),
    /// then forwards it: a reply that arrives late, not never.
    pub fn delay_next(&self, dir: Dir, pattern: &str, by: std::time::Duration) {
        let mut rules = self.rules.lock().unwrap();
        rules.held.push((dir, pattern.as_bytes().to_vec(), by));
    }

    /// Counts, from now on, the frames going `dir` whose bytes contain
    /// `pattern` (see [`Proxy::count`]).
    pub fn count_from_now(&self, dir: Dir, pattern: &str) {
        let mut rules = self.rules.lock().unwrap();
        rules.counted.push((dir, pattern.as_bytes().to_vec(), 0));
    }

    /// How many frames matching `pattern` passed since
    /// [`Proxy::count_from_now`] (0 if never asked).
    pub fn count(&self, pattern: &str) -> usize {
        let rules = self.rules.lock().unwrap();
        rules
            .counted
            .iter()
            .filter(|(_, p, _)| p.as_slice() == pattern.as_bytes())
            .map(|(_, _, n)| n)
            .sum()
    }

    /// How many frames were dropped so far.
    pub fn dropped(&self) -> usize {
        self.rules.lock().unwrap().dropped
    }
}

/// Forwards frames from `from` to `to` on a thread of its own.
fn pump(
    from: std::io::Result<TcpStream>,
    to: std::io::Result<TcpStream>,
    dir: Dir,
    rules: &Arc<Mutex<Rules>>,
) {
    let (Ok(from), Ok(mut to)) = (from, to) else {
        return;
    };
    let rules = rules.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from.try_clone().expect("a clone of the socket"));
        while let Some(frame) = read_frame(&mut reader) {
            let frame = if dir == Dir::ToClient && frame.starts_with(b"INFO ") {
                without_connect_urls(&frame)
            } else {
                frame
            };
            count(&rules, dir, &frame);
            if take_rule(&rules, dir, &frame) {
                continue;
            }
            if let Some(by) = take_delay(&rules, dir, &frame) {
                std::thread::sleep(by);
            }
            if to.write_all(&frame).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// Counts `frame` for every counting rule it matches.
fn count(rules: &Mutex<Rules>, dir: Dir, frame: &[u8]) {
    let mut rules = rules.lock().unwrap();
    for (d, p, n) in rules.counted.iter_mut() {
        if *d == dir && frame.windows(p.len()).any(|w| w == p.as_slice()) {
            *n += 1;
        }
    }
}

/// Whether an armed rule drops `frame` (and disarms it if so).
fn take_rule(rules: &Mutex<Rules>, dir: Dir, frame: &[u8]) -> bool {
    let mut rules = rules.lock().unwrap();
    let hit = rules
        .armed
        .iter()
        .position(|(d, p)| *d == dir && frame.windows(p.len()).any(|w| w == p.as_slice()));
    match hit {
        Some(i) => {
            rules.armed.remove(i);
            rules.dropped += 1;
            true
        }
        None => false,
    }
}

/// How long an armed delay holds `frame`, if one matches (and disarms it).
fn take_delay(rules: &Mutex<Rules>, dir: Dir, frame: &[u8]) -> Option<std::time::Duration> {
    let mut rules = rules.lock().unwrap();
    let i = rules
        .held
        .iter()
        .position(|(d, p, _)| *d == dir && frame.windows(p.len()).any(|w| w == p.as_slice()))?;
    Some(rules.held.remove(i).2)
}

/// One protocol frame: its line, and for a message its payload and CRLF.
/// `None` at the end of the stream.
fn read_frame(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut frame = Vec::new();
    if reader.read_until(b'\n', &mut frame).ok()? == 0 {
        return None;
    }
    let line = String::from_utf8_lossy(&frame).into_owned();
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("").to_ascii_uppercase();
    if matches!(verb.as_str(), "MSG" | "HMSG" | "PUB" | "HPUB") {
        // The last number of the line is the length of what follows.
        let len: usize = line.split_whitespace().last()?.parse().ok()?;
        let mut body = vec![0; len + 2];
        reader.read_exact(&mut body).ok()?;
        frame.extend_from_slice(&body);
    }
    Some(frame)
}

/// An `INFO` line without the other servers' addresses.
fn without_connect_urls(frame: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(frame);
    let json = text.trim_start_matches("INFO ").trim_end();
    let Ok(mut info) = serde_json::from_str::<serde_json::Value>(json) else {
        return frame.to_vec();
    };
    if let Some(map) = info.as_object_mut() {
        map.remove("connect_urls");
        map.remove("ws_connect_urls");
    }
    format!("INFO {info}\r\n").into_bytes()
}
