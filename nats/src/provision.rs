//! Creates or updates every stream, bucket and consumer of a [`Topology`].
//! Idempotent: running it again changes nothing, or applies changed limits.

use async_nats::jetstream::{self, consumer, stream};

use crate::buckets;
use crate::topology::{CONTEXTS, DLQ_STREAM, DLQ_SUBJECT_PREFIX, Topology, event_stream};

/// Provisioning failed on the named object.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("stream {name}: {source}")]
    Stream { name: String, source: jetstream::context::CreateStreamError },
    #[error("consumer {name}: {source}")]
    Consumer { name: String, source: jetstream::stream::ConsumerError },
}

/// What one run provisioned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provisioned {
    pub streams: Vec<String>,
    pub buckets: Vec<String>,
    pub consumers: Vec<String>,
}

pub async fn provision(jetstream: &jetstream::Context, topology: &Topology) -> Result<Provisioned, ProvisionError> {
    let mut done = Provisioned::default();
    for context in CONTEXTS {
        let name = event_stream(context);
        create_or_update(jetstream, event_stream_config(topology, context, &name)).await?;
        done.streams.push(name);
    }

    create_or_update(
        jetstream,
        stream::Config {
            name: DLQ_STREAM.to_owned(),
            subjects: vec![format!("{DLQ_SUBJECT_PREFIX}.>")],
            max_age: topology.dlq_max_age,
            max_bytes: topology.dlq_max_bytes,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            description: Some("Dead letters: messages a consumer gave up on, with reason and attempts".to_owned()),
            ..Default::default()
        },
    )
    .await?;
    done.streams.push(DLQ_STREAM.to_owned());

    for bucket in &topology.buckets {
        create_or_update(jetstream, buckets::stream_config(bucket)).await?;
        done.buckets.push(bucket.name.to_owned());
    }

    for subscription in &topology.subscriptions {
        let stream_name = event_stream(subscription.context);
        for partition in topology.partitions() {
            let durable = subscription.durable_name(partition);
            let config = consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: subscription.filter_subject(partition),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: consumer::DeliverPolicy::All,
                ack_wait: topology.ack_wait,
                max_deliver: topology.max_deliver,
                max_ack_pending: topology.max_ack_pending,
                ..Default::default()
            };
            // On 2.9, creating an existing durable with a new config updates it.
            jetstream
                .create_consumer_on_stream(config, &stream_name)
                .await
                .map_err(|source| ProvisionError::Consumer { name: durable.clone(), source })?;
            done.consumers.push(durable);
        }
    }
    tracing::info!(
        streams = done.streams.len(),
        buckets = done.buckets.len(),
        consumers = done.consumers.len(),
        "JetStream provisioned"
    );
    Ok(done)
}

fn event_stream_config(topology: &Topology, context: &str, name: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("evt.{context}.>")],
        retention: stream::RetentionPolicy::Limits,
        max_age: topology.event_max_age,
        max_bytes: topology.event_max_bytes,
        discard: stream::DiscardPolicy::Old,
        duplicate_window: topology.duplicate_window,
        storage: stream::StorageType::File,
        num_replicas: 1,
        description: Some(format!("Events of the {context} context")),
        ..Default::default()
    }
}

async fn create_or_update(jetstream: &jetstream::Context, config: stream::Config) -> Result<(), ProvisionError> {
    let name = config.name.clone();
    jetstream.create_or_update_stream(config).await.map_err(|source| ProvisionError::Stream { name, source })?;
    Ok(())
}
