//! What each CLI command does. Thin: the work lives in the crates.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result, bail};
use poem::{EndpointExt, Route, Server, listener::TcpListener};
use tokio_util::sync::CancellationToken;
use wharf_api::{ApiState, app};
use wharf_jobs::{
    Store, StoreError,
    config::Env,
    keys::{NewApiKey, Scope, validate_tenant},
    objects::{config::ObjectsConfig, offload::OffloadingStore},
    open_store, queue,
    store::redact,
};
use wharf_scheduler::{Scheduler, SchedulerConfig};
use wharf_workers::runtime::Worker;

use crate::{config::Config, metrics::Metrics};

/// The store, with payloads above `PAYLOAD_OFFLOAD_BYTES` kept in object storage.
async fn store(cfg: &Config) -> Result<Arc<dyn Store>> {
    let store =
        open_store(&cfg.store).await.with_context(|| format!("cannot open the store at {}", redact(&cfg.store.url)))?;
    if matches!(cfg.objects, ObjectsConfig::Local { .. }) && !cfg.store.url.starts_with("sqlite:") {
        tracing::warn!(
            objects = %cfg.objects.describe(),
            "object storage is a local directory: processes on other hosts cannot read the large payloads \
             written here; set STORAGE_BUCKET"
        );
    }
    tracing::debug!(objects = %cfg.objects.describe(), offload_bytes = cfg.offload_bytes, "object storage");
    Ok(OffloadingStore::wrap(store, cfg.objects.open().await, cfg.offload_bytes))
}

/// Cancelled on SIGTERM or Ctrl-C.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
        }
        t.cancel();
    });
    token
}

async fn ensure_ready(store: &dyn Store) -> Result<()> {
    match store.ready().await {
        Ok(()) => Ok(()),
        Err(StoreError::NotMigrated) => bail!("the database is not migrated: run `wharf migrate` first"),
        Err(e) => Err(e).context("the store is not reachable"),
    }
}

fn default_pools() -> Vec<String> {
    queue::PRODUCTION_POOLS.iter().map(|s| s.to_string()).collect()
}

async fn run_api(cfg: &Config, store: Arc<dyn Store>, metrics: Metrics, stop: CancellationToken) -> Result<()> {
    let webhooks = Arc::new(wharf_jobs::webhooks::WebhookSettings::from_env(&cfg.env)?);
    let endpoint = Route::new()
        .at("/metrics", crate::metrics::endpoint(metrics, store.clone()))
        .nest("/", app(ApiState { store, public_url: cfg.public_url.clone() }).data(webhooks));
    let listener = TcpListener::bind(format!("{}:{}", cfg.host, cfg.port));
    Server::new(listener)
        .run_with_graceful_shutdown(endpoint, async move { stop.cancelled().await }, Some(Duration::from_secs(10)))
        .await
        .with_context(|| format!("the HTTP server on {}:{} failed (PORT, WHARF_HOST)", cfg.host, cfg.port))
}

/// `/metrics` on `METRICS_PORT` for the roles without an HTTP API, until `stop`.
fn spawn_metrics(cfg: &Config, metrics: Metrics, store: Arc<dyn Store>, stop: CancellationToken) {
    let Some(port) = cfg.metrics_port else { return };
    let host = cfg.host.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::metrics::serve(&host, port, metrics, store, stop).await {
            tracing::error!("{e:#}");
        }
    });
}

