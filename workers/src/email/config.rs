//! Email provider configuration read from the environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `EMAIL_PROVIDER` | `outbox` or `smtp` | `outbox` |
//! | `EMAIL_OUTBOX_DIR` | where the outbox writes `.eml` files | the caller's default |
//! | `EMAIL_TIMEOUT_MS` | per-operation timeout of a provider call | `15000` |
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

/// Providers named in the product that this version does not ship yet.
const LATER_PROVIDERS: &[&str] = &["resend", "ses", "postmark"];

/// How the email pool sends mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConfig {
    pub provider: EmailProviderConfig,
    /// Timeout of each provider operation (connect, each SMTP command, the data transfer).
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailProviderConfig {
    /// Writes each message as an `.eml` file into `dir` (created when missing).
    Outbox { dir: PathBuf },
    /// Sends through an SMTP relay.
    Smtp(SmtpConfig),
}

impl EmailProviderConfig {
    /// The provider's name as configured and as reported in results and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EmailProviderConfig::Outbox { .. } => "outbox",
            EmailProviderConfig::Smtp(_) => "smtp",
        }
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
        SmtpConfig {
            host: host.into(),
            port,
            credentials: None,
            secure: false,
            require_tls: false,
            tls_ca_file: None,
        }
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
            (Some(user), Some(pass)) => Some(SmtpCredentials {
                user: user.to_string(),
                pass: pass.to_string(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "SMTP_PASS",
                    "is required when SMTP_USER is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "SMTP_USER",
                    "is required when SMTP_PASS is set",
                ));
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
        f.debug_struct("SmtpCredentials")
            .field("user", &self.user)
            .field("pass", &"<redacted>")
            .finish()
    }
}

impl EmailConfig {
    /// Reads the email variables; `default_outbox_dir` is used when `EMAIL_OUTBOX_DIR` is unset.
    /// Every error names its variable.
    pub fn from_env(env: &Env, default_outbox_dir: &Path) -> Result<Self, ConfigError> {
        let timeout = env.millis_or("EMAIL_TIMEOUT_MS", DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(ConfigError::new(
                "EMAIL_TIMEOUT_MS",
                "must be greater than 0",
            ));
        }
        let provider = env
            .get("EMAIL_PROVIDER")
            .unwrap_or("outbox")
            .to_ascii_lowercase();
        let provider = match provider.as_str() {
            "outbox" => EmailProviderConfig::Outbox {
                dir: env
                    .get("EMAIL_OUTBOX_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| default_outbox_dir.to_path_buf()),
            },
            "smtp" => EmailProviderConfig::Smtp(SmtpConfig::from_env(env)?),
            p if p.contains(',') => {
                return Err(ConfigError::new(
                    "EMAIL_PROVIDER",
                    format!(
                        "`{p}`: a fallback list of providers is not available yet; give one of outbox, smtp"
                    ),
                ));
            }
            p if LATER_PROVIDERS.contains(&p) => {
                return Err(ConfigError::new(
                    "EMAIL_PROVIDER",
                    format!("`{p}` is not available yet; use outbox or smtp"),
                ));
            }
            p => {
                return Err(ConfigError::new(
                    "EMAIL_PROVIDER",
                    format!("`{p}` is not a known provider; use outbox or smtp"),
                ));
            }
        };
        Ok(EmailConfig { provider, timeout })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<EmailConfig, ConfigError> {
        EmailConfig::from_env(
            &Env::from_pairs(pairs.iter().copied()),
            Path::new("/data/outbox"),
        )
    }

    #[test]
    fn defaults_to_the_outbox_in_the_given_dir() {
        let cfg = parse(&[]).unwrap();
        assert_eq!(
            cfg.provider,
            EmailProviderConfig::Outbox {
                dir: "/data/outbox".into()
            }
        );
        assert_eq!(cfg.timeout, Duration::from_secs(15));
        assert_eq!(cfg.provider.name(), "outbox");
    }

    #[test]
    fn outbox_dir_and_timeout_are_read() {
        let cfg = parse(&[
            ("EMAIL_PROVIDER", "OUTBOX"),
            ("EMAIL_OUTBOX_DIR", "/tmp/mail"),
            ("EMAIL_TIMEOUT_MS", "2500"),
        ])
        .unwrap();
        assert_eq!(
            cfg.provider,
            EmailProviderConfig::Outbox {
                dir: "/tmp/mail".into()
            }
        );
        assert_eq!(cfg.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn smtp_defaults() {
        let cfg = parse(&[
            ("EMAIL_PROVIDER", "smtp"),
            ("SMTP_HOST", "mail.example.com"),
        ])
        .unwrap();
        assert_eq!(
            cfg.provider,
            EmailProviderConfig::Smtp(SmtpConfig::new("mail.example.com", 587))
        );
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
        let EmailProviderConfig::Smtp(smtp) = cfg.provider else {
            panic!("not smtp")
        };
        assert_eq!(
            smtp,
            SmtpConfig {
                host: "127.0.0.1".into(),
                port: 465,
                credentials: Some(SmtpCredentials {
                    user: "u".into(),
                    pass: "p@ss".into()
                }),
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
        assert_eq!(
            err_var(&[("EMAIL_PROVIDER", "carrier-pigeon")]).0,
            "EMAIL_PROVIDER"
        );
        assert_eq!(err_var(&[smtp]).0, "SMTP_HOST");
        assert_eq!(
            err_var(&[smtp, ("SMTP_HOST", "smtp://mail.example.com:25")]).0,
            "SMTP_HOST"
        );
        assert_eq!(
            err_var(&[smtp, host, ("SMTP_PORT", "seven")]).0,
            "SMTP_PORT"
        );
        assert_eq!(
            err_var(&[smtp, host, ("SMTP_PORT", "70000")]).0,
            "SMTP_PORT"
        );
        assert_eq!(err_var(&[smtp, host, ("SMTP_PORT", "0")]).0, "SMTP_PORT");
        assert_eq!(err_var(&[smtp, host, ("SMTP_USER", "u")]).0, "SMTP_PASS");
        assert_eq!(err_var(&[smtp, host, ("SMTP_PASS", "p")]).0, "SMTP_USER");
        assert_eq!(
            err_var(&[smtp, host, ("SMTP_SECURE", "maybe")]).0,
            "SMTP_SECURE"
        );
        assert_eq!(
            err_var(&[smtp, host, ("SMTP_REQUIRE_TLS", "2")]).0,
            "SMTP_REQUIRE_TLS"
        );
        assert_eq!(
            err_var(&[("EMAIL_TIMEOUT_MS", "soon")]).0,
            "EMAIL_TIMEOUT_MS"
        );
        assert_eq!(err_var(&[("EMAIL_TIMEOUT_MS", "0")]).0, "EMAIL_TIMEOUT_MS");
    }

    #[test]
    fn later_providers_are_not_available_yet() {
        for p in ["resend", "ses", "postmark", "resend,smtp"] {
            let (var, shown) = err_var(&[("EMAIL_PROVIDER", p)]);
            assert_eq!(var, "EMAIL_PROVIDER");
            assert!(shown.contains("not available yet"), "{shown}");
        }
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
