//! PRODUCT.md §6 W3: W1 with two worker processes on wharf-postgres. The parent enqueues N
//! no-ops in bulk into a fresh database, starts two `wharf-bench --w3-worker <url>` children
//! (one `Worker` each, the same runtime and recording no-op as W1) and watches the store until
//! every job has succeeded. It then closes the children's stdin; each stops its worker and
//! prints the ids it ran with Unix-nanosecond timestamps (one machine, so the clocks agree).
//! The parent merges both records for the exactly-once check and the drain time.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;
use wharf_jobs::{
    JobId, NewJob, Store, StoreConfig,
    kinds::{JobKind, diagnostic::DiagnosticJob},
    queue,
    retry::RetryPolicy,
    store::PostgresStore,
};
use wharf_workers::{Handler, JobContext, JobResult, registry::Registry, runtime::Worker};

use crate::{
    Args, ConfigArg, config_label,
    db::TempPg,
    record::{Once, exactly_once},
    wharf::claim_ahead,
    wharf_config,
};

const TENANT: &str = "bench";
const RECORDS_PREFIX: &str = "WHARF_W3_RECORDS ";

fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// What one worker process ran: job id and Unix nanoseconds when its handler ran.
#[derive(Serialize, Deserialize)]
struct Records {
    pid: u32,
    events: Vec<(JobId, u128)>,
}

struct RecordingNoop {
    events: Arc<Mutex<Vec<(JobId, u128)>>>,
}

#[async_trait]
impl Handler<DiagnosticJob> for RecordingNoop {
    async fn handle(&self, ctx: &JobContext, job: DiagnosticJob) -> JobResult {
        let at = unix_nanos();
        self.events.lock().expect("records lock").push((ctx.id, at));
        match job {
            DiagnosticJob::Noop => Ok(None),
            other => Err(wharf_workers::JobError::permanent(format!("the bench only enqueues no-ops, got {other:?}"))),
        }
    }
}

/// The child: one `Worker` on `url` until stdin closes, then its records on stdout.
pub async fn worker(args: &Args, url: &str) -> Result<()> {
    let config = args.configs.first().copied().unwrap_or(ConfigArg::Default);
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&StoreConfig::new(url)).await?);
    let events = Arc::new(Mutex::new(Vec::with_capacity(args.n)));
    let mut registry = Registry::new();
    registry.register::<DiagnosticJob, _>(
        RecordingNoop { events: events.clone() },
        RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(60)),
    );
    let w = Worker::new(store, registry, &[queue::DIAGNOSTIC.to_string()], wharf_config(config, args.concurrency))?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(w.run(stop.clone()));
    // The parent closes our stdin once the store shows every job succeeded (or it gave up).
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await??;
    stop.cancel();
    match tokio::time::timeout(Duration::from_secs(60), running).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("worker failed: {e}"),
        Ok(Err(e)) => bail!("worker panicked: {e}"),
        Err(_) => bail!("worker did not stop within 60 s"),
    }
    let events = std::mem::take(&mut *events.lock().expect("records lock"));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{RECORDS_PREFIX}{}", serde_json::to_string(&Records { pid: std::process::id(), events })?)?;
    Ok(())
}

pub struct W3 {
    config: &'static str,
    claim_ahead: String,
    enqueue_per_s: f64,
    drain_per_s: f64,
    executed_per_s: f64,
    split: Vec<usize>,
    once: Once,
    complete: bool,
    details: Vec<String>,
}

impl W3 {
    pub fn ok(&self) -> bool {
        self.once.ok() && self.complete
    }
}

async fn state_counts(pool: &sqlx::PgPool) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT state::text AS state, count(*) AS n FROM wharf_jobs GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| Ok((r.try_get("state")?, r.try_get("n")?))).collect()
}

/// One W3 run on a fresh database.
async fn run_one(args: &Args, config: ConfigArg) -> Result<W3> {
    let db = TempPg::create(&args.pg).await?;
    let name = db.name.clone();
    let r = on(args, config, &db.url).await;
    db.drop_db().await.context("cleaning up")?;
    r.map(|mut w| {
        w.details.insert(0, format!("fresh database {name}"));
        w
    })
}

