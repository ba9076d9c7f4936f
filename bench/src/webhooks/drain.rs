//! One webhook drain through wharf's real path: endpoints created as the API does (secrets
//! sealed with `WHARF_ENCRYPTION_KEY`), events fanned out by `webhooks::publish`, and one
//! in-process `Worker` whose webhooks pool runs the real `WebhookHandler` (load the endpoint,
//! decrypt, SSRF guard, sign, POST with reqwest, log the attempt) against the local receiver.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wharf_jobs::{
    JobId, Store, StoreConfig,
    config::Env,
    kinds::webhook::WebhookDeliveryJob,
    queue,
    store::{Db, PostgresStore, SqliteStore},
    webhooks::{
        DEFAULT_TIMEOUT_MS, NewEndpoint, NewEvent, Published, SecretBox, WebhookRepo, WebhookSecret, WebhookSettings,
        crypto::endpoint_aad, new_event_id, publish,
    },
};
use wharf_workers::{
    Handler, JobContext, JobResult,
    registry::Registry,
    runtime::{RuntimeConfig, Worker},
    webhooks::{WebhookHandler, retry_policy},
};

use super::{Backend, receiver::Receiver};
use crate::{
    Limits,
    db::{TempPg, TempSqlite},
    record::{Cpu, Latency, Once, Recorder, exactly_once, latency, span},
    timed::TimedStore,
};

const TENANT: &str = "bench";
const EVENT_TYPE: &str = "invoice.paid";
/// Events published at once (each is a read of the endpoints, an event row and one
/// `enqueue_many` of its deliveries).
const PUBLISHERS: usize = 8;

pub struct Params<'a> {
    pub backend: Backend,
    pub pg_base: &'a str,
    /// Deliveries wanted; rounded up to whole events (each goes to every endpoint).
    pub deliveries: usize,
    pub endpoints: usize,
    pub endpoint_max_concurrency: u32,
    pub rt: RuntimeConfig,
    pub pool_max: u32,
    pub limits: Limits,
}

/// One run's result, sent from the child process to the parent as JSON.
#[derive(Serialize, Deserialize)]
pub struct HookRun {
    pub deliveries: usize,
    /// (deliveries − 1) / (first handler start → last outcome committed).
    pub per_s: f64,
    /// Keyed by (endpoint, webhook-id) at the receiver.
    pub once: Once,
    /// Deliveries a Standard Webhooks receiver would reject, or whose body is not their event's.
    pub bad: u64,
    /// Handler calls that returned an error (deferrals for the per-endpoint limit, failures).
    pub retries: u64,
    /// One whole handler call (both DB round trips before the POST, the POST, the two after).
    pub handler_ms: Option<Latency>,
    /// Receiver thread CPU per delivery, µs.
    pub receiver_cpu_us: Option<f64>,
    /// Worker process (without the receiver thread) + PostgreSQL CPU per delivery, µs.
    pub cpu_us: f64,
    /// Every delivery answered once, and the store and attempt log agree.
    pub complete: bool,
    pub details: Vec<String>,
}

impl HookRun {
    pub fn ok(&self) -> bool {
        self.once.ok() && self.bad == 0 && self.complete
    }
}

/// What the wrapped handler saw.
struct Stats {
    started: Recorder<JobId>,
    succeeded: Recorder<JobId>,
    took_ms: Mutex<Vec<f64>>,
    errors: Mutex<Vec<String>>,
}

/// The real `WebhookHandler`, timed and recorded; it changes nothing about the delivery.
struct Recording {
    inner: WebhookHandler,
    stats: Arc<Stats>,
}

#[async_trait]
impl Handler<WebhookDeliveryJob> for Recording {
    async fn handle(&self, ctx: &JobContext, job: WebhookDeliveryJob) -> JobResult {
        self.stats.started.record(ctx.id);
        let t = Instant::now();
        let r = self.inner.handle(ctx, job).await;
        self.stats.took_ms.lock().expect("stats lock").push(t.elapsed().as_secs_f64() * 1e3);
        match &r {
            Ok(_) => self.stats.succeeded.record(ctx.id),
            Err(e) => self.stats.errors.lock().expect("stats lock").push(e.to_string()),
        }
        r
    }
}

