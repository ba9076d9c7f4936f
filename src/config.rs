//! All of wharf's configuration, read from the environment once at start and validated: a bad
//! value stops the process with a message naming the variable.

use std::{path::PathBuf, time::Duration};

use wharf_jobs::{
    StoreConfig,
    config::{ConfigError, Env},
    objects::config::{ObjectsConfig, offload_threshold},
};
use wharf_workers::runtime::RuntimeConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub env: Env,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub port: u16,
    pub host: String,
    pub public_url: String,
    pub runtime: RuntimeConfig,
    /// Object storage (`STORAGE_*`): large job payloads, tenant files.
    pub objects: ObjectsConfig,
    /// Payloads above this many bytes are kept in object storage (`PAYLOAD_OFFLOAD_BYTES`).
    pub offload_bytes: usize,
    /// `/metrics` and `/healthz` of workers and schedulers (`METRICS_PORT`, default 9090; `0`
    /// turns it off). The API roles serve `/metrics` on `PORT`.
    pub metrics_port: Option<u16>,
}

impl Config {
    /// `default_host` differs by command: `serve` is a laptop tool and stays on loopback.
    pub fn load(env: Env, default_host: &str) -> Result<Config, ConfigError> {
        let data_dir = PathBuf::from(env.get("WHARF_DATA_DIR").unwrap_or("./wharf-data"));
        let url = match env.get("DATABASE_URL") {
            Some(u) => u.to_string(),
            None => format!("sqlite://{}", data_dir.join("wharf.db").display()),
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:")) {
            return Err(ConfigError::new("DATABASE_URL", "must start with postgres:// or sqlite://"));
        }
        if url.contains(":memory:") {
            return Err(ConfigError::new("DATABASE_URL", "an in-memory SQLite database would lose accepted jobs"));
        }
        let pool_min = env.parse_or("POSTGRES_POOL_MIN", 2u32)?;
        let pool_max = env.parse_or("POSTGRES_POOL_MAX", 10u32)?;
        if pool_max == 0 || pool_min > pool_max {
            return Err(ConfigError::new("POSTGRES_POOL_MAX", "must be at least 1 and not below POSTGRES_POOL_MIN"));
        }
        let port = env.parse_or("PORT", 4000u16)?;
        let host = env.get("WHARF_HOST").unwrap_or(default_host).to_string();
        let shown_host = if host == "0.0.0.0" || host == "::" { "127.0.0.1" } else { host.as_str() };
        let public_url = env
            .get("WHARF_PUBLIC_URL")
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{shown_host}:{port}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(ConfigError::new("WHARF_PUBLIC_URL", "must be an http:// or https:// URL"));
        }
        let runtime = runtime_config(&env)?;
        let metrics_port = Some(env.parse_or("METRICS_PORT", 9090u16)?).filter(|p| *p != 0);
        wharf_jobs::kinds::embedding::EmbedLimits::from_env(&env)?; // read by the API; checked at start
        let objects = ObjectsConfig::from_env(&env, &data_dir)?;
        let offload_bytes = offload_threshold(&env)?;
        // The API's email route reads it again; checked here so that a bad value stops `wharf api` too.
        wharf_jobs::email::attachments_max_bytes(&env)?;
        Ok(Config {
            objects,
            offload_bytes,
            data_dir,
            store: StoreConfig { url, pool_min, pool_max },
            port,
            host,
            public_url,
            runtime,
            metrics_port,
            env,
        })
    }
}

fn runtime_config(env: &Env) -> Result<RuntimeConfig, ConfigError> {
    let d = RuntimeConfig::default();
    let concurrency = env.parse_or("WORKER_CONCURRENCY", d.concurrency)?;
    if concurrency == 0 {
        return Err(ConfigError::new("WORKER_CONCURRENCY", "must be at least 1"));
    }
    let lease = env.secs_or("WORKER_LEASE_SECONDS", d.lease)?;
    if lease < Duration::from_secs(1) {
        return Err(ConfigError::new("WORKER_LEASE_SECONDS", "must be at least 1"));
    }
    let heartbeat_interval = env.millis_or("WORKER_HEARTBEAT_MS", lease / 3)?;
    if heartbeat_interval >= lease || heartbeat_interval.is_zero() {
        return Err(ConfigError::new("WORKER_HEARTBEAT_MS", "must be above 0 and well below the lease"));
    }
    let poll_interval = env.millis_or("WORKER_POLL_INTERVAL_MS", d.poll_interval)?;
    if poll_interval.is_zero() {
        return Err(ConfigError::new("WORKER_POLL_INTERVAL_MS", "must be above 0"));
    }
    let claim_batch = env.parse_or("WORKER_CLAIM_BATCH", d.claim_batch)?;
    if claim_batch == 0 {
        return Err(ConfigError::new("WORKER_CLAIM_BATCH", "must be at least 1"));
    }
    Ok(RuntimeConfig {
        concurrency,
        prefetch: env.parse_or("WORKER_PREFETCH", concurrency)?,
        claim_batch,
        poll_interval,
        lease,
        heartbeat_interval,
        rescue_interval: env.millis_or("WORKER_RESCUE_INTERVAL_MS", (lease / 6).max(Duration::from_millis(200)))?,
        shutdown_grace: env.secs_or("WORKER_SHUTDOWN_GRACE_SECONDS", d.shutdown_grace)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_an_embedded_sqlite_file() {
        let c = Config::load(Env::default(), "127.0.0.1").unwrap();
        assert_eq!(c.store.url, "sqlite://./wharf-data/wharf.db");
        assert_eq!(c.port, 4000);
        assert_eq!(c.public_url, "http://127.0.0.1:4000");
        assert_eq!(c.runtime.lease, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, val) in [
            ("PORT", "http"),
            ("METRICS_PORT", "metrics"),
            ("DATABASE_URL", "mysql://x"),
            ("WORKER_CONCURRENCY", "0"),
            ("POSTGRES_POOL_MAX", "0"),
            ("WHARF_PUBLIC_URL", "ftp://x"),
            ("WORKER_SHUTDOWN_GRACE_SECONDS", "soon"),
        ] {
            let err = Config::load(Env::from_pairs([(var, val)]), "0.0.0.0").unwrap_err();
            assert_eq!(err.var, var, "{val}");
        }
    }
}
