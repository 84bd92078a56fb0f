//! Validated value types shared by events and commands.
//!
//! Each type refuses, at deserialization, exactly what the matching definition
//! in `json/common.v1.json` refuses, so a payload is valid for the Rust types
//! if and only if it is valid for the schemas.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("not a hyphenated UUID: {0:?}")]
    Uuid(String),
    #[error("amount must be at least 0, got {0}")]
    NegativeAmount(i64),
    #[error("currency must be three upper-case letters (ISO 4217), got {0:?}")]
    Currency(String),
    #[error("quantity must be between {min} and {max}, got {got}")]
    Quantity { min: u32, max: u32, got: u32 },
    #[error("country must be two upper-case letters (ISO 3166-1 alpha-2), got {0:?}")]
    Country(String),
    #[error("text must be 1 to {max} characters, got {got}")]
    TextLength { max: usize, got: usize },
    #[error("payment method must look like tok_<name>, got {0:?}")]
    PaymentMethod(String),
    #[error("list must not be empty")]
    EmptyList,
    #[error("not a valid {what}: {value:?}")]
    Invalid { what: &'static str, value: String },
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (v7) id.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(text: String) -> Result<Self, ValueError> {
                parse_hyphenated_uuid(&text).map(Self)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

/// Only the canonical 36-character form is accepted, as JSON Schema's
/// `format: uuid` does (the uuid crate alone would also take braces and URNs).
pub(crate) fn parse_hyphenated_uuid(text: &str) -> Result<Uuid, ValueError> {
    if text.len() != 36 {
        return Err(ValueError::Uuid(text.to_owned()));
    }
    Uuid::try_parse(text).map_err(|_| ValueError::Uuid(text.to_owned()))
}

uuid_id!(
    /// The id of an event or command: a UUIDv7, so ids sort by creation time.
    MessageId
);
uuid_id!(
    /// An order; also the key of every event of its checkout saga.
    OrderId
);
uuid_id!(
    /// A registered user (customer, seller or admin).
    UserId
);
uuid_id!(
    /// A catalog product.
    ProductId
);
uuid_id!(
    /// A catalog category (a node of the category tree).
    CategoryId
);
uuid_id!(
    /// A payment (one per order).
    PaymentId
);
uuid_id!(
    /// A shipment (one per confirmed order).
    ShipmentId
);
uuid_id!(
    /// An in-app notification of one user.
    NotificationId
);
uuid_id!(
    /// A customer's review of a product.
    ReviewId
);

/// An ISO 4217 currency code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^[A-Z]{3}$", example = "EUR")]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = ValueError;
    fn try_from(code: String) -> Result<Self, ValueError> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(code))
        } else {
            Err(ValueError::Currency(code))
        }
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.0
    }
}

/// An amount of money in integer minor units (cents) of one currency. Never a float.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    pub amount: MinorUnits,
    pub currency: Currency,
}

/// A non-negative amount in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(value_type = i64, example = 1999)]
#[serde(try_from = "i64", into = "i64")]
pub struct MinorUnits(i64);

impl MinorUnits {
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for MinorUnits {
    type Error = ValueError;
    fn try_from(amount: i64) -> Result<Self, ValueError> {
        if amount >= 0 { Ok(Self(amount)) } else { Err(ValueError::NegativeAmount(amount)) }
    }
}

impl From<MinorUnits> for i64 {
    fn from(units: MinorUnits) -> i64 {
        units.0
    }
}

/// How many units of a product: 1 to 999 on an order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    pub const MIN: u32 = 1;
    pub const MAX: u32 = 999;

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Quantity {
    type Error = ValueError;
    fn try_from(got: u32) -> Result<Self, ValueError> {
        if (Self::MIN..=Self::MAX).contains(&got) {
            Ok(Self(got))
        } else {
            Err(ValueError::Quantity { min: Self::MIN, max: Self::MAX, got })
        }
    }
}

impl From<Quantity> for u32 {
    fn from(quantity: Quantity) -> u32 {
        quantity.0
    }
}

/// A review's rating: 1 to 5 stars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Stars(u8);

impl Stars {
    pub const MIN: u8 = 1;
    pub const MAX: u8 = 5;

