//! The scheduler's configuration, from the environment (errors name the variable).

use std::time::Duration;

use wharf_jobs::{
    config::{ConfigError, Env},
    schedules::ScheduleSet,
};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub schedules: ScheduleSet,
    /// A tick found later than this after its time is skipped (and counted), not fired.
    pub late_limit: Duration,
    /// On start, ticks older than this are not looked at (a restart after a long outage does
    /// not walk through every missed tick).
    pub lookback: Duration,
    pub dlq: DlqConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqConfig {
    pub interval: Duration,
    pub warning: i64,
    pub critical: i64,
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig { interval: Duration::from_secs(60), warning: 500, critical: 1000 }
    }
}

impl SchedulerConfig {
    pub fn from_env(env: &Env) -> Result<SchedulerConfig, ConfigError> {
        let late_limit = env.secs_or("SCHEDULER_LATE_LIMIT_SECONDS", Duration::from_secs(300))?;
        if late_limit.is_zero() {
            return Err(ConfigError::new("SCHEDULER_LATE_LIMIT_SECONDS", "must be at least 1"));
        }
        let lookback = env.secs_or("SCHEDULER_LOOKBACK_SECONDS", late_limit * 2)?;
        if lookback < late_limit {
            return Err(ConfigError::new(
                "SCHEDULER_LOOKBACK_SECONDS",
                "must not be below SCHEDULER_LATE_LIMIT_SECONDS",
            ));
        }
        let d = DlqConfig::default();
        let dlq = DlqConfig {
            interval: env.secs_or("DLQ_MONITOR_INTERVAL_SECONDS", d.interval)?,
            warning: env.parse_or("DLQ_WARNING_THRESHOLD", d.warning)?,
            critical: env.parse_or("DLQ_CRITICAL_THRESHOLD", d.critical)?,
        };
        if dlq.interval.is_zero() {
            return Err(ConfigError::new("DLQ_MONITOR_INTERVAL_SECONDS", "must be at least 1"));
        }
        if dlq.warning < 1 || dlq.critical <= dlq.warning {
            return Err(ConfigError::new(
                "DLQ_CRITICAL_THRESHOLD",
                "thresholds must satisfy 1 <= DLQ_WARNING_THRESHOLD < DLQ_CRITICAL_THRESHOLD",
            ));
        }
        Ok(SchedulerConfig { schedules: ScheduleSet::from_env(env)?, late_limit, lookback, dlq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let c = SchedulerConfig::from_env(&Env::default()).unwrap();
        assert_eq!((c.late_limit, c.lookback), (Duration::from_secs(300), Duration::from_secs(600)));
        assert_eq!(c.dlq, DlqConfig::default());
        for (var, pairs) in [
            ("SCHEDULER_LATE_LIMIT_SECONDS", vec![("SCHEDULER_LATE_LIMIT_SECONDS", "0")]),
            ("SCHEDULER_LOOKBACK_SECONDS", vec![("SCHEDULER_LOOKBACK_SECONDS", "10")]),
            ("DLQ_CRITICAL_THRESHOLD", vec![("DLQ_WARNING_THRESHOLD", "1000")]),
            ("DLQ_WARNING_THRESHOLD", vec![("DLQ_WARNING_THRESHOLD", "many")]),
            ("SCHEDULE_PURGE_JOBS", vec![("SCHEDULE_PURGE_JOBS", "hourly")]),
        ] {
            assert_eq!(SchedulerConfig::from_env(&Env::from_pairs(pairs)).unwrap_err().var, var);
        }
    }
}
