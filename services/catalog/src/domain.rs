//! The catalog's rules, free of I/O: what makes a product name, description,
//! price and category name acceptable, who may change a product, what a
//! search asks for, and the cursor that carries a page's position; what makes
//! a review acceptable and who may write one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use emporium_schemas::Principal;
use emporium_schemas::commands::catalog::{SearchProducts, SortOrder};
use emporium_schemas::values::{CategoryId, Money, ProductId, ReviewId, Role, Stars, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A rule broken by a value the caller sent; `field` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { field, reason: reason.into() }
}

/// Trims `text` and bounds its length in characters.
fn bounded(field: &'static str, text: &str, min: usize, max: usize) -> Result<String, Invalid> {
    let trimmed = text.trim();
    let chars = trimmed.chars().count();
    if chars < min || chars > max {
        let want = if min == 0 { format!("at most {max}") } else { format!("{min} to {max}") };
        return Err(invalid(field, format!("must be {want} characters, got {chars}")));
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// [`bounded`], and on one line.
fn one_line(field: &'static str, text: &str, min: usize, max: usize) -> Result<String, Invalid> {
    let line = bounded(field, text, min, max)?;
    if line.contains('\n') {
        return Err(invalid(field, "must be one line"));
    }
    Ok(line)
}

/// A page size: `limit`, or `default` when absent; 1 to `max`.
fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, Invalid> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(invalid("limit", format!("must be 1 to {max}")));
    }
    Ok(limit)
}

/// A cursor as clients carry it: its JSON, base64url.
fn encode_cursor(cursor: &impl Serialize) -> String {
    // Cursors are plain numbers and ids: they always serialize.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

fn decode_cursor<T: DeserializeOwned>(text: &str) -> Result<T, Invalid> {
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad_cursor())?;
    serde_json::from_slice(&bytes).map_err(|_| bad_cursor())
}

fn bad_cursor() -> Invalid {
    invalid("cursor", "is not a cursor this API gave out")
}

pub fn product_name(text: &str) -> Result<String, Invalid> {
    one_line("name", text, 1, 200)
}

pub fn description(text: &str) -> Result<String, Invalid> {
    bounded("description", text, 0, 5000)
}

pub fn category_name(text: &str) -> Result<String, Invalid> {
    one_line("name", text, 1, 100)
}

/// The highest price the catalog takes: ten million in major units of a
/// two-decimal currency. Beyond it a price is a typo, and totals of many
/// lines stay far from overflow.
pub const MAX_PRICE: i64 = 1_000_000_000;

pub fn price(money: &Money) -> Result<(), Invalid> {
    if money.amount.get() > MAX_PRICE {
        return Err(invalid("price.amount", format!("must be at most {MAX_PRICE} minor units")));
    }
    Ok(())
}

/// Sellers and admins put products on sale; customers cannot.
pub fn may_sell(role: Role) -> bool {
    matches!(role, Role::Seller | Role::Admin)
}

/// A product's seller and admins may change it; nobody else.
pub fn may_edit(principal: &Principal, seller: UserId) -> bool {
    principal.role == Role::Admin || principal.user_id == seller
}

/// A review as the catalog takes it: rated 1 to 5 stars, a one-line title
/// and a body, both trimmed and neither empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewDraft {
    pub rating: Stars,
    pub title: String,
    pub body: String,
}

impl ReviewDraft {
    /// Long enough for a headline.
    pub const MAX_TITLE: usize = 200;
    /// Long enough for a thorough review, short enough to read on one screen or two.
    pub const MAX_BODY: usize = 5000;

    pub fn parse(rating: u8, title: &str, body: &str) -> Result<Self, Invalid> {
        let rating = Stars::try_from(rating)
            .map_err(|_| invalid("rating", format!("must be {} to {} stars, got {rating}", Stars::MIN, Stars::MAX)))?;
        let title = one_line("title", title, 1, Self::MAX_TITLE)?;
        let body = bounded("body", body, 1, Self::MAX_BODY)?;
        Ok(Self { rating, title, body })
    }
}

/// Why someone may not review a product; the reason is shown to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MayNotReview {
    #[error("sellers cannot review their own products")]
    OwnProduct,
    #[error("only a customer with a delivered order containing this product may review it")]
    NotDelivered,
}

