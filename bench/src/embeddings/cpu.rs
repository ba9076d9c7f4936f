//! CPU seconds over a measurement, split by who spent them: the model server, this process
//! (worker, handler, HTTP client), the PostgreSQL backends of the run's own database, and
//! everything else on the machine (on a shared machine: other people's builds and tests).
//!
//! PostgreSQL is counted per backend of the run's database, not over every `postgres` process:
//! other sessions' databases are busy on this machine, and a backend that exits mid-run would
//! take its CPU out of a machine-wide sum (which then can even go negative).

use std::{collections::HashMap, time::Instant};

use wharf_jobs::store::Db;

use super::server::{EmbServer, process_cpu_seconds};

#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub server: f64,
    pub bench: f64,
    pub postgres: f64,
    pub others: f64,
    pub wall: f64,
}

/// Other work above this share of both cores marks a measurement as disturbed.
const BUSY_SHARE: f64 = 0.10;

impl CpuSplit {
    /// Other processes used a noticeable part of the machine meanwhile.
    pub fn busy(&self) -> bool {
        self.others > BUSY_SHARE * 2.0 * self.wall
    }

    pub fn describe(&self) -> String {
        format!(
            "CPU over {:.1} s: model server {:.1} s, bench process (worker, handler, HTTP client) {:.2} s, \
             postgres backends of this database {:.2} s, everything else {:.1} s (2 cores = {:.1} s available){}",
            self.wall,
            self.server,
            self.bench,
            self.postgres,
            self.others,
            2.0 * self.wall,
            if self.busy() { " — DISTURBED: other work used over 10 % of the machine" } else { "" }
        )
    }
}

pub struct Mark {
    machine: crate::record::Cpu,
    server: f64,
    pg: HashMap<u32, f64>,
    at: Instant,
}

/// The backends serving the run's database (PostgreSQL only; the bench runs on the same host).
async fn pg_backends(db: Option<&Db>) -> HashMap<u32, f64> {
    let Some(Db::Postgres(pool)) = db else { return HashMap::new() };
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        .fetch_all(pool)
        .await
        .unwrap_or_default();
    pids.into_iter().filter_map(|p| Some((p as u32, process_cpu_seconds(p as u32)?))).collect()
}

pub async fn mark(server: &EmbServer, db: Option<&Db>) -> Mark {
    let pg = pg_backends(db).await;
    Mark { machine: crate::record::Cpu::now(), server: server.cpu_seconds(), pg, at: Instant::now() }
}

pub async fn since(server: &EmbServer, db: Option<&Db>, m: &Mark) -> CpuSplit {
    let wall = m.at.elapsed().as_secs_f64();
    let d = crate::record::Cpu::now().since(m.machine);
    let s = server.cpu_seconds() - m.server;
    // A backend that connected during the run counts from zero.
    let postgres: f64 =
        pg_backends(db).await.iter().map(|(pid, now)| now - m.pg.get(pid).copied().unwrap_or(0.0)).sum();
    CpuSplit { server: s, bench: d.bench, postgres, others: (d.machine_busy - d.bench - postgres - s).max(0.0), wall }
}