pub async fn serve(metrics: Metrics) -> Result<()> {
    let mut cfg = Config::load(Env::from_process(), "127.0.0.1")?;
    let key_file = wharf_jobs::webhooks::serve_defaults(&mut cfg.env, &cfg.data_dir)?;
    let store = store(&cfg).await?;
    store.migrate().await.context("applying migrations")?;
    if store.count_api_keys().await? == 0 {
        let key = NewApiKey::generate();
        store.create_api_key("default", &[Scope::Admin], &key).await?;
        println!("wharf: first start — created an admin API key for tenant `default` (shown only this once):");
        println!();
        println!("    {}", key.secret);
        println!();
    }
    let registry = wharf_workers::kinds::registry(&cfg.env, &cfg.data_dir, &store)?;
    let worker = Worker::new(store.clone(), registry, &default_pools(), cfg.runtime.clone())?;
    println!(
        "wharf: serving on {url} (console {url}/console, docs {url}/docs), store {store}, outbox {outbox}",
        url = cfg.public_url,
        store = redact(&cfg.store.url),
        outbox = cfg.data_dir.join("outbox").display()
    );
    if let Some(path) = key_file {
        println!(
            "wharf: webhook secrets are encrypted with the key in {} (set WHARF_ENCRYPTION_KEY to use another)",
            path.display()
        );
    }
    let scheduler = Scheduler::new(store.clone(), SchedulerConfig::from_env(&cfg.env)?);
    let stop = shutdown_signal();
    let worker = tokio::spawn(worker.run(stop.clone()));
    let scheduler = tokio::spawn(scheduler.run(stop.clone()));
    let api = run_api(&cfg, store, metrics, stop.clone()).await;
    stop.cancel();
    worker.await.context("worker task")??;
    scheduler.await.context("scheduler task")?;
    api
}

pub async fn api(metrics: Metrics) -> Result<()> {
    let cfg = Config::load(Env::from_process(), "0.0.0.0")?;
    let store = store(&cfg).await?;
    if let Err(e) = ensure_ready(store.as_ref()).await {
        // /readyz reports this too; the API starts so that probes can say why.
        tracing::warn!("{e:#}");
    }
    tracing::info!(url = %cfg.public_url, "API listening");
    run_api(&cfg, store, metrics, shutdown_signal()).await
}

pub async fn worker(pools: Vec<String>, concurrency: Option<usize>, metrics: Metrics) -> Result<()> {
    let mut cfg = Config::load(Env::from_process(), "0.0.0.0")?;
    if let Some(c) = concurrency {
        if c == 0 {
            bail!("--concurrency must be at least 1");
        }
        cfg.runtime.concurrency = c;
        cfg.runtime.prefetch = c;
    }
    let pools = if pools.is_empty() { default_pools() } else { pools };
    let store = store(&cfg).await?;
    ensure_ready(store.as_ref()).await?;
    let registry = wharf_workers::kinds::registry(&cfg.env, &cfg.data_dir, &store)?;
    let worker = Worker::new(store.clone(), registry, &pools, cfg.runtime.clone())?;
    let stop = shutdown_signal();
    spawn_metrics(&cfg, metrics, store, stop.clone());
    worker.run(stop).await?;
    Ok(())
}

pub async fn scheduler(metrics: Metrics) -> Result<()> {
    let cfg = Config::load(Env::from_process(), "0.0.0.0")?;
    let scheduler_cfg = SchedulerConfig::from_env(&cfg.env)?;
    let store = store(&cfg).await?;
    ensure_ready(store.as_ref()).await?;
    let stop = shutdown_signal();
    spawn_metrics(&cfg, metrics, store.clone(), stop.clone());
    Scheduler::new(store, scheduler_cfg).run(stop).await;
    Ok(())
}

pub async fn migrate() -> Result<()> {
    let cfg = Config::load(Env::from_process(), "0.0.0.0")?;
    let store = store(&cfg).await?;
    store.migrate().await.context("applying migrations")?;
    eprintln!("wharf: migrations applied to {}", redact(&cfg.store.url));
    Ok(())
}

pub async fn create_key(tenant: &str, scopes: &str) -> Result<()> {
    validate_tenant(tenant).map_err(anyhow::Error::msg).context("--tenant")?;
    let scopes = Scope::parse_list(scopes).map_err(anyhow::Error::msg).context("--scopes")?;
    let cfg = Config::load(Env::from_process(), "0.0.0.0")?;
    let store = store(&cfg).await?;
    ensure_ready(store.as_ref()).await?;
    let key = NewApiKey::generate();
    store.create_api_key(tenant, &scopes, &key).await?;
    println!("{}", key.secret);
    Ok(())
}
