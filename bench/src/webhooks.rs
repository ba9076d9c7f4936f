//! `wharf-bench webhooks`: webhook deliveries per second to a local receiver at several worker
//! concurrency levels, next to W1's no-op drain at the same concurrency and N, each on a fresh
//! database and in its own child process (`--run-one`). The receiver verifies every delivery's
//! Standard Webhooks signature and records it; the run fails (non-zero exit) on any lost,
//! duplicated or badly signed delivery.

mod drain;
mod receiver;

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use wharf_workers::runtime::RuntimeConfig;

use crate::{Limits, W1, wharf};
use drain::HookRun;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Postgres => "wharf-postgres",
            Backend::Sqlite => "wharf-sqlite",
        }
    }

    fn wharf(self) -> wharf::Backend {
        match self {
            Backend::Postgres => wharf::Backend::Postgres,
            Backend::Sqlite => wharf::Backend::Sqlite,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Deliveries per run (rounded up to whole events: each event goes to every endpoint); W1
    /// drains as many no-op jobs.
    #[arg(long, default_value_t = 5_000)]
    n: usize,
    /// Endpoints, all pointing at the local receiver.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Each endpoint's `max_concurrency` (the API accepts at most 100).
    #[arg(long, default_value_t = 100)]
    endpoint_max_concurrency: u32,
    /// Worker concurrency levels (jobs running at once in the one worker process).
    #[arg(long, value_delimiter = ',', default_values = ["16", "64", "256"])]
    concurrency: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_values = ["postgres", "sqlite"])]
    backends: Vec<Backend>,
    /// Jobs claimed ahead of free slots; `RuntimeConfig`'s default (16) unless set. (`wharf
    /// worker --concurrency C` sets it to C.)
    #[arg(long)]
    prefetch: Option<usize>,
    /// The store's connection pool size (`POSTGRES_POOL_MAX` defaults to 10; SQLite caps at 8).
    #[arg(long, default_value_t = 10)]
    pool_max: u32,
    /// Runs of every (backend, concurrency); the table shows min–max when above 1.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// PostgreSQL server (no database): a fresh `wharf_bench_<random>` is created per run and dropped.
    #[arg(long, env = "WHARF_BENCH_PG", default_value = "postgres://postgres@127.0.0.1:5432")]
    pg: String,
    /// Also write the table and details as markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Give up on a drain when nothing succeeded for this many seconds.
    #[arg(long, default_value_t = 60)]
    stall_secs: u64,
    /// Internal: run one `webhooks|w1:backend:concurrency` here and print its result as JSON.
    #[arg(long, hide = true)]
    run_one: Option<String>,
}

impl Args {
    fn runtime(&self, concurrency: usize) -> RuntimeConfig {
        let d = RuntimeConfig::default();
        RuntimeConfig { concurrency, prefetch: self.prefetch.unwrap_or(d.prefetch), ..d }
    }

    /// Deliveries actually made: whole events.
    fn deliveries(&self) -> usize {
        let k = self.endpoints.max(1);
        self.n.div_ceil(k).max(1) * k
    }
}

const RESULT_PREFIX: &str = "WHARF_BENCH_WEBHOOKS ";

#[derive(Serialize, Deserialize)]
enum Outcome {
    Hooks(HookRun),
    W1(W1),
    Failed(String),
}

