//! The double-entry ledger's vocabulary, free of I/O: accounts, postings,
//! and journal entries that cannot be built unless they sum to zero per
//! currency. A capture books `charge` (the customer pays the provider) and
//! `sale` (what the customer bought is owed to its sellers, less the
//! platform's commission); a refund reverses both exactly.
//!
//! Signs: a positive amount is a debit, a negative one a credit.

use std::collections::BTreeMap;

use emporium_schemas::values::{Currency, Money, UserId};
use uuid::Uuid;

/// Basis points in a whole: 10,000 bps = 100 %.
pub const BPS_SCALE: u32 = 10_000;

/// A ledger account; some are kept per party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// Per customer: what they paid against what they bought.
    Customer,
    /// Money the provider holds for us: captured less refunded.
    ProviderClearing,
    /// Per seller: what the platform owes them.
    MerchantPayable,
    /// The platform's commission.
    PlatformRevenue,
}

impl Account {
    pub fn as_str(self) -> &'static str {
        match self {
            Account::Customer => "customer",
            Account::ProviderClearing => "provider_clearing",
            Account::MerchantPayable => "merchant_payable",
            Account::PlatformRevenue => "platform_revenue",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "customer" => Account::Customer,
            "provider_clearing" => Account::ProviderClearing,
            "merchant_payable" => Account::MerchantPayable,
            "platform_revenue" => Account::PlatformRevenue,
            _ => return None,
        })
    }
}

/// What kind of movement an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// The customer paid the provider.
    Charge,
    /// The sale: the customer's payment is owed to sellers and the platform.
    Sale,
    /// The sale undone.
    Unsale,
    /// The provider paid the customer back.
    Refund,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Charge => "charge",
            EntryKind::Sale => "sale",
            EntryKind::Unsale => "unsale",
            EntryKind::Refund => "refund",
        }
    }
}

/// One line of an entry: an amount on an account (of a party, if the account is kept per party).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: Account,
    pub party: Option<Uuid>,
    pub currency: Currency,
    /// Minor units: + debit, − credit.
    pub amount: i64,
}

/// Why an entry could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("entry does not balance: {currency} sums to {sum}")]
    Unbalanced { currency: String, sum: i128 },
    #[error("an amount is out of range")]
    Overflow,
    #[error("a line is priced in {found}, the order in {expected}")]
    CurrencyMismatch { expected: String, found: String },
}

/// A balanced journal entry: its postings sum to zero in every currency.
/// Only [`JournalEntry::new`] makes one, and it refuses anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    kind: EntryKind,
    postings: Vec<Posting>,
}

impl JournalEntry {
    /// An entry of `postings`, zero postings left out; refused unless it balances.
    pub fn new(kind: EntryKind, postings: Vec<Posting>) -> Result<Self, JournalError> {
        let postings: Vec<Posting> = postings.into_iter().filter(|p| p.amount != 0).collect();
        let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
        for posting in &postings {
            *sums.entry(posting.currency.as_str()).or_default() += i128::from(posting.amount);
        }
        if let Some((currency, sum)) = sums.into_iter().find(|(_, sum)| *sum != 0) {
            return Err(JournalError::Unbalanced { currency: currency.to_owned(), sum });
        }
        Ok(Self { kind, postings })
    }

    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }

    /// The same postings with their signs turned: this entry undone.
    pub fn reversal(&self, kind: EntryKind) -> Result<Self, JournalError> {
        let postings = self
            .postings
            .iter()
            .map(|p| Ok(Posting { amount: p.amount.checked_neg().ok_or(JournalError::Overflow)?, ..p.clone() }))
            .collect::<Result<_, JournalError>>()?;
        Self::new(kind, postings)
    }
}

/// An order line as the ledger splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleLine {
    pub seller: UserId,
    pub quantity: u32,
    pub unit_price: Money,
}

/// The platform's commission on `amount`, rounded down.
pub fn commission(amount: i64, bps: u32) -> Result<i64, JournalError> {
    let commission = i128::from(amount) * i128::from(bps) / i128::from(BPS_SCALE);
    i64::try_from(commission).map_err(|_| JournalError::Overflow)
}

