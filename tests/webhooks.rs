//! Webhook delivery through real `wharf api` and `wharf worker --pools webhooks` processes to a
//! scripted receiver on 127.0.0.1 (allowed by `WEBHOOK_ALLOWED_CIDRS`), on PostgreSQL and
//! SQLite. Every delivery is verified with the independent Standard Webhooks implementation in
//! `support::webhooks`.

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{webhooks::*, *};
use wharf_jobs::{JobState, keys::Scope};

on_both_backends!(
    retries_then_delivers_signed_and_rotation_signs_twice,
    exhausted_deliveries_die_replay_and_recover,
    gone_disables_and_retry_after_is_honoured,
    failing_endpoint_is_disabled_and_announced,
    tenants_are_isolated,
    idempotent_create_and_rotate_never_store_the_secret,
);

const WAIT: Duration = Duration::from_secs(30);

struct Hooks {
    env: TestEnv,
    api: ApiClient,
    rx: Receiver,
    key: String,
    _procs: Vec<WharfProcess>,
}

/// `api` + `worker --pools webhooks` sharing one encryption key; `worker_env` overrides.
async fn start(backend: Backend, schedule: &str, worker_env: &[(&str, &str)]) -> Hooks {
    let env = TestEnv::new(backend).await;
    let port = free_port();
    let enc = encryption_key();
    let common = [
        ("WHARF_ENCRYPTION_KEY", enc.as_str()),
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8"),
        ("WEBHOOK_RETRY_SCHEDULE", schedule),
        ("WORKER_POLL_INTERVAL_MS", "100"),
    ];
    let mut api_env: Vec<(&str, &str)> = common.to_vec();
    let port_s = port.to_string();
    api_env.push(("PORT", &port_s));
    let api = env.spawn(&["api"], &api_env);
    let mut wenv: Vec<(&str, &str)> =
        common.iter().filter(|(k, _)| !worker_env.iter().any(|(w, _)| w == k)).copied().collect();
    wenv.extend(worker_env.iter().filter(|(_, v)| !v.is_empty()).copied());
    let worker = env.spawn(&["worker", "--pools", "webhooks"], &wenv);
    wait_port(port, Duration::from_secs(20)).await;
    let key = env.key("acme", &[Scope::Admin]).await;
    Hooks { env, api: ApiClient::new(port), rx: Receiver::start().await, key, _procs: vec![api, worker] }
}

/// Creates an endpoint; returns (id, secret).
async fn endpoint(h: &Hooks, key: &str, body: Value) -> (String, String) {
    let (s, e) = h.api.post(key, "/v1/webhook-endpoints", &body).await;
    assert_eq!(s, 201, "{e}");
    (e["id"].as_str().unwrap().to_string(), e["secret"].as_str().unwrap().to_string())
}

async fn send(h: &Hooks, key: &str, body: Value) -> Value {
    let (s, ev) = h.api.post(key, "/v1/events", &body).await;
    assert_eq!(s, 202, "{ev}");
    ev
}

async fn wait_job(h: &Hooks, tenant: &str, id: &str, state: JobState) -> wharf_jobs::JobRecord {
    eventually(WAIT, &format!("job {id} to be {state}"), || async {
        let j = h.env.job(tenant, id).await;
        (j.state == state).then_some(j)
    })
    .await
}

