//! The webhook pool's handler: delivers one event to one endpoint per attempt, the Standard
//! Webhooks way, and logs every attempt.
//!
//! - **Signing** ([`sign`]): `webhook-id` (the event id, stable across retries and replays),
//!   `webhook-timestamp` (this attempt's Unix seconds) and `webhook-signature` over
//!   `{id}.{timestamp}.{body}` with every live secret (two during a rotation). The secret is
//!   loaded and decrypted at each attempt; it is never part of the job.
//! - **SSRF guard** ([`guard`]): the URL is checked before connecting, host names resolve only
//!   through the guard, which connects to the addresses it checked. A refusal is permanent.
//! - **Retries**: a fixed schedule (`WEBHOOK_RETRY_SCHEDULE`, ±20 % jitter) counted in logged
//!   delivery attempts; `Retry-After` (429/503) is clamped to [delay, 2 × delay]. 410 disables
//!   the endpoint. Redirects are not followed (a 3xx is a failed attempt).
//! - **Concurrency**: at most `max_concurrency` deliveries per endpoint run at once *in this
//!   process*; an attempt over the limit is deferred by about a second without counting as a
//!   delivery attempt. Several worker processes may together exceed the limit (n × limit).
//! - **Auto-disable**: an endpoint whose deliveries all failed for `WEBHOOK_DISABLE_AFTER` is
//!   disabled and an `endpoint.disabled` event goes to the tenant's endpoints subscribed to it.

pub mod guard;
pub mod sign;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::{StatusCode, header::HeaderMap, redirect::Policy};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;
use wharf_jobs::{
    Store, StoreError,
    kinds::webhook::WebhookDeliveryJob,
    retry::RetryPolicy,
    webhooks::{
        ENDPOINT_DISABLED, EndpointRecord, NewAttempt, NewEvent, Published, RESPONSE_BODY_LIMIT, WebhookRepo,
        WebhookSecret, WebhookSettings, crypto::endpoint_aad, new_event_id, publish,
    },
};

use crate::handler::{Handler, JobContext, JobError, JobResult};
use guard::{GuardedResolver, Refused};

/// Deferrals for the concurrency limit are charged as runtime attempts but not as delivery
/// attempts; this many may happen on top of the schedule before the runtime gives up.
pub const DEFERRAL_ALLOWANCE: i32 = 100;
/// How long an attempt waits for a free slot of its endpoint before it is deferred.
const SLOT_WAIT: Duration = Duration::from_millis(250);
const DEFERRAL: Duration = Duration::from_secs(1);
/// After an internal failure (store unreachable), try again after this.
const INTERNAL_RETRY: Duration = Duration::from_secs(5);
const JITTER: f64 = 0.2;
/// Endpoints whose concurrency slots are tracked before idle ones are forgotten.
const MAX_TRACKED_ENDPOINTS: usize = 10_000;

/// The runtime's policy for the webhook queue. Its own backoff is zero: every retry delay comes
/// from the handler's `retry_after` (the schedule), which `delay_honouring` passes through up
/// to `max`.
pub fn retry_policy(settings: &WebhookSettings) -> RetryPolicy {
    let max = (settings.longest_delay() * 2).max(Duration::from_secs(60));
    RetryPolicy {
        max_attempts: settings.schedule.len() as i32 + 1 + DEFERRAL_ALLOWANCE,
        base: Duration::ZERO,
        max,
        jitter: 0.0,
    }
}

pub struct WebhookHandler {
    repo: WebhookRepo,
    store: Arc<dyn Store>,
    settings: WebhookSettings,
    client: reqwest::Client,
    slots: Mutex<HashMap<Uuid, (u32, Arc<Semaphore>)>>,
}

/// What one HTTP attempt came to.
struct Sent {
    status: Option<StatusCode>,
    retry_after: Option<Duration>,
    body: Option<String>,
    latency: Duration,
    /// `None` when delivered.
    failure: Option<Failure>,
}

struct Failure {
    class: &'static str,
    message: String,
    permanent: bool,
}

