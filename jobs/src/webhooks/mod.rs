//! Webhooks (Standard Webhooks 1.0): endpoint secrets, event-type filters, the address policy
//! of the SSRF guard, encryption of secrets at rest, configuration, and the SQL of endpoints,
//! events and the attempt log ([`repo`]). Delivery itself lives in `wharf-workers`.

pub mod crypto;
pub mod net;
pub mod publish;
pub mod repo;
mod settings;

use std::{fmt, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;

pub use self::{
    crypto::SecretBox,
    net::{AddressPolicy, Cidr},
    publish::{NewEvent, Published, new_event_id, publish, validate_event_id},
    repo::{
        AttemptFilter, AttemptRecord, Delivery, EndpointPatch, EndpointRecord, EventRecord, NewAttempt, NewEndpoint,
        WebhookRepo,
    },
    settings::{
        DEFAULT_DISABLE_AFTER, DEFAULT_RETRY_SCHEDULE, KEY_FILE, WebhookSettings, parse_duration, parse_schedule,
        serve_defaults,
    },
};

pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated secret (the spec allows 24–64).
pub const SECRET_BYTES: usize = 32;
/// How long the previous secret keeps signing after a rotation.
pub const SECRET_OVERLAP: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_TIMEOUT_MS: u32 = 15_000;
pub const MAX_TIMEOUT_MS: u32 = 60_000;
pub const DEFAULT_MAX_CONCURRENCY: u32 = 5;
pub const MAX_CONCURRENCY: u32 = 100;
/// The event wharf emits when it disables a failing endpoint.
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";
/// Most bytes of a receiver's response kept in the attempt log.
pub const RESPONSE_BODY_LIMIT: usize = 4096;
/// Headers wharf sets itself; an endpoint's custom headers may not replace them.
pub const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

/// An endpoint's signing secret, `whsec_` + base64 of 24–64 random bytes. Its `Debug` and
/// `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        WebhookSecret(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
    }

    /// A secret supplied by a client: `whsec_` + standard base64 of 24–64 bytes.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some(b64) = s.strip_prefix(SECRET_PREFIX) else {
            return Err(format!("must start with `{SECRET_PREFIX}`"));
        };
        let bytes = STANDARD.decode(b64).map_err(|_| format!("the part after `{SECRET_PREFIX}` must be base64"))?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(format!("must encode 24 to 64 random bytes, not {}", bytes.len()));
        }
        Ok(WebhookSecret(s.to_string()))
    }

    /// The HMAC key: the base64-decoded part after `whsec_`.
    pub fn key_bytes(&self) -> Vec<u8> {
        STANDARD.decode(&self.0[SECRET_PREFIX.len()..]).unwrap_or_default()
    }

    /// The secret itself, to show once to the client or to encrypt.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// An event type: dot-separated segments of `A-Z a-z 0-9 _ -`, at most 256 characters.
pub fn validate_event_type(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 256
        && s.split('.')
            .all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    if ok { Ok(()) } else { Err(format!("`{s}` is not an event type such as `invoice.paid`")) }
}

/// A filter entry: an exact event type or `prefix.*`.
pub fn validate_filter(s: &str) -> Result<(), String> {
    match s.strip_suffix(".*") {
        Some(prefix) => validate_event_type(prefix).map_err(|_| format!("`{s}` is not `prefix.*` with a valid prefix")),
        None => validate_event_type(s),
    }
}

/// Whether an endpoint with `filters` receives `event_type`; no filters means every type.
pub fn filter_matches(filters: &[String], event_type: &str) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| match f.strip_suffix(".*") {
            Some(prefix) => event_type.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.')),
            None => f == event_type,
        })
}

/// Checks custom headers: valid names, no line breaks in values, none of [`RESERVED_HEADERS`].
pub fn validate_headers<'a>(headers: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    for (name, value) in headers {
        let field = format!("headers.{name}");
        let token = !name.is_empty()
            && name.len() <= 128
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            errs.push((field, "is not a valid header name".to_string()));
        } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            errs.push((field, "is set by wharf and cannot be replaced".to_string()));
        } else if value.len() > 4096 || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            errs.push((field, "must be at most 4096 bytes without line breaks".to_string()));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_and_hide() {
        let s = WebhookSecret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(s.key_bytes().len(), SECRET_BYTES);
        assert_eq!(WebhookSecret::parse(s.expose()).unwrap(), s);
        assert_eq!(format!("{s:?}"), "WebhookSecret(***)");
        assert!(WebhookSecret::parse("nope").is_err());
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert!(WebhookSecret::parse(&format!("whsec_{}", STANDARD.encode([1u8; 8]))).is_err());
        assert!(WebhookSecret::parse(&format!("whsec_{}", STANDARD.encode([1u8; 24]))).is_ok());
    }

    #[test]
    fn webhooks_filters_match_exact_and_prefix() {
        let f = vec!["invoice.*".to_string(), "user.created".to_string()];
        assert!(filter_matches(&f, "invoice.paid"));
        assert!(filter_matches(&f, "invoice.paid.late"));
        assert!(!filter_matches(&f, "invoice"));
        assert!(!filter_matches(&f, "invoices.paid"));
        assert!(filter_matches(&f, "user.created"));
        assert!(!filter_matches(&f, "user.deleted"));
        assert!(filter_matches(&[], "anything.at.all"));
        assert!(validate_filter("invoice.*").is_ok() && validate_filter("a.b").is_ok());
        assert!(validate_filter("*").is_err() && validate_filter("a..b").is_err() && validate_filter("a b").is_err());
    }

    #[test]
    fn webhooks_reserved_headers_are_refused() {
        let h: Vec<(String, String)> = vec![
            ("X-Ok".into(), "v".into()),
            ("Webhook-Signature".into(), "x".into()),
            ("bad name".into(), "v".into()),
            ("X-Split".into(), "a\r\nb".into()),
        ];
        let errs = validate_headers(h.iter().map(|(a, b)| (a, b)));
        let fields: Vec<_> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(fields, vec!["headers.Webhook-Signature", "headers.bad name", "headers.X-Split"]);
    }
}
