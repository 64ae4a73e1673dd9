mod sim_common;
use sim_common::*;
use walq::vfs::SimFs;
#[test]
fn determinism() {
    let mut v = Vec::new();
    for _ in 0..6 {
        let mut run = Run::start(SimFs::new(), 11, None);
        mixed_workload(&mut run, 450, false);
        let syncs: Vec<u64> = run.m.ops.iter().map(|o| o.syncs).collect();
        v.push(syncs);
    }
    for (i, s) in v.iter().enumerate() {
        let first_diff = s.iter().zip(&v[0]).position(|(a, b)| a != b);
        eprintln!(
            "{i}: total {} first diff at op {:?}",
            s.last().unwrap(),
            first_diff
        );
    }
}
