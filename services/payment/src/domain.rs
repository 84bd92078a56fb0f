//! Payment rules, free of I/O: what each saga event means for a payment in
//! each status ([`decide`]), and what each provider outcome means
//! ([`settle`]). The caller commits the result; a provider call is only ever
//! *started* here (its attempt recorded), never made.

use std::time::Duration;

use emporium_schemas::events::payment::FailureReason;
use serde::{Deserialize, Serialize};

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The stock was held (`inventory.reserved`) before the placement was
    /// seen: nothing is known of the order yet; its placement authorizes at once.
    AwaitingPlacement,
    /// Recorded from `order.placed`; waiting for the stock to be held.
    AwaitingStock,
    /// An authorization call is in flight, or its outcome is unknown.
    Authorizing,
    /// The provider holds the amount.
    Authorized,
    /// The authorization was refused.
    Failed,
    /// A capture call is in flight, or the last one failed and another is due.
    Capturing,
    /// The amount was taken.
    Captured,
    /// Capture gave up after its bounded attempts (or was refused); the
    /// authorization still stands and an operator must look.
    CaptureFailed,
    /// A void call is in flight or due.
    Voiding,
    Voided,
    /// The provider refused the void for good: an operator must look.
    VoidFailed,
    /// A refund call is in flight or due.
    Refunding,
    Refunded,
    /// The provider refused the refund for good: an operator must look.
    RefundFailed,
    /// The order was cancelled before anything was authorized.
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::AwaitingPlacement => "awaiting_placement",
            Status::AwaitingStock => "awaiting_stock",
            Status::Authorizing => "authorizing",
            Status::Authorized => "authorized",
            Status::Failed => "failed",
            Status::Capturing => "capturing",
            Status::Captured => "captured",
            Status::CaptureFailed => "capture_failed",
            Status::Voiding => "voiding",
            Status::Voided => "voided",
            Status::VoidFailed => "void_failed",
            Status::Refunding => "refunding",
            Status::Refunded => "refunded",
            Status::RefundFailed => "refund_failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "awaiting_placement" => Status::AwaitingPlacement,
            "awaiting_stock" => Status::AwaitingStock,
            "authorizing" => Status::Authorizing,
            "authorized" => Status::Authorized,
            "failed" => Status::Failed,
            "capturing" => Status::Capturing,
            "captured" => Status::Captured,
            "capture_failed" => Status::CaptureFailed,
            "voiding" => Status::Voiding,
            "voided" => Status::Voided,
            "void_failed" => Status::VoidFailed,
            "refunding" => Status::Refunding,
            "refunded" => Status::Refunded,
            "refund_failed" => Status::RefundFailed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// Whether an operation is under way (in flight or due again).
    pub fn is_underway(self) -> bool {
        matches!(self, Status::Authorizing | Status::Capturing | Status::Voiding | Status::Refunding)
    }
}

/// A call to the provider (named as [`as_str`](Self::as_str) says, in the store and on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Authorize,
    Capture,
    Void,
    Refund,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Authorize => "authorize",
            Operation::Capture => "capture",
            Operation::Void => "void",
            Operation::Refund => "refund",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "authorize" => Operation::Authorize,
            "capture" => Operation::Capture,
            "void" => Operation::Void,
            "refund" => Operation::Refund,
            _ => return None,
        })
    }

    /// The status of a payment while this operation is under way.
    pub fn underway(self) -> Status {
        match self {
            Operation::Authorize => Status::Authorizing,
            Operation::Capture => Status::Capturing,
            Operation::Void => Status::Voiding,
            Operation::Refund => Status::Refunding,
        }
    }
}

/// A payment as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    pub status: Status,
    /// The order was cancelled while a call was in flight.
    pub cancel_requested: bool,
    /// A call has been committed and its outcome is not known yet.
    pub call_in_flight: bool,
}

impl Payment {
    #[cfg(test)]
    pub fn at(status: Status) -> Self {
        Self { status, cancel_requested: false, call_in_flight: status.is_underway() }
    }
}

/// An upstream saga event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaStep {
    /// `order.placed`.
    Placed,
    /// `inventory.reserved`.
    StockReserved,
    /// `order.confirmed`.
    Confirmed,
    /// `order.cancelled`.
    Cancelled,
}

