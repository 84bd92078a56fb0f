//! The answers to `cmd.cart.*`: reading and editing a cart, and checkout.
//!
//! Every cart command is partition-addressed and keyed by its owner's id.
//! What needs I/O happens here, around the cart's actor: the catalog is asked
//! about a product before the line reaches the actor, and a checkout places
//! its order between two of the actor's decisions (freeze, then complete or
//! thaw), so the actor is never held while another service answers.
//!
//! Answers are read from Redis after the actor decided (the host hands back
//! events, not state), and `get` reads Redis without the actor at all: a
//! stored cart is always whole, so reads never wait behind edits.
//!
//! All five commands are [`routes`] served by `emporium_nats::rpc::serve`,
//! so one in-flight bound covers them together.

use std::sync::Arc;
use std::time::Duration;

use emporium_actors::{EntityHost, HostError, StoreError, Versioned};
use emporium_nats::rpc::Routes;
use emporium_nats::rpc::internal;
use emporium_nats::{Caller, SharedClock};
use emporium_schemas::commands::cart::{AddItem, CartView, Checkout, GetCart, RemoveItem, SetQuantity};
use emporium_schemas::commands::order::{OrderAccepted, PlaceOrder};
use emporium_schemas::values::{Text, UserId};
use emporium_schemas::{CommandEnvelope, EntityKey, ErrorKind, MessageId, Partition, Principal, Reply, ReplyError};
use uuid::Uuid;

use crate::catalog::ProductCatalog;
use crate::domain::{
    Cart, CartCommand, CartEvent, CartState, CheckoutRequest, CheckoutStatus, FrozenCheckout, Refusal, is_stale, view,
};
use crate::store::RedisStore;

/// Everything the answers share.
#[derive(Debug)]
pub struct Carts {
    pub host: EntityHost<Cart>,
    pub store: RedisStore,
    pub catalog: ProductCatalog,
    /// Sends `cmd.order.place`, waiting at most the order timeout.
    pub orders: Caller,
    pub clock: SharedClock,
    /// A checkout frozen longer than this is resolved by the cart's next command.
    pub freeze_for: Duration,
}

/// Who a command comes from: a signed-in customer, owner of the cart it is for.
#[derive(Debug, Clone, Copy)]
pub struct Customer {
    pub user: UserId,
    pub principal: Principal,
    /// Carried into the order a checkout places.
    pub correlation_id: Uuid,
    pub request_id: MessageId,
}

/// How the order service took a checkout's order.
#[derive(Debug)]
enum Placement {
    /// The order exists (made now, or before under the same key and body).
    Accepted(OrderAccepted),
    /// The order service refused it for good (a product gone, the key reused).
    Refused(ReplyError),
    /// No answer, or one that does not say whether the order exists.
    Unknown(String),
}

/// Every cart command, on the partitions this instance owns.
pub fn routes(carts: Arc<Carts>, partitions: &[Partition], partition_count: u16) -> Routes<Carts> {
    let owned = || partitions.iter().copied();
    Routes::from_arc(carts)
        .on_partitioned(owned(), partition_count, |s, c: CommandEnvelope<GetCart>| async move { s.get(c).await })
        .on_partitioned(owned(), partition_count, |s, c: CommandEnvelope<AddItem>| async move { s.add(c).await })
        .on_partitioned(owned(), partition_count, |s, c: CommandEnvelope<SetQuantity>| async move { s.set(c).await })
        .on_partitioned(owned(), partition_count, |s, c: CommandEnvelope<RemoveItem>| async move { s.remove(c).await })
        .on_partitioned(owned(), partition_count, |s, c: CommandEnvelope<Checkout>| async move { s.check_out(c).await })
}

/// The sender of a command, who must be signed in and own the cart its key names.
fn customer<C>(command: CommandEnvelope<C>) -> Result<(Customer, C), ReplyError> {
    let principal = command.signed_in()?;
    let user = command
        .key
        .as_ref()
        .and_then(|key| UserId::try_from(key.as_str().to_owned()).ok())
        .ok_or_else(|| ReplyError::invalid("key", "a cart's key is its owner's user id"))?;
    if principal.user_id != user {
        return Err(ReplyError::new(ErrorKind::Forbidden, "a cart is for its owner only"));
    }
    let customer = Customer { user, principal, correlation_id: command.correlation_id, request_id: command.id };
    Ok((customer, command.data))
}

fn unavailable(what: &str) -> ReplyError {
    ReplyError::new(ErrorKind::Overloaded, format!("{what}; try again shortly")).retry_after(1)
}

