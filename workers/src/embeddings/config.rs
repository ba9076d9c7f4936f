//! Embedding providers and limits, read from the environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `OPENAI_API_KEY` | OpenAI key; with it (or `OPENAI_BASE_URL`) OpenAI-compatible is the primary | — |
//! | `OPENAI_BASE_URL` | any OpenAI-compatible server (Ollama, vLLM, TEI, LM Studio) | `https://api.openai.com/v1` |
//! | `OPENAI_EMBEDDING_MODEL` | model of the primary | `text-embedding-3-small` |
//! | `OPENAI_EMBEDDING_DIMENSIONS` | `dimensions` sent to the model (text-embedding-3 and later) | not sent |
//! | `GEMINI_API_KEY` | Gemini through its OpenAI-compatible endpoint: the fallback (the primary without OpenAI) | — |
//! | `GEMINI_BASE_URL` | | `https://generativelanguage.googleapis.com/v1beta/openai` |
//! | `GEMINI_EMBEDDING_MODEL`, `GEMINI_EMBEDDING_DIMENSIONS` | | `gemini-embedding-001`, not sent |
//! | `EMBEDDINGS_BATCH_SIZE` | texts per provider request (Gemini: at most 100) | `256` (at most 2 048) |
//! | `EMBEDDINGS_BATCH_MAX_TOKENS` | estimated tokens per request (bytes / 3) | `200000` |
//! | `EMBEDDINGS_TIMEOUT_MS` | per provider request | `60000` |
//! | `EMBEDDINGS_MAX_INLINE_WAIT_MS` | a `Retry-After` up to this is waited out within the job | `10000` |
//! | `EMBEDDINGS_BREAKER_FAILURES`, `EMBEDDINGS_BREAKER_COOLDOWN_MS` | consecutive failures that open a provider's circuit, and for how long | `5`, `30000` |
//! | `EMBEDDINGS_CACHE_ENTRIES`, `EMBEDDINGS_CACHE_TTL_SECONDS` | in-process cache of recent vectors | `1000`, `1800` |
//!
//! Without any provider variable the bundled local model embeds (feature `local-embeddings`).

use std::{fmt, time::Duration};

use wharf_jobs::{
    config::{ConfigError, Env},
    kinds::embedding::validate_model,
};

pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const OPENAI_DEFAULT_MODEL: &str = "text-embedding-3-small";
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta/openai";
pub const GEMINI_DEFAULT_MODEL: &str = "gemini-embedding-001";
/// Inputs per request OpenAI accepts.
pub const OPENAI_MAX_BATCH: usize = 2048;
/// Inputs per request Gemini accepts (its batch embedding limit).
pub const GEMINI_MAX_BATCH: usize = 100;

/// An OpenAI-compatible HTTP provider.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// `openai` or `gemini`: in results, metrics and the stored rows.
    pub name: &'static str,
    /// Without a trailing slash; `/embeddings` is appended.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub dimensions: Option<u32>,
    /// Most inputs one request may carry.
    pub max_batch: usize,
}

impl fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    Remote(RemoteConfig),
    /// The model bundled in the binary (feature `local-embeddings`).
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsConfig {
    /// Tried in order: the first is the primary (whose model is "the configured model").
    /// Empty when no provider is configured and the local model is not built in.
    pub providers: Vec<ProviderConfig>,
    pub batch_size: usize,
    pub batch_max_tokens: usize,
    pub timeout: Duration,
    pub max_inline_wait: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub cache_entries: u64,
    pub cache_ttl: Duration,
}

impl Default for EmbeddingsConfig {
    fn default() -> Self {
        EmbeddingsConfig {
            providers: Vec::new(),
            batch_size: 256,
            batch_max_tokens: 200_000,
            timeout: Duration::from_secs(60),
            max_inline_wait: Duration::from_secs(10),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            cache_entries: 1000,
            cache_ttl: Duration::from_secs(30 * 60),
        }
    }
}

fn url(env: &Env, var: &str, default: &str) -> Result<String, ConfigError> {
    let u = env.get(var).unwrap_or(default).trim_end_matches('/').to_string();
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        return Err(ConfigError::new(var, format!("`{u}` is not an http:// or https:// URL")));
    }
    Ok(u)
}

