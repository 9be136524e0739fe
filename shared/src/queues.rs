//! What each queue carries: one enum per queue, tagged by `kind`, shared by the code that puts a
//! message in the outbox and the function that consumes it (through `crate::batch`). A body that does not parse names what
//! is wrong (an unknown kind, a missing field) instead of "did not match any variant".
//!
//! The `kind` strings and field names are the wire format: messages already in the queues, the
//! outbox table and the dead-letter queues must still parse, so they do not change (the tests below
//! hold bodies as they were written before these types existed).

use serde::{Deserialize, Serialize};

use crate::batch::QueueMessage;
use crate::conversation::NewMessage;
use crate::money::Money;
use crate::outbox::OutboxMessage;

/// What the notifications queue carries (consumer: `crate::notifier`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum NotificationMessage {
    /// Tell the merchant (signed webhook) and the user (conversation) how the order ended.
    #[serde(rename = "order.settled")]
    OrderSettled { id: String, order: serde_json::Value },
    /// Release the hold if the merchant has not decided by the order's expiry; carry out the
    /// merchant's decision recorded on the order (whenever it comes), never release a confirm.
    #[serde(rename = "order.expire")]
    OrderExpire { id: String, order_id: String },
    /// Tell the user (conversation) that the merchant refunded part or all of an order.
    #[serde(rename = "order.refunded")]
    OrderRefunded { id: String, order: serde_json::Value, amount: Money },
    /// Post a mini-app request's outcome in the user's conversation with the app (if the request's
    /// own call did not), then tell the app's server (signed).
    #[serde(rename = "miniapp.outcome")]
    MiniAppOutcome { id: String, request_id: String },
    /// Tell the merchant (signed webhook) that an offline payment waiting for funds expired.
    #[serde(rename = "offline.expired")]
    OfflineExpired { id: String, payment_id: String },
    /// Post the payer's top-up link in their conversation with the platform. The message is the
    /// one place the link's token is kept, until the notifier posts it.
    #[serde(rename = "offline.waiting_for_funds")]
    OfflineWaitingForFunds { id: String, user: String, message: NewMessage, at: i64 },
    /// Tell the provider (signed webhook) and the payer (conversation) that a signed transfer
    /// instruction's operation reached `state` (completed, held, posted, voided, released).
    #[serde(rename = "transfer.changed")]
    TransferChanged { id: String, operation_id: String, state: String },
    /// Release a two-phase operation's hold if nobody settled it by its expiry.
    #[serde(rename = "transfer.release")]
    TransferRelease { id: String, operation_id: String },
    /// Tell the payer (conversation) that the provider refunded part or all of an operation.
    #[serde(rename = "transfer.refunded")]
    TransferRefunded { id: String, operation_id: String, amount: Money },
    /// Tell the partner (signed webhook) that `user`'s link `link_id` was made or ended (`event`:
    /// `link.created`, `link.ended`), with what it may now see of it.
    #[serde(rename = "link.changed")]
    LinkChanged { id: String, user: String, link_id: String, event: String },
    /// Tell the partner (signed webhook) that `user`'s instrument `instrument_id`, linked to it by
    /// `link_id`, changed (replaced, or its card's expiry passed): the same token, its new display data.
    #[serde(rename = "instrument.updated")]
    InstrumentUpdated { id: String, user: String, link_id: String, instrument_id: String },
}

impl QueueMessage for NotificationMessage {
    const WHAT: &'static str = "notification";

    fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }

    fn id(&self) -> &str {
        match self {
            NotificationMessage::OrderSettled { id, .. }
            | NotificationMessage::OrderExpire { id, .. }
            | NotificationMessage::OrderRefunded { id, .. }
            | NotificationMessage::MiniAppOutcome { id, .. }
            | NotificationMessage::OfflineExpired { id, .. }
            | NotificationMessage::OfflineWaitingForFunds { id, .. }
            | NotificationMessage::TransferChanged { id, .. }
            | NotificationMessage::TransferRelease { id, .. }
            | NotificationMessage::TransferRefunded { id, .. }
            | NotificationMessage::LinkChanged { id, .. }
            | NotificationMessage::InstrumentUpdated { id, .. } => id,
        }
    }
}

