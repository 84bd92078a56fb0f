//! What a load run reads off the machine and the servers: CPU time per
//! process, Postgres commits, how long queued work takes to drain, and the
//! raw Postgres limit.

use std::time::Duration;

use emporium_system::invariants::{self, Databases};
use emporium_test_harness::PostgresServer;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name sits in parentheses and may hold spaces; fields follow it.
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(|field| field.parse().unwrap_or(0)).collect())
}

/// CPU seconds of a process: its own (all threads), plus those of its
/// children it has reaped (`cutime`/`cstime`, e.g. Postgres backends that
/// exited), plus those of its living children when `with_children`.
pub fn cpu_seconds(pid: u32, with_children: bool) -> f64 {
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let ticks = |pid: u32, fields: std::ops::Range<usize>| {
        stat_fields(pid).map_or(0, |stat| fields.filter_map(|n| stat.get(n)).sum::<u64>())
    };
    let mut total = ticks(pid, 11..15);
    if with_children {
        total += children(pid).into_iter().map(|child| ticks(child, 11..13)).sum::<u64>();
    }
    total as f64 / TICKS_PER_SEC
}

/// This process's own CPU seconds.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id(), false)
}

fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_fields(*pid).and_then(|f| f.get(1).copied()) == Some(u64::from(parent)))
        .collect()
}

/// Commits so far over the services' databases (`emporium_*`), read-only
/// transactions included, as `pg_stat_database` counts them.
pub async fn commits(server: &PgPool) -> anyhow::Result<i64> {
    let mut connection = server.acquire().await?;
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *connection).await?;
    let total: Option<i64> =
        sqlx::query_scalar("SELECT sum(xact_commit)::int8 FROM pg_stat_database WHERE datname LIKE 'emporium\\_%'")
            .fetch_one(&mut *connection)
            .await?;
    Ok(total.unwrap_or(0))
}

/// WAL flushes so far (each a durable write to disk).
pub async fn wal_flushes(server: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT wal_sync FROM pg_stat_wal").fetch_one(server).await?)
}

/// Starts counting statements afresh (needs pg_stat_statements preloaded).
pub async fn statements_reset(server: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(server).await?;
    sqlx::query("SELECT pg_stat_statements_reset()").execute(server).await?;
    Ok(())
}

/// The `top` statements by total execution time since the reset, per
/// checkout: database, calls, milliseconds, the statement's text.
pub async fn statements(server: &PgPool, checkouts: f64, top: i64) -> anyhow::Result<Vec<String>> {
    let rows: Vec<(String, i64, f64, String)> = sqlx::query_as(
        "SELECT d.datname::text, s.calls, s.total_exec_time, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 110)
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         ORDER BY s.total_exec_time DESC LIMIT $1",
    )
    .bind(top)
    .fetch_all(server)
    .await?;
    let per_database: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT d.datname::text, sum(s.calls)::int8, sum(s.total_exec_time)
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         GROUP BY 1 ORDER BY 3 DESC",
    )
    .fetch_all(server)
    .await?;
    let line = |calls: i64, ms: f64, db: &str, query: &str| {
        format!("{:>6.2} calls {:>7.3} ms  {:<22} {query}", calls as f64 / checkouts, ms / checkouts, db)
    };
    Ok(per_database
        .iter()
        .map(|(db, calls, ms)| line(*calls, *ms, db, "(every statement)"))
        .chain(rows.iter().map(|(db, calls, ms, query)| line(*calls, *ms, db, query)))
        .collect())
}

/// How long until no work is queued anywhere (no unpublished outbox row, no
/// message a consumer has not been given or not acked: [`invariants::queued`]),
/// polling every 100 ms for at most `patience`.
pub async fn drained_within(
    databases: &Databases,
    jetstream: &async_nats::jetstream::Context,
    patience: Duration,
) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    while started.elapsed() < patience {
        let queued = invariants::queued(databases, jetstream).await?;
        if queued.is_empty() {
            return Ok(Some(started.elapsed()));
        }
        tracing::debug!(?queued, "waiting for the stack to drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// The raw limit of `server`: transactions of two single-row inserts each,
/// committed durably, from `clients` connections for `period`. Returns
/// transactions per second.
pub async fn raw_postgres(server: &PostgresServer, clients: usize, period: Duration) -> anyhow::Result<f64> {
    let mut admin = PgConnection::connect(&server.url()).await?;
    sqlx::query("DROP DATABASE IF EXISTS raw_limit").execute(&mut admin).await?;
    sqlx::query("CREATE DATABASE raw_limit").execute(&mut admin).await?;
    admin.close().await?;
    let url = server.database_url("raw_limit");
    let mut setup = PgConnection::connect(&url).await?;
    sqlx::query("CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), body text)")
        .execute(&mut setup)
        .await?;
    setup.close().await?;

    let until = Instant::now() + period;
    let mut workers = Vec::new();
    for _ in 0..clients {
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let mut connection = PgConnection::connect(&url).await?;
            let mut done = 0u64;
            while Instant::now() < until {
                let mut tx = connection.begin().await?;
                for body in ["first", "second"] {
                    sqlx::query("INSERT INTO events (body) VALUES ($1)").bind(body).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                done += 1;
            }
            Ok::<_, sqlx::Error>(done)
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await??;
    }
    Ok(total as f64 / period.as_secs_f64())
}
