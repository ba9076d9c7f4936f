//! The email pool's handler: builds a MIME message from an [`EmailJob`] and hands it to the
//! configured provider (`outbox` files or an SMTP relay).
//!
//! The `Message-ID` is derived from the job id (`<{job_id}@wharf>`), so every attempt of a
//! job sends the same message. SMTP 5xx replies make a job fail permanently (it goes to the
//! dead-letter queue at once); 4xx replies, refused connections, timeouts and TLS failures
//! are retried. See [`config`] for the environment variables.

pub mod config;
pub mod message;
mod outbox;
mod smtp;

use async_trait::async_trait;
use wharf_jobs::{config::ConfigError, kinds::email::EmailJob};

pub use config::{
    DEFAULT_SMTP_PORT, DEFAULT_TIMEOUT, EmailConfig, EmailProviderConfig, SmtpConfig,
    SmtpCredentials,
};
pub use message::{InvalidMessage, JOB_ID_HEADER, build_message, message_id_for};

use crate::handler::{Handler, JobContext, JobError, JobResult};
use outbox::OutboxProvider;
use smtp::SmtpProvider;

/// Sends [`EmailJob`]s through one provider. The provider's transport (for SMTP, a pool of
/// connections) is made once and shared by every job the handler runs.
pub struct EmailHandler {
    provider: Provider,
}

enum Provider {
    Outbox(OutboxProvider),
    Smtp(Box<SmtpProvider>),
}

impl Provider {
    fn name(&self) -> &'static str {
        match self {
            Provider::Outbox(_) => "outbox",
            Provider::Smtp(_) => "smtp",
        }
    }
}

impl EmailHandler {
    /// Prepares the provider: creates the outbox directory, or sets up SMTP TLS (reading
    /// `SMTP_TLS_CA_FILE`). Errors name the variable to fix. Connects to nothing yet.
    pub fn new(cfg: &EmailConfig) -> Result<Self, ConfigError> {
        let provider = match &cfg.provider {
            EmailProviderConfig::Outbox { dir } => Provider::Outbox(OutboxProvider::new(dir)?),
            EmailProviderConfig::Smtp(smtp) => {
                Provider::Smtp(Box::new(SmtpProvider::new(smtp, cfg.timeout)?))
            }
        };
        Ok(EmailHandler { provider })
    }

    /// `outbox` or `smtp`.
    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }
}

#[async_trait]
impl Handler<EmailJob> for EmailHandler {
    #[tracing::instrument(
        name = "email.send",
        skip_all,
        fields(
            job_id = %ctx.id,
            attempt = ctx.attempt,
            provider = self.provider.name(),
            recipients = job.to.len() + job.cc.len() + job.bcc.len(),
        )
    )]
    async fn handle(&self, ctx: &JobContext, job: EmailJob) -> JobResult {
        let provider = self.provider.name();
        let message =
            build_message(&ctx.id, &job).map_err(|e| JobError::permanent(e.to_string()))?;
        let message_id = message_id_for(&ctx.id);
        let sent = match &self.provider {
            Provider::Outbox(p) => p.send(&message).await,
            Provider::Smtp(p) => p.send(&message).await,
        };
        match sent {
            Ok(mut result) => {
                metrics::counter!("wharf_email_sent_total", "provider" => provider).increment(1);
                tracing::info!(%message_id, "email sent");
                result.insert("provider".into(), provider.into());
                result.insert("message_id".into(), message_id.into());
                Ok(Some(serde_json::Value::Object(result)))
            }
            Err(err) => {
                tracing::warn!(%message_id, permanent = err.is_permanent(), error = %err, "email not sent");
                Err(err)
            }
        }
    }
}