impl NotificationMessage {
    /// The message on its way to `queue_url`, under its own id.
    pub fn outbox(&self, queue_url: &str, delay_seconds: i32) -> Result<OutboxMessage, serde_json::Error> {
        outbox_message(self.id(), self, queue_url, delay_seconds)
    }
}

/// What the settlement queue carries (consumer: `crate::offline::settlement`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum SettlementMessage {
    /// Settle an offline payment, or expire it (`expire_at`) if its link was never paid.
    #[serde(rename = "offline.settle")]
    Settle(SettlementJob),
    /// Settle the outcome of a top-up's bank debit that its page did not settle.
    #[serde(rename = "topup.debit")]
    DebitCheck { id: String, topup: String },
}

/// The settlement queue's message about one payment: settle it, or (with `expire_at`) expire it
/// if it still waits for funds at that time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementJob {
    pub id: String,
    pub payment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<i64>,
    /// With `expire_at`: the link (its table key) whose end this is; a payment that has a newer
    /// link since is that link's to expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl QueueMessage for SettlementMessage {
    const WHAT: &'static str = "settlement message";

    /// Bodies written before messages carried a `kind` are settlement jobs.
    fn parse(body: &str) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(body)?;
        if value.get("kind").is_none() {
            return serde_json::from_value(value).map(SettlementMessage::Settle);
        }
        serde_json::from_value(value)
    }

    fn id(&self) -> &str {
        match self {
            SettlementMessage::Settle(job) => &job.id,
            SettlementMessage::DebitCheck { id, .. } => id,
        }
    }
}

impl SettlementMessage {
    /// The message on its way to `queue_url`, under its own id.
    pub fn outbox(&self, queue_url: &str, delay_seconds: i32) -> Result<OutboxMessage, serde_json::Error> {
        outbox_message(self.id(), self, queue_url, delay_seconds)
    }
}

/// What the cash queue carries (consumer: `crate::instrument::cash::checks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum CashMessage {
    /// Settle the outcome of `user`'s cash movement `movement` that its request did not settle:
    /// ask the bank again (a cash-in's debit, by its reference) or for its status (a cash-out's payout).
    #[serde(rename = "cash.check")]
    Check { id: String, user: String, movement: String },
}

impl QueueMessage for CashMessage {
    const WHAT: &'static str = "cash message";

    fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }

    fn id(&self) -> &str {
        match self {
            CashMessage::Check { id, .. } => id,
        }
    }
}

impl CashMessage {
    /// The message on its way to `queue_url`, under its own id.
    pub fn outbox(&self, queue_url: &str, delay_seconds: i32) -> Result<OutboxMessage, serde_json::Error> {
        outbox_message(self.id(), self, queue_url, delay_seconds)
    }
}

