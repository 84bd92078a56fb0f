//! The entity host on Postgres and NATS: entities stored through group
//! commit, passivated and re-activated intact, rebuilt after a panic with
//! their message applied once, racing writers fenced by versions, durable
//! deadlines, and partition-addressed commands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use emporium_actors::deadlines::DeadlineSweeper;
use emporium_actors::{
    CommitMeta, Entity, EntityHost, GroupCommit, HostConfig, HostError, InboxEntry, Persistent, PgStore, WriterConfig,
    postgres,
};
use emporium_nats::{Clock, ManualClock, OutboxSignal, OutgoingEvent, outbox};
use emporium_schemas::commands::cart::AddItem;
use emporium_schemas::events::order::OrderShipped;
use emporium_schemas::{CommandEnvelope, EntityKey, Envelope, ErrorKind, MessageId, Partition, Reply, ReplyError, Seq};
use emporium_test_harness::events::shipped_payload;
use emporium_test_harness::{TestDatabase, TestNats, eventually};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A ticket: numbers added in order, and a deadline after which it expires.
struct Ticket;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TicketState {
    added: Vec<u32>,
    deadline: Option<DateTime<Utc>>,
    expired: bool,
}

#[derive(Debug)]
enum TicketCommand {
    Add(u32),
    /// Panics the first time it is decided (a bug that a redelivery no longer hits).
    AddAfterACrash(u32),
    ExpireAt(DateTime<Utc>),
    DeadlineReached(DateTime<Utc>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TicketEvent {
    Added(u32),
    DeadlineSet(DateTime<Utc>),
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the ticket has expired")]
struct HasExpired;

static CRASHED: AtomicBool = AtomicBool::new(false);

impl Entity for Ticket {
    type Id = Uuid;
    type State = TicketState;
    type Command = TicketCommand;
    type Event = TicketEvent;
    type Rejection = HasExpired;

    fn decide(state: &TicketState, command: &TicketCommand) -> Result<Vec<TicketEvent>, HasExpired> {
        match command {
            _ if state.expired && !matches!(command, TicketCommand::DeadlineReached(_)) => Err(HasExpired),
            TicketCommand::Add(n) => Ok(vec![TicketEvent::Added(*n)]),
            TicketCommand::AddAfterACrash(n) => {
                assert!(CRASHED.swap(true, Ordering::SeqCst), "a bug hit on the first attempt");
                Ok(vec![TicketEvent::Added(*n)])
            }
            TicketCommand::ExpireAt(at) => Ok(vec![TicketEvent::DeadlineSet(*at)]),
            TicketCommand::DeadlineReached(now) => {
                let due = !state.expired && state.deadline.is_some_and(|deadline| deadline <= *now);
                Ok(if due { vec![TicketEvent::Expired] } else { Vec::new() })
            }
        }
    }

    fn apply(state: &mut TicketState, event: &TicketEvent) {
        match event {
            TicketEvent::Added(n) => state.added.push(*n),
            TicketEvent::DeadlineSet(at) => state.deadline = Some(*at),
            TicketEvent::Expired => state.expired = true,
        }
    }
}

impl Persistent for Ticket {
    const KIND: &'static str = "ticket";

    fn key(id: &Uuid) -> EntityKey {
        EntityKey::from(*id)
    }

    fn id(key: &EntityKey) -> Option<Uuid> {
        key.as_str().parse().ok()
    }

    fn outgoing(
        key: &EntityKey,
        seq: Seq,
        _: &TicketEvent,
        meta: &CommitMeta,
    ) -> Result<Option<OutgoingEvent>, serde_json::Error> {
        // Any registered event type will do for the test: the envelope is what matters.
        OutgoingEvent::caused_by(key.clone(), seq, meta.origin(), shipped_payload()).map(Some)
    }

    fn deadline(state: &TicketState) -> Option<DateTime<Utc>> {
        state.deadline.filter(|_| !state.expired)
    }

    fn deadline_reached(now: DateTime<Utc>) -> TicketCommand {
        TicketCommand::DeadlineReached(now)
    }
}

async fn database() -> TestDatabase {
    let db = TestDatabase::create().await.unwrap();
    outbox::migrate(db.pool()).await.unwrap();
    postgres::migrate(db.pool()).await.unwrap();
    db
}

fn config() -> HostConfig {
    HostConfig { idle_after: Duration::from_secs(3600), max_in_flight: 100_000, call_timeout: Duration::from_secs(60) }
}

async fn host(pool: &PgPool, config: HostConfig) -> (EntityHost<Ticket>, GroupCommit) {
    let (writer, _) = GroupCommit::start(pool.clone(), OutboxSignal::default(), WriterConfig::default());
    let host = EntityHost::start(PgStore::new(pool.clone(), writer.clone()), config).await.unwrap();
    (host, writer)
}

async fn stored(pool: &PgPool, id: Uuid) -> (i64, TicketState) {
    let (version, state): (i64, sqlx::types::Json<TicketState>) =
        sqlx::query_as("SELECT version, state FROM entity_state WHERE kind = 'ticket' AND id = $1")
            .bind(id.to_string())
            .fetch_one(pool)
            .await
            .unwrap();
    (version, state.0)
}

async fn passivate_all(host: &EntityHost<Ticket>) {
    let all_gone = eventually(Duration::from_secs(60), || async {
        host.sweep_idle();
        host.active().await.unwrap() == 0
    })
    .await;
    assert!(all_gone, "entities still active: {}", host.active().await.unwrap());
}

#[tokio::test]
async fn ten_thousand_stored_entities_keep_order_and_state_across_passivation() {
    let db = database().await;
    let (host, writer) = host(db.pool(), HostConfig { idle_after: Duration::from_millis(50), ..config() }).await;
    let ids: Vec<Uuid> = (0..10_000).map(|_| Uuid::now_v7()).collect();
    for round in 0..3u32 {
        // Interleaved: every entity gets one command per round, all at once.
        let outcomes = futures::future::join_all(ids.iter().map(|id| host.send(*id, TicketCommand::Add(round)))).await;
        assert!(outcomes.iter().all(Result::is_ok), "{:?}", outcomes.iter().find(|o| o.is_err()));
        passivate_all(&host).await;
    }
    for id in ids.iter().step_by(97) {
        assert_eq!(stored(db.pool(), *id).await, (3, TicketState { added: vec![0, 1, 2], ..Default::default() }));
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM entity_state").fetch_one(db.pool()).await.unwrap();
    assert_eq!(rows, 10_000);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(db.pool()).await.unwrap();
    assert_eq!(events, 30_000);
    let stats = writer.stats();
    assert!(
        stats.transactions.load(Ordering::Relaxed) < stats.commits.load(Ordering::Relaxed) / 10,
        "group commit batches decisions"
    );
}

#[tokio::test]
async fn a_panicking_actor_is_rebuilt_and_its_message_applied_exactly_once() {
    let db = database().await;
    let (host, _) = host(db.pool(), config()).await;
    let id = Uuid::now_v7();
    host.send(id, TicketCommand::Add(1)).await.unwrap();
    let delivery = CommitMeta {
        inbox: Some(InboxEntry { consumer: "tickets".into(), event: MessageId::new_v7() }),
        ..Default::default()
    };

    // First delivery: the actor panics; nothing is committed, so the message would not be acked.
    let failed = host.send_with(id, TicketCommand::AddAfterACrash(2), delivery.clone()).await;
    assert_eq!(failed, Err(HostError::EntityFailed));
    assert_eq!(stored(db.pool(), id).await.0, 1);
    // The redelivery rebuilds the entity from storage and applies it…
    assert_eq!(host.send_with(id, TicketCommand::AddAfterACrash(2), delivery.clone()).await.unwrap().len(), 1);
    // …and a further redelivery changes nothing.
    assert!(host.send_with(id, TicketCommand::AddAfterACrash(2), delivery).await.unwrap().is_empty());
    assert_eq!(stored(db.pool(), id).await, (2, TicketState { added: vec![1, 2], ..Default::default() }));
}

#[tokio::test]
async fn two_writers_racing_on_one_entity_are_fenced_by_its_version_and_the_loser_retries_on_fresh_state() {
    let db = database().await;
    let (a, _) = host(db.pool(), config()).await;
    let (b, _) = host(db.pool(), config()).await;
    let id = Uuid::now_v7();
    a.send(id, TicketCommand::Add(1)).await.unwrap();
    b.send(id, TicketCommand::Add(2)).await.unwrap(); // b loads version 1 and moves it to 2
    a.send(id, TicketCommand::Add(3)).await.unwrap(); // a's copy is stale: refused, reloaded, retried
    let (x, y) = tokio::join!(a.send(id, TicketCommand::Add(4)), b.send(id, TicketCommand::Add(5)));
    x.unwrap();
    y.unwrap();

    let (version, state) = stored(db.pool(), id).await;
    assert_eq!(version, 5);
    assert_eq!(&state.added[..3], &[1, 2, 3]);
    let mut last_two = state.added[3..].to_vec();
    last_two.sort_unstable();
    assert_eq!(last_two, [4, 5]);
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM outbox WHERE key = $1 ORDER BY position")
        .bind(id.to_string())
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "each event has its own seq, none lost or doubled");
}

#[tokio::test]
async fn a_deadline_fires_for_a_passivated_entity_and_after_a_process_restart() {
    let db = database().await;
    let clock = ManualClock::at(Utc::now());
    let (host, _) = host(db.pool(), HostConfig { idle_after: Duration::from_millis(20), ..config() }).await;
    let sweeper = DeadlineSweeper::new(db.pool().clone(), host.clone(), Arc::new(clock.clone()));
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    host.send(first, TicketCommand::ExpireAt(clock.now() + chrono::TimeDelta::minutes(30))).await.unwrap();
    host.send(second, TicketCommand::ExpireAt(clock.now() + chrono::TimeDelta::minutes(90))).await.unwrap();
    passivate_all(&host).await;

    assert_eq!(sweeper.tick().await.unwrap(), 0, "nothing is due yet");
    clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(sweeper.tick().await.unwrap(), 1);
    assert!(stored(db.pool(), first).await.1.expired);
    assert!(!stored(db.pool(), second).await.1.expired);
    assert_eq!(sweeper.tick().await.unwrap(), 0, "a fired deadline is cleared");
    assert_eq!(host.send(first, TicketCommand::Add(1)).await, Err(HostError::Rejected(HasExpired)));

    // The process dies; a new one finds the other deadline in storage.
    host.stop().await;
    drop(sweeper);
    let (restarted, _) = host_restarted(db.pool()).await;
    let sweeper = DeadlineSweeper::new(db.pool().clone(), restarted, Arc::new(clock.clone()));
    clock.advance(Duration::from_secs(60 * 60));
    assert_eq!(sweeper.tick().await.unwrap(), 1);
    assert!(stored(db.pool(), second).await.1.expired);
}

async fn host_restarted(pool: &PgPool) -> (EntityHost<Ticket>, GroupCommit) {
    host(pool, config()).await
}

#[tokio::test]
async fn partition_addressed_commands_land_on_their_entity_and_only_on_their_partition() {
    let db = database().await;
    let nats = TestNats::start().await.unwrap();
    let (host, _) = host(db.pool(), config()).await;
    let stop = CancellationToken::new();
    let partitions = 4;
    // `cart.add_item` routed to a ticket, for the sake of the test: adds the quantity.
    let routes = emporium_nats::Routes::new(host).on_partitioned(
        Partition::all(partitions),
        partitions,
        |host: Arc<EntityHost<Ticket>>, command: CommandEnvelope<AddItem>| async move {
            let id =
                command.key.as_ref().and_then(Ticket::id).ok_or_else(|| ReplyError::invalid("key", "a ticket id"))?;
            let added = host.send(id, TicketCommand::Add(command.data.quantity.get())).await;
            added.map(|events| events.len()).map_err(|error| error.reply())
        },
    );
    let config = emporium_nats::ServeConfig::default();
    let serving =
        tokio::spawn(emporium_nats::rpc::serve(nats.client().clone(), "tickets", routes, config, stop.clone()));
    let id = Uuid::now_v7();
    let key = Ticket::key(&id);
    let command = |quantity: u32| {
        let add = AddItem {
            product_id: emporium_schemas::values::ProductId::new_v7(),
            quantity: quantity.try_into().unwrap(),
        };
        CommandEnvelope::new(Some(key.clone()), None, add)
    };
    let request = |subject: String, body: Vec<u8>| {
        let client = nats.client().clone();
        async move {
            // Before the server subscribes, NATS answers "no responders".
            let answer = client.request(subject, body.into()).await.ok()?;
            Some(serde_json::from_slice::<Reply<usize>>(&answer.payload).unwrap())
        }
    };
    let own = <AddItem as emporium_schemas::Command>::TYPE.subject(Some(Partition::of(&key, partitions)));
    assert!(
        eventually(Duration::from_secs(5), || async {
            matches!(request(own.clone(), command(3).to_json().unwrap()).await, Some(Reply::Ok(1)))
        })
        .await
    );
    assert!(matches!(request(own.clone(), command(4).to_json().unwrap()).await, Some(Reply::Ok(1))));
    assert_eq!(stored(db.pool(), id).await.1.added, vec![3, 4]);

    let other = Partition::all(partitions).find(|p| *p != Partition::of(&key, partitions)).unwrap();
    let misrouted =
        request(<AddItem as emporium_schemas::Command>::TYPE.subject(Some(other)), command(5).to_json().unwrap())
            .await
            .unwrap();
    assert!(matches!(misrouted, Reply::Error(ReplyError { kind: ErrorKind::Invalid, .. })), "{misrouted:?}");
    let garbage = request(own, b"{}".to_vec()).await.unwrap();
    assert!(matches!(garbage, Reply::Error(ReplyError { kind: ErrorKind::Invalid, .. })));
    assert_eq!(stored(db.pool(), id).await.1.added, vec![3, 4]);
    stop.cancel();
    serving.await.unwrap().unwrap();
}

/// Routes `order.shipped` events to the ticket named by their key: adds the event's seq.
struct ShippedToTicket;

impl emporium_actors::events::EventRoute<Ticket> for ShippedToTicket {
    type Event = OrderShipped;

    fn route(&self, event: &Envelope<OrderShipped>) -> Option<(Uuid, TicketCommand)> {
        Some((Ticket::id(&event.key)?, TicketCommand::Add(u32::try_from(event.seq.get()).ok()?)))
    }
}

#[tokio::test]
async fn event_handlers_route_events_to_the_entities_and_a_replay_changes_nothing() {
    use emporium_nats::topology::event_stream;
    use emporium_nats::{ConsumerLoop, LoopConfig, Publisher, Subscription, Topology};

    let db = database().await;
    let nats = TestNats::start().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().clone());
    let subscription = Subscription { service: "tickets", context: "order" };
    emporium_nats::provision(&js, &Topology::new(4, vec![subscription.clone()])).await.unwrap();
    let (host, _) = host(db.pool(), config()).await;
    let handler = Arc::new(emporium_actors::events::ToEntities::new(host, ShippedToTicket, "tickets"));
    let stop = CancellationToken::new();
    let stats: Vec<_> = Partition::all(4)
        .map(|partition| {
            let consumer = ConsumerLoop::new(
                js.clone(),
                event_stream("order"),
                subscription.durable_name(partition),
                handler.clone(),
                LoopConfig::default(),
            );
            let stats = consumer.stats();
            tokio::spawn(consumer.run(stop.clone()));
            stats
        })
        .collect();
    let applied = || stats.iter().map(|s| s.applied.load(Ordering::Relaxed)).sum::<u64>();
    let skipped = || stats.iter().map(|s| s.skipped.load(Ordering::Relaxed)).sum::<u64>();

    let publisher = Publisher::new(js.clone(), 4);
    let tickets: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    let mut events = Vec::new();
    for ticket in &tickets {
        for seq in 1..=3_u64 {
            let mut event = Ticket::outgoing(
                &Ticket::key(ticket),
                Seq::try_from(seq).unwrap(),
                &TicketEvent::Expired,
                &CommitMeta::default(),
            )
            .unwrap()
            .unwrap();
            event.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
            events.push(event);
        }
    }
    publisher.publish_all(&events).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || async { applied() == 150 }).await, "applied {}", applied());
    for ticket in &tickets {
        assert_eq!(stored(db.pool(), *ticket).await, (3, TicketState { added: vec![1, 2, 3], ..Default::default() }));
    }

    // The same events again, as a replay past the duplicate window would bring them.
    let replayed: Vec<_> = events
        .iter()
        .map(|event| async { js.publish(event.subject(4), event.payload.clone()).await.unwrap().await.unwrap() })
        .collect();
    futures::future::join_all(replayed).await;
    assert!(eventually(Duration::from_secs(20), || async { skipped() == 150 }).await, "skipped {}", skipped());
    assert_eq!(applied(), 150);
    for ticket in tickets.iter().step_by(7) {
        assert_eq!(stored(db.pool(), *ticket).await.1.added, vec![1, 2, 3]);
    }
    stop.cancel();
}
