//! The SSRF guard at delivery time. The HTTP client resolves host names only through
//! [`GuardedResolver`]: it resolves with the system resolver, refuses the whole name if any
//! address is not allowed by the [`AddressPolicy`], and hands the client exactly the addresses
//! it checked, so a second DNS answer (rebinding) can never be the one connected to. Literal
//! addresses never reach a resolver; [`check_url`] checks them (and the scheme) first.

use std::{net::SocketAddr, sync::Arc};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;
use wharf_jobs::webhooks::AddressPolicy;

/// A target the policy refuses; found in a request error's source chain by [`refusal`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

pub struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` resolves to no address").into());
            }
            for a in &addrs {
                if let Err(why) = policy.check_ip(a.ip()) {
                    return Err(Box::new(Refused(format!("`{host}` resolves to {why}"))) as _);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Checks the URL before any connection: scheme, credentials, literal addresses.
pub fn check_url(policy: &AddressPolicy, url: &str) -> Result<Url, Refused> {
    policy.check_url(url).map_err(|why| Refused(format!("the URL {why}")))
}

/// The guard's refusal behind a request error, if that is why it failed.
pub fn refusal(err: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_jobs::webhooks::net::parse_cidrs;

    #[tokio::test]
    async fn webhooks_resolver_refuses_names_of_loopback_unless_allowed() {
        let strict = GuardedResolver { policy: Arc::new(AddressPolicy { allow_http: true, allowed: vec![] }) };
        let err = strict.resolve("localhost".parse().unwrap()).await.err().expect("refused");
        let refused = refusal(err.as_ref()).expect("a refusal");
        assert!(refused.0.contains("loopback"), "{refused}");

        let open = GuardedResolver {
            policy: Arc::new(AddressPolicy { allow_http: true, allowed: parse_cidrs("127.0.0.0/8,::1").unwrap() }),
        };
        let addrs: Vec<_> = open.resolve("localhost".parse().unwrap()).await.expect("allowed").collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[test]
    fn webhooks_literal_addresses_are_checked_before_connecting() {
        let p = AddressPolicy { allow_http: true, allowed: vec![] };
        assert!(check_url(&p, "http://[::ffff:127.0.0.1]/").is_err());
        assert!(check_url(&p, "http://169.254.169.254/").is_err());
        assert!(check_url(&AddressPolicy::default(), "http://example.com/").unwrap_err().0.contains("https"));
    }
}