/// A refusal or failure of the cart's actor, as the caller is told it.
fn refused(error: HostError<Refusal>) -> ReplyError {
    let refusal = match error {
        HostError::Rejected(refusal) => refusal,
        other => return other.reply(),
    };
    let message = refusal.to_string();
    match refusal {
        Refusal::CheckoutInProgress => ReplyError::new(ErrorKind::Conflict, message),
        Refusal::NotInCart => ReplyError::new(ErrorKind::NotFound, message),
        Refusal::QuantityAboveLimit => ReplyError::invalid("quantity", message),
        Refusal::NoSuchProduct => ReplyError::invalid("product_id", message),
        Refusal::TooManyLines | Refusal::EmptyCart => ReplyError::invalid("cart", message),
        Refusal::KeyReused => ReplyError::invalid("idempotency_key", message),
    }
}

fn unreadable(error: &StoreError) -> ReplyError {
    tracing::warn!(%error, "cart not readable");
    unavailable("carts are unavailable")
}

impl Carts {
    async fn get(&self, command: CommandEnvelope<GetCart>) -> Result<CartView, ReplyError> {
        let (customer, GetCart {}) = customer(command)?;
        self.cart(&customer).await
    }

    async fn add(&self, command: CommandEnvelope<AddItem>) -> Result<CartView, ReplyError> {
        let (customer, item) = customer(command)?;
        self.add_item(&customer, item).await
    }

    async fn set(&self, command: CommandEnvelope<SetQuantity>) -> Result<CartView, ReplyError> {
        let (customer, change) = customer(command)?;
        self.set_quantity(&customer, change).await
    }

    async fn remove(&self, command: CommandEnvelope<RemoveItem>) -> Result<CartView, ReplyError> {
        let (customer, RemoveItem { product_id }) = customer(command)?;
        self.edit(&customer, CartCommand::RemoveItem { product_id }).await
    }

    async fn check_out(&self, command: CommandEnvelope<Checkout>) -> Result<OrderAccepted, ReplyError> {
        let (customer, checkout) = customer(command)?;
        self.checkout(&customer, checkout).await
    }

    async fn read(&self, customer: &Customer) -> Result<Versioned<CartState>, ReplyError> {
        self.store.read(&customer.user).await.map_err(|error| unreadable(&error))
    }

    /// The cart, after resolving a checkout frozen too long.
    pub async fn cart(&self, customer: &Customer) -> Result<CartView, ReplyError> {
        let cart = self.read(customer).await?;
        let Some(frozen) = &cart.state.checkout else { return Ok(view(&cart)) };
        if self.resolve_if_stale(customer, frozen).await? {
            return Ok(view(&self.read(customer).await?));
        }
        Ok(view(&cart))
    }

    pub async fn add_item(&self, customer: &Customer, item: AddItem) -> Result<CartView, ReplyError> {
        let listing = self.catalog.listing(item.product_id, customer.principal).await?;
        let command = CartCommand::AddItem { product_id: item.product_id, quantity: item.quantity, listing };
        self.edit(customer, command).await
    }

    pub async fn set_quantity(&self, customer: &Customer, change: SetQuantity) -> Result<CartView, ReplyError> {
        let listing = self.catalog.listing(change.product_id, customer.principal).await?;
        let command = CartCommand::SetQuantity { product_id: change.product_id, quantity: change.quantity, listing };
        self.edit(customer, command).await
    }

    async fn edit(&self, customer: &Customer, command: CartCommand) -> Result<CartView, ReplyError> {
        self.decide(customer, command).await?;
        Ok(view(&self.read(customer).await?))
    }

    /// Has the cart's actor decide on `command`. Refused because a checkout
    /// is in progress, it resolves that checkout if it is stale and asks once more.
    async fn decide(&self, customer: &Customer, command: CartCommand) -> Result<Vec<CartEvent>, ReplyError> {
        let outcome = self.host.send(customer.user, command.clone()).await;
        if matches!(outcome, Err(HostError::Rejected(Refusal::CheckoutInProgress))) {
            let cart = self.read(customer).await?;
            if let Some(frozen) = &cart.state.checkout
                && self.resolve_if_stale(customer, frozen).await?
            {
                return self.host.send(customer.user, command).await.map_err(refused);
            }
        }
        outcome.map_err(refused)
    }

    /// Tells the actor how a checkout ended (complete or thaw).
    async fn conclude(&self, customer: &Customer, command: CartCommand) -> Result<(), ReplyError> {
        self.host.send(customer.user, command).await.map(drop).map_err(refused)
    }

