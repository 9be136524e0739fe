//! The cash movements (`CashTable`, partition `user`, sort `id`): each movement's item (`ci_…` a
//! cash-in, `co_…` a cash-out), and beside them one window item per direction and currency
//! (`#window/<direction>/<currency>`: the movements of the last 24 hours as `<at> <amount>` strings
//! and a `version` every write is conditional on), so the rolling limits are exact under concurrency.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Update};
use rust_decimal::Decimal;

use super::{CashState, ChargeOf, Direction, Movement, Window};
use crate::dynamo::{Item, StoreError, Write, get_decimal, get_item, get_n, get_n_opt, get_s, n, s, scan_all};
use crate::money::{Currency, Money};

/// Rule: a movement is recorded once.
pub const CASH_NEW: &str = "cash.new";
/// Rule: the movement is pending: its outcome is decided once.
pub const CASH_PENDING: &str = "cash.pending";
/// Rule: the window is as it was read (no other movement was added to it meanwhile).
pub const WINDOW_CURRENT: &str = "cash.window_current";
/// Rule: the charge is completed and its refunds, with this one, stay within it.
pub const CHARGE_REFUNDABLE: &str = "cash.charge_refundable";
/// Rule: the user's cash-ins are in one currency, the wallet's (pinned by the first).
pub const WALLET_CURRENCY: &str = "cash.wallet_currency";

const CURRENCY_PIN_ID: &str = "#currency";

fn window_id(direction: Direction, currency: Currency) -> String {
    format!("#window/{}/{}", direction.as_str(), currency.code())
}

#[derive(Clone, Debug)]
pub struct CashStore {
    client: Client,
    table: String,
}

