//! Embeddings end to end: the real `wharf` API and worker processes against the real local model
//! server (`tests/support/emb_server.py`, all-MiniLM-L6-v2 in numpy, 384 dims) and PostgreSQL with
//! pgvector or SQLite. Provider failures (500, 429 with Retry-After, a 400 for one input) are
//! scripted on that server; its request log is the provider-call count.

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;
use support::{embeddings::*, *};
use wharf_jobs::{
    JobState,
    embeddings::{content_hash, index_name},
    keys::Scope,
    kinds::{JobKind, embedding::RefreshEmbeddingsJob},
};

on_both_backends!(
    stored_vectors_rank_the_paraphrase_first,
    unchanged_documents_are_not_sent_again,
    primary_500_falls_back_and_refresh_moves_documents_back,
    tenants_see_only_their_own_documents,
);

const RW: &[Scope] = &[Scope::JobsWrite, Scope::JobsRead];
const FALLBACK_MODEL: &str = "gemini-embedding-test";
const WAIT: Duration = Duration::from_secs(60);

struct Running {
    env: TestEnv,
    api: ApiClient,
    key: String,
    _procs: Vec<WharfProcess>,
}

/// `OPENAI_BASE_URL` pointing at `server`, with its model.
fn primary(server: &EmbServer) -> Vec<(String, String)> {
    vec![("OPENAI_BASE_URL".into(), server.base_url()), ("OPENAI_EMBEDDING_MODEL".into(), SERVER_MODEL.into())]
}

/// Gemini's OpenAI-compatible endpoint stood in by `server`.
fn fallback(server: &EmbServer) -> Vec<(String, String)> {
    vec![
        ("GEMINI_API_KEY".into(), "test-gemini-key".into()),
        ("GEMINI_BASE_URL".into(), server.base_url()),
        ("GEMINI_EMBEDDING_MODEL".into(), FALLBACK_MODEL.into()),
    ]
}

/// `wharf api` and `wharf worker --pools embeddings` with `extra` in their environment.
async fn start(backend: Backend, extra: Vec<(String, String)>) -> Running {
    let env = TestEnv::new(backend).await;
    let port = free_port();
    let mut vars: Vec<(String, String)> = vec![
        ("WORKER_POLL_INTERVAL_MS".into(), "100".into()),
        ("EMBEDDINGS_RETRY_BASE_MS".into(), "200".into()),
        ("EMBEDDINGS_RETRY_MAX_MS".into(), "5000".into()),
    ];
    vars.extend(extra);
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut api_env = borrowed.clone();
    let port_s = port.to_string();
    api_env.push(("PORT", &port_s));
    let api = env.spawn(&["api"], &api_env);
    let worker = env.spawn(&["worker", "--pools", "embeddings"], &borrowed);
    wait_port(port, Duration::from_secs(30)).await;
    let key = env.key("acme", RW).await;
    Running { env, api: ApiClient::new(port), key, _procs: vec![api, worker] }
}

fn docs(pairs: &[(&str, &str)]) -> Value {
    Value::Array(pairs.iter().map(|(id, text)| json!({"id": id, "text": text})).collect())
}

