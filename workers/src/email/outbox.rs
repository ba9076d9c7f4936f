//! The outbox provider: each message becomes an `.eml` file in a directory (lettre's file
//! transport). The embedded default: nothing leaves the machine.

use std::path::{Path, PathBuf};

use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use wharf_jobs::config::ConfigError;

use crate::handler::JobError;

pub(super) struct OutboxProvider {
    dir: PathBuf,
    transport: AsyncFileTransport<Tokio1Executor>,
}

impl OutboxProvider {
    pub(super) fn new(dir: &Path) -> Result<Self, ConfigError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ConfigError::new("EMAIL_OUTBOX_DIR", format!("cannot create {}: {e}", dir.display())))?;
        Ok(OutboxProvider { dir: dir.to_path_buf(), transport: AsyncFileTransport::new(dir) })
    }

    pub(super) async fn send(&self, message: &Message) -> Result<serde_json::Map<String, serde_json::Value>, JobError> {
        // Someone may have removed the directory since start-up (a cleanup, a test).
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| JobError::transient(format!("outbox: cannot create {}: {e}", self.dir.display())))?;
        let id = self
            .transport
            .send(message.clone())
            .await
            .map_err(|e| JobError::transient(format!("outbox: cannot write into {}: {e}", self.dir.display())))?;
        let file = self.dir.join(format!("{id}.eml"));
        let mut out = serde_json::Map::new();
        out.insert("file".into(), file.display().to_string().into());
        Ok(out)
    }
}
