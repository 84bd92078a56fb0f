//! `GET /orders/{id}/events`: an order's status changes, live, as
//! server-sent events.
//!
//! The stream is driven by the order's own events, not by polling: the
//! gateway subscribes (core NATS, no consumer state) to every event keyed by
//! the order — `evt.*.*.*.*.<order id>`, the whole saga — *before* it reads
//! the order, so nothing published after the read can be missed. Each event
//! that arrives prompts one read of the order from its actor, and every
//! timeline entry not yet sent goes out as a `status` event. Reading the view
//! rather than decoding each event keeps one authority on what a status is
//! (the order's transition table) and catches steps that publish no order
//! event of their own (`reserved`).
//!
//! Wire format:
//! - first `event: order`, the order as `GET /orders/{id}` shows it (so a
//!   reconnecting client needs no `Last-Event-ID`: the snapshot is complete);
//! - then `event: status` per change, `{status, at, order}` (`order` as read
//!   when the change was seen), `id` = the change's place in the timeline;
//! - keep-alive comments while idle; the stream ends after `delivered` or
//!   `cancelled`, at shutdown, or after `GATEWAY_STREAM_MAX_AGE_SECS`
//!   (the client reconnects). If the order can no longer be read an
//!   `event: error` problem ends it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use emporium_schemas::Principal;
use emporium_schemas::commands::order::{OrderView, TimelineEntry};
use emporium_schemas::events::order::OrderStatus;
use emporium_schemas::values::OrderId;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use uuid::Uuid;

use super::ApiState;
use crate::extract::{AppPath, Caller, RequestId};
use crate::problem::Problem;

/// What live streams share: the NATS connection they subscribe on and their limits.
#[derive(Debug, Clone)]
pub struct Streams {
    pub nats: async_nats::Client,
    /// One permit per open stream.
    pub open: Arc<Semaphore>,
    pub keep_alive: Duration,
    pub max_age: Duration,
    /// Cancelled when the gateway shuts down.
    pub stop: CancellationToken,
}

/// A `status` event's data: one step of the order's timeline, and the order
/// as read when the step was seen (a burst of steps is read once, so the
/// order may already be further on than this step).
#[derive(Debug, Serialize)]
pub struct StatusChange<'a> {
    pub status: OrderStatus,
    pub at: chrono::DateTime<chrono::Utc>,
    pub order: &'a OrderView,
}

/// One event of the stream, as the OpenAPI document describes it: an object
/// of the event's fields, each event by its name (how OpenAPI 3.1 tools read
/// a `text/event-stream` schema). Keep-alive comments are not events.
#[derive(Debug)]
pub struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> RefOr<Schema> {
        let event = |name: &str, data: &str| {
            ObjectBuilder::new()
                .property("event", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([name])))
                .required("event")
                .property(
                    "id",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("The event's place in the timeline")),
                )
                .property(
                    "data",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .content_media_type("application/json")
                        .description(Some(data)),
                )
                .required("data")
        };
        OneOfBuilder::new()
            .item(event("order", "The order, as `GET /orders/{id}` shows it"))
            .item(event("status", "`{status, at, order}`: a step of the timeline, and the order as read then"))
            .item(event("error", "A problem: the order could no longer be read; the stream ends"))
            .into()
    }
}

impl utoipa::ToSchema for StreamEvent {}

/// Attempts to read the order after an event before the stream gives up.
const READ_ATTEMPTS: u32 = 3;