/// What a saga event calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Record the payment, awaiting stock.
    Record,
    /// The placement of an order whose stock is already held: record what
    /// was ordered and start its authorization.
    RecordAndAuthorize,
    /// The stock was held before the placement was seen (the two streams
    /// are consumed independently): remember it, so the placement
    /// authorizes at once. Waiting instead would dead-letter a valid event
    /// once the consumer's delivery bound ran out.
    RecordStockHeldUnseen,
    /// Record the operation's attempt; a worker makes the call after the commit.
    Start(Operation),
    /// A call is in flight: compensate as soon as its outcome is known.
    RememberCancel,
    /// Nothing was authorized yet: a later reservation must authorize nothing.
    MarkCancelled,
    /// The cancellation came before the placement (a replay, or a lost
    /// placement): remember it, so a late placement records nothing to charge.
    RecordCancelledUnseen,
    /// The event needs a step not seen yet (events of two streams arrive in
    /// any order): try again later.
    Wait,
    /// A duplicate, a replay, or nothing to do in this status.
    Nothing,
}

/// What `step` means for the payment (`None`: no payment recorded for the order).
pub fn decide(payment: Option<&Payment>, step: SagaStep) -> Action {
    let Some(payment) = payment else {
        return match step {
            SagaStep::Placed => Action::Record,
            SagaStep::StockReserved => Action::RecordStockHeldUnseen,
            SagaStep::Confirmed => Action::Wait,
            SagaStep::Cancelled => Action::RecordCancelledUnseen,
        };
    };
    match (step, payment.status) {
        (SagaStep::Placed, Status::AwaitingPlacement) => Action::RecordAndAuthorize,
        (SagaStep::Placed, _) => Action::Nothing,
        (SagaStep::StockReserved, Status::AwaitingStock) => Action::Start(Operation::Authorize),
        (SagaStep::StockReserved, _) => Action::Nothing,
        (SagaStep::Confirmed, Status::Authorized) => Action::Start(Operation::Capture),
        // A confirmation follows our own `payment.authorized`, which is only
        // published after the authorization is committed: wait for it.
        (SagaStep::Confirmed, Status::AwaitingPlacement | Status::AwaitingStock | Status::Authorizing) => Action::Wait,
        (SagaStep::Confirmed, _) => Action::Nothing,
        (SagaStep::Cancelled, _) if payment.cancel_requested => Action::Nothing,
        (SagaStep::Cancelled, Status::AwaitingPlacement | Status::AwaitingStock) => Action::MarkCancelled,
        (SagaStep::Cancelled, Status::Authorizing) => Action::RememberCancel,
        (SagaStep::Cancelled, Status::Capturing) if payment.call_in_flight => Action::RememberCancel,
        // Between capture attempts nothing is in flight: stop retrying and release the hold.
        (SagaStep::Cancelled, Status::Authorized | Status::Capturing | Status::CaptureFailed) => {
            Action::Start(Operation::Void)
        }
        (SagaStep::Cancelled, Status::Captured) => Action::Start(Operation::Refund),
        (
            SagaStep::Cancelled,
            Status::Failed
            | Status::Voiding
            | Status::Voided
            | Status::VoidFailed
            | Status::Refunding
            | Status::Refunded
            | Status::RefundFailed
            | Status::Cancelled,
        ) => Action::Nothing,
    }
}

/// How a provider call ended, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Refused for good.
    Declined(FailureReason),
    /// The provider answered that it did nothing: the operation may be tried
    /// again under a new key. (An answer that does not prove this, such as a
    /// transport error or a 5xx, is no outcome: the call is asked about by
    /// its key instead.)
    Failed,
}

/// A `payment.*` event to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    Authorized,
    Failed(FailureReason),
    Captured,
    CaptureFailed { attempts: u32 },
    Voided,
    Refunded,
}

/// Money the ledger must move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerMove {
    /// The capture's `charge` and `sale` entries.
    Capture,
    /// Their reversal: `unsale` and `refund`.
    Refund,
}

/// What a provider outcome does to a payment. The cancel request is always
/// consumed: a transition either acts on it or leaves no call in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: Status,
    /// In order; each raises the payment's version by one.
    pub emit: Vec<Emit>,
    pub ledger: Option<LedgerMove>,
    /// The next call, started in the same transaction.
    pub start: Option<Operation>,
    /// The same operation is due again after [`retry_delay`].
    pub retry: bool,
    /// Capture was given up: operators count these.
    pub gave_up: bool,
    /// The provider refused a void or refund for good: operators count these.
    pub compensation_failed: bool,
}

