//! Each user's record of security events (`SecurityEventsTable`, partition `user`, sort `id`): what
//! happened to or in the name of their account that they should see (a refused transfer
//! instruction, a new device, a partner link, a card added, the payment PIN changed). The home
//! shows each for a week: `SecurityEvents` writes the event and its home element together, in the
//! source's transaction. The audit log keeps the operators' side of the same event.
//!
//! An event's id derives from its source (the request that caused it), and writing it again writes
//! the same item: a retried request never shows the user one event twice.

use aws_sdk_dynamodb::types::Put;
use serde_json::{Value, json};

use crate::attention::{AttentionStore, Class, Element};
use crate::aws::{self, MissingEnv};
use crate::crypto::sha256_hex;
use crate::dynamo::{Item, StoreError, Write, n, s};

/// How long a security event is shown on its user's home.
pub const SHOWN_SECONDS: i64 = 7 * 86_400;

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityEvent {
    pub user: String,
    /// Derived from the source, e.g. `transfer-refused/<request>`.
    pub id: String,
    /// What happened, e.g. `transfer.refused`.
    pub kind: &'static str,
    pub at: i64,
    /// What the user (and support) need to tell what happened: never a secret.
    pub detail: Value,
}

impl SecurityEvent {
    /// The event as a transaction item, to commit with its source.
    pub fn put_item(&self, table: &str) -> Result<Write, StoreError> {
        let item = Item::from([
            ("user".to_owned(), s(&self.user)),
            ("id".to_owned(), s(&self.id)),
            ("kind".to_owned(), s(self.kind)),
            ("at".to_owned(), n(self.at)),
            ("detail".to_owned(), s(self.detail.to_string())),
        ]);
        Ok(Write::put("security_event.written", Put::builder().table_name(table).set_item(Some(item)).build()?))
    }
}

impl SecurityEvent {
    /// The event as its user's home shows it, for a week, undismissable (a stolen token must not
    /// hide its own traces): `security:<hash of the event's id>`, so an event written again is the
    /// same element; refusals of one kind are one element, the latest (`security:<kind>`), so no
    /// number of refused requests, the user's or others', can bury the other events.
    pub fn element(&self) -> Element {
        let reason = match self.kind {
            "transfer.refused" => "a transfer instruction in your name was refused",
            "payment_session.refused" => "a payment session in your name was refused",
            "device.enrolled" => "a new device can pay for you offline",
            "device.revoked" => "a device can no longer pay for you offline",
            "link.created" => "a partner account was linked to yours",
            "link.ended" => "a partner account was unlinked",
            "instrument.added" => "a card or account was added",
            "instrument.removed" => "a card or account was removed",
            "instrument.replaced" => "a card or account was replaced",
            "payment_pin.set" => "your payment PIN was set",
            "payment_pin.changed" => "your payment PIN was changed",
            "payment_pin.reset" => "your payment PIN was reset by support",
            _ => "something changed in your account's security",
        };
        Element {
            id: match self.kind.ends_with(".refused") {
                true => format!("security:{}", self.kind),
                false => format!("security:{}", &sha256_hex(self.id.as_bytes())[..24]),
            },
            kind: format!("security.{}", self.kind),
            class: Class::Security,
            reason: format!("{reason}: if it was not you, contact support"),
            data: json!({"kind": self.kind, "at": self.at, "detail": self.detail}),
            // What to do is the user's to judge: the flow to support is the client's own.
            actions: vec![],
            deadline: None,
            expires_at: Some(self.at + SHOWN_SECONDS),
            at: self.at,
            critical: true,
            explain: json!({"rule": "a security event of the account, shown for a week", "inputs": {"kind": self.kind}}),
        }
    }
}

/// Where security events are written: the user's record (`SecurityEventsTable`) and, with it in
/// the same transaction, their home (`HomeTable`).
#[derive(Clone, Debug)]
pub struct SecurityEvents {
    table: String,
    home: AttentionStore,
}

impl SecurityEvents {
    /// Over `SECURITY_EVENTS_TABLE` and `HOME_TABLE`.
    pub fn from_env(dynamodb: &aws_sdk_dynamodb::Client) -> Result<Self, MissingEnv> {
        Ok(SecurityEvents {
            table: aws::env("SECURITY_EVENTS_TABLE")?,
            home: AttentionStore::new(dynamodb.clone(), aws::env("HOME_TABLE")?),
        })
    }

    /// The writes that record `event`, to commit with its source.
    pub fn items(&self, event: &SecurityEvent) -> Result<Vec<Write>, StoreError> {
        Ok(vec![event.put_item(&self.table)?, self.home.put_item(&event.user, &event.element())?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_dismissable_security_element_for_a_week() {
        let event = SecurityEvent {
            user: "u".into(),
            id: "device-enrolled/d_1".into(),
            kind: "device.enrolled",
            at: 100,
            detail: json!({"device_id": "d_1"}),
        };
        let element = event.element();
        // Derived from the event's id: written again (a retried request), the same element.
        assert_eq!(element.id, format!("security:{}", &sha256_hex(b"device-enrolled/d_1")[..24]));
        assert_eq!(
            (element.class, element.critical, element.expires_at),
            (Class::Security, true, Some(100 + SHOWN_SECONDS))
        );
        assert_eq!(element.kind, "security.device.enrolled");
        assert!(element.reason.starts_with("a new device"), "{}", element.reason);
        let other = SecurityEvent { id: "device-enrolled/d_2".into(), ..event.clone() }.element();
        assert_ne!(other.id, element.id);
        // Every refusal of a kind is one element: refused requests cannot bury the other events.
        let refused = |id: &str| SecurityEvent { id: id.into(), kind: "transfer.refused", ..event.clone() }.element();
        assert_eq!(refused("transfer-refused/a").id, refused("transfer-presented/x/ti_1").id);
        assert_eq!(refused("transfer-refused/a").id, "security:transfer.refused");
    }
}
