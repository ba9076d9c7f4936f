//! What an embedding provider is, how its failures are told apart, and its circuit breaker.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;

/// Why a provider request failed; decides between waiting, falling back, splitting the batch
/// and giving up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// 429: wait `retry_after` (when given) before asking this provider again.
    RateLimited { retry_after: Option<Duration>, message: String },
    /// 5xx, 408, timeouts, refused connections, malformed answers: try another provider now,
    /// this one later.
    Unavailable { message: String },
    /// 400/413/422: something in the inputs; a batch is split until the document is found.
    BadInput { message: String },
    /// Other 4xx (a bad key, an unknown model, no quota): the configuration, not the documents.
    Refused { message: String },
}

impl ProviderError {
    pub fn message(&self) -> &str {
        match self {
            ProviderError::RateLimited { message, .. }
            | ProviderError::Unavailable { message }
            | ProviderError::BadInput { message }
            | ProviderError::Refused { message } => message,
        }
    }

    /// Classifies an HTTP error status.
    pub fn from_status(status: u16, retry_after: Option<Duration>, detail: &str) -> Self {
        let message = format!("HTTP {status}: {detail}");
        match status {
            // OpenAI's "insufficient_quota" is a 429 that waiting does not cure.
            429 if detail.contains("insufficient_quota") => ProviderError::Refused { message },
            429 => ProviderError::RateLimited { retry_after, message },
            408 | 500..=599 => ProviderError::Unavailable { message },
            400 | 413 | 422 => ProviderError::BadInput { message },
            _ => ProviderError::Refused { message },
        }
    }
}

/// A source of embeddings.
#[async_trait]
pub trait Provider: Send + Sync {
    /// `openai`, `gemini` or `local`.
    fn name(&self) -> &'static str;
    /// The model this provider embeds with when none is asked for.
    fn default_model(&self) -> &str;
    /// Whether it can embed with a model the caller names (the local model cannot).
    fn accepts_model(&self, model: &str) -> bool;
    /// Most texts per request.
    fn max_batch(&self) -> usize;
    /// The width `model` answers with, when configured or fixed (a stored vector of another
    /// width is embedded again).
    fn expected_dims(&self, _model: &str) -> Option<usize> {
        None
    }
    /// One vector per text, in order, all of one width.
    async fn embed(&self, model: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ProviderError>;
}

/// Checks a provider's answer: one finite, non-empty vector per text, all of one width.
pub fn check_vectors(vectors: &[Vec<f32>], expected: usize) -> Result<(), ProviderError> {
    let bad = |m: String| Err(ProviderError::Unavailable { message: format!("malformed answer: {m}") });
    if vectors.len() != expected {
        return bad(format!("{} vectors for {expected} texts", vectors.len()));
    }
    let dims = vectors.first().map_or(0, Vec::len);
    if expected > 0 && dims == 0 {
        return bad("an empty vector".into());
    }
    if vectors.iter().any(|v| v.len() != dims) {
        return bad("vectors of different widths".into());
    }
    if vectors.iter().flatten().any(|x| !x.is_finite()) {
        return bad("a value that is not a finite number".into());
    }
    Ok(())
}

/// Per-provider circuit breaker: `threshold` consecutive failures open it for `cooldown`; then
/// one request at a time is let through until one succeeds. A rate limit opens it until the
/// provider's `Retry-After`, without counting as a failure.
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    /// A trial request is out after the cooldown.
    probing: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker { threshold, cooldown, state: Mutex::default() }
    }

    /// Whether a request may go out now; `None` if yes, else how long until it may.
    pub fn check(&self) -> Option<Duration> {
        let mut s = self.state.lock().expect("breaker");
        let now = Instant::now();
        match s.open_until {
            Some(t) if t > now => Some(t - now),
            Some(_) if s.probing => Some(Duration::from_millis(100)),
            Some(_) => {
                s.probing = true;
                None
            }
            None => None,
        }
    }

    pub fn success(&self) {
        *self.state.lock().expect("breaker") = BreakerState::default();
    }

    pub fn failure(&self) {
        let mut s = self.state.lock().expect("breaker");
        s.failures += 1;
        s.probing = false;
        if s.failures >= self.threshold {
            s.open_until = Some(Instant::now() + self.cooldown);
        }
    }

    pub fn rate_limited(&self, wait: Duration) {
        let mut s = self.state.lock().expect("breaker");
        let until = Instant::now() + wait;
        s.probing = false;
        s.open_until = Some(s.open_until.map_or(until, |t| t.max(until)));
    }

    pub fn is_open(&self) -> bool {
        self.state.lock().expect("breaker").open_until.is_some_and(|t| t > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let c = |s, d: &str| ProviderError::from_status(s, Some(Duration::from_secs(2)), d);
        assert!(matches!(c(429, "slow down"), ProviderError::RateLimited { retry_after: Some(_), .. }));
        assert!(matches!(c(429, r#"{"type":"insufficient_quota"}"#), ProviderError::Refused { .. }));
        for s in [408, 500, 502, 503] {
            assert!(matches!(c(s, ""), ProviderError::Unavailable { .. }), "{s}");
        }
        for s in [400, 413, 422] {
            assert!(matches!(c(s, ""), ProviderError::BadInput { .. }), "{s}");
        }
        for s in [401, 403, 404] {
            assert!(matches!(c(s, ""), ProviderError::Refused { .. }), "{s}");
        }
        assert_eq!(c(503, "down").message(), "HTTP 503: down");
    }

    #[test]
    fn answers_are_checked() {
        assert!(check_vectors(&[vec![1.0, 0.0], vec![0.0, 1.0]], 2).is_ok());
        assert!(check_vectors(&[vec![1.0]], 2).is_err());
        assert!(check_vectors(&[vec![1.0], vec![1.0, 2.0]], 2).is_err());
        assert!(check_vectors(&[vec![]], 1).is_err());
        assert!(check_vectors(&[vec![f32::NAN]], 1).is_err());
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(50));
        b.failure();
        assert_eq!(b.check(), None, "one failure leaves it closed");
        b.failure();
        assert!(b.check().is_some() && b.is_open());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.check(), None, "a probe goes out after the cooldown");
        assert!(b.check().is_some(), "only one probe at a time");
        b.success();
        assert_eq!(b.check(), None);
        assert!(!b.is_open());
    }

    #[test]
    fn a_rate_limit_closes_the_provider_until_retry_after() {
        let b = Breaker::new(5, Duration::from_secs(30));
        b.rate_limited(Duration::from_millis(40));
        assert!(b.check().unwrap() <= Duration::from_millis(40));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.check(), None);
    }
}
