//! OpenAI, any OpenAI-compatible server, and Gemini's OpenAI-compatible endpoint, through
//! async-openai. Its HTTP goes through a tower service of wharf's own: no retries inside the
//! client (wharf decides between waiting, falling back and retrying the job) and every error
//! status keeps its `Retry-After`.

use std::{sync::Arc, time::Duration};

use async_openai::{
    Client,
    config::OpenAIConfig,
    error::OpenAIError,
    middleware::HttpRequestFactory,
    types::embeddings::{CreateEmbeddingRequestArgs, EncodingFormat},
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest_openai::header::{HeaderMap, RETRY_AFTER};

use super::{
    config::RemoteConfig,
    provider::{Provider, ProviderError, check_vectors},
};

/// An error status, with what the provider said and its `Retry-After`.
#[derive(Debug)]
struct StatusError {
    status: u16,
    retry_after: Option<Duration>,
    detail: String,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.detail)
    }
}

impl std::error::Error for StatusError {}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, Utc::now())
}

/// The provider's own message (`{"error": {"message": …}}`) or the start of the body.
fn detail(body: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        let msg = e.get("message").and_then(|m| m.as_str()).or_else(|| e.as_str())?.to_string();
        Some(match e.get("type").or_else(|| e.get("code")).and_then(|t| t.as_str()) {
            Some(t) => format!("{msg} ({t})"),
            None => msg,
        })
    });
    let mut d = from_json.unwrap_or_else(|| body.trim().to_string());
    if d.len() > 300 {
        let mut end = 300;
        while !d.is_char_boundary(end) {
            end -= 1;
        }
        d.truncate(end);
        d.push('…');
    }
    d
}

fn http_client(timeout: Duration) -> reqwest_openai::Client {
    // ring, as the rest of wharf; Mozilla's roots, so an image needs no CA bundle.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
        .with_no_client_auth();
    reqwest_openai::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .expect("the HTTP client builds")
}

pub struct OpenAiCompatible {
    cfg: RemoteConfig,
    client: Client<OpenAIConfig>,
}

impl OpenAiCompatible {
    pub fn new(cfg: &RemoteConfig, timeout: Duration) -> Self {
        let http = http_client(timeout);
        let requests = http.clone();
        let service = tower::service_fn(move |factory: HttpRequestFactory| {
            let http = http.clone();
            async move {
                let request = factory.build().await?;
                let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
                if response.status().is_success() {
                    return Ok(response);
                }
                let status = response.status().as_u16();
                let retry_after = retry_after(response.headers());
                let body = response.text().await.unwrap_or_default();
                Err(OpenAIError::Boxed(Box::new(StatusError { status, retry_after, detail: detail(&body) })))
            }
        });
        // Everything explicit: OpenAIConfig's defaults read OPENAI_* variables, which must not
        // leak into the Gemini client.
        let config = OpenAIConfig::new()
            .with_api_base(&cfg.base_url)
            .with_api_key(cfg.api_key.clone().unwrap_or_default())
            .with_org_id("")
            .with_project_id("");
        // `build`, not `with_config`: the latter makes a default reqwest client, which panics
        // without a process-wide rustls provider.
        let client = Client::build(requests, config).with_http_service(service);
        OpenAiCompatible { cfg: cfg.clone(), client }
    }
}

fn classify(e: OpenAIError) -> ProviderError {
    match e {
        OpenAIError::Boxed(b) => match b.downcast::<StatusError>() {
            Ok(s) => ProviderError::from_status(s.status, s.retry_after, &s.detail),
            Err(other) => ProviderError::Unavailable { message: other.to_string() },
        },
        OpenAIError::ApiError(a) => ProviderError::from_status(a.status_code.as_u16(), None, &a.api_error.to_string()),
        OpenAIError::InvalidArgument(m) => ProviderError::Refused { message: m },
        OpenAIError::Reqwest(r) if r.is_timeout() => ProviderError::Unavailable { message: format!("timed out: {r}") },
        other => ProviderError::Unavailable { message: other.to_string() },
    }
}

#[async_trait]
impl Provider for OpenAiCompatible {
    fn name(&self) -> &'static str {
        self.cfg.name
    }

    fn default_model(&self) -> &str {
        &self.cfg.model
    }

    fn accepts_model(&self, _model: &str) -> bool {
        true
    }

    fn max_batch(&self) -> usize {
        self.cfg.max_batch
    }

    fn expected_dims(&self, model: &str) -> Option<usize> {
        self.cfg.dimensions.filter(|_| model == self.cfg.model).map(|d| d as usize)
    }

    async fn embed(&self, model: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ProviderError> {
        let n = texts.len();
        let mut args = CreateEmbeddingRequestArgs::default();
        args.model(model).input(texts).encoding_format(EncodingFormat::Float);
        // Only for the configured model: a caller naming another model gets its native width.
        if let Some(d) = self.cfg.dimensions.filter(|_| model == self.cfg.model) {
            args.dimensions(d);
        }
        let request = args.build().map_err(classify)?;
        let response = self.client.embeddings().create(request).await.map_err(classify)?;
        let mut data = response.data;
        data.sort_by_key(|e| e.index);
        if data.iter().enumerate().any(|(i, e)| e.index as usize != i) {
            return Err(ProviderError::Unavailable { message: "malformed answer: indexes do not match".into() });
        }
        let vectors: Vec<Vec<f32>> = data.into_iter().map(|e| e.embedding).collect();
        check_vectors(&vectors, n)?;
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn retry_after_as_seconds_or_date() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 25 Nov 2026 12:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn details_come_from_the_error_object() {
        assert_eq!(
            detail(r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#),
            "Rate limit reached (requests)"
        );
        assert_eq!(detail("plain text\n"), "plain text");
        assert!(detail(&"é".repeat(400)).ends_with('…'));
    }
}
