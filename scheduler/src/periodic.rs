//! The periodic job enqueuer. Each schedule keeps a cursor (the last tick it dealt with); every
//! tick after the cursor that is due is claimed: fired if it is at most `late_limit` late,
//! otherwise recorded as skipped and counted. A claim that another replica (or this one before
//! a restart) already holds is simply passed. On start the cursor is the last claimed tick of
//! the schedule, but never older than `lookback`; a schedule never claimed starts now.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use wharf_jobs::schedules::{Schedule, ScheduleRepo, TickClaim};

/// Most ticks of one schedule dealt with per round (a per-second schedule after a long pause).
const MAX_TICKS_PER_ROUND: usize = 1000;
/// Longest sleep between rounds (a wall-clock jump is noticed within it).
const MAX_SLEEP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Fire,
    Skip,
}

/// The due ticks after `cursor` at `now`, with what to do with each.
pub fn plan(
    s: &Schedule,
    cursor: DateTime<Utc>,
    now: DateTime<Utc>,
    late_limit: Duration,
) -> Vec<(DateTime<Utc>, Action)> {
    let late = chrono::Duration::from_std(late_limit).unwrap_or(chrono::Duration::MAX);
    s.ticks_after(cursor)
        .take_while(|t| *t <= now)
        .take(MAX_TICKS_PER_ROUND)
        .map(|t| (t, if now - t > late { Action::Skip } else { Action::Fire }))
        .collect()
}

/// Where a schedule's cursor starts: after its last claimed tick, within the lookback.
pub fn start_cursor(last: Option<DateTime<Utc>>, now: DateTime<Utc>, lookback: Duration) -> DateTime<Utc> {
    let floor = now - chrono::Duration::from_std(lookback).unwrap_or(chrono::Duration::MAX);
    match last {
        Some(last) => last.max(floor),
        None => now,
    }
}

pub struct PeriodicEnqueuer {
    repo: ScheduleRepo,
    schedules: Vec<Schedule>,
    late_limit: Duration,
    lookback: Duration,
    replica: String,
}

impl PeriodicEnqueuer {
    pub fn new(
        repo: ScheduleRepo,
        schedules: Vec<Schedule>,
        late_limit: Duration,
        lookback: Duration,
        replica: String,
    ) -> Self {
        PeriodicEnqueuer { repo, schedules, late_limit, lookback, replica }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut cursors = Vec::with_capacity(self.schedules.len());
        for s in &self.schedules {
            let last = loop {
                match self.repo.last_tick(&s.name).await {
                    Ok(last) => break last,
                    Err(e) => {
                        tracing::warn!(schedule = %s.name, error = %e, "cannot read the last tick; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                }
            };
            cursors.push(start_cursor(last, Utc::now(), self.lookback));
        }
        loop {
            let now = Utc::now();
            for (s, cursor) in self.schedules.iter().zip(cursors.iter_mut()) {
                self.catch_up(s, cursor, now).await;
            }
            let next = self.schedules.iter().zip(&cursors).filter_map(|(s, c)| s.next_after(*c)).min();
            let wait = next
                .map(|t| (t - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(5))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Claims the due ticks of `s`; on a store error the cursor stays on the last tick dealt
    /// with and the rest waits for the next round (by then they may be too late: skipped).
    async fn catch_up(&self, s: &Schedule, cursor: &mut DateTime<Utc>, now: DateTime<Utc>) {
        for (tick, action) in plan(s, *cursor, now, self.late_limit) {
            let claim = match action {
                Action::Fire => self.repo.fire(s, tick, &self.replica).await,
                Action::Skip => self.repo.skip(s, tick, &self.replica).await,
            };
            match claim {
                Ok(TickClaim::Fired(job)) => {
                    metrics::counter!("wharf_schedule_ticks_total", "schedule" => s.name.clone(), "outcome" => "fired")
                        .increment(1);
                    tracing::debug!(schedule = %s.name, %tick, job.id = %job, "tick fired");
                }
                Ok(TickClaim::Skipped) => {
                    metrics::counter!("wharf_schedule_ticks_skipped_total", "schedule" => s.name.clone()).increment(1);
                    metrics::counter!("wharf_schedule_ticks_total", "schedule" => s.name.clone(), "outcome" => "skipped")
                        .increment(1);
                    tracing::warn!(
                        schedule = %s.name, %tick, late_s = (now - tick).num_seconds(),
                        limit_s = self.late_limit.as_secs(), "tick skipped: found too late"
                    );
                }
                Ok(TickClaim::Taken) => {}
                Err(e) => {
                    tracing::warn!(schedule = %s.name, %tick, error = %e, "claiming a tick failed; retrying next round");
                    return;
                }
            }
            *cursor = tick;
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn every_second() -> Schedule {
        Schedule::new("t", "* * * * * *", "UTC", "diagnostic", "diagnostic", "t", json!({})).unwrap()
    }

    #[test]
    fn late_ticks_are_skipped_and_due_ones_fired() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 10).unwrap();
        let cursor = now - chrono::Duration::seconds(8);
        let p = plan(&every_second(), cursor, now, Duration::from_secs(3));
        assert_eq!(p.len(), 8);
        let skipped = p.iter().filter(|(_, a)| *a == Action::Skip).count();
        // Ticks 12:00:03..=12:00:06 are more than 3 s late; 07..=10 are not.
        assert_eq!(skipped, 4);
        assert_eq!(p.last().unwrap(), &(now, Action::Fire));
        assert!(p.iter().all(|(t, _)| *t > cursor && *t <= now));
    }

    #[test]
    fn five_minutes_late_is_the_default_limit_edge() {
        let s = Schedule::new("m", "0 * * * * *", "UTC", "diagnostic", "diagnostic", "t", json!({})).unwrap();
        let tick = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let limit = Duration::from_secs(300);
        let at = |secs| plan(&s, tick - chrono::Duration::seconds(1), tick + chrono::Duration::seconds(secs), limit);
        assert_eq!(at(300)[0], (tick, Action::Fire));
        assert_eq!(at(301)[0], (tick, Action::Skip));
    }

    #[test]
    fn restarts_resume_after_the_last_claim_within_the_lookback() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let lookback = Duration::from_secs(600);
        let recent = now - chrono::Duration::seconds(30);
        assert_eq!(start_cursor(Some(recent), now, lookback), recent);
        let old = now - chrono::Duration::days(2);
        assert_eq!(start_cursor(Some(old), now, lookback), now - chrono::Duration::seconds(600));
        assert_eq!(start_cursor(None, now, lookback), now);
        // A restart never plans the last claimed tick again.
        assert!(plan(&every_second(), recent, now, Duration::from_secs(300)).iter().all(|(t, _)| *t > recent));
    }
}
