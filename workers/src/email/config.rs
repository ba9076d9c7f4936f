//! Email provider configuration read from the environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `EMAIL_PROVIDER` | `outbox`, `smtp`, `resend`, `postmark` or `ses` | `outbox` |
//! | `EMAIL_FALLBACK_PROVIDERS` | comma-separated providers tried in order after a transient failure | none |
//! | `EMAIL_OUTBOX_DIR` | where the outbox writes `.eml` files | the caller's default |
//! | `EMAIL_TIMEOUT_MS` | per-operation timeout of a provider call | `15000` |
//! | `EMAIL_BREAKER_FAILURES` | consecutive transient failures that open a provider's circuit | `5` |
//! | `EMAIL_BREAKER_COOLDOWN_MS` | how long an open circuit skips its provider before one trial | `30000` |
//! | `EMAIL_ATTACHMENTS_MAX_BYTES` | total decoded size of one email's attachments | 10 MiB |
//! | `RESEND_API_KEY` / `RESEND_ENDPOINT` | Resend API key (required for `resend`) / base URL | — / `https://api.resend.com` |
//! | `POSTMARK_TOKEN` / `POSTMARK_ENDPOINT` | Postmark server token (required for `postmark`) / base URL | — / `https://api.postmarkapp.com` |
//! | `POSTMARK_MESSAGE_STREAM` | Postmark message stream | Postmark's default (`outbound`) |
//! | `SES_REGION` | SES region (else `AWS_REGION`; one is required for `ses`) | — |
//! | `SES_ENDPOINT` | SES endpoint URL (a local stand-in) | AWS's |
//! | `SES_CONFIGURATION_SET` | SES configuration set for every send | none |
//! | `SMTP_HOST` | relay host name or IP (required for `smtp`) | — |
//! | `SMTP_PORT` | relay port | `587` |
//! | `SMTP_USER` / `SMTP_PASS` | AUTH credentials, both or neither | none |
//! | `SMTP_SECURE` | `true`: implicit TLS from the first byte (port 465 style) | `false` |
//! | `SMTP_REQUIRE_TLS` | `true`: STARTTLS is required; `false`: used when offered | `false` |
//! | `SMTP_TLS_CA_FILE` | PEM certificates to trust besides the public roots | none |

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use wharf_jobs::config::{ConfigError, Env};

/// The timeout of a provider call when `EMAIL_TIMEOUT_MS` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The SMTP port when `SMTP_PORT` is not set (submission with STARTTLS).
pub const DEFAULT_SMTP_PORT: u16 = 587;

/// Circuit breaker defaults: open after this many consecutive transient failures...
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// ...and let one trial through after this long.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);
pub const DEFAULT_RESEND_ENDPOINT: &str = "https://api.resend.com";
pub const DEFAULT_POSTMARK_ENDPOINT: &str = "https://api.postmarkapp.com";

const PROVIDERS: &str = "outbox, smtp, resend, postmark, ses";

/// How the email pool sends mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConfig {
    /// The primary provider (`EMAIL_PROVIDER`).
    pub provider: EmailProviderConfig,
    /// Tried in order when the providers before them fail transiently (`EMAIL_FALLBACK_PROVIDERS`).
    pub fallbacks: Vec<EmailProviderConfig>,
    /// Timeout of each provider operation (connect, each SMTP command, the data transfer, an
    /// HTTP request).
    pub timeout: Duration,
    pub breaker: BreakerConfig,
    /// Total decoded size of one email's attachments.
    pub attachments_max_bytes: usize,
}

/// The per-provider circuit breaker (in-process: each worker process keeps its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the circuit.
    pub failures: u32,
    /// How long an open circuit skips the provider before letting one trial through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failures: DEFAULT_BREAKER_FAILURES, cooldown: DEFAULT_BREAKER_COOLDOWN }
    }
}

impl EmailConfig {
    /// One provider, no fallbacks, default breaker and attachment limit.
    pub fn new(provider: EmailProviderConfig, timeout: Duration) -> Self {
        EmailConfig {
            provider,
            fallbacks: Vec::new(),
            timeout,
            breaker: BreakerConfig::default(),
            attachments_max_bytes: wharf_jobs::kinds::email::DEFAULT_ATTACHMENTS_MAX_BYTES,
        }
    }

