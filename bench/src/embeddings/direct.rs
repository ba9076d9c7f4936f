//! The baseline: the same documents POSTed straight to the server's `/v1/embeddings` with
//! reqwest, at the same provider batch size, with no queue, database or handler in between.
//! `streams` tasks take whole jobs' worth of documents from a shared list and send each job's
//! batches one after the other, which is how the worker calls the provider (one job's batches
//! are sequential; jobs run side by side up to the pool's concurrency). One stream is the
//! plain sequential rate.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::json;

use super::server::{DIMS, MODEL};

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: u64,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

pub struct Direct {
    pub wall: Duration,
    pub requests: usize,
    /// Tokens the server counted (its `usage`; padding not included).
    pub tokens: u64,
    /// Vectors of the documents asked for in `keep`, by document index.
    pub kept: HashMap<usize, Vec<f32>>,
}

/// Embeds `docs` split into jobs of `docs_per_job`, each in batches of `batch`, over `streams`
/// concurrent tasks. Fails on any non-2xx answer or a vector that is not `DIMS` wide.
pub async fn run(
    url: &str,
    docs: &[String],
    docs_per_job: usize,
    batch: usize,
    streams: usize,
    keep: &[usize],
) -> Result<Direct> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(600)).build()?;
    let jobs: Vec<std::ops::Range<usize>> =
        (0..docs.len()).step_by(docs_per_job).map(|s| s..(s + docs_per_job).min(docs.len())).collect();
    let next = Arc::new(Mutex::new(jobs.into_iter()));
    let docs: Arc<Vec<String>> = Arc::new(docs.to_vec());
    let keep: Arc<Vec<usize>> = Arc::new(keep.to_vec());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams.max(1) {
        let (http, next, docs, keep, url) = (http.clone(), next.clone(), docs.clone(), keep.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut requests = 0;
            let mut tokens = 0;
            let mut kept = HashMap::new();
            loop {
                let Some(job) = next.lock().expect("job list").next() else { break };
                for start in job.clone().step_by(batch) {
                    let range = start..(start + batch).min(job.end);
                    let input = &docs[range.clone()];
                    let resp = http
                        .post(&url)
                        .json(&json!({"model": MODEL, "input": input, "encoding_format": "float"}))
                        .send()
                        .await
                        .context("POST /v1/embeddings")?;
                    requests += 1;
                    let status = resp.status();
                    if !status.is_success() {
                        bail!("the server answered {status}: {}", resp.text().await.unwrap_or_default());
                    }
                    let answer: Answer = resp.json().await.context("reading the embeddings answer")?;
                    if answer.data.len() != input.len() || answer.data.iter().any(|d| d.embedding.len() != DIMS) {
                        bail!("expected {} vectors of {DIMS} dims, got a malformed answer", input.len());
                    }
                    tokens += answer.usage.map_or(0, |u| u.prompt_tokens);
                    for item in answer.data {
                        let i = range.start + item.index;
                        if keep.contains(&i) {
                            kept.insert(i, item.embedding);
                        }
                    }
                }
            }
            Ok::<_, anyhow::Error>((requests, tokens, kept))
        }));
    }
    let mut requests = 0;
    let mut tokens = 0;
    let mut kept = HashMap::new();
    for t in tasks {
        let (r, n, k) = t.await.context("a baseline task panicked")??;
        requests += r;
        tokens += n;
        kept.extend(k);
    }
    Ok(Direct { wall: started.elapsed(), requests, tokens, kept })
}
