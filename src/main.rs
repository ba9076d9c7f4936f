//! `wharf`: one binary for every role — the API, worker pools, or all of it in one process.

mod commands;
mod config;
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let result = match cli.command {
        Command::Serve => commands::serve().await,
        Command::Api => commands::api().await,
        Command::Worker { pools, concurrency } => commands::worker(pools, concurrency).await,
        Command::Scheduler => commands::scheduler().await,
        Command::Migrate => commands::migrate().await,
        Command::Keys { command: KeysCommand::Create { tenant, scopes } } => {
            commands::create_key(&tenant, &scopes).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            ExitCode::FAILURE
        }
    }
}
