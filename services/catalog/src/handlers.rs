//! The answers to `cmd.catalog.*`: each applies the domain's rules, touches
//! the store, and maps every failure to a typed [`ReplyError`]. Internal
//! errors are logged here, once, and never detailed to the caller.

use std::sync::Arc;

use emporium_nats::rpc::internal;
use emporium_nats::{OutboxSignal, OutgoingEvent, Routes, SharedClock};
use emporium_schemas::commands::catalog::{
    AddReview, CategoryView, CreateCategory, CreateProduct, DeleteProduct, GetProduct, ListCategories, ListReviews,
    ProductPage, ProductView, ReviewPage, ReviewView, SearchProducts, UpdateProduct,
};
use emporium_schemas::events::catalog::{ProductCreated, ProductDeleted, ProductUpdated, ReviewAdded};
use emporium_schemas::values::{CategoryId, ProductId, ReviewId, Role, Text};
use emporium_schemas::{CommandEnvelope, EntityKey, ErrorKind, Event, Origin, Principal, ReplyError, Seq};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::cache::ProductCache;
use crate::domain::{self, Invalid, MAX_CATEGORY_DEPTH, ReviewDraft, ReviewsPage, Search};
use crate::search;
use crate::store::{self, LockedProduct, NewReview, ProductFields, StoreError};

/// Everything the answers share.
#[derive(Debug)]
pub struct Catalog {
    pub pool: PgPool,
    pub cache: Arc<ProductCache>,
    pub outbox: OutboxSignal,
    pub clock: SharedClock,
}

/// Every catalog command, bound to its answer.
pub fn routes(catalog: Catalog) -> Routes<Catalog> {
    Routes::new(catalog)
        .on(|s, c: CommandEnvelope<CreateProduct>| async move { s.create_product(&c).await })
        .on(|s, c: CommandEnvelope<UpdateProduct>| async move { s.update_product(&c).await })
        .on(|s, c: CommandEnvelope<DeleteProduct>| async move { s.delete_product(&c).await })
        .on(|s, c: CommandEnvelope<GetProduct>| async move { s.product(c.data.product_id).await })
        .on(|s, c: CommandEnvelope<SearchProducts>| async move { s.search(c.data).await })
        .on(|s: Arc<Catalog>, _: CommandEnvelope<ListCategories>| async move {
            store::categories(&s.pool).await.map_err(|e| internal(&e))
        })
        .on(|s, c: CommandEnvelope<CreateCategory>| async move { s.create_category(&c).await })
        .on(|s, c: CommandEnvelope<AddReview>| async move { s.add_review(&c).await })
        .on(|s, c: CommandEnvelope<ListReviews>| async move { s.reviews(c.data).await })
}

fn not_found() -> ReplyError {
    ReplyError::new(ErrorKind::NotFound, "no such product")
}

impl From<Invalid> for ReplyError {
    fn from(invalid: Invalid) -> Self {
        ReplyError::invalid(invalid.field, invalid.reason)
    }
}

impl From<StoreError> for ReplyError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::CategoryNameTaken => {
                ReplyError::new(ErrorKind::Conflict, "a category with this name exists at this place in the tree")
            }
            StoreError::AlreadyReviewed => {
                ReplyError::new(ErrorKind::Conflict, "you have reviewed this product already: one review per customer")
            }
            other => internal(&other),
        }
    }
}

/// The product event to commit with a change: key the product, `seq` its new version.
fn product_event<D: Event>(
    command: &CommandEnvelope<impl Sized>,
    id: ProductId,
    version: i64,
    data: D,
) -> Result<OutgoingEvent, ReplyError> {
    let seq = Seq::try_from(version).map_err(|e| internal(&e))?;
    OutgoingEvent::caused_by(EntityKey::from(*id.as_uuid()), seq, Origin::from(command), data).map_err(|e| internal(&e))
}

fn event_name(name: &str) -> Result<Text, ReplyError> {
    Text::try_from(name.to_owned()).map_err(|e| ReplyError::invalid("name", e.to_string()))
}

