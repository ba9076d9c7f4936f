//! Webhook configuration, read once at start by the API and the workers.
//!
//! | variable | default | |
//! |---|---|---|
//! | `WHARF_ENCRYPTION_KEY` | — (`serve`: `$WHARF_DATA_DIR/encryption.key`, made on first start) | base64 of 32 bytes; encrypts endpoint secrets |
//! | `WEBHOOK_ALLOW_HTTP` | `false` (`serve`: `true`) | allow plain `http://` endpoints |
//! | `WEBHOOK_ALLOWED_CIDRS` | none (`serve`: `127.0.0.0/8,::1/128`) | non-public ranges deliveries may reach |
//! | `WEBHOOK_RETRY_SCHEDULE` | `5s,5m,30m,2h,5h,10h,10h` | delays after each failed attempt, ±20 % jitter |
//! | `WEBHOOK_DISABLE_AFTER` | `5d` | an endpoint failing without a success this long is disabled |

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    SecretBox,
    net::{AddressPolicy, parse_cidrs},
};
use crate::config::{ConfigError, Env};

pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";
pub const DEFAULT_DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);
/// The key file `wharf serve` keeps in its data directory when `WHARF_ENCRYPTION_KEY` is unset.
pub const KEY_FILE: &str = "encryption.key";
const KEY_VAR: &str = "WHARF_ENCRYPTION_KEY";

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `None` when `WHARF_ENCRYPTION_KEY` is not set: endpoints can then be neither created
    /// nor delivered to (the API answers 503 naming the variable).
    pub secrets: Option<SecretBox>,
    pub policy: AddressPolicy,
    /// Delay after the n-th failed attempt; its length + 1 is the number of attempts.
    pub schedule: Vec<Duration>,
    pub disable_after: Duration,
}

impl WebhookSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secrets = env
            .get(KEY_VAR)
            .map(|k| SecretBox::from_base64(k).map_err(|m| ConfigError::new(KEY_VAR, m)))
            .transpose()?;
        let allowed = env
            .get("WEBHOOK_ALLOWED_CIDRS")
            .map(parse_cidrs)
            .transpose()
            .map_err(|m| ConfigError::new("WEBHOOK_ALLOWED_CIDRS", m))?
            .unwrap_or_default();
        let schedule = parse_schedule(env.get("WEBHOOK_RETRY_SCHEDULE").unwrap_or(DEFAULT_RETRY_SCHEDULE))
            .map_err(|m| ConfigError::new("WEBHOOK_RETRY_SCHEDULE", m))?;
        let disable_after = env
            .get("WEBHOOK_DISABLE_AFTER")
            .map(parse_duration)
            .transpose()
            .map_err(|m| ConfigError::new("WEBHOOK_DISABLE_AFTER", m))?
            .unwrap_or(DEFAULT_DISABLE_AFTER);
        Ok(WebhookSettings {
            secrets,
            policy: AddressPolicy { allow_http: env.bool_or("WEBHOOK_ALLOW_HTTP", false)?, allowed },
            schedule,
            disable_after,
        })
    }

    /// The longest delay of the schedule.
    pub fn longest_delay(&self) -> Duration {
        self.schedule.iter().copied().max().unwrap_or_default()
    }
}

/// `wharf serve` runs on a laptop: unless set, allow `http` and loopback targets, and keep the
/// encryption key in `$WHARF_DATA_DIR/encryption.key` (created on first start, mode 0600).
/// Returns the key file when one is used.
pub fn serve_defaults(env: &mut Env, data_dir: &Path) -> Result<Option<PathBuf>, ConfigError> {
    if env.get("WEBHOOK_ALLOW_HTTP").is_none() {
        env.set("WEBHOOK_ALLOW_HTTP", "true");
    }
    if env.get("WEBHOOK_ALLOWED_CIDRS").is_none() {
        env.set("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8,::1/128");
    }
    if env.get(KEY_VAR).is_some() {
        return Ok(None);
    }
    let path = data_dir.join(KEY_FILE);
    let err = |m: String| ConfigError::new(KEY_VAR, format!("is not set and {}: {m}", path.display()));
    let key = match std::fs::read_to_string(&path) {
        Ok(k) => k.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretBox::generate_key_base64();
            write_private(&path, &key).map_err(|e| err(format!("cannot be created ({e})")))?;
            key
        }
        Err(e) => return Err(err(format!("cannot be read ({e})"))),
    };
    SecretBox::from_base64(&key).map_err(|m| err(format!("holds no valid key: it {m}")))?;
    env.set(KEY_VAR, key);
    Ok(Some(path))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(format!("{contents}\n").as_bytes())?;
    f.sync_all()
}

/// `250ms`, `5s`, `5m`, `2h`, `5d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration such as 30s, 5m, 2h or 5d"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}` is not a duration such as 30s, 5m, 2h or 5d")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

/// A comma-separated list of durations, at least one, each above zero.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let list = s.split(',').map(parse_duration).collect::<Result<Vec<_>, _>>()?;
    if list.iter().any(Duration::is_zero) {
        return Err("every delay must be above zero".into());
    }
    if list.len() > 50 {
        return Err("at most 50 retries".into());
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_durations_and_schedules() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5d").unwrap(), Duration::from_secs(5 * 86400));
        assert!(parse_duration("5").is_err() && parse_duration("5 weeks").is_err() && parse_duration("").is_err());
        let d = parse_schedule(DEFAULT_RETRY_SCHEDULE).unwrap();
        assert_eq!(d.len(), 7);
        assert_eq!(d[1], Duration::from_secs(300));
        assert!(parse_schedule("1s,0s").is_err());
    }

    #[test]
    fn webhooks_settings_name_bad_variables() {
        for (var, val) in [
            ("WHARF_ENCRYPTION_KEY", "short"),
            ("WEBHOOK_ALLOWED_CIDRS", "10.0.0.0/99"),
            ("WEBHOOK_RETRY_SCHEDULE", "5s,soon"),
            ("WEBHOOK_DISABLE_AFTER", "forever"),
            ("WEBHOOK_ALLOW_HTTP", "maybe"),
        ] {
            assert_eq!(WebhookSettings::from_env(&Env::from_pairs([(var, val)])).unwrap_err().var, var);
        }
        let s = WebhookSettings::from_env(&Env::default()).unwrap();
        assert!(s.secrets.is_none() && !s.policy.allow_http && s.policy.allowed.is_empty());
        assert_eq!(s.longest_delay(), Duration::from_secs(36_000));
    }

    #[test]
    fn webhooks_serve_keeps_a_private_key_file() {
        let dir = std::env::temp_dir().join(format!("wharf-key-{}", uuid::Uuid::new_v4()));
        let mut env = Env::default();
        let path = serve_defaults(&mut env, &dir).unwrap().unwrap();
        let key = env.get(KEY_VAR).unwrap().to_string();
        assert!(WebhookSettings::from_env(&env).unwrap().secrets.is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let mut again = Env::default();
        serve_defaults(&mut again, &dir).unwrap();
        assert_eq!(again.get(KEY_VAR), Some(key.as_str()), "the same key on the next start");
        assert_eq!(again.get("WEBHOOK_ALLOW_HTTP"), Some("true"));
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(serve_defaults(&mut Env::default(), &dir).unwrap_err().var, KEY_VAR);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
