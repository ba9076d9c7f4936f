//! The runtime's promises, with real `wharf worker` processes: leases rescued after SIGKILL, a
//! job that kills its worker ends dead, poison payloads go dead without stopping the worker,
//! SIGTERM lets running jobs finish and returns prefetched ones uncharged.

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use wharf_jobs::{JobState, NewJob, kinds::diagnostic::DiagnosticJob};

on_both_backends!(
    sigkilled_worker_loses_its_job_to_another,
    job_that_crashes_its_worker_ends_dead,
    undecodable_payload_goes_dead_and_work_flows_on,
    sigterm_lets_running_job_finish_and_returns_prefetched,
    grace_expiry_returns_running_job_uncharged,
);

const TENANT: &str = "acme";

fn fast_lease() -> Vec<(&'static str, &'static str)> {
    vec![("WORKER_LEASE_SECONDS", "2"), ("WORKER_POLL_INTERVAL_MS", "100"), ("DIAGNOSTIC_RETRY_BASE_MS", "200")]
}

async fn wait_job_state(env: &TestEnv, id: &str, state: JobState, timeout: Duration) -> wharf_jobs::JobRecord {
    eventually(timeout, &format!("job {id} to be {state}"), || async {
        let j = env.job(TENANT, id).await;
        (j.state == state).then_some(j)
    })
    .await
}

