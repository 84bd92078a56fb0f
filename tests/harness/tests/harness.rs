//! The harness gives each test real, isolated servers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use emporium_test_harness::{NatsServer, TestDatabase, TestNats, TestRedis};
use fred::prelude::KeysInterface;

#[tokio::test]
async fn each_test_gets_a_fresh_database_that_is_dropped_afterwards() {
    let first = TestDatabase::create().await.unwrap();
    let second = TestDatabase::create().await.unwrap();
    assert_ne!(first.name(), second.name());

    sqlx::query("CREATE TABLE t (x int)").execute(first.pool()).await.unwrap();
    let in_second: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('t')::text").fetch_one(second.pool()).await.unwrap();
    assert_eq!(in_second, None, "a table of one test's database is visible in another's");

    let name = first.name().to_owned();
    let server = second.server_url().to_owned();
    drop(first);
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&server).await.unwrap();
    let left: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!left, "{name} was not dropped");
}

#[tokio::test]
async fn redis_prefixes_keep_tests_apart() {
    let one = TestRedis::connect().await.unwrap();
    let two = TestRedis::connect().await.unwrap();
    assert_ne!(one.prefix(), two.prefix());
    let key = format!("{}cart", one.prefix());
    let _: () = one.client().set(&key, "1", None, None, false).await.unwrap();
    let seen: Option<String> = one.client().get(&key).await.unwrap();
    assert_eq!(seen.as_deref(), Some("1"));
    one.clear().await.unwrap();
    let gone: Option<String> = one.client().get(&key).await.unwrap();
    assert_eq!(gone, None);
}

#[tokio::test]
async fn a_private_nats_server_keeps_its_streams_across_a_restart() {
    if !NatsServer::available() {
        eprintln!("no nats-server binary: the private-server test cannot run here");
        return;
    }
    let mut nats = TestNats::start().await.unwrap();
    let jetstream = async_nats::jetstream::new(nats.client().clone());
    let stream = nats.name("RESTART");
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{stream}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    jetstream.publish(format!("{stream}.a"), "one".into()).await.unwrap().await.unwrap();

    nats.server().unwrap().restart().await.unwrap();

    // The client reconnects by itself; the message survived in the store directory.
    let client = nats.client().clone();
    let reconnected = emporium_test_harness::eventually(Duration::from_secs(10), || {
        let client = client.clone();
        async move { client.connection_state() == async_nats::connection::State::Connected }
    })
    .await;
    assert!(reconnected, "the client did not reconnect to the restarted server");
    let mut info = jetstream.get_stream(&stream).await.unwrap();
    assert_eq!(info.info().await.unwrap().state.messages, 1);
}
