//! Users' enrolled device keys (`DevicesTable`, partition `id`): the P-256 key a user's phone holds,
//! which signs what only the user's own device may (offline payment codes, capability 6; the
//! co-signature of a large transfer instruction, capability 8). This module knows a device's key,
//! its owner and whether it was revoked; what a device may owe offline is `crate::offline::device`'s.
//!
//! One key never signs two kinds of thing interchangeably: each kind's signed bytes start
//! differently (an offline code's payload with the key id, an id without `/`; every other kind with
//! its own `superpay/<kind>/v<n>` domain line).

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::ConditionCheck;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::dynamo::{Item, StoreError, Write, get_n, get_s, s};

/// A device's key as enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    pub id: String,
    /// Whose device it is: the account its signatures speak for.
    pub user: String,
    /// `<device id>.k1`: names the key in what it signs.
    pub key_id: String,
    /// P-256, uncompressed SEC1, base64.
    pub public_key: String,
    pub enrolled_at: i64,
    /// When its owner revoked it (a lost phone): its signatures count for nothing after that.
    pub revoked_at: Option<i64>,
}

/// Rule: the device is still enrolled under this key and not revoked.
pub const DEVICE_LIVE: &str = "device.live";

impl DeviceKey {
    /// Whether `signature` (64 bytes, r then s, as the device signs) is this key's over `message`.
    pub fn signed(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(key) = STANDARD.decode(&self.public_key) else { return false };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key).verify(message, signature).is_ok()
    }
}

/// The device a key id (`<device id>.k<n>`) belongs to.
pub fn device_of_key(key_id: &str) -> Option<&str> {
    key_id.split_once('.').map(|(id, _)| id)
}

/// The key fields of a device's item.
pub fn key_from_item(item: &Item) -> Result<DeviceKey, StoreError> {
    Ok(DeviceKey {
        id: get_s(item, "id")?.to_owned(),
        user: get_s(item, "user")?.to_owned(),
        key_id: get_s(item, "key_id")?.to_owned(),
        public_key: get_s(item, "public_key")?.to_owned(),
        enrolled_at: get_n(item, "enrolled_at")?,
        revoked_at: if item.contains_key("revoked_at") { Some(get_n(item, "revoked_at")?) } else { None },
    })
}

/// The enrolled keys, read only.
#[derive(Clone, Debug)]
pub struct DeviceKeyStore {
    client: Client,
    table: String,
}

impl DeviceKeyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DeviceKeyStore { client, table: table.into() }
    }

    /// The check, for a transaction that relies on `device`'s signature, that it is still enrolled
    /// under that key and not revoked (a revocation that lands meanwhile stops it).
    pub fn live_check(&self, device: &DeviceKey) -> Result<Write, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("id", s(&device.id))
            .condition_expression("key_id = :key AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":key", s(&device.key_id))
            .build()?;
        Ok(Write::check(DEVICE_LIVE, check))
    }

    /// The device whose current key `key_id` is, if any.
    pub async fn by_key_id(&self, key_id: &str) -> Result<Option<DeviceKey>, StoreError> {
        let Some(id) = device_of_key(key_id) else { return Ok(None) };
        let output =
            self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        Ok(output.item().map(key_from_item).transpose()?.filter(|d| d.key_id == key_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_id_names_its_device() {
        assert_eq!(device_of_key("d_1.k1"), Some("d_1"));
        assert_eq!(device_of_key("d_1"), None);
    }
}
