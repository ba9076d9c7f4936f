//! Operator actions and tenant isolation through the real API process: listing, filtering,
//! replaying (one and bulk), discarding; another tenant sees none of it; bad input names fields.

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use wharf_jobs::{JobState, keys::Scope, kinds::diagnostic::DiagnosticJob};

on_both_backends!(
    tenant_b_cannot_see_or_touch_tenant_a,
    bulk_replay_replays_exactly_the_matching,
    bad_input_names_the_field
);

const ALL: &[Scope] = &[Scope::JobsWrite, Scope::JobsRead, Scope::DlqRead, Scope::DlqWrite];

struct Running {
    env: TestEnv,
    api: ApiClient,
    _procs: Vec<WharfProcess>,
}

async fn start(backend: Backend) -> Running {
    let env = TestEnv::new(backend).await;
    let port = free_port();
    let api_proc = env.spawn(&["api"], &[("PORT", &port.to_string())]);
    let worker = env.spawn(&["worker", "--pools", "diagnostic"], &[("WORKER_POLL_INTERVAL_MS", "100")]);
    wait_port(port, Duration::from_secs(20)).await;
    Running { env, api: ApiClient::new(port), _procs: vec![api_proc, worker] }
}

async fn dead_letter(r: &Running, tenant: &str, message: &str) -> String {
    let id = enqueue_diagnostic(
        r.env.store.as_ref(),
        tenant,
        DiagnosticJob::Fail { message: message.into(), permanent: true },
    )
    .await;
    eventually(Duration::from_secs(20), "the job to be dead", || async {
        (r.env.job(tenant, &id).await.state == JobState::Dead).then_some(())
    })
    .await;
    id
}

