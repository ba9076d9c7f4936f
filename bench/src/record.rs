//! What the bench's handlers record, and the statistics drawn from it: one `(key, instant)` per
//! execution, an exactly-once check against the enqueued keys, latency percentiles, and CPU
//! accounting from `/proc`.

use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// Every execution a handler saw: the job's key and when the handler ran.
pub struct Recorder<K> {
    events: Mutex<Vec<(K, Instant)>>,
    count: AtomicUsize,
}

impl<K: Copy + Eq + Hash> Recorder<K> {
    pub fn new(capacity: usize) -> Self {
        Recorder { events: Mutex::new(Vec::with_capacity(capacity)), count: AtomicUsize::new(0) }
    }

    /// Called by the handler when a job starts (a no-op job completes at the same instant).
    pub fn record(&self, key: K) {
        let now = Instant::now();
        self.events.lock().expect("recorder lock").push((key, now));
        self.count.fetch_add(1, Ordering::Release);
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn events(&self) -> Vec<(K, Instant)> {
        self.events.lock().expect("recorder lock").clone()
    }

    /// Waits until `n` executions were recorded. Gives up when nothing new was recorded for
    /// `stall` or the whole wait exceeds `limit`; returns whether `n` was reached.
    pub async fn wait_for(&self, n: usize, stall: Duration, limit: Duration) -> bool {
        let start = Instant::now();
        let mut last = self.count();
        let mut last_progress = Instant::now();
        loop {
            let c = self.count();
            if c >= n {
                return true;
            }
            if c != last {
                last = c;
                last_progress = Instant::now();
            }
            if last_progress.elapsed() > stall || start.elapsed() > limit {
                return false;
            }
            // The instants are taken in the handler; this poll only decides when to look.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The exactly-once verdict.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Once {
    /// Enqueued, never executed.
    pub lost: u64,
    /// Executions beyond the first of a job, plus executions of keys never enqueued.
    pub duplicated: u64,
}

impl Once {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0
    }

    pub fn add(self, o: Once) -> Once {
        Once { lost: self.lost + o.lost, duplicated: self.duplicated + o.duplicated }
    }
}

pub fn exactly_once<K: Copy + Eq + Hash>(expected: &[K], events: &[(K, Instant)]) -> Once {
    let mut seen: HashMap<K, u64> = expected.iter().map(|k| (*k, 0)).collect();
    let mut duplicated = 0;
    for (k, _) in events {
        match seen.get_mut(k) {
            Some(c) => {
                *c += 1;
                if *c > 1 {
                    duplicated += 1;
                }
            }
            None => duplicated += 1,
        }
    }
    let lost = seen.values().filter(|c| **c == 0).count() as u64;
    Once { lost, duplicated }
}

/// First and last execution instants.
pub fn span(events: &[(impl Sized, Instant)]) -> Option<(Instant, Instant)> {
    let first = events.iter().map(|e| e.1).min()?;
    let last = events.iter().map(|e| e.1).max()?;
    Some((first, last))
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentiles of milliseconds.
pub fn latency(mut ms: Vec<f64>) -> Option<Latency> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| {
        let rank = ((p / 100.0) * ms.len() as f64).ceil() as usize;
        ms[rank.clamp(1, ms.len()) - 1]
    };
    Some(Latency { p50: at(50.0), p95: at(95.0), p99: at(99.0), max: *ms.last().expect("non-empty") })
}

/// W2's slow tail in words: how many jobs waited over 100 ms and over 1 s, and for the latter
/// when they were enqueued and started, in seconds after the producer's start `t0`.
pub fn late_jobs<K: Copy + Eq + Hash>(sent: &[(K, Instant)], first: &HashMap<K, Instant>, t0: Instant) -> String {
    let mut over_100ms = 0;
    let mut late: Vec<(f64, f64)> = Vec::new();
    for (k, at) in sent {
        let Some(started) = first.get(k) else { continue };
        let waited = started.saturating_duration_since(*at);
        if waited > Duration::from_millis(100) {
            over_100ms += 1;
        }
        if waited > Duration::from_secs(1) {
            late.push((at.duration_since(t0).as_secs_f64(), started.duration_since(t0).as_secs_f64()));
        }
    }
    if late.is_empty() {
        return format!("{over_100ms} jobs waited over 100 ms, none over 1 s");
    }
    let min = |f: fn(&(f64, f64)) -> f64| late.iter().map(f).fold(f64::INFINITY, f64::min);
    let max = |f: fn(&(f64, f64)) -> f64| late.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{over_100ms} jobs waited over 100 ms, {} over 1 s: enqueued {:.2}–{:.2} s after the producer started, \
         started {:.2}–{:.2} s after it",
        late.len(),
        min(|l| l.0),
        max(|l| l.0),
        min(|l| l.1),
        max(|l| l.1)
    )
}

/// CPU seconds used so far: this process, every `postgres` process on the machine, and the
/// machine as a whole (busy and total, all cores). Linux `/proc`; zeros elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub bench: f64,
    pub postgres: f64,
    pub machine_busy: f64,
    pub machine_total: f64,
}

const TICKS_PER_SECOND: f64 = 100.0;

impl Cpu {
    pub fn now() -> Cpu {
        let proc_ticks = |stat: &str| -> Option<f64> {
            // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        };
        let bench = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| proc_ticks(&s)).unwrap_or(0.0);
        let mut postgres = 0.0;
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let name = e.file_name();
                let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else { continue };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
                if stat.contains("(postgres)") {
                    postgres += proc_ticks(&stat).unwrap_or(0.0);
                }
            }
        }
        let (mut busy, mut total) = (0.0, 0.0);
        if let Some(line) = std::fs::read_to_string("/proc/stat").ok().and_then(|s| s.lines().next().map(String::from))
        {
            let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal (guest is already inside user)
            total = v.iter().take(8).sum();
            busy = total - v.get(3).copied().unwrap_or(0.0) - v.get(4).copied().unwrap_or(0.0);
        }
        Cpu {
            bench: bench / TICKS_PER_SECOND,
            postgres: postgres / TICKS_PER_SECOND,
            machine_busy: busy / TICKS_PER_SECOND,
            machine_total: total / TICKS_PER_SECOND,
        }
    }

    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            bench: self.bench - before.bench,
            postgres: self.postgres - before.postgres,
            machine_busy: self.machine_busy - before.machine_busy,
            machine_total: self.machine_total - before.machine_total,
        }
    }

    /// `CPU: bench process 0.82 s, postgres processes 1.10 s, other processes 0.20 s, machine 95 % busy`.
    pub fn describe(&self) -> String {
        let busy = if self.machine_total > 0.0 { 100.0 * self.machine_busy / self.machine_total } else { 0.0 };
        let others = (self.machine_busy - self.bench - self.postgres).max(0.0);
        format!(
            "CPU: bench process {:.2} s, postgres processes {:.2} s, other processes {:.2} s, machine {:.0} % busy (2 cores = 200 %: {:.0} % of both)",
            self.bench,
            self.postgres,
            others,
            busy * 2.0,
            busy
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_counts_lost_and_duplicated() {
        let t = Instant::now();
        let events = vec![(1, t), (2, t), (2, t), (9, t)];
        let o = exactly_once(&[1, 2, 3], &events);
        assert_eq!((o.lost, o.duplicated), (1, 2));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = latency((1..=100).map(f64::from).collect()).expect("some");
        assert_eq!((l.p50, l.p95, l.p99, l.max), (50.0, 95.0, 99.0, 100.0));
    }
}
