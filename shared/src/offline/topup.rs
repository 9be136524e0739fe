//! Top-up requests (`TopUpsTable`, partition `token`): when a payer's offline reserve did not cover
//! a payment, they get a link to a page that funds the reserve from their bank. The link's token
//! is the page's credential and the payment's idempotency key: the top-up transfer's id derives
//! from it, so however often the form is sent, the bank is asked and the reserve funded once.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Put, Update};

use crate::dynamo::{Item, StoreError, Write, get_decimal, get_n, get_s, n, s};
use crate::money::{Currency, Money};

/// Rule: the top-up link was not paid.
pub const TOPUP_UNPAID: &str = "topup.unpaid";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    pub token: String,
    pub payment_id: String,
    pub user: String,
    pub merchant_id: String,
    /// What the reserve lacks for the payment.
    pub amount_due: Money,
    /// What the payment is for, in full.
    pub payment_amount: Money,
    pub expires_at: i64,
    pub paid: bool,
    /// The amount the link funds, fixed by the first form sent.
    pub amount: Option<Money>,
}

/// A fresh link token: 32 random bytes, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source works");
    hex::encode(bytes)
}

#[derive(Clone, Debug)]
pub struct TopUpStore {
    client: Client,
    table: String,
}

impl TopUpStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        TopUpStore { client, table: table.into() }
    }

    pub async fn get(&self, token: &str) -> Result<Option<TopUp>, StoreError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let output =
            self.client.get_item().table_name(&self.table).key("token", s(token)).consistent_read(true).send().await?;
        output.item().map(topup_from_item).transpose()
    }

    pub fn create_item(&self, topup: &TopUp) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("token", s(&topup.token))
            .item("payment_id", s(&topup.payment_id))
            .item("user", s(&topup.user))
            .item("merchant_id", s(&topup.merchant_id))
            .item("amount_due", n(topup.amount_due.amount()))
            .item("payment_amount", n(topup.payment_amount.amount()))
            .item("currency", s(topup.amount_due.currency().code()))
            .item("expires_at", n(topup.expires_at))
            .item("paid", aws_sdk_dynamodb::types::AttributeValue::Bool(false))
            .condition_expression("attribute_not_exists(#token)")
            .expression_attribute_names("#token", "token")
            .build()?;
        Ok(Write::put("topup.new", put))
    }

    /// Fixes the amount this link funds, the first time a form is sent: the bank's debit and the
    /// ledger's credit (both keyed by the link) must be the same amount, whatever is sent later.
    /// Returns the amount the link is fixed to.
    pub async fn fix_amount(&self, token: &str, amount: Money) -> Result<Money, StoreError> {
        let outcome = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("token", s(token))
            .update_expression("SET amount = :amount")
            .condition_expression("attribute_not_exists(amount) OR amount = :amount")
            .expression_attribute_values(":amount", n(amount.amount()))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(amount),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                let current = self
                    .get(token)
                    .await?
                    .and_then(|t| t.amount)
                    .ok_or_else(|| StoreError("top-up vanished".into()))?;
                Ok(current)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A condition for another transaction: this top-up is not paid (a paid one must settle).
    pub fn unpaid_check(&self, token: &str) -> Result<Write, StoreError> {
        let check = aws_sdk_dynamodb::types::ConditionCheck::builder()
            .table_name(&self.table)
            .key("token", s(token))
            .condition_expression("paid = :no")
            .expression_attribute_values(":no", aws_sdk_dynamodb::types::AttributeValue::Bool(false))
            .build()?;
        Ok(Write::check(TOPUP_UNPAID, check))
    }

    /// Marks the top-up used, only once.
    pub fn paid_item(&self, token: &str) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("token", s(token))
            .update_expression("SET paid = :yes")
            .condition_expression("paid = :no")
            .expression_attribute_values(":yes", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
            .expression_attribute_values(":no", aws_sdk_dynamodb::types::AttributeValue::Bool(false))
            .build()?;
        Ok(Write::update(TOPUP_UNPAID, update))
    }
}

fn topup_from_item(item: &Item) -> Result<TopUp, StoreError> {
    let corrupt = |what: &str| StoreError(format!("stored top-up is corrupt: {what}"));
    let currency: Currency = get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?;
    let money = |name: &str| -> Result<Money, StoreError> {
        Money::new(get_decimal(item, name)?, currency).map_err(|_| corrupt(name))
    };
    Ok(TopUp {
        token: get_s(item, "token")?.to_owned(),
        payment_id: get_s(item, "payment_id")?.to_owned(),
        user: get_s(item, "user")?.to_owned(),
        merchant_id: get_s(item, "merchant_id")?.to_owned(),
        amount_due: money("amount_due")?,
        payment_amount: money("payment_amount")?,
        expires_at: get_n(item, "expires_at")?,
        paid: matches!(item.get("paid"), Some(aws_sdk_dynamodb::types::AttributeValue::Bool(true))),
        amount: item.get("amount").map(|_| money("amount")).transpose()?,
    })
}
