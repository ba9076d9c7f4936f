//! The local receiver: a bare hyper HTTP/1.1 server on 127.0.0.1 with its own single-threaded
//! tokio runtime on its own OS thread, so its CPU can be read apart from the worker's. It
//! answers every POST with 200 and an empty body, verifies each delivery's Standard Webhooks
//! signature with the endpoint's secret (the endpoint is the path, `/hooks/{index}`), and
//! records what arrived; the run checks the records afterwards.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::sync::oneshot;

/// Standard Webhooks' default tolerance between `webhook-timestamp` and the receiver's clock.
pub const TOLERANCE_SECS: i64 = 300;

/// One request as it arrived.
pub struct Receipt {
    /// The endpoint index from the path; `None` if the path named none.
    pub endpoint: Option<usize>,
    /// `webhook-id`.
    pub id: String,
    /// `data.seq` of the body, to match the body to its event.
    pub seq: Option<u64>,
    /// `type` of the body.
    pub event_type: Option<String>,
    /// `Err(why)` when the delivery would be rejected by a Standard Webhooks receiver.
    pub verdict: Result<(), &'static str>,
    pub at: Instant,
    /// Time spent inside the service function: reading the body, verifying, recording.
    pub took: Duration,
}

struct State {
    /// HMAC keys (the decoded part of `whsec_…`), by endpoint index.
    keys: Vec<Vec<u8>>,
    receipts: Mutex<Vec<Receipt>>,
}

pub struct Receiver {
    pub port: u16,
    /// The receiver thread's id, to read its CPU time from `/proc/self/task/{tid}/stat`.
    tid: Option<u32>,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Binds 127.0.0.1 on a free port and starts serving on a new thread.
    pub fn start(keys: Vec<Vec<u8>>, capacity: usize) -> Result<Receiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the receiver")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State { keys, receipts: Mutex::new(Vec::with_capacity(capacity)) });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("webhook-receiver".into())
            .spawn(move || {
                let _ = tid_tx.send(current_tid());
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread tokio runtime builds");
                rt.block_on(serve(listener, served, stop_rx));
            })
            .context("starting the receiver thread")?;
        let tid = tid_rx.recv().ok().flatten();
        Ok(Receiver { port, tid, state, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// CPU seconds the receiver thread has used (user + system), if Linux `/proc` tells.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{}/stat", self.tid?)).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
    }

    /// Stops serving (open connections are dropped) and hands back everything received.
    pub fn stop(mut self) -> Vec<Receipt> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.state.receipts.lock().expect("receipts lock"))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// `/proc/thread-self` links to `{pid}/task/{tid}`.
fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

async fn serve(listener: std::net::TcpListener, state: Arc<State>, mut stop: oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a non-blocking listener registers");
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| receive(state.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        }
    }
}

async fn receive(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let endpoint = req.uri().path().strip_prefix("/hooks/").and_then(|s| s.parse::<usize>().ok());
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (id, ts, sig) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let verdict = match (&body, endpoint.and_then(|i| state.keys.get(i)), &id, &ts, &sig) {
        (Err(_), ..) => Err("the body could not be read"),
        (_, None, ..) => Err("the path names no endpoint"),
        (_, _, None, ..) | (_, _, _, None, _) | (_, _, _, _, None) => Err("a webhook-* header is missing"),
        (Ok(body), Some(key), Some(id), Some(ts), Some(sig)) => verify(key, id, ts, body, sig, now),
    };
    let envelope: Option<serde_json::Value> = body.as_ref().ok().and_then(|b| serde_json::from_slice(b).ok());
    let seq = envelope.as_ref().and_then(|e| e.pointer("/data/seq")).and_then(|s| s.as_u64());
    let event_type = envelope.as_ref().and_then(|e| e.get("type")).and_then(|t| t.as_str()).map(str::to_string);
    let receipt = Receipt { endpoint, id: id.unwrap_or_default(), seq, event_type, verdict, at, took: Duration::ZERO };
    let mut receipts = state.receipts.lock().expect("receipts lock");
    receipts.push(Receipt { took: at.elapsed(), ..receipt });
    drop(receipts);
    // Always 200: a rejection would be retried 5 s later and blur the drain; bad deliveries are
    // counted and fail the run instead.
    Ok(Response::new(Full::new(Bytes::new())))
}

/// The Standard Webhooks check: the timestamp within the tolerance, and one of the
/// space-separated `v1,<base64>` signatures equal to HMAC-SHA256(key, "{id}.{ts}.{body}").
pub fn verify(key: &[u8], id: &str, ts: &str, body: &[u8], header: &str, now: i64) -> Result<(), &'static str> {
    let t: i64 = ts.parse().map_err(|_| "webhook-timestamp is not Unix seconds")?;
    if (now - t).abs() > TOLERANCE_SECS {
        return Err("webhook-timestamp is outside the 5-minute tolerance");
    }
    for part in header.split(' ') {
        let Some(sig) = part.strip_prefix("v1,").and_then(|b| STANDARD.decode(b).ok()) else { continue };
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err("no v1 signature matches")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries, checked independently of
    /// wharf's signer.
    #[test]
    fn verifies_the_reference_vector() {
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let (id, ts, body) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", br#"{"test": 2432232314}"#);
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(verify(&key, id, ts, body, sig, 1614265330), Ok(()));
        assert_eq!(verify(&key, id, ts, body, &format!("v1,AAAA {sig}"), 1614265330), Ok(()), "rotation list");
        assert!(verify(&key, id, ts, br#"{"test": 2432232315}"#, sig, 1614265330).is_err(), "body changed");
        assert!(verify(&key, "msg_other", ts, body, sig, 1614265330).is_err(), "id changed");
        assert!(verify(&key, id, ts, body, sig, 1614265330 + 301).is_err(), "stale");
        assert!(verify(&key, id, ts, body, "v2,whatever", 1614265330).is_err());
    }
}
