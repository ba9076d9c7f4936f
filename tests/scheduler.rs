//! The scheduler with real `wharf scheduler` processes: each tick fires exactly once across
//! replicas (also when one is killed mid-way), late ticks are skipped and counted, a restart
//! does not fire a tick twice, `GET /v1/schedules` shows it all, `serve` runs the scheduler,
//! and the DLQ monitor emits one `dlq.threshold` event per crossing.

#[macro_use]
mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use support::*;
use wharf_jobs::{
    NewJob,
    keys::Scope,
    kinds::webhook::WebhookDeliveryJob,
    schedules::{ScheduleRepo, TickRow},
    store::Db,
    webhooks::{NewEndpoint, WebhookRepo},
};

on_both_backends!(
    two_schedulers_fire_each_tick_exactly_once,
    late_ticks_are_skipped_and_a_restart_fires_nothing_twice,
    dlq_threshold_is_emitted_once_per_crossing
);

const SCHEDULE: &str = "every-second";
const TENANT: &str = "ticks";

fn schedules_file(env: &TestEnv) -> String {
    let path = env.path("schedules.toml");
    std::fs::write(
        &path,
        format!(
            "[[schedules]]\nname = \"{SCHEDULE}\"\ncron = \"* * * * * *\"\nkind = \"diagnostic\"\n\
             tenant = \"{TENANT}\"\npayload = {{ op = \"noop\" }}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// One number from SQL that reads the same on both backends.
async fn count(env: &TestEnv, sql: &str) -> i64 {
    match env.store.db() {
        Db::Postgres(p) => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&p).await,
        Db::Sqlite(p) => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&p).await,
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn strings(env: &TestEnv, sql: &str) -> Vec<String> {
    match env.store.db() {
        Db::Postgres(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(&p).await,
        Db::Sqlite(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(&p).await,
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn ticks(env: &TestEnv) -> Vec<TickRow> {
    ScheduleRepo::new(env.store.as_ref()).ticks(SCHEDULE).await.unwrap()
}

/// Every second between the first and the last claimed tick has exactly one row.
fn assert_contiguous(rows: &[TickRow]) {
    for w in rows.windows(2) {
        assert_eq!((w[1].tick_at - w[0].tick_at).num_milliseconds(), 1000, "gap or duplicate around {:?}", w[0]);
    }
}

/// Every fired tick's job exists, and the tenant has no job that is not a fired tick's.
async fn assert_one_job_per_fired_tick(env: &TestEnv, rows: &[TickRow]) {
    let fired: Vec<_> = rows.iter().filter(|r| r.status == "fired").collect();
    for r in &fired {
        let id = r.job_id.unwrap_or_else(|| panic!("fired tick without a job: {r:?}"));
        let job = env.store.job(TENANT, id).await.unwrap().unwrap_or_else(|| panic!("job of {r:?} is missing"));
        assert_eq!(job.kind, "diagnostic");
    }
    let jobs = count(env, &format!("SELECT count(*) FROM wharf_jobs WHERE tenant_id = '{TENANT}'")).await;
    assert_eq!(jobs as usize, fired.len(), "jobs enqueued vs fired ticks");
}

async fn two_schedulers_fire_each_tick_exactly_once(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let file = schedules_file(&env);
    let vars = [("WHARF_SCHEDULES_FILE", file.as_str())];
    let mut a = env.spawn(&["scheduler"], &vars);
    let b = env.spawn(&["scheduler"], &vars);
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.sigkill();
    let killed_at = Utc::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    b.signal(libc::SIGTERM);
    let b_log = b.logs();
    assert!(b.wait_exit_ok().await, "the surviving scheduler stops cleanly on SIGTERM");

    let rows = ticks(&env).await;
    assert!(rows.len() >= 8, "about 10 s of ticks, got {}: {}", rows.len(), a.logs());
    assert_contiguous(&rows);
    assert!(rows.iter().all(|r| r.status == "fired"), "no tick was late: {rows:?}");
    assert_one_job_per_fired_tick(&env, &rows).await;
    // The survivor carried on alone after the kill.
    let after: Vec<_> = rows.iter().filter(|r| r.tick_at > killed_at + chrono::Duration::seconds(1)).collect();
    assert!(after.len() >= 3, "ticks after the kill: {after:?}\n{b_log}");
    assert!(after.iter().all(|r| r.claimed_by == after[0].claimed_by), "{after:?}");
}

async fn late_ticks_are_skipped_and_a_restart_fires_nothing_twice(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let file = schedules_file(&env);
    let vars = [("WHARF_SCHEDULES_FILE", file.as_str()), ("SCHEDULER_LATE_LIMIT_SECONDS", "2")];
    let mut first = env.spawn(&["scheduler"], &vars);
    eventually(Duration::from_secs(20), "two fired ticks", || async { (ticks(&env).await.len() >= 2).then_some(()) })
        .await;
    // Frozen for 6 s: on waking, the ticks more than 2 s late are skipped, the rest fired.
    first.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(6)).await;
    first.signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rows = ticks(&env).await;
    let skipped: Vec<_> = rows.iter().filter(|r| r.status == "skipped").collect();
    assert!((3..=6).contains(&skipped.len()), "skipped ticks: {rows:?}");
    assert!(skipped.iter().all(|r| r.job_id.is_none()));
    assert!(first.logs().contains("tick skipped"), "{}", first.logs());

    // Killed and started again at once: the ticks in between are caught up (they are within the
    // late limit), nothing claimed before is fired again.
    first.sigkill();
    let last_before = rows.last().unwrap().tick_at;
    let second = env.spawn(&["scheduler"], &vars);
    tokio::time::sleep(Duration::from_secs(3)).await;
    second.signal(libc::SIGTERM);
    assert!(second.wait_exit_ok().await);
    let rows = ticks(&env).await;
    assert!(rows.iter().filter(|r| r.tick_at > last_before).count() >= 2, "the restart carried on: {rows:?}");
    assert_contiguous(&rows);
    assert_one_job_per_fired_tick(&env, &rows).await;
    let skipped = rows.iter().filter(|r| r.status == "skipped").count() as i64;
    let last_fired: DateTime<Utc> = rows.iter().rev().find(|r| r.status == "fired").unwrap().tick_at;

    // The API lists it with its last and next fire time and the skipped count.
    let port = free_port();
    let _api = env.spawn(&["api"], &[("PORT", &port.to_string())]);
    wait_port(port, Duration::from_secs(20)).await;
    let api = ApiClient::new(port);
    let admin = env.key("ops", &[Scope::Admin]).await;
    let (s, list) = api.get(&admin, "/v1/schedules").await;
    assert_eq!(s, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    let mine = items.iter().find(|i| i["name"] == SCHEDULE).unwrap_or_else(|| panic!("{list}"));
    assert_eq!(mine["skipped_ticks"], skipped, "{mine}");
    assert_eq!(mine["enabled"], true);
    assert_eq!(mine["tenant"], TENANT);
    let parse = |v: &serde_json::Value| v.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    assert_eq!(parse(&mine["last_fired_at"]), last_fired, "{mine}");
    assert!(parse(&mine["next_fire_at"]) > Utc::now() - chrono::Duration::seconds(1), "{mine}");
    // The built-in purges are listed too: objects every 6 h, on the hour.
    let objects = items.iter().find(|i| i["name"] == "purge-objects").unwrap_or_else(|| panic!("{list}"));
    assert_eq!((objects["cron"].as_str(), objects["kind"].as_str()), (Some("0 0 */6 * * *"), Some("purge")));
    assert!(objects["last_fired_at"].is_null());
    assert!(parse(&objects["next_fire_at"]).format("%H:%M:%S").to_string().ends_with(":00:00"));
    // An operator view: admin only.
    let reader = env.key("ops", &[Scope::JobsRead, Scope::DlqRead]).await;
    assert_eq!(api.get(&reader, "/v1/schedules").await.0, 403);
}

/// `n` dead letters of `tenant` (diagnostic failures), written straight into the store.
async fn add_dead(env: &TestEnv, tenant: &str, n: usize) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new(tenant, "diagnostic", "diagnostic", serde_json::json!({"op": "noop", "n": i})))
        .collect();
    env.store.enqueue_many(jobs).await.unwrap();
    let sql = format!("UPDATE wharf_jobs SET state = 'dead' WHERE tenant_id = '{tenant}' AND state = 'queued'");
    match env.store.db() {
        Db::Postgres(p) => drop(sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&p).await.unwrap()),
        Db::Sqlite(p) => drop(sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&p).await.unwrap()),
    }
}

async fn dlq_events(env: &TestEnv, level: &str) -> i64 {
    count(env, &format!("SELECT count(*) FROM wharf_dlq_events WHERE tenant_id = 'acme' AND level = '{level}'")).await
}

async fn dlq_threshold_is_emitted_once_per_crossing(backend: Backend) {
    let env = TestEnv::new(backend).await;
    add_dead(&env, "acme", 499).await;
    add_dead(&env, "calm", 20).await;
    // acme has a webhook endpoint subscribed to `dlq.*` (its deliveries are only enqueued here:
    // no webhooks pool runs in this test).
    let endpoint = uuid::Uuid::new_v4();
    WebhookRepo::new(env.store.db())
        .create_endpoint(&NewEndpoint {
            id: endpoint,
            tenant: "acme".into(),
            url: "https://hooks.example.com/dlq".into(),
            description: "on-call".into(),
            event_types: vec!["dlq.*".into()],
            enabled: true,
            timeout_ms: 5000,
            max_concurrency: 1,
            headers: Default::default(),
            secret_enc: "not-used-here".into(),
        })
        .await
        .unwrap();
    // Two replicas, both checking every second.
    let vars = [("DLQ_MONITOR_INTERVAL_SECONDS", "1")];
    let a = env.spawn(&["scheduler"], &vars);
    let b = env.spawn(&["scheduler"], &vars);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(count(&env, "SELECT count(*) FROM wharf_dlq_events").await, 0, "499 is below the warning level");

    add_dead(&env, "acme", 1).await;
    eventually(Duration::from_secs(10), "a warning event", || async {
        (dlq_events(&env, "warning").await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(dlq_events(&env, "warning").await, 1, "staying above the level emits nothing more");

    add_dead(&env, "acme", 500).await;
    eventually(Duration::from_secs(10), "a critical event", || async {
        (dlq_events(&env, "critical").await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Readiness never depends on the dead-letter queue.
    let port = free_port();
    let _api = env.spawn(&["api"], &[("PORT", &port.to_string())]);
    wait_port(port, Duration::from_secs(20)).await;
    assert_eq!(ApiClient::new(port).get("", "/readyz").await.0, 200);

    // Draining the queue re-arms the levels: crossing again is a new event.
    let discard = "UPDATE wharf_jobs SET state = 'discarded' WHERE tenant_id = 'acme' AND state = 'dead'";
    match env.store.db() {
        Db::Postgres(p) => drop(sqlx::query(discard).execute(&p).await.unwrap()),
        Db::Sqlite(p) => drop(sqlx::query(discard).execute(&p).await.unwrap()),
    }
    eventually(Duration::from_secs(10), "the level back to ok", || async {
        let ok = count(&env, "SELECT count(*) FROM wharf_dlq_alerts WHERE tenant_id = 'acme' AND level = 'ok'").await;
        (ok == 1).then_some(())
    })
    .await;
    add_dead(&env, "acme", 500).await;
    eventually(Duration::from_secs(10), "a second warning event", || async {
        (dlq_events(&env, "warning").await == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(count(&env, "SELECT count(*) FROM wharf_dlq_events").await, 3, "warning, critical, warning");
    assert_eq!(count(&env, "SELECT count(*) FROM wharf_dlq_events WHERE tenant_id = 'calm'").await, 0);
    // Each event was logged once, by whichever replica moved the level.
    let logged = a.logs().matches("dlq.threshold: ").count() + b.logs().matches("dlq.threshold: ").count();
    assert_eq!(logged, 3, "{}\n{}", a.logs(), b.logs());
    // …and handed to the tenant's webhook endpoint: one delivery per event, across both replicas.
    eventually(Duration::from_secs(10), "events handed to webhooks", || async {
        (count(&env, "SELECT count(*) FROM wharf_dlq_events WHERE delivered_at IS NULL").await == 0).then_some(())
    })
    .await;
    let deliveries =
        strings(&env, "SELECT CAST(id AS TEXT) FROM wharf_jobs WHERE tenant_id = 'acme' AND kind = 'webhook'").await;
    assert_eq!(deliveries.len(), 3, "{deliveries:?}");
    let mut levels = Vec::new();
    for id in deliveries {
        let job = env.store.job("acme", id.parse().unwrap()).await.unwrap().unwrap();
        let delivery: WebhookDeliveryJob = serde_json::from_value(job.payload).unwrap();
        assert_eq!((delivery.endpoint_id, delivery.event_type.as_str()), (endpoint, "dlq.threshold"));
        assert!(delivery.event_id.starts_with("dlq_"), "{}", delivery.event_id);
        levels.push(delivery.data["level"].as_str().unwrap().to_string());
    }
    levels.sort();
    assert_eq!(levels, ["critical", "warning", "warning"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_scheduler() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let file = schedules_file(&env);
    let port = free_port();
    let serve = env.spawn(&["serve"], &[("WHARF_SCHEDULES_FILE", &file), ("PORT", &port.to_string())]);
    wait_port(port, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(15), "ticks fired by serve", || async {
        (ticks(&env).await.len() >= 2).then_some(())
    })
    .await;
    let rows = ticks(&env).await;
    assert_contiguous(&rows);
    assert_one_job_per_fired_tick(&env, &rows).await;
    drop(serve);
}