fn outbox_message(
    id: &str,
    message: &impl Serialize,
    queue_url: &str,
    delay_seconds: i32,
) -> Result<OutboxMessage, serde_json::Error> {
    Ok(OutboxMessage {
        id: id.to_owned(),
        queue_url: queue_url.to_owned(),
        body: serde_json::to_string(message)?,
        delay_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind's body exactly as the code before these types wrote it (`OrderEvent`,
    /// `MiniAppEvent`, `OfflineEvent`, `SettlementMessage`), and one from before settlement
    /// messages carried a kind: each parses, and is written again byte for byte.
    const NOTIFICATIONS: &[&str] = &[
        r#"{"kind":"order.settled","id":"o_1/settled","order":{"amount":"12.50","currency":"USD","id":"o_1","state":"paid"}}"#,
        r#"{"kind":"order.expire","id":"o_1/expire","order_id":"o_1"}"#,
        r#"{"kind":"order.refunded","id":"o_1/refund/k","order":{"amount":"12.50","currency":"USD","id":"o_1","state":"paid"},"amount":{"amount":"2.50","currency":"USD"}}"#,
        r#"{"kind":"miniapp.outcome","id":"r_1/outcome","request_id":"r_1"}"#,
        r#"{"kind":"offline.expired","id":"p_1/expired","payment_id":"p_1"}"#,
        r#"{"kind":"offline.waiting_for_funds","id":"p_1/waiting/k","user":"alice","message":{"id":"p_1/waiting/k","kind":"offline.waiting_for_funds","text":"A payment is waiting","data":{"link":"https://x/topup/t"}},"at":1700000000}"#,
        r#"{"kind":"transfer.changed","id":"ti_1/completed","operation_id":"ti_1","state":"completed"}"#,
        r#"{"kind":"transfer.release","id":"ti_1/release","operation_id":"ti_1"}"#,
        r#"{"kind":"transfer.refunded","id":"ti_1/refund/k","operation_id":"ti_1","amount":{"amount":"2.50","currency":"USD"}}"#,
    ];
    const SETTLEMENTS: &[&str] = &[
        r#"{"kind":"offline.settle","id":"p_1/settle","payment_id":"p_1"}"#,
        r#"{"kind":"offline.settle","id":"p_1/expire/k","payment_id":"p_1","expire_at":1700000600,"link":"k"}"#,
        r#"{"kind":"topup.debit","id":"topup-debit/k/0","topup":"k"}"#,
    ];

    #[test]
    fn todays_notification_bodies_parse_and_are_written_the_same() {
        let ids = [
            "o_1/settled",
            "o_1/expire",
            "o_1/refund/k",
            "r_1/outcome",
            "p_1/expired",
            "p_1/waiting/k",
            "ti_1/completed",
            "ti_1/release",
            "ti_1/refund/k",
        ];
        for (body, id) in NOTIFICATIONS.iter().zip(ids) {
            let message = NotificationMessage::parse(body).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(message.id(), id);
            assert_eq!(serde_json::to_string(&message).unwrap(), *body);
            let outbox = message.outbox("https://sqs/1/notify", 0).unwrap();
            assert_eq!((outbox.id.as_str(), outbox.body.as_str()), (id, *body));
        }
        assert_eq!(
            NotificationMessage::parse(NOTIFICATIONS[4]).unwrap(),
            NotificationMessage::OfflineExpired { id: "p_1/expired".into(), payment_id: "p_1".into() }
        );
    }

    #[test]
    fn todays_settlement_bodies_and_old_untagged_jobs_parse() {
        for body in SETTLEMENTS {
            let message = SettlementMessage::parse(body).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(serde_json::to_string(&message).unwrap(), *body);
        }
        let job = SettlementJob { id: "p_1/settle".into(), payment_id: "p_1".into(), expire_at: None, link: None };
        // As written before settlement messages carried a kind (and as events/settlement/job.json).
        let old = r#"{"id":"p_1/settle","payment_id":"p_1"}"#;
        assert_eq!(SettlementMessage::parse(old).unwrap(), SettlementMessage::Settle(job.clone()));
        assert_eq!(SettlementMessage::parse(SETTLEMENTS[0]).unwrap(), SettlementMessage::Settle(job));
        assert_eq!(
            SettlementMessage::parse(SETTLEMENTS[2]).unwrap(),
            SettlementMessage::DebitCheck { id: "topup-debit/k/0".into(), topup: "k".into() }
        );
    }

    #[test]
    fn cash_checks_are_written_and_read_back_the_same() {
        let body = r#"{"kind":"cash.check","id":"cash-in/ci_1/check","user":"alice","movement":"ci_1"}"#;
        let message = CashMessage::parse(body).unwrap();
        assert_eq!(
            message,
            CashMessage::Check { id: "cash-in/ci_1/check".into(), user: "alice".into(), movement: "ci_1".into() }
        );
        assert_eq!(serde_json::to_string(&message).unwrap(), body);
        assert!(CashMessage::parse(r#"{"kind":"cash.check","id":"x"}"#).unwrap_err().to_string().contains("user"));
    }

    #[test]
    fn a_bad_body_says_what_is_wrong() {
        let unknown = NotificationMessage::parse(r#"{"kind":"order.shipped","id":"x"}"#).unwrap_err().to_string();
        assert!(unknown.contains("order.shipped"), "{unknown}");
        let unknown = SettlementMessage::parse(r#"{"kind":"offline.unknown","id":"x"}"#).unwrap_err().to_string();
        assert!(unknown.contains("offline.unknown"), "{unknown}");
        let missing = NotificationMessage::parse(r#"{"kind":"order.expire","id":"x"}"#).unwrap_err().to_string();
        assert!(missing.contains("order_id"), "{missing}");
        let untagged = NotificationMessage::parse(r#"{"id":"x","order_id":"o_1"}"#).unwrap_err().to_string();
        assert!(untagged.contains("kind"), "{untagged}");
        assert!(SettlementMessage::parse("not json").is_err());
    }
}
