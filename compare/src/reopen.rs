//! The reopen row: `jobs` jobs are queued and the queue is closed
//! (untimed); then the time to open it again and take the first job, the
//! median of `runs` reopens of the same queue (page cache warm: the files
//! were just written). Each system takes its first job the way its
//! dequeue row does, without the ack.

use std::any::Any;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{disk_bytes, fj, sq, tempdir, Measure, Res, Row};

/// What a reopen returns: the open queue, closed (dropped) after the clock
/// stops.
type Handle = Box<dyn Any>;

/// Fills a fresh directory with `fill`, then times `runs` calls of
/// `open_first`; the median becomes the row's wall time (one "job").
fn reopen(
    system: &'static str,
    mode: &str,
    runs: usize,
    fill: impl FnOnce(&Path) -> Res<()>,
    open_first: impl Fn(&Path) -> Res<Handle>,
) -> Row {
    let dir = tempdir();
    let result = fill(dir.path()).and_then(|()| {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let start = Instant::now();
            let handle = open_first(dir.path())?;
            times.push(start.elapsed());
            drop(handle);
        }
        times.sort_unstable();
        Ok(Measure {
            jobs: 1,
            elapsed: times[times.len() / 2],
            cpu: 0.0,
            disk: disk_bytes(dir.path()),
            lat: times,
        })
    });
    match &result {
        Ok(m) => eprintln!(
            "  {system:<10} {mode:<40} {:>10.3} ms (median; {:?})",
            m.elapsed.as_secs_f64() * 1e3,
            m.lat
        ),
        Err(e) => eprintln!("  {system:<10} {mode:<40} failed: {e}"),
    }
    Row {
        system,
        mode: mode.to_string(),
        result,
    }
}

/// One row per system: `jobs` queued jobs of payload `p`, `runs` reopens.
pub fn rows(jobs: u64, p: &[u8], runs: usize) -> Vec<Row> {
    vec![
        walq(jobs, p, runs),
        sqlite(jobs, p, runs),
        fjall(jobs, p, runs),
        yaque(jobs, p, runs),
        queue_file(jobs, p, runs),
        redb(jobs, p, runs),
    ]
}

fn chunks(jobs: u64, size: u64, mut f: impl FnMut(usize) -> Res<()>) -> Res<()> {
    let mut left = jobs;
    while left > 0 {
        let k = left.min(size);
        f(k as usize)?;
        left -= k;
    }
    Ok(())
}

fn walq(jobs: u64, p: &[u8], runs: usize) -> Row {
    use walq::{Durability, Options, Queue};
    let fill = |d: &Path| {
        let q = Queue::open_with(d, Options::default().durability(Durability::Os))?;
        chunks(jobs, 1000, |k| {
            q.enqueue_batch(std::iter::repeat_n(p, k))?;
            Ok(())
        })?;
        q.close()?;
        Ok(())
    };
    /// Ends the queue the documented way, as each peer's drop ends it:
    /// `close()` writes the checkpoint the next open reads. (Dropped
    /// without it, the next open also reads the checkpoint but then scans
    /// the rest of the active segment to find where the log ends.)
    struct Closing(Queue);
    impl Drop for Closing {
        fn drop(&mut self) {
            let _ = self.0.close();
        }
    }
    reopen("walq", "Queue::open + dequeue, close()", runs, fill, |d| {
        let q = Queue::open(d)?;
        let job = q.dequeue()?.ok_or("walq: empty after reopen")?;
        std::hint::black_box(job.payload());
        Ok(Box::new(Closing(q)) as Handle)
    })
}

fn sqlite(jobs: u64, p: &[u8], runs: usize) -> Row {
    let fill = |d: &Path| {
        let mut c = sq::open(d, "NORMAL")?;
        let tx = c.transaction()?;
        {
            let mut st = tx.prepare_cached(sq::INSERT)?;
            for _ in 0..jobs {
                st.execute(rusqlite::params![p])?;
            }
        }
        tx.commit()?;
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        Ok(())
    };
    reopen("SQLite", "open (WAL, FULL) + claim", runs, fill, |d| {
        let c = sq::open(d, "FULL")?;
        std::hint::black_box(sq::claim(&c)?);
        Ok(Box::new(c) as Handle)
    })
}

fn fjall(jobs: u64, p: &[u8], runs: usize) -> Row {
    let fill = |d: &Path| fj::fill(&fj::open(d)?, jobs, p);
    reopen(
        "fjall",
        "Database::open + first_key_value",
        runs,
        fill,
        |d| {
            let q = fj::open(d)?;
            std::hint::black_box(q.peek()?.ok_or("fjall: empty after reopen")?);
            Ok(Box::new(q) as Handle)
        },
    )
}

fn yaque(jobs: u64, p: &[u8], runs: usize) -> Row {
    let fill = |d: &Path| {
        let mut tx = yaque::Sender::open(d)?;
        chunks(jobs, 100, |k| {
            tx.try_send_batch(std::iter::repeat_n(p, k))
                .map_err(|e| format!("yaque send: {e:?}").into())
        })
    };
    reopen("yaque", "Receiver::open + recv", runs, fill, |d| {
        let mut rx = yaque::Receiver::open(d)?;
        {
            let guard = futures::executor::block_on(rx.recv())?;
            std::hint::black_box(&*guard);
            guard.rollback()?;
        }
        Ok(Box::new(rx) as Handle)
    })
}

fn queue_file(jobs: u64, p: &[u8], runs: usize) -> Row {
    use queue_file::QueueFile;
    let fill = |d: &Path| {
        let mut q = QueueFile::open(d.join("queue"))?;
        q.set_sync_writes(false);
        chunks(jobs, 100, |k| {
            q.add_n(std::iter::repeat_n(p, k))?;
            Ok(())
        })?;
        q.sync_all()?;
        Ok(())
    };
    reopen("queue-file", "QueueFile::open + peek", runs, fill, |d| {
        let mut q = QueueFile::open(d.join("queue"))?;
        std::hint::black_box(q.peek()?.ok_or("queue-file: empty after reopen")?);
        Ok(Box::new(q) as Handle)
    })
}

fn redb(jobs: u64, p: &[u8], runs: usize) -> Row {
    use redb::{Database, ReadableTable, TableDefinition};
    const Q: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
    let fill = |d: &Path| {
        let db = Database::create(d.join("queue.redb"))?;
        let mut id = 0u64;
        chunks(jobs, 1000, |k| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(Q)?;
                for _ in 0..k {
                    t.insert(id, p)?;
                    id += 1;
                }
            }
            tx.commit()?;
            Ok(())
        })
    };
    reopen("redb", "Database::open + first", runs, fill, |d| {
        let db = Database::open(d.join("queue.redb"))?;
        {
            let t = db.begin_read()?.open_table(Q)?;
            let (_, v) = t.first()?.ok_or("redb: empty after reopen")?;
            std::hint::black_box(v.value());
        }
        Ok(Box::new(db) as Handle)
    })
}

/// Formats a duration for the reopen table.
pub fn fmt_time(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}
