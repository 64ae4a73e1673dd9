//! The pool drives any `Backend`: here an in-memory one written outside
//! the crate, as a distributed backend would be. Handlers, outcomes,
//! results and counters behave as they do on the embedded queue.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walq::worker::{Backend, Delivery, JobContext, JobStatus, Outcome, WorkerPool};
use walq::{EnqueueOptions, Enqueued, Error, ErrorKind, Jobs, Queue};

const MAX_ATTEMPTS: u32 = 3;

/// A fenced lease: job id and the token of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    id: u64,
    token: u64,
}

#[derive(Default)]
struct State {
    next_id: u64,
    next_token: u64,
    ready: VecDeque<u64>,
    payloads: HashMap<u64, Vec<u8>>,
    attempts: HashMap<u64, u32>,
    leased: HashMap<u64, u64>,
    done: HashMap<u64, Option<Vec<u8>>>,
    dead: HashMap<u64, String>,
    cancelled: Vec<u64>,
}

#[derive(Default)]
struct Memory(Mutex<State>);

impl Memory {
    /// Ends the lease if `lease` still holds it.
    fn settle(&self, lease: &Lease, then: impl FnOnce(&mut State)) -> walq::Result<()> {
        let mut st = self.0.lock().unwrap();
        if st.leased.get(&lease.id) != Some(&lease.token) {
            return Err(lease_lost(lease.id));
        }
        st.leased.remove(&lease.id);
        then(&mut st);
        Ok(())
    }
}

/// The error of a stale lease, built as any backend outside the crate
/// builds its errors.
fn lease_lost(id: u64) -> Error {
    Error::new(
        ErrorKind::LeaseLost,
        format!("job {id}: the lease is no longer current"),
    )
}

impl Backend for Memory {
    type Lease = Lease;

    fn enqueue(&self, payload: &[u8], _opts: EnqueueOptions) -> walq::Result<Enqueued> {
        let mut st = self.0.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        st.payloads.insert(id, payload.to_vec());
        st.ready.push_back(id);
        Ok(Enqueued {
            id,
            duplicate: false,
        })
    }

    fn lease(&self, _vis: Duration, wait: Duration) -> walq::Result<Option<Delivery<Lease>>> {
        let mut st = self.0.lock().unwrap();
        let Some(id) = st.ready.pop_front() else {
            drop(st);
            std::thread::sleep(wait.min(Duration::from_millis(1)));
            return Ok(None);
        };
        st.next_token += 1;
        let token = st.next_token;
        st.leased.insert(id, token);
        let attempt = {
            let a = st.attempts.entry(id).or_insert(0);
            *a += 1;
            *a
        };
        let payload = st.payloads[&id].clone();
        Ok(Some(
            Delivery::new(id, payload, Lease { id, token }).attempts(attempt, MAX_ATTEMPTS),
        ))
    }

    fn complete(&self, lease: &Lease, result: Option<&[u8]>) -> walq::Result<()> {
        let result = result.map(<[u8]>::to_vec);
        self.settle(lease, |st| {
            st.done.insert(lease.id, result);
        })
    }

    fn retry(&self, lease: &Lease, _delay: Option<Duration>, error: &str) -> walq::Result<()> {
        self.settle(lease, |st| {
            if st.attempts[&lease.id] >= MAX_ATTEMPTS {
                st.dead.insert(lease.id, error.to_string());
            } else {
                st.ready.push_back(lease.id);
            }
        })
    }

    fn release(&self, lease: &Lease, _error: &str) -> walq::Result<()> {
        self.settle(lease, |st| {
            *st.attempts.get_mut(&lease.id).expect("leased") -= 1;
            st.ready.push_front(lease.id);
        })
    }

    fn fail(&self, lease: &Lease, error: &str) -> walq::Result<()> {
        self.settle(lease, |st| {
            st.dead.insert(lease.id, error.to_string());
        })
    }

    fn extend(&self, lease: &Lease, _visibility: Duration) -> walq::Result<()> {
        let st = self.0.lock().unwrap();
        if st.leased.get(&lease.id) == Some(&lease.token) {
            Ok(())
        } else {
            Err(lease_lost(lease.id))
        }
    }

