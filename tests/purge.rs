//! Purges through a real `wharf worker --pools purge` against PostgreSQL and SQLite, objects in
//! a real S3 (moto): exactly what is past retention goes, nothing inside it (rows a couple of
//! minutes either side of the boundary), in small batches; a 1 MiB payload round-trips through
//! object storage and its blob goes with its job; orphaned blobs go too.

#[macro_use]
mod support;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::{objects::MotoS3, *};
use wharf_jobs::{
    JobId, JobState, NewJob,
    idempotency::{IdempotencyKey, Idempotent, StoredResponse},
    keys::Scope,
    kinds::{
        JobKind,
        purge::{PurgeJob, PurgeTarget},
    },
    objects::{
        ObjectStore,
        local::LocalObjects,
        offload::{OffloadingStore, payload_key},
    },
    purge::{Purger, Retention},
    schedules::SYSTEM_TENANT,
    store::Db,
};

on_both_backends!(
    purges_remove_exactly_what_is_past_retention,
    a_large_payload_round_trips_and_its_blob_goes_with_its_job
);

const DAY: i64 = 86_400;

/// A time literal for the backend: timestamptz on PostgreSQL, Unix milliseconds on SQLite.
fn ts(env: &TestEnv, t: DateTime<Utc>) -> String {
    match env.backend {
        Backend::Postgres => format!("'{}'::timestamptz", t.to_rfc3339()),
        Backend::Sqlite => t.timestamp_millis().to_string(),
    }
}

async fn exec(env: &TestEnv, sql: String) {
    match env.store.db() {
        Db::Postgres(p) => drop(
            sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(&p).await.unwrap_or_else(|e| panic!("{sql}: {e}")),
        ),
        Db::Sqlite(p) => drop(
            sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(&p).await.unwrap_or_else(|e| panic!("{sql}: {e}")),
        ),
    }
}

