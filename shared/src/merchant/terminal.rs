//! Merchant terminals (`TerminalsTable`, partition `id`): a merchant's signers other than its own
//! key, each with a key of its own (KMS-wrapped, shown once) that signs its calls. A terminal is of
//! one kind, fixed at registration:
//! - a till (`till`) presents payers' offline codes (`OfflinePaymentsFunction`);
//! - a transfer signer (`transfer`) signs the merchant's calls to the transfer side of signed
//!   transfer instructions (capability 8). Its key's KMS owner is `transfer-signer/<id>`, which only
//!   `TransferFunction` may unwrap: not the transfer platform, nor any function that can unwrap the
//!   merchant's own key, so none of them can speak to the transfer side as the merchant.
//!
//! `TerminalDirectory::signer` finds and checks the terminal of a kind that signed a request.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Update};

use serde::{Deserialize, Serialize};

use super::MerchantStatus;
use crate::Problem;
use crate::crypto::SignatureError;
use crate::dynamo::{Item, StoreError, Write, get_b, get_n, get_s, n, s};
use crate::keys::{KeyRing, KeyService, PreviousKey, StoredKey};
use crate::nonce::NonceStore;
use crate::party_keys::KeyedParty;
use crate::problem::catalogue;
use crate::signed;

/// Rule: the terminal is active (not suspended).
pub const TERMINAL_ACTIVE: &str = "terminal.active";

/// What a terminal signs for: a till presents payers' offline codes, a transfer signer the
/// merchant's calls to the transfer side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TerminalKind {
    Till,
    Transfer,
}

impl TerminalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalKind::Till => "till",
            TerminalKind::Transfer => "transfer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    pub id: String,
    pub merchant_id: String,
    pub kind: TerminalKind,
    pub key_id: String,
    pub key_ciphertext: Vec<u8>,
    /// The key before the last rotation, while it is still honoured.
    pub previous_key: Option<PreviousKey>,
    pub status: MerchantStatus,
    pub created_at: i64,
}

impl Terminal {
    /// The owner string KMS binds a `kind` terminal's key to (its encryption context): what IAM
    /// tells apart, so that only the functions a kind serves may unwrap its keys.
    pub fn key_owner(kind: TerminalKind, id: &str) -> String {
        match kind {
            TerminalKind::Till => format!("terminal/{id}"),
            TerminalKind::Transfer => format!("transfer-signer/{id}"),
        }
    }

    pub fn view(&self) -> TerminalView {
        TerminalView {
            id: self.id.clone(),
            merchant_id: self.merchant_id.clone(),
            kind: self.kind,
            key_id: self.key_id.clone(),
            status: self.status,
            created_at: self.created_at,
        }
    }
}

/// What an admin sees of a terminal: everything but its key.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct TerminalView {
    pub id: String,
    pub merchant_id: String,
    pub kind: TerminalKind,
    /// Names its current key in signatures.
    pub key_id: String,
    pub status: MerchantStatus,
    pub created_at: i64,
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
        Terminal::key_owner(self.kind, &self.id)
    }

    fn audit_resource(&self) -> String {
        format!("merchant/{}", self.merchant_id)
    }

    fn location(&self) -> String {
        format!("/merchants/{}/terminals/{}", self.merchant_id, self.id)
    }
}

pub fn terminal_inactive(id: &str) -> Problem {
    Problem::new(catalogue::TERMINAL_INACTIVE, format!("terminal {id} is suspended"))
}

/// The terminals with their working keys: which one signed a request.
pub struct TerminalDirectory {
    store: TerminalStore,
    ring: KeyRing,
}

impl TerminalDirectory {
    pub fn new(store: TerminalStore, keys: KeyService) -> Self {
        TerminalDirectory { store, ring: KeyRing::new(keys) }
    }

    pub fn store(&self) -> &TerminalStore {
        &self.store
    }

    /// The active `kind` terminal whose key signed `request` (its current key, or the previous one
    /// while a rotation's grace lasts): signature, time window, single-use nonce. A terminal of
    /// another kind is as unknown as a missing one, and its key is never unwrapped here.
    pub async fn signer(
        &self,
        request: &lambda_http::Request,
        nonces: &NonceStore,
        now: i64,
        kind: TerminalKind,
    ) -> Result<Terminal, Problem> {
        let signature = signed::signature(request)?;
        let id = signature.key_id.split_once('.').map(|(t, _)| t).ok_or(SignatureError::UnknownKey)?;
        let terminal = self.store.get(id).await?.filter(|t| t.kind == kind).ok_or(SignatureError::UnknownKey)?;
        let keys = self
            .ring
            .named_keys(&signature.key_id, &terminal.kms_owner(), &terminal.stored_key(), now)
            .await?
            .ok_or(SignatureError::UnknownKey)?;
        signed::check(request, &signature, &keys.signing, nonces, now).await?;
        if terminal.status != MerchantStatus::Active {
            return Err(terminal_inactive(&terminal.id));
        }
        Ok(terminal)
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
            .item("kind", s(terminal.kind.as_str()))
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
        // Terminals registered before kinds existed are tills.
        kind: match item.get("kind").map(|_| get_s(item, "kind")).transpose()? {
            None | Some("till") => TerminalKind::Till,
            Some("transfer") => TerminalKind::Transfer,
            Some(_) => return Err(corrupt("kind")),
        },
        key_id: get_s(item, "key_id")?.to_owned(),
        key_ciphertext: get_b(item, "key_ciphertext")?,
        previous_key: PreviousKey::from_item(item)?,
        status: MerchantStatus::parse(get_s(item, "status")?).ok_or_else(|| corrupt("status"))?,
        created_at: get_n(item, "created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: Option<&str>) -> Item {
        let mut item = Item::from([
            ("id".to_owned(), s("t_1")),
            ("merchant_id".to_owned(), s("m_1")),
            ("key_id".to_owned(), s("t_1.k1")),
            ("key_ciphertext".to_owned(), AttributeValue::B(Blob::new(vec![1, 2, 3]))),
            ("status".to_owned(), s("active")),
            ("created_at".to_owned(), n(1)),
        ]);
        if let Some(kind) = kind {
            item.insert("kind".to_owned(), s(kind));
        }
        item
    }

    #[test]
    fn each_kind_has_its_own_kms_owner_and_terminals_before_kinds_are_tills() {
        let till = terminal_from_item(&item(None)).expect("a terminal");
        assert_eq!((till.kind, till.kms_owner().as_str()), (TerminalKind::Till, "terminal/t_1"));
        let signer = terminal_from_item(&item(Some("transfer"))).expect("a terminal");
        assert_eq!((signer.kind, signer.kms_owner().as_str()), (TerminalKind::Transfer, "transfer-signer/t_1"));
        assert!(terminal_from_item(&item(Some("kiosk"))).is_err(), "an unknown kind is corrupt, not a till");
        assert_eq!(serde_json::to_value(signer.view()).expect("a view")["kind"], "transfer");
    }
}