fn job_of(ev: &Value, endpoint: &str) -> String {
    ev["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["endpoint_id"] == endpoint)
        .unwrap_or_else(|| panic!("no delivery to {endpoint} in {ev}"))["job_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn gap(a: &Received, b: &Received) -> Duration {
    b.at.duration_since(a.at)
}

#[test]
fn the_test_hmac_matches_rfc_4231() {
    // RFC 4231, test case 2: the receiver's HMAC is right before it judges wharf's.
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

async fn retries_then_delivers_signed_and_rotation_signs_twice(backend: Backend) {
    let h = start(backend, "1s,2s", &[]).await;
    h.rx.script("/hook", vec![Reply::status(500), Reply::status(200)]);
    let (ep, secret) = endpoint(
        &h,
        &h.key,
        json!({"url": h.rx.url("/hook"), "event_types": ["invoice.*"], "headers": {"X-Team": "billing"}}),
    )
    .await;
    assert!(secret.starts_with("whsec_"));
    // Listings never show the secret.
    let (_, listed) = h.api.get(&h.key, "/v1/webhook-endpoints").await;
    assert!(!listed.to_string().contains(&secret) && listed["items"][0]["id"] == ep.as_str(), "{listed}");
    let (_, shown) = h.api.get(&h.key, &format!("/v1/webhook-endpoints/{ep}")).await;
    assert!(!shown.to_string().contains("whsec_"), "{shown}");

    let ev = send(&h, &h.key, json!({"type": "invoice.paid", "data": {"amount": 42, "currency": "EUR"}})).await;
    let event_id = ev["id"].as_str().unwrap().to_string();
    let job = job_of(&ev, &ep);
    let got = h.rx.wait_for("/hook", 2, WAIT).await;
    for r in &got {
        assert_signed(&secret, r);
        assert_eq!(r.header("webhook-id"), event_id, "stable across retries");
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("x-team"), "billing");
        let body = r.json();
        assert_eq!(body["type"], "invoice.paid");
        assert_eq!(body["data"], json!({"amount": 42, "currency": "EUR"}));
        assert!(body["timestamp"].is_string(), "{body}");
    }
    assert_eq!(got[0].body, got[1].body, "the same envelope on every attempt");
    let g = gap(&got[0], &got[1]);
    assert!(g >= Duration::from_millis(780) && g <= Duration::from_millis(2600), "1 s ± 20 % (+ pickup): {g:?}");
    let done = wait_job(&h, "acme", &job, JobState::Succeeded).await;
    assert_eq!(done.attempt, 2);

    // The attempt log: newest first, 200 then 500 with the response body.
    let (s, log) = h.api.get(&h.key, &format!("/v1/webhook-endpoints/{ep}/attempts")).await;
    assert_eq!(s, 200, "{log}");
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{log}");
    assert_eq!((items[0]["status_code"].as_i64(), items[0]["attempt"].as_i64()), (Some(200), Some(2)));
    assert!(items[0]["error_class"].is_null());
    assert_eq!((items[1]["status_code"].as_i64(), items[1]["error_class"].as_str()), (Some(500), Some("http_5xx")));
    assert_eq!(items[1]["response_body"], "status 500");
    assert!(items[1]["latency_ms"].as_i64().unwrap() >= 0);
    // ... and per event.
    let (s, event) = h.api.get(&h.key, &format!("/v1/events/{event_id}")).await;
    assert_eq!(s, 200, "{event}");
    assert_eq!(event["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(event["deliveries"][0]["job_id"], job.as_str());

    // Rotation: during the overlap both secrets sign, and each signature verifies.
    let (s, rotated) = h.api.post(&h.key, &format!("/v1/webhook-endpoints/{ep}/rotate-secret"), &json!({})).await;
    assert_eq!(s, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    send(&h, &h.key, json!({"type": "invoice.voided", "data": {}})).await;
    let got = h.rx.wait_for("/hook", 3, WAIT).await;
    let r = &got[2];
    assert_eq!(r.header("webhook-signature").split(' ').count(), 2, "{:?}", r.headers);
    assert_eq!(verify(&[&secret, &new_secret], r).unwrap(), vec![true, true]);
    for sig in r.header("webhook-signature").split(' ') {
        let mut one = r.clone();
        one.headers.insert("webhook-signature".into(), sig.to_string());
        let v = verify(&[&secret, &new_secret], &one).unwrap();
        assert_eq!(v.iter().filter(|x| **x).count(), 1, "each signature verifies with exactly one secret");
    }
    // Events of other types are not delivered to this endpoint.
    let ev = send(&h, &h.key, json!({"type": "user.created", "data": {}})).await;
    assert_eq!(ev["deliveries"], json!([]));

    // Scopes: endpoints need webhooks:manage, events jobs:write.
    let writer = h.env.key("acme", &[Scope::JobsWrite]).await;
    assert_eq!(h.api.get(&writer, "/v1/webhook-endpoints").await.0, 403);
    let manager = h.env.key("acme", &[Scope::WebhooksManage]).await;
    assert_eq!(h.api.post(&manager, "/v1/events", &json!({"type": "a.b", "data": {}})).await.0, 403);
    // Bad input names its fields.
    let (s, bad) = h
        .api
        .post(&h.key, "/v1/webhook-endpoints", &json!({"url": "ftp://x", "event_types": ["a b"], "timeout_ms": 0}))
        .await;
    assert_eq!(s, 422, "{bad}");
    let fields: Vec<&str> = bad["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, vec!["url", "event_types[0]", "timeout_ms"]);
}

async fn exhausted_deliveries_die_replay_and_recover(backend: Backend) {
    let h = start(backend, "1s,1s", &[]).await;
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(1);
    h.rx.script("/one", vec![Reply::status(500)]);
    h.rx.script("/two", vec![Reply::status(503)]);
    let (one, secret_one) = endpoint(&h, &h.key, json!({"url": h.rx.url("/one"), "event_types": ["order.*"]})).await;
    let (two, _) = endpoint(&h, &h.key, json!({"url": h.rx.url("/two"), "event_types": ["order.created"]})).await;
    let ev1 = send(&h, &h.key, json!({"type": "order.created", "data": {"n": 1}, "id": "evt_first"})).await;
    let ev2 = send(&h, &h.key, json!({"type": "order.created", "data": {"n": 2}})).await;
    let jobs = [job_of(&ev1, &one), job_of(&ev2, &one), job_of(&ev1, &two), job_of(&ev2, &two)];
    for j in &jobs {
        wait_job(&h, "acme", j, JobState::Dead).await;
    }
    // 1 try + 2 retries each, all logged.
    assert_eq!(h.rx.requests("/one").len(), 6);
    let (_, log) = h.api.get(&h.key, &format!("/v1/webhook-endpoints/{one}/attempts?event_id=evt_first")).await;
    let attempts: Vec<i64> = log["items"].as_array().unwrap().iter().map(|a| a["attempt"].as_i64().unwrap()).collect();
    assert_eq!(attempts, vec![3, 2, 1], "{log}");
    assert!(
        log["items"].as_array().unwrap().iter().all(|a| a["status_code"] == 500 && a["job_id"] == jobs[0].as_str())
    );

    // The dead letter carries no secret.
    let (s, dl) = h.api.get(&h.key, &format!("/v1/dead-letters/{}", jobs[0])).await;
    assert_eq!(s, 200, "{dl}");
    let text = dl.to_string();
    assert!(!text.contains("whsec_") && !text.contains(&secret_one[6..]), "{dl}");
    assert_eq!(dl["payload"]["endpoint_id"], one.as_str());
    assert!(dl["last_error"].as_str().unwrap().contains("retry schedule is exhausted"), "{dl}");
    let dead = h.env.job("acme", &jobs[0]).await;
    assert!(!dead.payload.to_string().contains("whsec_"));

    // Replay re-signs with the current secret and the same webhook-id.
    let (_, rotated) = h.api.post(&h.key, &format!("/v1/webhook-endpoints/{one}/rotate-secret"), &json!({})).await;
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    h.rx.script("/one", vec![Reply::status(200)]);
    let (s, replay) = h.api.post(&h.key, &format!("/v1/dead-letters/{}/replay", jobs[0]), &json!({})).await;
    assert_eq!(s, 202, "{replay}");
    let got = h.rx.wait_for("/one", 7, WAIT).await;
    assert_eq!(got[6].header("webhook-id"), "evt_first");
    assert_eq!(verify(&[&new_secret, &secret_one], &got[6]).unwrap(), vec![true, true]);
    wait_job(&h, "acme", replay["id"].as_str().unwrap(), JobState::Succeeded).await;

    // Recover: exactly that endpoint's dead deliveries in the window (ev2 → one).
    let (s, rec) =
        h.api.post(&h.key, &format!("/v1/webhook-endpoints/{one}/recover"), &json!({"since": t0.to_rfc3339()})).await;
    assert_eq!(s, 200, "{rec}");
    assert_eq!(rec["recovered"], 1, "{rec}");
    let got = h.rx.wait_for("/one", 8, WAIT).await;
    assert_eq!(got[7].header("webhook-id"), ev2["id"].as_str().unwrap());
    assert_signed(&new_secret, &got[7]);
    let recovered = h.env.job("acme", &jobs[1]).await;
    assert_eq!(recovered.state, JobState::Replayed);
    wait_job(&h, "acme", &recovered.replayed_by.unwrap().to_string(), JobState::Succeeded).await;
    // The other endpoint's dead deliveries are untouched; a window before them finds none.
    for j in &jobs[2..] {
        assert_eq!(h.env.job("acme", j).await.state, JobState::Dead);
    }
    let before = (t0 - chrono::Duration::hours(1)).to_rfc3339();
    let (s, rec) = h
        .api
        .post(
            &h.key,
            &format!("/v1/webhook-endpoints/{two}/recover"),
            &json!({"since": before, "until": t0.to_rfc3339()}),
        )
        .await;
    assert_eq!((s, rec["recovered"].as_u64()), (200, Some(0)), "{rec}");
    // A duplicate event id is refused.
    assert_eq!(
        h.api.post(&h.key, "/v1/events", &json!({"type": "order.created", "data": {}, "id": "evt_first"})).await.0,
        409
    );
}

async fn gone_disables_and_retry_after_is_honoured(backend: Backend) {
    let h = start(backend, "2s,2s", &[]).await;
    h.rx.script("/gone", vec![Reply::status(410)]);
    h.rx.script("/busy", vec![Reply::status(429).with_header("Retry-After", "3"), Reply::status(200)]);
    h.rx.script("/moved", vec![Reply::status(302).with_header("Location", &h.rx.url("/elsewhere"))]);
    let (gone, _) = endpoint(&h, &h.key, json!({"url": h.rx.url("/gone"), "event_types": ["ping"]})).await;
    let (busy, secret) = endpoint(&h, &h.key, json!({"url": h.rx.url("/busy"), "event_types": ["ping"]})).await;
    let (moved, _) = endpoint(&h, &h.key, json!({"url": h.rx.url("/moved"), "event_types": ["ping"]})).await;
    let ev = send(&h, &h.key, json!({"type": "ping", "data": {}})).await;

    // 410: dead at once, endpoint disabled, no further attempts.
    wait_job(&h, "acme", &job_of(&ev, &gone), JobState::Dead).await;
    let (_, e) = h.api.get(&h.key, &format!("/v1/webhook-endpoints/{gone}")).await;
    assert_eq!(e["enabled"], false, "{e}");
    assert!(e["disabled_reason"].as_str().unwrap().contains("410"), "{e}");

    // 429 with Retry-After: 3 → the next attempt no sooner than 3 s later.
    let got = h.rx.wait_for("/busy", 2, WAIT).await;
    assert!(gap(&got[0], &got[1]) >= Duration::from_secs(3), "{:?}", gap(&got[0], &got[1]));
    assert_signed(&secret, &got[1]);
    wait_job(&h, "acme", &job_of(&ev, &busy), JobState::Succeeded).await;

    // A 302 is a failed attempt and is not followed.
    let first = h.rx.wait_for("/moved", 2, WAIT).await;
    assert!(h.rx.requests("/elsewhere").is_empty(), "the redirect was followed");
    assert!(gap(&first[0], &first[1]) >= Duration::from_millis(1500));
    let (_, log) = h.api.get(&h.key, &format!("/v1/webhook-endpoints/{moved}/attempts")).await;
    let last = &log["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["status_code"].as_i64(), last["error_class"].as_str()), (Some(302), Some("http_3xx")), "{log}");

    assert_eq!(h.rx.requests("/gone").len(), 1, "no attempt after 410");
    let ev = send(&h, &h.key, json!({"type": "ping", "data": {}})).await;
    assert!(ev["deliveries"].as_array().unwrap().iter().all(|d| d["endpoint_id"] != gone.as_str()), "{ev}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.rx.requests("/gone").len(), 1, "a disabled endpoint gets nothing");
}

async fn failing_endpoint_is_disabled_and_announced(backend: Backend) {
    let h = start(backend, "1s,1s,1s,1s,1s,1s", &[("WEBHOOK_DISABLE_AFTER", "2s")]).await;
    h.rx.script("/failing", vec![Reply::status(500)]);
    let (failing, _) = endpoint(&h, &h.key, json!({"url": h.rx.url("/failing")})).await;
    let (ops, ops_secret) =
        endpoint(&h, &h.key, json!({"url": h.rx.url("/ops"), "event_types": ["endpoint.disabled"]})).await;
    let ev = send(&h, &h.key, json!({"type": "thing.happened", "data": {}})).await;
    assert_eq!(ev["deliveries"].as_array().unwrap().len(), 1, "only the unfiltered endpoint: {ev}");
    let job = job_of(&ev, &failing);

    let got = h.rx.wait_for("/ops", 1, WAIT).await;
    assert_signed(&ops_secret, &got[0]);
    let body = got[0].json();
    assert_eq!(body["type"], "endpoint.disabled");
    assert_eq!(body["data"]["endpoint_id"], failing.as_str(), "{body}");
    let (_, e) = h.api.get(&h.key, &format!("/v1/webhook-endpoints/{failing}")).await;
    assert_eq!(e["enabled"], false, "{e}");
    assert!(e["failing_since"].is_string(), "{e}");
    let dead = wait_job(&h, "acme", &job, JobState::Dead).await;
    assert!(dead.last_error.unwrap().contains("endpoint disabled"));
    // At least 2 s of failures, then it stopped; the disabled endpoint got no endpoint.disabled.
    let tries = h.rx.requests("/failing");
    assert!(
        tries.len() >= 3 && gap(&tries[0], tries.last().unwrap()) >= Duration::from_millis(1900),
        "{}",
        tries.len()
    );
    assert!(tries.iter().all(|r| r.json()["type"] == "thing.happened"));

    let (_, o) = h.api.get(&h.key, &format!("/v1/webhook-endpoints/{ops}")).await;
    assert_eq!(o["enabled"], true, "{o}");
    // Re-enabling clears the streak.
    let (s, e) = patch(&h.api, &h.key, &format!("/v1/webhook-endpoints/{failing}"), &json!({"enabled": true})).await;
    assert_eq!(s, 200, "{e}");
    assert!(e["enabled"] == true && e["failing_since"].is_null() && e["disabled_reason"].is_null(), "{e}");
}

async fn tenants_are_isolated(backend: Backend) {
    let h = start(backend, "1s", &[]).await;
    let other = h.env.key("other", &[Scope::Admin]).await;
    h.rx.script("/a", vec![Reply::status(410)]);
    let (ep, _) = endpoint(&h, &h.key, json!({"url": h.rx.url("/a"), "event_types": ["shared.*"]})).await;
    let base = format!("/v1/webhook-endpoints/{ep}");
    assert_eq!(h.api.get(&other, &base).await.0, 404);
    assert_eq!(patch(&h.api, &other, &base, &json!({"enabled": false})).await.0, 404);
    assert_eq!(h.api.post(&other, &format!("{base}/rotate-secret"), &json!({})).await.0, 404);
    assert_eq!(h.api.get(&other, &format!("{base}/attempts")).await.0, 404);
    assert_eq!(h.api.post(&other, &format!("{base}/recover"), &json!({"since": "2020-01-01T00:00:00Z"})).await.0, 404);
    assert_eq!(h.api.delete(&other, &base).await, 404);
    let (_, list) = h.api.get(&other, "/v1/webhook-endpoints").await;
    assert_eq!(list["items"], json!([]));

    // Another tenant's event reaches none of acme's endpoints, even with the same event id.
    let theirs = send(&h, &other, json!({"type": "shared.thing", "data": {}, "id": "evt_same"})).await;
    assert_eq!(theirs["deliveries"], json!([]));
    let ours = send(&h, &h.key, json!({"type": "shared.thing", "data": {}, "id": "evt_same"})).await;
    let job = job_of(&ours, &ep);
    wait_job(&h, "acme", &job, JobState::Dead).await;
    assert_eq!(h.rx.requests("/a").len(), 1);
    assert_eq!(h.api.get(&other, &format!("/v1/jobs/{job}")).await.0, 404);
    assert_eq!(h.api.get(&other, &format!("/v1/dead-letters/{job}")).await.0, 404);
    let (_, dl) = h.api.get(&other, "/v1/dead-letters").await;
    assert_eq!(dl["items"], json!([]));
    let (_, theirs_event) = h.api.get(&other, "/v1/events/evt_same").await;
    assert_eq!(theirs_event["attempts"], json!([]), "{theirs_event}");
    let (_, ours_event) = h.api.get(&h.key, "/v1/events/evt_same").await;
    assert_eq!(ours_event["attempts"].as_array().unwrap().len(), 1, "{ours_event}");
    assert_eq!(h.api.get(&other, "/v1/events/evt_unknown").await.0, 404);
    // Owner still sees and deletes it.
    assert_eq!(h.api.get(&h.key, &base).await.0, 200);
    assert_eq!(h.api.delete(&h.key, &base).await, 204);
    assert_eq!(h.api.get(&h.key, &base).await.0, 404);
}

/// The SSRF guard: a worker without the allow-list refuses loopback targets (by name and as
/// IPv4-mapped IPv6) at delivery time; an API without it refuses literal private addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused() {
    let h = start(Backend::Sqlite, "1s", &[("WEBHOOK_ALLOWED_CIDRS", "")]).await;
    let loopback_name = std::fs::read_to_string("/etc/hosts")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim_start().starts_with("127."))
        .flat_map(|l| l.split_whitespace().skip(1).map(str::to_string).collect::<Vec<_>>())
        .find(|n| !n.contains("localhost") && !n.starts_with('#'))
        .unwrap_or_else(|| "localhost".into());
    let targets = [
        format!("http://{loopback_name}:{}/by-name", h.rx.port),
        format!("http://localhost:{}/localhost", h.rx.port),
        format!("http://[::ffff:127.0.0.1]:{}/mapped", h.rx.port),
    ];
    let mut eps = Vec::new();
    for t in &targets {
        eps.push(endpoint(&h, &h.key, json!({"url": t})).await.0);
    }
    let ev = send(&h, &h.key, json!({"type": "probe", "data": {}})).await;
    for ep in &eps {
        let dead = wait_job(&h, "acme", &job_of(&ev, ep), JobState::Dead).await;
        let err = dead.last_error.unwrap();
        assert!(err.contains("refused by the SSRF guard") && err.contains("loopback"), "{err}");
        assert_eq!(dead.attempt, 1, "refusals are permanent");
        let (_, log) = h.api.get(&h.key, &format!("/v1/webhook-endpoints/{ep}/attempts")).await;
        assert_eq!(log["items"][0]["error_class"], "refused", "{log}");
    }
    for p in ["/by-name", "/localhost", "/mapped"] {
        assert!(h.rx.requests(p).is_empty(), "{p} was reached");
    }

    // An API without the allow-list and without plain http refuses at creation (422).
    let port = free_port();
    let _strict = h.env.spawn(&["api"], &[("PORT", &port.to_string()), ("WHARF_ENCRYPTION_KEY", &encryption_key())]);
    wait_port(port, Duration::from_secs(20)).await;
    let strict = ApiClient::new(port);
    for url in [
        "https://[::ffff:127.0.0.1]/",
        "https://169.254.169.254/latest",
        "https://127.0.0.1/",
        "https://10.1.2.3/",
        "https://[fd00::1]/",
        "http://example.com/hook",
    ] {
        let (s, body) = strict.post(&h.key, "/v1/webhook-endpoints", &json!({"url": url})).await;
        assert_eq!(s, 422, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "url", "{body}");
    }
    let (s, body) = strict.post(&h.key, "/v1/webhook-endpoints", &json!({"url": "https://example.com/hook"})).await;
    assert_eq!(s, 201, "{body}");
}

/// `wharf serve` on a laptop: loopback and plain http are allowed, and the encryption key is
/// made on first start in `$WHARF_DATA_DIR/encryption.key` (0600) and reused on the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_delivers_to_loopback_with_its_own_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rx = Receiver::start().await;
    let run = |port: u16| {
        let env = vec![
            ("WHARF_DATA_DIR".to_string(), data.display().to_string()),
            ("PORT".to_string(), port.to_string()),
            ("WORKER_POLL_INTERVAL_MS".to_string(), "100".to_string()),
        ];
        WharfProcess::spawn(&["serve"], &env, dir.path())
    };
    let port = free_port();
    let serve = run(port);
    wait_port(port, Duration::from_secs(30)).await;
    let key = eventually(Duration::from_secs(10), "the admin key on stdout", || async {
        serve.logs().lines().map(str::trim).find(|l| l.starts_with("wharf_")).map(str::to_string)
    })
    .await;
    let key_file = data.join("encryption.key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let stored_key = std::fs::read_to_string(&key_file).unwrap();
    let api = ApiClient::new(port);
    let (s, e) = api.post(&key, "/v1/webhook-endpoints", &json!({"url": rx.url("/laptop")})).await;
    assert_eq!(s, 201, "{e}");
    let secret = e["secret"].as_str().unwrap().to_string();
    let (s, ev) = api.post(&key, "/v1/events", &json!({"type": "dev.ping", "data": {"hello": "world"}})).await;
    assert_eq!(s, 202, "{ev}");
    let got = rx.wait_for("/laptop", 1, WAIT).await;
    assert_signed(&secret, &got[0]);
    drop(serve);

    let port = free_port();
    let _again = run(port);
    wait_port(port, Duration::from_secs(30)).await;
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), stored_key, "the key is kept");
    let (s, ev) = ApiClient::new(port).post(&key, "/v1/events", &json!({"type": "dev.ping", "data": {}})).await;
    assert_eq!(s, 202, "{ev}");
    let got = rx.wait_for("/laptop", 2, WAIT).await;
    assert_signed(&secret, &got[1]);
}

/// An `Idempotency-Key` on create and rotate answers the same secret again, decrypted from the
/// endpoint: the stored response never holds it.
async fn idempotent_create_and_rotate_never_store_the_secret(backend: Backend) {
    let h = start(backend, "1s", &[]).await;
    let body = json!({"url": h.rx.url("/idem")});
    let (s1, first) = h.api.post_with(&h.key, "/v1/webhook-endpoints", &body, &[("Idempotency-Key", "ep-1")]).await;
    let (s2, again) = h.api.post_with(&h.key, "/v1/webhook-endpoints", &body, &[("Idempotency-Key", "ep-1")]).await;
    assert_eq!((s1, s2), (201, 201), "{first} {again}");
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["secret"], again["secret"]);
    assert!(first["secret"].as_str().unwrap().starts_with("whsec_"));
    let (_, stored) = h.env.store.idempotency_lookup("acme", "ep-1").await.unwrap().expect("stored");
    assert!(!stored.body.to_string().contains("whsec_"), "{:?}", stored.body);
    let other = json!({"url": h.rx.url("/other")});
    assert_eq!(h.api.post_with(&h.key, "/v1/webhook-endpoints", &other, &[("Idempotency-Key", "ep-1")]).await.0, 422);

    let id = first["id"].as_str().unwrap();
    let path = format!("/v1/webhook-endpoints/{id}/rotate-secret");
    let (s1, r1) = h.api.post_with(&h.key, &path, &json!({}), &[("Idempotency-Key", "rot-1")]).await;
    let (s2, r2) = h.api.post_with(&h.key, &path, &json!({}), &[("Idempotency-Key", "rot-1")]).await;
    assert_eq!((s1, s2), (200, 200), "{r1} {r2}");
    assert_eq!(r1["secret"], r2["secret"], "a repeat does not rotate again");
    assert_ne!(r1["secret"], first["secret"]);
    let (_, stored) = h.env.store.idempotency_lookup("acme", "rot-1").await.unwrap().expect("stored");
    assert!(!stored.body.to_string().contains("whsec_"), "{:?}", stored.body);
    // A supplied secret must be whsec_ + base64 of 24–64 bytes.
    let (s, bad) =
        h.api.post(&h.key, "/v1/webhook-endpoints", &json!({"url": h.rx.url("/x"), "secret": "whsec_c2hvcnQ="})).await;
    assert_eq!((s, bad["errors"][0]["field"].as_str()), (422, Some("secret")), "{bad}");
}
