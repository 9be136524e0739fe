//! Merchants in DynamoDB (`MerchantsTable`, partition `id`).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put};

use super::{Merchant, MerchantStatus};
use crate::dynamo::{Item, StoreError, Write, get_b, get_n, get_s, n, s};
use crate::keys::PreviousKey;

/// Rule: the merchant is active (not suspended).
pub const MERCHANT_ACTIVE: &str = "merchant.active";

#[derive(Clone, Debug)]
pub struct MerchantStore {
    client: Client,
    table: String,
}

impl MerchantStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        MerchantStore { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub async fn get(&self, id: &str) -> Result<Option<Merchant>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        output.item().map(merchant_from_item).transpose()
    }

    /// The write that creates `merchant`, only if its id is new.
    pub fn create_item(&self, merchant: &Merchant) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&merchant.id))
            .item("name", s(&merchant.name))
            .item("product_server_url", s(&merchant.product_server_url))
            .item("currency", s(merchant.currency.code()))
            .item("status", s(merchant.status.as_str()))
            .item("key_id", s(&merchant.key_id))
            .item("key_ciphertext", AttributeValue::B(Blob::new(merchant.key_ciphertext.clone())))
            .item("created_at", n(merchant.created_at))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put("merchant.new", put))
    }

    /// A condition for another transaction: the merchant is still active (a suspension that lands
    /// between a request's checks and its commit stops it there).
    pub fn active_check(&self, id: &str) -> Result<Write, StoreError> {
        Ok(Write::check(MERCHANT_ACTIVE, active_condition(&self.table, id)?))
    }

    /// The write that sets a merchant's status, only if it exists.
    pub fn status_item(&self, id: &str, status: MerchantStatus) -> Result<Write, StoreError> {
        let update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET #status = :status")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .build()?;
        Ok(Write::update("merchant.exists", update))
    }
}

fn merchant_from_item(item: &Item) -> Result<Merchant, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("stored merchant is corrupt: {what}"));
    Ok(Merchant {
        id: get_s(item, "id")?.to_owned(),
        name: get_s(item, "name")?.to_owned(),
        product_server_url: get_s(item, "product_server_url")?.to_owned(),
        currency: get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?,
        status: MerchantStatus::parse(get_s(item, "status")?).ok_or_else(|| corrupt("status"))?,
        key_id: get_s(item, "key_id")?.to_owned(),
        key_ciphertext: get_b(item, "key_ciphertext")?,
        previous_key: PreviousKey::from_item(item)?,
        created_at: get_n(item, "created_at")?,
    })
}

/// The condition that the party `id` of `table` (a merchant, a terminal) is active.
pub(crate) fn active_condition(table: &str, id: &str) -> Result<aws_sdk_dynamodb::types::ConditionCheck, StoreError> {
    Ok(aws_sdk_dynamodb::types::ConditionCheck::builder()
        .table_name(table)
        .key("id", s(id))
        .condition_expression("#status = :active")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":active", s(MerchantStatus::Active.as_str()))
        .build()?)
}
