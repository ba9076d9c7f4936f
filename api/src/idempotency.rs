//! The `Idempotency-Key` header: validation, and the look-up / save around operations that are
//! not an enqueue (those store the key in the enqueue's own transaction).

use wharf_jobs::{
    Store,
    idempotency::{IdempotencyKey, StoredResponse},
};

use crate::problem::Problem;

pub const HEADER: &str = "Idempotency-Key";
pub const MAX_LEN: usize = 255;

/// Checks the header's value: 1–255 visible ASCII characters.
pub fn parse_header(value: Option<&str>) -> Result<Option<String>, Problem> {
    let Some(v) = value else { return Ok(None) };
    if v.is_empty() || v.len() > MAX_LEN {
        return Err(Problem::invalid_field(HEADER, format!("must be 1–{MAX_LEN} characters long")));
    }
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::invalid_field(HEADER, "must consist of visible ASCII characters (no spaces)"));
    }
    Ok(Some(v.to_string()))
}

/// What to do before running an operation under `key`.
pub enum Prior {
    /// The key is new: run the operation, then [`save`] its response.
    Fresh,
    /// The same request was made with this key: answer with the stored response.
    Repeat(StoredResponse),
}

/// Looks `key` up for `tenant`: a stored response for the same request is a repeat, one for a
/// different request a 422.
pub async fn lookup(store: &dyn Store, tenant: &str, key: &IdempotencyKey) -> Result<Prior, Problem> {
    match store.idempotency_lookup(tenant, &key.key).await? {
        None => Ok(Prior::Fresh),
        Some((fingerprint, response)) if fingerprint == key.fingerprint => Ok(Prior::Repeat(response)),
        Some(_) => Err(Problem::idempotency_mismatch(&key.key)),
    }
}

/// Stores the response of an operation that ran. A failure is logged, not returned: the
/// operation happened, and answering 500 would invite the client to repeat it.
pub async fn save(store: &dyn Store, tenant: &str, key: &IdempotencyKey, response: &StoredResponse) {
    if let Err(e) = store.idempotency_save(tenant, key, response).await {
        tracing::error!(error = %e, key = %key.key, "could not store the idempotency key's response");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        assert_eq!(parse_header(None).unwrap(), None);
        assert_eq!(parse_header(Some("abc-123_:/")).unwrap().as_deref(), Some("abc-123_:/"));
        assert_eq!(parse_header(Some(&"k".repeat(255))).unwrap().map(|k| k.len()), Some(255));
        for bad in ["", "has space", "tab\there", "é", &"k".repeat(256)] {
            let p = parse_header(Some(bad)).unwrap_err();
            assert_eq!(p.status().as_u16(), 400, "{bad:?}");
            assert_eq!(p.body().errors.as_ref().unwrap()[0].field, HEADER);
        }
    }
}
