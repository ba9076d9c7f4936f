//! PRODUCT.md §6 HTTP: `POST /v1/emails` through the release `wharf api` with `hey` on
//! loopback. For every (backend, concurrency) a fresh database gets `wharf migrate`, a
//! `jobs:write` key from `wharf keys create`, and its own `wharf api`; hey posts the same small
//! body for a fixed time (no idempotency key, so every request is a new job). Afterwards the
//! jobs in the store must equal hey's 202 count. No worker runs, so every job stays queued.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use sqlx::Connection as _;

use crate::db::{TempPg, TempSqlite};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `wharf` binary; default `$CARGO_TARGET_DIR/release/wharf`, then `target/release/wharf`.
    #[arg(long)]
    wharf: Option<PathBuf>,
    /// PostgreSQL server (no database): a fresh `wharf_bench_<random>` per run, dropped afterwards.
    #[arg(long, env = "WHARF_BENCH_PG", default_value = "postgres://postgres@127.0.0.1:5432")]
    pg: String,
    /// Also measure a SQLite file store.
    #[arg(long)]
    sqlite: bool,
    /// hey's run time per concurrency level, in seconds.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// hey's concurrent connections; one run (fresh database, fresh api) each.
    #[arg(long, value_delimiter = ',', default_values = ["16", "64"])]
    concurrency: Vec<u32>,
    /// Loopback port for `wharf api`.
    #[arg(long, default_value_t = 4187)]
    port: u16,
    /// Also write the table as markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// The small job: README's example email.
const BODY: &str = r#"{"from":"me@example.com","to":["you@example.com"],"subject":"Hi","text":"Hello"}"#;

fn find_wharf(args: &Args) -> Result<PathBuf> {
    if let Some(p) = &args.wharf {
        return Ok(p.clone());
    }
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(Path::new(&dir).join("release/wharf"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/wharf"));
    candidates.into_iter().find(|p| p.is_file()).context(
        "no release `wharf` binary under $CARGO_TARGET_DIR/release or target/release: run `cargo build --release -p wharf` (or pass --wharf)",
    )
}

/// hey's summary: what the table needs.
#[derive(Debug, Default)]
struct Hey {
    rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    /// (status, responses)
    statuses: Vec<(u16, u64)>,
    errors: Vec<String>,
}

fn parse_hey(out: &str) -> Result<Hey> {
    let mut h = Hey::default();
    let mut in_errors = false;
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            h.rps = v.trim().parse().context("Requests/sec")?;
        }
        // `50% in 0.0012 secs`
        for (p, slot) in [("50%", &mut h.p50_ms), ("95%", &mut h.p95_ms), ("99%", &mut h.p99_ms)] {
            if let Some(v) = t.strip_prefix(p).and_then(|r| r.trim().strip_prefix("in ")) {
                let secs: f64 = v.trim_end_matches("secs").trim().parse().with_context(|| format!("{p} latency"))?;
                *slot = secs * 1e3;
            }
        }
        // `[202]	12345 responses`
        if let Some(rest) = t.strip_prefix('[')
            && let Some((code, n)) = rest.split_once(']')
            && let Some(n) = n.trim().strip_suffix("responses")
        {
            h.statuses.push((code.parse()?, n.trim().parse()?));
        }
        if t.starts_with("Error distribution:") {
            in_errors = true;
        } else if in_errors && !t.is_empty() {
            h.errors.push(t.to_string());
        }
    }
    if h.rps == 0.0 {
        bail!("could not read hey's summary:\n{out}");
    }
    Ok(h)
}

