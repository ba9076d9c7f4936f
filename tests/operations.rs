//! What on-call staff and operators use, through the real processes: the job listing, cancel,
//! per-queue counts, the Prometheus endpoint of the API and of a worker, and the `dlq` /
//! `queues` / `jobs` commands of the CLI (clients of the API).

#[macro_use]
mod support;

use std::{process::Command, time::Duration};

use chrono::Utc;
use serde_json::{Value, json};
use support::*;
use wharf_jobs::{
    JobState,
    keys::Scope,
    kinds::{JobKind, diagnostic::DiagnosticJob},
};

on_both_backends!(jobs_are_listed_cancelled_and_counted, the_cli_works_the_dead_letter_queue);

fn ids(list: &Value) -> Vec<String> {
    list["items"].as_array().expect("items").iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

fn queue<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["items"].as_array().unwrap().iter().find(|q| q["name"] == name).unwrap_or_else(|| panic!("{name} in {list}"))
}

/// The exposition text parses: every sample is `name{labels} value` with a float value, and
/// each `# TYPE` names a known type. Returns the samples.
fn prometheus_samples(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let kind = t.split_whitespace().nth(1).unwrap_or("");
            assert!(["counter", "gauge", "histogram", "summary"].contains(&kind), "bad TYPE line: {line}");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample: {line}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in: {line}"));
        out.push((series.to_string(), v));
    }
    out
}

fn sample(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

async fn scrape(port: u16) -> Vec<(String, f64)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    prometheus_samples(&r.text().await.unwrap())
}