pub async fn run(args: Args) -> Result<()> {
    if let Some(spec) = &args.run_one {
        return run_one(&args, spec).await;
    }
    if args.concurrency.contains(&0) || args.endpoints == 0 || args.endpoint_max_concurrency == 0 {
        bail!("--concurrency, --endpoints and --endpoint-max-concurrency must be at least 1");
    }
    let started = std::time::SystemTime::now();
    let n = args.deliveries();
    let mut rows = Vec::new();
    for &backend in &args.backends {
        for &c in &args.concurrency {
            eprintln!("== {} / concurrency {c}", backend.label());
            let mut row = Row { backend, concurrency: c, w1: Vec::new(), hooks: Vec::new() };
            for _ in 0..args.runs.max(1) {
                row.w1.push(match spawn_one(&args, "w1", backend, c) {
                    Ok(Outcome::W1(w)) => Ok(w),
                    Ok(Outcome::Failed(e)) => Err(anyhow!(e)),
                    Ok(Outcome::Hooks(_)) => Err(anyhow!("asked for W1, got webhooks")),
                    Err(e) => Err(e),
                });
                row.hooks.push(match spawn_one(&args, "webhooks", backend, c) {
                    Ok(Outcome::Hooks(h)) => Ok(h),
                    Ok(Outcome::Failed(e)) => Err(anyhow!(e)),
                    Ok(Outcome::W1(_)) => Err(anyhow!("asked for webhooks, got W1")),
                    Err(e) => Err(e),
                });
            }
            eprint!("{}", details(std::slice::from_ref(&row), false));
            rows.push(row);
        }
    }
    let k = args.endpoints;
    let d = RuntimeConfig::default();
    let params = format!(
        "N = {n} per run: {} events × {k} endpoints (max_concurrency {} each) for webhooks, {n} no-op jobs for W1; \
         one worker process, prefetch {}, claim batch {}, store pool max {}; {} run(s) each; PostgreSQL URLs with \
         sslmode=disable",
        n / k,
        args.endpoint_max_concurrency,
        args.prefetch.map_or(format!("{} (RuntimeConfig default)", d.prefetch), |p| p.to_string()),
        d.claim_batch,
        args.pool_max,
        args.runs.max(1)
    );
    println!("{params}\n");
    print!("{}", table(&rows, false));
    println!();
    print!("{}", details(&rows, false));
    if let Some(path) = &args.markdown {
        let secs = started.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let md = format!(
            "<!-- wharf-bench webhooks, started at Unix time {secs} -->\n{params}.\n\n{}\n{}",
            table(&rows, true),
            details(&rows, true)
        );
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok())
        .map(|r| format!("{} / concurrency {}", r.backend.label(), r.concurrency))
        .collect();
    if !failed.is_empty() {
        bail!(
            "lost, duplicated or badly signed deliveries, lost or duplicated W1 jobs, or a failed run: {}",
            failed.join(", ")
        );
    }
    Ok(())
}

/// The child: one workload, its result as one JSON line on stdout.
async fn run_one(args: &Args, spec: &str) -> Result<()> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [what, b, c] = parts[..] else { bail!("--run-one wants webhooks|w1:backend:concurrency, got `{spec}`") };
    let backend = Backend::from_str(b, false).map_err(|e| anyhow!(e))?;
    let concurrency: usize = c.parse().context("concurrency")?;
    let limits = Limits { stall: Duration::from_secs(args.stall_secs), total: Duration::from_secs(3600) };
    let rt = args.runtime(concurrency);
    let n = args.deliveries();
    let outcome = match what {
        "w1" => {
            let setup = wharf::Setup { pg_base: &args.pg, pg_experiment: None, pg_params: None, sqlite_pool_max: None };
            wharf::w1(backend.wharf(), &setup, &rt, n, 1_000, limits).await.map(Outcome::W1)
        }
        "webhooks" => drain::run(&drain::Params {
            backend,
            pg_base: &args.pg,
            deliveries: n,
            endpoints: args.endpoints,
            endpoint_max_concurrency: args.endpoint_max_concurrency,
            rt,
            pool_max: args.pool_max,
            limits,
        })
        .await
        .map(Outcome::Hooks),
        other => bail!("unknown workload `{other}`"),
    }
    .unwrap_or_else(|e| Outcome::Failed(format!("{e:#}")));
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&outcome)?);
    Ok(())
}

/// The parent: one workload in a child process of this binary.
fn spawn_one(args: &Args, what: &str, backend: Backend, concurrency: usize) -> Result<Outcome> {
    let b = backend.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
    let spec = format!("{what}:{b}:{concurrency}");
    let mut cmd = std::process::Command::new(std::env::current_exe().context("locating wharf-bench")?);
    cmd.args(["webhooks", "--run-one", &spec, "--pg", &args.pg])
        .args(["--n", &args.n.to_string(), "--endpoints", &args.endpoints.to_string()])
        .args(["--endpoint-max-concurrency", &args.endpoint_max_concurrency.to_string()])
        .args(["--pool-max", &args.pool_max.to_string(), "--stall-secs", &args.stall_secs.to_string()]);
    if let Some(p) = args.prefetch {
        cmd.args(["--prefetch", &p.to_string()]);
    }
    let out = cmd.stderr(std::process::Stdio::inherit()).output().context("starting the child run")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix(RESULT_PREFIX)) {
        Some(json) => serde_json::from_str(json).context("reading the child's result"),
        None => bail!("the child run `{spec}` gave no result ({})", out.status),
    }
}

struct Row {
    backend: Backend,
    concurrency: usize,
    w1: Vec<Result<W1>>,
    hooks: Vec<Result<HookRun>>,
}

