//! Documents through wharf's real path on a fresh database: each job is built and validated as
//! `POST /v1/embeddings` builds it and enqueued with `Store::enqueue`; then one `Worker` (the
//! runtime `wharf worker` runs, at its default `RuntimeConfig`) runs the real embeddings
//! handler, configured from `OPENAI_BASE_URL` / `OPENAI_EMBEDDING_MODEL` /
//! `EMBEDDINGS_BATCH_SIZE` as the binary is, against the local server. Timed from worker start
//! until the bench sees every document's row in `wharf_embeddings`.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use wharf_jobs::{
    JobId, Store, StoreConfig,
    config::Env,
    embeddings::EmbeddingStore,
    job::JobState,
    kinds::{
        JobKind,
        embedding::{Document, EmbedDocumentsJob, EmbedLimits},
    },
    queue,
    store::{Db, PostgresStore, SqliteStore},
};
use wharf_workers::{
    registry::Registry,
    runtime::{RuntimeConfig, Worker},
};

use super::{
    cpu::{self, CpuSplit},
    server::{DIMS, EmbServer, MODEL},
};
use crate::db::{TempPg, TempSqlite};

const TENANT: &str = "bench";
const COLLECTION: &str = "bench-docs";
/// How often the bench counts the stored rows (the timing's resolution).
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Postgres => "wharf-postgres",
            Backend::Sqlite => "wharf-sqlite",
        }
    }
}

enum Place {
    Pg(TempPg),
    Sqlite(TempSqlite),
}

/// What one run through wharf measured and found.
pub struct Measured {
    /// Worker start → the bench saw all N rows.
    pub stored: Duration,
    /// Worker start → every job succeeded in the store (the acks are in).
    pub settled: Option<Duration>,
    pub enqueue: Duration,
    pub jobs: usize,
    /// Requests the server logged during the run.
    pub provider_calls: usize,
    pub non_2xx: usize,
    /// Texts those requests carried.
    pub server_inputs: usize,
    /// Worker start → the first request reached the server, and → the last one did.
    pub first_call: Option<Duration>,
    pub last_call: Option<Duration>,
    /// `provider_requests` summed over the jobs' results.
    pub reported_calls: u64,
    pub missing: usize,
    pub wrong_dims: usize,
    /// Spot-checked documents whose stored vector is not the server's vector for that text.
    pub vector_mismatch: usize,
    pub spot_checked: usize,
    pub cpu: CpuSplit,
    pub place: String,
}

async fn open(backend: Backend, pg_base: &str) -> Result<(Arc<dyn Store>, Place)> {
    match backend {
        Backend::Postgres => {
            let db = TempPg::create(pg_base).await?;
            let opened = async {
                let store = PostgresStore::connect(&StoreConfig::new(&db.url)).await?;
                store
                    .migrate()
                    .await
                    .context("migrating (the embeddings migration needs pgvector: run scripts/install-pgvector.sh)")?;
                Ok::<_, anyhow::Error>(store)
            }
            .await;
            match opened {
                Ok(store) => Ok((Arc::new(store), Place::Pg(db))),
                Err(e) => {
                    db.drop_db().await.ok();
                    Err(e)
                }
            }
        }
        Backend::Sqlite => {
            let file = TempSqlite::new();
            let store = SqliteStore::connect(&StoreConfig::new(&file.url)).await?;
            store.migrate().await?;
            Ok((Arc::new(store), Place::Sqlite(file)))
        }
    }
}

async fn close(store: Arc<dyn Store>, place: Place) -> Result<()> {
    let db = store.db();
    drop(store);
    match (db, place) {
        // Dropping the database WITH (FORCE) ends every session on it, the store's LISTEN
        // connection included, so the pool is not closed first.
        (_, Place::Pg(p)) => p.drop_db().await?,
        (Db::Sqlite(pool), Place::Sqlite(f)) => {
            pool.close().await;
            f.remove();
        }
        (Db::Postgres(_), Place::Sqlite(f)) => f.remove(),
    }
    Ok(())
}

fn describe(place: &Place) -> String {
    match place {
        Place::Pg(db) => format!("database {}", db.name),
        Place::Sqlite(f) => format!("file {}", f.path().display()),
    }
}