impl WebhookHandler {
    pub fn new(store: Arc<dyn Store>, settings: WebhookSettings) -> Self {
        let client = reqwest::Client::builder()
            .redirect(Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy: Arc::new(settings.policy.clone()) }))
            .user_agent(concat!("wharf-webhooks/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("the webhook HTTP client (rustls with bundled roots) builds");
        WebhookHandler {
            repo: WebhookRepo::new(store.db()),
            store,
            settings,
            client,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A slot of the endpoint's concurrency limit in this process, or `None` if it stays full.
    async fn slot(&self, e: &EndpointRecord) -> Option<OwnedSemaphorePermit> {
        let sem = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            if slots.len() >= MAX_TRACKED_ENDPOINTS {
                // Forget endpoints with nothing in flight (their semaphores are full).
                slots.retain(|_, (max, sem)| sem.available_permits() < *max as usize);
            }
            let entry = slots
                .entry(e.id)
                .or_insert_with(|| (e.max_concurrency, Arc::new(Semaphore::new(e.max_concurrency as usize))));
            if entry.0 != e.max_concurrency {
                *entry = (e.max_concurrency, Arc::new(Semaphore::new(e.max_concurrency as usize)));
            }
            entry.1.clone()
        };
        tokio::time::timeout(SLOT_WAIT, sem.acquire_owned()).await.ok().and_then(Result::ok)
    }

    fn secrets(&self, e: &EndpointRecord) -> Result<Vec<WebhookSecret>, JobError> {
        let Some(sbox) = &self.settings.secrets else {
            return Err(JobError::Transient {
                message: "WHARF_ENCRYPTION_KEY is not set on this worker: endpoint secrets cannot be decrypted".into(),
                retry_after: Some(Duration::from_secs(60)),
            });
        };
        let aad = endpoint_aad(&e.tenant, &e.id);
        let open = |enc: &str| {
            sbox.open(enc, &aad).and_then(|s| WebhookSecret::parse(&s)).map_err(|m| JobError::Transient {
                message: format!("endpoint {}: {m}", e.id),
                retry_after: Some(Duration::from_secs(60)),
            })
        };
        let mut out = vec![open(&e.secret_enc)?];
        if let (Some(prev), Some(until)) = (&e.previous_secret_enc, e.previous_secret_expires_at)
            && until > Utc::now()
        {
            out.push(open(prev)?);
        }
        Ok(out)
    }

    async fn send(&self, e: &EndpointRecord, job: &WebhookDeliveryJob, secrets: &[WebhookSecret]) -> Sent {
        let started = Instant::now();
        let failed = |class, message: String, permanent| Sent {
            status: None,
            retry_after: None,
            body: None,
            latency: started.elapsed(),
            failure: Some(Failure { class, message, permanent }),
        };
        let url = match guard::check_url(&self.settings.policy, &e.url) {
            Ok(u) => u,
            Err(Refused(why)) => return failed("refused", format!("refused by the SSRF guard: {why}"), true),
        };
        let body = job.body();
        let timestamp = Utc::now().timestamp();
        let signature = sign::signature_header(secrets, &job.event_id, timestamp, &body);
        let mut req = self.client.post(url).timeout(Duration::from_millis(e.timeout_ms.max(1) as u64));
        for (k, v) in &e.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .header("content-type", "application/json")
            .header("webhook-id", &job.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(err) => {
                if let Some(Refused(why)) = guard::refusal(&err) {
                    return failed("refused", format!("refused by the SSRF guard: {why}"), true);
                }
                let class = if err.is_timeout() {
                    "timeout"
                } else if err.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                return failed(class, format!("{class} error: {}", error_chain(&err)), false);
            }
        };
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let mut bytes = Vec::new();
        while bytes.len() < RESPONSE_BODY_LIMIT {
            match tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await {
                Ok(Ok(Some(chunk))) => bytes.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let body = truncate_utf8(&bytes, RESPONSE_BODY_LIMIT);
        let latency = started.elapsed();
        let failure = classify(status, resp.headers().get("location").and_then(|l| l.to_str().ok()));
        Sent { status: Some(status), retry_after, body: Some(body).filter(|b| !b.is_empty()), latency, failure }
    }

    /// Failure bookkeeping: starts the endpoint's failure streak, and disables the endpoint if
    /// the streak is older than `WEBHOOK_DISABLE_AFTER`. Returns the reason if it was disabled.
    async fn note_failure(&self, ctx: &JobContext, e: &EndpointRecord) -> Result<Option<String>, StoreError> {
        let now = Utc::now();
        let Some(since) = self.repo.mark_failure(e.id, now).await? else { return Ok(None) };
        let window = chrono::Duration::from_std(self.settings.disable_after).unwrap_or(chrono::Duration::MAX);
        if now - since < window {
            return Ok(None);
        }
        let reason = format!(
            "every delivery failed since {} (WEBHOOK_DISABLE_AFTER = {}s)",
            since.to_rfc3339(),
            self.settings.disable_after.as_secs()
        );
        if !self.repo.disable(&e.tenant, e.id, &reason).await? {
            return Ok(Some(reason)); // someone else disabled it (and announced it)
        }
        tracing::warn!(endpoint_id = %e.id, tenant = %e.tenant, "endpoint disabled after failing continuously");
        metrics::counter!("wharf_webhook_endpoints_disabled_total", "reason" => "failing").increment(1);
        self.announce_disabled(ctx, e, &reason, since).await?;
        Ok(Some(reason))
    }

    async fn announce_disabled(
        &self,
        ctx: &JobContext,
        e: &EndpointRecord,
        reason: &str,
        failing_since: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let event = NewEvent {
            id: new_event_id(),
            event_type: ENDPOINT_DISABLED.into(),
            data: json!({
                "endpoint_id": e.id,
                "url": e.url,
                "description": e.description,
                "reason": reason,
                "failing_since": failing_since,
            }),
            timestamp: Utc::now(),
            traceparent: ctx.traceparent.clone(),
        };
        match publish(self.store.as_ref(), &self.repo, &e.tenant, event, Some(e.id)).await? {
            Published::Fresh(d) => {
                tracing::info!(endpoint_id = %e.id, deliveries = d.len(), "endpoint.disabled emitted")
            }
            Published::Duplicate => {}
        }
        Ok(())
    }
}

fn internal(e: StoreError) -> JobError {
    JobError::Transient { message: format!("store error: {e}"), retry_after: Some(INTERNAL_RETRY) }
}

/// Each distinct message in an error's source chain.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// `None` for 2xx; otherwise what kind of failure the status is.
fn classify(status: StatusCode, location: Option<&str>) -> Option<Failure> {
    let code = status.as_u16();
    let (class, message, permanent) = match code {
        200..=299 => return None,
        410 => ("gone", "HTTP 410 Gone: the endpoint is disabled".to_string(), true),
        300..=399 => (
            "http_3xx",
            format!("HTTP {code}: redirects are not followed (Location: {})", location.unwrap_or("none")),
            false,
        ),
        408 | 429 => ("http_4xx", format!("HTTP {code}"), false),
        400..=499 => ("http_4xx", format!("HTTP {code}: the receiver refused the delivery"), false),
        _ => ("http_5xx", format!("HTTP {code}"), false),
    };
    Some(Failure { class, message, permanent })
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    (at - Utc::now()).to_std().ok()
}

/// The delay before the next attempt: the scheduled delay with ±20 % jitter, or the
/// receiver's `Retry-After` clamped to [that delay, twice the scheduled delay].
pub fn next_delay(scheduled: Duration, retry_after: Option<Duration>, unit: f64) -> Duration {
    let jittered = scheduled.mul_f64(1.0 + JITTER * unit.clamp(-1.0, 1.0));
    match retry_after {
        Some(ra) => ra.clamp(jittered, (scheduled * 2).max(jittered)),
        None => jittered,
    }
}

fn truncate_utf8(bytes: &[u8], limit: usize) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]).into_owned();
    if s.len() <= limit {
        return s;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[async_trait]
impl Handler<WebhookDeliveryJob> for WebhookHandler {
    #[tracing::instrument(
        name = "webhook.deliver",
        skip_all,
        fields(job_id = %ctx.id, endpoint_id = %job.endpoint_id, event_id = %job.event_id, event_type = %job.event_type)
    )]
    async fn handle(&self, ctx: &JobContext, job: WebhookDeliveryJob) -> JobResult {
        let Some(e) = self.repo.endpoint(&ctx.tenant, job.endpoint_id).await.map_err(internal)? else {
            return Err(JobError::permanent(format!("endpoint {} no longer exists", job.endpoint_id)));
        };
        if !e.enabled {
            return Err(JobError::permanent(format!(
                "endpoint {} is disabled ({})",
                e.id,
                e.disabled_reason.as_deref().unwrap_or("no reason recorded")
            )));
        }
        let secrets = self.secrets(&e)?;
        let Some(_slot) = self.slot(&e).await else {
            metrics::counter!("wharf_webhook_deferred_total").increment(1);
            return Err(JobError::Transient {
                message: format!(
                    "deferred: endpoint {} already has {} deliveries in flight (max_concurrency)",
                    e.id, e.max_concurrency
                ),
                retry_after: Some(DEFERRAL.mul_f64(1.0 + JITTER * rand::rng().random_range(-1.0..=1.0))),
            });
        };
        let attempt = self.repo.count_attempts(ctx.id).await.map_err(internal)? as i32 + 1;
        let sent = self.send(&e, &job, &secrets).await;
        let latency_ms = sent.latency.as_millis() as i64;
        self.repo
            .record_attempt(&NewAttempt {
                tenant: ctx.tenant.clone(),
                endpoint_id: e.id,
                job_id: ctx.id,
                event_id: job.event_id.clone(),
                event_type: job.event_type.clone(),
                attempt,
                status_code: sent.status.map(|s| s.as_u16() as i32),
                error_class: sent.failure.as_ref().map(|f| f.class.to_string()),
                error: sent.failure.as_ref().map(|f| f.message.clone()),
                latency_ms,
                response_body: sent.body.clone(),
            })
            .await
            .map_err(internal)?;
        let class = sent.failure.as_ref().map(|f| f.class).unwrap_or("delivered");
        metrics::counter!("wharf_webhook_attempts_total", "result" => class).increment(1);
        metrics::histogram!("wharf_webhook_latency_seconds").record(sent.latency.as_secs_f64());

        let Some(failure) = sent.failure else {
            self.repo.mark_success(e.id).await.map_err(internal)?;
            tracing::info!(attempt, latency_ms, "webhook delivered");
            return Ok(Some(json!({
                "status": sent.status.map(|s| s.as_u16()),
                "attempt": attempt,
                "latency_ms": latency_ms,
            })));
        };
        if failure.class == "gone" {
            let reason = "the receiver answered 410 Gone";
            if self.repo.disable(&e.tenant, e.id, reason).await.map_err(internal)? {
                metrics::counter!("wharf_webhook_endpoints_disabled_total", "reason" => "gone").increment(1);
                tracing::warn!("endpoint disabled: 410 Gone");
            }
            return Err(JobError::permanent(failure.message));
        }
        if let Some(reason) = self.note_failure(ctx, &e).await.map_err(internal)? {
            return Err(JobError::permanent(format!("{}; endpoint disabled: {reason}", failure.message)));
        }
        if failure.permanent {
            return Err(JobError::permanent(failure.message));
        }
        let Some(scheduled) = self.settings.schedule.get(attempt as usize - 1).copied() else {
            return Err(JobError::permanent(format!(
                "{} (attempt {attempt}: the retry schedule is exhausted)",
                failure.message
            )));
        };
        let delay = next_delay(scheduled, sent.retry_after, rand::rng().random_range(-1.0..=1.0));
        Err(JobError::Transient {
            message: format!("{} (attempt {attempt}; next in {} ms)", failure.message, delay.as_millis()),
            retry_after: Some(delay),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_retry_after_is_clamped_to_the_schedule() {
        let s = Duration::from_secs(10);
        assert_eq!(next_delay(s, None, 0.0), s);
        assert_eq!(next_delay(s, None, 1.0), Duration::from_secs(12));
        assert_eq!(next_delay(s, None, -1.0), Duration::from_secs(8));
        assert_eq!(next_delay(s, Some(Duration::from_secs(15)), 0.0), Duration::from_secs(15));
        assert_eq!(next_delay(s, Some(Duration::from_secs(1)), 0.0), s, "never sooner than scheduled");
        assert_eq!(next_delay(s, Some(Duration::from_secs(3600)), 0.0), Duration::from_secs(20), "at most twice");
        assert_eq!(next_delay(Duration::from_secs(2), Some(Duration::from_secs(3)), -1.0), Duration::from_secs(3));
    }

    #[test]
    fn webhooks_policy_passes_the_handlers_delays_through() {
        let settings = WebhookSettings::from_env(&wharf_jobs::config::Env::default()).unwrap();
        let p = retry_policy(&settings);
        assert_eq!(p.max_attempts, 8 + DEFERRAL_ALLOWANCE);
        for attempt in [1, 7, 50, 107] {
            let ra = Duration::from_secs(36_000);
            assert_eq!(p.delay_honouring(attempt, Some(ra)), ra);
            assert_eq!(p.delay_honouring(attempt, Some(Duration::from_millis(900))), Duration::from_millis(900));
        }
    }

    #[test]
    fn webhooks_statuses_are_classified() {
        assert!(classify(StatusCode::OK, None).is_none());
        assert!(classify(StatusCode::NO_CONTENT, None).is_none());
        let gone = classify(StatusCode::GONE, None).unwrap();
        assert!(gone.permanent && gone.class == "gone");
        let redirect = classify(StatusCode::FOUND, Some("http://elsewhere/")).unwrap();
        assert!(!redirect.permanent && redirect.message.contains("not followed"));
        for code in [400, 401, 404, 408, 429, 500, 502, 503] {
            assert!(!classify(StatusCode::from_u16(code).unwrap(), None).unwrap().permanent, "{code}");
        }
    }

    #[test]
    fn webhooks_retry_after_parses_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = (Utc::now() + chrono::Duration::seconds(120)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert("retry-after", later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn webhooks_response_bodies_are_cut_at_a_char_boundary() {
        let s = "é".repeat(3000);
        let t = truncate_utf8(s.as_bytes(), RESPONSE_BODY_LIMIT);
        assert!(t.len() <= RESPONSE_BODY_LIMIT && t.chars().all(|c| c == 'é' || c == '\u{FFFD}'));
    }
}
