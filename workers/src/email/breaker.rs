//! A circuit breaker per provider, in-process (each worker process keeps its own view).
//! Closed: every send goes through; `failures` consecutive transient failures open it. Open:
//! the provider is skipped for `cooldown`. Then half-open: one trial send goes through (others
//! still skip); its success closes the circuit, its failure opens it for another cooldown.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use super::config::BreakerConfig;

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial: bool },
}

#[derive(Debug)]
pub(super) struct Breaker {
    cfg: BreakerConfig,
    state: Mutex<State>,
}

/// Whether a send may go to the provider now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    Yes,
    /// The circuit is open (or its one trial is in flight): skip; it may admit again after this.
    No(Duration),
}

impl Breaker {
    pub(super) fn new(cfg: BreakerConfig) -> Self {
        Breaker { cfg, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn admit(&self) -> Admit {
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

    /// The provider answered (accepted, or rejected the message itself: it is up).
    pub(super) fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// A transient failure (timeout, refused connection, 5xx, 429).
    pub(super) fn failure(&self) {
        let mut s = self.lock();
        let failures = match *s {
            State::Closed { failures } => failures + 1,
            State::HalfOpen { .. } | State::Open { .. } => self.cfg.failures,
        };
        *s = if failures >= self.cfg.failures {
            tracing::warn!(cooldown_ms = self.cfg.cooldown.as_millis() as u64, "email provider circuit opened");
            State::Open { until: Instant::now() + self.cfg.cooldown }
        } else {
            State::Closed { failures }
        };
    }

    /// An admitted send that did not reach the provider (nothing to learn): a half-open trial
    /// is given back.
    pub(super) fn release(&self) {
        let mut s = self.lock();
        if let State::HalfOpen { trial: true } = *s {
            *s = State::HalfOpen { trial: false };
        }
    }

    /// `closed`, `open` or `half_open`, for results and metrics.
    pub(super) fn state_name(&self) -> &'static str {
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
        Breaker::new(BreakerConfig { failures, cooldown: Duration::from_millis(cooldown_ms) })
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
}
