//! Fresh databases for every measured run: a `wharf_bench_<random>` PostgreSQL database
//! (dropped afterwards) or a SQLite file in the temp directory (removed afterwards).

use anyhow::{Context, Result};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Every PostgreSQL URL the bench hands out disables TLS: on loopback TLS buys nothing, and
/// sqlx 0.9.0 leaves TCP_NODELAY off under TLS (sqlx #4335), which stalls acks by ~45 ms.
const PG_PARAMS: &str = "sslmode=disable";

pub struct TempPg {
    base: String,
    pub name: String,
    pub url: String,
}

fn with_db(base: &str, db: &str) -> String {
    format!("{}/{db}?{PG_PARAMS}", base.trim_end_matches('/'))
}

impl TempPg {
    /// `base` is the server URL without a database (`postgres://postgres@127.0.0.1:5432`).
    pub async fn create(base: &str) -> Result<TempPg> {
        let name = format!("wharf_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut admin = PgConnection::connect(&with_db(base, "postgres"))
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {base}"))?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        admin.close().await.ok();
        Ok(TempPg { base: base.to_string(), url: with_db(base, &name), name })
    }

    /// Drops the database, ending any session still connected to it.
    pub async fn drop_db(self) -> Result<()> {
        let mut admin = PgConnection::connect(&with_db(&self.base, "postgres")).await?;
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot drop database {}", self.name))?;
        admin.close().await.ok();
        Ok(())
    }
}

pub struct TempSqlite {
    path: std::path::PathBuf,
    pub url: String,
}

impl TempSqlite {
    pub fn new() -> TempSqlite {
        let path =
            std::env::temp_dir().join(format!("wharf_bench_{}.db", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        let url = format!("sqlite://{}", path.display());
        TempSqlite { path, url }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn remove(self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}
