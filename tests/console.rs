//! The web console in a real browser (Debian's chromium driven by playwright-core, see
//! `tests/support/console_check.mjs`) against a real `wharf api` and worker on PostgreSQL: an
//! operator of tenant A sees only A's dead letters, reads why one failed, replays it with an
//! edited payload, discards the other, cancels a waiting job; tenant B replays its dead letters
//! by filter. The store and the audit log must show each of those actions, and nothing else.
//!
//! Needs `chromium` (`WHARF_CHROMIUM`, default `/usr/bin/chromium`), `node` (`WHARF_NODE`) and
//! playwright-core under `WHARF_NODE_PATH`: `scripts/test-tools.sh` installs and prints them.
//! Without them the test fails, naming what is missing.

mod support;

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};
use support::*;
use wharf_jobs::{
    JobState,
    audit::AuditLog,
    keys::{Scope, hash_key},
    kinds::diagnostic::DiagnosticJob,
};

const ALL: &[Scope] = &[Scope::JobsWrite, Scope::JobsRead, Scope::DlqRead, Scope::DlqWrite];
const XSS: &str = "<img src=x onerror=alert(1)> for A";
const MESSAGE_A: &str = "mailbox full for A (550 5.2.2)";

fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("WHARF_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.is_file(),
        "no chromium at {} (WHARF_CHROMIUM): run scripts/test-tools.sh, which installs Debian's `chromium`",
        path.display()
    );
    path
}

/// The `node_modules` directory holding playwright-core.
fn node_path() -> PathBuf {
    let path = std::env::var("WHARF_NODE_PATH").map(PathBuf::from).unwrap_or_else(|_| {
        let tools = std::env::var("WHARF_TOOLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/wharf-tools"));
        tools.join("node/node_modules")
    });
    assert!(
        path.join("playwright-core/package.json").is_file(),
        "playwright-core is not installed under {} (WHARF_NODE_PATH): run scripts/test-tools.sh",
        path.display()
    );
    path
}

async fn dead_letter(env: &TestEnv, tenant: &str, message: &str) -> String {
    let job = DiagnosticJob::Fail { message: message.into(), permanent: true };
    let id = enqueue_diagnostic(env.store.as_ref(), tenant, job).await;
    eventually(Duration::from_secs(20), "the job to be dead", || async {
        (env.job(tenant, &id).await.state == JobState::Dead).then_some(())
    })
    .await;
    id
}

/// `GET /console` and its assets come with the strict policy, as plain files.
async fn assert_served_strictly(base: &str) {
    let http = reqwest::Client::new();
    for (path, ty) in
        [("/console", "text/html"), ("/console/app.js", "text/javascript"), ("/console/app.css", "text/css")]
    {
        let r = http.get(format!("{base}{path}")).send().await.expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(header("content-type").starts_with(ty), "{path}: {}", header("content-type"));
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{path}: {csp}");
        assert!(csp.contains("require-trusted-types-for 'script'"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_work_the_dead_letter_queue_from_the_console() {
    // Fail at once, before any process starts, when a tool is missing.
    let chromium = chromium();
    let node_path = node_path();
    let node = std::env::var("WHARF_NODE").unwrap_or_else(|_| "node".into());

    let env = TestEnv::new(Backend::Postgres).await;
    let port = free_port();
    let _api = env.spawn(&["api"], &[("PORT", &port.to_string())]);
    let _worker = env.spawn(&["worker", "--pools", "diagnostic"], &[("WORKER_POLL_INTERVAL_MS", "100")]);
    wait_port(port, Duration::from_secs(20)).await;
    let api = ApiClient::new(port);
    assert_served_strictly(&api.base).await;

    let key_a = env.key("tenant-a", ALL).await;
    let key_b = env.key("tenant-b", ALL).await;
    let key_read_only = env.key("tenant-a", &[Scope::DlqRead]).await;
    let mail = dead_letter(&env, "tenant-a", MESSAGE_A).await;
    let xss = dead_letter(&env, "tenant-a", XSS).await;
    let dead_b = dead_letter(&env, "tenant-b", "boom for B").await;
    // No email worker runs: this job stays queued for the operator to cancel.
    let (s, accepted) = api.post(&key_a, "/v1/emails", &email_body("x@example.com", "waiting")).await;
    assert_eq!(s, 202, "{accepted}");
    let queued = accepted["id"].as_str().unwrap().to_string();

    let screenshots = std::env::var("WHARF_CONSOLE_SCREENSHOTS").ok();
    let config = json!({
        "base": api.base,
        "chromium": chromium,
        "keyA": key_a,
        "keyB": key_b,
        "keyReadOnly": key_read_only,
        "deadA": [mail, xss],
        "deadB": dead_b,
        "queuedJob": queued,
        "messageA": MESSAGE_A,
        "xss": XSS,
        "screenshots": screenshots,
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/console_check.mjs");
    let child = tokio::process::Command::new(&node)
        .arg(script)
        .env("NODE_PATH", &node_path)
        .env("CONSOLE_CHECK", config.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{node}` ({e}): install Node.js >= 20 (scripts/test-tools.sh)"));
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the browser check took over 180 s")
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser check failed ({}):\n{stderr}\n{stdout}", out.status);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the check's JSON");
    assert_eq!(result["ok"], true, "{result}");

    // What the operator did in the browser happened in the store…
    let replayed = env.job("tenant-a", &mail).await;
    assert_eq!(replayed.state, JobState::Replayed);
    let new_job = replayed.replayed_by.expect("the replay is linked").to_string();
    let done = api.wait_state(&key_a, &new_job, "succeeded", Duration::from_secs(20)).await;
    assert_eq!(done["replay_of"], mail.as_str(), "{done}");
    assert_eq!(env.job("tenant-a", &xss).await.state, JobState::Discarded);
    assert_eq!(env.job("tenant-a", &queued).await.state, JobState::Cancelled);
    assert_eq!(env.job("tenant-b", &dead_b).await.state, JobState::Replayed);

    // …and is audited under each tenant, with the acting key.
    let audit = AuditLog::new(env.store.db());
    let actions = |records: &[wharf_jobs::audit::AuditRecord]| {
        let mut v: Vec<(String, Option<String>)> =
            records.iter().map(|r| (r.action.clone(), r.target.clone())).collect();
        v.sort();
        v
    };
    let a = audit.list("tenant-a", 100).await.expect("audit log");
    assert_eq!(
        actions(&a),
        vec![
            ("dlq.discard".to_string(), Some(xss.clone())),
            ("dlq.replay".to_string(), Some(mail.clone())),
            ("job.cancel".to_string(), Some(queued.clone())),
        ],
        "{a:?}"
    );
    let replay = a.iter().find(|r| r.action == "dlq.replay").unwrap();
    assert_eq!(replay.details["edited"], true, "{replay:?}");
    assert_eq!(replay.details["new_job_id"], new_job.as_str(), "{replay:?}");
    let key_a_id = env.store.api_key(&hash_key(&key_a)).await.expect("store").expect("key").id;
    assert!(a.iter().all(|r| r.actor == key_a_id), "{a:?}");
    let b = audit.list("tenant-b", 100).await.expect("audit log");
    assert_eq!(actions(&b), vec![("dlq.replay_matching".to_string(), None)], "{b:?}");
    assert_eq!(b[0].details["replayed"], 1, "{b:?}");
    assert_eq!(b[0].details["filter"]["error"], "for B", "{b:?}");
}
