//! Test support: real databases (a fresh PostgreSQL database or SQLite file per test), the real
//! `wharf` binary as child processes, a real aiosmtpd, and HTTP against the real API.

#![allow(dead_code)]

pub mod email;
pub mod embeddings;
pub mod webhooks;

use std::{
    future::Future,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use wharf_jobs::{
    Store, StoreConfig,
    keys::{NewApiKey, Scope},
    open_store,
};

pub mod objects;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A scratch directory plus a database of the chosen backend.
pub struct TestEnv {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pub store: Arc<dyn Store>,
}

impl TestEnv {
    pub async fn new(backend: Backend) -> TestEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}/wharf.db", dir.path().display()),
            Backend::Postgres => {
                let name = format!("wharf_t_{}", uuid::Uuid::new_v4().simple());
                let admin = sqlx::PgPool::connect(&format!("{PG_ADMIN_URL}?sslmode=disable"))
                    .await
                    .expect("PostgreSQL on 127.0.0.1:5432 (start it: see README)");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .expect("create database");
                admin.close().await;
                format!("postgres://postgres@127.0.0.1:5432/{name}")
            }
        };
        let store = open_store(&StoreConfig::new(&database_url)).await.expect("open store");
        store.migrate().await.expect("migrate");
        TestEnv { backend, dir, database_url, store }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fresh API key for `tenant` with `scopes`.
    pub async fn key(&self, tenant: &str, scopes: &[Scope]) -> String {
        let k = NewApiKey::generate();
        self.store.create_api_key(tenant, scopes, &k).await.expect("create key");
        k.secret
    }

    /// Environment every wharf child process gets.
    pub fn base_env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.database_url.clone()),
            ("WHARF_DATA_DIR".into(), self.dir.path().display().to_string()),
            ("RUST_LOG".into(), "info,sqlx=warn".into()),
            // Workers and schedulers of parallel tests would all want the default 9090.
            ("METRICS_PORT".into(), "0".into()),
        ]
    }

    pub fn spawn(&self, args: &[&str], extra_env: &[(&str, &str)]) -> WharfProcess {
        let mut env = self.base_env();
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        WharfProcess::spawn(args, &env, self.dir.path())
    }

    pub async fn job(&self, tenant: &str, id: &str) -> wharf_jobs::JobRecord {
        self.store.job(tenant, id.parse().expect("job id")).await.expect("store").expect("job exists")
    }
}

/// A `wharf` child process, killed when dropped; its stderr is kept in a log file.
pub struct WharfProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl WharfProcess {
    pub fn spawn(args: &[&str], env: &[(String, String)], dir: &Path) -> WharfProcess {
        let log = dir.join(format!("wharf-{}-{}.log", args.join("_").replace(['/', ','], "-"), free_port()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn wharf");
        WharfProcess { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Waits (up to 60 s) and tells whether it exited successfully; prints its log if not.
    pub async fn wait_exit_ok(mut self) -> bool {
        let ok = self.wait_exit(Duration::from_secs(60)).await.is_some_and(|s| s.success());
        if !ok {
            eprintln!("--- wharf log ---\n{}", self.logs());
        }
        ok
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WharfProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until something listens on `port`.
pub async fn wait_port(port: u16, timeout: Duration) {
    eventually(timeout, &format!("port {port} to accept connections"), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await
}

/// The API of a running `wharf api`/`serve`.
pub struct ApiClient {
    pub base: String,
    pub http: reqwest::Client,
}

impl ApiClient {
    pub fn new(port: u16) -> ApiClient {
        ApiClient { base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() }
    }

    pub async fn post(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let r =
            self.http.post(format!("{}{}", self.base, path)).bearer_auth(key).json(body).send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_with(&self, key: &str, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{}", self.base, path)).bearer_auth(key).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{}", self.base, path)).bearer_auth(key).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, key: &str, path: &str) -> u16 {
        self.http
            .delete(format!("{}{}", self.base, path))
            .bearer_auth(key)
            .send()
            .await
            .expect("DELETE")
            .status()
            .as_u16()
    }

    /// Polls `GET /v1/jobs/{id}` until the job reaches `state`.
    pub async fn wait_state(&self, key: &str, id: &str, state: &str, timeout: Duration) -> Value {
        eventually(timeout, &format!("job {id} to be {state}"), || async {
            let (s, body) = self.get(key, &format!("/v1/jobs/{id}")).await;
            (s == 200 && body["state"] == state).then_some(body)
        })
        .await
    }
}

pub fn email_body(to: &str, subject: &str) -> Value {
    json!({
        "from": "Wharf Tests <sender@example.com>",
        "to": [to],
        "subject": subject,
        "text": format!("text body of {subject}"),
        "html": format!("<p>html body of {subject}</p>"),
    })
}

/// The Python with the test tools (`scripts/test-tools.sh` prints it).
pub fn python() -> String {
    std::env::var("WHARF_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A real aiosmtpd writing to a Maildir.
pub struct SmtpSink {
    pub port: u16,
    pub maildir: PathBuf,
    child: Option<Child>,
}

impl SmtpSink {
    pub async fn start(maildir: PathBuf) -> SmtpSink {
        Self::start_on(free_port(), maildir).await
    }

    pub async fn start_on(port: u16, maildir: PathBuf) -> SmtpSink {
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .args(["-l", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting aiosmtpd with {} failed ({e}); run scripts/test-tools.sh", python()));
        let mut sink = SmtpSink { port, maildir, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(Ok(Some(status))) = sink.child.as_mut().map(|c| c.try_wait()) {
                panic!("aiosmtpd exited ({status}); is it installed for {}? run scripts/test-tools.sh", python());
            }
            assert!(Instant::now() < deadline, "aiosmtpd did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sink
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Raw messages delivered so far.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in rd.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `.eml` files in an outbox directory.
pub fn outbox_messages(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

pub fn admin_scopes() -> Vec<Scope> {
    vec![Scope::Admin]
}

/// Generates `<name>::postgres` and `<name>::sqlite` tests from `async fn <name>(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
            }
        )*
    };
}

/// Enqueues a diagnostic job for `tenant` straight into the store; returns its id.
pub async fn enqueue_diagnostic(
    store: &dyn Store,
    tenant: &str,
    job: wharf_jobs::kinds::diagnostic::DiagnosticJob,
) -> String {
    use wharf_jobs::kinds::JobKind;
    let new = job.into_job(tenant);
    let id = new.id.to_string();
    store.enqueue(new, None).await.expect("enqueue");
    id
}