    /// The primary, then the fallbacks.
    pub fn chain(&self) -> impl Iterator<Item = &EmailProviderConfig> {
        std::iter::once(&self.provider).chain(&self.fallbacks)
    }
}

/// A secret from the environment; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendConfig {
    pub api_key: Secret,
    /// Base URL; requests go to `{endpoint}/emails`.
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostmarkConfig {
    pub token: Secret,
    /// Base URL; requests go to `{endpoint}/email` and `{endpoint}/email/withTemplate`.
    pub endpoint: String,
    pub message_stream: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SesConfig {
    pub region: String,
    /// A non-AWS endpoint (a local stand-in); credentials come from the standard AWS chain.
    pub endpoint: Option<String>,
    pub configuration_set: Option<String>,
}

fn endpoint(env: &Env, var: &str, default: &str) -> Result<String, ConfigError> {
    let e = env.get(var).unwrap_or(default).trim_end_matches('/').to_string();
    if !(e.starts_with("http://") || e.starts_with("https://")) {
        return Err(ConfigError::new(var, format!("`{e}` must be an http:// or https:// URL")));
    }
    Ok(e)
}

impl ResendConfig {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(ResendConfig {
            api_key: Secret(env.require("RESEND_API_KEY")?.to_string()),
            endpoint: endpoint(env, "RESEND_ENDPOINT", DEFAULT_RESEND_ENDPOINT)?,
        })
    }
}

impl PostmarkConfig {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(PostmarkConfig {
            token: Secret(env.require("POSTMARK_TOKEN")?.to_string()),
            endpoint: endpoint(env, "POSTMARK_ENDPOINT", DEFAULT_POSTMARK_ENDPOINT)?,
            message_stream: env.get("POSTMARK_MESSAGE_STREAM").map(str::to_string),
        })
    }
}

impl SesConfig {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let region = env
            .get("SES_REGION")
            .or_else(|| env.get("AWS_REGION"))
            .ok_or_else(|| ConfigError::new("SES_REGION", "is required for the ses provider (or set AWS_REGION)"))?
            .to_string();
        let endpoint = match env.get("SES_ENDPOINT") {
            None => None,
            Some(_) => Some(endpoint(env, "SES_ENDPOINT", "")?),
        };
        Ok(SesConfig { region, endpoint, configuration_set: env.get("SES_CONFIGURATION_SET").map(str::to_string) })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailProviderConfig {
    /// Writes each message as an `.eml` file into `dir` (created when missing).
    Outbox { dir: PathBuf },
    /// Sends through an SMTP relay.
    Smtp(SmtpConfig),
    /// Resend's HTTP API.
    Resend(ResendConfig),
    /// Postmark's HTTP API.
    Postmark(PostmarkConfig),
    /// Amazon SES v2 `SendEmail`.
    Ses(SesConfig),
}

impl EmailProviderConfig {
    /// The provider's name as configured and as reported in results and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EmailProviderConfig::Outbox { .. } => "outbox",
            EmailProviderConfig::Smtp(_) => "smtp",
            EmailProviderConfig::Resend(_) => "resend",
            EmailProviderConfig::Postmark(_) => "postmark",
            EmailProviderConfig::Ses(_) => "ses",
        }
    }

    /// Reads the settings of the provider called `name`; `var` is the variable that named it.
    fn from_env(name: &str, var: &str, env: &Env, default_outbox_dir: &Path) -> Result<Self, ConfigError> {
        Ok(match name {
            "outbox" => EmailProviderConfig::Outbox {
                dir: env.get("EMAIL_OUTBOX_DIR").map(PathBuf::from).unwrap_or_else(|| default_outbox_dir.to_path_buf()),
            },
            "smtp" => EmailProviderConfig::Smtp(SmtpConfig::from_env(env)?),
            "resend" => EmailProviderConfig::Resend(ResendConfig::from_env(env)?),
            "postmark" => EmailProviderConfig::Postmark(PostmarkConfig::from_env(env)?),
            "ses" => EmailProviderConfig::Ses(SesConfig::from_env(env)?),
            p if p.contains(',') => {
                return Err(ConfigError::new(
                    var,
                    format!("`{p}`: name one provider here and the fallbacks in EMAIL_FALLBACK_PROVIDERS"),
                ));
            }
            p => return Err(ConfigError::new(var, format!("`{p}` is not a known provider; use one of {PROVIDERS}"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub credentials: Option<SmtpCredentials>,
    /// Implicit TLS (the connection is TLS from the start).
    pub secure: bool,
    /// STARTTLS is required; when false it is used if the server offers it.
    pub require_tls: bool,
    /// Extra PEM root certificates to trust (self-signed relays, tests).
    pub tls_ca_file: Option<PathBuf>,
}

impl SmtpConfig {
    /// A plaintext-or-opportunistic-STARTTLS relay without AUTH, as a starting point.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        SmtpConfig { host: host.into(), port, credentials: None, secure: false, require_tls: false, tls_ca_file: None }
    }

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let host = env.require("SMTP_HOST")?.to_string();
        if host.contains("://") || host.contains(char::is_whitespace) || host.contains('/') {
            return Err(ConfigError::new(
                "SMTP_HOST",
                format!("`{host}` is not a host name or IP address (give the port in SMTP_PORT)"),
            ));
        }
        let port = env.parse_or::<u16>("SMTP_PORT", DEFAULT_SMTP_PORT)?;
        if port == 0 {
            return Err(ConfigError::new("SMTP_PORT", "must be between 1 and 65535"));
        }
        let credentials = match (env.get("SMTP_USER"), env.get("SMTP_PASS")) {
            (Some(user), Some(pass)) => Some(SmtpCredentials { user: user.to_string(), pass: pass.to_string() }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new("SMTP_PASS", "is required when SMTP_USER is set"));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new("SMTP_USER", "is required when SMTP_PASS is set"));
            }
        };
        Ok(SmtpConfig {
            host,
            port,
            credentials,
            secure: env.bool_or("SMTP_SECURE", false)?,
            require_tls: env.bool_or("SMTP_REQUIRE_TLS", false)?,
            tls_ca_file: env.get("SMTP_TLS_CA_FILE").map(PathBuf::from),
        })
    }
}

/// SMTP AUTH credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub user: String,
    pub pass: String,
}

