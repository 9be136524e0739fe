//! Enrolled devices (`DevicesTable`, partition `id`): whose they are, their public key, the most
//! one offline code may pay, and whether their owner revoked them (a lost phone).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, ReturnValue};

use crate::dynamo::{Item, StoreError, Write, get_decimal, get_n, get_s, n, s};
use crate::money::{Currency, Money};

/// Rule: the user's offline currency is the device's (fixed by their first device).
pub const OFFLINE_CURRENCY: &str = "offline_currency.same";
/// Rule: the device was not revoked.
pub const DEVICE_NOT_REVOKED: &str = "device.not_revoked";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    /// The account its codes pay from.
    pub user: String,
    /// `<device id>.k1`: names the key in codes.
    pub key_id: String,
    /// P-256, uncompressed SEC1, base64.
    pub public_key: String,
    /// The most one offline code may pay.
    pub offline_limit: Money,
    pub enrolled_at: i64,
    /// When its owner revoked it: codes presented after that are refused.
    pub revoked_at: Option<i64>,
}

impl Device {
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "account": self.user,
            "key_id": self.key_id,
            "public_key": self.public_key,
            "offline_limit": self.offline_limit,
            "enrolled_at": self.enrolled_at,
            "status": if self.revoked_at.is_some() { "revoked" } else { "active" },
            "revoked_at": self.revoked_at,
        })
    }
}

#[derive(Clone, Debug)]
pub struct DeviceStore {
    client: Client,
    table: String,
}

impl DeviceStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DeviceStore { client, table: table.into() }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        output.item().map(device_from_item).transpose()
    }

    /// The device a code's key id names (`<device id>.k<n>`), if that is its current key.
    pub async fn by_key_id(&self, key_id: &str) -> Result<Option<Device>, StoreError> {
        let Some((id, _)) = key_id.split_once('.') else { return Ok(None) };
        Ok(self.get(id).await?.filter(|d| d.key_id == key_id))
    }

    /// Revokes `user`'s device `id` (once: a second call keeps the first time). `None`: no such
    /// device of theirs.
    pub async fn revoke(&self, id: &str, user: &str, at: i64) -> Result<Option<Device>, StoreError> {
        let outcome = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET revoked_at = if_not_exists(revoked_at, :at)")
            .condition_expression("attribute_exists(id) AND #user = :user")
            .expression_attribute_names("#user", "user")
            .expression_attribute_values(":at", n(at))
            .expression_attribute_values(":user", s(user))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match outcome {
            Ok(output) => output.attributes().map(device_from_item).transpose(),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The check that keeps a payment from committing if its device was revoked meanwhile.
    pub fn not_revoked_item(&self, id: &str) -> Result<Write, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .condition_expression("attribute_exists(id) AND attribute_not_exists(revoked_at)")
            .build()?;
        Ok(Write::check(DEVICE_NOT_REVOKED, check))
    }

    /// Fixes `user`'s offline currency at their first enrollment (an item `user#<user>` beside the
    /// devices), or checks it is the same: a reserve then never meets a currency it does not hold.
    pub fn currency_item(&self, user: &str, currency: Currency) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(format!("user#{user}")))
            .item("user", s(user))
            .item("currency", s(currency.code()))
            .condition_expression("attribute_not_exists(id) OR currency = :currency")
            .expression_attribute_values(":currency", s(currency.code()))
            .build()?;
        Ok(Write::put(OFFLINE_CURRENCY, put))
    }

    /// `user`'s offline currency, once a device fixed it.
    pub async fn currency_of(&self, user: &str) -> Result<Option<Currency>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(format!("user#{user}")))
            .consistent_read(true)
            .send()
            .await?;
        output
            .item()
            .map(|item| get_s(item, "currency")?.parse().map_err(|_| StoreError("stored currency is corrupt".into())))
            .transpose()
    }

    pub fn create_item(&self, device: &Device) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&device.id))
            .item("user", s(&device.user))
            .item("key_id", s(&device.key_id))
            .item("public_key", s(&device.public_key))
            .item("offline_limit", n(device.offline_limit.amount()))
            .item("currency", s(device.offline_limit.currency().code()))
            .item("enrolled_at", n(device.enrolled_at))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put("device.new", put))
    }
}

fn device_from_item(item: &Item) -> Result<Device, StoreError> {
    let corrupt = |what: &str| StoreError(format!("stored device is corrupt: {what}"));
    let currency: Currency = get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?;
    Ok(Device {
        id: get_s(item, "id")?.to_owned(),
        user: get_s(item, "user")?.to_owned(),
        key_id: get_s(item, "key_id")?.to_owned(),
        public_key: get_s(item, "public_key")?.to_owned(),
        offline_limit: Money::new(get_decimal(item, "offline_limit")?, currency)
            .map_err(|_| corrupt("offline_limit"))?,
        enrolled_at: get_n(item, "enrolled_at")?,
        revoked_at: if item.contains_key("revoked_at") { Some(get_n(item, "revoked_at")?) } else { None },
    })
}
