//! The one place where job kinds meet their handlers and retry policies.

use std::{path::Path, sync::Arc, time::Duration};

use wharf_jobs::{
    Store,
    config::{ConfigError, Env},
    kinds::webhook::WebhookDeliveryJob,
    kinds::{diagnostic::DiagnosticJob, email::EmailJob, purge::PurgeJob},
    objects::config::ObjectsConfig,
    retry::RetryPolicy,
    webhooks::WebhookSettings,
};

use crate::{
    diagnostic::DiagnosticHandler,
    email::{EmailConfig, EmailHandler},
    purge::PurgeHandler,
    registry::Registry,
    webhooks::{self, WebhookHandler},
};

/// Defaults inherited from the replaced system (PRODUCT §3).
pub const EMAIL_RETRY: RetryPolicy = RetryPolicy::new(5, Duration::from_secs(30), Duration::from_secs(600));
/// Purges: 3 attempts (PRODUCT §3).
pub const PURGE_RETRY: RetryPolicy = RetryPolicy::new(3, Duration::from_secs(60), Duration::from_secs(900));
pub const DIAGNOSTIC_RETRY: RetryPolicy = RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(10));

/// `{PREFIX}_MAX_ATTEMPTS`, `{PREFIX}_RETRY_BASE_MS`, `{PREFIX}_RETRY_MAX_MS` over the defaults.
pub fn retry_from_env(env: &Env, prefix: &str, default: RetryPolicy) -> Result<RetryPolicy, ConfigError> {
    let max_var = format!("{prefix}_MAX_ATTEMPTS");
    let max_attempts = env.parse_or::<i32>(&max_var, default.max_attempts)?;
    if max_attempts < 1 {
        return Err(ConfigError::new(&max_var, "must be at least 1"));
    }
    let base = env.millis_or(&format!("{prefix}_RETRY_BASE_MS"), default.base)?;
    let max_name = format!("{prefix}_RETRY_MAX_MS");
    let max = env.millis_or(&max_name, default.max)?;
    if max < base {
        return Err(ConfigError::new(&max_name, "must not be smaller than the base delay"));
    }
    Ok(RetryPolicy { max_attempts, base, max, jitter: default.jitter })
}

/// Every kind this build can run, configured from the environment.
pub fn registry(env: &Env, data_dir: &Path, store: &Arc<dyn Store>) -> Result<Registry, ConfigError> {
    let mut r = Registry::new();
    let email = EmailConfig::from_env(env, &data_dir.join("outbox"))?;
    let objects = ObjectsConfig::from_env(env, data_dir)?;
    let email_handler = EmailHandler::new(&email)?.with_store(store.clone()).with_objects_config(objects);
    r.register::<EmailJob, _>(email_handler, retry_from_env(env, "EMAIL", EMAIL_RETRY)?);
    r.register::<PurgeJob, _>(
        PurgeHandler::from_env(env, data_dir)?.with_store(store.clone()),
        retry_from_env(env, "PURGE", PURGE_RETRY)?,
    );
    crate::embeddings::register(&mut r, env, store.db())?;
    r.register::<DiagnosticJob, _>(DiagnosticHandler, retry_from_env(env, "DIAGNOSTIC", DIAGNOSTIC_RETRY)?);
    let hooks = WebhookSettings::from_env(env)?;
    r.register::<WebhookDeliveryJob, _>(
        WebhookHandler::new(store.clone(), hooks.clone()),
        webhooks::retry_policy(&hooks),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policy_from_env_names_bad_variables() {
        let env = Env::from_pairs([("EMAIL_MAX_ATTEMPTS", "2"), ("EMAIL_RETRY_BASE_MS", "100")]);
        let p = retry_from_env(&env, "EMAIL", EMAIL_RETRY).unwrap();
        assert_eq!((p.max_attempts, p.base, p.max), (2, Duration::from_millis(100), Duration::from_secs(600)));
        let env = Env::from_pairs([("EMAIL_MAX_ATTEMPTS", "0")]);
        assert_eq!(retry_from_env(&env, "EMAIL", EMAIL_RETRY).unwrap_err().var, "EMAIL_MAX_ATTEMPTS");
        let env = Env::from_pairs([("EMAIL_RETRY_BASE_MS", "5000"), ("EMAIL_RETRY_MAX_MS", "10")]);
        assert_eq!(retry_from_env(&env, "EMAIL", EMAIL_RETRY).unwrap_err().var, "EMAIL_RETRY_MAX_MS");
    }
}
