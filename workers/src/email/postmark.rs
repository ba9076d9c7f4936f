//! Postmark (`POST {POSTMARK_ENDPOINT}/email` or `/email/withTemplate`,
//! `X-Postmark-Server-Token`). An error answer carries `ErrorCode`: 406 means a recipient is
//! inactive (hard bounce, complaint, manual suppression at Postmark); wharf adds the addresses
//! to the tenant's suppression list and the job ends `suppressed`.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::{
    Accepted, Outgoing, SendError,
    config::PostmarkConfig,
    http::{self, excerpt},
};

/// Postmark's `ErrorCode` for "recipient marked as inactive".
pub const INACTIVE_RECIPIENT: i64 = 406;

pub(super) struct PostmarkProvider {
    cfg: PostmarkConfig,
    client: reqwest::Client,
    timeout: Duration,
}

impl PostmarkProvider {
    pub(super) fn new(cfg: &PostmarkConfig, timeout: Duration) -> Self {
        PostmarkProvider { cfg: cfg.clone(), client: http::client(timeout), timeout }
    }

    /// The path and the JSON body: the Postmark template when the request names one, else
    /// the body (given, or rendered from wharf's template).
    fn request(&self, out: &Outgoing) -> Result<(&'static str, Value), SendError> {
        let e = &out.email;
        let list = |l: &[String]| l.iter().map(|m| out.mailbox(m)).collect::<Vec<_>>().join(", ");
        let mut req = json!({
            "From": out.mailbox(&e.from),
            "To": list(&e.to),
            "Headers": [{"Name": super::message::JOB_ID_HEADER, "Value": out.job_id.to_string()}],
        });
        let obj = req.as_object_mut().expect("an object");
        let path = match e.template.as_ref().and_then(|t| t.postmark_alias.as_ref().map(|a| (a, &t.variables))) {
            Some((alias, vars)) => {
                obj.insert("TemplateAlias".into(), alias.clone().into());
                obj.insert("TemplateModel".into(), Value::Object(vars.clone()));
                "/email/withTemplate"
            }
            None => {
                let body = out.body()?;
                obj.insert("Subject".into(), body.subject.clone().into());
                if let Some(t) = &body.text {
                    obj.insert("TextBody".into(), t.clone().into());
                }
                if let Some(h) = &body.html {
                    obj.insert("HtmlBody".into(), h.clone().into());
                }
                "/email"
            }
        };
        if !e.cc.is_empty() {
            obj.insert("Cc".into(), list(&e.cc).into());
        }
        if !e.bcc.is_empty() {
            obj.insert("Bcc".into(), list(&e.bcc).into());
        }
        if let Some(r) = &e.reply_to {
            obj.insert("ReplyTo".into(), out.mailbox(r).into());
        }
        if !e.tags.is_empty() {
            obj.insert("Metadata".into(), json!(e.tags));
        }
        if let Some(stream) = &self.cfg.message_stream {
            obj.insert("MessageStream".into(), stream.clone().into());
        }
        if !out.attachments.is_empty() {
            let list: Vec<Value> = out
                .attachments
                .iter()
                .map(|a| {
                    json!({
                        "Name": a.filename,
                        "Content": base64::engine::general_purpose::STANDARD.encode(&a.bytes),
                        "ContentType": a.content_type,
                    })
                })
                .collect();
            obj.insert("Attachments".into(), list.into());
        }
        Ok((path, req))
    }

    pub(super) async fn send(&self, out: &Outgoing) -> Result<Accepted, SendError> {
        let (path, req) = self.request(out)?;
        let url = format!("{}{path}", self.cfg.endpoint);
        let resp = self
            .client
            .post(&url)
            .header("X-Postmark-Server-Token", &self.cfg.token.0)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&req).expect("JSON serializes"))
            .send()
            .await
            .map_err(|e| http::network_error("postmark", &url, &e, self.timeout))?;
        let status = resp.status().as_u16();
        let retry_after = http::retry_after(resp.headers());
        let text = resp.text().await.map_err(|e| http::network_error("postmark", &url, &e, self.timeout))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = body.get("ErrorCode").and_then(Value::as_i64);
        let message = body.get("Message").and_then(Value::as_str).unwrap_or("").to_string();
        if (200..300).contains(&status) && code.unwrap_or(0) == 0 {
            let Some(id) = body.get("MessageID").and_then(Value::as_str) else {
                return Err(SendError::Transient {
                    message: format!("postmark answered {status} without a MessageID: {}", excerpt(&text, 300)),
                    retry_after: None,
                });
            };
            let mut details = serde_json::Map::new();
            if let Some(at) = body.get("SubmittedAt") {
                details.insert("submitted_at".into(), at.clone());
            }
            return Ok(Accepted { message_id: id.to_string(), details });
        }
        let detail = match code {
            Some(c) => format!("ErrorCode {c}: {message}"),
            None => excerpt(&text, 300),
        };
        if code == Some(INACTIVE_RECIPIENT) {
            let mut addresses = inactive_addresses(&message);
            if addresses.is_empty() && out.email.recipients().count() == 1 {
                addresses = out.email.recipients().map(str::to_string).collect();
            }
            if addresses.is_empty() {
                return Err(SendError::Permanent {
                    message: format!("postmark refused inactive recipients: {detail}"),
                });
            }
            return Err(SendError::Suppressed { addresses, message: format!("postmark: {detail}") });
        }
        Err(http::classify_status("postmark", status, retry_after, detail, "POSTMARK_TOKEN"))
    }
}

/// The addresses in Postmark's 406 message: "… Found inactive addresses: a@x.com, b@y.com.
/// Inactive recipients are …".
pub fn inactive_addresses(message: &str) -> Vec<String> {
    let lower = message.to_ascii_lowercase();
    let Some(start) = lower.find("inactive addresses:") else { return Vec::new() };
    let rest = &message[start + "inactive addresses:".len()..];
    let end = rest.find(". ").unwrap_or(rest.len());
    rest[..end]
        .split([',', ' ', ';'])
        .map(|s| s.trim().trim_end_matches('.').trim_matches(['<', '>']).to_ascii_lowercase())
        .filter(|s| s.contains('@'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_addresses_are_read_from_the_message() {
        let m = "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: \
                 Gone@example.com, other@example.org. Inactive recipients are ones that have generated a hard bounce, \
                 a spam complaint, or a manual suppression.";
        assert_eq!(inactive_addresses(m), vec!["gone@example.com", "other@example.org"]);
        assert_eq!(inactive_addresses("Found inactive addresses: a@b.co."), vec!["a@b.co"]);
        assert!(inactive_addresses("something else").is_empty());
    }
}
