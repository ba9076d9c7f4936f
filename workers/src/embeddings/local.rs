//! The offline default: pocket-encoder's bundled paraphrase-MiniLM-L3-v2 (4-bit weights in the
//! binary, 384 dims, inputs truncated to 128 tokens). CPU inference runs on the blocking pool;
//! the weights load on first use, once per process.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use pocket_encoder::{Encoder, Error};
use tokio::sync::Semaphore;

use super::provider::{Provider, ProviderError, check_vectors};

/// The model name stored with its vectors (pocket-encoder's coordinate-space id).
pub fn model_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| pocket_encoder::model_info().id)
}

pub const DIMS: usize = 384;

pub struct LocalModel {
    encoder: Arc<OnceLock<Result<Encoder, String>>>,
    /// One inference at a time: candle already spreads a forward pass over the cores, and
    /// concurrent jobs would only fight over them.
    running: Semaphore,
}

impl Default for LocalModel {
    fn default() -> Self {
        LocalModel { encoder: Arc::default(), running: Semaphore::new(1) }
    }
}

#[async_trait]
impl Provider for LocalModel {
    fn name(&self) -> &'static str {
        "local"
    }

    fn default_model(&self) -> &str {
        model_id()
    }

    fn accepts_model(&self, model: &str) -> bool {
        model == model_id()
    }

    fn max_batch(&self) -> usize {
        // pocket-encoder takes up to 4 096 texts per call; wharf's batches stay below 2 048.
        4096
    }

    fn expected_dims(&self, _model: &str) -> Option<usize> {
        Some(DIMS)
    }

    async fn embed(&self, _model: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ProviderError> {
        let n = texts.len();
        let _turn = self.running.acquire().await.expect("the semaphore is never closed");
        let cell = self.encoder.clone();
        let vectors = tokio::task::spawn_blocking(move || {
            let encoder = cell
                .get_or_init(|| Encoder::new().map_err(|e| e.to_string()))
                .as_ref()
                .map_err(|e| ProviderError::Refused { message: format!("the local model does not load: {e}") })?;
            encoder.embed(&texts).map_err(|e| match e {
                Error::Input(m) => ProviderError::BadInput { message: m.to_string() },
                Error::Inference(m) => ProviderError::BadInput { message: m },
            })
        })
        .await
        .map_err(|e| ProviderError::Unavailable { message: format!("the local model's task failed: {e}") })??;
        check_vectors(&vectors, n)?;
        Ok(vectors)
    }
}
