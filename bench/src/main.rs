//! `wharf-bench`: PRODUCT.md §6's W1 (drain) and W2 (latency) through wharf's pipeline on
//! PostgreSQL and SQLite, next to raw apalis-postgres 1.0 measured in the same run, each on a
//! fresh database. Prints one table (and writes it as markdown with `--markdown FILE`); exits
//! non-zero if any job was lost or ran twice, or a run failed.

mod db;
mod raw_apalis;
mod record;
mod timed;
mod wharf;

use std::{fmt::Write as _, time::Duration};

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use wharf_workers::runtime::RuntimeConfig;

use crate::{
    raw_apalis::ApalisConfig,
    record::{Latency, Once},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    W1,
    W2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConfigArg {
    /// wharf: concurrency 16, prefetch 16, claim batch 100; apalis: `Config::default()` (batch 10), one Worker.
    Default,
    /// wharf: concurrency 16, prefetch 384, claim batch 400; apalis: batch 100, 4 Workers.
    Tuned,
}

#[derive(Debug, Parser)]
#[command(name = "wharf-bench", about = "W1 drain and W2 latency: wharf next to raw apalis-postgres")]
struct Args {
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
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub stall: Duration,
    pub total: Duration,
}

pub struct W1 {
    pub enqueue_per_s: f64,
    pub drain_per_s: f64,
    pub once: Once,
    /// Every job ran and the store shows every job finished.
    pub complete: bool,
    pub details: Vec<String>,
}

pub struct W2 {
    pub latency: Option<Latency>,
    pub once: Once,
    pub complete: bool,
    pub details: Vec<String>,
}

struct Row {
    backend: &'static str,
    config: &'static str,
    claim_ahead: String,
    w1: Option<Result<W1>>,
    w2: Option<Result<W2>>,
}

impl Row {
    fn ok(&self) -> bool {
        let w1 = match &self.w1 {
            None => true,
            Some(Ok(w)) => w.once.ok() && w.complete,
            Some(Err(_)) => false,
        };
        let w2 = match &self.w2 {
            None => true,
            Some(Ok(w)) => w.once.ok() && w.complete,
            Some(Err(_)) => false,
        };
        w1 && w2
    }

    fn once(&self) -> Option<Once> {
        let mut o = None::<Once>;
        for x in [self.w1.as_ref().and_then(|r| r.as_ref().ok()).map(|w| w.once), self.w2.as_ref().and_then(|r| r.as_ref().ok()).map(|w| w.once)].into_iter().flatten() {
            o = Some(o.unwrap_or_default().add(x));
        }
        o
    }

    fn cells(&self) -> Vec<String> {
        let dash = || "–".to_string();
        let (enq, drain) = match &self.w1 {
            Some(Ok(w)) => (format!("{:.0}", w.enqueue_per_s), format!("{:.0}", w.drain_per_s)),
            Some(Err(_)) => ("failed".into(), "failed".into()),
            None => (dash(), dash()),
        };
        let (lost, dup) = match self.once() {
            Some(o) => (o.lost.to_string(), o.duplicated.to_string()),
            None => (dash(), dash()),
        };
        let lat = match &self.w2 {
            Some(Ok(W2 { latency: Some(l), .. })) => {
                vec![format!("{:.1}", l.p50), format!("{:.1}", l.p95), format!("{:.1}", l.p99), format!("{:.1}", l.max)]
            }
            Some(_) => vec!["failed".into(); 4],
            None => vec![dash(); 4],
        };
        let mut v = vec![self.backend.to_string(), self.config.to_string(), self.claim_ahead.clone(), enq, drain, lost, dup];
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
    s.push_str(&format!("|{}\n", HEADER.iter().enumerate().map(|(i, _)| if i < 3 { "---|" } else { "---:|" }).collect::<String>()));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.cells().join(" | ")));
    }
    s
}