async fn strings(env: &TestEnv, sql: &str) -> Vec<String> {
    let mut v: Vec<String> = match env.store.db() {
        Db::Postgres(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(&p).await,
        Db::Sqlite(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(&p).await,
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
    v.sort();
    v
}

/// A job row with explicit times (as the store would have written them), plus `attempts` rows.
async fn job_row(
    env: &TestEnv,
    state: &str,
    updated: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
    attempts: i32,
) -> String {
    let id = JobId::new().to_string();
    let created = finished.unwrap_or(updated) - chrono::Duration::minutes(5);
    let finished = finished.map(|f| ts(env, f)).unwrap_or_else(|| "NULL".into());
    exec(
        env,
        format!(
            "INSERT INTO wharf_jobs (id, tenant_id, kind, queue, state, payload, attempt, run_at, created_at, updated_at, finished_at)
             VALUES ('{id}', 'acme', 'diagnostic', 'diagnostic', '{state}', '{{\"op\":\"noop\"}}', {attempts}, {c}, {c}, {u}, {finished})",
            c = ts(env, created),
            u = ts(env, updated),
        ),
    )
    .await;
    for a in 1..=attempts {
        exec(
            env,
            format!(
                "INSERT INTO wharf_job_attempts (job_id, attempt, worker, started_at, finished_at, error)
                 VALUES ('{id}', {a}, 'w', {t}, {t}, 'boom')",
                t = ts(env, created)
            ),
        )
        .await;
    }
    id
}

/// Enqueues a purge of `target` and waits for its report.
async fn purge(env: &TestEnv, target: PurgeTarget) -> Value {
    let job = PurgeJob { target }.into_job(SYSTEM_TENANT);
    let id = job.id;
    env.store.enqueue(job, None).await.unwrap();
    eventually(Duration::from_secs(30), &format!("the {target:?} purge to finish"), || async {
        let j = env.store.job(SYSTEM_TENANT, id).await.unwrap().unwrap();
        assert!(j.last_error.is_none(), "the {target:?} purge failed: {:?}", j.last_error);
        (j.state == JobState::Succeeded).then(|| j.result.unwrap())
    })
    .await
}

async fn purges_remove_exactly_what_is_past_retention(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let s3 = MotoS3::start("wharf-purge").await;
    let now = Utc::now();
    let margin = chrono::Duration::minutes(2);
    let d30 = chrono::Duration::seconds(30 * DAY);
    let (old, young) = (now - d30 - margin, now - d30 + margin);

    // Finished jobs: by finished_at, 30 d. Five old ones (batches of 2), one young.
    let mut gone_jobs = Vec::new();
    gone_jobs.push(job_row(&env, "succeeded", old, Some(old), 2).await);
    gone_jobs.push(job_row(&env, "cancelled", old, Some(old), 1).await);
    for _ in 0..3 {
        gone_jobs.push(job_row(&env, "succeeded", old, Some(old), 0).await);
    }
    let mut kept = vec![
        job_row(&env, "succeeded", young, Some(young), 1).await,
        // Never purged: a dead letter nobody acted on, and unfinished work, however old.
        job_row(&env, "dead", old, Some(old), 3).await,
        job_row(&env, "queued", old, None, 0).await,
        job_row(&env, "retrying", old, None, 1).await,
    ];
    // Dead letters replayed or discarded: by updated_at, 30 d.
    let gone_dead =
        vec![job_row(&env, "replayed", old, Some(old), 1).await, job_row(&env, "discarded", old, Some(old), 2).await];
    kept.push(job_row(&env, "discarded", young, Some(old), 1).await);
    kept.push(job_row(&env, "replayed", young, Some(old), 1).await);

    // Idempotency keys: 24 h.
    let (k_old, k_young) =
        (now - chrono::Duration::seconds(DAY) - margin, now - chrono::Duration::seconds(DAY) + margin);
    for (key, at) in [("k-old", k_old), ("k-young", k_young)] {
        exec(
            &env,
            format!(
                "INSERT INTO wharf_idempotency_keys (tenant_id, key, fingerprint, response, created_at)
                 VALUES ('acme', '{key}', 'fp', '{{\"status\":202}}', {})",
                ts(&env, at)
            ),
        )
        .await;
    }
    // Webhook attempt logs: 30 d.
    for (id, at) in [("w-old", old), ("w-young", young)] {
        let uuid = uuid::Uuid::new_v4();
        exec(
            &env,
            format!(
                "INSERT INTO wharf_webhook_attempts (id, tenant_id, endpoint_id, job_id, event_id, event_type, attempt,
                                                     created_at, latency_ms, error)
                 VALUES ('{uuid}', 'acme', '{uuid}', '{uuid}', '{id}', 'test.event', 1, {}, 5, '{id}')",
                ts(&env, at)
            ),
        )
        .await;
    }
    // Webhook events age with the attempt logs.
    for (id, at) in [("e-old", old), ("e-young", young)] {
        exec(
            &env,
            format!(
                "INSERT INTO wharf_webhook_events (tenant_id, id, event_type, created_at)
                 VALUES ('acme', '{id}', 'test.event', {})",
                ts(&env, at)
            ),
        )
        .await;
    }
    // Email ledger rows go with the jobs, but only once no job of their identity is left.
    let stranger = JobId::new().to_string();
    for (label, identity, at) in
        [("l-gone", &gone_jobs[0], old), ("l-live", &kept[1], old), ("l-young", &stranger, young)]
    {
        exec(
            &env,
            format!(
                "INSERT INTO wharf_email_sends (tenant_id, identity, job_id, provider, provider_message_id, accepted_at)
                 VALUES ('acme', '{identity}', '{identity}', 'outbox', '{label}', {})",
                ts(&env, at)
            ),
        )
        .await;
    }
    // Schedule ticks age with the jobs.
    for (at, status) in [(old, "skipped"), (young, "skipped")] {
        exec(
            &env,
            format!(
                "INSERT INTO wharf_schedule_ticks (schedule, tick_at, status, claimed_by, claimed_at)
                 VALUES ('old-schedule', {t}, '{status}', 'test', {t})",
                t = ts(&env, at)
            ),
        )
        .await;
    }

    // Objects: retention 4 s here (moto stamps objects itself). Only `tenants/{id}/…` is purged.
    let objects = s3.objects().await;
    for key in ["tenants/a/old.pdf", "tenants/b/deep/old.bin", "tenants/loose-old", "system/old-but-system"] {
        objects.put(key, b"old".to_vec(), None).await.unwrap();
    }
    // A "folder" marker as consoles create them (wharf itself never writes one).
    let marker = reqwest::Client::new().put(format!("{}/{}/tenants/b/deep/", s3.endpoint(), s3.bucket)).send().await;
    assert!(marker.unwrap().status().is_success());
    tokio::time::sleep(Duration::from_secs(5)).await;
    objects.put("tenants/a/new.pdf", b"new".to_vec(), None).await.unwrap();

    let mut vars: Vec<(&str, String)> = s3.env();
    vars.extend([
        ("PURGE_BATCH_SIZE", "2".to_string()),
        ("PURGE_OBJECTS_AFTER_SECONDS", "4".to_string()),
        ("WORKER_POLL_INTERVAL_MS", "100".to_string()),
    ]);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _worker = env.spawn(&["worker", "--pools", "purge"], &vars);

    let objects_report = purge(&env, PurgeTarget::Objects).await;
    assert_eq!(objects_report["removed"], json!({ "objects": 3 }), "{objects_report}");
    assert_eq!(objects_report["scanned"], 5, "{objects_report}");
    assert_eq!(
        s3.keys("").await,
        ["system/old-but-system", "tenants/a/new.pdf", "tenants/loose-old"],
        "{objects_report}"
    );

    let jobs_report = purge(&env, PurgeTarget::Jobs).await;
    assert_eq!(
        jobs_report["removed"],
        json!({ "jobs": 5, "attempts": 3, "payload_blobs": 0, "schedule_ticks": 1, "dlq_events": 0, "email_sends": 1 }),
        "{jobs_report}"
    );
    assert!(jobs_report["batches"].as_u64().unwrap() >= 3, "5 rows in batches of 2: {jobs_report}");
    let dead_report = purge(&env, PurgeTarget::DeadLetters).await;
    assert_eq!(dead_report["removed"], json!({ "jobs": 2, "attempts": 3, "payload_blobs": 0 }), "{dead_report}");
    let keys_report = purge(&env, PurgeTarget::IdempotencyKeys).await;
    assert_eq!(keys_report["removed"], json!({ "idempotency_keys": 1 }), "{keys_report}");
    let hooks_report = purge(&env, PurgeTarget::WebhookAttempts).await;
    assert_eq!(hooks_report["removed"], json!({ "webhook_attempts": 1, "webhook_events": 1 }), "{hooks_report}");

    // Exactly the rows inside retention are left.
    kept.sort();
    assert_eq!(strings(&env, "SELECT CAST(id AS TEXT) FROM wharf_jobs WHERE tenant_id = 'acme'").await, kept);
    let gone: Vec<String> = gone_jobs.iter().chain(&gone_dead).cloned().collect();
    let left_attempts = strings(&env, "SELECT DISTINCT CAST(job_id AS TEXT) FROM wharf_job_attempts").await;
    assert!(gone.iter().all(|id| !left_attempts.contains(id)), "attempts of purged jobs are gone");
    assert_eq!(left_attempts.len(), 5, "attempts of the kept jobs stay: {left_attempts:?}");
    assert_eq!(strings(&env, "SELECT key FROM wharf_idempotency_keys").await, ["k-young"]);
    assert_eq!(strings(&env, "SELECT event_id FROM wharf_webhook_attempts").await, ["w-young"]);
    assert_eq!(strings(&env, "SELECT status FROM wharf_schedule_ticks").await, ["skipped"]);
    assert_eq!(strings(&env, "SELECT id FROM wharf_webhook_events").await, ["e-young"]);
    assert_eq!(strings(&env, "SELECT provider_message_id FROM wharf_email_sends").await, ["l-live", "l-young"]);

    // A second run finds nothing more.
    let again = purge(&env, PurgeTarget::Jobs).await;
    assert_eq!(again["removed"]["jobs"], 0, "{again}");
}

/// About 1 MiB of short text lines, the last one recognisable.
fn large_text() -> String {
    (0..33_000).map(|i| format!("line {i:06} of a large payload\n")).collect()
}

async fn a_large_payload_round_trips_and_its_blob_goes_with_its_job(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let s3 = MotoS3::start("wharf-payloads").await;
    let mut vars: Vec<(&str, String)> = s3.env();
    vars.extend([
        ("PURGE_PAYLOAD_BLOBS_MIN_AGE_SECONDS", "0".to_string()),
        ("WORKER_POLL_INTERVAL_MS", "100".to_string()),
    ]);
    let port = free_port();
    let port_s = port.to_string();
    let mut api_vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let worker_vars = api_vars.clone();
    api_vars.push(("PORT", &port_s));
    let _api = env.spawn(&["api"], &api_vars);
    let _worker = env.spawn(&["worker", "--pools", "email,purge"], &worker_vars);
    wait_port(port, Duration::from_secs(20)).await;
    let api = ApiClient::new(port);
    let key = env.key("acme", &[Scope::JobsWrite, Scope::JobsRead]).await;

    let text = large_text();
    assert!(text.len() > 1_000_000);
    let body = json!({ "from": "big@example.com", "to": ["you@example.com"], "subject": "Large", "text": text });
    let (s, accepted) = api.post(&key, "/v1/emails", &body).await;
    assert_eq!(s, 202, "{accepted}");
    let id: JobId = accepted["id"].as_str().unwrap().parse().unwrap();

    // The row carries only the reference; the payload is in the bucket.
    let stored = strings(
        &env,
        &match backend {
            Backend::Postgres => format!("SELECT payload::text FROM wharf_jobs WHERE id = '{id}'"),
            Backend::Sqlite => format!("SELECT payload FROM wharf_jobs WHERE id = '{id}'"),
        },
    )
    .await;
    assert!(stored[0].len() < 1024 && stored[0].contains("wharf_payload_ref"), "{}", stored[0]);
    assert_eq!(s3.keys("system/payloads/").await, [payload_key(id)]);
    let blob = s3.objects().await.get(&payload_key(id)).await.unwrap();
    assert!(blob.len() > 1_000_000);

    // The worker read it transparently: the whole text went out.
    api.wait_state(&key, &id.to_string(), "succeeded", Duration::from_secs(60)).await;
    let mails = outbox_messages(&env.path("outbox"));
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("line 032999 of a large payload"), "the last line arrived");
    assert!(mails[0].contains("line 000000 of a large payload"));

    // Purged with its job (finished long ago).
    exec(
        &env,
        format!(
            "UPDATE wharf_jobs SET finished_at = {} WHERE id = '{id}'",
            ts(&env, Utc::now() - chrono::Duration::days(31))
        ),
    )
    .await;
    let report = purge(&env, PurgeTarget::Jobs).await;
    assert_eq!(report["removed"]["jobs"], 1, "{report}");
    assert_eq!(report["removed"]["payload_blobs"], 1, "{report}");
    assert!(s3.keys("system/payloads/").await.is_empty());

    // Orphans go; a blob a job still refers to stays.
    let objects: Arc<dyn ObjectStore> = s3.objects().await;
    let orphan = payload_key(JobId::new());
    objects.put(&orphan, b"{}".to_vec(), None).await.unwrap();
    let offloading = OffloadingStore::wrap(env.store.clone(), objects.clone(), 4096);
    let waiting = NewJob::new("acme", "diagnostic", "diagnostic", json!({ "op": "noop", "pad": "x".repeat(10_000) }));
    let waiting_id = waiting.id;
    offloading.enqueue(waiting, None).await.unwrap();
    assert_eq!(s3.keys("system/payloads/").await.len(), 2);
    let report = purge(&env, PurgeTarget::PayloadBlobs).await;
    assert_eq!(report["removed"], json!({ "payload_blobs": 1 }), "{report}");
    assert_eq!(s3.keys("system/payloads/").await, [payload_key(waiting_id)]);
    // Status reads do not fetch the blob; a dead letter (shown and edited with its payload) does.
    let job = offloading.job("acme", waiting_id).await.unwrap().unwrap();
    assert!(job.payload.get("wharf_payload_ref").is_some(), "{}", job.payload);
    exec(&env, format!("UPDATE wharf_jobs SET state = 'dead' WHERE id = '{waiting_id}'")).await;
    let job = offloading.job("acme", waiting_id).await.unwrap().unwrap();
    assert_eq!(job.payload["pad"].as_str().map(str::len), Some(10_000));

    // A repeated idempotency key enqueues nothing, and keeps no blob for it.
    let key = IdempotencyKey::new("same-key", "test", &json!({}));
    let stored = StoredResponse { status: 202, body: json!({}) };
    let big = || NewJob::new("acme", "diagnostic", "diagnostic", json!({ "op": "noop", "pad": "y".repeat(10_000) }));
    let first = big();
    let first_id = first.id;
    assert!(matches!(
        offloading.enqueue(first, Some((key.clone(), stored.clone()))).await.unwrap(),
        Idempotent::Fresh(())
    ));
    assert!(matches!(offloading.enqueue(big(), Some((key, stored))).await.unwrap(), Idempotent::Repeat(_)));
    let mut want = vec![payload_key(waiting_id), payload_key(first_id)];
    want.sort();
    assert_eq!(s3.keys("system/payloads/").await, want);
}

/// The local-directory backend (`serve`) at the default retention (30 days): files modified
/// 2 minutes either side of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_objects_are_purged_at_the_default_retention_boundary() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let root = env.path("objects");
    let objects = Arc::new(LocalObjects::new(&root));
    let now = std::time::SystemTime::now();
    let d30 = Duration::from_secs(30 * DAY as u64);
    let margin = Duration::from_secs(120);
    for (key, age) in [
        ("tenants/acme/old.txt", d30 + margin),
        ("tenants/acme/young.txt", d30 - margin),
        ("system/payloads/old-system.json", d30 + margin),
    ] {
        objects.put(key, key.as_bytes().to_vec(), None).await.unwrap();
        let file = std::fs::File::options().write(true).open(root.join(key)).unwrap();
        file.set_modified(now - age).unwrap();
    }
    let purger = Purger::new(env.store.db(), objects.clone(), Retention::default());
    let report = purger.run(PurgeTarget::Objects).await.unwrap();
    assert_eq!(report["removed"], json!({ "objects": 1 }), "{report}");
    let left: Vec<String> = objects.list("", 100, None).await.unwrap().objects.into_iter().map(|o| o.key).collect();
    assert_eq!(left, ["system/payloads/old-system.json", "tenants/acme/young.txt"]);
}
