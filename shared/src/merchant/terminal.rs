//! Merchant terminals (`TerminalsTable`, partition `id`): the devices at a till that present
//! payers' offline codes. Each has its own key (KMS-wrapped, shown once) and signs its calls.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Update};

use super::MerchantStatus;
use crate::Problem;
use crate::dynamo::{Item, StoreError, Write, get_n, get_s, n, s};
use crate::keys::{PreviousKey, StoredKey};
use crate::party_keys::KeyedParty;
use crate::problem::catalogue;

/// Rule: the terminal is active (not suspended).
pub const TERMINAL_ACTIVE: &str = "terminal.active";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    pub id: String,
    pub merchant_id: String,
    pub key_id: String,
    pub key_ciphertext: Vec<u8>,
    /// The key before the last rotation, while it is still honoured.
    pub previous_key: Option<PreviousKey>,
    pub status: MerchantStatus,
    pub created_at: i64,
}

impl Terminal {
    /// The owner string KMS binds the key to (its encryption context).
    pub fn key_owner(id: &str) -> String {
        format!("terminal/{id}")
    }

    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "merchant_id": self.merchant_id,
            "key_id": self.key_id,
            "status": self.status.as_str(),
            "created_at": self.created_at,
        })
    }
}

/// A terminal's key actions are logged under its merchant.
impl KeyedParty for Terminal {
    const ROTATE_ACTION: &'static str = "terminal.rotate_key";
    const END_GRACE_ACTION: &'static str = "terminal.end_key_grace";

    fn id(&self) -> &str {
        &self.id
    }

    fn stored_key(&self) -> StoredKey<'_> {
        StoredKey { key_id: &self.key_id, ciphertext: &self.key_ciphertext, previous: self.previous_key.as_ref() }
    }

    fn kms_owner(&self) -> String {
        Terminal::key_owner(&self.id)
    }

    fn audit_resource(&self) -> String {
        format!("merchant/{}", self.merchant_id)
    }

    fn location(&self) -> String {
        format!("/merchants/{}/terminals/{}", self.merchant_id, self.id)
    }
}

pub fn unknown_terminal(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_TERMINAL, format!("no terminal {id:?}"))
}

#[derive(Clone, Debug)]
pub struct TerminalStore {
    client: Client,
    table: String,
}

impl TerminalStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        TerminalStore { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub async fn get(&self, id: &str) -> Result<Option<Terminal>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        output.item().map(terminal_from_item).transpose()
    }

    pub fn create_item(&self, terminal: &Terminal) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&terminal.id))
            .item("merchant_id", s(&terminal.merchant_id))
            .item("key_id", s(&terminal.key_id))
            .item("key_ciphertext", AttributeValue::B(Blob::new(terminal.key_ciphertext.clone())))
            .item("status", s(terminal.status.as_str()))
            .item("created_at", n(terminal.created_at))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put("terminal.new", put))
    }

    /// A condition for another transaction: the terminal is still active.
    pub fn active_check(&self, id: &str) -> Result<Write, StoreError> {
        Ok(Write::check(TERMINAL_ACTIVE, super::store::active_condition(&self.table, id)?))
    }

    /// The write that sets a terminal's status, only if it exists and is `merchant_id`'s.
    pub fn status_item(&self, id: &str, merchant_id: &str, status: MerchantStatus) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET #status = :status")
            .condition_expression("merchant_id = :merchant")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":merchant", s(merchant_id))
            .build()?;
        Ok(Write::update("terminal.of_merchant", update))
    }
}

fn terminal_from_item(item: &Item) -> Result<Terminal, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("stored terminal is corrupt: {what}"));
    Ok(Terminal {
        id: get_s(item, "id")?.to_owned(),
        merchant_id: get_s(item, "merchant_id")?.to_owned(),
        key_id: get_s(item, "key_id")?.to_owned(),
        key_ciphertext: match item.get("key_ciphertext") {
            Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
            _ => return Err(corrupt("key_ciphertext")),
        },
        previous_key: PreviousKey::from_item(item)?,
        status: MerchantStatus::parse(get_s(item, "status")?).ok_or_else(|| corrupt("status"))?,
        created_at: get_n(item, "created_at")?,
    })
}
