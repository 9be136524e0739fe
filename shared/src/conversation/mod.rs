//! Conversations (docs/design.md, "Conversations"): every message to a user is a message in the
//! conversation between the user and a counterparty (a merchant, a mini-app, the platform),
//! ordered, paginated, with unread state. Every capability writes here; none keeps an inbox of its
//! own.

pub mod api;
pub mod store;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who the user talks with: `merchant:<id>`, `miniapp:<id>` or `platform`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Counterparty(String);

impl Counterparty {
    pub fn merchant(id: &str) -> Self {
        Counterparty(format!("merchant:{id}"))
    }

    pub fn mini_app(id: &str) -> Self {
        Counterparty(format!("miniapp:{id}"))
    }

    pub fn platform() -> Self {
        Counterparty("platform".into())
    }

    pub fn parse(text: &str) -> Option<Self> {
        // The id rule, less ':' so that the text splits one way only.
        let valid_id = |id: &str| crate::ids::is_valid(id) && !id.contains(':');
        match text.split_once(':') {
            Some(("merchant" | "miniapp", id)) if valid_id(id) => Some(Counterparty(text.to_owned())),
            None if text == "platform" => Some(Counterparty(text.to_owned())),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message as it is posted: `id` makes posting idempotent (the same id posts once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    pub id: String,
    /// What it reports, e.g. `purchase.paid`.
    pub kind: String,
    pub text: String,
    /// Structured details a client can render (order id, amount, links).
    pub data: Value,
}

impl NewMessage {
    /// The message as the conversation keeps it, once posted at `sequence`.
    pub fn posted(self, sequence: u64, at: i64) -> Message {
        Message { sequence, id: self.id, kind: self.kind, text: self.text, data: self.data, at }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Message {
    pub sequence: u64,
    pub id: String,
    pub kind: String,
    pub text: String,
    pub data: Value,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Summary {
    pub counterparty: Counterparty,
    pub last_sequence: u64,
    pub read_up_to: u64,
    pub unread: u64,
    pub last_text: String,
    pub last_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counterparties() {
        assert_eq!(Counterparty::parse("merchant:m_1"), Some(Counterparty::merchant("m_1")));
        assert_eq!(Counterparty::parse("platform"), Some(Counterparty::platform()));
        for bad in ["", "merchant:", "bank:x", "merchant:a b", "platform:x", "merchant:m:1"] {
            assert_eq!(Counterparty::parse(bad), None, "{bad}");
        }
    }
}
