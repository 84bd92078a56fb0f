//! The entity host: one actor per entity, order and state kept across
//! passivation, failures contained, overload refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use emporium_actors::{Entity, EntityHost, HostConfig, HostError, MemoryStore};

/// A tally that remembers the order of what was added to it.
struct Tally;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TallyState {
    added: Vec<u32>,
}

#[derive(Debug)]
enum TallyCommand {
    Add(u32),
    Refuse,
    Crash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Added(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused")]
struct Refused;

impl Entity for Tally {
    type Id = u32;
    type State = TallyState;
    type Command = TallyCommand;
    type Event = Added;
    type Rejection = Refused;

    fn decide(_state: &TallyState, command: &TallyCommand) -> Result<Vec<Added>, Refused> {
        match command {
            TallyCommand::Add(n) => Ok(vec![Added(*n)]),
            TallyCommand::Refuse => Err(Refused),
            TallyCommand::Crash => panic!("a bug in the domain code"),
        }
    }

    fn apply(state: &mut TallyState, Added(n): &Added) {
        state.added.push(*n);
    }
}

fn config() -> HostConfig {
    HostConfig { idle_after: Duration::from_secs(3600), max_in_flight: 100_000, call_timeout: Duration::from_secs(30) }
}

async fn wait_until_active(host: &EntityHost<Tally>, expected: usize) {
    let reached = emporium_test_harness::eventually(Duration::from_secs(10), || async {
        host.active().await.unwrap() == expected
    })
    .await;
    assert!(reached, "expected {expected} active entities, have {}", host.active().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_entities_keep_order_and_state_across_passivation() {
    const ENTITIES: u32 = 10_000;
    const ROUNDS: u32 = 5;
    let store = Arc::new(MemoryStore::<Tally>::default());
    let host = EntityHost::start(store.clone(), HostConfig { idle_after: Duration::from_millis(200), ..config() })
        .await
        .unwrap();

    // Every entity gets its commands in order from its own task; all run interleaved.
    let mut senders = tokio::task::JoinSet::new();
    for id in 0..ENTITIES {
        let host = host.clone();
        senders.spawn(async move {
            for round in 0..ROUNDS {
                assert_eq!(host.send(id, TallyCommand::Add(round)).await.unwrap(), vec![Added(round)]);
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.unwrap();
    }
    assert_eq!(store.commits(), u64::from(ENTITIES * ROUNDS));

    // Idle entities are passivated by the sweeper...
    wait_until_active(&host, 0).await;

    // ...and come back with their state, in order, on the next message.
    for id in (0..ENTITIES).step_by(97) {
        host.send(id, TallyCommand::Add(ROUNDS)).await.unwrap();
        assert_eq!(store.get(&id).state.added, (0..=ROUNDS).collect::<Vec<_>>(), "entity {id}");
        assert_eq!(store.get(&id).version, u64::from(ROUNDS) + 1);
    }
    host.stop().await;
}

#[tokio::test]
async fn a_failing_entity_is_rebuilt_from_storage_without_stopping_its_siblings() {
    let store = Arc::new(MemoryStore::<Tally>::default());
    let host = EntityHost::start(store.clone(), config()).await.unwrap();
    host.send(1, TallyCommand::Add(10)).await.unwrap();
    host.send(2, TallyCommand::Add(20)).await.unwrap();

    assert_eq!(host.send(1, TallyCommand::Crash).await, Err(HostError::EntityFailed));
    wait_until_active(&host, 1).await;

    // The sibling and the host carry on; the failed entity is rebuilt from storage.
    host.send(2, TallyCommand::Add(21)).await.unwrap();
    host.send(1, TallyCommand::Add(11)).await.unwrap();
    assert_eq!(store.get(&1).state.added, vec![10, 11]);
    assert_eq!(store.get(&2).state.added, vec![20, 21]);
}

#[tokio::test]
async fn a_refused_command_changes_nothing() {
    let store = Arc::new(MemoryStore::<Tally>::default());
    let host = EntityHost::start(store.clone(), config()).await.unwrap();
    host.send(7, TallyCommand::Add(1)).await.unwrap();
    assert_eq!(host.send(7, TallyCommand::Refuse).await, Err(HostError::Rejected(Refused)));
    assert_eq!(store.get(&7).version, 1);
}

#[tokio::test]
async fn a_decision_on_stale_state_is_refused_and_retried_on_fresh_state() {
    let store = Arc::new(MemoryStore::<Tally>::default());
    let host = EntityHost::start(store.clone(), config()).await.unwrap();
    host.send(3, TallyCommand::Add(1)).await.unwrap();

    // Another writer (a second instance during a hand-over) commits first.
    store.overwrite(&3, TallyState { added: vec![1, 99] });

    // The host's first commit is refused; it reloads and decides again.
    host.send(3, TallyCommand::Add(2)).await.unwrap();
    assert_eq!(store.get(&3).state.added, vec![1, 99, 2]);
}

#[tokio::test]
async fn work_beyond_the_in_flight_bound_is_refused_not_queued() {
    let store = Arc::new(MemoryStore::<Tally>::default());
    let host = EntityHost::start(store, HostConfig { max_in_flight: 4, ..config() }).await.unwrap();
    // Fire many at once: at most 4 may be in flight, the rest are refused at once.
    let outcomes = futures::future::join_all((0..200).map(|i| host.send(i, TallyCommand::Add(i)))).await;
    let refused = outcomes.iter().filter(|o| matches!(o, Err(HostError::Overloaded))).count();
    let done = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(refused + done, 200);
    assert!(refused > 0, "nothing was refused");
    assert!(done >= 4, "fewer than the bound got through");
}

/// The binary's allocator, so the test measures what production does.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// This process's resident memory, from `/proc/self/statm` (pages of 4 KiB).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

async fn wave(host: &EntityHost<Tally>, entities: u32, value: u32) {
    for chunk in (0..entities).collect::<Vec<_>>().chunks(10_000) {
        let outcomes = futures::future::join_all(chunk.iter().map(|id| host.send(*id, TallyCommand::Add(value)))).await;
        assert!(outcomes.iter().all(Result::is_ok), "{:?}", outcomes.iter().find(|o| o.is_err()));
    }
    let passivated = emporium_test_harness::eventually(Duration::from_secs(60), || async {
        host.sweep_idle();
        host.active().await.unwrap() == 0
    })
    .await;
    assert!(passivated);
}

const MIB: u64 = 1024 * 1024;

/// Waits for jemalloc's background threads to return freed pages (its decay
/// time is 10 s) until resident memory is at most `limit`.
async fn settles_below(limit: u64) -> bool {
    emporium_test_harness::eventually(Duration::from_secs(60), || async { resident_bytes() <= limit }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_near_its_baseline_after_a_hundred_thousand_entities_passivate() {
    const ENTITIES: u32 = 100_000;
    tikv_jemalloc_ctl::background_thread::write(true).unwrap();
    let store = Arc::new(MemoryStore::<Tally>::default());
    let host =
        EntityHost::start(store.clone(), HostConfig { idle_after: Duration::from_secs(1), ..config() }).await.unwrap();
    // The store keeps a row per entity; give it every row first so that only
    // the actors come and go from here on.
    for (id, state) in (0..ENTITIES).map(|id| (id, TallyState::default())) {
        store.overwrite(&id, state);
    }
    let baseline = resident_bytes();

    wave(&host, ENTITIES, 1).await;
    let after_first = resident_bytes();
    assert!(
        settles_below(baseline + 48 * MIB).await,
        "first wave: {} MiB -> {} MiB, still {} MiB",
        baseline / MIB,
        after_first / MIB,
        resident_bytes() / MIB
    );
    wave(&host, ENTITIES, 2).await;
    assert!(
        settles_below(baseline + 48 * MIB).await,
        "second wave: {} MiB -> {} MiB",
        baseline / MIB,
        resident_bytes() / MIB
    );
    assert_eq!(store.get(&99_999).state.added, vec![1, 2]);
    eprintln!(
        "resident: baseline {} MiB, 100,000 entities active {} MiB, passivated {} MiB",
        baseline / MIB,
        after_first / MIB,
        resident_bytes() / MIB
    );
}