fn ids(list: &Value) -> Vec<String> {
    list["items"].as_array().expect("items").iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

async fn tenant_b_cannot_see_or_touch_tenant_a(backend: Backend) {
    let r = start(backend).await;
    let a = r.env.key("tenant-a", ALL).await;
    let b = r.env.key("tenant-b", ALL).await;
    let (s, accepted) = r.api.post(&a, "/v1/emails", &email_body("x@example.com", "for A")).await;
    assert_eq!(s, 202, "{accepted}");
    let job = accepted["id"].as_str().unwrap();
    let dead = dead_letter(&r, "tenant-a", "boom for A").await;

    assert_eq!(r.api.get(&a, &format!("/v1/jobs/{job}")).await.0, 200);
    assert_eq!(r.api.get(&b, &format!("/v1/jobs/{job}")).await.0, 404);
    assert_eq!(r.api.get(&b, &format!("/v1/jobs/{dead}")).await.0, 404);
    assert_eq!(r.api.get(&b, &format!("/v1/dead-letters/{dead}")).await.0, 404);
    assert!(ids(&r.api.get(&b, "/v1/dead-letters").await.1).is_empty());
    assert_eq!(ids(&r.api.get(&a, "/v1/dead-letters").await.1), vec![dead.clone()]);
    assert_eq!(r.api.post(&b, &format!("/v1/dead-letters/{dead}/replay"), &json!({})).await.0, 404);
    assert_eq!(r.api.delete(&b, &format!("/v1/dead-letters/{dead}")).await, 404);
    let (s, bulk) = r.api.post(&b, "/v1/dead-letters/replay", &json!({})).await;
    assert_eq!((s, bulk["replayed"].as_u64()), (200, Some(0)), "{bulk}");
    // A's dead letter is untouched by all of that.
    assert_eq!(r.env.job("tenant-a", &dead).await.state, JobState::Dead);
    // A can discard it.
    assert_eq!(r.api.delete(&a, &format!("/v1/dead-letters/{dead}")).await, 204);
    assert_eq!(r.env.job("tenant-a", &dead).await.state, JobState::Discarded);
    // The action is audited for A's admins, invisible to B's.
    let admin_a = r.env.key("tenant-a", &[Scope::Admin]).await;
    let (s, audit) = r.api.get(&admin_a, "/v1/audit-log").await;
    assert_eq!(s, 200, "{audit}");
    assert_eq!(audit["items"][0]["action"], "dlq.discard", "{audit}");
    assert_eq!(audit["items"][0]["target"], dead.as_str());
    let admin_b = r.env.key("tenant-b", &[Scope::Admin]).await;
    let (_, audit_b) = r.api.get(&admin_b, "/v1/audit-log").await;
    // B sees only its own (empty) bulk replay, nothing of A's.
    let b_actions: Vec<&str> =
        audit_b["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
    assert_eq!(b_actions, vec!["dlq.replay_matching"], "{audit_b}");
    assert_eq!(r.api.get(&a, "/v1/audit-log").await.0, 403, "admin only");
    // Scopes are enforced: a read-only key cannot enqueue.
    let ro = r.env.key("tenant-a", &[Scope::JobsRead]).await;
    assert_eq!(r.api.post(&ro, "/v1/emails", &email_body("x@example.com", "nope")).await.0, 403);
    assert_eq!(r.api.get("wharf_not_a_key", "/v1/dead-letters").await.0, 401);
}

async fn bulk_replay_replays_exactly_the_matching(backend: Backend) {
    let r = start(backend).await;
    let key = r.env.key("acme", ALL).await;
    let mut alpha = Vec::new();
    for i in 0..3 {
        alpha.push(dead_letter(&r, "acme", &format!("alpha failure {i}")).await);
    }
    let beta = dead_letter(&r, "acme", "beta failure").await;
    let other_tenant = dead_letter(&r, "other", "alpha failure elsewhere").await;

    let (s, listed) = r.api.get(&key, "/v1/dead-letters?error=alpha&limit=2").await;
    assert_eq!(s, 200, "{listed}");
    assert_eq!(ids(&listed).len(), 2);
    let cursor = listed["next_cursor"].as_str().expect("a second page");
    let (_, page2) = r.api.get(&key, &format!("/v1/dead-letters?error=alpha&limit=2&cursor={cursor}")).await;
    let mut seen: Vec<String> = ids(&listed).into_iter().chain(ids(&page2)).collect();
    seen.sort();
    let mut expected = alpha.clone();
    expected.sort();
    assert_eq!(seen, expected, "pages cover exactly the alpha letters");

    let (s, bulk) = r.api.post(&key, "/v1/dead-letters/replay", &json!({"error": "alpha"})).await;
    assert_eq!(s, 200, "{bulk}");
    assert_eq!(bulk["replayed"], 3);
    for id in &alpha {
        let j = r.env.job("acme", id).await;
        assert_eq!(j.state, JobState::Replayed, "{id}");
        let new = j.replayed_by.expect("linked to its replay");
        assert_eq!(
            r.env.store.job("acme", new).await.unwrap().unwrap().replay_of.map(|x| x.to_string()),
            Some(id.clone())
        );
    }
    assert_eq!(r.env.job("acme", &beta).await.state, JobState::Dead);
    assert_eq!(r.env.job("other", &other_tenant).await.state, JobState::Dead);
}

async fn bad_input_names_the_field(backend: Backend) {
    let r = start(backend).await;
    let key = r.env.key("acme", ALL).await;
    let bad = json!({"from": "not an address", "to": ["ok@example.com", "broken@"], "subject": "", "text": "x"});
    let resp = r.api.http.post(format!("{}/v1/emails", r.api.base)).bearer_auth(&key).json(&bad).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/problem+json"));
    let body: Value = resp.json().await.unwrap();
    let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for f in ["from", "to[1]", "subject"] {
        assert!(fields.contains(&f), "{f} missing in {body}");
    }
    let (s, body) =
        r.api.post(&key, "/v1/emails", &json!({"to": ["a@example.com"], "subject": "s", "text": "t"})).await;
    assert!(s == 400 || s == 422, "{s} {body}");
    assert!(body.to_string().contains("from"), "names the missing field: {body}");
    let (s, body) = r.api.get(&key, "/v1/dead-letters?since=yesterday").await;
    assert_eq!(s, 400, "{body}");
    assert!(body.to_string().contains("since"), "{body}");

    // Idempotency-Key: same body → same job; another body → 422.
    let email = email_body("a@example.com", "once");
    let (s1, first) = r.api.post_with(&key, "/v1/emails", &email, &[("Idempotency-Key", "k-1")]).await;
    let (s2, again) = r.api.post_with(&key, "/v1/emails", &email, &[("Idempotency-Key", "k-1")]).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["id"], again["id"]);
    let (s3, _) =
        r.api.post_with(&key, "/v1/emails", &email_body("a@example.com", "other"), &[("Idempotency-Key", "k-1")]).await;
    assert_eq!(s3, 422);
}
