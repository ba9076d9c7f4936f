//! What an embedding provider is and how its failures are told apart (the circuit breaker is
//! shared with email: `crate::breaker`).

use std::time::Duration;

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
}