/// A product may be reviewed by whoever received it in a delivered order,
/// except its own seller, whatever their role.
pub fn may_review(author: UserId, seller: UserId, delivered: bool) -> Result<(), MayNotReview> {
    if author == seller {
        Err(MayNotReview::OwnProduct)
    } else if !delivered {
        Err(MayNotReview::NotDelivered)
    } else {
        Ok(())
    }
}

/// A validated request for a page of a product's reviews, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewsPage {
    /// The page starts strictly after (older than) this review.
    pub after: Option<ReviewId>,
    pub limit: u32,
}

/// Where a page of reviews ended: its last (oldest) review.
#[derive(Debug, Serialize, Deserialize)]
struct ReviewCursor {
    review: ReviewId,
}

impl ReviewsPage {
    pub const DEFAULT_LIMIT: u32 = 20;
    pub const MAX_LIMIT: u32 = 100;

    pub fn parse(cursor: Option<&str>, limit: Option<u32>) -> Result<Self, Invalid> {
        let limit = page_limit(limit, Self::DEFAULT_LIMIT, Self::MAX_LIMIT)?;
        let after = cursor
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|text| decode_cursor(text).map(|cursor: ReviewCursor| cursor.review))
            .transpose()?;
        Ok(Self { after, limit })
    }

    /// The cursor of the page after the one that ended with `last`.
    pub fn cursor_after(last: ReviewId) -> String {
        encode_cursor(&ReviewCursor { review: last })
    }
}

/// How deep the category tree may grow: deep enough for any shop, shallow
/// enough that a path is always small.
pub const MAX_CATEGORY_DEPTH: usize = 8;

/// A validated search.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// Trimmed; `None` when absent or blank.
    pub q: Option<String>,
    pub category: Option<CategoryId>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub seller: Option<UserId>,
    pub in_stock: bool,
    pub sort: SortOrder,
    pub after: Option<Cursor>,
    pub limit: u32,
}

impl Search {
    pub const DEFAULT_LIMIT: u32 = 20;
    pub const MAX_LIMIT: u32 = 100;
    const MAX_QUERY: usize = 200;

    pub fn parse(request: SearchProducts) -> Result<Self, Invalid> {
        let SearchProducts { q, category, min_price, max_price, seller, in_stock, sort, cursor, limit } = request;
        let q = match q.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(q) if q.chars().count() > Self::MAX_QUERY => {
                return Err(invalid("q", format!("must be at most {} characters", Self::MAX_QUERY)));
            }
            Some(q) => Some(q.to_owned()),
        };
        for (field, price) in [("min_price", min_price), ("max_price", max_price)] {
            if price.is_some_and(|p| p < 0) {
                return Err(invalid(field, "must be at least 0"));
            }
        }
        if let (Some(min), Some(max)) = (min_price, max_price)
            && min > max
        {
            return Err(invalid("max_price", "must not be below min_price"));
        }
        let limit = page_limit(limit, Self::DEFAULT_LIMIT, Self::MAX_LIMIT)?;
        // Relevance needs words to be relevant to; without them the newest come first.
        let sort = match sort.unwrap_or_default() {
            SortOrder::Relevance if q.is_none() => SortOrder::Newest,
            sort => sort,
        };
        let after = cursor.as_deref().map(Cursor::decode).transpose()?;
        if let Some(cursor) = &after
            && !cursor.fits(sort)
        {
            return Err(invalid("cursor", "belongs to a search with another sort order"));
        }
        Ok(Self { q, category, min_price, max_price, seller, in_stock: in_stock.unwrap_or(false), sort, after, limit })
    }
}

/// Where a page ended: the last product's sort key and id. The next page
/// starts strictly after it, so products added or removed meanwhile never
/// shift what the client has not seen yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "s", rename_all = "snake_case")]
pub enum Cursor {
    Relevance { rank: f32, id: ProductId },
    Price { amount: i64, id: ProductId, descending: bool },
    Newest { id: ProductId },
    Rating { average: f64, id: ProductId },
}

impl Cursor {
    pub fn encode(&self) -> String {
        encode_cursor(self)
    }

