//! Partner platforms (capability 9): the platforms ("B") a user links their instruments to. Each
//! is registered by an admin with a name, the https callback URL we send it webhooks at, and the
//! merchant account its charges are paid into (in that merchant's currency); it has a key of its
//! own (KMS-wrapped, shown once, rotated like every party's: `crate::party_keys`) that signs its
//! calls and our webhooks to it (`PartnersTable`, partition `id`).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Update};
use serde::{Deserialize, Serialize};

use crate::Problem;
use crate::dynamo::{Item, StoreError, Write, get_b, get_n, get_s, n, s};
use crate::http::partner_url;
use crate::keys::{PreviousKey, StoredKey};
use crate::merchant::MerchantStatus;
use crate::money::Currency;
use crate::party_keys::KeyedParty;
use crate::problem::catalogue;

/// Rule: the partner is active.
pub const PARTNER_ACTIVE: &str = "partner.active";

/// The most characters a partner's name may have.
pub const MAX_NAME_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    pub id: String,
    pub name: String,
    /// Where our webhooks go (`<callback_url>/webhooks`).
    pub callback_url: String,
    /// The merchant whose account the partner's charges are paid into, and its currency.
    pub merchant_id: String,
    pub currency: Currency,
    /// Active or suspended, as a merchant's.
    pub status: MerchantStatus,
    pub key_id: String,
    pub key_ciphertext: Vec<u8>,
    pub previous_key: Option<PreviousKey>,
    pub created_at: i64,
}

impl Partner {
    /// Whom KMS binds a partner's key to.
    pub fn key_owner(id: &str) -> String {
        format!("partner/{id}")
    }

    pub fn view(&self) -> PartnerView {
        PartnerView {
            id: self.id.clone(),
            name: self.name.clone(),
            callback_url: self.callback_url.clone(),
            merchant_id: self.merchant_id.clone(),
            currency: self.currency.code(),
            status: self.status,
            key_id: self.key_id.clone(),
            created_at: self.created_at,
        }
    }
}

/// What an admin reads of a partner platform: never its key.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PartnerView {
    pub id: String,
    pub name: String,
    /// Where our webhooks go (`<callback_url>/webhooks`).
    pub callback_url: String,
    /// The merchant whose account the partner's charges are paid into.
    pub merchant_id: String,
    /// That merchant's currency (ISO 4217), the partner's charges'.
    pub currency: &'static str,
    pub status: MerchantStatus,
    /// Names its current key in signatures.
    pub key_id: String,
    pub created_at: i64,
}

impl KeyedParty for Partner {
    const ROTATE_ACTION: &'static str = "partner.rotate_key";
    const END_GRACE_ACTION: &'static str = "partner.end_key_grace";

    fn id(&self) -> &str {
        &self.id
    }

    fn stored_key(&self) -> StoredKey<'_> {
        StoredKey { key_id: &self.key_id, ciphertext: &self.key_ciphertext, previous: self.previous_key.as_ref() }
    }

    fn kms_owner(&self) -> String {
        Partner::key_owner(&self.id)
    }

    fn audit_resource(&self) -> String {
        format!("partner/{}", self.id)
    }

    fn location(&self) -> String {
        format!("/partners/{}", self.id)
    }
}

/// A registration's body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(rename = "PartnerRegistration"))]
#[serde(deny_unknown_fields)]
pub struct RegistrationJson {
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::admin::plain_name::<MAX_NAME_CHARS>"))]
    name: String,
    /// Where our webhooks go (`<callback_url>/webhooks`).
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::admin::partner_url"))]
    callback_url: String,
    /// An active merchant, whose account the partner's charges are paid into.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::id"))]
    merchant_id: String,
}

/// A registration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub callback_url: String,
    pub merchant_id: String,
}

