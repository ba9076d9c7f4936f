//! A real S3 for tests: moto's server (`moto_server` from the test-tools venv) on a free port,
//! with one bucket, reached path-style like any S3-compatible endpoint.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use wharf_jobs::objects::{
    ObjectStore,
    s3::{S3Config, S3Objects},
};

use super::{free_port, python};

pub struct MotoS3 {
    pub port: u16,
    pub bucket: String,
    child: Child,
}

/// `moto_server` next to the venv's python (`WHARF_PYTHON`), else in the venv
/// `scripts/test-tools.sh` makes by default, else on `PATH`.
fn moto_server() -> PathBuf {
    let py = PathBuf::from(python());
    let tools = std::env::var("WHARF_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/wharf-tools"));
    [py.parent().map(|bin| bin.join("moto_server")), Some(tools.join("venv/bin/moto_server"))]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("moto_server"))
}

impl MotoS3 {
    pub async fn start(bucket: &str) -> MotoS3 {
        let port = free_port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} failed ({e}); run scripts/test-tools.sh", moto_server().display()));
        let mut moto = MotoS3 { port, bucket: bucket.to_string(), child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited ({status}); run scripts/test-tools.sh");
            }
            assert!(Instant::now() < deadline, "moto_server did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // moto does not check signatures: a plain path-style PUT creates the bucket.
        let r =
            reqwest::Client::new().put(format!("{}/{bucket}", moto.endpoint())).send().await.expect("create bucket");
        assert!(r.status().is_success(), "creating bucket {bucket}: {}", r.status());
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn config(&self) -> S3Config {
        S3Config {
            bucket: self.bucket.clone(),
            region: "us-east-1".into(),
            endpoint: Some(self.endpoint()),
            force_path_style: true,
            credentials: Some(("testing".into(), "testing".into())),
        }
    }

    /// The `STORAGE_*` variables that point a wharf process at this bucket.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STORAGE_BUCKET", self.bucket.clone()),
            ("STORAGE_REGION", "us-east-1".into()),
            ("STORAGE_ENDPOINT", self.endpoint()),
            ("STORAGE_FORCE_PATH_STYLE", "true".into()),
            ("STORAGE_ACCESS_KEY_ID", "testing".into()),
            ("STORAGE_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// The bucket through wharf's own S3 backend.
    pub async fn objects(&self) -> Arc<dyn ObjectStore> {
        Arc::new(S3Objects::connect(&self.config()).await)
    }

    /// Every key under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let objects = self.objects().await;
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = objects.list(prefix, 1000, token).await.expect("list");
            keys.extend(page.objects.into_iter().map(|o| o.key));
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        keys.sort();
        keys
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