/// The entries of capturing `total` from `customer` for `lines`: `charge`
/// (customer −T, provider clearing +T) and `sale` (customer +T, each seller
/// −(their lines less commission), platform −commission). Commission is
/// taken per line, rounded down. Whatever the total holds beyond the lines
/// (or lacks: a discount) is the platform's, so the entry balances.
pub fn capture_entries(
    customer: UserId,
    total: &Money,
    lines: &[SaleLine],
    commission_bps: u32,
) -> Result<(JournalEntry, JournalEntry), JournalError> {
    let currency = &total.currency;
    let total_amount = total.amount.get();
    let mut payable: BTreeMap<UserId, i64> = BTreeMap::new();
    let mut lines_total: i64 = 0;
    let mut platform: i64 = 0;
    for line in lines {
        if &line.unit_price.currency != currency {
            return Err(JournalError::CurrencyMismatch {
                expected: currency.as_str().to_owned(),
                found: line.unit_price.currency.as_str().to_owned(),
            });
        }
        let amount =
            line.unit_price.amount.get().checked_mul(i64::from(line.quantity)).ok_or(JournalError::Overflow)?;
        let fee = commission(amount, commission_bps)?;
        lines_total = lines_total.checked_add(amount).ok_or(JournalError::Overflow)?;
        platform = platform.checked_add(fee).ok_or(JournalError::Overflow)?;
        let owed = payable.entry(line.seller).or_default();
        *owed = owed.checked_add(amount - fee).ok_or(JournalError::Overflow)?;
    }
    platform = platform.checked_add(total_amount - lines_total).ok_or(JournalError::Overflow)?;

    let posting =
        |account, party: Option<Uuid>, amount: i64| Posting { account, party, currency: currency.clone(), amount };
    let customer = Some(*customer.as_uuid());
    let charge = JournalEntry::new(
        EntryKind::Charge,
        vec![
            posting(Account::Customer, customer, -total_amount),
            posting(Account::ProviderClearing, None, total_amount),
        ],
    )?;
    let mut sale = vec![posting(Account::Customer, customer, total_amount)];
    for (seller, owed) in payable {
        sale.push(posting(Account::MerchantPayable, Some(*seller.as_uuid()), -owed));
    }
    sale.push(posting(Account::PlatformRevenue, None, -platform));
    Ok((charge, JournalEntry::new(EntryKind::Sale, sale)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount: i64) -> Money {
        Money { amount: amount.try_into().unwrap(), currency: Currency::try_from("EUR".to_owned()).unwrap() }
    }

    fn line(seller: UserId, quantity: u32, unit_price: i64) -> SaleLine {
        SaleLine { seller, quantity, unit_price: eur(unit_price) }
    }

    fn sum_of(entry: &JournalEntry, account: Account, party: Option<Uuid>) -> i64 {
        entry.postings().iter().filter(|p| p.account == account && p.party == party).map(|p| p.amount).sum()
    }

    #[test]
    fn an_unbalanced_entry_is_refused() {
        let euro = Currency::try_from("EUR".to_owned()).unwrap();
        let posting = |account, amount| Posting { account, party: None, currency: euro.clone(), amount };
        let refused = JournalEntry::new(
            EntryKind::Charge,
            vec![posting(Account::Customer, -100), posting(Account::ProviderClearing, 99)],
        );
        assert_eq!(refused, Err(JournalError::Unbalanced { currency: "EUR".to_owned(), sum: -1 }));
    }

    #[test]
    fn entries_balance_per_currency_not_across_currencies() {
        let posting = |code: &str, amount| Posting {
            account: Account::PlatformRevenue,
            party: None,
            currency: Currency::try_from(code.to_owned()).unwrap(),
            amount,
        };
        let mixed = JournalEntry::new(EntryKind::Sale, vec![posting("EUR", 100), posting("USD", -100)]);
        assert!(matches!(mixed, Err(JournalError::Unbalanced { .. })));
    }

    #[test]
    fn a_capture_charges_the_customer_and_splits_the_sale_per_seller_with_commission_rounded_down() {
        let (customer, alice, bob) = (UserId::new_v7(), UserId::new_v7(), UserId::new_v7());
        // Alice: 2 × 1,005 = 2,010 → commission 201; Bob: 1 × 999 → 99 (99.9 rounded down).
        let lines = [line(alice, 2, 1_005), line(bob, 1, 999)];
        let (charge, sale) = capture_entries(customer, &eur(3_009), &lines, 1_000).unwrap();

        let customer_party = Some(*customer.as_uuid());
        assert_eq!(sum_of(&charge, Account::Customer, customer_party), -3_009);
        assert_eq!(sum_of(&charge, Account::ProviderClearing, None), 3_009);
        assert_eq!(sum_of(&sale, Account::Customer, customer_party), 3_009);
        assert_eq!(sum_of(&sale, Account::MerchantPayable, Some(*alice.as_uuid())), -1_809);
        assert_eq!(sum_of(&sale, Account::MerchantPayable, Some(*bob.as_uuid())), -900);
        assert_eq!(sum_of(&sale, Account::PlatformRevenue, None), -300);
    }

    #[test]
    fn what_the_total_holds_beyond_its_lines_is_the_platforms() {
        let seller = UserId::new_v7();
        let (_, sale) = capture_entries(UserId::new_v7(), &eur(1_500), &[line(seller, 1, 1_000)], 1_000).unwrap();
        assert_eq!(sum_of(&sale, Account::PlatformRevenue, None), -600, "100 commission + 500 beyond the lines");
        let (_, discounted) = capture_entries(UserId::new_v7(), &eur(900), &[line(seller, 1, 1_000)], 1_000).unwrap();
        assert_eq!(sum_of(&discounted, Account::PlatformRevenue, None), 0, "the platform bears a discount");
    }

    #[test]
    fn a_reversal_undoes_an_entry_exactly() {
        let (charge, sale) =
            capture_entries(UserId::new_v7(), &eur(500), &[line(UserId::new_v7(), 5, 100)], 1_000).unwrap();
        let refund = charge.reversal(EntryKind::Refund).unwrap();
        let unsale = sale.reversal(EntryKind::Unsale).unwrap();
        for (original, reversed) in [(&charge, &refund), (&sale, &unsale)] {
            for (a, b) in original.postings().iter().zip(reversed.postings()) {
                assert_eq!((a.account, a.party, a.amount), (b.account, b.party, -b.amount));
            }
        }
        assert_eq!(refund.kind(), EntryKind::Refund);
    }

    #[test]
    fn a_line_in_another_currency_is_refused() {
        let usd = Money { amount: 100.try_into().unwrap(), currency: Currency::try_from("USD".to_owned()).unwrap() };
        let lines = [SaleLine { seller: UserId::new_v7(), quantity: 1, unit_price: usd }];
        assert!(matches!(
            capture_entries(UserId::new_v7(), &eur(100), &lines, 1_000),
            Err(JournalError::CurrencyMismatch { .. })
        ));
    }

    #[test]
    fn commission_is_rounded_down() {
        assert_eq!(commission(999, 1_000).unwrap(), 99);
        assert_eq!(commission(1_000, 1_000).unwrap(), 100);
        assert_eq!(commission(5, 0).unwrap(), 0);
        assert_eq!(commission(i64::MAX, BPS_SCALE).unwrap(), i64::MAX);
    }
}
