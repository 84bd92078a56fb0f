//! Provisioning against a real nats-server 2.9: everything is created with its
//! limits, a second run changes nothing, and consumers see only their partition.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use emporium_nats::topology::{CONTEXTS, DLQ_STREAM, event_stream};
use emporium_nats::{Subscription, Topology, provision};
use emporium_schemas::{EntityKey, Partition};
use emporium_test_harness::TestNats;
use futures::StreamExt;

fn topology() -> Topology {
    Topology::new(
        4,
        vec![
            Subscription { service: "payment", context: "inventory" },
            Subscription { service: "order", context: "payment" },
        ],
    )
}

#[tokio::test]
async fn provisioning_creates_every_stream_bucket_and_consumer_with_limits() {
    let nats = TestNats::start().await.unwrap();
    let js = jetstream::new(nats.client().clone());
    let topology = topology();

    let done = provision(&js, &topology).await.unwrap();
    assert_eq!(done.streams.len(), CONTEXTS.len() + 1);
    assert_eq!(done.consumers.len(), 2 * 4);

    for context in CONTEXTS {
        let mut stream = js.get_stream(event_stream(context)).await.unwrap();
        let config = stream.info().await.unwrap().config.clone();
        assert_eq!(config.subjects, vec![format!("evt.{context}.>")]);
        assert_eq!(config.max_age, topology.event_max_age);
        assert_eq!(config.max_bytes, topology.event_max_bytes);
        assert_eq!(config.duplicate_window, topology.duplicate_window);
    }
    let mut dlq = js.get_stream(DLQ_STREAM).await.unwrap();
    assert!(dlq.info().await.unwrap().config.max_age > Duration::ZERO);

    for bucket in &topology.buckets {
        let store = js.get_key_value(bucket.name).await.unwrap();
        store.put("probe", "1".into()).await.unwrap();
        assert_eq!(store.get("probe").await.unwrap().as_deref(), Some(&b"1"[..]));
        let mut backing = js.get_stream(format!("KV_{}", bucket.name)).await.unwrap();
        assert_eq!(backing.info().await.unwrap().config.max_age, bucket.ttl);
    }

    let stream = js.get_stream(event_stream("inventory")).await.unwrap();
    let consumer: PullConsumer = stream.get_consumer("payment-inventory-p02").await.unwrap();
    let info = consumer.cached_info();
    assert_eq!(info.config.filter_subject, "evt.inventory.*.*.p02.*");
    assert_eq!(info.config.max_deliver, topology.max_deliver);
}

#[tokio::test]
async fn provisioning_twice_changes_nothing_and_applies_new_limits() {
    let nats = TestNats::start().await.unwrap();
    let js = jetstream::new(nats.client().clone());
    let topology = topology();
    provision(&js, &topology).await.unwrap();

    js.publish("evt.payment.authorized.v1.p01.k1", "{}".into()).await.unwrap().await.unwrap();
    let again = provision(&js, &topology).await.unwrap();
    assert_eq!(again.consumers.len(), 8);
    let mut stream = js.get_stream(event_stream("payment")).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1, "re-provisioning lost messages");

    let mut longer = topology.clone();
    longer.event_max_age = Duration::from_secs(14 * 24 * 3600);
    provision(&js, &longer).await.unwrap();
    assert_eq!(stream.info().await.unwrap().config.max_age, longer.event_max_age);
}

#[tokio::test]
async fn a_partition_consumer_receives_only_its_partitions_events() {
    let nats = TestNats::start().await.unwrap();
    let js = jetstream::new(nats.client().clone());
    let topology = topology();
    provision(&js, &topology).await.unwrap();

    let placed = emporium_schemas::event_type!("inventory", "reserved", 1);
    let mut expected = 0;
    let target = Partition::all(4).next().unwrap();
    for i in 0..40 {
        let key = EntityKey::try_from(format!("order-{i}")).unwrap();
        let partition = Partition::of(&key, topology.partitions);
        if partition == target {
            expected += 1;
        }
        js.publish(placed.subject(partition, &key), "{}".into()).await.unwrap().await.unwrap();
    }

    let stream = js.get_stream(event_stream("inventory")).await.unwrap();
    let consumer: PullConsumer = stream
        .get_consumer(&Subscription { service: "payment", context: "inventory" }.durable_name(target))
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(100).expires(Duration::from_secs(1)).messages().await.unwrap();
    let mut received = 0;
    while let Some(message) = batch.next().await {
        let message = message.unwrap();
        assert!(message.subject.as_str().contains(&format!(".{target}.")), "{} leaked in", message.subject);
        message.ack().await.unwrap();
        received += 1;
    }
    assert!(expected > 0);
    assert_eq!(received, expected);
}
