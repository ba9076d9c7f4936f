//! `wharf serve` on a fresh data directory, with no external service: an admin key printed
//! once, an email accepted and written to the outbox.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_works_with_no_external_service() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = vec![
        ("WHARF_DATA_DIR".to_string(), dir.path().join("data").display().to_string()),
        ("PORT".to_string(), port.to_string()),
    ];
    let serve = WharfProcess::spawn(&["serve"], &env, dir.path());
    wait_port(port, Duration::from_secs(30)).await;
    let key = eventually(Duration::from_secs(10), "the admin key on stdout", || async {
        serve.logs().lines().map(str::trim).find(|l| l.starts_with("wharf_")).map(str::to_string)
    })
    .await;
    let api = ApiClient::new(port);
    let (s, health) = api.get("", "/healthz").await;
    assert_eq!(s, 200, "{health}");
    assert_eq!(api.get("", "/readyz").await.0, 200);
    let (s, accepted) = api.post(&key, "/v1/emails", &email_body("dev@example.com", "Local outbox")).await;
    assert_eq!(s, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    let job = api.wait_state(&key, id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(job["attempts"], 1);
    let mails = outbox_messages(&dir.path().join("data").join("outbox"));
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("Subject: Local outbox"), "{}", mails[0]);
    let (s, spec) = api.get("", "/openapi.json").await;
    assert_eq!(s, 200);
    assert!(spec["paths"]["/v1/emails"].is_object(), "{spec}");
    drop(serve);

    // A second start reuses the store and prints no new key.
    let port2 = free_port();
    let env2 = vec![env[0].clone(), ("PORT".to_string(), port2.to_string())];
    let again = WharfProcess::spawn(&["serve"], &env2, dir.path());
    wait_port(port2, Duration::from_secs(30)).await;
    assert!(!again.logs().lines().any(|l| l.trim().starts_with("wharf_")), "{}", again.logs());
    let (s, _) = ApiClient::new(port2).get(&key, &format!("/v1/jobs/{id}")).await;
    assert_eq!(s, 200, "the first key still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_prints_only_the_key() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["keys", "create", "--tenant", "acme", "--scopes", "jobs:write,jobs:read"])
        .env("DATABASE_URL", &env.database_url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(key.starts_with("wharf_"));
    let rec = env.store.api_key(&wharf_jobs::keys::hash_key(key)).await.unwrap().expect("stored hashed");
    assert_eq!(rec.tenant, "acme");
    // Bad scopes are refused with a message naming them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["keys", "create", "--tenant", "acme", "--scopes", "jobs:write,root"])
        .env("DATABASE_URL", &env.database_url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("root"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_names_the_variable() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_wharf")).args(["api"]).env("PORT", "eighty").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PORT") && err.contains("eighty"), "{err}");
}
