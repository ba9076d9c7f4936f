//! The same W1 and W2 on raw apalis-postgres 1.0: its schema (`PostgresStorage::setup`), its
//! bulk insert (`queries::push_tasks`), single pushes (`TaskSink::push`) and apalis Workers with
//! a recording no-op handler. TLS is off (`sslmode=disable`) exactly as for wharf.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use apalis::{
    layers::limit::GlobalConcurrencyLimitLayer,
    prelude::{BoxDynError, Data, TaskBuilder, TaskSink, WorkerBuilder, WorkerError},
};
use apalis_postgres::{Config, PgTask, PostgresStorage, queries::push_tasks};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::{
    Limits, W1, W2,
    db::TempPg,
    record::{Cpu, Recorder, exactly_once, late_jobs, latency, span},
};

const QUEUE: &str = "bench";

/// The job: its sequence number is its identity for the exactly-once check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchArgs {
    pub seq: u64,
}

async fn noop(args: BenchArgs, rec: Data<Arc<Recorder<u64>>>) -> Result<(), BoxDynError> {
    rec.record(args.seq);
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ApalisConfig {
    pub name: &'static str,
    /// `Config::batch_size` (apalis' default is 10).
    pub batch: usize,
    /// apalis Workers in the process, each with its own `PostgresStorage` and listener.
    pub workers: usize,
    /// In-flight jobs across the process (one shared tower concurrency limit).
    pub concurrency: usize,
}

impl ApalisConfig {
    /// Claimed per fetch across the process, and the most it can hold at once: every Worker's
    /// fetched-but-not-started buffer plus the jobs running.
    pub fn claim_ahead(&self) -> String {
        format!(
            "{} ({}×{} batch; ≤{} held with running)",
            self.batch * self.workers,
            self.workers,
            self.batch,
            self.batch * self.workers + self.concurrency
        )
    }

    fn storage(&self, pool: &PgPool) -> PostgresStorage<BenchArgs> {
        PostgresStorage::new(pool).with_config(Config::default().queue(QUEUE).batch_size(self.batch))
    }
}

async fn pool(url: &str, max: u32) -> Result<PgPool> {
    Ok(PgPoolOptions::new().max_connections(max).connect(url).await?)
}

struct Running {
    stop: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<Result<(), WorkerError>>>,
}

/// Starts `cfg.workers` apalis Workers on `pool`, woken by LISTEN/NOTIFY (`with_pubsub`, the
/// README's listener setup; without it nothing polls and a job from another connection waits
/// for the 30 s heartbeat).
fn start(cfg: &ApalisConfig, pool: &PgPool, rec: &Arc<Recorder<u64>>) -> Running {
    let stop = CancellationToken::new();
    let limit = GlobalConcurrencyLimitLayer::new(cfg.concurrency);
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut handles = Vec::new();
    for w in 0..cfg.workers {
        let backend = cfg.storage(pool).with_pubsub();
        let worker = WorkerBuilder::new(format!("bench-{run}-{w}"))
            .backend(backend)
            .data(rec.clone())
            .layer(limit.clone())
            .build(noop);
        let token = stop.clone();
        handles.push(tokio::spawn(worker.run_until(async move {
            token.cancelled().await;
            Ok::<(), WorkerError>(())
        })));
    }
    Running { stop, handles }
}

impl Running {
    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        for h in self.handles {
            match tokio::time::timeout(Duration::from_secs(60), h).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => bail!("apalis worker failed: {e}"),
                Ok(Err(e)) => bail!("apalis worker panicked: {e}"),
                Err(_) => bail!("apalis worker did not stop within 60 s"),
            }
        }
        Ok(())
    }
}

async fn done(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'")
        .bind(QUEUE)
        .fetch_one(pool)
        .await?)
}

async fn statuses(pool: &PgPool) -> Result<String> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM apalis.jobs WHERE job_type = $1 GROUP BY 1 ORDER BY 1")
            .bind(QUEUE)
            .fetch_all(pool)
            .await?;
    Ok(rows.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", "))
}