struct Measured {
    backend: &'static str,
    concurrency: u32,
    hey: Hey,
    accepted: u64,
    stored: i64,
    load: String,
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn wharf(bin: &Path, db: &str) -> Command {
    let mut c = Command::new(bin);
    c.env("DATABASE_URL", db).env("RUST_LOG", "warn");
    c
}

/// Kills `wharf api` when the run ends, whichever way it ends.
struct Api(Child);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn one(args: &Args, bin: &Path, url: &str, backend: &'static str, concurrency: u32) -> Result<Measured> {
    let out = wharf(bin, url).arg("migrate").output().context("wharf migrate")?;
    if !out.status.success() {
        bail!("wharf migrate failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = wharf(bin, url)
        .args(["keys", "create", "--tenant", "bench", "--scopes", "jobs:write"])
        .output()
        .context("wharf keys create")?;
    if !out.status.success() {
        bail!("wharf keys create failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let key = String::from_utf8(out.stdout)?.trim().to_string();
    let _api = Api(wharf(bin, url)
        .arg("api")
        .env("PORT", args.port.to_string())
        .env("WHARF_HOST", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting wharf api")?);
    let base = format!("http://127.0.0.1:{}", args.port);
    let t = Instant::now();
    loop {
        if ready(args.port) {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("wharf api not ready on {base} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load = uptime();
    let out = Command::new("hey")
        .args(["-z", &format!("{}s", args.secs), "-c", &concurrency.to_string(), "-m", "POST"])
        .args(["-H", &format!("Authorization: Bearer {key}"), "-T", "application/json", "-d", BODY])
        .arg(format!("{base}/v1/emails"))
        .output()
        .context("running hey")?;
    let hey = parse_hey(&String::from_utf8_lossy(&out.stdout))?;
    drop(_api);
    let accepted = hey.statuses.iter().filter(|s| s.0 == 202).map(|s| s.1).sum();
    let stored = count_jobs(url).await?;
    Ok(Measured { backend, concurrency, hey, accepted, stored, load })
}

/// `GET /readyz` answers 200 (a bare blocking HTTP/1.0 probe: no client library for one request).
fn ready(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).split_whitespace().nth(1) == Some("200")
}

async fn count_jobs(url: &str) -> Result<i64> {
    let q = "SELECT count(*) FROM wharf_jobs";
    Ok(if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        let n = sqlx::query_scalar(q).fetch_one(&mut c).await?;
        c.close().await.ok();
        n
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await?;
        let n = sqlx::query_scalar(q).fetch_one(&mut c).await?;
        c.close().await.ok();
        n
    })
}

pub async fn run(args: Args) -> Result<()> {
    let bin = find_wharf(&args)?;
    if Command::new("hey").arg("-h").output().is_err() {
        bail!("`hey` is not installed: apt-get install hey");
    }
    let mut results = Vec::new();
    for &c in &args.concurrency {
        eprintln!("== HTTP wharf-postgres, hey -c {c} for {} s", args.secs);
        let db = TempPg::create(&args.pg).await?;
        let r = one(&args, &bin, &db.url, "wharf-postgres", c).await;
        db.drop_db().await.context("cleaning up")?;
        results.push(r?);
        if args.sqlite {
            eprintln!("== HTTP wharf-sqlite, hey -c {c} for {} s", args.secs);
            let file = TempSqlite::new();
            let r = one(&args, &bin, &format!("{}?mode=rwc", file.url), "wharf-sqlite", c).await;
            file.remove();
            results.push(r?);
        }
    }

    let header = ["backend", "hey -c", "req/s", "p50 ms", "p95 ms", "p99 ms", "202s", "stored jobs", "other", "load"];
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|m| {
            let other: Vec<String> = m
                .hey
                .statuses
                .iter()
                .filter(|s| s.0 != 202)
                .map(|s| format!("{}×{}", s.1, s.0))
                .chain(m.hey.errors.iter().cloned())
                .collect();
            vec![
                m.backend.to_string(),
                m.concurrency.to_string(),
                format!("{:.0}", m.hey.rps),
                format!("{:.2}", m.hey.p50_ms),
                format!("{:.2}", m.hey.p95_ms),
                format!("{:.2}", m.hey.p99_ms),
                m.accepted.to_string(),
                m.stored.to_string(),
                if other.is_empty() { "none".into() } else { other.join("; ") },
                m.load.clone(),
            ]
        })
        .collect();
    println!(
        "HTTP: POST /v1/emails ({} bytes) through `wharf api` ({}), hey for {} s per run, no worker; load = 1/5/15-min load average at hey's start\n",
        BODY.len(),
        bin.display(),
        args.secs
    );
    let mut md = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    println!("{}", header.join("  "));
    for r in &rows {
        println!("{}", r.join("  "));
        md.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    if let Some(p) = &args.markdown {
        std::fs::write(p, md)?;
    }
    let bad: Vec<String> = results
        .iter()
        .filter(|m| m.stored != m.accepted as i64)
        .map(|m| format!("{} -c {}: {} accepted, {} stored", m.backend, m.concurrency, m.accepted, m.stored))
        .collect();
    if !bad.is_empty() {
        bail!("accepted jobs missing from the store (or extra ones): {}", bad.join(", "));
    }
    Ok(())
}
