//! One message lost on the wire between a client and a real 3-node
//! cluster (a protocol-aware proxy, `tests/nats_cluster/proxy.rs`, drops
//! it): a PubAck that never arrives although the server stored the write,
//! or a publish that never reaches the server. Each test checks the fault
//! happened (the proxy dropped the frame) before it checks the outcome.
//! Needs nats-server 2.12+ (see `tests/nats_cluster`).

mod nats_cluster;

use std::time::Duration;

use nats_cluster::proxy::{Dir, Proxy};
use nats_cluster::Cluster;
use walq::jetstream::{JetStream, JetStreamConfig};
use walq::worker::{Backend, JobStatus};
use walq::EnqueueOptions;

const LEASE: Duration = Duration::from_secs(30);

/// Queue `name` reached through a proxy in front of server n0. A request
/// whose reply is dropped fails after 2 s.
fn through_proxy(
    cluster: &Cluster,
    name: &str,
    cfg: impl Fn(JetStreamConfig) -> JetStreamConfig,
) -> (JetStream, Proxy) {
    let proxy = Proxy::start(&cluster.addr(0));
    let js = cluster.connect_via(
        &proxy.url(),
        |c| cfg(c.ack_wait(LEASE).timeout(Duration::from_secs(2))),
        name,
    );
    (js, proxy)
}

/// The PubAck of a write to stream `stream`, as the server words it.
fn puback_of(stream: &str) -> String {
    format!("\"stream\":\"{stream}\"")
}

#[test]
fn a_heartbeat_whose_reply_was_lost_does_not_lose_the_lease() {
    let cluster = Cluster::start();
    let (js, proxy) = through_proxy(&cluster, "hb", |c| c);
    let id = js.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    let d = js.lease(LEASE, Duration::from_secs(10)).unwrap().unwrap();
    // The heartbeat's compare-and-set is stored; its PubAck is lost.
    proxy.drop_next(Dir::ToClient, &puback_of("KV_WALQ_hb_jobs"));
    let lost = js.extend(d.lease(), LEASE);
    assert_eq!(proxy.dropped(), 1, "no PubAck was dropped: {lost:?}");
    assert!(lost.is_err(), "an extend without its reply returned Ok");
    // Nobody else took the job: the record holds this lease's extension.
    assert!(
        matches!(
            js.status(id).unwrap(),
            JobStatus::InFlight { attempt: 1, .. }
        ),
        "{:?}",
        js.status(id)
    );
    // The next heartbeat, and the settle, still belong to this worker.
    js.extend(d.lease(), LEASE)
        .expect("the heartbeat after a lost reply");
    js.complete(d.lease(), None)
        .expect("the complete after a lost heartbeat reply");
    assert!(matches!(js.status(id).unwrap(), JobStatus::Done { .. }));
}