/// Posts documents and waits for the job to succeed; returns the job.
async fn embed(api: &ApiClient, key: &str, body: Value) -> Value {
    let (s, accepted) = api.post(key, "/v1/embeddings", &body).await;
    assert_eq!(s, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();
    let job = eventually(WAIT, "the embedding job to finish", || async {
        let (_, job) = api.get(key, &format!("/v1/jobs/{id}")).await;
        matches!(job["state"].as_str(), Some("succeeded" | "dead")).then_some(job)
    })
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    job
}

async fn document(api: &ApiClient, key: &str, collection: &str, id: &str, query: &str) -> (u16, Value) {
    api.get(key, &format!("/v1/collections/{collection}/documents/{id}{query}")).await
}

const QUERY: &str = "How do I reset my password?";
const PARAPHRASE: &str = "I forgot my password and need to change it.";
const UNRELATED: &[&str] = &[
    "The quarterly revenue grew by 12 percent.",
    "Volcanoes erupt when magma rises to the surface.",
    "The recipe calls for two cups of flour.",
];

async fn stored_vectors_rank_the_paraphrase_first(backend: Backend) {
    let server = EmbServer::start().await;
    let r = start(backend, primary(&server)).await;
    let mut corpus = vec![("q", QUERY), ("p", PARAPHRASE)];
    corpus.extend([("u1", UNRELATED[0]), ("u2", UNRELATED[1]), ("u3", UNRELATED[2])]);
    let job = embed(&r.api, &r.key, json!({"collection": "kb", "documents": docs(&corpus)})).await;
    assert_eq!(job["result"]["embedded"], 5, "{job}");
    assert_eq!(job["result"]["stored"][SERVER_MODEL], 5, "{job}");

    let mut vectors = Vec::new();
    for (id, text) in &corpus {
        let (s, doc) = document(&r.api, &r.key, "kb", id, "?include_vector=true").await;
        assert_eq!(s, 200, "{doc}");
        assert_eq!((doc["dims"].as_u64(), doc["model"].as_str()), (Some(384), Some(SERVER_MODEL)), "{doc}");
        assert_eq!(doc["content_hash"], content_hash(text));
        assert_eq!(doc["provider"], "openai");
        let v = vector(&doc);
        assert_eq!(v.len(), 384);
        vectors.push(v);
    }
    let (_, without) = document(&r.api, &r.key, "kb", "q", "").await;
    assert!(without.get("vector").is_none(), "the vector only on request: {without}");
    let to_paraphrase = cosine(&vectors[0], &vectors[1]);
    for (i, u) in vectors[2..].iter().enumerate() {
        let to_unrelated = cosine(&vectors[0], u);
        assert!(
            to_paraphrase > to_unrelated + 0.2,
            "paraphrase {to_paraphrase} vs unrelated u{} {to_unrelated}",
            i + 1
        );
    }

    if backend == Backend::Postgres {
        // What a consuming application runs: nearest neighbours over the model's HNSW index.
        let pool = sqlx::PgPool::connect(&r.env.database_url).await.unwrap();
        let query_vector = format!("[{}]", vectors[0].iter().map(f32::to_string).collect::<Vec<_>>().join(","));
        let sql = format!(
            "SELECT doc_id, 1 - (embedding::vector(384) <=> $1::vector(384)) AS similarity FROM wharf_embeddings \
             WHERE tenant_id = 'acme' AND collection = 'kb' AND model = '{SERVER_MODEL}' AND dims = 384 \
             ORDER BY embedding::vector(384) <=> $1::vector(384) LIMIT 3"
        );
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.unwrap();
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
            .bind(&query_vector)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains(&index_name(SERVER_MODEL, 384)), "the HNSW index is used:\n{plan}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&query_vector).fetch_all(&mut *tx).await.unwrap();
        let ids: Vec<String> = rows.iter().map(|r| r.get("doc_id")).collect();
        assert_eq!(&ids[..2], ["q", "p"], "the query itself, then its paraphrase");
        let similarity: f64 = rows[1].get("similarity");
        assert!((similarity - f64::from(to_paraphrase)).abs() < 1e-4, "{similarity} vs {to_paraphrase}");
    }
}

async fn unchanged_documents_are_not_sent_again(backend: Backend) {
    let server = EmbServer::start().await;
    let r = start(backend, primary(&server)).await;
    let first = json!({"collection": "kb", "documents": [
        {"id": "a", "text": "Ships carry containers between ports.", "metadata": {"v": 1}},
        {"id": "b", "text": "Cranes unload containers at the quay."},
        {"id": "c", "text": "Trucks take containers inland.", "metadata": {"v": 1}},
    ]});
    embed(&r.api, &r.key, first.clone()).await;
    assert_eq!(server.log().await.iter().map(|l| l.inputs).collect::<Vec<_>>(), vec![3]);

    let again = embed(&r.api, &r.key, first).await;
    assert_eq!((again["result"]["unchanged"].as_u64(), again["result"]["embedded"].as_u64()), (Some(3), Some(0)));
    assert_eq!(again["result"]["provider_requests"], 0, "{again}");
    assert_eq!(server.requests().await, 1, "nothing was sent for unchanged documents");

    let changed = json!({"collection": "kb", "documents": [
        {"id": "a", "text": "Ships carry containers between ports.", "metadata": {"v": 1}},
        {"id": "b", "text": "Cranes lift containers off the ships."},
        {"id": "c", "text": "Trucks take containers inland.", "metadata": {"v": 2}},
    ]});
    let job = embed(&r.api, &r.key, changed).await;
    let res = &job["result"];
    assert_eq!((res["embedded"].as_u64(), res["unchanged"].as_u64()), (Some(1), Some(2)), "{job}");
    assert_eq!(res["metadata_updated"], 1, "{job}");
    let log = server.log().await;
    assert_eq!(log.iter().map(|l| l.inputs).collect::<Vec<_>>(), vec![3, 1], "only the changed text was sent");
    let (_, b) = document(&r.api, &r.key, "kb", "b", "").await;
    assert_eq!(b["content_hash"], content_hash("Cranes lift containers off the ships."));
    let (_, c) = document(&r.api, &r.key, "kb", "c", "").await;
    assert_eq!(c["metadata"], json!({"v": 2}), "metadata follows without re-embedding");
}

async fn primary_500_falls_back_and_refresh_moves_documents_back(backend: Backend) {
    let (primary_server, fallback_server) = tokio::join!(EmbServer::start(), EmbServer::start());
    primary_server.control(json!({"fail_always": 500})).await;
    let mut vars = primary(&primary_server);
    vars.extend(fallback(&fallback_server));
    let r = start(backend, vars).await;
    let body = json!({"collection": "kb", "documents": docs(&[("a", QUERY), ("b", PARAPHRASE)])});
    let job = embed(&r.api, &r.key, body).await;
    assert_eq!(job["result"]["stored"], json!({FALLBACK_MODEL: 2}), "{job}");
    assert_eq!(job["attempts"], 1, "the fallback answered within the first attempt: {job}");
    let primary_log = primary_server.log().await;
    assert!(!primary_log.is_empty() && primary_log.iter().all(|l| l.status == 500), "{primary_log:?}");
    assert_eq!(fallback_server.requests().await, 1);
    let (_, a) = document(&r.api, &r.key, "kb", "a", "").await;
    assert_eq!((a["model"].as_str(), a["provider"].as_str()), (Some(FALLBACK_MODEL), Some("gemini")), "{a}");

    // The primary recovers; the refresh job (the scheduler's cron) re-embeds with its model.
    primary_server.healthy().await;
    let refresh = RefreshEmbeddingsJob::default().into_job("system");
    let refresh_id = refresh.id;
    r.env.store.enqueue(refresh, None).await.unwrap();
    let done = eventually(WAIT, "the refresh job to succeed", || async {
        let j = r.env.store.job("system", refresh_id).await.unwrap().unwrap();
        (j.state == JobState::Succeeded).then_some(j)
    })
    .await;
    let result = done.result.unwrap();
    assert_eq!((result["refreshed"].as_u64(), result["complete"].as_bool()), (Some(2), Some(true)), "{result}");
    let (s, moved) = document(&r.api, &r.key, "kb", "a", &format!("?model={SERVER_MODEL}")).await;
    assert_eq!((s, moved["provider"].as_str()), (200, Some("openai")), "{moved}");
    let (_, latest) = document(&r.api, &r.key, "kb", "b", "").await;
    assert_eq!(latest["model"], SERVER_MODEL, "the newest row is the configured model's: {latest}");
    assert_eq!(fallback_server.requests().await, 1, "a refresh never falls back");

    // A second run finds nothing left.
    let again = RefreshEmbeddingsJob::default().into_job("system");
    let again_id = again.id;
    r.env.store.enqueue(again, None).await.unwrap();
    let done = eventually(WAIT, "the second refresh", || async {
        let j = r.env.store.job("system", again_id).await.unwrap().unwrap();
        (j.state == JobState::Succeeded).then_some(j)
    })
    .await;
    assert_eq!(done.result.unwrap()["refreshed"], 0);
}

async fn tenants_see_only_their_own_documents(backend: Backend) {
    let server = EmbServer::start().await;
    let r = start(backend, primary(&server)).await;
    let other = r.env.key("globex", RW).await;
    embed(&r.api, &r.key, json!({"collection": "kb", "documents": docs(&[("x", "alpha text for acme")])})).await;

    assert_eq!(document(&r.api, &other, "kb", "x", "").await.0, 404, "another tenant's document");
    // The same collection and id for the other tenant are its own: nothing is unchanged or
    // cached from acme's, even for the very same text.
    let job =
        embed(&r.api, &other, json!({"collection": "kb", "documents": docs(&[("x", "alpha text for acme")])})).await;
    let res = &job["result"];
    assert_eq!(
        (res["embedded"].as_u64(), res["unchanged"].as_u64(), res["cached"].as_u64()),
        (Some(1), Some(0), Some(0))
    );
    embed(&r.api, &other, json!({"collection": "kb", "documents": docs(&[("x", "beta text for globex")])})).await;
    let (_, mine) = document(&r.api, &r.key, "kb", "x", "").await;
    let (_, theirs) = document(&r.api, &other, "kb", "x", "").await;
    assert_eq!(mine["content_hash"], content_hash("alpha text for acme"), "untouched by the other tenant");
    assert_eq!(theirs["content_hash"], content_hash("beta text for globex"));
    let (_, accepted) =
        r.api.post(&r.key, "/v1/embeddings", &json!({"collection": "kb", "documents": docs(&[("y", "t")])})).await;
    let job_id = accepted["id"].as_str().unwrap();
    assert_eq!(r.api.get(&other, &format!("/v1/jobs/{job_id}")).await.0, 404, "another tenant's job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_retry_after_is_waited_out_on_the_same_provider() {
    let (primary_server, fallback_server) = tokio::join!(EmbServer::start(), EmbServer::start());
    primary_server.control(json!({"script": [{"status": 429, "retry_after": "2"}]})).await;
    let mut vars = primary(&primary_server);
    vars.extend(fallback(&fallback_server));
    let r = start(Backend::Sqlite, vars).await;
    let job = embed(&r.api, &r.key, json!({"collection": "kb", "documents": docs(&[("a", QUERY)])})).await;
    assert_eq!(job["result"]["stored"], json!({SERVER_MODEL: 1}), "{job}");
    let log = primary_server.log().await;
    assert_eq!(log.iter().map(|l| l.status).collect::<Vec<_>>(), vec![429, 200]);
    assert!(log[1].t - log[0].t >= 1.95, "retried {:.2} s after a Retry-After of 2 s", log[1].t - log[0].t);
    assert_eq!(fallback_server.requests().await, 0, "a short rate limit is waited out, not failed over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_reschedules_the_job_after_it() {
    let server = EmbServer::start().await;
    server.control(json!({"script": [{"status": 429, "retry_after": "3"}]})).await;
    let mut vars = primary(&server);
    vars.push(("EMBEDDINGS_MAX_INLINE_WAIT_MS".into(), "500".into()));
    let r = start(Backend::Sqlite, vars).await;
    let job = embed(&r.api, &r.key, json!({"collection": "kb", "documents": docs(&[("a", QUERY)])})).await;
    assert_eq!(job["attempts"], 2, "{job}");
    assert!(job["errors"][0]["error"].as_str().unwrap().contains("429"), "{job}");
    let log = server.log().await;
    assert_eq!(log.iter().map(|l| l.status).collect::<Vec<_>>(), vec![429, 200]);
    assert!(
        log[1].t - log[0].t >= 2.95,
        "the next attempt waited {:.2} s for a Retry-After of 3 s",
        log[1].t - log[0].t
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_documents_are_embedded_in_batches() {
    let server = EmbServer::start().await;
    let mut vars = primary(&server);
    vars.push(("EMBEDDINGS_MAX_DOCUMENTS".into(), "5000".into()));
    vars.push(("EMBEDDINGS_BATCH_SIZE".into(), "500".into()));
    let r = start(Backend::Postgres, vars).await;
    // Short texts: the numpy model server embeds a few hundred tokens a second.
    let documents: Vec<Value> =
        (0..5000).map(|i| json!({"id": format!("doc-{i}"), "text": format!("note {i}")})).collect();
    let (s, accepted) =
        r.api.post(&r.key, "/v1/embeddings", &json!({"collection": "bulk", "documents": documents})).await;
    assert_eq!(s, 202, "{accepted}");
    let job = r.api.wait_state(&r.key, accepted["id"].as_str().unwrap(), "succeeded", Duration::from_secs(240)).await;
    assert_eq!(job["result"]["embedded"], 5000, "{job}");
    assert_eq!(job["result"]["provider_requests"], 10, "{job}");
    let log = server.log().await;
    assert_eq!(log.len(), 10, "5 000 documents in batches of 500");
    assert!(log.iter().all(|l| l.inputs == 500 && l.status == 200), "{log:?}");
    let pool = sqlx::PgPool::connect(&r.env.database_url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM wharf_embeddings WHERE collection = 'bulk' AND dims = 384")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rejected_input_fails_only_its_document() {
    let server = EmbServer::start().await;
    server.control(json!({"poison": "FORBIDDEN"})).await;
    let r = start(Backend::Sqlite, primary(&server)).await;
    let body = json!({"collection": "kb", "documents": docs(&[
        ("a", "A harmless sentence."),
        ("b", "This one is FORBIDDEN by the provider."),
        ("c", "Another harmless sentence."),
        ("d", "Yet another harmless sentence."),
    ])});
    let job = embed(&r.api, &r.key, body).await;
    let res = &job["result"];
    assert_eq!(res["embedded"], 3, "{job}");
    assert_eq!(res["failed"].as_array().unwrap().len(), 1, "{job}");
    assert_eq!(res["failed"][0]["id"], "b");
    assert!(res["failed"][0]["error"].as_str().unwrap().contains("content filter"), "{job}");
    for id in ["a", "c", "d"] {
        assert_eq!(document(&r.api, &r.key, "kb", id, "").await.0, 200, "{id}");
    }
    assert_eq!(document(&r.api, &r.key, "kb", "b", "").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_default_embeds_under_serve_without_network() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // No provider variables; any outbound HTTP would go to a closed port.
    let env = vec![
        ("WHARF_DATA_DIR".to_string(), dir.path().join("data").display().to_string()),
        ("PORT".to_string(), port.to_string()),
        ("WORKER_POLL_INTERVAL_MS".to_string(), "100".to_string()),
        ("HTTP_PROXY".to_string(), "http://127.0.0.1:9".to_string()),
        ("HTTPS_PROXY".to_string(), "http://127.0.0.1:9".to_string()),
        ("ALL_PROXY".to_string(), "http://127.0.0.1:9".to_string()),
    ];
    let serve = WharfProcess::spawn(&["serve"], &env, dir.path());
    wait_port(port, Duration::from_secs(30)).await;
    let key = eventually(Duration::from_secs(10), "the admin key on stdout", || async {
        serve.logs().lines().map(str::trim).find(|l| l.starts_with("wharf_")).map(str::to_string)
    })
    .await;
    let api = ApiClient::new(port);
    let corpus = [("q", QUERY), ("p", PARAPHRASE), ("u", UNRELATED[0])];
    let job = embed(&api, &key, json!({"collection": "notes", "documents": docs(&corpus)})).await;
    assert_eq!(job["result"]["embedded"], 3, "{job}");
    let mut vectors = Vec::new();
    for (id, _) in corpus {
        let (s, doc) = document(&api, &key, "notes", id, "?include_vector=true").await;
        assert_eq!(s, 200, "{doc}");
        assert_eq!((doc["provider"].as_str(), doc["dims"].as_u64()), (Some("local"), Some(384)), "{doc}");
        assert!(doc["model"].as_str().unwrap().starts_with("pocket-encoder/"), "{doc}");
        vectors.push(vector(&doc));
    }
    assert!(cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]) + 0.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field_and_scopes_apply() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let port = free_port();
    let _api = env.spawn(
        &["api"],
        &[("PORT", &port.to_string()), ("EMBEDDINGS_MAX_DOCUMENTS", "3"), ("EMBEDDINGS_MAX_TEXT_BYTES", "100")],
    );
    wait_port(port, Duration::from_secs(30)).await;
    let api = ApiClient::new(port);
    let key = env.key("acme", RW).await;
    let fields = |body: &Value| -> Vec<String> {
        body["errors"]
            .as_array()
            .map(|e| e.iter().map(|x| x["field"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let (s, body) = api
        .post(
            &key,
            "/v1/embeddings",
            &json!({"collection": "no spaces", "documents": [
                {"id": "a", "text": " "},
                {"id": "a", "text": "x".repeat(101)},
                {"id": "c", "text": "ok", "metadata": [1]},
            ]}),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(
        fields(&body),
        vec!["collection", "documents[0].text", "documents[1].id", "documents[1].text", "documents[2].metadata"],
        "{body}"
    );
    let four = docs(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
    let (s, body) = api.post(&key, "/v1/embeddings", &json!({"collection": "kb", "documents": four})).await;
    assert_eq!((s, fields(&body)), (422, vec!["documents".to_string()]), "{body}");
    let (s, body) =
        api.post(&key, "/v1/embeddings", &json!({"collection": "kb", "documents": [{"id": "a", "txt": "x"}]})).await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(fields(&body)[0], "documents[0].txt");

    let read_only = env.key("acme", &[Scope::JobsRead]).await;
    let one = json!({"collection": "kb", "documents": docs(&[("a", "text")])});
    assert_eq!(api.post(&read_only, "/v1/embeddings", &one).await.0, 403);
    let write_only = env.key("acme", &[Scope::JobsWrite]).await;
    assert_eq!(api.get(&write_only, "/v1/collections/kb/documents/a").await.0, 403);
    assert_eq!(api.get(&key, "/v1/collections/kb/documents/a").await.0, 404);
    assert_eq!(api.get(&key, "/v1/collections/bad%20name/documents/a").await.0, 404);

    let (s1, first) = api.post_with(&key, "/v1/embeddings", &one, &[("Idempotency-Key", "emb-1")]).await;
    let (s2, second) = api.post_with(&key, "/v1/embeddings", &one, &[("Idempotency-Key", "emb-1")]).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["id"], second["id"], "the same key and body answer the same job");
    let (_, spec) = api.get("", "/openapi.json").await;
    assert!(spec["paths"]["/v1/embeddings"]["post"].is_object(), "documented");
}
