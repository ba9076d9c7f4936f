//! Local stand-ins for the HTTP email providers, in Rust (no dependency beyond tokio and
//! serde_json, so both the integration tests and `workers/tests` include this file):
//!
//! - Resend: `POST /emails`, `Authorization: Bearer <key>`, JSON `from`, `to` (array), `subject`,
//!   `text`/`html`, optional `cc`, `bcc`, `reply_to`, `headers`, `attachments[{filename, content
//!   (base64), content_type}]`, `tags[{name, value}]`, and an `Idempotency-Key` header; answers
//!   `200 {"id"}`, and for a repeated key with the same body the first answer again (no second
//!   email), as Resend documents. Errors have Resend's shape: `{"statusCode", "name", "message"}`.
//! - Postmark: `POST /email` (`From`, `To`, `Subject`, `TextBody`/`HtmlBody`, …) and
//!   `POST /email/withTemplate` (`TemplateAlias`/`TemplateId`, `TemplateModel`, …) with
//!   `X-Postmark-Server-Token` and `Accept: application/json`; answers `200 {"To", "SubmittedAt",
//!   "MessageID", "ErrorCode": 0, "Message": "OK"}`; errors `{"ErrorCode", "Message"}` — 406 for a
//!   recipient in its inactive list, 300 for an invalid request.
//! - SES v2 (`POST /v2/email/outbound-emails`), only to read what the SDK sends (templates,
//!   which moto_server does not implement for SES v2).
//!
//! A request that breaks the documented contract is answered 422 and listed in `violations()`.
//! `script()` queues answers (`Reply::Status(500)`, …) before the default success.

#![allow(dead_code)]

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Resend,
    Postmark,
    Ses,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The documented error answer for this status (422, 429 with `Retry-After: 1`, 500).
    Status(u16),
    /// Anything: status, extra headers, body.
    Raw(u16, Vec<(String, String)>, String),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
    pub body: Value,
    /// The status it was answered with.
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    always: Option<Reply>,
    requests: Vec<Recorded>,
    violations: Vec<String>,
    /// Resend: key → (body, answer) of the first request with that key.
    idempotent: HashMap<String, (Value, String)>,
    /// Emails accepted for the first time (an idempotent repeat is not a new email).
    sent: Vec<Value>,
    inactive: HashSet<String>,
    next_id: u64,
}

/// A running stand-in.
#[derive(Clone)]
pub struct FakeProvider {
    pub kind: Kind,
    pub port: u16,
    /// The expected credential (Resend API key, Postmark server token).
    pub secret: String,
    state: Arc<Mutex<State>>,
}

