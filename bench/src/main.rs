//! `wharf-bench`: PRODUCT.md §6's W1 (drain) and W2 (latency) through wharf's pipeline on
//! PostgreSQL and SQLite, next to raw apalis-postgres 1.0 measured in the same run, each on a
//! fresh database. Prints one table (and writes it as markdown with `--markdown FILE`); exits
//! non-zero if any job was lost or ran twice, or a run failed.
//!
//! Each (backend, config, workload) runs in a child process of this binary (`--run-one`): the
//! worker and the producer share that one process, and nothing a run leaves behind (tasks,
//! connections, allocator state) reaches the next one.

mod db;
mod embeddings;
mod http;
mod raw_apalis;
mod record;
mod timed;
mod w3;
mod webhooks;
mod wharf;

use std::{fmt::Write as _, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use wharf_workers::runtime::RuntimeConfig;

use crate::{
    raw_apalis::ApalisConfig,
    record::{Latency, Once},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
enum Workload {
    W1,
    W2,
    /// W1 with two worker processes (wharf-postgres only; its own table).
    W3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
enum BackendArg {
    WharfPostgres,
    WharfSqlite,
    ApalisPostgres,
}

impl BackendArg {
    fn label(self) -> &'static str {
        match self {
            BackendArg::WharfPostgres => "wharf-postgres",
            BackendArg::WharfSqlite => "wharf-sqlite",
            BackendArg::ApalisPostgres => "apalis-postgres",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
enum ConfigArg {
    /// wharf: concurrency 16, prefetch 16, claim batch 100; apalis: `Config::default()` (batch 10), one Worker.
    Default,
    /// wharf: concurrency 16, prefetch 384, claim batch 400; apalis: batch 100, 4 Workers.
    Tuned,
}

#[derive(Debug, Parser)]
#[command(name = "wharf-bench", about = "W1 drain and W2 latency: wharf next to raw apalis-postgres")]
struct Args {
    /// A suite other than the default W1/W2 jobs table.
    #[command(subcommand)]
    suite: Option<Suite>,
    /// W1: jobs enqueued in bulk, then drained.
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// W2: jobs enqueued one at a time.
    #[arg(long, default_value_t = 2_000)]
    w2_jobs: usize,
    /// W2: enqueues per second.
    #[arg(long, default_value_t = 200.0)]
    w2_rate: f64,
    /// Run only one workload.
    #[arg(long)]
    only: Option<Workload>,
    #[arg(long, value_delimiter = ',', default_values = ["wharf-postgres", "wharf-sqlite", "apalis-postgres"])]
    backends: Vec<BackendArg>,
    #[arg(long, value_delimiter = ',', default_values = ["default", "tuned"])]
    configs: Vec<ConfigArg>,
    /// Jobs per bulk insert in W1 (one transaction each).
    #[arg(long, default_value_t = 1_000)]
    chunk: usize,
    /// Jobs running at once in the one worker process.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// PostgreSQL server (no database): a fresh `wharf_bench_<random>` is created per run and dropped.
    #[arg(long, env = "WHARF_BENCH_PG", default_value = "postgres://postgres@127.0.0.1:5432")]
    pg: String,
    /// Also write the table and details as markdown to this file.
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// Give up on a drain when no job completed for this many seconds.
    #[arg(long, default_value_t = 60)]
    stall_secs: u64,
    /// Runs of every (backend, config, workload); the table shows min–max when above 1.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// What-if: SQL run on every fresh wharf PostgreSQL database after its migrations (e.g. a
    /// different index). Rows are labelled `+experiment`. Does not touch apalis' databases.
    #[arg(long)]
    pg_experiment: Option<String>,
    /// What-if: extra URL parameters for wharf's PostgreSQL stores only, e.g.
    /// `options[synchronous_commit]=off`. Rows are labelled `+params`.
    #[arg(long)]
    wharf_pg_params: Option<String>,
    /// What-if: the SQLite store's connection pool size (the store's default is 10, capped at 8).
    #[arg(long)]
    sqlite_pool_max: Option<u32>,
    /// Internal: run one `backend:config:workload` in this process and print its result as JSON.
    #[arg(long, hide = true)]
    run_one: Option<String>,
    /// Internal: one W3 worker process on this database URL until stdin closes.
    #[arg(long, hide = true)]
    w3_worker: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Suite {
    /// Webhook deliveries per second to a local receiver at several concurrency levels, next to W1.
    Webhooks(webhooks::Args),
    /// Documents per second through the local OpenAI-compatible embedding server at two batch sizes.
    Embeddings(embeddings::Args),
    /// `POST /v1/emails` through the release `wharf api` with hey: req/s, latency, 202s vs stored jobs.
    Http(http::Args),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub stall: Duration,
    pub total: Duration,
}

#[derive(Serialize, Deserialize)]
pub struct W1 {
    pub enqueue_per_s: f64,
    pub drain_per_s: f64,
    pub once: Once,
    /// Every job ran and the store shows every job finished.
    pub complete: bool,
    pub details: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct W2 {
    pub latency: Option<Latency>,
    pub once: Once,
    pub complete: bool,
    pub details: Vec<String>,
}

struct Row {
    backend: &'static str,
    config: String,
    claim_ahead: String,
    w1: Vec<Result<W1>>,
    w2: Vec<Result<W2>>,
}

/// `a` or `min–max` over the runs.
fn range(values: &[f64], decimals: usize) -> String {
    if values.is_empty() {
        return "failed".into();
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() == 1 || format!("{min:.decimals$}") == format!("{max:.decimals$}") {
        format!("{min:.decimals$}")
    } else {
        format!("{min:.decimals$}–{max:.decimals$}")
    }
}

impl Row {
    fn ok(&self) -> bool {
        self.w1.iter().all(|r| r.as_ref().is_ok_and(|w| w.once.ok() && w.complete))
            && self.w2.iter().all(|r| r.as_ref().is_ok_and(|w| w.once.ok() && w.complete))
    }

    fn once(&self) -> Option<Once> {
        let all: Vec<Once> = self
            .w1
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|w| w.once))
            .chain(self.w2.iter().filter_map(|r| r.as_ref().ok().map(|w| w.once)))
            .collect();
        (!all.is_empty()).then(|| all.into_iter().fold(Once::default(), Once::add))
    }

    fn cells(&self) -> Vec<String> {
        let dash = || "–".to_string();
        let w1: Vec<&W1> = self.w1.iter().filter_map(|r| r.as_ref().ok()).collect();
        let failed_w1 = self.w1.iter().any(|r| r.is_err());
        let (enq, drain) = if self.w1.is_empty() {
            (dash(), dash())
        } else {
            let mark = if failed_w1 { " (+failed)" } else { "" };
            (
                range(&w1.iter().map(|w| w.enqueue_per_s).collect::<Vec<_>>(), 0) + mark,
                range(&w1.iter().map(|w| w.drain_per_s).collect::<Vec<_>>(), 0) + mark,
            )
        };
        let (lost, dup) = match self.once() {
            Some(o) => (o.lost.to_string(), o.duplicated.to_string()),
            None => (dash(), dash()),
        };
        let lats: Vec<Latency> = self.w2.iter().filter_map(|r| r.as_ref().ok().and_then(|w| w.latency)).collect();
        let lat = if self.w2.is_empty() {
            vec![dash(); 4]
        } else {
            let mark = if lats.len() < self.w2.len() { " (+failed)" } else { "" };
            [|l: &Latency| l.p50, |l: &Latency| l.p95, |l: &Latency| l.p99, |l: &Latency| l.max]
                .iter()
                .map(|f| range(&lats.iter().map(f).collect::<Vec<_>>(), 1) + mark)
                .collect()
        };
        let mut v =
            vec![self.backend.to_string(), self.config.clone(), self.claim_ahead.clone(), enq, drain, lost, dup];
        v.extend(lat);
        v
    }
}

const HEADER: [&str; 11] = [
    "backend",
    "config",
    "claim-ahead",
    "W1 enqueue/s",
    "W1 drain/s",
    "lost",
    "duplicated",
    "W2 p50 ms",
    "W2 p95 ms",
    "W2 p99 ms",
    "W2 max ms",
];

fn text_table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| cells.iter().map(|r| r[i].chars().count()).chain([HEADER[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |r: &[String]| {
        r.iter()
            .enumerate()
            .map(|(i, c)| if i < 3 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut s = line(&HEADER.map(String::from));
    s.push('\n');
    s.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    s.push('\n');
    for r in &cells {
        s.push_str(&line(r));
        s.push('\n');
    }
    s
}

fn markdown_table(rows: &[Row]) -> String {
    let mut s = format!("| {} |\n", HEADER.join(" | "));
    s.push_str(&format!(
        "|{}\n",
        HEADER.iter().enumerate().map(|(i, _)| if i < 3 { "---|" } else { "---:|" }).collect::<String>()
    ));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.cells().join(" | ")));
    }
    s
}

fn details(rows: &[Row], md: bool) -> String {
    let mut s = String::new();
    for r in rows {
        if md {
            let _ = writeln!(s, "- **{} / {}** (claim-ahead {})", r.backend, r.config, r.claim_ahead);
        } else {
            let _ = writeln!(s, "{} / {} (claim-ahead {})", r.backend, r.config, r.claim_ahead);
        }
        let runs = r.w1.len().max(r.w2.len());
        let mut runs_of = |label: &str, results: Vec<Result<Vec<String>, String>>| {
            for (i, lines) in results.into_iter().enumerate() {
                let tag = if runs > 1 { format!("{label} run {}", i + 1) } else { label.to_string() };
                for l in lines.unwrap_or_else(|e| vec![format!("FAILED: {e}")]) {
                    let _ = writeln!(s, "{}{tag}: {l}", if md { "  - " } else { "    " });
                }
            }
        };
        runs_of(
            "W1",
            r.w1.iter().map(|w| w.as_ref().map(|w| w.details.clone()).map_err(|e| format!("{e:#}"))).collect(),
        );
        runs_of(
            "W2",
            r.w2.iter().map(|w| w.as_ref().map(|w| w.details.clone()).map_err(|e| format!("{e:#}"))).collect(),
        );
    }
    s
}

fn wharf_config(c: ConfigArg, concurrency: usize) -> RuntimeConfig {
    match c {
        ConfigArg::Default => RuntimeConfig { concurrency, prefetch: 16, claim_batch: 100, ..Default::default() },
        ConfigArg::Tuned => RuntimeConfig { concurrency, prefetch: 384, claim_batch: 400, ..Default::default() },
    }
}

fn apalis_config(c: ConfigArg, concurrency: usize) -> ApalisConfig {
    match c {
        ConfigArg::Default => ApalisConfig {
            name: "default",
            batch: apalis_postgres::Config::default().batch_size,
            workers: 1,
            concurrency,
        },
        ConfigArg::Tuned => ApalisConfig { name: "tuned", batch: 100, workers: 4, concurrency },
    }
}

fn config_label(c: ConfigArg) -> &'static str {
    match c {
        ConfigArg::Default => "default",
        ConfigArg::Tuned => "tuned",
    }
}

const RESULT_PREFIX: &str = "WHARF_BENCH_RESULT ";

#[derive(Serialize, Deserialize)]
enum Outcome {
    W1(W1),
    W2(W2),
    Failed(String),
}

/// The child: one workload of one backend and config, result as one JSON line on stdout.
async fn run_one(args: &Args, spec: &str) -> Result<()> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [b, c, w] = parts[..] else { bail!("--run-one wants backend:config:workload, got `{spec}`") };
    let backend = BackendArg::from_str(b, false).map_err(|e| anyhow!(e))?;
    let config = ConfigArg::from_str(c, false).map_err(|e| anyhow!(e))?;
    let workload = Workload::from_str(w, false).map_err(|e| anyhow!(e))?;
    let limits = Limits { stall: Duration::from_secs(args.stall_secs), total: Duration::from_secs(3600) };
    let outcome = match backend {
        BackendArg::WharfPostgres | BackendArg::WharfSqlite => {
            let b =
                if backend == BackendArg::WharfPostgres { wharf::Backend::Postgres } else { wharf::Backend::Sqlite };
            let rt = wharf_config(config, args.concurrency);
            let setup = wharf::Setup {
                pg_base: &args.pg,
                pg_experiment: args.pg_experiment.as_deref(),
                pg_params: args.wharf_pg_params.as_deref(),
                sqlite_pool_max: args.sqlite_pool_max,
            };
            match workload {
                Workload::W1 => wharf::w1(b, &setup, &rt, args.n, args.chunk, limits).await.map(Outcome::W1),
                Workload::W2 => wharf::w2(b, &setup, &rt, args.w2_jobs, args.w2_rate, limits).await.map(Outcome::W2),
                Workload::W3 => Err(anyhow!("W3 runs from the parent (w3::run)")),
            }
        }
        BackendArg::ApalisPostgres => {
            let cfg = apalis_config(config, args.concurrency);
            match workload {
                Workload::W1 => raw_apalis::w1(&args.pg, &cfg, args.n, args.chunk, limits).await.map(Outcome::W1),
                Workload::W2 => {
                    raw_apalis::w2(&args.pg, &cfg, args.w2_jobs, args.w2_rate, limits).await.map(Outcome::W2)
                }
                Workload::W3 => Err(anyhow!("W3 runs on wharf-postgres only")),
            }
        }
    }
    .unwrap_or_else(|e| Outcome::Failed(format!("{e:#}")));
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&outcome)?);
    Ok(())
}

/// The parent: runs one workload in a child process and reads its result.
fn spawn_one(args: &Args, backend: BackendArg, config: ConfigArg, workload: Workload) -> Result<Outcome> {
    let value = |v: &dyn ValueEnumName| v.name();
    let spec = format!("{}:{}:{}", value(&backend), value(&config), value(&workload));
    let mut cmd = std::process::Command::new(std::env::current_exe().context("locating wharf-bench")?);
    if let Some(sql) = &args.pg_experiment {
        cmd.args(["--pg-experiment", sql]);
    }
    if let Some(max) = args.sqlite_pool_max {
        cmd.args(["--sqlite-pool-max", &max.to_string()]);
    }
    if let Some(p) = &args.wharf_pg_params {
        cmd.args(["--wharf-pg-params", p]);
    }
    let out = cmd
        .args(["--run-one", &spec, "--pg", &args.pg])
        .args(["--n", &args.n.to_string(), "--w2-jobs", &args.w2_jobs.to_string()])
        .args(["--w2-rate", &args.w2_rate.to_string(), "--chunk", &args.chunk.to_string()])
        .args(["--concurrency", &args.concurrency.to_string(), "--stall-secs", &args.stall_secs.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting the child run")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix(RESULT_PREFIX)) {
        Some(json) => Ok(serde_json::from_str(json).context("reading the child's result")?),
        None => bail!("the child run `{spec}` gave no result ({})", out.status),
    }
}

trait ValueEnumName {
    fn name(&self) -> String;
}

impl<T: ValueEnum> ValueEnumName for T {
    fn name(&self) -> String {
        self.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
    }
}

fn w1_of(o: Result<Outcome>) -> Result<W1> {
    match o? {
        Outcome::W1(w) => Ok(w),
        Outcome::Failed(e) => Err(anyhow!(e)),
        Outcome::W2(_) => Err(anyhow!("asked for W1, got W2")),
    }
}

fn w2_of(o: Result<Outcome>) -> Result<W2> {
    match o? {
        Outcome::W2(w) => Ok(w),
        Outcome::Failed(e) => Err(anyhow!(e)),
        Outcome::W1(_) => Err(anyhow!("asked for W2, got W1")),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The bench drops each database while wharf's LISTEN task still holds a
                // connection to it; its reconnect warnings are noise here.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,wharf_jobs=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match args.suite {
        Some(Suite::Webhooks(a)) => return webhooks::run(a).await,
        Some(Suite::Embeddings(a)) => return embeddings::run(a).await,
        Some(Suite::Http(a)) => return http::run(a).await,
        None => {}
    }
    if args.w2_rate <= 0.0 {
        bail!("--w2-rate must be positive");
    }
    if let Some(spec) = &args.run_one {
        return run_one(&args, spec).await;
    }
    if let Some(url) = &args.w3_worker {
        return w3::worker(&args, url).await;
    }
    if args.only == Some(Workload::W3) {
        return if w3::run(&args).await? { Ok(()) } else { bail!("W3: lost or duplicated jobs, or a failed run") };
    }
    let w1 = args.only.is_none() || args.only == Some(Workload::W1);
    let w2 = args.only.is_none() || args.only == Some(Workload::W2);
    let started = std::time::SystemTime::now();

    let mut rows = Vec::new();
    for &backend in &args.backends {
        for &c in &args.configs {
            let label = backend.label();
            let (mut config, claim_ahead) = match backend {
                BackendArg::ApalisPostgres => {
                    let cfg = apalis_config(c, args.concurrency);
                    (cfg.name.to_string(), cfg.claim_ahead())
                }
                _ => (config_label(c).to_string(), wharf::claim_ahead(&wharf_config(c, args.concurrency))),
            };
            if backend == BackendArg::WharfPostgres && args.pg_experiment.is_some() {
                config.push_str("+experiment");
            }
            if backend == BackendArg::WharfPostgres && args.wharf_pg_params.is_some() {
                config.push_str("+params");
            }
            if let (BackendArg::WharfSqlite, Some(max)) = (backend, args.sqlite_pool_max) {
                config.push_str(&format!("+pool{max}"));
            }
            eprintln!("== {label} / {config}");
            let mut row = Row { backend: label, config, claim_ahead, w1: Vec::new(), w2: Vec::new() };
            for _ in 0..args.runs.max(1) {
                if w1 {
                    row.w1.push(w1_of(spawn_one(&args, backend, c, Workload::W1)));
                }
                if w2 {
                    row.w2.push(w2_of(spawn_one(&args, backend, c, Workload::W2)));
                }
            }
            eprint!("{}", details(std::slice::from_ref(&row), false));
            rows.push(row);
        }
    }

    let mut params = format!(
        "W1 N = {}, W2 {} jobs at {}/s, concurrency {}, one worker process, {} run(s) each; PostgreSQL URLs with sslmode=disable",
        args.n,
        args.w2_jobs,
        args.w2_rate,
        args.concurrency,
        args.runs.max(1)
    );
    if let Some(sql) = &args.pg_experiment {
        params.push_str(&format!("; wharf-postgres databases altered after migration with `{sql}`"));
    }
    if let Some(p) = &args.wharf_pg_params {
        params.push_str(&format!("; wharf-postgres URLs with `&{p}`"));
    }
    if let Some(max) = args.sqlite_pool_max {
        params.push_str(&format!("; wharf-sqlite store pool_max = {max}"));
    }
    println!("{params}\n");
    print!("{}", text_table(&rows));
    println!();
    print!("{}", details(&rows, false));
    if let Some(path) = &args.markdown {
        let secs = started.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let md = format!(
            "<!-- wharf-bench, started at Unix time {secs} -->\n{params}.\n\n{}\n{}",
            markdown_table(&rows),
            details(&rows, true)
        );
        std::fs::write(path, md)?;
    }
    let mut failed: Vec<String> =
        rows.iter().filter(|r| !r.ok()).map(|r| format!("{} / {}", r.backend, r.config)).collect();
    if args.only.is_none() && args.backends.contains(&BackendArg::WharfPostgres) && !w3::run(&args).await? {
        failed.push("W3".into());
    }
    if !failed.is_empty() {
        bail!("lost or duplicated jobs, or a failed run: {}", failed.join(", "));
    }
    Ok(())
}
