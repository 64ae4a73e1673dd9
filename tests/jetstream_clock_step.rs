//! A step of the wall clock under a held JetStream lease. In a binary of
//! its own: the step (`step_wall_clock_for_tests`) is process-wide. Needs
//! nats-server 2.12+ (see `tests/nats_cluster`).

mod nats_cluster;

use std::time::Duration;

use walq::jetstream::step_wall_clock_for_tests;
use walq::worker::{Backend, JobStatus};
use walq::EnqueueOptions;

const LEASE: Duration = Duration::from_secs(30);

#[test]
fn a_wall_clock_stepped_forward_does_not_expire_a_live_lease() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c.ack_wait(LEASE), "clockstep");
    let id = js.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    let d = js
        .lease(LEASE, Duration::from_secs(10))
        .unwrap()
        .expect("the job");
    // The host's wall clock jumps an hour ahead (NTP, a resumed VM);
    // hardly any time passes, for the lease or the server's AckWait.
    step_wall_clock_for_tests(3_600_000);
    js.extend(d.lease(), LEASE)
        .expect("a heartbeat after the clock step");
    // The record keeps a wall time: the status, read by the (stepped)
    // wall clock, shows the live lease in flight, not expired and queued.
    let status = js.status(id).unwrap();
    assert!(
        matches!(status, JobStatus::InFlight { attempt: 1, .. }),
        "a heartbeated lease after the clock step shows as {status:?}"
    );
    js.complete(d.lease(), None)
        .expect("a complete after the clock step");
    assert!(matches!(js.status(id).unwrap(), JobStatus::Done { .. }));
}