impl FakeProvider {
    pub async fn start(kind: Kind, secret: &str) -> FakeProvider {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let fake =
            FakeProvider { kind, port, secret: secret.to_string(), state: Arc::new(Mutex::new(State::default())) };
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move { f.serve(conn).await });
            }
        });
        fake
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers the next requests with these, in order, then succeeds again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// Answers every request with this (None: back to normal).
    pub fn always(&self, reply: Option<Reply>) {
        self.lock().always = reply;
    }

    /// Postmark: recipients that are "inactive" (406).
    pub fn inactive(&self, address: &str) {
        self.lock().inactive.insert(address.to_ascii_lowercase());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Emails accepted as new (not idempotent repeats), as sent.
    pub fn sent(&self) -> Vec<Value> {
        self.lock().sent.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    async fn serve(&self, conn: tokio::net::TcpStream) {
        let (r, mut w) = conn.into_split();
        let mut r = BufReader::new(r);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((n, v)) = h.split_once(':') {
                    headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut raw = vec![0u8; len];
            if r.read_exact(&mut raw).await.is_err() {
                return;
            }
            let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            let (status, extra, text) = self.answer(&method, &path, &headers, &body);
            let reason = match status {
                200 => "OK",
                401 => "Unauthorized",
                404 => "Not Found",
                409 => "Conflict",
                422 => "Unprocessable Entity",
                429 => "Too Many Requests",
                500 => "Internal Server Error",
                _ => "Status",
            };
            let mut head = format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                text.len()
            );
            for (k, v) in extra {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            if w.write_all(head.as_bytes()).await.is_err() || w.write_all(text.as_bytes()).await.is_err() {
                return;
            }
            self.lock().requests.push(Recorded { method, path, headers, body, status });
        }
    }

    fn error(&self, status: u16, message: &str) -> (u16, Vec<(String, String)>, String) {
        let retry = if status == 429 { vec![("retry-after".to_string(), "1".to_string())] } else { vec![] };
        let body = match self.kind {
            Kind::Resend => {
                let name = match status {
                    401 => "missing_api_key",
                    403 => "invalid_api_key",
                    422 => "validation_error",
                    429 => "rate_limit_exceeded",
                    _ => "internal_server_error",
                };
                json!({"statusCode": status, "name": name, "message": message})
            }
            Kind::Postmark => {
                let code = match status {
                    401 => 10,
                    422 => 300,
                    _ => 0,
                };
                json!({"ErrorCode": code, "Message": message})
            }
            Kind::Ses => json!({"message": message}),
        };
        (status, retry, body.to_string())
    }

    fn documented(&self, status: u16) -> (u16, Vec<(String, String)>, String) {
        let message = match (self.kind, status) {
            (Kind::Resend, 422) => {
                "Invalid `to` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format."
            }
            (Kind::Resend, 429) => {
                "Too many requests. You can only make 2 requests per second. See rate limit response headers for more information."
            }
            (Kind::Postmark, 422) => "Invalid email request",
            (Kind::Postmark, 429) => "Rate limit exceeded",
            (_, 500) => "An unexpected error occurred.",
            _ => "error",
        };
        self.error(status, message)
    }

    fn violation(&self, what: String) -> (u16, Vec<(String, String)>, String) {
        self.lock().violations.push(what.clone());
        self.error(if what.contains("credential") { 401 } else { 422 }, &what)
    }

    fn answer(
        &self,
        method: &str,
        path: &str,
        h: &HashMap<String, String>,
        body: &Value,
    ) -> (u16, Vec<(String, String)>, String) {
        if let Some(problem) = self.check(method, path, h, body) {
            return self.violation(problem);
        }
        let scripted = {
            let mut s = self.lock();
            s.script.pop_front().or_else(|| s.always.clone())
        };
        match scripted {
            Some(Reply::Status(st)) => return self.documented(st),
            Some(Reply::Raw(st, headers, text)) => return (st, headers, text),
            None => {}
        }
        let mut s = self.lock();
        let id = format!("00000000-0000-4000-8000-{:012}", s.next_id + 1);
        match self.kind {
            Kind::Resend => {
                let key = h.get("idempotency-key").cloned().unwrap_or_default();
                if let Some((first_body, first_answer)) = s.idempotent.get(&key) {
                    return if first_body == body {
                        (200, vec![], first_answer.clone())
                    } else {
                        let e = json!({"statusCode": 409, "name": "invalid_idempotent_request",
                            "message": "Same idempotency key used with a different request payload. Change your idempotency key or payload."});
                        (409, vec![], e.to_string())
                    };
                }
                s.next_id += 1;
                let answer = json!({"id": id}).to_string();
                s.idempotent.insert(key, (body.clone(), answer.clone()));
                s.sent.push(body.clone());
                (200, vec![], answer)
            }
            Kind::Postmark => {
                let to = body["To"].as_str().unwrap_or("").to_string();
                let inactive: Vec<String> = to
                    .split(',')
                    .map(|a| {
                        let a = a.trim();
                        a.rsplit_once('<').map(|(_, r)| r.trim_end_matches('>')).unwrap_or(a).to_ascii_lowercase()
                    })
                    .filter(|a| s.inactive.contains(a))
                    .collect();
                if !inactive.is_empty() {
                    let m = format!(
                        "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: {}. \
                         Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression.",
                        inactive.join(", ")
                    );
                    return (422, vec![], json!({"ErrorCode": 406, "Message": m}).to_string());
                }
                s.next_id += 1;
                s.sent.push(body.clone());
                let answer = json!({"To": to, "SubmittedAt": "2026-11-25T12:00:00.0000000-05:00", "MessageID": id,
                    "ErrorCode": 0, "Message": "OK"});
                (200, vec![], answer.to_string())
            }
            Kind::Ses => {
                s.next_id += 1;
                s.sent.push(body.clone());
                (200, vec![], json!({"MessageId": format!("ses-{id}")}).to_string())
            }
        }
    }

    /// The documented request contract; `Some(problem)` if it is broken.
    fn check(&self, method: &str, path: &str, h: &HashMap<String, String>, b: &Value) -> Option<String> {
        if method != "POST" {
            return Some(format!("method {method} (POST expected)"));
        }
        let json_ct = h.get("content-type").is_some_and(|c| c.starts_with("application/json"));
        if !json_ct && self.kind != Kind::Ses {
            return Some("content-type is not application/json".into());
        }
        let string = |v: &Value, f: &str| v.get(f).is_some_and(Value::is_string);
        match self.kind {
            Kind::Resend => {
                if path != "/emails" {
                    return Some(format!("path {path} (/emails expected)"));
                }
                if h.get("authorization") != Some(&format!("Bearer {}", self.secret)) {
                    return Some("credential: Authorization is not `Bearer <RESEND_API_KEY>`".into());
                }
                match h.get("idempotency-key") {
                    None => return Some("no Idempotency-Key header".into()),
                    Some(k) if k.is_empty() || k.len() > 256 => {
                        return Some("Idempotency-Key must be 1–256 characters".into());
                    }
                    _ => {}
                }
                if !string(b, "from") || !string(b, "subject") {
                    return Some("`from` and `subject` are required strings".into());
                }
                let to = b.get("to").and_then(Value::as_array);
                if !to.is_some_and(|t| !t.is_empty() && t.len() <= 50 && t.iter().all(Value::is_string)) {
                    return Some("`to` must be an array of 1–50 addresses".into());
                }
                if !string(b, "text") && !string(b, "html") {
                    return Some("give `text` or `html`".into());
                }
                for a in b.get("attachments").and_then(Value::as_array).into_iter().flatten() {
                    if !string(a, "filename") || !string(a, "content") {
                        return Some("attachments need `filename` and base64 `content`".into());
                    }
                }
                for t in b.get("tags").and_then(Value::as_array).into_iter().flatten() {
                    if !string(t, "name") || !string(t, "value") {
                        return Some("tags are {name, value}".into());
                    }
                }
            }
            Kind::Postmark => {
                if h.get("x-postmark-server-token") != Some(&self.secret) {
                    return Some("credential: X-Postmark-Server-Token is wrong".into());
                }
                if !h.get("accept").is_some_and(|a| a.contains("application/json")) {
                    return Some("Accept must be application/json".into());
                }
                if !string(b, "From") || !string(b, "To") {
                    return Some("`From` and `To` are required".into());
                }
                match path {
                    "/email" => {
                        if !string(b, "Subject") || !(string(b, "TextBody") || string(b, "HtmlBody")) {
                            return Some("/email needs `Subject` and `TextBody` or `HtmlBody`".into());
                        }
                    }
                    "/email/withTemplate" => {
                        if !(string(b, "TemplateAlias") || b.get("TemplateId").is_some_and(Value::is_number)) {
                            return Some("/email/withTemplate needs `TemplateAlias` or `TemplateId`".into());
                        }
                        if !b.get("TemplateModel").is_some_and(Value::is_object) {
                            return Some("`TemplateModel` must be an object".into());
                        }
                    }
                    p => return Some(format!("path {p} (/email or /email/withTemplate expected)")),
                }
                for a in b.get("Attachments").and_then(Value::as_array).into_iter().flatten() {
                    if !string(a, "Name") || !string(a, "Content") || !string(a, "ContentType") {
                        return Some("Attachments need `Name`, `Content`, `ContentType`".into());
                    }
                }
            }
            Kind::Ses => {
                if path != "/v2/email/outbound-emails" {
                    return Some(format!("path {path}"));
                }
                if !h.get("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 ")) {
                    return Some("credential: no SigV4 Authorization".into());
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// moto_server (SES v2 and S3 on one port) and a private CA for the STARTTLS sink.

/// `moto_server` beside `$WHARF_PYTHON` (scripts/test-tools.sh installs it), else on PATH.
pub fn moto_server_bin() -> std::path::PathBuf {
    let py = std::env::var("WHARF_PYTHON").unwrap_or_default();
    match std::path::Path::new(&py).parent() {
        Some(bin) if bin.join("moto_server").exists() => bin.join("moto_server"),
        _ => "moto_server".into(),
    }
}

/// A moto_server process, killed on drop. It does not check signatures; SES v2 requests are
/// routed by the `ses` service in a SigV4-looking `Authorization` header.
pub struct Moto {
    pub port: u16,
    child: std::process::Child,
}

const MOTO_AUTH: &str =
    "AWS4-HMAC-SHA256 Credential=testing/20261125/us-east-1/ses/aws4_request, SignedHeaders=host, Signature=0";

impl Moto {
    pub async fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(moto_server_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {} failed ({e}); run scripts/test-tools.sh", moto_server_bin().display())
            });
        let mut moto = Moto { port, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited ({status}); run scripts/test-tools.sh");
            }
            assert!(std::time::Instant::now() < deadline, "moto_server did not start on {port}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SES v2 `CreateEmailIdentity`: moto refuses mail from unverified senders.
    pub async fn verify_sender(&self, address: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/v2/email/identities", self.endpoint()))
            .header("Authorization", MOTO_AUTH)
            .header("Content-Type", "application/json")
            .body(json!({"EmailIdentity": address}).to_string())
            .send()
            .await
            .expect("CreateEmailIdentity");
        assert!(r.status().is_success(), "CreateEmailIdentity: {}", r.status());
    }

    /// S3: creates `bucket` (path style).
    pub async fn create_bucket(&self, bucket: &str) {
        let r =
            reqwest::Client::new().put(format!("{}/{bucket}", self.endpoint())).send().await.expect("create bucket");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    pub async fn put_object(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}/{key}", self.endpoint()))
            .body(bytes)
            .send()
            .await
            .expect("put object");
        assert!(r.status().is_success(), "put object: {}", r.status());
    }

    /// `ses` of `/moto-api/data.json`: `Message` (simple), `RawMessage`, `EmailIdentity`, ….
    pub async fn ses_data(&self) -> Value {
        let r = reqwest::Client::new()
            .get(format!("{}/moto-api/data.json", self.endpoint()))
            .send()
            .await
            .expect("data.json");
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).expect("JSON");
        v["ses"].clone()
    }

    /// Simple and raw messages SES accepted.
    pub async fn ses_messages(&self) -> Vec<Value> {
        let ses = self.ses_data().await;
        let mut out: Vec<Value> = ses["Message"].as_array().cloned().unwrap_or_default();
        out.extend(ses["RawMessage"].as_array().cloned().unwrap_or_default());
        out
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private CA and a certificate for 127.0.0.1 signed by it (with `openssl`), in `dir`.
/// Returns (ca.pem, server cert, server key).
pub fn test_pki(dir: &std::path::Path) -> (String, String, String) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ca, ca_key, cert, key, csr, ext) =
        (p("ca.pem"), p("ca.key"), p("server.pem"), p("server.key"), p("server.csr"), p("server.ext"));
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=wharf test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca, cert, key)
}