struct Fresh {
    store: Arc<dyn Store>,
    sqlite: Option<sqlx::SqlitePool>,
    place: Place,
}

enum Place {
    Pg(TempPg),
    Sqlite(TempSqlite),
}

impl Fresh {
    async fn open(backend: Backend, pg_base: &str, pool_max: u32) -> Result<Fresh> {
        match backend {
            Backend::Postgres => {
                let db = TempPg::create(pg_base).await?;
                let mut cfg = StoreConfig::new(db.url.clone());
                cfg.pool_max = pool_max;
                let opened = async {
                    let store = PostgresStore::connect(&cfg).await?;
                    store.migrate().await?;
                    Ok::<_, anyhow::Error>(store)
                }
                .await;
                match opened {
                    Ok(store) => Ok(Fresh { store: Arc::new(store), sqlite: None, place: Place::Pg(db) }),
                    Err(e) => {
                        db.drop_db().await.ok();
                        Err(e)
                    }
                }
            }
            Backend::Sqlite => {
                let file = TempSqlite::new();
                let mut cfg = StoreConfig::new(&file.url);
                cfg.pool_max = pool_max;
                let store = SqliteStore::connect(&cfg).await?;
                store.migrate().await?;
                Ok(Fresh { sqlite: Some(store.pool().clone()), store: Arc::new(store), place: Place::Sqlite(file) })
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
        // The PostgreSQL pool is not closed: the store's LISTEN task holds one of its
        // connections for the life of the process (see wharf.rs); the database is dropped
        // WITH (FORCE) and each run is its own process.
        drop(self.store);
        if let Some(p) = self.sqlite {
            p.close().await;
        }
        match self.place {
            Place::Pg(db) => db.drop_db().await?,
            Place::Sqlite(f) => f.remove(),
        }
        Ok(())
    }
}

pub async fn run(p: &Params<'_>) -> Result<HookRun> {
    let fresh = Fresh::open(p.backend, p.pg_base, p.pool_max).await?;
    let place = fresh.describe();
    let r = run_on(&fresh, p).await;
    fresh.close().await.context("cleaning up")?;
    r.map(|mut h| {
        h.details.insert(0, format!("fresh {place}"));
        h
    })
}

/// The configuration a worker would read from its environment, with a fresh key.
fn settings() -> Result<(WebhookSettings, SecretBox)> {
    let key = SecretBox::generate_key_base64();
    let env = Env::from_pairs([
        ("WHARF_ENCRYPTION_KEY", key.as_str()),
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8"),
    ]);
    let settings = WebhookSettings::from_env(&env).map_err(|e| anyhow!("{e}"))?;
    let sbox = settings.secrets.clone().context("WHARF_ENCRYPTION_KEY was set")?;
    Ok((settings, sbox))
}

async fn run_on(fresh: &Fresh, p: &Params<'_>) -> Result<HookRun> {
    let k = p.endpoints.max(1);
    let events = p.deliveries.div_ceil(k).max(1);
    let n = events * k;
    let (settings, sbox) = settings()?;
    let secrets: Vec<WebhookSecret> = (0..k).map(|_| WebhookSecret::generate()).collect();
    let receiver = Receiver::start(secrets.iter().map(WebhookSecret::key_bytes).collect(), n)?;
    let repo = WebhookRepo::new(fresh.store.db());

    // Endpoints, as `POST /v1/webhook-endpoints` stores them.
    let mut endpoint_ids = Vec::with_capacity(k);
    for (i, secret) in secrets.iter().enumerate() {
        let id = Uuid::now_v7();
        repo.create_endpoint(&NewEndpoint {
            id,
            tenant: TENANT.into(),
            url: format!("http://127.0.0.1:{}/hooks/{i}", receiver.port),
            description: format!("bench receiver {i}"),
            event_types: vec![],
            enabled: true,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_concurrency: p.endpoint_max_concurrency,
            headers: BTreeMap::new(),
            secret_enc: sbox.seal(secret.expose(), &endpoint_aad(TENANT, &id)),
        })
        .await
        .context("creating an endpoint")?;
        endpoint_ids.push(id);
    }

    // Events, as `POST /v1/events` publishes them.
    let event_ids: Vec<String> = (0..events).map(|_| new_event_id()).collect();
    let t = Instant::now();
    let published: Vec<_> = futures::stream::iter(event_ids.iter().enumerate().map(|(seq, id)| {
        let event = NewEvent {
            id: id.clone(),
            event_type: EVENT_TYPE.into(),
            data: json!({"seq": seq, "invoice": format!("in_{seq:07}"), "amount_cents": 1999, "currency": "EUR"}),
            timestamp: Utc::now(),
            traceparent: None,
        };
        let repo = &repo;
        async move { publish(fresh.store.as_ref(), repo, TENANT, event, None).await }
    }))
    .buffer_unordered(PUBLISHERS)
    .collect()
    .await;
    let publish_time = t.elapsed();
    let mut job_ids = Vec::with_capacity(n);
    for r in published {
        match r.context("publish")? {
            Published::Fresh(d) if d.len() == k => job_ids.extend(d.iter().map(|d| d.job_id)),
            Published::Fresh(d) => bail!("an event fanned out to {} endpoints, not {k}", d.len()),
            Published::Duplicate => bail!("publish called an event a duplicate"),
        }
    }

    // One worker process's webhooks pool.
    let stats = Arc::new(Stats {
        started: Recorder::new(n),
        succeeded: Recorder::new(n),
        took_ms: Mutex::new(Vec::with_capacity(n)),
        errors: Mutex::new(Vec::new()),
    });
    let timed = Arc::new(TimedStore::new(fresh.store.clone()));
    timed.watch_applied(n as u64);
    let store: Arc<dyn Store> = timed.clone();
    let mut registry = Registry::new();
    registry.register::<WebhookDeliveryJob, _>(
        Recording { inner: WebhookHandler::new(store.clone(), settings.clone()), stats: stats.clone() },
        retry_policy(&settings),
    );
    let worker = Worker::new(store, registry, &[queue::WEBHOOKS.to_string()], p.rt.clone())?;
    let stop = CancellationToken::new();
    let cpu0 = Cpu::now();
    let receiver_cpu0 = receiver.cpu_seconds();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(stop.clone()));
    let reached = stats.succeeded.wait_for(n, p.limits.stall, p.limits.total).await;
    let errors = stats.errors.lock().expect("stats lock").len();
    // The drain ends when the last outcome is in the store. Without errors that is when the
    // acker's applied completions reach n; with some, completions of failed attempts count
    // there too, so the store is polled for n succeeded jobs instead.
    let end = match (reached, errors) {
        (false, _) => None,
        (true, 0) => timed.wait_applied(p.limits.stall).await,
        (true, _) => settled_at(&fresh.store.db(), n, p.limits.stall).await?,
    };
    let cpu = Cpu::now().since(cpu0);
    let receiver_cpu = receiver.cpu_seconds().zip(receiver_cpu0).map(|(b, a)| b - a);
    let timings = timed.take();
    stop.cancel();
    match tokio::time::timeout(Duration::from_secs(60), running).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("worker failed: {e}"),
        Ok(Err(e)) => bail!("worker panicked: {e}"),
        Err(_) => bail!("worker did not stop within 60 s"),
    }
    let port = receiver.port;
    let receipts = receiver.stop();

