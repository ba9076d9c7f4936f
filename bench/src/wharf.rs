//! W1 and W2 through wharf's own pipeline: `Store::enqueue_many` / `Store::enqueue`, and one
//! in-process `Worker` (the real runtime: fetcher, prefetch, acker, heartbeat, rescuer) whose
//! `diagnostic` pool runs a recording no-op handler.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;
use wharf_jobs::{
    JobId, NewJob, Store, StoreConfig,
    kinds::{JobKind, diagnostic::DiagnosticJob},
    queue,
    retry::RetryPolicy,
    store::{PostgresStore, SqliteStore},
};
use wharf_workers::{
    Handler, JobContext, JobResult,
    registry::Registry,
    runtime::{RuntimeConfig, Worker},
};

use crate::{
    Limits, W1, W2,
    db::{TempPg, TempSqlite},
    record::{Cpu, Recorder, exactly_once, late_jobs, latency, span},
    timed::TimedStore,
};

const TENANT: &str = "bench";

/// Where and how the fresh stores are made.
pub struct Setup<'a> {
    /// PostgreSQL server URL without a database.
    pub pg_base: &'a str,
    /// SQL run on each fresh PostgreSQL database after the migrations (what-if experiments).
    pub pg_experiment: Option<&'a str>,
    /// Extra URL parameters for wharf's PostgreSQL stores (e.g. `options[synchronous_commit]=off`).
    pub pg_params: Option<&'a str>,
    /// Overrides the SQLite store's pool size (`StoreConfig::pool_max`).
    pub sqlite_pool_max: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Runs the diagnostic no-op and records which job ran when. The stock `DiagnosticHandler`
/// does the same minus the recording.
struct RecordingNoop {
    rec: Arc<Recorder<JobId>>,
}

#[async_trait]
impl Handler<DiagnosticJob> for RecordingNoop {
    async fn handle(&self, ctx: &JobContext, job: DiagnosticJob) -> JobResult {
        self.rec.record(ctx.id);
        match job {
            DiagnosticJob::Noop => Ok(None),
            other => Err(wharf_workers::JobError::permanent(format!("the bench only enqueues no-ops, got {other:?}"))),
        }
    }
}

/// A fresh store: its own database or file, migrated. `close` releases it.
struct Fresh {
    store: Arc<dyn Store>,
    /// A second store on the same database for W2's producer (PostgreSQL: its own pool, as
    /// an API process would have). SQLite shares the worker's store, as `wharf serve` does:
    /// its wake-ups are in-process.
    producer: Arc<dyn Store>,
    pools: Vec<Pool>,
    place: Place,
}

