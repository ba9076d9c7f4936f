//! `wharf`: one binary for every role — the API, worker pools, or all of it in one process.

mod commands;
mod config;
mod metrics;
mod ops;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "wharf", version, about = "Durable job queue: HTTP API, worker pools, dead letters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process on an embedded SQLite file (the laptop setup).
    Serve,
    /// The HTTP API only: validates and enqueues.
    Api,
    /// Worker pools: claim and run jobs.
    Worker {
        /// Pools to run, comma-separated (email, diagnostic). Default: every production pool.
        #[arg(long, value_delimiter = ',')]
        pools: Vec<String>,
        /// Jobs running at once per pool (overrides WORKER_CONCURRENCY).
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// The scheduler: fires cron schedules (purges, configured jobs) once per tick across
    /// replicas, and watches dead-letter levels.
    Scheduler,
    /// Apply database migrations.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The dead-letter queue, through the API (WHARF_URL, WHARF_API_KEY): list, show, replay, discard.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Per-queue counts (queued, scheduled, running, retrying, dead, done in the last minute),
    /// through the API (WHARF_URL, WHARF_API_KEY).
    Queues {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Jobs, through the API (WHARF_URL, WHARF_API_KEY): list, show, cancel.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Dead letters, newest first.
    List {
        #[command(flatten)]
        filter: ops::DlqFilter,
        #[arg(long)]
        limit: Option<u32>,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One dead letter with every attempt's error and its payload.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Replay one dead letter (optionally with an edited payload), or every match of the filters with --all.
    Replay {
        id: Option<String>,
        /// Replay every dead letter matching the filters (all of the tenant's without filters).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: ops::DlqFilter,
        /// A JSON file holding the payload to replay with.
        #[arg(long)]
        payload: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Discard a dead letter: it will not be replayed.
    Discard { id: String },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Jobs, newest first.
    List {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        /// scheduled, queued, running, retrying, succeeded, dead, cancelled, replayed, discarded.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One job with its attempts.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a scheduled, queued or retrying job.
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; prints the key (and only the key) on stdout. It is shown this once.
    Create {
        #[arg(long)]
        tenant: String,
        /// Comma-separated: jobs:write, jobs:read, webhooks:manage, dlq:read, dlq:write, admin.
        #[arg(long)]
        scopes: String,
    },
}

/// Runs a long-lived role with the Prometheus recorder installed.
async fn with_metrics<F, Fut>(role: F) -> anyhow::Result<()>
where
    F: FnOnce(metrics::Metrics) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    role(metrics::Metrics::install()?).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The long-lived roles export traces when the OTEL_* variables ask for it.
    let role = match &cli.command {
        Command::Serve => Some("serve"),
        Command::Api => Some("api"),
        Command::Worker { .. } => Some("worker"),
        Command::Scheduler => Some("scheduler"),
        _ => None,
    };
    let telemetry = match telemetry::init(role) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve => with_metrics(commands::serve).await,
        Command::Api => with_metrics(commands::api).await,
        Command::Worker { pools, concurrency } => with_metrics(|m| commands::worker(pools, concurrency, m)).await,
        Command::Scheduler => with_metrics(commands::scheduler).await,
        Command::Migrate => commands::migrate().await,
        Command::Keys { command: KeysCommand::Create { tenant, scopes } } => {
            commands::create_key(&tenant, &scopes).await
        }
        Command::Dlq { command } => match command {
            DlqCommand::List { filter, limit, cursor, json } => ops::dlq_list(&filter, limit, cursor, json).await,
            DlqCommand::Show { id, json } => ops::dlq_show(&id, json).await,
            DlqCommand::Replay { id, all, filter, payload, json } => {
                ops::dlq_replay(id.as_deref(), all, &filter, payload.as_deref(), json).await
            }
            DlqCommand::Discard { id } => ops::dlq_discard(&id).await,
        },
        Command::Queues { json } => ops::queues(json).await,
        Command::Jobs { command } => match command {
            JobsCommand::List { kind, queue, state, limit, cursor, json } => {
                ops::jobs_list(kind, queue, state, limit, cursor, json).await
            }
            JobsCommand::Show { id, json } => ops::jobs_show(&id, json).await,
            JobsCommand::Cancel { id, json } => ops::jobs_cancel(&id, json).await,
        },
    };
    // After the role's own shutdown, so that its last spans are exported too.
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            ExitCode::FAILURE
        }
    }
}
