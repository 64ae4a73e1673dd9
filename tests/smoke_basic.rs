use walq::*;
#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(
        dir.path(),
        Options::default()
            .segment_size(1 << 16)
            .durability(Durability::Os),
    )
    .unwrap();
    for i in 0..2000u32 {
        q.enqueue(&i.to_le_bytes()).unwrap();
    }
    q.check_invariants();
    let mut n = 0u32;
    while let Some(j) = q.dequeue().unwrap() {
        assert_eq!(j.payload(), &n.to_le_bytes());
        q.ack(j.receipt()).unwrap();
        n += 1;
        if n % 500 == 0 {
            q.check_invariants();
        }
    }
    assert_eq!(n, 2000);
    let s = q.stats();
    println!("{s:?}");
    assert!(s.segments <= 2);
    drop(q);
    let q = Queue::open_with(dir.path(), Options::default().segment_size(1 << 16)).unwrap();
    assert!(q.dequeue().unwrap().is_none());
    q.enqueue(b"x").unwrap();
    drop(q);
    let q = Queue::open(dir.path()).unwrap();
    let j = q.dequeue().unwrap().unwrap();
    assert_eq!(j.payload(), b"x");
    drop(q);
    let q = Queue::open(dir.path()).unwrap();
    let j = q.dequeue().unwrap().unwrap();
    assert_eq!(j.attempt(), 2);
    println!("{:?}", q.recovery_report());
}