    pub const fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Stars {
    type Error = ValueError;
    fn try_from(stars: u8) -> Result<Self, ValueError> {
        if (Self::MIN..=Self::MAX).contains(&stars) {
            Ok(Self(stars))
        } else {
            Err(ValueError::Invalid { what: "rating (1 to 5 stars)", value: stars.to_string() })
        }
    }
}

impl From<Stars> for u8 {
    fn from(stars: Stars) -> u8 {
        stars.0
    }
}

/// Free text of 1 to 200 characters (names, address lines, carrier, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text(String);

impl Text {
    pub const MAX_CHARS: usize = 200;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Text {
    type Error = ValueError;
    fn try_from(text: String) -> Result<Self, ValueError> {
        // JSON Schema's maxLength counts code points, as chars() does.
        let got = text.chars().count();
        if (1..=Self::MAX_CHARS).contains(&got) {
            Ok(Self(text))
        } else {
            Err(ValueError::TextLength { max: Self::MAX_CHARS, got })
        }
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.0
    }
}

/// An ISO 3166-1 alpha-2 country code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode(String);

impl CountryCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CountryCode {
    type Error = ValueError;
    fn try_from(code: String) -> Result<Self, ValueError> {
        if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(code))
        } else {
            Err(ValueError::Country(code))
        }
    }
}

impl From<CountryCode> for String {
    fn from(code: CountryCode) -> String {
        code.0
    }
}

/// A shipping address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Address {
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub name: Text,
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub line1: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub line2: Option<Text>,
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub city: Text,
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub postal_code: Text,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(value_type = String, pattern = "^[A-Z]{2}$", example = "GB")]
    pub country: CountryCode,
}

/// A payment method token of the (simulated) provider, e.g. `tok_visa`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PaymentMethod(String);

impl PaymentMethod {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PaymentMethod {
    type Error = ValueError;
    fn try_from(token: String) -> Result<Self, ValueError> {
        let valid = token.len() <= 64
            && token
                .strip_prefix("tok_")
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if valid { Ok(Self(token)) } else { Err(ValueError::PaymentMethod(token)) }
    }
}

impl From<PaymentMethod> for String {
    fn from(token: PaymentMethod) -> String {
        token.0
    }
}

/// A list with at least one element (`minItems: 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<T>", into = "Vec<T>")]
#[serde(bound(deserialize = "T: Deserialize<'de>", serialize = "T: Serialize + Clone"))]
pub struct NonEmpty<T>(Vec<T>);

impl<T> NonEmpty<T> {
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    /// Each element mapped: still at least one.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> NonEmpty<U> {
        NonEmpty(self.0.iter().map(f).collect())
    }
}

impl<T> TryFrom<Vec<T>> for NonEmpty<T> {
    type Error = ValueError;
    fn try_from(items: Vec<T>) -> Result<Self, ValueError> {
        if items.is_empty() { Err(ValueError::EmptyList) } else { Ok(Self(items)) }
    }
}

impl<T> From<NonEmpty<T>> for Vec<T> {
    fn from(list: NonEmpty<T>) -> Vec<T> {
        list.0
    }
}

/// A product and how many of it, without a price (reservations, releases).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductQuantity {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// Quantities summed per product, in product-id order (saturating): what
/// lines ask for regardless of how they are split or ordered.
pub fn merge_quantities(lines: impl IntoIterator<Item = (ProductId, u32)>) -> Vec<(ProductId, u32)> {
    let mut merged = std::collections::BTreeMap::new();
    for (product, quantity) in lines {
        let total: &mut u32 = merged.entry(product).or_default();
        *total = total.saturating_add(quantity);
    }
    merged.into_iter().collect()
}