impl Transition {
    fn to(status: Status) -> Self {
        Self {
            status,
            emit: Vec::new(),
            ledger: None,
            start: None,
            retry: false,
            gave_up: false,
            compensation_failed: false,
        }
    }

    fn emit(mut self, event: Emit) -> Self {
        self.emit.push(event);
        self
    }

    fn start(mut self, operation: Operation) -> Self {
        self.start = Some(operation);
        self
    }
}

/// What the outcome of attempt number `attempt` of `operation` means for the
/// payment. `None`: the payment is not waiting for that operation (a stale
/// outcome); nothing changes.
pub fn settle(
    payment: &Payment,
    operation: Operation,
    outcome: Outcome,
    attempt: u32,
    capture_attempts: u32,
) -> Option<Transition> {
    let cancelled = payment.cancel_requested;
    let transition = match (payment.status, operation, outcome) {
        // A late authorization of a cancelled order is voided at once.
        (Status::Authorizing, Operation::Authorize, Outcome::Succeeded) if cancelled => {
            Transition::to(Status::Voiding).emit(Emit::Authorized).start(Operation::Void)
        }
        (Status::Authorizing, Operation::Authorize, Outcome::Succeeded) => {
            Transition::to(Status::Authorized).emit(Emit::Authorized)
        }
        (Status::Authorizing, Operation::Authorize, Outcome::Declined(reason)) => {
            Transition::to(Status::Failed).emit(Emit::Failed(reason))
        }
        (Status::Authorizing, Operation::Authorize, Outcome::Failed) => {
            Transition::to(Status::Failed).emit(Emit::Failed(FailureReason::ProviderError))
        }
        (Status::Capturing, Operation::Capture, Outcome::Succeeded) if cancelled => Transition {
            ledger: Some(LedgerMove::Capture),
            ..Transition::to(Status::Refunding).emit(Emit::Captured).start(Operation::Refund)
        },
        (Status::Capturing, Operation::Capture, Outcome::Succeeded) => {
            Transition { ledger: Some(LedgerMove::Capture), ..Transition::to(Status::Captured).emit(Emit::Captured) }
        }
        // The order is gone: its capture is abandoned and the hold released.
        (Status::Capturing, Operation::Capture, Outcome::Failed | Outcome::Declined(_)) if cancelled => {
            Transition::to(Status::Voiding).start(Operation::Void)
        }
        (Status::Capturing, Operation::Capture, Outcome::Failed) if attempt < capture_attempts => {
            Transition { retry: true, ..Transition::to(Status::Capturing) }
        }
        (Status::Capturing, Operation::Capture, Outcome::Failed | Outcome::Declined(_)) => Transition {
            gave_up: true,
            ..Transition::to(Status::CaptureFailed).emit(Emit::CaptureFailed { attempts: attempt })
        },
        (Status::Voiding, Operation::Void, Outcome::Succeeded) => Transition::to(Status::Voided).emit(Emit::Voided),
        (Status::Refunding, Operation::Refund, Outcome::Succeeded) => {
            Transition { ledger: Some(LedgerMove::Refund), ..Transition::to(Status::Refunded).emit(Emit::Refunded) }
        }
        // A refusal for good is answered the same under every key: trying
        // again would only hide it. It ends the compensation; operators look.
        (Status::Voiding, Operation::Void, Outcome::Declined(_)) => {
            Transition { compensation_failed: true, ..Transition::to(Status::VoidFailed) }
        }
        (Status::Refunding, Operation::Refund, Outcome::Declined(_)) => {
            Transition { compensation_failed: true, ..Transition::to(Status::RefundFailed) }
        }
        // A compensation must happen: while the provider only fails to act, it is tried again.
        (Status::Voiding, Operation::Void, Outcome::Failed) => {
            Transition { retry: true, ..Transition::to(Status::Voiding) }
        }
        (Status::Refunding, Operation::Refund, Outcome::Failed) => {
            Transition { retry: true, ..Transition::to(Status::Refunding) }
        }
        _ => return None,
    };
    Some(transition)
}

/// The longest wait between two attempts of one operation.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// How long after failed attempt number `attempt` the next one is due.
pub fn retry_delay(backoff: Duration, attempt: u32) -> Duration {
    backoff.saturating_mul(attempt.max(1)).min(MAX_RETRY_DELAY)
}