async fn wait_acked(pool: &PgPool, n: usize, limit: Duration) -> Result<Option<Instant>> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done(pool).await? >= n as i64 {
            return Ok(Some(Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(None)
}

async fn fresh(pg_base: &str) -> Result<(TempPg, PgPool)> {
    let db = TempPg::create(pg_base).await?;
    let setup = async {
        let pool = pool(&db.url, 10).await?;
        PostgresStorage::setup(&pool).await.map_err(|e| anyhow!("apalis setup: {e}"))?;
        Ok::<_, anyhow::Error>(pool)
    }
    .await;
    match setup {
        Ok(pool) => Ok((db, pool)),
        Err(e) => {
            db.drop_db().await.ok();
            Err(e)
        }
    }
}

pub async fn w1(pg_base: &str, cfg: &ApalisConfig, n: usize, chunk: usize, limits: Limits) -> Result<W1> {
    let (db, pool) = fresh(pg_base).await?;
    let name = db.name.clone();
    let r = w1_on(&pool, cfg, n, chunk, limits).await;
    pool.close().await;
    db.drop_db().await.context("cleaning up")?;
    r.map(|mut w| {
        w.details.insert(0, format!("fresh database {name}"));
        w
    })
}

async fn w1_on(pool: &PgPool, cfg: &ApalisConfig, n: usize, chunk: usize, limits: Limits) -> Result<W1> {
    let seqs: Vec<u64> = (0..n as u64).collect();
    let tasks: Vec<PgTask> = seqs
        .iter()
        .map(|&seq| Ok(TaskBuilder::new(serde_json::to_vec(&BenchArgs { seq })?).build()))
        .collect::<Result<_>>()?;

    let t = Instant::now();
    let mut it = tasks.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<PgTask> = it.by_ref().take(chunk.max(1)).collect();
        let mut tx = pool.begin().await?;
        push_tasks(&mut *tx, QUEUE, batch).await.map_err(|e| anyhow!("push_tasks: {e}"))?;
        tx.commit().await?;
    }
    let enqueue = t.elapsed();

    let rec = Arc::new(Recorder::new(n));
    let cpu0 = Cpu::now();
    let started = Instant::now();
    let running = start(cfg, pool, &rec);
    let reached = rec.wait_for(n, limits.stall, limits.total).await;
    // A job is done when `Done` is in apalis.jobs: poll for the last acks (10 ms).
    let acked = if reached { wait_acked(pool, n, limits.stall).await? } else { None };
    let cpu = Cpu::now().since(cpu0);
    running.stop().await?;

    let events = rec.events();
    let once = exactly_once(&seqs, &events);
    let (first, last) = span(&events).unwrap_or((started, started));
    let end = acked.unwrap_or(last);
    let drain = end.duration_since(first);
    let mut details = vec![
        format!(
            "enqueue: {n} jobs in {:.3} s via queries::push_tasks in chunks of {chunk}, one transaction each",
            enqueue.as_secs_f64()
        ),
        format!(
            "drain: worker start → first completion {:.1} ms; first completion → all `Done` seen in apalis.jobs {:.3} s \
             (the handlers were done after {:.3} s: {:.0} jobs/s executed; all `Done` seen {:.0} ms after the last execution, 10 ms polling)",
            first.duration_since(started).as_secs_f64() * 1e3,
            drain.as_secs_f64(),
            last.duration_since(first).as_secs_f64(),
            n.saturating_sub(1) as f64 / last.duration_since(first).as_secs_f64().max(1e-9),
            end.saturating_duration_since(last).as_secs_f64() * 1e3,
        ),
        cpu.describe() + &format!(" over {:.2} s from worker start", end.duration_since(started).as_secs_f64()),
    ];
    if !reached {
        details.push(format!("gave up: {} of {n} executions recorded", events.len()));
    }
    if acked.is_none() {
        details.push(format!("apalis.jobs never showed all {n} jobs Done: {}", statuses(pool).await?));
    }
    Ok(W1 {
        enqueue_per_s: n as f64 / enqueue.as_secs_f64(),
        drain_per_s: if drain.is_zero() { 0.0 } else { n.saturating_sub(1) as f64 / drain.as_secs_f64() },
        once,
        complete: reached && acked.is_some(),
        details,
    })
}

pub async fn w2(pg_base: &str, cfg: &ApalisConfig, jobs: usize, rate: f64, limits: Limits) -> Result<W2> {
    let (db, pool) = fresh(pg_base).await?;
    let name = db.name.clone();
    let r = w2_on(&db.url, &pool, cfg, jobs, rate, limits).await;
    pool.close().await;
    db.drop_db().await.context("cleaning up")?;
    r.map(|mut w| {
        w.details.insert(0, format!("fresh database {name}"));
        w
    })
}

async fn w2_on(url: &str, pool: &PgPool, cfg: &ApalisConfig, jobs: usize, rate: f64, limits: Limits) -> Result<W2> {
    let rec = Arc::new(Recorder::new(jobs));
    let running = start(cfg, pool, &rec);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The producer has its own pool, as a separate process would.
    let producer_pool = self::pool(url, 2).await?;
    let mut sink = cfg.storage(&producer_pool);
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut sent: Vec<(u64, Instant)> = Vec::with_capacity(jobs);
    let mut enqueue_ms = Vec::with_capacity(jobs);
    let t0 = tokio::time::Instant::now();
    let t0_std = Instant::now();
    for i in 0..jobs {
        tokio::time::sleep_until(t0 + period * i as u32).await;
        let seq = i as u64;
        let at = Instant::now();
        sink.push(BenchArgs { seq }).await.map_err(|e| anyhow!("push: {e}"))?;
        enqueue_ms.push(at.elapsed().as_secs_f64() * 1e3);
        sent.push((seq, at));
    }
    let produced = t0.elapsed();
    let reached = rec.wait_for(jobs, limits.stall, limits.total).await;
    running.stop().await?;
    producer_pool.close().await;

    let events = rec.events();
    let seqs: Vec<u64> = sent.iter().map(|s| s.0).collect();
    let once = exactly_once(&seqs, &events);
    let at: HashMap<u64, Instant> = sent.iter().copied().collect();
    let mut first: HashMap<u64, Instant> = HashMap::new();
    for (seq, t) in events {
        first.entry(seq).and_modify(|f| *f = (*f).min(t)).or_insert(t);
    }
    let lat_ms: Vec<f64> = first
        .iter()
        .filter_map(|(seq, started)| Some(started.saturating_duration_since(*at.get(seq)?).as_secs_f64() * 1e3))
        .collect();
    let enq = latency(enqueue_ms);
    let late = late_jobs(&sent, &first, t0_std);
    let mut details = vec![format!(
        "produced {jobs} single pushes (TaskSink::push) in {:.2} s (target {:.2} s); push call p50 {:.2} ms, max {:.1} ms",
        produced.as_secs_f64(),
        jobs as f64 / rate,
        enq.map_or(0.0, |l| l.p50),
        enq.map_or(0.0, |l| l.max)
    )];
    details.push(late);
    if !reached {
        details.push(format!("gave up: {} of {jobs} executions recorded", first.len()));
    }
    Ok(W2 { latency: latency(lat_ms), once, complete: reached, details })
}
