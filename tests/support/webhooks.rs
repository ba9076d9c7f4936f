//! Webhook test support: a scripted HTTP receiver on 127.0.0.1 (plain tokio, HTTP/1.1) and an
//! independent implementation of Standard Webhooks verification, written from the spec with
//! SHA-256 alone (HMAC per RFC 2104), never calling wharf's signer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::ApiClient;

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// What the receiver answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: vec![], body: format!("status {status}") }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Received>,
    /// Replies per path, used in order; the last one repeats. Unscripted paths answer 200.
    scripts: HashMap<String, Vec<Reply>>,
}

pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone()));
            }
        });
        Receiver { port, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.state.lock().unwrap().scripts.insert(path.to_string(), replies);
    }

    pub fn requests(&self, path: &str) -> Vec<Received> {
        self.state.lock().unwrap().requests.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Waits until `path` got at least `n` requests; returns them.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        super::eventually(timeout, &format!("{n} requests at {path}"), || async {
            let got = self.requests(path);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("/").to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let reply = {
        let mut st = state.lock().unwrap();
        st.requests.push(Received { path: path.clone(), headers, body, at: Instant::now() });
        match st.scripts.get_mut(&path) {
            Some(list) if list.len() > 1 => list.remove(0),
            Some(list) if !list.is_empty() => list[0].clone(),
            _ => Reply::status(200),
        }
    };
    let mut out =
        format!("HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n", reply.status, reply.body.len());
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let _ = conn.write_all(out.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// HMAC-SHA256 per RFC 2104.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(&opad).chain_update(inner).finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Verifies a delivery per Standard Webhooks 1.0 against each secret: the signed content is
/// `{webhook-id}.{webhook-timestamp}.{body}`, the key the base64 after `whsec_`, the header a
/// space-separated list of `v1,<base64>`; the timestamp must be within 5 minutes of now.
/// Returns, for each secret, whether one of the signatures was made with it.
pub fn verify(secrets: &[&str], r: &Received) -> Result<Vec<bool>, String> {
    let id = r.header("webhook-id");
    let ts = r.header("webhook-timestamp");
    let sigs = r.header("webhook-signature");
    if id.is_empty() || ts.is_empty() || sigs.is_empty() {
        return Err(format!("missing webhook headers: {:?}", r.headers));
    }
    let ts_num: i64 = ts.parse().map_err(|_| format!("timestamp `{ts}` is not Unix seconds"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - ts_num).abs() > 300 {
        return Err(format!("timestamp {ts_num} is more than 5 minutes from now ({now})"));
    }
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let mut found = Vec::new();
    for secret in secrets {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").ok_or("secret without whsec_")?)
            .map_err(|e| e.to_string())?;
        let expected = hmac_sha256(&key, &signed);
        let ok = sigs.split(' ').any(|s| match s.split_once(',') {
            Some(("v1", b64)) => STANDARD.decode(b64).is_ok_and(|sig| constant_time_eq(&sig, &expected)),
            _ => false,
        });
        found.push(ok);
    }
    Ok(found)
}

/// Verifies with one secret; panics with the reason if it does not verify.
pub fn assert_signed(secret: &str, r: &Received) {
    match verify(&[secret], r) {
        Ok(v) if v == [true] => {}
        other => panic!("delivery to {} does not verify: {other:?}; headers {:?}", r.path, r.headers),
    }
}

/// A fresh `WHARF_ENCRYPTION_KEY`.
pub fn encryption_key() -> String {
    let mut bytes = uuid::Uuid::new_v4().into_bytes().to_vec();
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    STANDARD.encode(bytes)
}

pub async fn patch(api: &ApiClient, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = api.http.patch(format!("{}{}", api.base, path)).bearer_auth(key).json(body).send().await.expect("PATCH");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
