//! The operator commands (`wharf dlq …`, `wharf queues`, `wharf jobs …`): clients of the HTTP
//! API (`WHARF_URL`, `WHARF_API_KEY`), so that they are authorised and audited like the
//! console. Tables for people, `--json` for scripts.

use std::fmt::Write as _;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// An authenticated client of one wharf API.
pub struct OpsClient {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl OpsClient {
    /// From `WHARF_URL` (default `http://127.0.0.1:4000`) and `WHARF_API_KEY` (required).
    pub fn from_env() -> Result<OpsClient> {
        let base = std::env::var("WHARF_URL").unwrap_or_else(|_| "http://127.0.0.1:4000".into());
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("WHARF_URL must be an http:// or https:// URL, got `{base}`");
        }
        let key = std::env::var("WHARF_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| anyhow!("WHARF_API_KEY is not set: create a key with `wharf keys create`"))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(OpsClient { base: base.trim_end_matches('/').to_string(), key, http })
    }

    /// Sends a request; a non-2xx answer becomes an error carrying the problem's detail and
    /// each field error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url).bearer_auth(&self.key).query(query);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("{method} {url} (is WHARF_URL right?)"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        Err(anyhow!(problem_message(status, &body)))
    }
}

/// `404 Not Found: no dead letter `x`` plus `  - field: message` lines.
fn problem_message(status: StatusCode, body: &Value) -> String {
    let detail = body.get("detail").and_then(Value::as_str).or_else(|| body.as_str()).unwrap_or("");
    let mut s = format!("the API answered {status}: {detail}");
    for e in body.get("errors").and_then(Value::as_array).into_iter().flatten() {
        let _ = write!(s, "\n  - {}: {}", e["field"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("?"));
    }
    s
}

/// Filters shared by `dlq list` and `dlq replay --all`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DlqFilter {
    /// Only jobs of this kind (email, webhook, embed_documents, purge).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only jobs whose last error contains this text.
    #[arg(long)]
    pub error: Option<String>,
    /// Only jobs that died at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only jobs that died before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
}

