//! Authentication, routing, health and documentation.

use wharf_jobs::keys::Scope;

use super::*;

#[tokio::test]
async fn missing_or_invalid_keys_are_401() {
    let h = Harness::new().await;
    let r = send(h.cli.post("/v1/emails").body_json(&email_body())).await;
    r.assert_problem(401);
    assert!(r.headers.get("www-authenticate").unwrap().to_str().unwrap().starts_with("Bearer"));

    let r = send(h.cli.get("/v1/dead-letters").header("Authorization", "Basic dXNlcjpwYXNz")).await;
    r.assert_problem(401);

    let r = send(h.cli.post("/v1/emails").header("Authorization", bearer("wharf_not-a-key")).body_json(&email_body()))
        .await;
    r.assert_problem(401);
    assert!(r.headers.get("www-authenticate").unwrap().to_str().unwrap().contains("invalid_token"));

    // Authentication comes before body parsing.
    let r = send(h.cli.post("/v1/emails").header("Authorization", bearer("wharf_nope")).body("{not json")).await;
    r.assert_problem(401);
}

#[tokio::test]
async fn keys_without_the_scope_are_403() {
    let h = Harness::new().await;
    let reader = h.key("acme", &[Scope::JobsRead]).await;
    let r = send(h.cli.post("/v1/emails").header("Authorization", bearer(&reader)).body_json(&email_body())).await;
    r.assert_problem(403);
    assert!(r.json["detail"].as_str().unwrap().contains("jobs:write"), "{}", r.text);

    let r = send(h.cli.get("/v1/dead-letters").header("Authorization", bearer(&reader))).await;
    r.assert_problem(403);
    assert!(r.json["detail"].as_str().unwrap().contains("dlq:read"));

    let dlq_reader = h.key("acme", &[Scope::DlqRead]).await;
    send(h.cli.get("/v1/dead-letters").header("Authorization", bearer(&dlq_reader))).await.assert_status(200);
    let r =
        send(h.cli.post("/v1/dead-letters/replay").header("Authorization", bearer(&dlq_reader)).body_json(&json!({})))
            .await;
    r.assert_problem(403);
    assert!(r.json["detail"].as_str().unwrap().contains("dlq:write"));
    let r = send(h.cli.get(format!("/v1/jobs/{}", JobId::new())).header("Authorization", bearer(&dlq_reader))).await;
    assert!(r.assert_problem(403).is_empty());

    let writer = h.key("acme", &[Scope::JobsWrite]).await;
    send(h.cli.post("/v1/emails").header("Authorization", bearer(&writer)).body_json(&email_body()))
        .await
        .assert_status(202);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let h = Harness::new().await;
    send(h.cli.get("/v2/nothing")).await.assert_problem(404);
    send(h.cli.get("/v1/emails")).await.assert_problem(405);
    send(h.cli.put("/v1/dead-letters/replay")).await.assert_problem(405);
}

#[tokio::test]
async fn bad_query_parameters_are_named() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let get = |q: &str| send(h.cli.get(format!("/v1/dead-letters?{q}")).header("Authorization", bearer(&key)));
    assert_eq!(get("since=yesterday").await.assert_problem(400), vec!["since"]);
    assert_eq!(get("since=yesterday&until=never").await.assert_problem(400), vec!["since", "until"]);
    assert_eq!(get("limit=501").await.assert_problem(400), vec!["limit"]);
    assert_eq!(get("limit=0").await.assert_problem(400), vec!["limit"]);
    assert_eq!(get("limit=ten").await.assert_problem(400), vec!["limit"]);
    assert_eq!(get("cursor=abc").await.assert_problem(400), vec!["cursor"]);
    get("limit=500&since=2025-01-01T00:00:00Z&until=2099-01-01T00:00:00%2B01:00").await.assert_status(200);
}

#[tokio::test]
async fn health_and_readiness() {
    let h = Harness::new().await;
    assert_eq!(send(h.cli.get("/healthz")).await.assert_status(200), &json!({"status": "ok"}));
    assert_eq!(send(h.cli.get("/readyz")).await.assert_status(200), &json!({"status": "ready"}));

    // A store without migrations is not ready.
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&StoreConfig::new(format!("sqlite://{}/empty.db", dir.path().display()))).await.unwrap();
    let cli = TestClient::new(app(ApiState { store, public_url: PUBLIC_URL.into() }));
    let resp = cli.get("/readyz").send().await;
    resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    resp.assert_content_type(problem::CONTENT_TYPE);
    send(h.cli.get("/healthz")).await.assert_status(200);
}

#[tokio::test]
async fn openapi_document_and_docs() {
    let h = Harness::new().await;
    let r = send(h.cli.get("/openapi.json")).await;
    let spec = r.assert_status(200);
    for path in [
        "/v1/emails",
        "/v1/jobs/{id}",
        "/v1/dead-letters",
        "/v1/dead-letters/{id}",
        "/v1/dead-letters/{id}/replay",
        "/v1/dead-letters/replay",
        "/healthz",
        "/readyz",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert_eq!(spec["servers"][0]["url"], PUBLIC_URL);
    let send_email = &spec["paths"]["/v1/emails"]["post"];
    assert!(send_email["responses"]["202"].is_object());
    assert!(send_email["responses"]["default"]["content"]["application/problem+json"].is_object());
    assert!(send_email["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Idempotency-Key"));
    assert!(spec["components"]["schemas"]["SendEmail"]["properties"]["to"].is_object());
    assert!(spec["components"]["securitySchemes"].as_object().is_some_and(|s| !s.is_empty()));

    let r = send(h.cli.get("/docs")).await;
    r.assert_status(200);
    assert!(r.content_type().starts_with("text/html"));
}

#[tokio::test]
async fn store_failures_are_500_problems_without_internals() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(format!("sqlite://{}/t.db", dir.path().display()));
    let sqlite = Arc::new(wharf_jobs::store::SqliteStore::connect(&cfg).await.unwrap());
    sqlite.migrate().await.unwrap();
    let key = NewApiKey::generate();
    sqlite.create_api_key("acme", &[Scope::Admin], &key).await.unwrap();
    let cli = TestClient::new(app(ApiState { store: sqlite.clone(), public_url: PUBLIC_URL.into() }).boxed());

    sqlx::query("DROP TABLE wharf_jobs").execute(sqlite.pool()).await.unwrap();
    let r = send(cli.get(format!("/v1/jobs/{}", JobId::new())).header("Authorization", bearer(&key.secret))).await;
    r.assert_problem(500);
    assert!(!r.text.contains("wharf_jobs") && !r.text.to_lowercase().contains("sql"), "{}", r.text);
}
