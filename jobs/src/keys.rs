//! API keys: random, shown once, stored as a SHA-256 digest (the keys carry 256 bits of
//! entropy, so a slow password hash buys nothing), each belonging to one tenant with scopes.

use std::fmt;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "wharf_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "jobs:write")]
    JobsWrite,
    #[serde(rename = "jobs:read")]
    JobsRead,
    #[serde(rename = "webhooks:manage")]
    WebhooksManage,
    #[serde(rename = "dlq:read")]
    DlqRead,
    #[serde(rename = "dlq:write")]
    DlqWrite,
    /// Every scope.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 6] =
        [Scope::JobsWrite, Scope::JobsRead, Scope::WebhooksManage, Scope::DlqRead, Scope::DlqWrite, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsWrite => "jobs:write",
            Scope::JobsRead => "jobs:read",
            Scope::WebhooksManage => "webhooks:manage",
            Scope::DlqRead => "dlq:read",
            Scope::DlqWrite => "dlq:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Parses a comma-separated list, naming the first unknown scope.
    pub fn parse_list(s: &str) -> Result<Vec<Scope>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let scope = Scope::parse(part).ok_or_else(|| {
                let known: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope `{part}` (known: {})", known.join(", "))
            })?;
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        if out.is_empty() {
            return Err("at least one scope is required".into());
        }
        Ok(out)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key as stored: never the key itself.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant: String,
    pub scopes: Vec<Scope>,
}

impl ApiKeyRecord {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

/// A freshly generated key: `secret` is shown once, `hash` is what the store keeps.
pub struct NewApiKey {
    pub id: String,
    pub secret: String,
    pub hash: String,
}

impl NewApiKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let secret = format!("{KEY_PREFIX}{body}");
        let id = format!("key_{}", &hash_key(&secret)[..16]);
        NewApiKey { hash: hash_key(&secret), secret, id }
    }
}

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Tenants are ids other systems chose: keep them to a safe, printable alphabet.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tenant `{tenant}`: use 1–64 characters of A–Z, a–z, 0–9, `-`, `_`, `.`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_hash_matches() {
        let a = NewApiKey::generate();
        let b = NewApiKey::generate();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_PREFIX));
        assert_eq!(hash_key(&a.secret), a.hash);
        assert_ne!(a.hash, a.secret);
    }

    #[test]
    fn scopes_parse_and_name_unknowns() {
        assert_eq!(Scope::parse_list("jobs:write, dlq:read").unwrap(), vec![Scope::JobsWrite, Scope::DlqRead]);
        assert!(Scope::parse_list("jobs:write,root").unwrap_err().contains("`root`"));
        assert!(Scope::parse_list("").is_err());
    }

    #[test]
    fn admin_allows_everything() {
        let k = ApiKeyRecord { id: "k".into(), tenant: "t".into(), scopes: vec![Scope::Admin] };
        assert!(Scope::ALL.iter().all(|s| k.allows(*s)));
        let r = ApiKeyRecord { id: "k".into(), tenant: "t".into(), scopes: vec![Scope::JobsRead] };
        assert!(r.allows(Scope::JobsRead) && !r.allows(Scope::JobsWrite));
    }
}
