//! Merchants: who may sell through the purchase relay, where their product server is, and the key
//! both sides sign and seal with (a `KeyedParty`, as their terminals are). `api` serves the admin
//! routes, `store` and `terminal` hold the tables, `directory` gives merchants with their working
//! keys, and `client` is our signed HTTP client to a merchant's product server.

pub mod api;
pub mod client;
pub mod directory;
pub mod store;
pub mod terminal;

use serde::{Deserialize, Serialize};

use crate::Problem;
use crate::http::partner_url;
use crate::keys::{PreviousKey, StoredKey};
use crate::money::Currency;
use crate::party_keys::KeyedParty;
use crate::problem::catalogue;

/// Whether the party may act (a merchant sell, a terminal sign, a partner charge): a suspended
/// one may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum MerchantStatus {
    Active,
    Suspended,
}

impl MerchantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MerchantStatus::Active => "active",
            MerchantStatus::Suspended => "suspended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(MerchantStatus::Active),
            "suspended" => Some(MerchantStatus::Suspended),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    pub product_server_url: String,
    /// The currency its settlement account holds.
    pub currency: Currency,
    pub status: MerchantStatus,
    /// Names the current master key in signatures, so keys can rotate.
    pub key_id: String,
    /// The master key, envelope-encrypted by KMS.
    pub key_ciphertext: Vec<u8>,
    /// The key before the last rotation, while it is still honoured.
    pub previous_key: Option<PreviousKey>,
    pub created_at: i64,
}

impl Merchant {
    /// The owner string KMS binds the key to (its encryption context).
    pub fn key_owner(id: &str) -> String {
        format!("merchant/{id}")
    }

    pub fn view(&self) -> MerchantView {
        MerchantView {
            id: self.id.clone(),
            name: self.name.clone(),
            product_server_url: self.product_server_url.clone(),
            currency: self.currency.code(),
            status: self.status,
            key_id: self.key_id.clone(),
            created_at: self.created_at,
        }
    }
}

/// What an admin sees of a merchant: everything but its key.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct MerchantView {
    pub id: String,
    pub name: String,
    /// Where its product server takes our calls (`<product_server_url>/orders`, `/webhooks`).
    pub product_server_url: String,
    /// The ISO 4217 currency its settlement account holds.
    pub currency: &'static str,
    pub status: MerchantStatus,
    /// Names its current key in signatures.
    pub key_id: String,
    pub created_at: i64,
}

impl KeyedParty for Merchant {
    const ROTATE_ACTION: &'static str = "merchant.rotate_key";
    const END_GRACE_ACTION: &'static str = "merchant.end_key_grace";

    fn id(&self) -> &str {
        &self.id
    }

    fn stored_key(&self) -> StoredKey<'_> {
        StoredKey { key_id: &self.key_id, ciphertext: &self.key_ciphertext, previous: self.previous_key.as_ref() }
    }

    fn kms_owner(&self) -> String {
        Merchant::key_owner(&self.id)
    }

    fn audit_resource(&self) -> String {
        format!("merchant/{}", self.id)
    }

    fn location(&self) -> String {
        format!("/merchants/{}", self.id)
    }
}

/// A registration request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub product_server_url: String,
    pub currency: Currency,
}

/// A registration's body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(rename = "MerchantRegistration"))]
#[serde(deny_unknown_fields)]
pub struct RegistrationJson {
    /// What users see when they confirm a payment to it.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::admin::plain_name::<100>"))]
    name: String,
    /// Where we send its orders and webhooks.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::admin::partner_url"))]
    product_server_url: String,
    /// The currency its settlement account holds, hence the one it sells in.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "currency_code"))]
    currency: String,
}

/// The schema of a currency a client names: a code `Currency` accepts.
#[cfg(feature = "openapi")]
fn currency_code(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // `Currency` lists its codes to no one; an ISO 4217 code is three capital letters, so each is asked.
    let letters = || (b'A'..=b'Z').map(char::from);
    let codes: Vec<String> = letters()
        .flat_map(|a| letters().flat_map(move |b| letters().map(move |c| format!("{a}{b}{c}"))))
        .filter(|code| code.parse::<Currency>().is_ok())
        .collect();
    schemars::json_schema!({"type": "string", "enum": codes, "description": "an ISO 4217 code this deployment accepts"})
}

impl Registration {
    /// `allow_http`: whether a plain http product server is accepted (the local stack only).
    pub fn parse(json: RegistrationJson, allow_http: bool) -> Result<Self, Problem> {
        let name = json.name.trim();
        // A user confirms payments to this name: it must show as itself.
        if name.is_empty() || name.chars().count() > 100 || !crate::text::is_plain(name) {
            return Err(Problem::new(
                catalogue::INVALID_MERCHANT_NAME,
                "name must be 1 to 100 characters, without control, invisible or direction-changing characters",
            ));
        }
        let url = partner_url(&json.product_server_url, allow_http).ok_or_else(|| {
            Problem::new(
                catalogue::INVALID_PRODUCT_SERVER_URL,
                "product_server_url must be an absolute https URL, e.g. https://shop.example/superpay",
            )
        })?;
        Ok(Registration {
            name: name.to_owned(),
            product_server_url: url.trim_end_matches('/').to_owned(),
            currency: json.currency.parse()?,
        })
    }
}

pub fn unknown_merchant(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_MERCHANT, format!("no merchant {id:?}"))
}

pub fn inactive_merchant(id: &str) -> Problem {
    Problem::new(catalogue::MERCHANT_INACTIVE, format!("merchant {id:?} is suspended"))
}

/// The merchant `id` as read, if it exists and is active.
pub fn require_active(found: Option<Merchant>, id: &str) -> Result<Merchant, Problem> {
    let merchant = found.ok_or_else(|| unknown_merchant(id))?;
    if merchant.status != MerchantStatus::Active {
        return Err(inactive_merchant(id));
    }
    Ok(merchant)
}

/// A suspended merchant moves no money out of its account: its key may be in the wrong hands.
/// (It may still decline an order or void a hold, which returns the user's money.)
pub fn suspended_refund(id: &str) -> Problem {
    Problem::alternate(
        catalogue::MERCHANT_INACTIVE,
        format!("merchant {id:?} is suspended: it may not refund; nothing was moved"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(name: &str, url: &str, currency: &str) -> RegistrationJson {
        RegistrationJson { name: name.into(), product_server_url: url.into(), currency: currency.into() }
    }

    #[test]
    fn registrations_are_validated() {
        let ok = Registration::parse(json(" Tea Shop ", "https://tea.example/hooks/", "USD"), false).unwrap();
        assert_eq!((ok.name.as_str(), ok.product_server_url.as_str()), ("Tea Shop", "https://tea.example/hooks"));
        for (name, url, currency, code) in [
            ("", "https://x.example", "USD", "invalid_merchant_name"),
            ("Sea Shop\u{202e}", "https://x.example", "USD", "invalid_merchant_name"),
            ("x", "ftp://x.example", "USD", "invalid_product_server_url"),
            ("x", "https://", "USD", "invalid_product_server_url"),
            ("x", "http://x.example", "USD", "invalid_product_server_url"),
            ("x", "https://a b", "USD", "invalid_product_server_url"),
            ("x", "https://x.example", "XYZ", "unknown_currency"),
        ] {
            assert_eq!(
                Registration::parse(json(name, url, currency), false).unwrap_err().code,
                code,
                "{name} {url} {currency}"
            );
        }
        // The local stack's simulators speak plain http.
        assert!(Registration::parse(json("x", "http://127.0.0.1:3002/m", "USD"), true).is_ok());
    }
}
