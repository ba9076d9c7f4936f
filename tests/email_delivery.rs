//! Email through the whole pipeline: `wharf migrate`, `wharf api` and `wharf worker` as separate
//! processes, a real aiosmtpd, backoff between attempts, the dead-letter queue and replay.

#[macro_use]
mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use support::*;
use wharf_jobs::keys::Scope;

on_both_backends!(email_reaches_smtp, smtp_down_backs_off_then_dead_then_replay_delivers_once);

async fn email_reaches_smtp(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let migrate = env.spawn(&["migrate"], &[]).wait_exit_ok().await;
    assert!(migrate, "wharf migrate failed");
    let smtp = SmtpSink::start(env.path("maildir")).await;
    let port = free_port();
    let smtp_port = smtp.port.to_string();
    let _api = env.spawn(&["api"], &[("PORT", &port.to_string())]);
    let _worker = env.spawn(
        &["worker", "--pools", "email"],
        &[("EMAIL_PROVIDER", "smtp"), ("SMTP_HOST", "127.0.0.1"), ("SMTP_PORT", &smtp_port)],
    );
    wait_port(port, Duration::from_secs(20)).await;
    let key = env.key("acme", &[Scope::JobsWrite, Scope::JobsRead]).await;
    let api = ApiClient::new(port);

    let mut body = email_body("rcpt@example.com", "Hello from wharf");
    body["cc"] = serde_json::json!(["copy@example.com"]);
    let (status, accepted) = api.post(&key, "/v1/emails", &body).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("id").to_string();
    assert!(accepted["status_url"].as_str().unwrap().ends_with(&format!("/v1/jobs/{id}")));

    let job = api.wait_state(&key, &id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(job["attempts"], 1, "{job}");

    let msgs = eventually(Duration::from_secs(10), "the message in the Maildir", || async {
        let m = smtp.messages();
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(m.contains("Subject: Hello from wharf"), "{m}");
    assert!(m.contains("rcpt@example.com") && m.contains("copy@example.com"), "{m}");
    assert!(m.contains("text body of Hello from wharf"), "{m}");
    assert!(m.contains("html body of Hello from wharf"), "{m}");
    assert!(m.contains(&id), "Message-ID or X-Wharf-Job-Id carries the job id: {m}");
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().expect("timestamp").parse().expect("RFC 3339")
}

async fn smtp_down_backs_off_then_dead_then_replay_delivers_once(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let smtp_port = free_port(); // nothing listens yet: connection refused
    let port = free_port();
    let _api = env.spawn(&["api"], &[("PORT", &port.to_string())]);
    let _worker = env.spawn(
        &["worker", "--pools", "email"],
        &[
            ("EMAIL_PROVIDER", "smtp"),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", &smtp_port.to_string()),
            ("EMAIL_MAX_ATTEMPTS", "3"),
            ("EMAIL_RETRY_BASE_MS", "1000"),
            ("EMAIL_RETRY_MAX_MS", "4000"),
            ("WORKER_POLL_INTERVAL_MS", "100"),
        ],
    );
    wait_port(port, Duration::from_secs(20)).await;
    let key = env.key("acme", &[Scope::JobsWrite, Scope::JobsRead, Scope::DlqRead, Scope::DlqWrite]).await;
    let api = ApiClient::new(port);
    let (status, accepted) = api.post(&key, "/v1/emails", &email_body("rcpt@example.com", "Retry me")).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();

    let job = api.wait_state(&key, &id, "dead", Duration::from_secs(30)).await;
    let errors = job["errors"].as_array().expect("errors").clone();
    assert_eq!(errors.len(), 3, "{job}");
    assert_eq!(job["attempts"], 3);
    // Backoff: ~1 s after attempt 1, ~2 s after attempt 2 (±20 % jitter, plus pickup latency).
    for (i, nominal) in [(1usize, 1.0f64), (2, 2.0)] {
        let gap =
            (time(&errors[i]["started_at"]) - time(&errors[i - 1]["finished_at"])).num_milliseconds() as f64 / 1000.0;
        assert!(
            gap >= nominal * 0.8 - 0.05 && gap <= nominal * 1.2 + 1.0,
            "gap before attempt {} was {gap}s: {job}",
            i + 1
        );
    }
    for e in &errors {
        assert!(!e["error"].as_str().unwrap().is_empty(), "{e}");
    }

    let (s, list) = api.get(&key, "/v1/dead-letters").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["id"], id.as_str());

    // SMTP comes up; replay delivers exactly once.
    let smtp = SmtpSink::start_on(smtp_port, env.path("maildir")).await;
    let (s, replay) = api.post(&key, &format!("/v1/dead-letters/{id}/replay"), &serde_json::json!({})).await;
    assert_eq!(s, 202, "{replay}");
    let new_id = replay["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);
    let replayed = api.wait_state(&key, &new_id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(replayed["replay_of"], id.as_str());
    assert_eq!(replayed["attempts"], 1);
    let (_, original) = api.get(&key, &format!("/v1/jobs/{id}")).await;
    assert_eq!(original["state"], "replayed");
    assert_eq!(original["replayed_by"], new_id.as_str());
    // Replaying again is refused: it is no longer dead.
    let (s, _) = api.post(&key, &format!("/v1/dead-letters/{id}/replay"), &serde_json::json!({})).await;
    assert_eq!(s, 409);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.messages().len(), 1, "delivered exactly once");
}
