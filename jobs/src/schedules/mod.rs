//! Schedules: a name, a cron expression (with a seconds field, as the `cron` crate parses it;
//! a classic 5-field expression gets second 0), a time zone (IANA name, default UTC), and the
//! job to enqueue on each tick. The set a scheduler runs is the defaults (PRODUCT §4 purges),
//! then `WHARF_SCHEDULES_FILE` (TOML), then `SCHEDULE_<NAME>=<cron>|off` per schedule (NAME
//! upper-cased, `-` and `.` as `_`).
//!
//! ```toml
//! [[schedules]]
//! name = "nightly-report"
//! cron = "0 30 2 * * *"
//! timezone = "Europe/Berlin"
//! kind = "email"            # queue defaults to the kind
//! tenant = "acme"
//! payload = { from = "reports@acme.test", to = ["ops@acme.test"], subject = "Nightly", text = "…" }
//!
//! [[schedules]]
//! name = "purge-objects"     # a default: only the given fields change
//! enabled = false
//! ```

mod repo;

use std::{path::Path, str::FromStr};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{Value, json};

pub use self::repo::{ScheduleRepo, ScheduleStatus, TickClaim, TickRow};
use crate::{
    config::{ConfigError, Env},
    kinds::{
        JobKind,
        embedding::RefreshEmbeddingsJob,
        purge::{PurgeJob, PurgeTarget},
    },
    queue,
};

/// The tenant of wharf's own jobs (purges): not a valid API tenant, so no key can see them.
pub const SYSTEM_TENANT: &str = "wharf:system";

#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    /// The expression as configured.
    pub cron: String,
    parsed: cron::Schedule,
    pub timezone: Tz,
    pub kind: String,
    pub queue: String,
    pub tenant: String,
    pub payload: Value,
    pub enabled: bool,
}

impl PartialEq for Schedule {
    fn eq(&self, o: &Self) -> bool {
        (&self.name, &self.cron, self.timezone, &self.kind, &self.queue, &self.tenant, &self.payload, self.enabled)
            == (&o.name, &o.cron, o.timezone, &o.kind, &o.queue, &o.tenant, &o.payload, o.enabled)
    }
}

/// Parses a cron expression: 6 or 7 fields (seconds first, optional year), or a classic 5-field
/// one run at second 0.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let expr = expr.trim();
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 { format!("0 {expr}") } else { expr.to_string() };
    cron::Schedule::from_str(&full)
        .map_err(|e| format!("`{expr}` is not a cron expression (sec min hour day month weekday [year]): {e}"))
}

pub fn parse_timezone(tz: &str) -> Result<Tz, String> {
    tz.parse::<Tz>().map_err(|_| format!("`{tz}` is not an IANA time zone (such as UTC or Europe/Berlin)"))
}

/// The first tick after `after` of a stored schedule (`None` if it does not parse or never fires).
pub fn next_fire(cron: &str, timezone: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let tz = parse_timezone(timezone).ok()?;
    parse_cron(cron).ok()?.after(&after.with_timezone(&tz)).next().map(|t| t.with_timezone(&Utc))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))
}

/// `SCHEDULE_<NAME>`: upper-cased, `-` and `.` as `_`.
pub fn env_var(name: &str) -> String {
    format!("SCHEDULE_{}", name.to_ascii_uppercase().replace(['-', '.'], "_"))
}

impl Schedule {
    pub fn new(
        name: &str,
        cron: &str,
        timezone: &str,
        kind: &str,
        queue: &str,
        tenant: &str,
        payload: Value,
    ) -> Result<Schedule, String> {
        if !valid_name(name) {
            return Err(format!("schedule name `{name}`: use 1–64 of a–z, 0–9, `-`, `.`, `_`"));
        }
        if !queue::ALL.contains(&queue) {
            return Err(format!("schedule `{name}`: unknown queue `{queue}` (known: {})", queue::ALL.join(", ")));
        }
        if kind.trim().is_empty() || tenant.trim().is_empty() {
            return Err(format!("schedule `{name}`: kind and tenant must not be empty"));
        }
        Ok(Schedule {
            name: name.to_string(),
            cron: cron.trim().to_string(),
            parsed: parse_cron(cron).map_err(|e| format!("schedule `{name}`: {e}"))?,
            timezone: parse_timezone(timezone).map_err(|e| format!("schedule `{name}`: {e}"))?,
            kind: kind.to_string(),
            queue: queue.to_string(),
            tenant: tenant.to_string(),
            payload,
            enabled: true,
        })
    }

    fn set_cron(&mut self, cron: &str) -> Result<(), String> {
        self.parsed = parse_cron(cron)?;
        self.cron = cron.trim().to_string();
        Ok(())
    }

