//! Operator commands: `emporium dlq list|replay` and `emporium outbox replay`.

// These commands report to the operator on stdout.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use emporium_nats::{Publisher, dlq, outbox};
use emporium_platform::Settings;
use emporium_platform::connections::connect_once;

use crate::host::Service;

/// Connects to NATS for a one-shot command, failing fast if it is not there.
pub(crate) async fn connect_nats(settings: &Settings, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(settings.nats_url.as_str())
        .await
        .with_context(|| format!("connecting to NATS at {}", settings.nats_url))
}

/// Prints up to `limit` dead letters, oldest first.
pub(crate) async fn dlq_list(settings: &Settings, limit: usize) -> anyhow::Result<()> {
    let client = connect_nats(settings, "emporium-dlq").await?;
    let letters = dlq::list(&async_nats::jetstream::new(client), limit).await?;
    if letters.is_empty() {
        println!("The DLQ is empty.");
    }
    for letter in letters {
        println!(
            "{seq}\t{at}\t{consumer}\t{subject}\tattempts={attempts}\t{reason}",
            seq = letter.sequence,
            at = letter.at.to_rfc3339(),
            consumer = letter.consumer,
            subject = letter.subject,
            attempts = letter.attempts,
            reason = letter.reason,
        );
    }
    Ok(())
}

/// Replays the given dead letters (or all of them) to their original subjects.
pub(crate) async fn dlq_replay(settings: &Settings, sequences: Vec<u64>, all: bool) -> anyhow::Result<()> {
    let client = connect_nats(settings, "emporium-dlq").await?;
    let jetstream = async_nats::jetstream::new(client.clone());
    let sequences = if all {
        dlq::list(&jetstream, usize::MAX).await?.into_iter().map(|letter| letter.sequence).collect()
    } else {
        sequences
    };
    anyhow::ensure!(!sequences.is_empty(), "name the dead letters to replay (see `emporium dlq list`) or pass --all");
    for sequence in &sequences {
        dlq::replay(&jetstream, *sequence).await.with_context(|| format!("replaying dead letter {sequence}"))?;
        println!("replayed {sequence}");
    }
    client.flush().await?;
    Ok(())
}

/// Republishes every outbox row written since `since`, for one service or all.
pub(crate) async fn outbox_replay(
    settings: &Settings,
    since: DateTime<Utc>,
    only: Option<Service>,
) -> anyhow::Result<()> {
    let client = connect_nats(settings, "emporium-outbox-replay").await?;
    let publisher = Publisher::new(async_nats::jetstream::new(client.clone()), settings.partitions);
    let with_outbox: Vec<&'static str> = Service::ALL
        .iter()
        .copied()
        .filter(|s| only.is_none_or(|only| only == *s))
        .filter_map(Service::database)
        .collect();
    if with_outbox.is_empty() {
        println!("No selected service keeps an outbox: nothing to replay.");
    }
    for name in with_outbox {
        let pool = connect_once(&settings.database_url, name).await?;
        let count = outbox::replay_since(&pool, &publisher, since)
            .await
            .with_context(|| format!("replaying the {name} outbox"))?;
        println!("{name}: republished {count} events written since {}", since.to_rfc3339());
    }
    client.flush().await?;
    Ok(())
}

/// A point in time: RFC 3339 (`2026-11-21T09:00:00Z`) or an age (`90s`, `15m`, `1h`, `2d`).
pub(crate) fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (amount, unit) = text.split_at(split);
    let amount: i64 = amount.parse().map_err(|_| format!("{text:?} is neither RFC 3339 nor an age like 1h"))?;
    let age = match unit {
        "s" => chrono::TimeDelta::try_seconds(amount),
        "m" => chrono::TimeDelta::try_minutes(amount),
        "h" => chrono::TimeDelta::try_hours(amount),
        "d" => chrono::TimeDelta::try_days(amount),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?}: an age is a number with s, m, h or d"))?;
    Ok(now - age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_timestamp_or_an_age() {
        let now = DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_since("2026-11-21T09:30:00Z", now).unwrap().to_rfc3339(), "2026-11-21T09:30:00+00:00");
        assert_eq!(parse_since("1h", now).unwrap().to_rfc3339(), "2026-11-21T11:00:00+00:00");
        assert_eq!(parse_since("90s", now).unwrap().to_rfc3339(), "2026-11-21T11:58:30+00:00");
        assert!(parse_since("1w", now).is_err());
        assert!(parse_since("yesterday", now).is_err());
    }
}