/// `a` or `min–max`.
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
            && self.hooks.iter().all(|r| r.as_ref().is_ok_and(HookRun::ok))
    }

    fn cells(&self) -> Vec<String> {
        let w1: Vec<&W1> = self.w1.iter().filter_map(|r| r.as_ref().ok()).collect();
        let h: Vec<&HookRun> = self.hooks.iter().filter_map(|r| r.as_ref().ok()).collect();
        let mark = |all: usize, ok: usize| if ok < all { " (+failed)" } else { "" };
        let hm = mark(self.hooks.len(), h.len());
        let of = |f: &dyn Fn(&HookRun) -> f64, d: usize| range(&h.iter().map(|x| f(x)).collect::<Vec<_>>(), d) + hm;
        let sum = |f: &dyn Fn(&HookRun) -> u64| {
            if h.is_empty() { "–".to_string() } else { h.iter().map(|x| f(x)).sum::<u64>().to_string() }
        };
        let ratios: Vec<f64> = w1
            .iter()
            .zip(&h)
            .filter(|(w, _)| w.drain_per_s > 0.0)
            .map(|(w, h)| 100.0 * h.per_s / w.drain_per_s)
            .collect();
        vec![
            self.backend.label().to_string(),
            self.concurrency.to_string(),
            range(&w1.iter().map(|w| w.drain_per_s).collect::<Vec<_>>(), 0) + mark(self.w1.len(), w1.len()),
            of(&|x| x.per_s, 0),
            if ratios.is_empty() { "–".into() } else { range(&ratios, 0) + " %" },
            of(&|x| x.handler_ms.map_or(f64::NAN, |l| l.p50), 1),
            of(&|x| x.handler_ms.map_or(f64::NAN, |l| l.p99), 1),
            of(&|x| x.cpu_us, 0),
            of(&|x| x.receiver_cpu_us.unwrap_or(f64::NAN), 0),
            sum(&|x| x.once.lost),
            sum(&|x| x.once.duplicated),
            sum(&|x| x.bad),
            sum(&|x| x.retries),
        ]
    }
}

const HEADER: [&str; 13] = [
    "backend",
    "concurrency",
    "W1 no-op drain/s",
    "webhook deliveries/s",
    "webhooks ÷ W1",
    "handler call p50 ms",
    "handler call p99 ms",
    "worker+PG CPU µs/delivery",
    "receiver CPU µs/delivery",
    "lost",
    "duplicated",
    "bad signature",
    "retried",
];

fn table(rows: &[Row], md: bool) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
    let mut s = String::new();
    if md {
        let _ = writeln!(s, "| {} |", HEADER.join(" | "));
        let _ = writeln!(s, "|{}", (0..HEADER.len()).map(|i| if i < 1 { "---|" } else { "---:|" }).collect::<String>());
        for r in &cells {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        return s;
    }
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| cells.iter().map(|r| r[i].chars().count()).chain([HEADER[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |r: &[String]| {
        r.iter()
            .enumerate()
            .map(|(i, c)| if i < 1 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(s, "{}", line(&HEADER.map(String::from)));
    let _ = writeln!(s, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    for r in &cells {
        let _ = writeln!(s, "{}", line(r));
    }
    s
}

fn details(rows: &[Row], md: bool) -> String {
    let mut s = String::new();
    let (head, item) = if md { ("- ", "  - ") } else { ("", "    ") };
    for r in rows {
        let _ = writeln!(
            s,
            "{head}{}{} / concurrency {}{}",
            if md { "**" } else { "" },
            r.backend.label(),
            r.concurrency,
            if md { "**" } else { "" }
        );
        let runs = r.w1.len().max(r.hooks.len());
        let tag = |label: &str, i: usize| if runs > 1 { format!("{label} run {}", i + 1) } else { label.to_string() };
        for (i, w) in r.w1.iter().enumerate() {
            let lines = w.as_ref().map(|w| w.details.clone()).unwrap_or_else(|e| vec![format!("FAILED: {e:#}")]);
            for l in lines {
                let _ = writeln!(s, "{item}{}: {l}", tag("W1", i));
            }
        }
        for (i, h) in r.hooks.iter().enumerate() {
            let lines = h.as_ref().map(|h| h.details.clone()).unwrap_or_else(|e| vec![format!("FAILED: {e:#}")]);
            for l in lines {
                let _ = writeln!(s, "{item}{}: {l}", tag("webhooks", i));
            }
        }
    }
    s
}