    /// Ticks strictly after `after`, in order.
    pub fn ticks_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.parsed.after(&after.with_timezone(&self.timezone)).map(|t| t.with_timezone(&Utc))
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.ticks_after(after).next()
    }
}

/// A built-in schedule: `job` for wharf's own tenant, in UTC.
pub fn system<J: JobKind>(name: &str, cron: &str, job: J) -> Schedule {
    let payload = serde_json::to_value(&job).expect("job payloads serialize");
    Schedule::new(name, cron, "UTC", J::KIND, J::QUEUE, SYSTEM_TENANT, payload).expect("built-in schedules are valid")
}

fn purge(name: &str, cron: &str, target: PurgeTarget) -> Schedule {
    system(name, cron, PurgeJob { target })
}

/// The built-in schedules (PRODUCT §4): the purges, spread over the hour, and the daily
/// re-embedding of documents stored under a model other than the configured one.
pub fn defaults() -> Vec<Schedule> {
    vec![
        purge("purge-jobs", "0 5 * * * *", PurgeTarget::Jobs),
        purge("purge-dead-letters", "0 15 * * * *", PurgeTarget::DeadLetters),
        purge("purge-webhook-attempts", "0 25 * * * *", PurgeTarget::WebhookAttempts),
        purge("purge-idempotency-keys", "0 35 * * * *", PurgeTarget::IdempotencyKeys),
        purge("purge-objects", "0 0 */6 * * *", PurgeTarget::Objects),
        purge("purge-payload-blobs", "0 45 */6 * * *", PurgeTarget::PayloadBlobs),
        system("embeddings-refresh", "0 0 3 * * *", RefreshEmbeddingsJob::default()),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchedules {
    #[serde(default)]
    schedules: Vec<FileSchedule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchedule {
    name: String,
    cron: Option<String>,
    timezone: Option<String>,
    kind: Option<String>,
    queue: Option<String>,
    tenant: Option<String>,
    payload: Option<toml::Value>,
    enabled: Option<bool>,
}

/// The schedules one scheduler runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleSet {
    pub schedules: Vec<Schedule>,
}

impl ScheduleSet {
    /// Defaults, then `WHARF_SCHEDULES_FILE`, then `SCHEDULE_<NAME>` overrides.
    pub fn from_env(env: &Env) -> Result<ScheduleSet, ConfigError> {
        let mut set = ScheduleSet { schedules: defaults() };
        if let Some(path) = env.get("WHARF_SCHEDULES_FILE") {
            let text = std::fs::read_to_string(Path::new(path))
                .map_err(|e| ConfigError::new("WHARF_SCHEDULES_FILE", format!("cannot read {path}: {e}")))?;
            set.apply_toml(&text).map_err(|e| ConfigError::new("WHARF_SCHEDULES_FILE", format!("{path}: {e}")))?;
        }
        for s in &mut set.schedules {
            let var = env_var(&s.name);
            match env.get(&var) {
                None => {}
                Some(v) if v.eq_ignore_ascii_case("off") => s.enabled = false,
                Some(v) => {
                    s.set_cron(v).map_err(|e| ConfigError::new(&var, e))?;
                    s.enabled = true;
                }
            }
        }
        Ok(set)
    }

    /// Adds the file's schedules; an entry named like an existing one changes only its fields.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let file: FileSchedules = toml::from_str(text).map_err(|e| e.to_string())?;
        for f in file.schedules {
            let payload = f
                .payload
                .map(|p| serde_json::to_value(p).map_err(|e| format!("schedule `{}`: payload: {e}", f.name)))
                .transpose()?;
            if let Some(s) = self.schedules.iter_mut().find(|s| s.name == f.name) {
                let name = s.name.clone();
                let merged = Schedule::new(
                    &name,
                    f.cron.as_deref().unwrap_or(&s.cron),
                    f.timezone.as_deref().unwrap_or(s.timezone.name()),
                    f.kind.as_deref().unwrap_or(&s.kind),
                    f.queue.as_deref().or(f.kind.as_deref()).unwrap_or(&s.queue),
                    f.tenant.as_deref().unwrap_or(&s.tenant),
                    payload.unwrap_or_else(|| s.payload.clone()),
                )?;
                *s = Schedule { enabled: f.enabled.unwrap_or(s.enabled), ..merged };
            } else {
                let need = |v: Option<String>, field: &str| {
                    v.ok_or_else(|| format!("schedule `{}`: `{field}` is required for a new schedule", f.name))
                };
                let kind = need(f.kind, "kind")?;
                let mut s = Schedule::new(
                    &f.name,
                    &need(f.cron, "cron")?,
                    f.timezone.as_deref().unwrap_or("UTC"),
                    &kind,
                    f.queue.as_deref().unwrap_or(&kind),
                    f.tenant.as_deref().unwrap_or(SYSTEM_TENANT),
                    payload.unwrap_or_else(|| json!({})),
                )?;
                s.enabled = f.enabled.unwrap_or(true);
                self.schedules.push(s);
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.name == name)
    }

    pub fn enabled(&self) -> impl Iterator<Item = &Schedule> {
        self.schedules.iter().filter(|s| s.enabled)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn defaults_cover_every_purge_target_and_objects_run_every_six_hours() {
        let set = ScheduleSet::from_env(&Env::default()).unwrap();
        for t in PurgeTarget::ALL {
            assert!(set.schedules.iter().any(|s| s.payload == json!({ "target": t.as_str() })), "{t:?}");
        }
        let objects = set.get("purge-objects").unwrap();
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap();
        let ticks: Vec<_> = objects.ticks_after(from).take(2).map(|t| t.to_rfc3339()).collect();
        assert_eq!(ticks, ["2026-01-01T06:00:00+00:00", "2026-01-01T12:00:00+00:00"]);
        let refresh = set.get("embeddings-refresh").unwrap();
        assert_eq!((refresh.kind.as_str(), refresh.queue.as_str()), (RefreshEmbeddingsJob::KIND, queue::EMBEDDINGS));
        let ticks: Vec<_> = refresh.ticks_after(from).take(2).map(|t| t.to_rfc3339()).collect();
        assert_eq!(ticks, ["2026-01-01T03:00:00+00:00", "2026-01-02T03:00:00+00:00"]);
    }

    #[test]
    fn env_overrides_change_or_disable_a_schedule_and_name_bad_values() {
        let env = Env::from_pairs([("SCHEDULE_PURGE_JOBS", "*/10 * * * * *"), ("SCHEDULE_PURGE_OBJECTS", "off")]);
        let set = ScheduleSet::from_env(&env).unwrap();
        assert_eq!(set.get("purge-jobs").unwrap().cron, "*/10 * * * * *");
        assert!(!set.get("purge-objects").unwrap().enabled);
        let bad = Env::from_pairs([("SCHEDULE_PURGE_JOBS", "every minute")]);
        assert_eq!(ScheduleSet::from_env(&bad).unwrap_err().var, "SCHEDULE_PURGE_JOBS");
        assert_eq!(env_var("a-b.c"), "SCHEDULE_A_B_C");
    }

    #[test]
    fn toml_adds_and_merges_schedules_in_time_zones() {
        let mut set = ScheduleSet { schedules: defaults() };
        set.apply_toml(
            r#"
            [[schedules]]
            name = "berlin-morning"
            cron = "0 0 8 * * *"
            timezone = "Europe/Berlin"
            kind = "diagnostic"
            tenant = "acme"
            payload = { op = "noop" }

            [[schedules]]
            name = "purge-jobs"
            enabled = false
            "#,
        )
        .unwrap();
        let s = set.get("berlin-morning").unwrap();
        assert_eq!((s.queue.as_str(), &s.payload), ("diagnostic", &json!({ "op": "noop" })));
        // 08:00 in Berlin is 07:00 UTC in winter, 06:00 UTC in summer.
        let winter = s.next_after(Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap()).unwrap();
        let summer = s.next_after(Utc.with_ymd_and_hms(2026, 7, 10, 0, 0, 0).unwrap()).unwrap();
        assert_eq!(
            (winter.to_rfc3339(), summer.to_rfc3339()),
            ("2026-01-10T07:00:00+00:00".to_string(), "2026-07-10T06:00:00+00:00".to_string())
        );
        let jobs = set.get("purge-jobs").unwrap();
        assert!(!jobs.enabled && jobs.cron == "0 5 * * * *");

        for bad in [
            "[[schedules]]\nname = \"x\"\nkind = \"diagnostic\"",
            "[[schedules]]\nname = \"x\"\ncron = \"* * * * * *\"\nkind = \"nope\"",
            "[[schedules]]\nname = \"x\"\ncron = \"* * * * * *\"\nkind = \"diagnostic\"\ntimezone = \"Mars/Base\"",
            "[[schedules]]\nname = \"Bad Name\"\ncron = \"* * * * * *\"\nkind = \"diagnostic\"",
            "[[schedules]]\nname = \"x\"\nsurprise = 1",
        ] {
            assert!(ScheduleSet { schedules: defaults() }.apply_toml(bad).is_err(), "{bad}");
        }
        // A classic 5-field expression runs at second 0.
        assert_eq!(parse_cron("*/5 * * * *").unwrap().to_string().split_whitespace().next(), Some("0"));
    }
}