impl CashStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        CashStore { client, table: table.into() }
    }

    async fn item(&self, user: &str, id: &str) -> Result<Option<Item>, StoreError> {
        get_item(&self.client, &self.table, &[("user", user), ("id", id)]).await
    }

    /// `user`'s movement `id`.
    pub async fn get(&self, user: &str, id: &str) -> Result<Option<Movement>, StoreError> {
        self.item(user, id).await?.as_ref().map(movement_from_item).transpose()
    }

    /// Every movement, for the invariant checker (`super::check_cash`).
    pub async fn all(&self) -> Result<Vec<Movement>, StoreError> {
        let items = scan_all(&self.client, &self.table).await?;
        items
            .iter()
            .filter(|i| get_s(i, "id").is_ok_and(|id| Direction::of_id(id).is_some()))
            .map(movement_from_item)
            .collect()
    }

    /// `user`'s window in `direction` and `currency`, as read now.
    pub async fn window(&self, user: &str, direction: Direction, currency: Currency) -> Result<Window, StoreError> {
        let Some(item) = self.item(user, &window_id(direction, currency)).await? else { return Ok(Window::default()) };
        let corrupt = || StoreError::new(format!("{user}'s {} window is corrupt", direction.as_str()));
        let entries = item.get("entries").and_then(|v| v.as_l().ok()).ok_or_else(corrupt)?;
        let entries = entries
            .iter()
            .map(|entry| {
                let (at, amount) = entry.as_s().ok().and_then(|e| e.split_once(' ')).ok_or_else(corrupt)?;
                Ok((at.parse().map_err(|_| corrupt())?, amount.parse::<Decimal>().map_err(|_| corrupt())?))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Window { version: get_n(&item, "version")?, entries })
    }

    /// Writes `admitted` over the window `read` was, only if nobody changed it since.
    pub fn window_item(
        &self,
        user: &str,
        direction: Direction,
        currency: Currency,
        read: &Window,
        admitted: &Window,
    ) -> Result<Write, StoreError> {
        let entries = admitted.entries.iter().map(|(at, amount)| s(format!("{at} {amount}"))).collect();
        let put = Put::builder()
            .table_name(&self.table)
            .item("user", s(user))
            .item("id", s(window_id(direction, currency)))
            .item("version", n(admitted.version))
            .item("entries", AttributeValue::L(entries));
        let put = if read.version == 0 {
            put.condition_expression("attribute_not_exists(id)")
        } else {
            put.condition_expression("version = :read").expression_attribute_values(":read", n(read.version))
        };
        Ok(Write::put(WINDOW_CURRENT, put.build()?))
    }

    /// The currency `user`'s cash-ins pinned, if any (their wallet may not exist yet).
    pub async fn pinned_currency(&self, user: &str) -> Result<Option<Currency>, StoreError> {
        let Some(item) = self.item(user, CURRENCY_PIN_ID).await? else { return Ok(None) };
        let corrupt = || StoreError::new(format!("{user}'s pinned currency is corrupt"));
        get_s(&item, "currency")?.parse().map(Some).map_err(|_| corrupt())
    }

    /// Pins `user`'s cash-ins to `currency`, unless another is pinned: a cash-in in another currency
    /// racing the first could otherwise be approved by the bank and fit no wallet.
    pub fn currency_pin_item(&self, user: &str, currency: Currency) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("user", s(user))
            .item("id", s(CURRENCY_PIN_ID))
            .item("currency", s(currency.code()))
            .condition_expression("attribute_not_exists(id) OR currency = :currency")
            .expression_attribute_values(":currency", s(currency.code()))
            .build()?;
        Ok(Write::put(WALLET_CURRENCY, put))
    }

    /// The new movement, recorded once.
    pub fn create_item(&self, movement: &Movement) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("user", s(&movement.user))
            .item("id", s(&movement.id))
            .item("direction", s(movement.direction.as_str()))
            .item("instrument_id", s(&movement.instrument_id))
            .item("instrument_label", s(&movement.instrument_label))
            .item("amount", n(movement.amount.amount()))
            .item("currency", s(movement.amount.currency().code()))
            .item("state", s(movement.state.as_str()))
            .item("created_at", n(movement.created_at));
        let put = match &movement.charge {
            Some(charge) => put
                .item("partner", s(&charge.partner))
                .item("link", s(&charge.link))
                .item("merchant", s(&charge.merchant))
                .item("token", s(&charge.token))
                .item("number_token", s(&charge.number_token)),
            None => put,
        };
        let put = match &movement.refund_of {
            Some(charge) => put.item("refund_of", s(charge)),
            None => put,
        };
        Ok(Write::put(CASH_NEW, put.condition_expression("attribute_not_exists(id)").build()?))
    }

    /// Marks a pending cash-out's payout as sent to the bank (before it is): from then on its
    /// status is asked, never its payout. Decided meanwhile: nothing to mark.
    pub async fn mark_asked(&self, movement: &Movement, now: i64) -> Result<(), StoreError> {
        let outcome = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("user", s(&movement.user))
            .key("id", s(&movement.id))
            .update_expression("SET asked = :now")
            .condition_expression("#state = :pending")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(CashState::Pending.as_str()))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match outcome {
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    /// `amount` more of `charge` refunded: only a completed charge, and never beyond it.
    pub fn refund_item(&self, charge: &Movement, amount: Money) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("user", s(&charge.user))
            .key("id", s(&charge.id))
            .update_expression("ADD refunded :amount")
            .condition_expression("#state = :completed AND (attribute_not_exists(refunded) OR refunded <= :most)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":completed", s(CashState::Completed.as_str()))
            .expression_attribute_values(":amount", n(amount.amount()))
            .expression_attribute_values(":most", n(charge.amount.amount() - amount.amount()))
            .build()?;
        Ok(Write::update(CHARGE_REFUNDABLE, update))
    }

    /// A declined refund's amount back to what `refund`'s charge may still refund.
    pub fn refund_returned_item(&self, refund: &Movement) -> Result<Write, StoreError> {
        let charge = refund.refund_of.as_deref().ok_or_else(|| StoreError::new("a refund names its charge"))?;
        let update = Update::builder()
            .table_name(&self.table)
            .key("user", s(&refund.user))
            .key("id", s(charge))
            .update_expression("ADD refunded :back")
            .expression_attribute_values(":back", n(-refund.amount.amount()))
            .build()?;
        Ok(Write::update("cash.refund_returned", update))
    }

    /// The movement's outcome, decided at `now`: only while it is pending.
    pub fn decided_item(
        &self,
        movement: &Movement,
        state: CashState,
        reason: Option<&str>,
        now: i64,
    ) -> Result<Write, StoreError> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("user", s(&movement.user))
            .key("id", s(&movement.id))
            .condition_expression("#state = :pending")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(CashState::Pending.as_str()))
            .expression_attribute_values(":state", s(state.as_str()))
            .expression_attribute_values(":now", n(now));
        update = match reason {
            Some(reason) => update
                .update_expression("SET #state = :state, decided_at = :now, reason = :reason")
                .expression_attribute_values(":reason", s(reason)),
            None => update.update_expression("SET #state = :state, decided_at = :now"),
        };
        Ok(Write::update(CASH_PENDING, update.build()?))
    }
}

fn movement_from_item(item: &Item) -> Result<Movement, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("a stored cash movement is corrupt: {what}"));
    let currency: Currency = get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?;
    Ok(Movement {
        id: get_s(item, "id")?.to_owned(),
        user: get_s(item, "user")?.to_owned(),
        direction: Direction::parse(get_s(item, "direction")?).ok_or_else(|| corrupt("direction"))?,
        instrument_id: get_s(item, "instrument_id")?.to_owned(),
        instrument_label: get_s(item, "instrument_label")?.to_owned(),
        amount: Money::new(get_decimal(item, "amount")?, currency).map_err(|_| corrupt("amount"))?,
        state: CashState::parse(get_s(item, "state")?).ok_or_else(|| corrupt("state"))?,
        created_at: get_n(item, "created_at")?,
        decided_at: get_n_opt(item, "decided_at")?,
        reason: item.get("reason").and_then(|v| v.as_s().ok()).cloned(),
        asked: item.contains_key("asked"),
        refund_of: item.get("refund_of").and_then(|v| v.as_s().ok()).cloned(),
        refunded: if item.contains_key("refunded") { get_decimal(item, "refunded")? } else { Decimal::ZERO },
        charge: match item.get("link") {
            Some(_) => Some(ChargeOf {
                partner: get_s(item, "partner")?.to_owned(),
                link: get_s(item, "link")?.to_owned(),
                merchant: get_s(item, "merchant")?.to_owned(),
                token: get_s(item, "token")?.to_owned(),
                number_token: get_s(item, "number_token")?.to_owned(),
            }),
            None => None,
        },
    })
}
