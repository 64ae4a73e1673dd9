//! Typed jobs: values in, values out, across deploys, and undecodable
//! payloads parked in the dead letters instead of crashing a worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use walq::typed::{self, Jobs};
use walq::worker::{JobContext, Outcome, WorkerPool};
use walq::{EnqueueOptions, ErrorKind, Queue};

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Email {
    to: String,
    subject: String,
}

#[test]
fn typed_jobs_reach_the_handler_as_values_with_the_same_options() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let mails = Jobs::<Email>::new(q.clone());
    let ada = Email {
        to: "ada@example.com".into(),
        subject: "welcome".into(),
    };
    let first = mails
        .enqueue_with(&ada, EnqueueOptions::new().idempotency_key("welcome/ada"))
        .unwrap();
    let again = mails
        .enqueue_with(&ada, EnqueueOptions::new().idempotency_key("welcome/ada"))
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(first.id, again.id);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let pool = {
        let seen = seen.clone();
        WorkerPool::builder(q.clone())
            .workers(2)
            .start_typed(move |ctx: &JobContext, mail: Email| {
                let key = ctx.idempotency_key().map(<[u8]>::to_vec);
                seen.lock().unwrap().push((ctx.id(), key, mail));
                Outcome::done()
            })
            .unwrap()
    };
    wait_until("the job ran", || pool.stats().done == 1);
    pool.shutdown(Duration::from_secs(60));
    let seen = seen.lock().unwrap();
    assert_eq!(*seen, [(first.id, Some(b"welcome/ada".to_vec()), ada)]);
}

#[test]
fn a_payload_that_does_not_decode_goes_to_the_dead_letters_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let garbage = q.enqueue(b"\xff not json").unwrap();
    let wrong_shape = q.enqueue(br#"{"to": 5}"#).unwrap();
    let good = Jobs::<Email>::new(q.clone())
        .enqueue(&Email {
            to: "bob@example.com".into(),
            subject: "hi".into(),
        })
        .unwrap();
    let pool = WorkerPool::builder(q.clone())
        .workers(1) // the one worker must survive the bad payloads
        .start_typed(|_: &JobContext, _: Email| Outcome::done())
        .unwrap();
    wait_until("all three are settled", || pool.stats().processed() == 3);
    let s = pool.shutdown(Duration::from_secs(60)).stats;
    assert_eq!((s.done, s.dead, s.panicked), (1, 2, 0));
    for id in [garbage, wrong_shape] {
        let dead = q.dead_letter(id).unwrap().expect("dead letter");
        assert!(
            dead.error
                .starts_with("payload does not decode as typed::Email: "),
            "{}",
            dead.error
        );
        assert_eq!(dead.attempts, 1, "not retried: it will never decode");
    }
    let wrong = q.dead_letter(wrong_shape).unwrap().unwrap().error;
    assert!(wrong.contains("invalid type: integer `5`"), "{wrong}");
    assert!(q.dead_letter(good).unwrap().is_none());
}

mod v1 {
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Email {
        pub to: String,
        pub subject: String,
    }
}

mod v2 {
    /// The next deploy adds fields with defaults and drops none.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    pub struct Email {
        pub to: String,
        pub subject: String,
        #[serde(default)]
        pub cc: Vec<String>,
        #[serde(default = "normal")]
        pub priority: u8,
    }

    fn normal() -> u8 {
        5
    }
}

#[test]
fn a_job_enqueued_by_the_old_version_decodes_in_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        // Version 1 of the program enqueues, then stops.
        let q = Queue::open(dir.path()).unwrap();
        let old = v1::Email {
            to: "ada@example.com".into(),
            subject: "receipt".into(),
        };
        Jobs::<v1::Email>::new(q).enqueue(&old).unwrap()
    };
    // Version 2 starts on the same directory.
    let q = Queue::open(dir.path()).unwrap();
    let got = Arc::new(Mutex::new(None));
    let pool = {
        let got = got.clone();
        WorkerPool::builder(q.clone())
            .workers(1)
            .start_typed(move |ctx: &JobContext, mail: v2::Email| {
                *got.lock().unwrap() = Some((ctx.id(), mail));
                Outcome::done()
            })
            .unwrap()
    };
    wait_until("the old job ran", || pool.stats().processed() == 1);
    let s = pool.shutdown(Duration::from_secs(60)).stats;
    assert_eq!((s.done, s.dead), (1, 0));
    let (got_id, mail) = got.lock().unwrap().take().unwrap();
    assert_eq!(got_id, id);
    assert_eq!(
        (mail.to.as_str(), mail.subject.as_str()),
        ("ada@example.com", "receipt")
    );
    assert!(mail.cc.is_empty());
    assert_eq!(mail.priority, 5);

    // And back: a rolled-back version 1 ignores the fields it does not know.
    let new = typed::encode(&v2::Email {
        to: "bob@example.com".into(),
        subject: "hi".into(),
        cc: vec!["carol@example.com".into()],
        priority: 1,
    })
    .unwrap();
    let old: v1::Email = typed::decode(&new).unwrap();
    assert_eq!(old.to, "bob@example.com");
}