/// Product `id` locked in `tx`, if `principal` may change it (its seller or an
/// admin); else 403 with `refused`.
async fn lock_own_product(
    tx: &mut PgConnection,
    principal: &Principal,
    id: ProductId,
    refused: &'static str,
) -> Result<LockedProduct, ReplyError> {
    let locked = store::lock_product(tx, id).await?.ok_or_else(not_found)?;
    if !domain::may_edit(principal, locked.product.seller_id) {
        return Err(ReplyError::new(ErrorKind::Forbidden, refused));
    }
    Ok(locked)
}

impl Catalog {
    /// The path of `category` (empty for none), which the request named in `field`.
    async fn category_path(&self, field: &'static str, category: Option<CategoryId>) -> Result<Vec<Uuid>, ReplyError> {
        let Some(category) = category else { return Ok(Vec::new()) };
        store::category_path(&self.pool, category).await?.ok_or_else(|| ReplyError::invalid(field, "no such category"))
    }

    async fn create_product(&self, command: &CommandEnvelope<CreateProduct>) -> Result<ProductView, ReplyError> {
        let principal = command.signed_in()?;
        if !domain::may_sell(principal.role) {
            return Err(ReplyError::new(ErrorKind::Forbidden, "only sellers and admins put products on sale"));
        }
        let request = &command.data;
        domain::price(&request.price)?;
        let fields = ProductFields {
            name: domain::product_name(&request.name)?,
            description: domain::description(&request.description)?,
            price: request.price.clone(),
            category_id: request.category_id,
        };
        let path = self.category_path("category_id", fields.category_id).await?;
        let id = ProductId::new_v7();
        let created = ProductCreated {
            product_id: id,
            seller_id: principal.user_id,
            name: event_name(&fields.name)?,
            price: fields.price.clone(),
            category_id: fields.category_id,
        };
        let event = product_event(command, id, 1, created)?;
        let mut tx = self.pool.begin().await.map_err(|e| internal(&e))?;
        let product =
            store::create_product(&mut tx, id, principal.user_id, &fields, &path, self.clock.now(), &event).await?;
        tx.commit().await.map_err(|e| internal(&e))?;
        self.outbox.wake();
        tracing::info!(product.id = %id, seller.id = %principal.user_id, "product created");
        Ok(product)
    }

    async fn update_product(&self, command: &CommandEnvelope<UpdateProduct>) -> Result<ProductView, ReplyError> {
        let principal = command.signed_in()?;
        let request = &command.data;
        let id = request.product_id.ok_or_else(|| ReplyError::invalid("product_id", "is required"))?;
        if let Some(price) = &request.price {
            domain::price(price)?;
        }
        let name = request.name.as_deref().map(domain::product_name).transpose()?;
        let description = request.description.as_deref().map(domain::description).transpose()?;
        let new_path = match request.category_id {
            Some(category) => Some(self.category_path("category_id", category).await?),
            None => None,
        };

        let mut tx = self.pool.begin().await.map_err(|e| internal(&e))?;
        let refused = "only the product's seller or an admin may change it";
        let locked = lock_own_product(&mut tx, &principal, id, refused).await?;
        let (current, version) = (locked.product, locked.version);
        let fields = ProductFields {
            name: name.unwrap_or(current.name),
            description: description.unwrap_or(current.description),
            price: request.price.clone().unwrap_or(current.price),
            category_id: request.category_id.unwrap_or(current.category_id),
        };
        // Categories never move, so an unchanged category keeps its path.
        let path = new_path.unwrap_or(locked.category_path);
        let version = version + 1;
        let updated = ProductUpdated {
            product_id: id,
            seller_id: current.seller_id,
            name: event_name(&fields.name)?,
            price: fields.price.clone(),
            category_id: fields.category_id,
        };
        let event = product_event(command, id, version, updated)?;
        let product = store::update_product(&mut tx, id, &fields, &path, version, self.clock.now(), &event).await?;
        tx.commit().await.map_err(|e| internal(&e))?;
        self.cache.invalidate(id);
        self.outbox.wake();
        Ok(product)
    }

    async fn delete_product(&self, command: &CommandEnvelope<DeleteProduct>) -> Result<(), ReplyError> {
        let principal = command.signed_in()?;
        let id = command.data.product_id;
        let mut tx = self.pool.begin().await.map_err(|e| internal(&e))?;
        let refused = "only the product's seller or an admin may delete it";
        let locked = lock_own_product(&mut tx, &principal, id, refused).await?;
        let version = locked.version + 1;
        let deleted = ProductDeleted { product_id: id, seller_id: locked.product.seller_id };
        let event = product_event(command, id, version, deleted)?;
        store::delete_product(&mut tx, id, version, self.clock.now(), &event).await?;
        tx.commit().await.map_err(|e| internal(&e))?;
        self.cache.invalidate(id);
        self.outbox.wake();
        tracing::info!(product.id = %id, "product deleted");
        Ok(())
    }