enum Pool {
    Pg(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

enum Place {
    Pg(TempPg),
    Sqlite(TempSqlite),
}

impl Fresh {
    async fn open(backend: Backend, setup: &Setup<'_>) -> Result<Fresh> {
        match backend {
            Backend::Postgres => {
                let db = TempPg::create(setup.pg_base).await?;
                let cfg = StoreConfig::new(match setup.pg_params {
                    Some(p) => format!("{}&{p}", db.url),
                    None => db.url.clone(),
                });
                let opened = async {
                    let store = Arc::new(PostgresStore::connect(&cfg).await?);
                    let producer = Arc::new(PostgresStore::connect(&cfg).await?);
                    store.migrate().await?;
                    if let Some(sql) = setup.pg_experiment {
                        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                            .execute(store.pool())
                            .await
                            .context("--pg-experiment")?;
                    }
                    Ok::<_, anyhow::Error>((store, producer))
                }
                .await;
                match opened {
                    Ok((store, producer)) => Ok(Fresh {
                        pools: vec![Pool::Pg(store.pool().clone()), Pool::Pg(producer.pool().clone())],
                        store,
                        producer,
                        place: Place::Pg(db),
                    }),
                    Err(e) => {
                        db.drop_db().await.ok();
                        Err(e)
                    }
                }
            }
            Backend::Sqlite => {
                let file = TempSqlite::new();
                let mut cfg = StoreConfig::new(&file.url);
                if let Some(max) = setup.sqlite_pool_max {
                    cfg.pool_max = max;
                }
                let store = Arc::new(SqliteStore::connect(&cfg).await?);
                store.migrate().await?;
                Ok(Fresh {
                    pools: vec![Pool::Sqlite(store.pool().clone())],
                    producer: store.clone(),
                    store,
                    place: Place::Sqlite(file),
                })
            }
        }
    }

    fn describe(&self) -> String {
        match &self.place {
            Place::Pg(db) => format!("database {}", db.name),
            Place::Sqlite(f) => format!("file {}", f.path().display()),
        }
    }

    async fn close(self) -> Result<()> {
        drop(self.store);
        drop(self.producer);
        for p in self.pools {
            match p {
                // Not `close()`: PostgresStore's LISTEN task keeps a connection of the pool
                // for as long as the process lives (it never ends, even when the store is
                // dropped), so `PgPool::close` would wait forever. The database is dropped
                // WITH (FORCE) below, and each run is its own process.
                Pool::Pg(p) => drop(p),
                Pool::Sqlite(p) => p.close().await,
            }
        }
        match self.place {
            Place::Pg(db) => db.drop_db().await?,
            Place::Sqlite(f) => f.remove(),
        }
        Ok(())
    }
}

fn registry(rec: Arc<Recorder<JobId>>) -> Registry {
    let mut r = Registry::new();
    r.register::<DiagnosticJob, _>(
        RecordingNoop { rec },
        RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(60)),
    );
    r
}

pub async fn w1(
    backend: Backend,
    setup: &Setup<'_>,
    rt: &RuntimeConfig,
    n: usize,
    chunk: usize,
    limits: Limits,
) -> Result<W1> {
    let fresh = Fresh::open(backend, setup).await?;
    let place = fresh.describe();
    let r = w1_on(&fresh, rt, n, chunk, limits).await;
    fresh.close().await.context("cleaning up")?;
    r.map(|mut w| {
        w.details.insert(0, format!("fresh {place}"));
        w
    })
}

async fn w1_on(fresh: &Fresh, rt: &RuntimeConfig, n: usize, chunk: usize, limits: Limits) -> Result<W1> {
    let jobs: Vec<NewJob> = (0..n).map(|_| DiagnosticJob::Noop.into_job(TENANT)).collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();

    let t = Instant::now();
    let mut it = jobs.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<NewJob> = it.by_ref().take(chunk.max(1)).collect();
        fresh.store.enqueue_many(batch).await.context("enqueue_many")?;
    }
    let enqueue = t.elapsed();

    let rec = Arc::new(Recorder::new(n));
    let timed = Arc::new(TimedStore::new(fresh.store.clone()));
    timed.watch_applied(n as u64);
    let worker = Worker::new(timed.clone(), registry(rec.clone()), &[queue::DIAGNOSTIC.to_string()], rt.clone())?;
    let stop = CancellationToken::new();
    let cpu0 = Cpu::now();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(stop.clone()));
    let reached = rec.wait_for(n, limits.stall, limits.total).await;
    // A job is done when its outcome is in the store: wait for the acker's last batch.
    let acked = if reached { timed.wait_applied(limits.stall).await } else { None };
    let cpu = Cpu::now().since(cpu0);
    let timings = timed.take();
    stop.cancel();
    match tokio::time::timeout(Duration::from_secs(60), running).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("worker failed: {e}"),
        Ok(Err(e)) => bail!("worker panicked: {e}"),
        Err(_) => bail!("worker did not stop within 60 s"),
    }

    let events = rec.events();
    let once = exactly_once(&ids, &events);
    let (first, last) = span(&events).unwrap_or((started, started));
    let end = acked.unwrap_or(last);
    let drain = end.duration_since(first);
    let mut details = vec![
        format!("enqueue: {n} jobs in {:.3} s via enqueue_many in chunks of {chunk}", enqueue.as_secs_f64()),
        format!(
            "drain: worker start → first completion {:.1} ms; first completion → last outcome committed {:.3} s \
             (the handlers were done after {:.3} s: {:.0} jobs/s executed; the last ack committed {:.0} ms after the last execution)",
            first.duration_since(started).as_secs_f64() * 1e3,
            drain.as_secs_f64(),
            last.duration_since(first).as_secs_f64(),
            n.saturating_sub(1) as f64 / last.duration_since(first).as_secs_f64().max(1e-9),
            end.saturating_duration_since(last).as_secs_f64() * 1e3,
        ),
        timings.claim.describe("claim")
            + &format!(" (asked {:.1} jobs/call)", timings.claim_asked as f64 / timings.claim.calls.max(1) as f64),
        timings.complete.describe("complete"),
        cpu.describe() + &format!(" over {:.2} s from worker start", end.duration_since(started).as_secs_f64()),
    ];
    if !reached {
        details.push(format!("gave up: {} of {n} executions recorded", events.len()));
    } else if acked.is_none() {
        details.push(format!("the store never reported all {n} outcomes applied"));
    }
    let counts = fresh.store.queue_counts(None).await?;
    let settled = counts.iter().find(|c| c.queue == queue::DIAGNOSTIC).cloned().unwrap_or_default();
    // `done_last_minute` covers the whole drain: a drain slower than a minute is reported as such.
    let consistent =
        settled.done_last_minute == n as i64 && settled.queued + settled.running + settled.retrying + settled.dead == 0;
    if !consistent {
        details.push(format!("store after the run: {settled:?}"));
    }
    Ok(W1 {
        enqueue_per_s: n as f64 / enqueue.as_secs_f64(),
        drain_per_s: if drain.is_zero() { 0.0 } else { n.saturating_sub(1) as f64 / drain.as_secs_f64() },
        once,
        complete: reached && acked.is_some() && consistent,
        details,
    })
}