impl fmt::Debug for SmtpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpCredentials").field("user", &self.user).field("pass", &"<redacted>").finish()
    }
}

impl EmailConfig {
    /// Reads the email variables; `default_outbox_dir` is used when `EMAIL_OUTBOX_DIR` is unset.
    /// Every error names its variable.
    pub fn from_env(env: &Env, default_outbox_dir: &Path) -> Result<Self, ConfigError> {
        let timeout = env.millis_or("EMAIL_TIMEOUT_MS", DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(ConfigError::new("EMAIL_TIMEOUT_MS", "must be greater than 0"));
        }
        let primary = env.get("EMAIL_PROVIDER").unwrap_or("outbox").to_ascii_lowercase();
        let provider = EmailProviderConfig::from_env(&primary, "EMAIL_PROVIDER", env, default_outbox_dir)?;
        let mut seen = vec![primary];
        let mut fallbacks = Vec::new();
        for name in env.get("EMAIL_FALLBACK_PROVIDERS").unwrap_or("").split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            if seen.contains(&name) {
                return Err(ConfigError::new(
                    "EMAIL_FALLBACK_PROVIDERS",
                    format!("`{name}` is named twice (EMAIL_PROVIDER is tried first)"),
                ));
            }
            fallbacks.push(EmailProviderConfig::from_env(&name, "EMAIL_FALLBACK_PROVIDERS", env, default_outbox_dir)?);
            seen.push(name);
        }
        let failures = env.parse_or("EMAIL_BREAKER_FAILURES", DEFAULT_BREAKER_FAILURES)?;
        if failures == 0 {
            return Err(ConfigError::new("EMAIL_BREAKER_FAILURES", "must be at least 1"));
        }
        let cooldown = env.millis_or("EMAIL_BREAKER_COOLDOWN_MS", DEFAULT_BREAKER_COOLDOWN)?;
        Ok(EmailConfig {
            provider,
            fallbacks,
            timeout,
            breaker: BreakerConfig { failures, cooldown },
            attachments_max_bytes: wharf_jobs::email::attachments_max_bytes(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<EmailConfig, ConfigError> {
        EmailConfig::from_env(&Env::from_pairs(pairs.iter().copied()), Path::new("/data/outbox"))
    }

    #[test]
    fn defaults_to_the_outbox_in_the_given_dir() {
        let cfg = parse(&[]).unwrap();
        assert_eq!(cfg.provider, EmailProviderConfig::Outbox { dir: "/data/outbox".into() });
        assert_eq!(cfg.timeout, Duration::from_secs(15));
        assert_eq!(cfg.provider.name(), "outbox");
    }

    #[test]
    fn outbox_dir_and_timeout_are_read() {
        let cfg =
            parse(&[("EMAIL_PROVIDER", "OUTBOX"), ("EMAIL_OUTBOX_DIR", "/tmp/mail"), ("EMAIL_TIMEOUT_MS", "2500")])
                .unwrap();
        assert_eq!(cfg.provider, EmailProviderConfig::Outbox { dir: "/tmp/mail".into() });
        assert_eq!(cfg.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn smtp_defaults() {
        let cfg = parse(&[("EMAIL_PROVIDER", "smtp"), ("SMTP_HOST", "mail.example.com")]).unwrap();
        assert_eq!(cfg.provider, EmailProviderConfig::Smtp(SmtpConfig::new("mail.example.com", 587)));
        assert_eq!(cfg.provider.name(), "smtp");
    }

    #[test]
    fn smtp_full() {
        let cfg = parse(&[
            ("EMAIL_PROVIDER", "smtp"),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", "465"),
            ("SMTP_USER", "u"),
            ("SMTP_PASS", "p@ss"),
            ("SMTP_SECURE", "true"),
            ("SMTP_REQUIRE_TLS", "1"),
            ("SMTP_TLS_CA_FILE", "/etc/ca.pem"),
        ])
        .unwrap();
        let EmailProviderConfig::Smtp(smtp) = cfg.provider else { panic!("not smtp") };
        assert_eq!(
            smtp,
            SmtpConfig {
                host: "127.0.0.1".into(),
                port: 465,
                credentials: Some(SmtpCredentials { user: "u".into(), pass: "p@ss".into() }),
                secure: true,
                require_tls: true,
                tls_ca_file: Some("/etc/ca.pem".into()),
            }
        );
    }

    fn err_var(pairs: &[(&str, &str)]) -> (String, String) {
        let e = parse(pairs).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains(&e.var), "`{shown}` does not name {}", e.var);
        (e.var, shown)
    }

    #[test]
    fn errors_name_the_variable() {
        let smtp = ("EMAIL_PROVIDER", "smtp");
        let host = ("SMTP_HOST", "mail.example.com");
        assert_eq!(err_var(&[("EMAIL_PROVIDER", "carrier-pigeon")]).0, "EMAIL_PROVIDER");
        assert_eq!(err_var(&[smtp]).0, "SMTP_HOST");
        assert_eq!(err_var(&[smtp, ("SMTP_HOST", "smtp://mail.example.com:25")]).0, "SMTP_HOST");
        assert_eq!(err_var(&[smtp, host, ("SMTP_PORT", "seven")]).0, "SMTP_PORT");
        assert_eq!(err_var(&[smtp, host, ("SMTP_PORT", "70000")]).0, "SMTP_PORT");
        assert_eq!(err_var(&[smtp, host, ("SMTP_PORT", "0")]).0, "SMTP_PORT");
        assert_eq!(err_var(&[smtp, host, ("SMTP_USER", "u")]).0, "SMTP_PASS");
        assert_eq!(err_var(&[smtp, host, ("SMTP_PASS", "p")]).0, "SMTP_USER");
        assert_eq!(err_var(&[smtp, host, ("SMTP_SECURE", "maybe")]).0, "SMTP_SECURE");
        assert_eq!(err_var(&[smtp, host, ("SMTP_REQUIRE_TLS", "2")]).0, "SMTP_REQUIRE_TLS");
        assert_eq!(err_var(&[("EMAIL_TIMEOUT_MS", "soon")]).0, "EMAIL_TIMEOUT_MS");
        assert_eq!(err_var(&[("EMAIL_TIMEOUT_MS", "0")]).0, "EMAIL_TIMEOUT_MS");
    }

    #[test]
    fn http_providers_and_fallbacks() {
        let cfg = parse(&[
            ("EMAIL_PROVIDER", "resend"),
            ("EMAIL_FALLBACK_PROVIDERS", "ses, postmark,smtp"),
            ("RESEND_API_KEY", "re_123"),
            ("RESEND_ENDPOINT", "http://127.0.0.1:9/"),
            ("POSTMARK_TOKEN", "pm-token"),
            ("POSTMARK_MESSAGE_STREAM", "broadcast"),
            ("SES_REGION", "eu-west-1"),
            ("SES_ENDPOINT", "http://127.0.0.1:5000"),
            ("SMTP_HOST", "mail"),
            ("EMAIL_BREAKER_FAILURES", "2"),
            ("EMAIL_BREAKER_COOLDOWN_MS", "250"),
            ("EMAIL_ATTACHMENTS_MAX_BYTES", "1000"),
        ])
        .unwrap();
        let names: Vec<_> = cfg.chain().map(|p| p.name()).collect();
        assert_eq!(names, ["resend", "ses", "postmark", "smtp"]);
        assert_eq!(
            cfg.provider,
            EmailProviderConfig::Resend(ResendConfig {
                api_key: Secret("re_123".into()),
                endpoint: "http://127.0.0.1:9".into()
            })
        );
        assert_eq!(
            cfg.fallbacks[0],
            EmailProviderConfig::Ses(SesConfig {
                region: "eu-west-1".into(),
                endpoint: Some("http://127.0.0.1:5000".into()),
                configuration_set: None
            })
        );
        let EmailProviderConfig::Postmark(pm) = &cfg.fallbacks[1] else { panic!() };
        assert_eq!(
            (pm.endpoint.as_str(), pm.message_stream.as_deref()),
            (DEFAULT_POSTMARK_ENDPOINT, Some("broadcast"))
        );
        assert_eq!(cfg.breaker, BreakerConfig { failures: 2, cooldown: Duration::from_millis(250) });
        assert_eq!(cfg.attachments_max_bytes, 1000);
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("re_123") && !shown.contains("pm-token"), "{shown}");
    }

    #[test]
    fn provider_errors_name_their_variable() {
        assert_eq!(err_var(&[("EMAIL_PROVIDER", "resend")]).0, "RESEND_API_KEY");
        assert_eq!(err_var(&[("EMAIL_PROVIDER", "postmark")]).0, "POSTMARK_TOKEN");
        assert_eq!(err_var(&[("EMAIL_PROVIDER", "ses")]).0, "SES_REGION");
        assert_eq!(err_var(&[("EMAIL_PROVIDER", "resend,smtp")]).0, "EMAIL_PROVIDER");
        assert_eq!(err_var(&[("EMAIL_FALLBACK_PROVIDERS", "pigeon")]).0, "EMAIL_FALLBACK_PROVIDERS");
        assert_eq!(err_var(&[("EMAIL_FALLBACK_PROVIDERS", "outbox")]).0, "EMAIL_FALLBACK_PROVIDERS");
        assert_eq!(err_var(&[("EMAIL_FALLBACK_PROVIDERS", "smtp")]).0, "SMTP_HOST");
        let resend = [("EMAIL_PROVIDER", "resend"), ("RESEND_API_KEY", "k")];
        assert_eq!(err_var(&[resend[0], resend[1], ("RESEND_ENDPOINT", "api.resend.com")]).0, "RESEND_ENDPOINT");
        assert_eq!(err_var(&[("EMAIL_BREAKER_FAILURES", "0")]).0, "EMAIL_BREAKER_FAILURES");
        assert_eq!(err_var(&[("EMAIL_BREAKER_COOLDOWN_MS", "soon")]).0, "EMAIL_BREAKER_COOLDOWN_MS");
        assert_eq!(err_var(&[("EMAIL_ATTACHMENTS_MAX_BYTES", "0")]).0, "EMAIL_ATTACHMENTS_MAX_BYTES");
        assert_eq!(
            err_var(&[("EMAIL_PROVIDER", "ses"), ("AWS_REGION", "us-east-1"), ("SES_ENDPOINT", "x")]).0,
            "SES_ENDPOINT"
        );
    }

    #[test]
    fn the_password_is_never_shown() {
        let cfg = parse(&[
            ("EMAIL_PROVIDER", "smtp"),
            ("SMTP_HOST", "h"),
            ("SMTP_USER", "u"),
            ("SMTP_PASS", "hunter2-secret"),
        ])
        .unwrap();
        let shown = format!("{cfg:?} {cfg:#?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