    // The receiver's view: each (endpoint, event) once, every signature and body right.
    let seq_of: HashMap<&str, usize> = event_ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let expected: Vec<(usize, usize)> = (0..k).flat_map(|e| (0..events).map(move |s| (e, s))).collect();
    let mut bad_why: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut got = Vec::with_capacity(receipts.len());
    for r in &receipts {
        let seq = seq_of.get(r.id.as_str()).copied();
        got.push(((r.endpoint.unwrap_or(usize::MAX), seq.unwrap_or(usize::MAX)), r.at));
        let why = match (&r.verdict, seq) {
            (Err(why), _) => Some(*why),
            (Ok(()), None) => Some("webhook-id is no published event"),
            (Ok(()), Some(s)) if r.seq != Some(s as u64) || r.event_type.as_deref() != Some(EVENT_TYPE) => {
                Some("the body is not the event's")
            }
            _ => None,
        };
        if let Some(why) = why {
            *bad_why.entry(why).or_default() += 1;
        }
    }
    let once = exactly_once(&expected, &got);
    let bad: u64 = bad_why.values().sum();
    let receiver_took = latency(receipts.iter().map(|r| r.took.as_secs_f64() * 1e6).collect());

    // The worker's view.
    let successes = stats.succeeded.events();
    let job_once = exactly_once(&job_ids, &successes);
    let handler_ms = latency(std::mem::take(&mut *stats.took_ms.lock().expect("stats lock")));
    let first = span(&stats.started.events()).map(|s| s.0).unwrap_or(started);
    let last_success = span(&successes).map(|s| s.1).unwrap_or(started);
    let last_receipt = receipts.iter().map(|r| r.at).max().unwrap_or(started);
    let first_receipt = receipts.iter().map(|r| r.at).min().unwrap_or(started);
    let end_or_last = end.unwrap_or(last_success);
    let drain = end_or_last.saturating_duration_since(first);
    let per_s = if drain.is_zero() { 0.0 } else { n.saturating_sub(1) as f64 / drain.as_secs_f64() };

