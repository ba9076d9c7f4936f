//! Prometheus metrics. Every role installs one recorder behind the `metrics` facade the crates
//! write to, and serves `GET /metrics`: the API roles on their HTTP port, workers and
//! schedulers on `METRICS_PORT` (with `/healthz`). Queue depths are read from the store at
//! scrape time, for all tenants (`wharf_queue_jobs{queue, state}`): every replica reports the
//! same numbers, so aggregate them with `max by (queue, state)`.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::{
    Endpoint, EndpointExt, IntoResponse, Response, Route, Server, get, handler, http::StatusCode,
    listener::TcpListener, web::Data,
};
use tokio_util::sync::CancellationToken;
use wharf_jobs::{Store, queue};

/// Latency buckets (seconds) for every `*_seconds` histogram: job waits and attempts, HTTP
/// requests, webhook and provider calls span 1 ms to minutes.
const BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// The installed recorder, and the queues seen so far (so a queue that empties reports 0
/// instead of keeping its last value).
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl Metrics {
    pub fn install() -> Result<Metrics> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .context("histogram buckets")?
            .install_recorder()
            .context("installing the metrics recorder")?;
        let seen = queue::ALL.iter().map(|q| q.to_string()).collect();
        Ok(Metrics { handle, seen: Arc::new(Mutex::new(seen)) })
    }

    /// The exposition text, with queue depths read now.
    pub async fn render(&self, store: &dyn Store) -> String {
        match store.queue_counts(None).await {
            Ok(counts) => {
                let mut seen = self.seen.lock().expect("metrics lock");
                seen.extend(counts.iter().map(|c| c.queue.clone()));
                for q in seen.iter() {
                    let c = counts.iter().find(|c| &c.queue == q).cloned().unwrap_or_default();
                    for (state, n) in [
                        ("queued", c.queued),
                        ("scheduled", c.scheduled),
                        ("running", c.running),
                        ("retrying", c.retrying),
                        ("dead", c.dead),
                    ] {
                        metrics::gauge!("wharf_queue_jobs", "queue" => q.clone(), "state" => state).set(n as f64);
                    }
                    metrics::gauge!("wharf_queue_succeeded_last_minute", "queue" => q.clone())
                        .set(c.done_last_minute as f64);
                }
                metrics::gauge!("wharf_store_up").set(1.0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read queue depths");
                metrics::gauge!("wharf_store_up").set(0.0);
            }
        }
        self.handle.run_upkeep();
        self.handle.render()
    }
}

#[handler]
async fn scrape(Data(m): Data<&Metrics>, Data(store): Data<&Arc<dyn Store>>) -> Response {
    m.render(store.as_ref()).await.with_content_type("text/plain; version=0.0.4; charset=utf-8").into_response()
}

#[handler]
fn alive() -> StatusCode {
    StatusCode::OK
}

/// `GET /metrics`, to mount next to the API.
pub fn endpoint(m: Metrics, store: Arc<dyn Store>) -> impl Endpoint<Output = Response> {
    get(scrape).data(m).data(store).map_to_response()
}

/// `/metrics` and `/healthz` on their own port, for the roles without an HTTP API.
pub async fn serve(host: &str, port: u16, m: Metrics, store: Arc<dyn Store>, stop: CancellationToken) -> Result<()> {
    let app = Route::new().at("/metrics", endpoint(m, store)).at("/healthz", get(alive));
    Server::new(TcpListener::bind(format!("{host}:{port}")))
        .run_with_graceful_shutdown(app, async move { stop.cancelled().await }, Some(Duration::from_secs(5)))
        .await
        .with_context(|| format!("the metrics server on {host}:{port} failed (METRICS_PORT)"))
}