impl DlqFilter {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [("kind", &self.kind), ("error", &self.error), ("since", &self.since), ("until", &self.until)]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
            .collect()
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A text table of `columns` from each item; long cells are cut so rows stay on one line.
pub fn table(items: &[Value], columns: &[&str]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|it| {
            columns
                .iter()
                .map(|c| {
                    let s = cell(&it[*c]).replace('\n', " ");
                    if s.chars().count() > 60 { s.chars().take(59).collect::<String>() + "…" } else { s }
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([columns[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |r: Vec<String>| {
        r.iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(columns.iter().map(|c| c.to_uppercase()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r));
    }
    out
}

fn print(json_out: bool, value: &Value, human: impl FnOnce(&Value) -> String) -> Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human(value));
    }
    Ok(())
}

const JOB_COLUMNS: &[&str] = &["id", "kind", "state", "attempts", "finished_at", "last_error"];

fn page(v: &Value) -> String {
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let mut s = table(&items, JOB_COLUMNS);
    if let Some(c) = v["next_cursor"].as_str() {
        let _ = write!(s, "\n(more: --cursor {c})");
    }
    s
}

fn detail(v: &Value) -> String {
    let mut s = String::new();
    for k in ["id", "kind", "queue", "state", "attempts", "max_attempts", "created_at", "run_at", "finished_at"] {
        let _ = writeln!(s, "{k:<13}{}", cell(&v[k]));
    }
    for k in ["replay_of", "replayed_by", "last_error"] {
        if !v[k].is_null() {
            let _ = writeln!(s, "{k:<13}{}", cell(&v[k]));
        }
    }
    if let Some(errors) = v["errors"].as_array().filter(|e| !e.is_empty()) {
        let _ = writeln!(s, "attempts:");
        for e in errors {
            let _ = writeln!(s, "  #{} {} {}", cell(&e["attempt"]), cell(&e["finished_at"]), cell(&e["error"]));
        }
    }
    if !v["payload"].is_null() {
        let _ = write!(s, "payload:\n{}", serde_json::to_string_pretty(&v["payload"]).unwrap_or_default());
    }
    s.trim_end().to_string()
}

pub async fn dlq_list(f: &DlqFilter, limit: Option<u32>, cursor: Option<String>, json_out: bool) -> Result<()> {
    let c = OpsClient::from_env()?;
    let mut q = f.pairs();
    q.extend(limit.map(|l| ("limit", l.to_string())));
    q.extend(cursor.map(|cur| ("cursor", cur)));
    print(json_out, &c.call(Method::GET, "/v1/dead-letters", &q, None).await?, page)
}

pub async fn dlq_show(id: &str, json_out: bool) -> Result<()> {
    let c = OpsClient::from_env()?;
    print(json_out, &c.call(Method::GET, &format!("/v1/dead-letters/{id}"), &[], None).await?, detail)
}

/// One dead letter (optionally with the payload in a JSON file), or every one matching `f`.
pub async fn dlq_replay(
    id: Option<&str>,
    all: bool,
    f: &DlqFilter,
    payload: Option<&std::path::Path>,
    json_out: bool,
) -> Result<()> {
    let c = OpsClient::from_env()?;
    match (id, all) {
        (Some(id), false) => {
            let body = match payload {
                Some(p) => {
                    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                    let v: Value =
                        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?;
                    json!({ "payload": v })
                }
                None => json!({}),
            };
            let v = c.call(Method::POST, &format!("/v1/dead-letters/{id}/replay"), &[], Some(body)).await?;
            print(json_out, &v, |v| format!("replayed {id} as job {}", cell(&v["id"])))
        }
        (None, true) => {
            if payload.is_some() {
                bail!("--payload replays one dead letter: give its id instead of --all");
            }
            let body: serde_json::Map<String, Value> =
                f.pairs().into_iter().map(|(k, v)| (k.to_string(), Value::String(v))).collect();
            let v = c.call(Method::POST, "/v1/dead-letters/replay", &[], Some(Value::Object(body))).await?;
            print(json_out, &v, |v| format!("replayed {} dead letters", cell(&v["replayed"])))
        }
        (Some(_), true) => bail!("give either a dead letter's id or --all, not both"),
        (None, false) => bail!("give a dead letter's id, or --all (with filters) to replay every match"),
    }
}

pub async fn dlq_discard(id: &str) -> Result<()> {
    let c = OpsClient::from_env()?;
    c.call(Method::DELETE, &format!("/v1/dead-letters/{id}"), &[], None).await?;
    println!("discarded {id}");
    Ok(())
}

pub async fn queues(json_out: bool) -> Result<()> {
    let c = OpsClient::from_env()?;
    let v = c.call(Method::GET, "/v1/queues", &[], None).await?;
    print(json_out, &v, |v| {
        let items = v["items"].as_array().cloned().unwrap_or_default();
        table(&items, &["name", "queued", "scheduled", "running", "retrying", "dead", "done_last_minute"])
    })
}

pub async fn jobs_list(
    kind: Option<String>,
    queue: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    json_out: bool,
) -> Result<()> {
    let c = OpsClient::from_env()?;
    let q: Vec<(&str, String)> = [("kind", kind), ("queue", queue), ("state", state), ("cursor", cursor)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .chain(limit.map(|l| ("limit", l.to_string())))
        .collect();
    print(json_out, &c.call(Method::GET, "/v1/jobs", &q, None).await?, page)
}

pub async fn jobs_show(id: &str, json_out: bool) -> Result<()> {
    let c = OpsClient::from_env()?;
    print(json_out, &c.call(Method::GET, &format!("/v1/jobs/{id}"), &[], None).await?, detail)
}

pub async fn jobs_cancel(id: &str, json_out: bool) -> Result<()> {
    let c = OpsClient::from_env()?;
    let v = c.call(Method::POST, &format!("/v1/jobs/{id}/cancel"), &[], None).await?;
    print(json_out, &v, |v| format!("job {} is {}", cell(&v["id"]), cell(&v["state"])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_cut_long_cells() {
        let t = table(
            &[json!({"id": "a", "last_error": "x".repeat(100)}), json!({"id": "bbb", "last_error": null})],
            &["id", "last_error"],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ID   LAST_ERROR");
        assert!(lines[1].starts_with("a    xxx") && lines[1].ends_with('…'), "{t}");
        assert_eq!(lines[2], "bbb  -");
    }

    #[test]
    fn problems_name_their_fields() {
        let m = problem_message(
            StatusCode::BAD_REQUEST,
            &json!({"detail": "invalid query parameters", "errors": [{"field": "since", "message": "bad time"}]}),
        );
        assert_eq!(m, "the API answered 400 Bad Request: invalid query parameters\n  - since: bad time");
    }
}