async fn jobs_are_listed_cancelled_and_counted(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let port = free_port();
    let _api = env.spawn(&["api"], &[("PORT", &port.to_string())]);
    wait_port(port, Duration::from_secs(20)).await;
    let api = ApiClient::new(port);
    let a = env.key("acme", &[Scope::JobsWrite, Scope::JobsRead]).await;
    let a_read = env.key("acme", &[Scope::JobsRead]).await;
    let b = env.key("globex", &[Scope::JobsWrite, Scope::JobsRead]).await;

    let mut emails = Vec::new();
    for i in 0..3 {
        let (s, body) = api.post(&a, "/v1/emails", &email_body("x@example.com", &format!("m{i}"))).await;
        assert_eq!(s, 202, "{body}");
        emails.push(body["id"].as_str().unwrap().to_string());
    }
    let mut later = DiagnosticJob::Noop.into_job("acme");
    later.run_at = Some(Utc::now() + chrono::Duration::hours(1));
    let later_id = later.id.to_string();
    env.store.enqueue(later, None).await.unwrap();
    let (s, other) = api.post(&b, "/v1/emails", &email_body("y@example.com", "globex")).await;
    assert_eq!(s, 202);
    let other = other["id"].as_str().unwrap().to_string();

    // The listing: this tenant's jobs, newest first, filtered, paginated.
    let (s, all) = api.get(&a_read, "/v1/jobs").await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(ids(&all), vec![later_id.clone(), emails[2].clone(), emails[1].clone(), emails[0].clone()]);
    assert_eq!(ids(&api.get(&a, "/v1/jobs?kind=email").await.1).len(), 3);
    assert_eq!(ids(&api.get(&a, "/v1/jobs?state=scheduled").await.1), vec![later_id.clone()]);
    assert_eq!(ids(&api.get(&a, "/v1/jobs?state=queued&queue=email").await.1).len(), 3);
    let (s, p1) = api.get(&a, "/v1/jobs?limit=3").await;
    assert_eq!((s, ids(&p1).len()), (200, 3));
    let cursor = p1["next_cursor"].as_str().expect("a next page").to_string();
    assert_eq!(ids(&api.get(&a, &format!("/v1/jobs?limit=3&cursor={cursor}")).await.1), vec![emails[0].clone()]);
    let (s, bad) = api.get(&a, "/v1/jobs?state=finished").await;
    assert_eq!(s, 400, "{bad}");
    assert_eq!(bad["errors"][0]["field"], "state", "{bad}");
    assert_eq!(ids(&api.get(&b, "/v1/jobs").await.1), vec![other.clone()]);

    // Per-queue counts, per tenant; known queues are listed even when empty.
    let (s, queues) = api.get(&a, "/v1/queues").await;
    assert_eq!(s, 200, "{queues}");
    assert_eq!(queue(&queues, "email")["queued"], 3, "{queues}");
    assert_eq!(queue(&queues, "diagnostic")["scheduled"], 1, "{queues}");
    assert_eq!(queue(&queues, "webhooks")["queued"], 0, "{queues}");
    assert_eq!(queue(&api.get(&b, "/v1/queues").await.1, "email")["queued"], 1);

    // Cancel: a waiting job, once; another tenant's is not found; read-only keys may not.
    let path = format!("/v1/jobs/{later_id}/cancel");
    assert_eq!(api.post(&a_read, &path, &json!({})).await.0, 403);
    assert_eq!(api.post(&b, &path, &json!({})).await.0, 404);
    let (s, cancelled) = api.post(&a, &path, &json!({})).await;
    assert_eq!((s, cancelled["state"].as_str()), (200, Some("cancelled")), "{cancelled}");
    assert_eq!(env.job("acme", &later_id).await.state, JobState::Cancelled);
    let (s, again) = api.post(&a, &path, &json!({})).await;
    assert_eq!(s, 409, "{again}");
    assert!(again["detail"].as_str().unwrap().contains("cancelled"), "{again}");
    assert_eq!(queue(&api.get(&a, "/v1/queues").await.1, "diagnostic")["scheduled"], 0);
    let admin = env.key("acme", &[Scope::Admin]).await;
    let (_, audit) = api.get(&admin, "/v1/audit-log").await;
    assert!(
        audit["items"].as_array().unwrap().iter().any(|e| e["action"] == "job.cancel" && e["target"] == later_id),
        "{audit}"
    );

    // Prometheus: every tenant's depth, the request histogram; unauthenticated like /healthz.
    let samples = scrape(port).await;
    assert_eq!(sample(&samples, r#"wharf_queue_jobs{queue="email",state="queued"}"#), Some(4.0), "{samples:?}");
    assert_eq!(sample(&samples, r#"wharf_queue_jobs{queue="diagnostic",state="scheduled"}"#), Some(0.0));
    assert_eq!(sample(&samples, "wharf_store_up"), Some(1.0));
    assert!(samples.iter().any(|(s, _)| s.starts_with("wharf_http_request_duration_seconds_bucket")), "{samples:?}");
}

/// `wharf <args>` as an operator runs it against the API; (exit ok, stdout, stderr).
fn cli(port: u16, key: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .env_clear()
        .env("WHARF_URL", format!("http://127.0.0.1:{port}"))
        .env("WHARF_API_KEY", key)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wharf");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

async fn the_cli_works_the_dead_letter_queue(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let port = free_port();
    let worker_metrics = free_port();
    let _api = env.spawn(&["api"], &[("PORT", &port.to_string())]);
    let _worker = env.spawn(
        &["worker", "--pools", "diagnostic"],
        &[("WORKER_POLL_INTERVAL_MS", "100"), ("METRICS_PORT", &worker_metrics.to_string())],
    );
    wait_port(port, Duration::from_secs(20)).await;
    let key = env.key("acme", &[Scope::JobsRead, Scope::JobsWrite, Scope::DlqRead, Scope::DlqWrite]).await;
    let mut dead = Vec::new();
    for msg in ["smtp timeout", "quota exceeded"] {
        let fail = DiagnosticJob::Fail { message: msg.into(), permanent: true };
        let id = enqueue_diagnostic(env.store.as_ref(), "acme", fail).await;
        eventually(Duration::from_secs(20), "the job to be dead", || async {
            (env.job("acme", &id).await.state == JobState::Dead).then_some(())
        })
        .await;
        dead.push(id);
    }

    let (ok, out, err) = cli(port, &key, &["dlq", "list"]);
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().starts_with("ID"), "{out}");
    assert!(dead.iter().all(|id| out.contains(id.as_str())), "{out}");
    let (ok, out, _) = cli(port, &key, &["dlq", "list", "--error", "quota", "--json"]);
    assert!(ok);
    assert_eq!(ids(&serde_json::from_str(&out).unwrap()), vec![dead[1].clone()]);
    let (ok, out, _) = cli(port, &key, &["dlq", "show", &dead[0]]);
    assert!(ok && out.contains("smtp timeout") && out.contains("payload:"), "{out}");

    let (ok, out, err) = cli(port, &key, &["dlq", "replay", &dead[0]]);
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("replayed {} as job ", dead[0])), "{out}");
    assert_eq!(env.job("acme", &dead[0]).await.state, JobState::Replayed);
    let (ok, _, err) = cli(port, &key, &["dlq", "discard", &dead[1]]);
    assert!(ok, "{err}");
    assert_eq!(env.job("acme", &dead[1]).await.state, JobState::Discarded);

    // The replay fails again (same payload) and comes back; bulk replay picks it up.
    eventually(Duration::from_secs(20), "the replay to be dead", || async {
        let (_, out, _) = cli(port, &key, &["dlq", "list", "--json"]);
        (ids(&serde_json::from_str(&out).ok()?).len() == 1).then_some(())
    })
    .await;
    let (ok, out, err) = cli(port, &key, &["dlq", "replay", "--all", "--kind", "diagnostic"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "replayed 1 dead letters");

    let (ok, out, err) = cli(port, &key, &["queues"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("diagnostic ")), "{out}");
    let (ok, out, _) = cli(port, &key, &["jobs", "list", "--state", "discarded", "--json"]);
    assert!(ok);
    assert_eq!(ids(&serde_json::from_str(&out).unwrap()), vec![dead[1].clone()]);

    // Mistakes say what to fix, and exit non-zero.
    let (ok, _, err) = cli(port, &key, &["dlq", "replay"]);
    assert!(!ok && err.contains("--all"), "{err}");
    let (ok, _, err) = cli(port, "wrong", &["queues"]);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = cli(port, &key, &["dlq", "list", "--since", "yesterday"]);
    assert!(!ok && err.contains("since"), "{err}");
    let (ok, _, err) = cli(port, &key, &["jobs", "cancel", &dead[1]]);
    assert!(!ok && err.contains("409"), "{err}");

    // The worker's own metrics port: finished jobs counted by kind and outcome.
    let samples = scrape(worker_metrics).await;
    let dead_count = samples
        .iter()
        .filter(|(s, _)| s.starts_with("wharf_jobs_finished_total{") && s.contains(r#"kind="diagnostic""#))
        .map(|(_, v)| v)
        .sum::<f64>();
    assert!(dead_count >= 3.0, "{samples:?}");
}