    // The store's view.
    let states = job_states(&fresh.store.db()).await?;
    let count = |s: &str| states.iter().filter(|r| r.0 == s).map(|r| r.1).sum::<i64>();
    let other: i64 = states.iter().filter(|r| r.0 != "succeeded").map(|r| r.1).sum();
    let max_attempt = states.iter().filter_map(|r| r.2).max().unwrap_or(0);
    let log = attempt_log(&fresh.store.db()).await?;
    let consistent = count("succeeded") == n as i64
        && other == 0
        && log.rows == n as i64
        && log.ok == n as i64
        && log.jobs == n as i64;

    let per = |secs: f64| secs * 1e6 / n as f64;
    let mut details = vec![
        format!(
            "{k} endpoints × max_concurrency {} = {} deliveries allowed at once (worker concurrency {}, prefetch {}), \
             receiver http://127.0.0.1:{port}/hooks/<i>",
            p.endpoint_max_concurrency,
            k as u64 * p.endpoint_max_concurrency as u64,
            p.rt.concurrency,
            p.rt.prefetch
        ),
        format!(
            "publish: {events} events → {n} delivery jobs in {:.3} s via webhooks::publish, {PUBLISHERS} at a time \
             ({:.0} events/s, {:.0} jobs/s)",
            publish_time.as_secs_f64(),
            events as f64 / publish_time.as_secs_f64(),
            n as f64 / publish_time.as_secs_f64()
        ),
        format!(
            "drain: worker start → first handler call {:.1} ms (first request at the receiver {:.1} ms); \
             first handler call → last outcome committed {:.3} s (last request at the receiver after {:.3} s, \
             last handler success after {:.3} s, the last ack committed {:.0} ms after it)",
            first.duration_since(started).as_secs_f64() * 1e3,
            first_receipt.saturating_duration_since(started).as_secs_f64() * 1e3,
            drain.as_secs_f64(),
            last_receipt.saturating_duration_since(first).as_secs_f64(),
            last_success.saturating_duration_since(first).as_secs_f64(),
            end_or_last.saturating_duration_since(last_success).as_secs_f64() * 1e3,
        ),
        match handler_ms {
            Some(l) => format!(
                "handler call (load endpoint, decrypt secret, count attempts, sign + POST, log attempt, mark \
                 success): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
                l.p50, l.p95, l.p99, l.max
            ),
            None => "handler: never called".into(),
        },
        match receiver_took {
            Some(l) => format!(
                "receiver: {} requests; inside its service function (read body, verify HMAC, parse, record) p50 \
                 {:.1} µs, p99 {:.1} µs, max {:.0} µs; its thread's CPU {}",
                receipts.len(),
                l.p50,
                l.p99,
                l.max,
                receiver_cpu.map_or("unknown".into(), |c| format!("{c:.2} s = {:.0} µs per delivery", per(c)))
            ),
            None => "receiver: no requests".into(),
        },
        timings.claim.describe("claim")
            + &format!(" (asked {:.1} jobs/call)", timings.claim_asked as f64 / timings.claim.calls.max(1) as f64),
        timings.complete.describe("complete"),
        format!(
            "{} over {:.2} s from worker start; per delivery: worker process {:.0} µs (receiver thread included), \
             postgres {:.0} µs",
            cpu.describe(),
            end_or_last.duration_since(started).as_secs_f64(),
            per(cpu.bench),
            per(cpu.postgres)
        ),
        format!(
            "store after the run: {states:?} (state, jobs, highest runtime attempt); attempt log: {} rows, {} \
             answered 200, {} jobs, HTTP latency as logged (whole ms) mean {:.2} ms, max {} ms",
            log.rows,
            log.ok,
            log.jobs,
            log.latency_sum as f64 / log.rows.max(1) as f64,
            log.latency_max
        ),
    ];
    if !job_once.ok() {
        details.push(format!(
            "worker side: {} jobs never succeeded, {} extra successes",
            job_once.lost, job_once.duplicated
        ));
    }
    if errors > 0 {
        let errs = stats.errors.lock().expect("stats lock");
        details.push(format!(
            "{} handler calls failed and were retried, e.g. {:?}",
            errs.len(),
            &errs[..errs.len().min(3)]
        ));
    }
    if !bad_why.is_empty() {
        details.push(format!("rejected at the receiver: {bad_why:?}"));
    }
    if !reached {
        details.push(format!("gave up: {} of {n} deliveries succeeded", successes.len()));
    } else if end.is_none() {
        details.push(format!("the store never showed all {n} outcomes applied"));
    }
    let worker_cpu = cpu.bench - receiver_cpu.unwrap_or(0.0);
    Ok(HookRun {
        deliveries: n,
        per_s,
        once,
        bad,
        retries: errors as u64,
        handler_ms,
        receiver_cpu_us: receiver_cpu.map(per),
        cpu_us: per(worker_cpu + cpu.postgres),
        complete: reached && end.is_some() && consistent && max_attempt <= 1 + errors as i64,
        details,
    })
}

