//! Which object storage a process uses: S3 when `STORAGE_BUCKET` is set, otherwise a local
//! directory (`STORAGE_DIR`, default `$WHARF_DATA_DIR/objects` — the `serve` setup; processes on
//! several hosts need a bucket). Also the large-payload threshold (`PAYLOAD_OFFLOAD_BYTES`).

use std::{path::Path, path::PathBuf, sync::Arc};

use super::{ObjectStore, local::LocalObjects, s3::S3Config, s3::S3Objects};
use crate::config::{ConfigError, Env};

/// Job payloads above this many bytes go to object storage (PRODUCT §4).
pub const DEFAULT_OFFLOAD_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectsConfig {
    Local { dir: PathBuf },
    S3(S3Config),
}

impl ObjectsConfig {
    pub fn from_env(env: &Env, data_dir: &Path) -> Result<ObjectsConfig, ConfigError> {
        let backend = env.get("STORAGE_BACKEND").map(str::to_ascii_lowercase);
        let s3 = match backend.as_deref() {
            None => env.get("STORAGE_BUCKET").is_some(),
            Some("s3") => true,
            Some("local") => false,
            Some(other) => {
                return Err(ConfigError::new("STORAGE_BACKEND", format!("`{other}` is not one of s3, local")));
            }
        };
        if !s3 {
            let dir = env.get("STORAGE_DIR").map(PathBuf::from).unwrap_or_else(|| data_dir.join("objects"));
            return Ok(ObjectsConfig::Local { dir });
        }
        let bucket = env.require("STORAGE_BUCKET")?.to_string();
        let endpoint = env.get("STORAGE_ENDPOINT").map(str::to_string);
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ConfigError::new("STORAGE_ENDPOINT", "must be an http:// or https:// URL"));
        }
        let credentials = match (env.get("STORAGE_ACCESS_KEY_ID"), env.get("STORAGE_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some((id.to_string(), secret.to_string())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new("STORAGE_SECRET_ACCESS_KEY", "is required with STORAGE_ACCESS_KEY_ID"));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new("STORAGE_ACCESS_KEY_ID", "is required with STORAGE_SECRET_ACCESS_KEY"));
            }
        };
        Ok(ObjectsConfig::S3(S3Config {
            bucket,
            region: env.get("STORAGE_REGION").or(env.get("AWS_REGION")).unwrap_or("us-east-1").to_string(),
            endpoint,
            force_path_style: env.bool_or("STORAGE_FORCE_PATH_STYLE", false)?,
            credentials,
        }))
    }

    pub async fn open(&self) -> Arc<dyn ObjectStore> {
        match self {
            ObjectsConfig::Local { dir } => Arc::new(LocalObjects::new(dir)),
            ObjectsConfig::S3(cfg) => Arc::new(S3Objects::connect(cfg).await),
        }
    }

    /// For start-up logs (no secrets).
    pub fn describe(&self) -> String {
        match self {
            ObjectsConfig::Local { dir } => format!("directory {}", dir.display()),
            ObjectsConfig::S3(c) => match &c.endpoint {
                Some(e) => format!("s3://{} at {e}", c.bucket),
                None => format!("s3://{} ({})", c.bucket, c.region),
            },
        }
    }
}

/// `PAYLOAD_OFFLOAD_BYTES` (default 256 KiB).
pub fn offload_threshold(env: &Env) -> Result<usize, ConfigError> {
    let n = env.parse_or("PAYLOAD_OFFLOAD_BYTES", DEFAULT_OFFLOAD_BYTES)?;
    if n < 1024 {
        return Err(ConfigError::new("PAYLOAD_OFFLOAD_BYTES", "must be at least 1024"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_selects_s3_and_bad_values_name_their_variable() {
        let dir = Path::new("/data");
        assert_eq!(
            ObjectsConfig::from_env(&Env::default(), dir).unwrap(),
            ObjectsConfig::Local { dir: "/data/objects".into() }
        );
        let env = Env::from_pairs([
            ("STORAGE_BUCKET", "b"),
            ("STORAGE_ENDPOINT", "http://127.0.0.1:9000"),
            ("STORAGE_FORCE_PATH_STYLE", "true"),
            ("STORAGE_ACCESS_KEY_ID", "ak"),
            ("STORAGE_SECRET_ACCESS_KEY", "sk"),
        ]);
        let ObjectsConfig::S3(c) = ObjectsConfig::from_env(&env, dir).unwrap() else { panic!("s3 expected") };
        assert!(c.force_path_style && c.region == "us-east-1" && c.credentials.is_some());
        assert!(!format!("{c:?}").contains("sk"));
        for (var, pairs) in [
            ("STORAGE_BUCKET", vec![("STORAGE_BACKEND", "s3")]),
            ("STORAGE_BACKEND", vec![("STORAGE_BACKEND", "ftp")]),
            ("STORAGE_ENDPOINT", vec![("STORAGE_BUCKET", "b"), ("STORAGE_ENDPOINT", "minio:9000")]),
            ("STORAGE_SECRET_ACCESS_KEY", vec![("STORAGE_BUCKET", "b"), ("STORAGE_ACCESS_KEY_ID", "a")]),
            ("STORAGE_FORCE_PATH_STYLE", vec![("STORAGE_BUCKET", "b"), ("STORAGE_FORCE_PATH_STYLE", "maybe")]),
        ] {
            assert_eq!(ObjectsConfig::from_env(&Env::from_pairs(pairs), dir).unwrap_err().var, var);
        }
        assert_eq!(offload_threshold(&Env::default()).unwrap(), 256 * 1024);
        assert_eq!(
            offload_threshold(&Env::from_pairs([("PAYLOAD_OFFLOAD_BYTES", "x")])).unwrap_err().var,
            "PAYLOAD_OFFLOAD_BYTES"
        );
    }
}
