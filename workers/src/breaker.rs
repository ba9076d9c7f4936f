//! A circuit breaker per provider (email providers, embedding providers), in-process: each
//! worker process keeps its own view. Closed: every call goes through; `failures` consecutive
//! transient failures open it. Open: the provider is skipped for `cooldown` (or until a rate
//! limit's `Retry-After`). Then half-open: one trial call goes through (others still skip); its
//! success closes the circuit, its failure opens it for another cooldown.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial: bool },
}

#[derive(Debug)]
pub struct Breaker {
    /// Consecutive transient failures that open the circuit.
    failures: u32,
    cooldown: Duration,
    /// Names the breaker in logs (`email`, `embeddings`).
    what: &'static str,
    state: Mutex<State>,
}

/// Whether a call may go to the provider now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The circuit is open (or its one trial is in flight): skip; it may admit again after this.
    No(Duration),
}

impl Breaker {
    pub fn new(what: &'static str, failures: u32, cooldown: Duration) -> Self {
        Breaker { failures: failures.max(1), cooldown, what, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn admit(&self) -> Admit {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => Admit::Yes,
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *s = State::HalfOpen { trial: true };
                    Admit::Yes
                } else {
                    Admit::No(until - now)
                }
            }
            State::HalfOpen { trial: true } => Admit::No(Duration::from_millis(100)),
            State::HalfOpen { trial: false } => {
                *s = State::HalfOpen { trial: true };
                Admit::Yes
            }
        }
    }

    /// The provider answered (accepted, or rejected the input itself: it is up).
    pub fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// A transient failure (timeout, refused connection, 5xx, 429).
    pub fn failure(&self) {
        let mut s = self.lock();
        let failures = match *s {
            State::Closed { failures } => failures + 1,
            State::HalfOpen { .. } | State::Open { .. } => self.failures,
        };
        *s = if failures >= self.failures {
            tracing::warn!(cooldown_ms = self.cooldown.as_millis() as u64, "{} provider circuit opened", self.what);
            State::Open { until: Instant::now() + self.cooldown }
        } else {
            State::Closed { failures }
        };
    }

    /// The provider asked to wait (`Retry-After`): skip it until then, without counting a
    /// failure; an open circuit stays open at least as long as it was.
    pub fn rate_limited(&self, wait: Duration) {
        let mut s = self.lock();
        let until = Instant::now() + wait;
        *s = match *s {
            State::Open { until: t } => State::Open { until: t.max(until) },
            _ => State::Open { until },
        };
    }

    /// An admitted send that did not reach the provider (nothing to learn): a half-open trial
    /// is given back.
    pub fn release(&self) {
        let mut s = self.lock();
        if let State::HalfOpen { trial: true } = *s {
            *s = State::HalfOpen { trial: false };
        }
    }

    /// `closed`, `open` or `half_open`, for results and metrics.
    pub fn state_name(&self) -> &'static str {
        match *self.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, cooldown_ms: u64) -> Breaker {
        Breaker::new("test", failures, Duration::from_millis(cooldown_ms))
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3, 60_000);
        b.failure();
        b.failure();
        b.success(); // resets the count
        b.failure();
        b.failure();
        assert_eq!(b.admit(), Admit::Yes);
        b.failure();
        assert!(matches!(b.admit(), Admit::No(d) if d > Duration::from_secs(59)));
        assert_eq!(b.state_name(), "open");
    }

    #[test]
    fn half_open_lets_one_trial_through() {
        let b = breaker(1, 30);
        b.failure();
        assert!(matches!(b.admit(), Admit::No(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Yes, "the trial");
        assert!(matches!(b.admit(), Admit::No(_)), "only one trial at a time");
        b.failure();
        assert_eq!(b.state_name(), "open");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Yes);
        b.release(); // the trial never reached the provider
        assert_eq!(b.admit(), Admit::Yes, "the trial is given back");
        b.success();
        assert_eq!(b.state_name(), "closed");
        assert_eq!(b.admit(), Admit::Yes);
        assert_eq!(b.admit(), Admit::Yes);
    }

    #[test]
    fn a_rate_limit_skips_the_provider_until_retry_after_without_counting_a_failure() {
        let b = breaker(1, 60_000);
        b.rate_limited(Duration::from_millis(40));
        assert!(matches!(b.admit(), Admit::No(d) if d <= Duration::from_millis(40)));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.admit(), Admit::Yes, "one trial after Retry-After");
        b.success();
        assert_eq!(b.state_name(), "closed");
        // A shorter Retry-After does not shorten an open circuit.
        b.failure();
        b.rate_limited(Duration::from_millis(1));
        assert!(matches!(b.admit(), Admit::No(d) if d > Duration::from_secs(59)));
    }
}
