//! Resend (`POST {RESEND_ENDPOINT}/emails`, `Authorization: Bearer`). Every attempt of an
//! email carries the same `Idempotency-Key` (`wharf-{identity}`), so a retry after a lost
//! answer is answered by Resend with the first send instead of a second email (within
//! Resend's 24 h key window; past it the send ledger still prevents a re-send).

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::{
    Accepted, Outgoing, SendError,
    config::ResendConfig,
    http::{self, excerpt},
};

pub(super) struct ResendProvider {
    cfg: ResendConfig,
    client: reqwest::Client,
    timeout: Duration,
}

/// The `Idempotency-Key` of an email: the same for every attempt and replay of it.
pub fn idempotency_key(out: &Outgoing) -> String {
    format!("wharf-{}", out.identity)
}

impl ResendProvider {
    pub(super) fn new(cfg: &ResendConfig, timeout: Duration) -> Self {
        ResendProvider { cfg: cfg.clone(), client: http::client(timeout), timeout }
    }

    fn request(out: &Outgoing) -> Result<Value, SendError> {
        let body = out.body()?;
        let e = &out.email;
        let mut req = json!({
            "from": out.mailbox(&e.from),
            "to": e.to.iter().map(|m| out.mailbox(m)).collect::<Vec<_>>(),
            "subject": body.subject,
            "headers": { super::message::JOB_ID_HEADER: out.job_id.to_string() },
        });
        let obj = req.as_object_mut().expect("an object");
        if !e.cc.is_empty() {
            obj.insert("cc".into(), e.cc.iter().map(|m| out.mailbox(m)).collect());
        }
        if !e.bcc.is_empty() {
            obj.insert("bcc".into(), e.bcc.iter().map(|m| out.mailbox(m)).collect());
        }
        if let Some(r) = &e.reply_to {
            obj.insert("reply_to".into(), json!([out.mailbox(r)]));
        }
        if let Some(t) = &body.text {
            obj.insert("text".into(), t.clone().into());
        }
        if let Some(h) = &body.html {
            obj.insert("html".into(), h.clone().into());
        }
        if !out.attachments.is_empty() {
            let list: Vec<Value> = out
                .attachments
                .iter()
                .map(|a| {
                    json!({
                        "filename": a.filename,
                        "content": base64::engine::general_purpose::STANDARD.encode(&a.bytes),
                        "content_type": a.content_type,
                    })
                })
                .collect();
            obj.insert("attachments".into(), list.into());
        }
        if !e.tags.is_empty() {
            obj.insert("tags".into(), e.tags.iter().map(|(k, v)| json!({"name": k, "value": v})).collect());
        }
        Ok(req)
    }

    pub(super) async fn send(&self, out: &Outgoing) -> Result<Accepted, SendError> {
        let req = Self::request(out)?;
        let url = format!("{}/emails", self.cfg.endpoint);
        let resp = self
            .client
            .post(&url)
            .bearer_auth(&self.cfg.api_key.0)
            .header("Idempotency-Key", idempotency_key(out))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&req).expect("JSON serializes"))
            .send()
            .await
            .map_err(|e| http::network_error("resend", &url, &e, self.timeout))?;
        let status = resp.status().as_u16();
        let retry_after = http::retry_after(resp.headers());
        let text = resp.text().await.map_err(|e| http::network_error("resend", &url, &e, self.timeout))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            let Some(id) = body.get("id").and_then(Value::as_str) else {
                // Sent, probably, but unrecognisable: a retry carries the same key.
                return Err(SendError::Transient {
                    message: format!("resend answered {status} without an id: {}", excerpt(&text, 300)),
                    retry_after: None,
                });
            };
            let mut details = serde_json::Map::new();
            details.insert("idempotency_key".into(), idempotency_key(out).into());
            return Ok(Accepted { message_id: id.to_string(), details });
        }
        let name = body.get("name").and_then(Value::as_str).unwrap_or("");
        let message = body.get("message").and_then(Value::as_str).map(str::to_string);
        let detail = match (&message, name) {
            (Some(m), "") => m.clone(),
            (Some(m), n) => format!("{n}: {m}"),
            (None, _) => excerpt(&text, 300),
        };
        // 409: the same key is still being processed (retry) or was used for another body.
        if status == 409 && name != "invalid_idempotent_request" {
            return Err(SendError::Transient { message: format!("resend answered 409: {detail}"), retry_after });
        }
        Err(http::classify_status("resend", status, retry_after, detail, "RESEND_API_KEY"))
    }
}