    pub fn decode(text: &str) -> Result<Self, Invalid> {
        let cursor: Cursor = decode_cursor(text)?;
        let finite = match &cursor {
            Cursor::Relevance { rank, .. } => rank.is_finite(),
            Cursor::Rating { average, .. } => average.is_finite(),
            Cursor::Price { .. } | Cursor::Newest { .. } => true,
        };
        if finite { Ok(cursor) } else { Err(bad_cursor()) }
    }

    fn fits(&self, sort: SortOrder) -> bool {
        matches!(
            (self, sort),
            (Cursor::Relevance { .. }, SortOrder::Relevance)
                | (Cursor::Price { descending: false, .. }, SortOrder::PriceAsc)
                | (Cursor::Price { descending: true, .. }, SortOrder::PriceDesc)
                | (Cursor::Newest { .. }, SortOrder::Newest)
                | (Cursor::Rating { .. }, SortOrder::Rating)
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use emporium_schemas::values::Currency;

    use super::*;

    fn search(edit: impl FnOnce(&mut SearchProducts)) -> Result<Search, Invalid> {
        let mut request = SearchProducts::default();
        edit(&mut request);
        Search::parse(request)
    }

    #[test]
    fn given_a_name_with_spaces_when_validated_then_it_is_trimmed() {
        assert_eq!(product_name("  Keyboard ").unwrap(), "Keyboard");
    }

    #[test]
    fn given_empty_long_or_multiline_names_when_validated_then_the_field_is_named() {
        for given in ["", "   ", &"x".repeat(201), "two\nlines"] {
            assert_eq!(product_name(given).unwrap_err().field, "name", "{given:?}");
        }
        assert_eq!(description(&"d".repeat(5001)).unwrap_err().field, "description");
        assert_eq!(description("").unwrap(), "");
    }

    #[test]
    fn given_an_absurd_price_when_validated_then_price_amount_is_named() {
        let money = |amount: i64| Money {
            amount: amount.try_into().unwrap(),
            currency: Currency::try_from("EUR".to_owned()).unwrap(),
        };
        assert!(price(&money(1999)).is_ok());
        assert!(price(&money(MAX_PRICE)).is_ok());
        assert_eq!(price(&money(MAX_PRICE + 1)).unwrap_err().field, "price.amount");
    }

    #[test]
    fn given_roles_when_selling_and_editing_then_owners_and_admins_may() {
        let seller = UserId::new_v7();
        let as_role = |user_id, role| Principal { user_id, role };
        assert!(may_sell(Role::Seller) && may_sell(Role::Admin) && !may_sell(Role::Customer));
        assert!(may_edit(&as_role(seller, Role::Seller), seller));
        assert!(may_edit(&as_role(UserId::new_v7(), Role::Admin), seller));
        assert!(!may_edit(&as_role(UserId::new_v7(), Role::Seller), seller));
    }

    #[test]
    fn given_a_review_with_spaces_when_validated_then_title_and_body_are_trimmed() {
        let draft = ReviewDraft::parse(4, "  Warm light ", "  Reads well.\nSturdy. ").unwrap();
        assert_eq!(draft.rating.get(), 4);
        assert_eq!((draft.title.as_str(), draft.body.as_str()), ("Warm light", "Reads well.\nSturdy."));
    }

    #[test]
    fn given_ratings_outside_one_to_five_when_validated_then_rating_is_named() {
        for rating in [0, 6, 255] {
            assert_eq!(ReviewDraft::parse(rating, "Fine", "Fine.").unwrap_err().field, "rating", "{rating}");
        }
        assert!(ReviewDraft::parse(1, "Fine", "Fine.").is_ok() && ReviewDraft::parse(5, "Fine", "Fine.").is_ok());
    }

    #[test]
    fn given_empty_long_or_multiline_titles_and_bodies_when_validated_then_the_field_is_named() {
        let long_title = "t".repeat(ReviewDraft::MAX_TITLE + 1);
        for title in ["", "   ", long_title.as_str(), "two\nlines"] {
            assert_eq!(ReviewDraft::parse(3, title, "Fine.").unwrap_err().field, "title", "{title:?}");
        }
        let long_body = "b".repeat(ReviewDraft::MAX_BODY + 1);
        for body in ["", " \n ", long_body.as_str(), "bell\u{7}"] {
            assert_eq!(ReviewDraft::parse(3, "Fine", body).unwrap_err().field, "body", "{body:?}");
        }
        assert!(ReviewDraft::parse(3, &"t".repeat(ReviewDraft::MAX_TITLE), &"b".repeat(ReviewDraft::MAX_BODY)).is_ok());
    }

    #[test]
    fn given_a_buyer_the_seller_and_a_stranger_when_reviewing_then_only_the_buyer_may() {
        let (buyer, seller, stranger) = (UserId::new_v7(), UserId::new_v7(), UserId::new_v7());
        assert_eq!(may_review(buyer, seller, true), Ok(()));
        assert_eq!(may_review(stranger, seller, false), Err(MayNotReview::NotDelivered));
        // Even a seller who somehow received their own product may not rate it.
        assert_eq!(may_review(seller, seller, true), Err(MayNotReview::OwnProduct));
        assert_eq!(may_review(seller, seller, false), Err(MayNotReview::OwnProduct));
    }

    #[test]
    fn given_a_reviews_cursor_when_it_comes_back_then_the_page_starts_after_it() {
        let last = ReviewId::new_v7();
        let page = ReviewsPage::parse(Some(&ReviewsPage::cursor_after(last)), Some(5)).unwrap();
        assert_eq!(page, ReviewsPage { after: Some(last), limit: 5 });
        assert_eq!(ReviewsPage::parse(None, None).unwrap(), ReviewsPage { after: None, limit: 20 });
    }

    #[test]
    fn given_bad_limits_or_foreign_cursors_when_paging_reviews_then_the_field_is_named() {
        for limit in [0, 101] {
            assert_eq!(ReviewsPage::parse(None, Some(limit)).unwrap_err().field, "limit");
        }
        let product_cursor = Cursor::Newest { id: ProductId::new_v7() }.encode();
        for cursor in ["not-a-cursor", product_cursor.as_str()] {
            assert_eq!(ReviewsPage::parse(Some(cursor), None).unwrap_err().field, "cursor", "{cursor}");
        }
    }

    #[test]
    fn given_no_words_when_searching_by_relevance_then_the_newest_come_first() {
        assert_eq!(search(|_| {}).unwrap().sort, SortOrder::Newest);
        assert_eq!(search(|s| s.q = Some("  ".into())).unwrap().q, None);
        let worded = search(|s| s.q = Some(" lamp ".into())).unwrap();
        assert_eq!((worded.q.as_deref(), worded.sort), (Some("lamp"), SortOrder::Relevance));
    }

    #[test]
    fn given_bad_bounds_when_searching_then_the_field_is_named() {
        assert_eq!(search(|s| s.min_price = Some(-1)).unwrap_err().field, "min_price");
        let inverted = search(|s| {
            s.min_price = Some(10);
            s.max_price = Some(5);
        });
        assert_eq!(inverted.unwrap_err().field, "max_price");
        assert_eq!(search(|s| s.limit = Some(0)).unwrap_err().field, "limit");
        assert_eq!(search(|s| s.limit = Some(101)).unwrap_err().field, "limit");
        assert_eq!(search(|s| s.q = Some("q".repeat(201))).unwrap_err().field, "q");
    }

    #[test]
    fn given_a_cursor_when_it_comes_back_then_it_is_the_same_position() {
        let cursor = Cursor::Price { amount: 1999, id: ProductId::new_v7(), descending: true };
        let again = search(|s| {
            s.sort = Some(SortOrder::PriceDesc);
            s.cursor = Some(cursor.encode());
        });
        assert_eq!(again.unwrap().after, Some(cursor));
    }

    #[test]
    fn given_a_forged_or_foreign_cursor_when_searching_then_cursor_is_named() {
        assert_eq!(search(|s| s.cursor = Some("not-a-cursor".into())).unwrap_err().field, "cursor");
        let newest = Cursor::Newest { id: ProductId::new_v7() }.encode();
        let mismatched = search(|s| {
            s.sort = Some(SortOrder::PriceAsc);
            s.cursor = Some(newest);
        });
        assert_eq!(mismatched.unwrap_err().field, "cursor");
    }
}