fn details(rows: &[Row], md: bool) -> String {
    let mut s = String::new();
    for r in rows {
        let _ = writeln!(s, "{}{} / {} (claim-ahead {})", if md { "- **" } else { "" }, r.backend, r.config, r.claim_ahead);
        if md {
            s.pop();
            s.push_str("**\n");
        }
        for (label, lines) in [
            ("W1", r.w1.as_ref().map(|w| w.as_ref().map(|w| w.details.clone()))),
            ("W2", r.w2.as_ref().map(|w| w.as_ref().map(|w| w.details.clone()))),
        ] {
            let Some(lines) = lines else { continue };
            let lines = lines.unwrap_or_else(|e| vec![format!("FAILED: {e:#}")]);
            for l in lines {
                let _ = writeln!(s, "{}{label}: {l}", if md { "  - " } else { "    " });
            }
        }
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
        ConfigArg::Default => ApalisConfig { name: "default", batch: apalis_postgres::Config::default().batch_size, workers: 1, concurrency },
        ConfigArg::Tuned => ApalisConfig { name: "tuned", batch: 100, workers: 4, concurrency },
    }
}

fn config_label(c: ConfigArg) -> &'static str {
    match c {
        ConfigArg::Default => "default",
        ConfigArg::Tuned => "tuned",
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The bench drops each database while wharf's LISTEN task may still hold a
                // connection to it; its reconnect warnings are noise here.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,wharf_jobs=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.w2_rate <= 0.0 {
        bail!("--w2-rate must be positive");
    }
    let limits = Limits { stall: Duration::from_secs(args.stall_secs), total: Duration::from_secs(3600) };
    let w1 = args.only != Some(Workload::W2);
    let w2 = args.only != Some(Workload::W1);
    let started = std::time::SystemTime::now();

    let mut rows = Vec::new();
    for &backend in &args.backends {
        for &c in &args.configs {
            let label = backend.label();
            let config = config_label(c);
            eprintln!("== {label} / {config}");
            let row = match backend {
                BackendArg::WharfPostgres | BackendArg::WharfSqlite => {
                    let b = if backend == BackendArg::WharfPostgres { wharf::Backend::Postgres } else { wharf::Backend::Sqlite };
                    let rt = wharf_config(c, args.concurrency);
                    let mut row = Row { backend: label, config, claim_ahead: wharf::claim_ahead(&rt), w1: None, w2: None };
                    if w1 {
                        row.w1 = Some(wharf::w1(b, &args.pg, &rt, args.n, args.chunk, limits).await);
                    }
                    if w2 {
                        row.w2 = Some(wharf::w2(b, &args.pg, &rt, args.w2_jobs, args.w2_rate, limits).await);
                    }
                    row
                }
                BackendArg::ApalisPostgres => {
                    let cfg = apalis_config(c, args.concurrency);
                    let mut row = Row { backend: label, config: cfg.name, claim_ahead: cfg.claim_ahead(), w1: None, w2: None };
                    if w1 {
                        row.w1 = Some(raw_apalis::w1(&args.pg, &cfg, args.n, args.chunk, limits).await);
                    }
                    if w2 {
                        row.w2 = Some(raw_apalis::w2(&args.pg, &cfg, args.w2_jobs, args.w2_rate, limits).await);
                    }
                    row
                }
            };
            eprint!("{}", details(std::slice::from_ref(&row), false));
            rows.push(row);
        }
    }

    let params = format!(
        "W1 N = {}, W2 {} jobs at {}/s, concurrency {}, one process; PostgreSQL URLs with sslmode=disable",
        args.n, args.w2_jobs, args.w2_rate, args.concurrency
    );
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
    let failed: Vec<String> = rows.iter().filter(|r| !r.ok()).map(|r| format!("{} / {}", r.backend, r.config)).collect();
    if !failed.is_empty() {
        bail!("lost or duplicated jobs, or a failed run: {}", failed.join(", "));
    }
    Ok(())
}