pub async fn w2(
    backend: Backend,
    setup: &Setup<'_>,
    rt: &RuntimeConfig,
    jobs: usize,
    rate: f64,
    limits: Limits,
) -> Result<W2> {
    let fresh = Fresh::open(backend, setup).await?;
    let place = fresh.describe();
    let r = w2_on(&fresh, rt, jobs, rate, limits).await;
    fresh.close().await.context("cleaning up")?;
    r.map(|mut w| {
        w.details.insert(0, format!("fresh {place}"));
        w
    })
}

async fn w2_on(fresh: &Fresh, rt: &RuntimeConfig, jobs: usize, rate: f64, limits: Limits) -> Result<W2> {
    let rec = Arc::new(Recorder::new(jobs));
    let timed = Arc::new(TimedStore::new(fresh.store.clone()));
    let worker = Worker::new(timed.clone(), registry(rec.clone()), &[queue::DIAGNOSTIC.to_string()], rt.clone())?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    // Let the worker register, LISTEN and find the queue empty before the first job.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let period = Duration::from_secs_f64(1.0 / rate);
    let mut sent: Vec<(JobId, Instant)> = Vec::with_capacity(jobs);
    let mut enqueue_ms = Vec::with_capacity(jobs);
    let t0 = tokio::time::Instant::now();
    let t0_std = Instant::now();
    for i in 0..jobs {
        tokio::time::sleep_until(t0 + period * i as u32).await;
        let job = DiagnosticJob::Noop.into_job(TENANT);
        let id = job.id;
        let at = Instant::now();
        fresh.producer.enqueue(job, None).await.context("enqueue")?;
        enqueue_ms.push(at.elapsed().as_secs_f64() * 1e3);
        sent.push((id, at));
    }
    let produced = t0.elapsed();
    let reached = rec.wait_for(jobs, limits.stall, limits.total).await;
    stop.cancel();
    match tokio::time::timeout(Duration::from_secs(60), running).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("worker failed: {e}"),
        Ok(Err(e)) => bail!("worker panicked: {e}"),
        Err(_) => bail!("worker did not stop within 60 s"),
    }
    let timings = timed.take();

    let events = rec.events();
    let ids: Vec<JobId> = sent.iter().map(|s| s.0).collect();
    let once = exactly_once(&ids, &events);
    let at: HashMap<JobId, Instant> = sent.iter().copied().collect();
    let mut first: HashMap<JobId, Instant> = HashMap::new();
    for (id, t) in events {
        first.entry(id).and_modify(|f| *f = (*f).min(t)).or_insert(t);
    }
    let lat_ms: Vec<f64> = first
        .iter()
        .filter_map(|(id, started)| Some(started.saturating_duration_since(*at.get(id)?).as_secs_f64() * 1e3))
        .collect();
    let enq = latency(enqueue_ms);
    let late = late_jobs(&sent, &first, t0_std);
    let mut details = vec![
        format!(
            "produced {jobs} single enqueues in {:.2} s (target {:.2} s); enqueue call p50 {:.2} ms, max {:.1} ms",
            produced.as_secs_f64(),
            jobs as f64 / rate,
            enq.map_or(0.0, |l| l.p50),
            enq.map_or(0.0, |l| l.max)
        ),
        timings.claim.describe("claim") + " (includes idle polls)",
        timings.complete.describe("complete"),
    ];
    details.push(late);
    if !reached {
        details.push(format!("gave up: {} of {jobs} executions recorded", first.len()));
    }
    Ok(W2 { latency: latency(lat_ms), once, complete: reached, details })
}

/// Jobs a process can hold at once under `rt`: running plus prefetched.
pub fn claim_ahead(rt: &RuntimeConfig) -> String {
    format!("{} ({} running + {} prefetched)", rt.concurrency + rt.prefetch, rt.concurrency, rt.prefetch)
}