async fn sigkilled_worker_loses_its_job_to_another(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let id = enqueue_diagnostic(env.store.as_ref(), TENANT, DiagnosticJob::Sleep { ms: 2000 }).await;
    let mut a = env.spawn(&["worker", "--pools", "diagnostic"], &fast_lease());
    wait_job_state(&env, &id, JobState::Running, Duration::from_secs(20)).await;
    a.sigkill();

    let _b = env.spawn(&["worker", "--pools", "diagnostic"], &fast_lease());
    let job = wait_job_state(&env, &id, JobState::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(job.attempt, 2, "the lost attempt is charged");
    assert_eq!(job.attempts.len(), 1, "{:?}", job.attempts);
    assert!(job.attempts[0].error.contains("stopped heart-beating"), "{:?}", job.attempts);
}

async fn job_that_crashes_its_worker_ends_dead(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let id = enqueue_diagnostic(env.store.as_ref(), TENANT, DiagnosticJob::Crash).await;
    let mut worker_env = fast_lease();
    worker_env.push(("DIAGNOSTIC_MAX_ATTEMPTS", "3"));
    let mut starts = 0;
    let mut worker = env.spawn(&["worker", "--pools", "diagnostic"], &worker_env);
    let job = eventually(Duration::from_secs(90), "the crashing job to be dead", || {
        let restarted = match worker.child.try_wait() {
            Ok(Some(_)) => {
                starts += 1;
                worker = env.spawn(&["worker", "--pools", "diagnostic"], &worker_env);
                true
            }
            _ => false,
        };
        let env = &env;
        let id = id.clone();
        async move {
            let _ = restarted;
            let j = env.job(TENANT, &id).await;
            (j.state == JobState::Dead).then_some(j)
        }
    })
    .await;
    assert_eq!(job.attempt, 3);
    assert_eq!(job.attempts.len(), 3, "{:?}", job.attempts);
    assert!(starts >= 3, "each attempt killed a worker ({starts} restarts)");
    assert!(job.last_error.unwrap().contains("no attempts left"));
    // The last worker is alive and idle: the job is not looping.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(worker.child.try_wait().unwrap().is_none(), "worker died again: {}", worker.logs());
}

async fn undecodable_payload_goes_dead_and_work_flows_on(backend: Backend) {
    let env = TestEnv::new(backend).await;
    // A row the email pool can no longer decode, between two good emails.
    let good = |n: u32| {
        let mut j = NewJob::new(TENANT, "email", "email", email_body(&format!("r{n}@example.com"), &format!("ok {n}")));
        j.id = wharf_jobs::JobId::new();
        j
    };
    let first = good(1);
    let poison = NewJob::new(TENANT, "email", "email", json!({"to": "not-a-list", "legacy_field": true}));
    let second = good(2);
    let ids: Vec<String> = [&first, &poison, &second].iter().map(|j| j.id.to_string()).collect();
    for j in [first, poison, second] {
        env.store.enqueue(j, None).await.unwrap();
    }
    let worker = env.spawn(&["worker", "--pools", "email"], &[("EMAIL_PROVIDER", "outbox")]);
    let dead = wait_job_state(&env, &ids[1], JobState::Dead, Duration::from_secs(30)).await;
    assert!(dead.last_error.as_deref().unwrap().contains("does not decode"), "{:?}", dead.last_error);
    assert_eq!(dead.attempt, 1, "a permanent error is not retried");
    for id in [&ids[0], &ids[2]] {
        wait_job_state(&env, id, JobState::Succeeded, Duration::from_secs(30)).await;
    }
    // And later work still flows through the same worker process.
    let later = good(3);
    let later_id = later.id.to_string();
    env.store.enqueue(later, None).await.unwrap();
    wait_job_state(&env, &later_id, JobState::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(outbox_messages(&env.path("outbox")).len(), 3);
    drop(worker);
}

async fn sigterm_lets_running_job_finish_and_returns_prefetched(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let slow = enqueue_diagnostic(env.store.as_ref(), TENANT, DiagnosticJob::Sleep { ms: 3000 }).await;
    let mut worker = env.spawn(
        &["worker", "--pools", "diagnostic", "--concurrency", "1"],
        &[("WORKER_SHUTDOWN_GRACE_SECONDS", "20"), ("WORKER_POLL_INTERVAL_MS", "100")],
    );
    wait_job_state(&env, &slow, JobState::Running, Duration::from_secs(20)).await;
    // Queued behind the slow job; with concurrency 1 and prefetch 1 one of them is claimed ahead.
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(enqueue_diagnostic(env.store.as_ref(), TENANT, DiagnosticJob::Noop).await);
    }
    eventually(Duration::from_secs(10), "a job to be prefetched", || async {
        let mut n = 0;
        for id in &waiting {
            if env.job(TENANT, id).await.state == JobState::Running {
                n += 1;
            }
        }
        (n == 1).then_some(())
    })
    .await;
    worker.signal(libc::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(25)).await.expect("worker exits after the slow job");
    assert!(status.success(), "{}", worker.logs());
    let job = env.job(TENANT, &slow).await;
    assert_eq!(job.state, JobState::Succeeded, "the running job completed before exit");
    for id in &waiting {
        let j = env.job(TENANT, id).await;
        assert_eq!((j.state, j.attempt), (JobState::Queued, 0), "prefetched/queued jobs go back uncharged: {id}");
    }
}

async fn grace_expiry_returns_running_job_uncharged(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let slow = enqueue_diagnostic(env.store.as_ref(), TENANT, DiagnosticJob::Sleep { ms: 60_000 }).await;
    let mut worker = env.spawn(&["worker", "--pools", "diagnostic"], &[("WORKER_SHUTDOWN_GRACE_SECONDS", "1")]);
    wait_job_state(&env, &slow, JobState::Running, Duration::from_secs(20)).await;
    worker.signal(libc::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(15)).await.expect("worker exits after the grace period");
    assert!(status.success(), "{}", worker.logs());
    let job = env.job(TENANT, &slow).await;
    assert_eq!((job.state, job.attempt), (JobState::Queued, 0), "interrupted job returned uncharged");
}

/// The LISTEN task of a PostgreSQL store holds a pool connection; closing the pool must end it
/// (before, `PgPool::close` waited forever), and wake-ups must work until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_postgres_store_ends_its_listen_task() {
    let env = TestEnv::new(Backend::Postgres).await;
    let store = wharf_jobs::store::PostgresStore::connect(&wharf_jobs::StoreConfig::new(&env.database_url))
        .await
        .expect("connect");
    let wakeups = wharf_jobs::Store::wakeups(&store).await.expect("LISTEN");
    let signal = wakeups.queue("diagnostic");
    let waiting = tokio::spawn(async move { signal.notified().await });
    enqueue_diagnostic(&store, "acme", DiagnosticJob::Noop).await;
    tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("a NOTIFY wakes the queue").unwrap();
    tokio::time::timeout(Duration::from_secs(10), store.pool().close())
        .await
        .expect("PgPool::close returns once the LISTEN task has ended");
}
