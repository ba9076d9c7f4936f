//! What the HTTP providers (Resend, Postmark) share: the client, and how an HTTP answer
//! becomes a send error.

use std::time::Duration;

use super::SendError;

/// A provider's `Retry-After` is honoured up to this long (the runtime's backoff takes over).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A client with the provider timeout for the whole request, no redirects, rustls.
pub(super) fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds (rustls, no system configuration)")
}

/// `Retry-After` as seconds or an HTTP date.
pub(super) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default()
        }
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// A request that got no answer: refused, reset, timed out.
pub(super) fn network_error(provider: &str, endpoint: &str, e: &reqwest::Error, timeout: Duration) -> SendError {
    let what = if e.is_timeout() {
        format!("timed out after {} ms", timeout.as_millis())
    } else if e.is_connect() {
        format!("connection failed: {}", source_chain(e))
    } else {
        source_chain(e)
    };
    SendError::Transient { message: format!("{provider} ({endpoint}): {what}"), retry_after: None }
}

fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

/// At most `n` characters of a response body, for error messages.
pub(super) fn excerpt(body: &str, n: usize) -> String {
    let t = body.trim();
    match t.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

/// The usual meaning of an unsuccessful status: 408, 429 and 5xx are transient (with the
/// provider's `Retry-After`); 401 and 403 blame the configuration (the key), so they are
/// transient too and fail over; any other 4xx rejects the message for good.
pub(super) fn classify_status(
    provider: &str,
    status: u16,
    retry_after: Option<Duration>,
    detail: String,
    credential_var: &str,
) -> SendError {
    match status {
        408 | 429 | 500..=599 => {
            SendError::Transient { message: format!("{provider} answered {status}: {detail}"), retry_after }
        }
        401 | 403 => SendError::Transient {
            message: format!("{provider} refused the credentials ({status}; check {credential_var}): {detail}"),
            retry_after,
        },
        _ => SendError::Permanent { message: format!("{provider} rejected the email ({status}): {detail}") },
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::*;

    #[test]
    fn retry_after_seconds_or_date() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("999999"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        let at = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&at).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
    }

    #[test]
    fn statuses() {
        let t = |s| matches!(classify_status("p", s, None, String::new(), "K"), SendError::Transient { .. });
        assert!(t(429) && t(500) && t(503) && t(408) && t(401) && t(403));
        assert!(!t(400) && !t(422) && !t(404));
        assert_eq!(excerpt("  abcdef ", 3), "abc…");
    }
}