pub struct Plan<'a> {
    pub backend: Backend,
    pub pg_base: &'a str,
    pub docs: &'a [String],
    pub docs_per_job: usize,
    pub batch: usize,
    pub runtime: RuntimeConfig,
    /// Give up when no new row appeared for this long.
    pub stall: Duration,
    /// Document index → the server's vector for it (from the baseline), to spot-check.
    pub reference: &'a HashMap<usize, Vec<f32>>,
}

pub async fn run(plan: &Plan<'_>, server: &EmbServer) -> Result<Measured> {
    let (store, place) = open(plan.backend, plan.pg_base).await?;
    let r = run_on(plan, server, store.clone()).await;
    let place_name = describe(&place);
    close(store, place).await.context("cleaning up")?;
    r.map(|mut m| {
        m.place = place_name;
        m
    })
}

fn doc_id(i: usize) -> String {
    format!("doc-{i:06}")
}

async fn count_rows(db: &Db) -> Result<usize> {
    let n: i64 = match db {
        Db::Postgres(p) => {
            sqlx::query_scalar("SELECT count(*) FROM wharf_embeddings WHERE tenant_id = $1 AND collection = $2")
                .bind(TENANT)
                .bind(COLLECTION)
                .fetch_one(p)
                .await?
        }
        Db::Sqlite(p) => {
            sqlx::query_scalar("SELECT count(*) FROM wharf_embeddings WHERE tenant_id = ?1 AND collection = ?2")
                .bind(TENANT)
                .bind(COLLECTION)
                .fetch_one(p)
                .await?
        }
    };
    Ok(n as usize)
}

