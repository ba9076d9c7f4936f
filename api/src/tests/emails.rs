use serde_json::json;
use wharf_jobs::{JobId, keys::Scope};

use super::*;
use crate::trace::TraceParent;

#[tokio::test]
async fn accepted_email_is_queued_and_visible() {
    let h = Harness::new().await;
    let key = h.key("acme", &[Scope::JobsWrite, Scope::JobsRead]).await;

    let r = send(h.cli.post("/v1/emails").header("Authorization", bearer(&key)).body_json(&email_body())).await;
    let body = r.assert_status(202).clone();
    assert!(r.content_type().starts_with("application/json"));
    let id = body["id"].as_str().unwrap().to_string();
    id.parse::<JobId>().unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["status_url"], format!("{PUBLIC_URL}/v1/jobs/{id}"));

    let r = send(h.cli.get(format!("/v1/jobs/{id}")).header("Authorization", bearer(&key))).await;
    let job = r.assert_status(200);
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["kind"], "email");
    assert_eq!(job["queue"], "email");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["errors"], json!([]));
    assert!(job["created_at"].is_string() && job["run_at"].is_string());
    assert_eq!(job["finished_at"], Value::Null);

    // The stored payload is the email, and the job carries a fresh valid traceparent.
    let stored = h.store.job("acme", id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.payload, email_body());
    assert!(TraceParent::parse(stored.traceparent.as_deref().unwrap()).is_some());
}

#[tokio::test]
async fn traceparent_header_is_carried_into_the_job() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = send(
        h.cli
            .post("/v1/emails")
            .header("Authorization", bearer(&key))
            .header("traceparent", tp)
            .body_json(&email_body()),
    )
    .await;
    let id: JobId = r.assert_status(202)["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(h.store.job("acme", id).await.unwrap().unwrap().traceparent.as_deref(), Some(tp));

    // An invalid one starts a new trace instead.
    let r = send(
        h.cli
            .post("/v1/emails")
            .header("Authorization", bearer(&key))
            .header("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")
            .body_json(&email_body()),
    )
    .await;
    let id: JobId = r.assert_status(202)["id"].as_str().unwrap().parse().unwrap();
    let stored = h.store.job("acme", id).await.unwrap().unwrap().traceparent.unwrap();
    assert!(TraceParent::parse(&stored).is_some());
    assert!(!stored.contains("00000000000000000000000000000000"));
}

#[tokio::test]
async fn validation_names_each_bad_field() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let post = |body: Value| send(h.cli.post("/v1/emails").header("Authorization", bearer(&key)).body_json(&body));

    let r = post(json!({"from": "nope", "to": ["a@example.com", "bad@"], "cc": ["x"], "subject": " "})).await;
    assert_eq!(r.assert_problem(422), vec!["from", "to[1]", "cc[0]", "subject", "text"]);
    assert_eq!(r.json["errors"][0]["message"], "`nope` is not a valid email address");

    let r = post(json!({"from": "a@example.com", "to": [], "subject": "s", "text": "t", "bogus": 1})).await;
    assert_eq!(r.assert_problem(422), vec!["bogus"]);

    let r = post(json!({"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t"})).await;
    assert_eq!(r.assert_problem(422), vec!["to"]);

    let r = post(json!({"from": "a@example.com", "to": ["b@example.com", 7], "subject": "s", "text": "t"})).await;
    assert_eq!(r.assert_problem(422), vec!["to[1]"]);

    let r = post(json!({"from": "a@example.com", "to": ["b@example.com"], "text": "t"})).await;
    assert_eq!(r.assert_problem(422), vec!["subject"]);
    assert_eq!(r.json["errors"][0]["message"], "is required");

    // Nothing was enqueued.
    let counts = h.store.queue_counts(None).await.unwrap();
    assert!(counts.iter().all(|c| c.queued == 0 && c.scheduled == 0), "{counts:?}");
}

#[tokio::test]
async fn malformed_bodies_are_problems() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let post = || h.cli.post("/v1/emails").header("Authorization", bearer(&key));

    let r = send(post().content_type("application/json").body(r#"{"from": "a@example.com", "#)).await;
    r.assert_problem(400);
    assert!(r.json["detail"].as_str().unwrap().contains("not valid JSON"), "{}", r.text);

    let r = send(post().content_type("application/json").body("[1, 2]")).await;
    r.assert_problem(400);

    let r = send(post().content_type("application/json").body("")).await;
    r.assert_problem(400);

    let r = send(post().content_type("text/plain").body("hello")).await;
    r.assert_problem(415);

    // No Content-Type at all is read as JSON.
    let r = send(post().body(email_body().to_string())).await;
    r.assert_status(202);
}

#[tokio::test]
async fn idempotency_key_repeats_the_first_response() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let post = |idem: &str, body: Value| {
        send(
            h.cli
                .post("/v1/emails")
                .header("Authorization", bearer(&key))
                .header("Idempotency-Key", idem)
                .body_json(&body),
        )
    };

    let first = post("order-42", email_body()).await;
    let first_body = first.assert_status(202).clone();
    let again = post("order-42", email_body()).await;
    assert_eq!(again.assert_status(202), &first_body);

    // Same email with keys in another order and an explicit empty cc: the same request.
    let reordered = json!({"text": "Hi Ann", "cc": [], "subject": "Hello", "to": ["ann@example.com"],
                           "from": "Wharf <noreply@example.com>"});
    assert_eq!(post("order-42", reordered).await.assert_status(202), &first_body);

    let mut other = email_body();
    other["subject"] = json!("Another");
    let r = post("order-42", other.clone()).await;
    assert_eq!(r.assert_problem(422), vec!["Idempotency-Key"]);
    assert!(r.json["detail"].as_str().unwrap().contains("order-42"));

    // Keys are per tenant: another tenant may use the same key for its own request.
    let key_b = h.admin("globex").await;
    let r = send(
        h.cli
            .post("/v1/emails")
            .header("Authorization", bearer(&key_b))
            .header("Idempotency-Key", "order-42")
            .body_json(&other),
    )
    .await;
    assert_ne!(r.assert_status(202)["id"], first_body["id"]);

    // A different key is a different request.
    let r = post("order-43", email_body()).await;
    assert_ne!(r.assert_status(202)["id"], first_body["id"]);

    for bad in ["has space", &"k".repeat(256)] {
        let r = post(bad, email_body()).await;
        assert_eq!(r.assert_problem(400), vec!["Idempotency-Key"]);
    }
}

#[tokio::test]
async fn jobs_are_invisible_to_other_tenants() {
    let h = Harness::new().await;
    let a = h.admin("acme").await;
    let b = h.admin("globex").await;
    let r = send(h.cli.post("/v1/emails").header("Authorization", bearer(&a)).body_json(&email_body())).await;
    let id = r.assert_status(202)["id"].as_str().unwrap().to_string();

    send(h.cli.get(format!("/v1/jobs/{id}")).header("Authorization", bearer(&a))).await.assert_status(200);
    let other = send(h.cli.get(format!("/v1/jobs/{id}")).header("Authorization", bearer(&b))).await;
    other.assert_problem(404);
    let missing = send(h.cli.get(format!("/v1/jobs/{}", JobId::new())).header("Authorization", bearer(&b))).await;
    missing.assert_problem(404);
    // Indistinguishable: same type and title; only the id in the detail differs.
    assert_eq!(other.json["type"], missing.json["type"]);
    assert_eq!(other.json["title"], missing.json["title"]);
    send(h.cli.get("/v1/jobs/not-a-uuid").header("Authorization", bearer(&b))).await.assert_problem(404);
}