#[test]
fn values_json_cannot_hold_are_refused_not_panicked_on() {
    let mut bad = HashMap::new();
    bad.insert((1u8, 2u8), "tuple keys are not JSON object keys");
    let err = typed::encode(&bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
    let err = typed::decode::<Email>(b"[1, 2]").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
    assert!(err.to_string().contains("typed::Email"), "{err}");
}

#[derive(Serialize, Deserialize)]
struct Reading {
    sensor: u32,
    celsius: f64,
}

/// serde_json writes a NaN or infinite `f64` as `null`, which does not
/// decode as an `f64`: such a job was accepted and then dead-lettered by
/// the first worker to lease it (a review found it). It is refused at
/// enqueue, with an error that says why, and nothing is enqueued.
#[test]
fn a_job_that_would_not_decode_is_refused_at_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let readings = Jobs::<Reading>::new(q.clone());
    for celsius in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let bad = Reading { sensor: 7, celsius };
        let bytes = typed::encode(&bad).unwrap();
        assert!(typed::decode::<Reading>(&bytes).is_err(), "the cause");
        let err = readings.enqueue(&bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOptions);
        let text = err.to_string();
        for part in ["typed::Reading", "NaN", "null, expected f64"] {
            assert!(text.contains(part), "{part:?} not in {text:?}");
        }
    }
    assert!(q.dequeue().unwrap().is_none(), "nothing was enqueued");
    let fine = Reading {
        sensor: 7,
        celsius: 21.5,
    };
    let id = readings.enqueue(&fine).unwrap();
    assert_eq!(q.dequeue().unwrap().unwrap().id(), id);
}

/// Several kinds of job on one queue and one pool: an enum tagged by
/// serde, one handler that matches on it.
mod kinds {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    pub enum Task {
        Email { to: String },
        Resize { photo: u64, width: u32 },
    }

    /// The deploy before `Task::Resize` existed.
    pub mod old {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum Task {
            Email { to: String },
        }
    }
}

#[test]
fn several_job_kinds_share_a_queue_through_a_tagged_enum() {
    use kinds::Task;
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let tasks = Jobs::<Task>::new(q.clone());
    let mail = tasks.enqueue(&Task::Email { to: "ada".into() }).unwrap();
    let resize = Task::Resize {
        photo: 7,
        width: 640,
    };
    let photo = tasks.enqueue(&resize).unwrap();
    assert_eq!(
        q.dequeue().unwrap().map(|j| j.payload().to_vec()),
        Some(br#"{"kind":"email","to":"ada"}"#.to_vec()),
        "the tag names the kind in the payload"
    );
    // That lease is not acked: the pool below gets the job when it runs out.
    drop(q.close());
    let q = Queue::open(dir.path()).unwrap();

    // A worker of the deploy before `Resize` existed runs the mail and
    // parks the resize in the dead letters, naming the unknown kind.
    let old = WorkerPool::builder(q.clone())
        .workers(1)
        .start_typed(|_: &JobContext, _: kinds::old::Task| Outcome::done())
        .unwrap();
    wait_until("both are settled", || old.stats().processed() == 2);
    let s = old.shutdown(Duration::from_secs(60)).stats;
    assert_eq!((s.done, s.dead), (1, 1));
    let dead = q.dead_letter(photo).unwrap().expect("the resize is dead");
    assert!(
        dead.error.contains("unknown variant `resize`"),
        "{}",
        dead.error
    );
    assert!(q.dead_letter(mail).unwrap().is_none());

    // The new deploy runs every kind: the resize, redriven, reaches it.
    q.redrive(photo).unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let new = {
        let ran = ran.clone();
        WorkerPool::builder(q.clone())
            .workers(1)
            .start_typed(move |ctx: &JobContext, task: Task| {
                ran.lock().unwrap().push((ctx.id(), task));
                Outcome::done()
            })
            .unwrap()
    };
    wait_until("the resize ran", || new.stats().processed() == 1);
    assert_eq!(new.shutdown(Duration::from_secs(60)).stats.done, 1);
    assert_eq!(*ran.lock().unwrap(), [(photo, resize)]);
}