/// An order line as the order priced it from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub product_id: ProductId,
    pub seller_id: UserId,
    pub quantity: Quantity,
    pub unit_price: Money,
}

/// The roles of DESIGN.md's public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Seller,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Seller => "seller",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Self, ValueError> {
        match text {
            "customer" => Ok(Role::Customer),
            "seller" => Ok(Role::Seller),
            "admin" => Ok(Role::Admin),
            other => Err(ValueError::Invalid { what: "role", value: other.to_owned() }),
        }
    }
}

/// A credential (password, refresh token): serialized as is, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A product's stock: what is on hand, what orders hold, and what is left to
/// sell. `available` is always `on_hand - reserved`: a level that says
/// otherwise is refused where it is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "StockLevelFields")]
pub struct StockLevel {
    pub on_hand: u32,
    pub reserved: u32,
    /// `on_hand - reserved`, never negative.
    pub available: u32,
}

impl StockLevel {
    /// The level for `on_hand` and `reserved`; `None` if more is reserved than is on hand.
    pub fn new(on_hand: u32, reserved: u32) -> Option<Self> {
        on_hand.checked_sub(reserved).map(|available| Self { on_hand, reserved, available })
    }
}

/// [`StockLevel`] as it is read, before its sum is checked.
#[derive(Deserialize)]
struct StockLevelFields {
    on_hand: u32,
    reserved: u32,
    available: u32,
}

impl TryFrom<StockLevelFields> for StockLevel {
    type Error = ValueError;
    fn try_from(fields: StockLevelFields) -> Result<Self, ValueError> {
        StockLevel::new(fields.on_hand, fields.reserved).filter(|level| level.available == fields.available).ok_or(
            ValueError::Invalid {
                what: "stock level (available must be on_hand - reserved)",
                value: format!("{}/{}/{}", fields.on_hand, fields.reserved, fields.available),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_accept_only_the_hyphenated_form() {
        let canonical = "0193a5c2-7d4e-7c1a-9f00-0123456789ab";
        assert!(OrderId::try_from(canonical.to_owned()).is_ok());
        for bad in ["0193a5c27d4e7c1a9f000123456789ab", "{0193a5c2-7d4e-7c1a-9f00-0123456789ab}", "order-1", ""] {
            assert!(OrderId::try_from(bad.to_owned()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn quantities_are_between_one_and_nine_hundred_ninety_nine() {
        for (given, ok) in [(0, false), (1, true), (999, true), (1000, false)] {
            assert_eq!(Quantity::try_from(given).is_ok(), ok, "quantity {given}");
        }
    }

    #[test]
    fn ratings_are_one_to_five_stars() {
        for (given, ok) in [(0, false), (1, true), (5, true), (6, false)] {
            assert_eq!(Stars::try_from(given).is_ok(), ok, "{given} stars");
        }
    }

    #[test]
    fn money_refuses_negative_amounts_and_bad_currencies() {
        assert!(MinorUnits::try_from(-1).is_err());
        assert!(MinorUnits::try_from(0).is_ok());
        for (code, ok) in [("EUR", true), ("eur", false), ("EURO", false), ("E1R", false)] {
            assert_eq!(Currency::try_from(code.to_owned()).is_ok(), ok, "currency {code}");
        }
    }

    #[test]
    fn payment_methods_are_provider_tokens() {
        for (token, ok) in
            [("tok_visa", true), ("tok_capture_flaky", true), ("tok_", false), ("visa", false), ("tok_Visa", false)]
        {
            assert_eq!(PaymentMethod::try_from(token.to_owned()).is_ok(), ok, "token {token}");
        }
    }

    #[test]
    fn text_counts_characters_not_bytes() {
        assert!(Text::try_from("é".repeat(200)).is_ok());
        assert!(Text::try_from("é".repeat(201)).is_err());
        assert!(Text::try_from(String::new()).is_err());
    }
}