    /// A product from the cache, or loaded and cached.
    pub async fn product(&self, id: ProductId) -> Result<ProductView, ReplyError> {
        let ticket = match self.cache.get(id) {
            Ok(product) => return Ok(product),
            Err(ticket) => ticket,
        };
        let product = store::product(&self.pool, id).await?.ok_or_else(not_found)?;
        self.cache.fill(ticket, &product);
        Ok(product)
    }

    async fn search(&self, request: SearchProducts) -> Result<ProductPage, ReplyError> {
        let search = Search::parse(request)?;
        let page = search::search(&self.pool, &search).await?;
        Ok(ProductPage { items: page.items, next_cursor: page.next.map(|cursor| cursor.encode()) })
    }

    /// Reviews a product for a customer who received it; the review, the
    /// product's new rating and `catalog.review_added` commit together.
    pub async fn add_review(&self, command: &CommandEnvelope<AddReview>) -> Result<ReviewView, ReplyError> {
        let principal = command.signed_in()?;
        let request = &command.data;
        let id = request.product_id.ok_or_else(|| ReplyError::invalid("product_id", "is required"))?;
        let draft = ReviewDraft::parse(request.rating, &request.title, &request.body)?;

        let mut tx = self.pool.begin().await.map_err(|e| internal(&e))?;
        // Locked: reviews of one product take its versions one after another.
        let locked = store::lock_product(&mut tx, id).await?.ok_or_else(not_found)?;
        let delivered = store::has_received(&mut tx, principal.user_id, id).await?;
        domain::may_review(principal.user_id, locked.product.seller_id, delivered)
            .map_err(|refusal| ReplyError::new(ErrorKind::Forbidden, refusal.to_string()))?;
        let version = locked.version + 1;
        let review = NewReview {
            id: ReviewId::new_v7(),
            product: id,
            author: principal.user_id,
            rating: draft.rating,
            title: &draft.title,
            body: &draft.body,
            created_at: self.clock.now(),
        };
        let added =
            ReviewAdded { review_id: review.id, product_id: id, author_id: principal.user_id, rating: draft.rating };
        let event = product_event(command, id, version, added)?;
        let review = store::add_review(&mut tx, &review, version, &event).await?;
        tx.commit().await.map_err(|e| internal(&e))?;
        // The cached product shows the rating: drop it before replying.
        self.cache.invalidate(id);
        self.outbox.wake();
        tracing::info!(product.id = %id, review.id = %review.id, "review added");
        Ok(review)
    }

    /// A product's reviews, newest first; 404 for a product not on sale.
    pub async fn reviews(&self, request: ListReviews) -> Result<ReviewPage, ReplyError> {
        let page = ReviewsPage::parse(request.cursor.as_deref(), request.limit)?;
        self.product(request.product_id).await?;
        let mut items = store::reviews(&self.pool, request.product_id, page.after, page.limit + 1).await?;
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| ReviewsPage::cursor_after(last.id))
        } else {
            None
        };
        Ok(ReviewPage { items, next_cursor })
    }

    async fn create_category(&self, command: &CommandEnvelope<CreateCategory>) -> Result<CategoryView, ReplyError> {
        let principal = command.signed_in()?;
        if principal.role != Role::Admin {
            return Err(ReplyError::new(ErrorKind::Forbidden, "only admins manage categories"));
        }
        let name = domain::category_name(&command.data.name)?;
        let parent_path = self.category_path("parent_id", command.data.parent_id).await?;
        if parent_path.len() >= MAX_CATEGORY_DEPTH {
            return Err(ReplyError::invalid("parent_id", format!("categories nest at most {MAX_CATEGORY_DEPTH} deep")));
        }
        let parent = command.data.parent_id.map(|parent| (parent, parent_path.as_slice()));
        let id = CategoryId::new_v7();
        let category = store::create_category(&self.pool, id, &name, parent).await?;
        tracing::info!(category.id = %id, "category created");
        Ok(category)
    }
}
