//! KV buckets on nats-server 2.9.
//!
//! async-nats 0.51 cannot create buckets against 2.9 (`create_key_value` fails
//! parsing 2.9's account info), so a bucket is created as its backing stream
//! `KV_<bucket>` with the settings the KV layer expects; open it with
//! `jetstream.get_key_value(name)`, which works.

use async_nats::jetstream::stream;

use crate::topology::Bucket;

/// The backing stream of `bucket`.
pub fn stream_config(bucket: &Bucket) -> stream::Config {
    let name = bucket.name;
    stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: bucket.history,
        max_age: bucket.ttl,
        max_bytes: bucket.max_bytes,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    }
}
