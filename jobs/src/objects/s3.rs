//! S3 (or any S3-compatible service: a custom endpoint with path-style addressing) through
//! aws-sdk-s3. The HTTP client is hyper + rustls with ring, the TLS stack wharf already builds.

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
    error::{DisplayErrorContext, ProvideErrorMetadata},
    primitives::ByteStream,
    types::{Delete, ObjectIdentifier},
};
use aws_smithy_http_client::{
    Builder,
    tls::{Provider, rustls_provider::CryptoMode},
};
use chrono::{DateTime, TimeZone, Utc};

use super::{ObjectError, ObjectInfo, ObjectPage, ObjectStore, check_key};

/// Where and how to reach the bucket (`STORAGE_*`).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// A custom endpoint (`http://127.0.0.1:9000`); `None` = AWS.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    /// Static credentials; `None` = the default AWS credential chain (env, profile, web
    /// identity, ECS, IMDS).
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("credentials", &self.credentials.as_ref().map(|(id, _)| (id, "***")))
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct S3Objects {
    client: Client,
    bucket: String,
}

/// Most keys one `DeleteObjects` call takes.
const DELETE_BATCH: usize = 1000;

impl S3Objects {
    pub async fn connect(cfg: &S3Config) -> S3Objects {
        let http = Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(cfg.region.clone())).http_client(http);
        if let Some((id, secret)) = &cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "wharf-static"));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared).force_path_style(cfg.force_path_style);
        if let Some(endpoint) = &cfg.endpoint {
            b = b.endpoint_url(endpoint);
        }
        S3Objects { client: Client::from_conf(b.build()), bucket: cfg.bucket.clone() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

fn backend<E: std::error::Error>(what: &str, e: E) -> ObjectError {
    ObjectError::Backend(format!("S3 {what}: {}", DisplayErrorContext(e)))
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> DateTime<Utc> {
    Utc.timestamp_opt(t.secs(), t.subsec_nanos()).single().unwrap_or_default()
}

#[async_trait]
impl ObjectStore for S3Objects {
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: Option<&str>) -> Result<(), ObjectError> {
        check_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(content_type.map(str::to_string))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| backend("PutObject", e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectError> {
        check_key(key)?;
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) => {
                let e = e.into_service_error();
                if e.is_no_such_key() || e.code() == Some("NotFound") {
                    return Err(ObjectError::NotFound(key.to_string()));
                }
                return Err(backend("GetObject", e));
            }
        };
        let body = out.body.collect().await.map_err(|e| backend("GetObject body", e))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn delete(&self, keys: &[String]) -> Result<u64, ObjectError> {
        for chunk in keys.chunks(DELETE_BATCH) {
            let objects = chunk
                .iter()
                // Any key a listing returned may be deleted (folder markers `a/b/` included).
                .map(|k| {
                    if k.is_empty() {
                        return Err(ObjectError::InvalidKey(k.clone(), "must not be empty".into()));
                    }
                    ObjectIdentifier::builder().key(k).build().map_err(|e| backend("DeleteObjects", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| backend("DeleteObjects", e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| backend("DeleteObjects", e))?;
            if let Some(err) = out.errors().first() {
                return Err(ObjectError::Backend(format!(
                    "S3 DeleteObjects: {} of {} keys failed, first `{}`: {} {}",
                    out.errors().len(),
                    chunk.len(),
                    err.key().unwrap_or(""),
                    err.code().unwrap_or(""),
                    err.message().unwrap_or("")
                )));
            }
        }
        Ok(keys.len() as u64)
    }

    async fn list(&self, prefix: &str, limit: u32, continuation: Option<String>) -> Result<ObjectPage, ObjectError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(limit.clamp(1, 1000) as i32)
            .set_continuation_token(continuation)
            .send()
            .await
            .map_err(|e| backend("ListObjectsV2", e))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o.last_modified().map(to_chrono).unwrap_or_default(),
                })
            })
            .collect();
        let next =
            if out.is_truncated() == Some(true) { out.next_continuation_token().map(str::to_string) } else { None };
        Ok(ObjectPage { objects, next })
    }
}
