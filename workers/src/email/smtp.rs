//! The SMTP provider: lettre's pooled async transport, and how its errors map to job errors.

use std::{sync::Mutex, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    transport::smtp::{
        self, AsyncSmtpTransportBuilder,
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};
use wharf_jobs::config::ConfigError;

use super::config::SmtpConfig;
use crate::handler::JobError;

/// SMTP replies that blame the relay's configuration (AUTH, TLS policy), not the message:
/// retried, so that an operator who fixes the credentials loses no mail.
const CONFIG_REPLY_CODES: &[u16] = &[530, 534, 535, 538];

pub(super) struct SmtpProvider {
    /// Validated at construction; built into a pool on first use, because lettre's pool
    /// spawns its cleanup task and so needs a running Tokio runtime.
    builder: AsyncSmtpTransportBuilder,
    /// The pool shared by every send; replaced after a send is cut off by the timeout.
    transport: Mutex<Option<AsyncSmtpTransport<Tokio1Executor>>>,
    timeout: Duration,
    endpoint: String,
}

impl SmtpProvider {
    pub(super) fn new(cfg: &SmtpConfig, timeout: Duration) -> Result<Self, ConfigError> {
        let tls_params = || -> Result<TlsParameters, ConfigError> {
            let mut b = TlsParameters::builder(cfg.host.clone());
            if let Some(path) = &cfg.tls_ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    ConfigError::new("SMTP_TLS_CA_FILE", format!("cannot read {}: {e}", path.display()))
                })?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| ConfigError::new("SMTP_TLS_CA_FILE", format!("{}: {e}", path.display())))?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError::new(
                        "SMTP_TLS_CA_FILE",
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                b = b.add_root_certificate(cert);
            }
            let var = if cfg.tls_ca_file.is_some() { "SMTP_TLS_CA_FILE" } else { "SMTP_HOST" };
            b.build_rustls().map_err(|e| ConfigError::new(var, format!("TLS setup failed: {e}")))
        };
        let tls = if cfg.secure {
            Tls::Wrapper(tls_params()?)
        } else if cfg.require_tls {
            Tls::Required(tls_params()?)
        } else {
            Tls::Opportunistic(tls_params()?)
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some(c) = &cfg.credentials {
            if !cfg.secure && !cfg.require_tls {
                tracing::warn!(
                    host = %cfg.host,
                    "SMTP credentials with opportunistic STARTTLS: a relay that offers no STARTTLS \
                     receives them unencrypted; set SMTP_REQUIRE_TLS=true or SMTP_SECURE=true"
                );
            }
            builder = builder.credentials(Credentials::new(c.user.clone(), c.pass.clone()));
        }
        Ok(SmtpProvider {
            builder,
            transport: Mutex::new(None),
            timeout,
            endpoint: format!("{}:{}", cfg.host, cfg.port),
        })
    }

    fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        let mut slot = self.transport.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| self.builder.clone().build()).clone()
    }

    /// Sends over a pooled connection, within the timeout as a whole. (lettre applies its
    /// timeout to connecting only: a relay that accepts the connection and then stalls
    /// would hold the job forever.)
    pub(super) async fn send(&self, message: &Message) -> Result<serde_json::Map<String, serde_json::Value>, JobError> {
        let transport = self.transport();
        let sent = tokio::time::timeout(self.timeout, transport.send(message.clone())).await;
        let Ok(sent) = sent else {
            // The cut-off connection goes back to the pool mid-conversation, where the next
            // send would stall on it: start a fresh pool. The old one closes its connections
            // once the sends still using it finish.
            drop(transport);
            *self.transport.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Err(JobError::transient(format!(
                "smtp relay {} timed out after {} ms",
                self.endpoint,
                self.timeout.as_millis()
            )));
        };
        match sent {
            Ok(resp) => {
                let line = std::iter::once(resp.code().to_string())
                    .chain(resp.message().map(str::to_string))
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut out = serde_json::Map::new();
                out.insert("response".into(), line.into());
                Ok(out)
            }
            Err(e) => Err(self.classify(&e)),
        }
    }

    /// 5xx replies are permanent (except those about AUTH/TLS policy); 4xx replies, network
    /// failures, timeouts and TLS failures are transient. lettre's errors carry the server's
    /// reply text but never the credentials.
    fn classify(&self, e: &smtp::Error) -> JobError {
        let reply = || {
            let code = e.status().map(|c| c.to_string()).unwrap_or_default();
            let text = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default();
            format!("{code} {text}").trim().to_string()
        };
        let code = e.status().map(u16::from);
        if e.is_permanent() {
            if code.is_some_and(|c| CONFIG_REPLY_CODES.contains(&c)) {
                return JobError::transient(format!(
                    "smtp relay {} refused authentication or TLS policy (check SMTP_USER/SMTP_PASS, SMTP_REQUIRE_TLS): {}",
                    self.endpoint,
                    reply()
                ));
            }
            return JobError::permanent(format!("smtp rejected the message: {}", reply()));
        }
        if e.is_transient() {
            return JobError::transient(format!("smtp deferred the message: {}", reply()));
        }
        if e.is_timeout() {
            return JobError::transient(format!(
                "smtp relay {} timed out after {} ms: {e}",
                self.endpoint,
                self.timeout.as_millis()
            ));
        }
        if e.is_tls() {
            return JobError::transient(format!("smtp TLS failure with {}: {e}", self.endpoint));
        }
        JobError::transient(format!("smtp relay {} failed: {e}", self.endpoint))
    }
}