impl Registration {
    /// `allow_http`: whether plain http URLs are accepted (the local stack only).
    pub fn parse(json: RegistrationJson, allow_http: bool) -> Result<Self, Problem> {
        let name = json.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !crate::text::is_plain(name) {
            return Err(Problem::new(
                catalogue::INVALID_PARTNER_NAME,
                format!("name must be 1 to {MAX_NAME_CHARS} characters that show as themselves"),
            ));
        }
        let url = partner_url(&json.callback_url, allow_http).ok_or_else(|| {
            Problem::new(
                catalogue::INVALID_CALLBACK_URL,
                "callback_url must be an absolute https URL, e.g. https://platform-b.example/superpay",
            )
        })?;
        Ok(Registration {
            name: name.to_owned(),
            callback_url: url.trim_end_matches('/').to_owned(),
            merchant_id: crate::ids::check("merchant_id", &json.merchant_id)?.to_owned(),
        })
    }
}

pub fn unknown_partner(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_PARTNER, format!("no partner platform {id:?}"))
}

#[derive(Clone, Debug)]
pub struct PartnerStore {
    client: Client,
    table: String,
}

impl PartnerStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        PartnerStore { client, table: table.into() }
    }

    /// A condition for another transaction: the partner is still active (a suspension that lands
    /// between a charge's checks and its commit stops it there).
    pub fn active_check(&self, id: &str) -> Result<Write, StoreError> {
        Ok(Write::check(PARTNER_ACTIVE, crate::merchant::store::active_condition(&self.table, id)?))
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub async fn get(&self, id: &str) -> Result<Option<Partner>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        output.item().map(partner_from_item).transpose()
    }

    /// The write that registers `partner`, only if its id is new.
    pub fn create_item(&self, partner: &Partner) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&partner.id))
            .item("name", s(&partner.name))
            .item("callback_url", s(&partner.callback_url))
            .item("merchant_id", s(&partner.merchant_id))
            .item("currency", s(partner.currency.code()))
            .item("status", s(partner.status.as_str()))
            .item("key_id", s(&partner.key_id))
            .item("key_ciphertext", AttributeValue::B(Blob::new(partner.key_ciphertext.clone())))
            .item("created_at", n(partner.created_at))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put("partner.new", put))
    }

    /// The write that sets a partner's status, only if it exists.
    pub fn status_item(&self, id: &str, status: MerchantStatus) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET #status = :status")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .build()?;
        Ok(Write::update("partner.exists", update))
    }
}

fn partner_from_item(item: &Item) -> Result<Partner, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("a stored partner is corrupt: {what}"));
    Ok(Partner {
        id: get_s(item, "id")?.to_owned(),
        name: get_s(item, "name")?.to_owned(),
        callback_url: get_s(item, "callback_url")?.to_owned(),
        merchant_id: get_s(item, "merchant_id")?.to_owned(),
        currency: get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?,
        status: MerchantStatus::parse(get_s(item, "status")?).ok_or_else(|| corrupt("status"))?,
        key_id: get_s(item, "key_id")?.to_owned(),
        key_ciphertext: get_b(item, "key_ciphertext")?,
        previous_key: PreviousKey::from_item(item)?,
        created_at: get_n(item, "created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(name: &str, url: &str, merchant: &str) -> RegistrationJson {
        serde_json::from_value(serde_json::json!({"name": name, "callback_url": url, "merchant_id": merchant}))
            .expect("a registration body")
    }

    #[test]
    fn a_partner_has_a_plain_name_an_https_callback_and_a_merchant_account() {
        let ok = Registration::parse(json(" Platform B ", "https://b.example/superpay/", "m_1"), false).unwrap();
        assert_eq!(
            ok,
            Registration {
                name: "Platform B".into(),
                callback_url: "https://b.example/superpay".into(),
                merchant_id: "m_1".into()
            }
        );
        let refused =
            |body: RegistrationJson, allow_http: bool| Registration::parse(body, allow_http).unwrap_err().code;
        assert_eq!(refused(json("B", "http://b.example", "m_1"), false), "invalid_callback_url");
        assert!(Registration::parse(json("B", "http://127.0.0.1:3002/b", "m_1"), true).is_ok(), "locally");
        assert_eq!(refused(json("B\u{202e}", "https://b.example", "m_1"), false), "invalid_partner_name");
        assert_eq!(refused(json(" ", "https://b.example", "m_1"), false), "invalid_partner_name");
        assert_eq!(refused(json("B", "https://b.example", "m 1"), false), "invalid_id");
    }
}