/// The idempotency key of attempt number `attempt` of `operation` on a payment.
pub fn idempotency_key(payment_id: &uuid::Uuid, operation: Operation, attempt: u32) -> String {
    format!("{}{attempt}", idempotency_key_prefix(payment_id, operation))
}

/// What every attempt's key of `operation` on a payment starts with: the
/// attempt's number follows (the store appends it where it counts attempts).
pub fn idempotency_key_prefix(payment_id: &uuid::Uuid, operation: Operation) -> String {
    format!("{payment_id}:{}:", operation.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 5;

    fn given(status: Status) -> Payment {
        Payment::at(status)
    }

    fn cancelled_while(status: Status) -> Payment {
        Payment { cancel_requested: true, ..Payment::at(status) }
    }

    #[test]
    fn a_placement_records_the_payment_once() {
        assert_eq!(decide(None, SagaStep::Placed), Action::Record);
        for status in [Status::AwaitingStock, Status::Authorizing, Status::Captured, Status::Cancelled] {
            assert_eq!(decide(Some(&given(status)), SagaStep::Placed), Action::Nothing, "{status:?}");
        }
    }

    #[test]
    fn held_stock_authorizes_a_payment_awaiting_it_and_nothing_else() {
        assert_eq!(
            decide(Some(&given(Status::AwaitingStock)), SagaStep::StockReserved),
            Action::Start(Operation::Authorize)
        );
        for status in [Status::Authorizing, Status::Authorized, Status::Failed, Status::Cancelled, Status::Voided] {
            assert_eq!(decide(Some(&given(status)), SagaStep::StockReserved), Action::Nothing, "{status:?}");
        }
    }

    #[test]
    fn held_stock_for_an_order_not_seen_placed_is_remembered_not_waited_on() {
        assert_eq!(decide(None, SagaStep::StockReserved), Action::RecordStockHeldUnseen);
        assert_eq!(decide(None, SagaStep::Confirmed), Action::Wait);
    }

    #[test]
    fn a_placement_after_its_stock_was_held_authorizes_at_once() {
        assert_eq!(decide(Some(&given(Status::AwaitingPlacement)), SagaStep::Placed), Action::RecordAndAuthorize);
    }

    #[test]
    fn held_stock_remembered_before_the_placement_is_not_held_twice() {
        assert_eq!(decide(Some(&given(Status::AwaitingPlacement)), SagaStep::StockReserved), Action::Nothing);
        assert_eq!(decide(Some(&given(Status::AwaitingPlacement)), SagaStep::Confirmed), Action::Wait);
    }

    #[test]
    fn a_cancellation_after_held_stock_but_before_the_placement_means_no_authorization_later() {
        let held = given(Status::AwaitingPlacement);
        assert_eq!(decide(Some(&held), SagaStep::Cancelled), Action::MarkCancelled);
        assert_eq!(decide(Some(&given(Status::Cancelled)), SagaStep::Placed), Action::Nothing);
    }

    #[test]
    fn a_confirmation_captures_an_authorized_payment_once() {
        assert_eq!(decide(Some(&given(Status::Authorized)), SagaStep::Confirmed), Action::Start(Operation::Capture));
        for status in [Status::Capturing, Status::Captured, Status::CaptureFailed, Status::Refunded] {
            assert_eq!(decide(Some(&given(status)), SagaStep::Confirmed), Action::Nothing, "{status:?}");
        }
        assert_eq!(decide(Some(&given(Status::Authorizing)), SagaStep::Confirmed), Action::Wait);
    }

    #[test]
    fn a_cancellation_compensates_by_what_was_done() {
        let cases = [
            (Status::AwaitingPlacement, Action::MarkCancelled),
            (Status::AwaitingStock, Action::MarkCancelled),
            (Status::Authorizing, Action::RememberCancel),
            (Status::Authorized, Action::Start(Operation::Void)),
            (Status::Capturing, Action::RememberCancel),
            (Status::CaptureFailed, Action::Start(Operation::Void)),
            (Status::Captured, Action::Start(Operation::Refund)),
            (Status::Failed, Action::Nothing),
            (Status::Voiding, Action::Nothing),
            (Status::Voided, Action::Nothing),
            (Status::VoidFailed, Action::Nothing),
            (Status::Refunding, Action::Nothing),
            (Status::Refunded, Action::Nothing),
            (Status::RefundFailed, Action::Nothing),
            (Status::Cancelled, Action::Nothing),
        ];
        for (status, action) in cases {
            assert_eq!(decide(Some(&given(status)), SagaStep::Cancelled), action, "{status:?}");
        }
        assert_eq!(decide(None, SagaStep::Cancelled), Action::RecordCancelledUnseen);
    }

    #[test]
    fn a_cancellation_between_capture_attempts_voids_instead_of_retrying() {
        let waiting = Payment { call_in_flight: false, ..given(Status::Capturing) };
        assert_eq!(decide(Some(&waiting), SagaStep::Cancelled), Action::Start(Operation::Void));
    }

    #[test]
    fn a_second_cancellation_while_one_is_remembered_does_nothing() {
        assert_eq!(decide(Some(&cancelled_while(Status::Authorizing)), SagaStep::Cancelled), Action::Nothing);
    }

    #[test]
    fn an_authorization_settles_as_authorized_or_failed() {
        let authorizing = given(Status::Authorizing);
        let ok = settle(&authorizing, Operation::Authorize, Outcome::Succeeded, 1, MAX).unwrap();
        assert_eq!((ok.status, ok.emit, ok.start), (Status::Authorized, vec![Emit::Authorized], None));

        let declined = Outcome::Declined(FailureReason::InsufficientFunds);
        let refused = settle(&authorizing, Operation::Authorize, declined, 1, MAX).unwrap();
        assert_eq!(
            (refused.status, refused.emit),
            (Status::Failed, vec![Emit::Failed(FailureReason::InsufficientFunds)])
        );

        let broken = settle(&authorizing, Operation::Authorize, Outcome::Failed, 1, MAX).unwrap();
        assert_eq!(broken.emit, vec![Emit::Failed(FailureReason::ProviderError)]);
    }

    #[test]
    fn a_late_authorization_of_a_cancelled_order_is_voided() {
        let late =
            settle(&cancelled_while(Status::Authorizing), Operation::Authorize, Outcome::Succeeded, 1, MAX).unwrap();
        assert_eq!(late.status, Status::Voiding);
        assert_eq!(late.emit, vec![Emit::Authorized]);
        assert_eq!(late.start, Some(Operation::Void));
        let declined = Outcome::Declined(FailureReason::Declined);
        let refused = settle(&cancelled_while(Status::Authorizing), Operation::Authorize, declined, 1, MAX).unwrap();
        assert_eq!((refused.status, refused.start), (Status::Failed, None), "nothing to void");
    }

    #[test]
    fn a_capture_moves_the_money_and_a_cancelled_one_is_refunded() {
        let done = settle(&given(Status::Capturing), Operation::Capture, Outcome::Succeeded, 1, MAX).unwrap();
        assert_eq!(
            (done.status, done.ledger, done.emit),
            (Status::Captured, Some(LedgerMove::Capture), vec![Emit::Captured])
        );
        let cancelled =
            settle(&cancelled_while(Status::Capturing), Operation::Capture, Outcome::Succeeded, 1, MAX).unwrap();
        assert_eq!(cancelled.status, Status::Refunding);
        assert_eq!(cancelled.ledger, Some(LedgerMove::Capture), "the capture happened: it is booked first");
        assert_eq!(cancelled.start, Some(Operation::Refund));
    }

    #[test]
    fn a_failed_capture_is_retried_until_its_attempts_run_out() {
        let capturing = given(Status::Capturing);
        for attempt in 1..MAX {
            let again = settle(&capturing, Operation::Capture, Outcome::Failed, attempt, MAX).unwrap();
            assert_eq!(
                (again.status, again.retry, again.emit.len()),
                (Status::Capturing, true, 0),
                "attempt {attempt}"
            );
        }
        let last = settle(&capturing, Operation::Capture, Outcome::Failed, MAX, MAX).unwrap();
        assert_eq!(last.status, Status::CaptureFailed);
        assert_eq!(last.emit, vec![Emit::CaptureFailed { attempts: MAX }]);
        assert!(last.gave_up && !last.retry);
    }

    #[test]
    fn a_refused_capture_is_given_up_at_once() {
        let refused = Outcome::Declined(FailureReason::Declined);
        let given_up = settle(&given(Status::Capturing), Operation::Capture, refused, 1, MAX).unwrap();
        assert_eq!(given_up.status, Status::CaptureFailed);
        assert!(given_up.gave_up);
    }

    #[test]
    fn a_failed_capture_of_a_cancelled_order_voids_without_retrying() {
        let void = settle(&cancelled_while(Status::Capturing), Operation::Capture, Outcome::Failed, 1, MAX).unwrap();
        assert_eq!(
            (void.status, void.start, void.retry, void.gave_up),
            (Status::Voiding, Some(Operation::Void), false, false)
        );
    }

    #[test]
    fn compensations_end_in_their_event_or_are_tried_again() {
        let voided = settle(&given(Status::Voiding), Operation::Void, Outcome::Succeeded, 1, MAX).unwrap();
        assert_eq!((voided.status, voided.emit), (Status::Voided, vec![Emit::Voided]));
        let refunded = settle(&given(Status::Refunding), Operation::Refund, Outcome::Succeeded, 1, MAX).unwrap();
        assert_eq!((refunded.status, refunded.ledger), (Status::Refunded, Some(LedgerMove::Refund)));
        for (status, operation) in [(Status::Voiding, Operation::Void), (Status::Refunding, Operation::Refund)] {
            let again = settle(&given(status), operation, Outcome::Failed, 7, MAX).unwrap();
            assert_eq!(
                (again.status, again.retry, again.gave_up, again.compensation_failed),
                (status, true, false, false),
                "{operation:?}"
            );
        }
    }

    #[test]
    fn a_compensation_refused_for_good_ends_in_its_failed_status_and_is_not_retried() {
        let refused = Outcome::Declined(FailureReason::Declined);
        for (status, operation, failed) in [
            (Status::Voiding, Operation::Void, Status::VoidFailed),
            (Status::Refunding, Operation::Refund, Status::RefundFailed),
        ] {
            let given_up = settle(&given(status), operation, refused, 1, MAX).unwrap();
            assert_eq!(given_up.status, failed, "{operation:?}");
            assert!(given_up.compensation_failed && !given_up.retry && !given_up.gave_up, "{operation:?}");
            assert_eq!((given_up.emit, given_up.start, given_up.ledger), (vec![], None, None), "{operation:?}");
        }
    }

    #[test]
    fn a_failed_compensation_is_final_for_later_events() {
        for status in [Status::VoidFailed, Status::RefundFailed] {
            for step in [SagaStep::Placed, SagaStep::StockReserved, SagaStep::Confirmed, SagaStep::Cancelled] {
                assert_eq!(decide(Some(&given(status)), step), Action::Nothing, "{status:?} {step:?}");
            }
            assert!(!status.is_underway());
        }
    }

    #[test]
    fn an_outcome_the_payment_is_not_waiting_for_changes_nothing() {
        assert_eq!(settle(&given(Status::Authorized), Operation::Authorize, Outcome::Succeeded, 1, MAX), None);
        assert_eq!(settle(&given(Status::Voided), Operation::Capture, Outcome::Succeeded, 1, MAX), None);
        assert_eq!(settle(&given(Status::Capturing), Operation::Void, Outcome::Succeeded, 1, MAX), None);
    }

    #[test]
    fn retries_back_off_linearly_up_to_a_cap() {
        let backoff = Duration::from_millis(200);
        assert_eq!(retry_delay(backoff, 1), Duration::from_millis(200));
        assert_eq!(retry_delay(backoff, 3), Duration::from_millis(600));
        assert_eq!(retry_delay(backoff, 10_000), MAX_RETRY_DELAY);
    }

    #[test]
    fn statuses_and_operations_read_back_as_written() {
        for status in [
            Status::AwaitingPlacement,
            Status::AwaitingStock,
            Status::Authorizing,
            Status::Authorized,
            Status::Failed,
            Status::Capturing,
            Status::Captured,
            Status::CaptureFailed,
            Status::Voiding,
            Status::Voided,
            Status::VoidFailed,
            Status::Refunding,
            Status::Refunded,
            Status::RefundFailed,
            Status::Cancelled,
        ] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        for operation in [Operation::Authorize, Operation::Capture, Operation::Void, Operation::Refund] {
            assert_eq!(Operation::parse(operation.as_str()), Some(operation));
            assert_eq!(serde_json::to_value(operation).unwrap(), operation.as_str());
        }
    }
}
