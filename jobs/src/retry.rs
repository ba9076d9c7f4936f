//! Exponential backoff with jitter between attempts. apalis re-runs a failed job at once;
//! wharf sets the next `run_at` from the kind's policy.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: i32,
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Ceiling for any delay.
    pub max: Duration,
    /// Relative jitter: each delay is drawn from `[d·(1−j), d·(1+j)]`, then capped at `max`.
    pub jitter: f64,
}

impl RetryPolicy {
    pub const fn new(max_attempts: i32, base: Duration, max: Duration) -> Self {
        RetryPolicy { max_attempts, base, max, jitter: 0.2 }
    }

    /// Whether a job that just failed its `attempt`-th attempt may run again.
    pub fn may_retry(&self, attempt: i32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay before the next attempt, after `attempt` (1-based) failed.
    pub fn delay(&self, attempt: i32) -> Duration {
        self.delay_with(attempt, rand::rng().random_range(-1.0..=1.0))
    }

    /// Like [`delay`](Self::delay), but honouring a provider's `Retry-After` when it asks for more.
    pub fn delay_honouring(&self, attempt: i32, retry_after: Option<Duration>) -> Duration {
        let d = self.delay(attempt);
        match retry_after {
            Some(ra) if ra > d => ra.min(self.max.max(d)),
            _ => d,
        }
    }

    /// Deterministic core of [`delay`](Self::delay); `unit` in `[-1, 1]` picks the jitter.
    pub fn delay_with(&self, attempt: i32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).clamp(0, 32) as u32;
        let raw = self.base.as_secs_f64() * 2f64.powi(exp as i32);
        let nominal = raw.min(self.max.as_secs_f64());
        let jittered = nominal * (1.0 + self.jitter * unit.clamp(-1.0, 1.0));
        Duration::from_secs_f64(jittered.clamp(0.0, self.max.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_and_caps() {
        let p = RetryPolicy::new(5, Duration::from_secs(30), Duration::from_secs(600));
        assert_eq!(p.delay_with(1, 0.0), Duration::from_secs(30));
        assert_eq!(p.delay_with(2, 0.0), Duration::from_secs(60));
        assert_eq!(p.delay_with(3, 0.0), Duration::from_secs(120));
        assert_eq!(p.delay_with(6, 0.0), Duration::from_secs(600));
        assert_eq!(p.delay_with(60, 1.0), Duration::from_secs(600));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RetryPolicy::new(5, Duration::from_secs(10), Duration::from_secs(600));
        assert_eq!(p.delay_with(1, -1.0), Duration::from_secs(8));
        assert_eq!(p.delay_with(1, 1.0), Duration::from_secs(12));
        for _ in 0..1000 {
            let d = p.delay(2);
            assert!(d >= Duration::from_secs(16) && d <= Duration::from_secs(24), "{d:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_when_longer() {
        let p = RetryPolicy { jitter: 0.0, ..RetryPolicy::new(5, Duration::from_secs(1), Duration::from_secs(60)) };
        assert_eq!(p.delay_honouring(1, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(p.delay_honouring(1, Some(Duration::from_millis(10))), Duration::from_secs(1));
        assert_eq!(p.delay_honouring(1, Some(Duration::from_secs(3600))), Duration::from_secs(60));
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(1));
        assert!(p.may_retry(1) && p.may_retry(2));
        assert!(!p.may_retry(3));
    }
}