    fn status(&self, id: u64) -> walq::Result<JobStatus> {
        let st = self.0.lock().unwrap();
        Ok(if let Some(result) = st.done.get(&id) {
            JobStatus::Done {
                finished_ms: None,
                result: result.clone(),
            }
        } else if let Some(error) = st.dead.get(&id) {
            JobStatus::Dead {
                attempts: st.attempts[&id],
                dead_ms: 0,
                error: error.clone(),
            }
        } else if st.leased.contains_key(&id) {
            JobStatus::InFlight {
                attempt: st.attempts[&id],
                lease_expires_ms: 0,
            }
        } else if st.ready.contains(&id) {
            JobStatus::Queued {
                attempts: st.attempts.get(&id).copied().unwrap_or(0),
            }
        } else if st.cancelled.contains(&id) {
            JobStatus::Purged { purged_ms: 0 }
        } else {
            JobStatus::Unknown
        })
    }

    fn cancel(&self, id: u64) -> walq::Result<()> {
        let mut st = self.0.lock().unwrap();
        if st.leased.contains_key(&id) {
            return Err(Error::new(
                ErrorKind::InFlight,
                format!("job {id} is leased"),
            ));
        }
        let Some(at) = st.ready.iter().position(|&r| r == id) else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no job {id} waits"),
            ));
        };
        st.ready.remove(at);
        st.cancelled.push(id);
        Ok(())
    }
}

#[test]
fn a_pool_runs_unchanged_on_another_backend() {
    let memory = Arc::new(Memory::default());
    let jobs = Jobs::<u32, _>::new(memory.clone());
    let ids: Vec<u64> = (0..30).map(|n| jobs.enqueue(&n).unwrap()).collect();
    // Taken back before any worker sees it: it never runs.
    let cancelled = jobs.enqueue(&99).unwrap();
    memory.cancel(cancelled).unwrap();
    let pool = WorkerPool::builder(memory.clone())
        .workers(3)
        .heartbeat(Duration::from_millis(5))
        .visibility(Duration::from_secs(1))
        .start_typed(|ctx: &JobContext, n: u32| match n % 3 {
            0 => Outcome::done_with(format!("{}", n * 2)),
            1 if ctx.attempt() < 2 => Outcome::retry("flaky"),
            1 => Outcome::done(),
            _ => panic!("poison {n}"),
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // 10 done at once; 10 retried once, then done; 10 panic on all 3 attempts.
    while pool.stats().processed() < 10 + 20 + 30 {
        assert!(Instant::now() < deadline, "{:?}", pool.stats());
        std::thread::sleep(Duration::from_millis(2));
    }
    let s = pool.shutdown(Duration::from_secs(60)).stats;
    assert_eq!((s.done, s.retried, s.dead, s.panicked), (20, 30, 10, 30));
    assert_eq!(s.leased, s.done + s.retried + s.dead);
    let done_with = |result: Option<&[u8]>| JobStatus::Done {
        finished_ms: None,
        result: result.map(<[u8]>::to_vec),
    };
    assert_eq!(memory.status(ids[3]).unwrap(), done_with(Some(b"6")));
    assert_eq!(memory.status(ids[4]).unwrap(), done_with(None));
    assert!(matches!(
        memory.status(ids[5]).unwrap(),
        JobStatus::Dead { attempts: 3, .. }
    ));
    let purged = JobStatus::Purged { purged_ms: 0 };
    assert_eq!(memory.status(cancelled).unwrap(), purged);
    let dead = memory.0.lock().unwrap().dead[&ids[5]].clone();
    assert_eq!(dead, "handler panicked: poison 5");
}

#[test]
fn the_queue_backend_reports_dead_letters_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let id = q.enqueue(b"poison").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "bad").unwrap();
    assert!(matches!(
        Backend::status(&q, id).unwrap(),
        JobStatus::Dead { attempts: 1, ref error, .. } if error == "bad"
    ));
}