/// Follow an order's status as server-sent events: the current order first,
/// then each change as it happens; ends at `delivered` or `cancelled`.
#[utoipa::path(get, path = "/api/v1/orders/{id}/events", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order")),
    responses(
        (status = 200, description = "`text/event-stream`: `event: order` (the order, as GET /orders/{id}) first, \
            then `event: status` per change with `{status, at, order}`; keep-alive comments while idle; \
            ends after a final status", content_type = "text/event-stream", body = StreamEvent),
        (status = 404, description = "No such order, or not yours", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many open streams", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn order_events(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<Response, Problem> {
    let permit = api
        .streams
        .open
        .clone()
        .try_acquire_owned()
        .map_err(|_| Problem::overloaded("too many live streams are open; retry shortly"))?;
    let order = OrderId::from_uuid(id);
    // Subscribed before the first read, on the connection the read goes
    // through, so the server registers it first: no event can fall between.
    let changes = api.streams.nats.subscribe(format!("evt.*.*.*.*.{id}")).await.map_err(|error| {
        tracing::warn!(%error, order.id = %id, "cannot subscribe to an order's events");
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "live status is unavailable; retry shortly")
            .retry_after(1)
    })?;
    let mut follow = Follow::new(api.clone(), principal, order, request_id, changes, permit);
    let current = follow.read().await?;
    follow.begin_with(&current);

    let events = futures::stream::unfold(follow, |mut follow| async move {
        follow.next().await.map(|event| (Ok::<_, Infallible>(event), follow))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(api.streams.keep_alive)).into_response())
}

/// One open stream: what has been sent, and where changes come from.
struct Follow {
    api: ApiState,
    principal: Principal,
    order: OrderId,
    request_id: RequestId,
    changes: async_nats::Subscriber,
    /// Timeline entries already sent.
    sent: usize,
    pending: VecDeque<Event>,
    /// A final status (or a failure) was queued: end once `pending` is empty.
    finished: bool,
    ends_at: Instant,
    _open: OwnedSemaphorePermit,
}

impl Follow {
    fn new(
        api: ApiState,
        principal: Principal,
        order: OrderId,
        request_id: RequestId,
        changes: async_nats::Subscriber,
        open: OwnedSemaphorePermit,
    ) -> Self {
        let ends_at = Instant::now() + api.streams.max_age;
        Self {
            api,
            principal,
            order,
            request_id,
            changes,
            sent: 0,
            pending: VecDeque::new(),
            finished: false,
            ends_at,
            _open: open,
        }
    }

    /// The next event to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            let stop = self.api.streams.stop.clone();
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep_until(self.ends_at) => return None,
                change = self.changes.next() => {
                    change?;
                    // A burst of the saga's events needs one read, not one each.
                    while let Some(Some(_)) = self.changes.next().now_or_never() {}
                    match self.read_retrying().await {
                        Ok(order) => self.advance(&order),
                        Err(problem) => {
                            self.pending.extend(Event::default().event("error").json_data(&problem).ok());
                            self.finished = true;
                        }
                    }
                }
            }
        }
    }

    /// Queues the snapshot: the order as it stands, its timeline so far included.
    fn begin_with(&mut self, order: &OrderView) {
        self.pending.push_back(snapshot(order));
        self.sent = order.timeline.len();
        self.finished = is_final(order.status);
    }

    /// Queues a `status` event for every timeline entry not yet sent.
    fn advance(&mut self, order: &OrderView) {
        for (place, entry) in order.timeline.iter().enumerate().skip(self.sent) {
            self.pending.extend(status_change(place, entry, order));
        }
        self.sent = self.sent.max(order.timeline.len());
        self.finished |= is_final(order.status);
    }

    async fn read(&self) -> Result<OrderView, Problem> {
        super::orders::read(&self.api, self.principal, self.order, &self.request_id).await
    }

    /// [`read`](Self::read), retried briefly when the order service is
    /// momentarily busy or unreachable: the event that prompted the read will
    /// not come again.
    async fn read_retrying(&self) -> Result<OrderView, Problem> {
        let mut attempt = 1;
        loop {
            match self.read().await {
                Err(problem) if attempt < READ_ATTEMPTS && problem.status >= 500 => {
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }
}

fn snapshot(order: &OrderView) -> Event {
    let event = Event::default().event("order").id(order.timeline.len().to_string());
    // An order view always serializes; were it ever not to, the snapshot is skipped rather than the stream.
    event.json_data(order).unwrap_or_else(|_| Event::default().comment("order unavailable"))
}

fn status_change(place: usize, entry: &TimelineEntry, order: &OrderView) -> Option<Event> {
    let change = StatusChange { status: entry.status, at: entry.at, order };
    Event::default().event("status").id((place + 1).to_string()).json_data(change).ok()
}

fn is_final(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Delivered | OrderStatus::Cancelled)
}