async fn on(args: &Args, config: ConfigArg, url: &str) -> Result<W3> {
    let n = args.n;
    let store = PostgresStore::connect(&StoreConfig::new(url)).await?;
    store.migrate().await?;
    let pool = store.pool().clone();
    let jobs: Vec<NewJob> = (0..n).map(|_| DiagnosticJob::Noop.into_job(TENANT)).collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let t = Instant::now();
    let mut it = jobs.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<NewJob> = it.by_ref().take(args.chunk.max(1)).collect();
        store.enqueue_many(batch).await.context("enqueue_many")?;
    }
    let enqueue = t.elapsed();

    let exe = std::env::current_exe().context("locating wharf-bench")?;
    let started = unix_nanos();
    let mut children = Vec::new();
    for _ in 0..2 {
        let child = Command::new(&exe)
            .args(["--w3-worker", url, "--configs", &crate::ValueEnumName::name(&config)])
            .args(["--n", &n.to_string(), "--concurrency", &args.concurrency.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a W3 worker process")?;
        children.push(child);
    }

    // Poll the store until every job succeeded; give up after `stall_secs` without progress.
    let stall = Duration::from_secs(args.stall_secs);
    let (mut last, mut last_progress) = (-1i64, Instant::now());
    let settled_at = loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM wharf_jobs WHERE state = 'succeeded'").fetch_one(&pool).await?;
        if done >= n as i64 {
            break Some(unix_nanos());
        }
        if done != last {
            (last, last_progress) = (done, Instant::now());
        }
        if last_progress.elapsed() > stall {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let mut records = Vec::new();
    for mut child in children {
        drop(child.stdin.take());
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().find_map(|l| l.strip_prefix(RECORDS_PREFIX)) {
            Some(json) => records.push(serde_json::from_str::<Records>(json).context("reading a worker's records")?),
            None => bail!("a W3 worker process gave no records ({})", out.status),
        }
    }
    let states = state_counts(&pool).await?;
    drop(store);

    let events: Vec<(JobId, Instant)> = {
        // `exactly_once` takes instants; only the keys matter to it.
        let now = Instant::now();
        records.iter().flat_map(|r| r.events.iter().map(move |e| (e.0, now))).collect()
    };
    let once = exactly_once(&ids, &events);
    let split: Vec<usize> = records.iter().map(|r| r.events.len()).collect();
    let all = || records.iter().flat_map(|r| r.events.iter().map(|e| e.1));
    let first = all().min().unwrap_or(started);
    let last_exec = all().max().unwrap_or(started);
    let end = settled_at.unwrap_or(last_exec);
    let secs = |a: u128, b: u128| b.saturating_sub(a) as f64 / 1e9;
    let drain = secs(first, end);
    let executed = secs(first, last_exec);
    let consistent = states.len() == 1 && states[0] == ("succeeded".to_string(), n as i64);
    let mut details = vec![
        format!("enqueue: {n} jobs in {:.3} s via enqueue_many in chunks of {}", enqueue.as_secs_f64(), args.chunk),
        format!(
            "drain: processes started → first completion {:.1} ms; first completion → store showed all {n} succeeded \
             {drain:.3} s (polled every 10 ms); handlers done after {executed:.3} s",
            secs(started, first) * 1e3
        ),
        format!(
            "split: {}",
            records.iter().map(|r| format!("pid {} ran {}", r.pid, r.events.len())).collect::<Vec<_>>().join(", ")
        ),
    ];
    if settled_at.is_none() {
        details.push(format!("gave up: no progress for {} s", args.stall_secs));
    }
    if !consistent {
        details.push(format!("store after the run: {states:?}"));
    }
    Ok(W3 {
        config: config_label(config),
        claim_ahead: format!("2 × {}", claim_ahead(&wharf_config(config, args.concurrency))),
        enqueue_per_s: n as f64 / enqueue.as_secs_f64(),
        drain_per_s: if drain > 0.0 { n.saturating_sub(1) as f64 / drain } else { 0.0 },
        executed_per_s: if executed > 0.0 { n.saturating_sub(1) as f64 / executed } else { 0.0 },
        split,
        once,
        complete: settled_at.is_some() && consistent,
        details,
    })
}

const HEADER: [&str; 9] = [
    "backend",
    "config",
    "claim-ahead",
    "W3 enqueue/s",
    "W3 drain/s",
    "executed/s",
    "split (proc 1 / 2)",
    "lost",
    "duplicated",
];

fn cells(r: &Result<W3>, config: ConfigArg) -> Vec<String> {
    match r {
        Ok(w) => vec![
            "wharf-postgres".into(),
            w.config.into(),
            w.claim_ahead.clone(),
            format!("{:.0}", w.enqueue_per_s),
            format!("{:.0}{}", w.drain_per_s, if w.complete { "" } else { " (incomplete)" }),
            format!("{:.0}", w.executed_per_s),
            w.split.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" / "),
            w.once.lost.to_string(),
            w.once.duplicated.to_string(),
        ],
        Err(_) => {
            let mut v = vec!["wharf-postgres".into(), config_label(config).into()];
            v.extend(std::iter::repeat_n("failed".to_string(), HEADER.len() - 2));
            v
        }
    }
}

/// Runs W3 for every config (and `--runs` times), prints its table, and appends it to the
/// markdown file when one is given. Returns whether every run was exactly-once and complete.
pub async fn run(args: &Args) -> Result<bool> {
    let mut results = Vec::new();
    for &c in &args.configs {
        for _ in 0..args.runs.max(1) {
            eprintln!("== W3 wharf-postgres / {} (two worker processes)", config_label(c));
            let r = run_one(args, c).await;
            match &r {
                Ok(w) => w.details.iter().for_each(|d| eprintln!("    W3: {d}")),
                Err(e) => eprintln!("    W3: FAILED: {e:#}"),
            }
            results.push((c, r));
        }
    }
    let rows: Vec<Vec<String>> = results.iter().map(|(c, r)| cells(r, *c)).collect();
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([HEADER[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |r: &[String]| {
        r.iter()
            .enumerate()
            .map(|(i, c)| if i < 3 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!(
        "W3: N = {}, two worker processes, concurrency {} each; PostgreSQL URLs with sslmode=disable\n",
        args.n, args.concurrency
    );
    println!("{}", line(&HEADER.map(String::from)));
    println!("{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    for r in &rows {
        println!("{}", line(r));
    }
    println!();
    let mut md = format!(
        "\n| {} |\n|{}\n",
        HEADER.join(" | "),
        (0..HEADER.len()).map(|i| if i < 3 { "---|" } else { "---:|" }).collect::<String>()
    );
    for r in &rows {
        md.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    md.push('\n');
    for (c, r) in &results {
        let lines = match r {
            Ok(w) => w.details.clone(),
            Err(e) => vec![format!("FAILED: {e:#}")],
        };
        for l in lines {
            println!("wharf-postgres / {} W3: {l}", config_label(*c));
            md.push_str(&format!("- **wharf-postgres / {}** W3: {l}\n", config_label(*c)));
        }
    }
    if let Some(path) = &args.markdown {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        f.write_all(md.as_bytes())?;
    }
    Ok(results.iter().all(|(_, r)| r.as_ref().is_ok_and(W3::ok)))
}
