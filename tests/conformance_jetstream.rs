//! The conformance suite (`tests/conformance/`) on a 3-node JetStream
//! cluster (R3 streams and bucket). Needs nats-server 2.12+ (see
//! `tests/nats_cluster`); without one every test fails, saying so.

mod conformance;
mod nats_cluster;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use conformance::{Harness, Setup};
use nats_cluster::Cluster;
use walq::jetstream::JetStream;
use walq::{Backoff, DeadLetter};

/// One cluster for the whole test binary; a fresh queue (streams,
/// consumer, bucket) per test.
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

struct Nats;

impl Harness for Nats {
    type B = JetStream;

    fn fresh(&self, setup: Setup) -> JetStream {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        cluster().connect(
            |cfg| {
                cfg.replicas(3)
                    .max_attempts(setup.max_attempts)
                    .ack_wait(setup.visibility)
                    .backoff(Backoff {
                        initial: setup.backoff,
                        multiplier: 1.0,
                        max: setup.backoff,
                        jitter: 0.0,
                    })
            },
            &name,
        )
    }

    fn dead_letters(&self, b: &JetStream) -> Vec<DeadLetter> {
        b.dead_letters().unwrap()
    }

    fn redrive(&self, b: &JetStream, id: u64) {
        b.redrive(id).unwrap()
    }

    fn purge(&self, b: &JetStream, id: u64) {
        b.purge(id).unwrap()
    }
}

conformance_tests!(Nats);
