//! `Authorization: Bearer <api key>` → the key's record (tenant and scopes), and scope checks.
//!
//! Keys are looked up by their SHA-256 digest. Found keys are cached for a few seconds so a
//! busy client does not cost a store round trip per request; unknown keys are never cached
//! (a flood of random keys cannot grow the cache).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use poem_openapi::{SecurityScheme, auth::Bearer};
use wharf_jobs::{
    Store,
    keys::{ApiKeyRecord, Scope, hash_key},
};

use crate::problem::Problem;

/// An API key, sent as `Authorization: Bearer wharf_…`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "wharf API key")]
pub struct ApiKey(Bearer);

const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 4096;

pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<String, (Instant, ApiKeyRecord)>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Authenticator { store, cache: Mutex::new(HashMap::new()) }
    }

    /// The key's record if it exists and grants `scope`: 401 for an unknown key, 403 naming
    /// the scope otherwise. Records the tenant on the request's span.
    pub async fn authorize(&self, key: &ApiKey, scope: Scope) -> Result<ApiKeyRecord, Problem> {
        let record = self.lookup(&key.0.token).await?;
        tracing::Span::current().record("tenant", record.tenant.as_str());
        if !record.allows(scope) {
            return Err(Problem::forbidden(scope.as_str()));
        }
        Ok(record)
    }

    async fn lookup(&self, secret: &str) -> Result<ApiKeyRecord, Problem> {
        let hash = hash_key(secret);
        if let Some(record) = self.cached(&hash) {
            return Ok(record);
        }
        let record = self.store.api_key(&hash).await?.ok_or_else(Problem::invalid_key)?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, (at, _)| now.duration_since(*at) < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(hash, (Instant::now(), record.clone()));
        Ok(record)
    }

    fn cached(&self, hash: &str) -> Option<ApiKeyRecord> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(hash) {
            Some((at, record)) if at.elapsed() < CACHE_TTL => Some(record.clone()),
            _ => None,
        }
    }
}