/// When the store first shows `n` succeeded webhook jobs (polled every 5 ms).
async fn settled_at(db: &Db, n: usize, limit: Duration) -> Result<Option<Instant>> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let states = job_states(db).await?;
        if states.iter().any(|s| s.0 == "succeeded" && s.1 >= n as i64) {
            return Ok(Some(Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(None)
}

/// `(state, jobs, highest attempt)` of the webhooks queue, read from the table itself.
async fn job_states(db: &Db) -> Result<Vec<(String, i64, Option<i64>)>> {
    const SQL: &str = "SELECT state, count(*), CAST(max(attempt) AS BIGINT) FROM wharf_jobs \
                       WHERE queue = 'webhooks' GROUP BY state ORDER BY state";
    Ok(match db {
        Db::Postgres(p) => sqlx::query_as(SQL).fetch_all(p).await?,
        Db::Sqlite(p) => sqlx::query_as(SQL).fetch_all(p).await?,
    })
}

struct AttemptLog {
    rows: i64,
    ok: i64,
    jobs: i64,
    latency_sum: i64,
    latency_max: i64,
}

async fn attempt_log(db: &Db) -> Result<AttemptLog> {
    const SQL: &str = "SELECT count(*), \
           CAST(COALESCE(SUM(CASE WHEN status_code = 200 AND error_class IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
           count(DISTINCT job_id), CAST(COALESCE(SUM(latency_ms), 0) AS BIGINT), \
           CAST(COALESCE(MAX(latency_ms), 0) AS BIGINT) FROM wharf_webhook_attempts";
    let (rows, ok, jobs, latency_sum, latency_max): (i64, i64, i64, i64, i64) = match db {
        Db::Postgres(p) => sqlx::query_as(SQL).fetch_one(p).await?,
        Db::Sqlite(p) => sqlx::query_as(SQL).fetch_one(p).await?,
    };
    Ok(AttemptLog { rows, ok, jobs, latency_sum, latency_max })
}