fn key(env: &Env, var: &str) -> Result<Option<String>, ConfigError> {
    match env.get(var) {
        Some(k) if !k.chars().all(|c| c.is_ascii_graphic()) => {
            Err(ConfigError::new(var, "must be printable ASCII without spaces"))
        }
        k => Ok(k.map(str::to_string)),
    }
}

fn model(env: &Env, var: &str, default: &str) -> Result<String, ConfigError> {
    let m = env.get(var).unwrap_or(default);
    validate_model(m).map_err(|e| ConfigError::new(var, e))?;
    Ok(m.to_string())
}

fn dimensions(env: &Env, var: &str) -> Result<Option<u32>, ConfigError> {
    match env.parse::<u32>(var)? {
        Some(0) => Err(ConfigError::new(var, "must be at least 1")),
        d => Ok(d),
    }
}

fn positive<T: PartialOrd + From<u8>>(var: &str, v: T) -> Result<T, ConfigError> {
    if v < T::from(1) { Err(ConfigError::new(var, "must be at least 1")) } else { Ok(v) }
}

impl EmbeddingsConfig {
    /// Every error names its variable. `local_available` says whether the local model is built in.
    pub fn from_env(env: &Env, local_available: bool) -> Result<Self, ConfigError> {
        let d = EmbeddingsConfig::default();
        let mut providers = Vec::new();
        if env.get("OPENAI_API_KEY").is_some() || env.get("OPENAI_BASE_URL").is_some() {
            let model = model(env, "OPENAI_EMBEDDING_MODEL", OPENAI_DEFAULT_MODEL)?;
            let dimensions = dimensions(env, "OPENAI_EMBEDDING_DIMENSIONS")?;
            if dimensions.is_some() && model.starts_with("text-embedding-ada") {
                return Err(ConfigError::new(
                    "OPENAI_EMBEDDING_DIMENSIONS",
                    format!("`{model}` has a fixed width; set it only for text-embedding-3 and later"),
                ));
            }
            providers.push(ProviderConfig::Remote(RemoteConfig {
                name: "openai",
                base_url: url(env, "OPENAI_BASE_URL", OPENAI_BASE_URL)?,
                api_key: key(env, "OPENAI_API_KEY")?,
                model,
                dimensions,
                max_batch: OPENAI_MAX_BATCH,
            }));
        }
        if env.get("GEMINI_API_KEY").is_some() {
            providers.push(ProviderConfig::Remote(RemoteConfig {
                name: "gemini",
                base_url: url(env, "GEMINI_BASE_URL", GEMINI_BASE_URL)?,
                api_key: key(env, "GEMINI_API_KEY")?,
                model: model(env, "GEMINI_EMBEDDING_MODEL", GEMINI_DEFAULT_MODEL)?,
                dimensions: dimensions(env, "GEMINI_EMBEDDING_DIMENSIONS")?,
                max_batch: GEMINI_MAX_BATCH,
            }));
        }
        if providers.is_empty() && local_available {
            providers.push(ProviderConfig::Local);
        }
        let batch_size = positive("EMBEDDINGS_BATCH_SIZE", env.parse_or("EMBEDDINGS_BATCH_SIZE", d.batch_size)?)?;
        if batch_size > OPENAI_MAX_BATCH {
            return Err(ConfigError::new("EMBEDDINGS_BATCH_SIZE", format!("at most {OPENAI_MAX_BATCH}")));
        }
        let timeout = env.millis_or("EMBEDDINGS_TIMEOUT_MS", d.timeout)?;
        if timeout.is_zero() {
            return Err(ConfigError::new("EMBEDDINGS_TIMEOUT_MS", "must be above 0"));
        }
        Ok(EmbeddingsConfig {
            providers,
            batch_size,
            batch_max_tokens: positive(
                "EMBEDDINGS_BATCH_MAX_TOKENS",
                env.parse_or("EMBEDDINGS_BATCH_MAX_TOKENS", d.batch_max_tokens)?,
            )?,
            timeout,
            max_inline_wait: env.millis_or("EMBEDDINGS_MAX_INLINE_WAIT_MS", d.max_inline_wait)?,
            breaker_failures: positive(
                "EMBEDDINGS_BREAKER_FAILURES",
                env.parse_or("EMBEDDINGS_BREAKER_FAILURES", d.breaker_failures)?,
            )?,
            breaker_cooldown: env.millis_or("EMBEDDINGS_BREAKER_COOLDOWN_MS", d.breaker_cooldown)?,
            cache_entries: env.parse_or("EMBEDDINGS_CACHE_ENTRIES", d.cache_entries)?,
            cache_ttl: env.secs_or("EMBEDDINGS_CACHE_TTL_SECONDS", d.cache_ttl)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<EmbeddingsConfig, ConfigError> {
        EmbeddingsConfig::from_env(&Env::from_pairs(pairs.iter().copied()), true)
    }

    fn remote(c: &ProviderConfig) -> &RemoteConfig {
        match c {
            ProviderConfig::Remote(r) => r,
            ProviderConfig::Local => panic!("local"),
        }
    }

    #[test]
    fn no_keys_means_the_local_model() {
        assert_eq!(parse(&[]).unwrap().providers, vec![ProviderConfig::Local]);
        let none = EmbeddingsConfig::from_env(&Env::default(), false).unwrap();
        assert!(none.providers.is_empty());
    }

    #[test]
    fn openai_then_gemini() {
        let c = parse(&[("OPENAI_API_KEY", "sk-1"), ("GEMINI_API_KEY", "g-1"), ("OPENAI_EMBEDDING_DIMENSIONS", "512")])
            .unwrap();
        let (o, g) = (remote(&c.providers[0]), remote(&c.providers[1]));
        assert_eq!((o.name, o.base_url.as_str(), o.model.as_str()), ("openai", OPENAI_BASE_URL, OPENAI_DEFAULT_MODEL));
        assert_eq!(o.dimensions, Some(512));
        assert_eq!((g.name, g.model.as_str(), g.max_batch), ("gemini", GEMINI_DEFAULT_MODEL, GEMINI_MAX_BATCH));
        assert!(!format!("{c:?}").contains("sk-1"), "keys are not shown");
    }

    #[test]
    fn a_base_url_alone_is_an_openai_compatible_server() {
        let c =
            parse(&[("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/"), ("OPENAI_EMBEDDING_MODEL", "nomic-embed-text")])
                .unwrap();
        let o = remote(&c.providers[0]);
        assert_eq!((o.base_url.as_str(), o.api_key.as_deref()), ("http://127.0.0.1:11434/v1", None));
        assert_eq!(c.providers.len(), 1);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (pairs, var) in [
            (vec![("OPENAI_BASE_URL", "localhost:8080")], "OPENAI_BASE_URL"),
            (vec![("OPENAI_API_KEY", "sk 1")], "OPENAI_API_KEY"),
            (vec![("OPENAI_API_KEY", "k"), ("OPENAI_EMBEDDING_MODEL", "a'b")], "OPENAI_EMBEDDING_MODEL"),
            (vec![("OPENAI_API_KEY", "k"), ("OPENAI_EMBEDDING_DIMENSIONS", "0")], "OPENAI_EMBEDDING_DIMENSIONS"),
            (
                vec![
                    ("OPENAI_API_KEY", "k"),
                    ("OPENAI_EMBEDDING_MODEL", "text-embedding-ada-002"),
                    ("OPENAI_EMBEDDING_DIMENSIONS", "8"),
                ],
                "OPENAI_EMBEDDING_DIMENSIONS",
            ),
            (vec![("EMBEDDINGS_BATCH_SIZE", "0")], "EMBEDDINGS_BATCH_SIZE"),
            (vec![("EMBEDDINGS_BATCH_SIZE", "4096")], "EMBEDDINGS_BATCH_SIZE"),
            (vec![("EMBEDDINGS_TIMEOUT_MS", "0")], "EMBEDDINGS_TIMEOUT_MS"),
            (vec![("EMBEDDINGS_BREAKER_FAILURES", "x")], "EMBEDDINGS_BREAKER_FAILURES"),
        ] {
            let e = parse(&pairs).unwrap_err();
            assert_eq!(e.var, var, "{pairs:?}: {e}");
        }
    }
}