/// (doc_id, dims declared, width of the stored vector, model) of every stored row.
async fn stored_rows(db: &Db) -> Result<Vec<(String, i64, i64, String)>> {
    let rows = match db {
        Db::Postgres(p) => sqlx::query(
            "SELECT doc_id, dims::bigint AS dims, vector_dims(embedding)::bigint AS width, model \
                 FROM wharf_embeddings WHERE tenant_id = $1 AND collection = $2",
        )
        .bind(TENANT)
        .bind(COLLECTION)
        .fetch_all(p)
        .await?
        .iter()
        .map(|r| (r.get("doc_id"), r.get("dims"), r.get("width"), r.get("model")))
        .collect(),
        Db::Sqlite(p) => sqlx::query(
            "SELECT doc_id, dims, length(embedding) / 4 AS width, model \
             FROM wharf_embeddings WHERE tenant_id = ?1 AND collection = ?2",
        )
        .bind(TENANT)
        .bind(COLLECTION)
        .fetch_all(p)
        .await?
        .iter()
        .map(|r| (r.get("doc_id"), r.get("dims"), r.get("width"), r.get("model")))
        .collect(),
    };
    Ok(rows)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

async fn run_on(plan: &Plan<'_>, server: &EmbServer, store: Arc<dyn Store>) -> Result<Measured> {
    let n = plan.docs.len();
    let db = store.db();

    // The jobs, as the API builds them from `POST /v1/embeddings` bodies of `docs_per_job`.
    let t = Instant::now();
    let mut ids: Vec<JobId> = Vec::new();
    for (j, chunk) in plan.docs.chunks(plan.docs_per_job).enumerate() {
        let job = EmbedDocumentsJob {
            collection: COLLECTION.into(),
            model: None,
            documents: chunk
                .iter()
                .enumerate()
                .map(|(k, text)| Document { id: doc_id(j * plan.docs_per_job + k), text: text.clone(), metadata: None })
                .collect(),
        };
        if let Some(e) = job.validate(&EmbedLimits::default()).first() {
            bail!("the API would refuse this job: {}: {}", e.field, e.message);
        }
        let new = job.into_job(TENANT);
        ids.push(new.id);
        store.enqueue(new, None).await.context("enqueue")?;
    }
    let enqueue = t.elapsed();

    // The handler as `wharf worker` registers it, from the same variables.
    let batch = plan.batch.to_string();
    let base = server.base_url();
    let env = Env::from_pairs([
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_EMBEDDING_MODEL", MODEL),
        ("EMBEDDINGS_BATCH_SIZE", batch.as_str()),
    ]);
    let mut registry = Registry::new();
    wharf_workers::embeddings::register(&mut registry, &env, db.clone()).context("embeddings config")?;
    let worker = Worker::new(store.clone(), registry, &[queue::EMBEDDINGS.to_string()], plan.runtime.clone())?;

    let calls_before = server.log().await?.len();
    let stop = CancellationToken::new();
    let cpu0 = cpu::mark(server, Some(&db)).await;
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    let running = tokio::spawn(worker.run(stop.clone()));

    let mut last = 0;
    let mut last_progress = Instant::now();
    let stored = loop {
        let c = count_rows(&db).await?;
        if c >= n {
            break Some(started.elapsed());
        }
        if c != last {
            last = c;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > plan.stall || running.is_finished() {
            break None;
        }
        tokio::time::sleep(POLL).await;
    };
    let cpu = cpu::since(server, Some(&db), &cpu0).await;

    // Then the acks: every job succeeded.
    let mut settled = None;
    if stored.is_some() {
        let deadline = Instant::now() + plan.stall;
        while Instant::now() < deadline {
            let counts = store.queue_counts(Some(TENANT)).await?;
            let c = counts.iter().find(|c| c.queue == queue::EMBEDDINGS).cloned().unwrap_or_default();
            if c.queued + c.running + c.retrying + c.scheduled + c.dead == 0 {
                settled = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    stop.cancel();
    match tokio::time::timeout(Duration::from_secs(60), running).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("worker failed: {e}"),
        Ok(Err(e)) => bail!("worker panicked: {e}"),
        Err(_) => bail!("worker did not stop within 60 s"),
    }
    let log = server.log().await?;
    let during = &log[calls_before.min(log.len())..];

    // Every document stored once, 384 wide, under the server's model.
    let rows = stored_rows(&db).await?;
    let expected: HashSet<String> = (0..n).map(doc_id).collect();
    let present: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let missing = expected.iter().filter(|id| !present.contains(id.as_str())).count();
    let wrong_dims = rows
        .iter()
        .filter(|(_, dims, width, model)| *dims != DIMS as i64 || *width != DIMS as i64 || model != MODEL)
        .count();

    // Spot check: the stored vector is the server's vector for the same text.
    let repo = EmbeddingStore::new(db.clone());
    let mut vector_mismatch = 0;
    for (i, want) in plan.reference {
        let got = repo.get(TENANT, COLLECTION, &doc_id(*i), Some(MODEL), true).await?;
        match got.and_then(|r| r.vector) {
            Some(v) if v.len() == want.len() && cosine(&v, want) > 0.999 => {}
            _ => vector_mismatch += 1,
        }
    }

    let mut reported_calls = 0;
    let mut unfinished: Vec<String> = Vec::new();
    for id in &ids {
        let job = store.job(TENANT, *id).await?.context("an enqueued job is gone")?;
        if job.state != JobState::Succeeded {
            unfinished.push(format!(
                "{:?} after {} attempt(s): {}",
                job.state,
                job.attempt,
                job.last_error.as_deref().unwrap_or("no error recorded")
            ));
        }
        reported_calls += job.result.as_ref().and_then(|r| r["provider_requests"].as_u64()).unwrap_or(0);
    }

    let Some(stored) = stored else {
        unfinished.dedup();
        bail!(
            "{last} of {n} documents stored when the bench gave up (no new row for {} s); the server logged {} \
             requests ({} not 2xx) for {} texts; jobs not succeeded: {}",
            plan.stall.as_secs(),
            during.len(),
            during.iter().filter(|l| !(200..300).contains(&l.status)).count(),
            during.iter().map(|l| l.inputs).sum::<usize>(),
            unfinished.join("; ")
        );
    };
    Ok(Measured {
        stored,
        settled,
        enqueue,
        jobs: ids.len(),
        provider_calls: during.len(),
        non_2xx: during.iter().filter(|l| !(200..300).contains(&l.status)).count(),
        server_inputs: during.iter().map(|l| l.inputs).sum(),
        first_call: during.first().map(|l| Duration::from_secs_f64((l.t - started_unix).max(0.0))),
        last_call: during.last().map(|l| Duration::from_secs_f64((l.t - started_unix).max(0.0))),
        reported_calls,
        missing,
        wrong_dims,
        vector_mismatch,
        spot_checked: plan.reference.len(),
        cpu,
        place: String::new(),
    })
}