    /// If `frozen` has waited longer than the freeze limit, its placement was
    /// lost: places its order again (the same order id, so an order that
    /// exists is only found), then completes or thaws the cart. Returns
    /// whether the cart changed; an order service that still does not answer
    /// leaves the cart frozen.
    async fn resolve_if_stale(&self, customer: &Customer, frozen: &FrozenCheckout) -> Result<bool, ReplyError> {
        if !is_stale(frozen, self.clock.now(), self.freeze_for) {
            return Ok(false);
        }
        let (order_id, idempotency_key) = (frozen.request.order_id, frozen.request.idempotency_key.clone());
        match self.place(customer, frozen).await {
            Placement::Accepted(_) => {
                tracing::info!(cart.id = %customer.user, order.id = %order_id, "stale checkout completed");
                self.conclude(customer, CartCommand::CompleteCheckout { idempotency_key }).await?;
            }
            Placement::Refused(refusal) => {
                tracing::info!(cart.id = %customer.user, order.id = %order_id, %refusal, "stale checkout thawed");
                self.conclude(customer, CartCommand::ThawCheckout { idempotency_key }).await?;
            }
            Placement::Unknown(reason) => {
                tracing::warn!(cart.id = %customer.user, order.id = %order_id, %reason, "stale checkout still unresolved");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Freezes the cart for this checkout, places its order, then completes
    /// the checkout (the cart empties only once the order exists) or thaws it
    /// if the order was refused. With no answer from the order service the
    /// cart stays frozen: a retry with the same key resumes it.
    pub async fn checkout(&self, customer: &Customer, checkout: Checkout) -> Result<OrderAccepted, ReplyError> {
        let request = CheckoutRequest {
            order_id: checkout.order_id(&customer.user),
            request_digest: Text::try_from(checkout.request_digest()).map_err(|error| internal(&error))?,
            idempotency_key: checkout.idempotency_key,
            shipping_address: checkout.shipping_address,
            payment_method: checkout.payment_method,
        };
        let key = request.idempotency_key.clone();
        let events = self.decide(customer, CartCommand::BeginCheckout { request, at: self.clock.now() }).await?;
        let begun = events.into_iter().find_map(|event| match event {
            CartEvent::CheckoutBegun(frozen) => Some(frozen),
            _ => None,
        });
        let frozen = match begun {
            Some(frozen) => frozen,
            // A retry: the cart says whether it resumes or repeats an answer.
            None => match self.read(customer).await?.state.checkout_status(&key) {
                CheckoutStatus::Frozen(frozen) => frozen.clone(),
                CheckoutStatus::Completed(done) => return Ok(OrderAccepted { order_id: done.order_id }),
                CheckoutStatus::Unknown => {
                    return Err(ReplyError::new(ErrorKind::Conflict, "this checkout ended meanwhile; try again"));
                }
            },
        };
        match self.place(customer, &frozen).await {
            Placement::Accepted(accepted) => {
                if let Err(error) =
                    self.conclude(customer, CartCommand::CompleteCheckout { idempotency_key: key }).await
                {
                    // The order exists: say so. The cart stays frozen until a retry or its next command completes it.
                    tracing::warn!(cart.id = %customer.user, order.id = %accepted.order_id, %error, "checkout not completed");
                }
                Ok(accepted)
            }
            Placement::Refused(refusal) => {
                if let Err(error) = self.conclude(customer, CartCommand::ThawCheckout { idempotency_key: key }).await {
                    tracing::warn!(cart.id = %customer.user, %error, "refused checkout not thawed");
                }
                Err(refusal)
            }
            Placement::Unknown(reason) => {
                tracing::warn!(cart.id = %customer.user, order.id = %frozen.request.order_id, %reason, "order placement unanswered");
                Err(unavailable("the order could not be placed yet; retry with the same idempotency key"))
            }
        }
    }

    /// Sends the frozen checkout's order to `cmd.order.place`.
    async fn place(&self, customer: &Customer, frozen: &FrozenCheckout) -> Placement {
        let request = &frozen.request;
        let order = PlaceOrder {
            order_id: request.order_id,
            customer_id: customer.user,
            idempotency_key: request.idempotency_key.clone(),
            request_digest: request.request_digest.clone(),
            lines: frozen.lines.clone(),
            shipping_address: request.shipping_address.clone(),
            payment_method: request.payment_method.clone(),
        };
        let key = EntityKey::from(*request.order_id.as_uuid());
        let mut envelope = CommandEnvelope::new(Some(key), Some(customer.principal), order);
        envelope.correlation_id = customer.correlation_id;
        match self.orders.call::<PlaceOrder, OrderAccepted>(&envelope, &customer.request_id.to_string()).await {
            Ok(Reply::Ok(accepted)) => Placement::Accepted(accepted),
            Ok(Reply::Error(refusal)) => match refusal.kind {
                ErrorKind::Invalid
                | ErrorKind::Conflict
                | ErrorKind::NotFound
                | ErrorKind::Forbidden
                | ErrorKind::Unauthenticated => Placement::Refused(refusal),
                // Shed, or failed inside: whether the order exists is not known.
                ErrorKind::Overloaded | ErrorKind::RateLimited | ErrorKind::Internal => {
                    Placement::Unknown(refusal.to_string())
                }
            },
            Err(error) => Placement::Unknown(error.to_string()),
        }
    }
}
