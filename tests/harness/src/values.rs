//! Sample values for tests: text, euros, an address.

// Test support: a sample that breaks its type's rule is the caller's bug.
#![allow(clippy::expect_used)]

use emporium_schemas::values::{Address, CountryCode, Currency, Money, Text};

/// `s` as [`Text`].
///
/// # Panics
/// If `s` breaks `Text`'s rule (blank, too long).
pub fn text(s: &str) -> Text {
    Text::try_from(s.to_owned()).expect("sample text")
}

/// `cents` in euros.
///
/// # Panics
/// If `cents` is not an amount `Money` holds.
pub fn euros(cents: i64) -> Money {
    Money {
        amount: cents.try_into().expect("sample amount"),
        currency: Currency::try_from("EUR".to_owned()).expect("EUR"),
    }
}

/// A shipping address in London.
pub fn address() -> Address {
    Address {
        name: text("Ada"),
        line1: text("1 Loop Road"),
        line2: None,
        city: text("London"),
        postal_code: text("N1"),
        country: CountryCode::try_from("GB".to_owned()).expect("GB"),
    }
}
