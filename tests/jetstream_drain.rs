//! `examples/drain_to_jetstream.rs` moves an embedded queue into a
//! JetStream queue with no job lost and none doubled, also when a first
//! run is interrupted between the enqueue and the ack.

mod nats_cluster;

#[path = "../examples/drain_to_jetstream.rs"]
#[allow(dead_code)]
mod drain;

use std::collections::HashMap;
use std::time::Duration;

use walq::worker::Backend;
use walq::{EnqueueOptions, Options, Queue};

#[test]
fn an_embedded_queue_drains_into_jetstream_with_no_job_lost_or_doubled() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "drained");
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().visibility_timeout(Duration::from_millis(300));
    let q = Queue::open_with(dir.path(), opts).unwrap();
    for n in 0..40 {
        q.enqueue(format!("job {n}").as_bytes()).unwrap();
    }
    q.enqueue_with(b"keyed", EnqueueOptions::new().idempotency_key("order-1"))
        .unwrap();
    q.enqueue_with(
        b"later",
        EnqueueOptions::new().delay(Duration::from_secs(1)),
    )
    .unwrap();

    // An interrupted first run: three jobs reach JetStream, none is acked.
    for _ in 0..3 {
        let job = q.dequeue().unwrap().unwrap();
        let key = EnqueueOptions::new().idempotency_key(drain::key_of(&job));
        js.enqueue(job.payload(), key).unwrap();
    }
    let done = drain::drain(&q, &js).unwrap();
    assert_eq!(
        done,
        drain::Drained {
            moved: 39,
            already_there: 3
        }
    );
    let s = q.stats();
    assert_eq!(s.ready + s.delayed + s.in_flight + s.dead, 0);

    // JetStream holds each payload exactly once.
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
    while let Some(d) = js
        .lease(Duration::from_secs(30), Duration::from_secs(2))
        .unwrap()
    {
        *seen.entry(d.payload().to_vec()).or_default() += 1;
        js.complete(d.lease(), None).unwrap();
    }
    assert_eq!(seen.len(), 42);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    assert!(seen.contains_key(&b"later"[..]) && seen.contains_key(&b"keyed"[..]));
}
