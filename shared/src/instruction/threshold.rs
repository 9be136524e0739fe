//! When a transfer needs the payer's own device to co-sign it: above a threshold per currency, set
//! in the config group `transfer-limits` (`{"device_signature_above": {"USD": "200.00", ...}}`)
//! and overridden per account (`TransferThresholdsTable`, partition `user`: the same map, set by an
//! admin). A currency the group does not name, and a group that cannot be read as such, need the
//! device for every amount: a mistake in the group can make transfers harder, never easier.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::Put;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Problem;
use crate::dynamo::{StoreError, Write, get_s, s};
use crate::money::{Currency, Money};
use crate::problem::catalogue;

/// The config group the thresholds are published in.
pub const GROUP: &str = "transfer-limits";

/// Per currency, the amount above which a transfer needs a device co-signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Thresholds(BTreeMap<&'static str, Decimal>);

/// `{"device_signature_above": {"<currency>": "<amount>", ...}}`, as the group and an override hold it.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ThresholdsJson {
    /// Per currency, the amount above which a transfer needs the payer's device co-signature: 0
    /// (every amount), or an amount within the currency's decimals and limit.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "amounts_by_currency"))]
    device_signature_above: BTreeMap<String, String>,
}

/// The thresholds' schema: an accepted currency's code to its amount's grammar (the `Money`
/// schema's pattern), or to zero. `Decimal` reads zero in more spellings than `0` and `0.00`
/// (`00`, `+0`, `0_0`, `0.`), so zero is any string of those characters: one it does not read is
/// `invalid_threshold`, never a malformed request.
#[cfg(feature = "openapi")]
fn amounts_by_currency(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use schemars::JsonSchema;
    let money = crate::money::MoneyInput::json_schema(generator);
    let alternatives = money.get("oneOf").and_then(Value::as_array).into_iter().flatten();
    let properties: serde_json::Map<String, Value> = alternatives
        .filter_map(|alternative| {
            let currency = alternative.pointer("/properties/currency/const")?.as_str()?;
            let amount = alternative.pointer("/properties/amount/pattern")?.as_str()?;
            Some((currency.to_owned(), json!({"type": "string", "pattern": format!(r"^\+?[0_.]+$|{amount}")})))
        })
        .collect();
    schemars::json_schema!({"type": "object", "properties": properties, "additionalProperties": false})
}

impl ThresholdsJson {
    /// Each amount a decimal string from 0 to the currency's per-payment limit, in its minor units.
    pub fn validate(self) -> Result<Thresholds, Problem> {
        let mut thresholds = BTreeMap::new();
        for (code, amount) in self.device_signature_above {
            let currency: Currency = code.parse().map_err(|e: crate::money::MoneyError| Problem::from(e))?;
            let invalid = || {
                Problem::new(
                    catalogue::INVALID_THRESHOLD,
                    format!(
                        "the {code} threshold must be a decimal string from 0 to {} with at most {} decimals",
                        currency.limit(),
                        currency.minor_units()
                    ),
                )
            };
            // Zero is a threshold (every amount needs the device), which `Money` is not.
            let value = match Decimal::from_str_exact(&amount) {
                Ok(zero) if zero.is_zero() && !amount.starts_with('-') => Decimal::ZERO,
                _ => Money::parse(&amount, code.as_str()).map_err(|_| invalid())?.amount(),
            };
            thresholds.insert(currency.code(), value);
        }
        Ok(Thresholds(thresholds))
    }
}

impl Thresholds {
    /// The thresholds a config group's parameters hold; `None` when they are not such a map.
    pub fn from_group(parameters: &Value) -> Option<Self> {
        serde_json::from_value::<ThresholdsJson>(parameters.clone()).ok()?.validate().ok()
    }

    /// The threshold for `currency`: an account's own first, then the group's, else zero.
    pub fn of(&self, currency: Currency, account: Option<&Thresholds>) -> Decimal {
        let code = currency.code();
        account.and_then(|a| a.0.get(code)).or_else(|| self.0.get(code)).copied().unwrap_or(Decimal::ZERO)
    }

    pub fn view(&self) -> Value {
        json!({"device_signature_above": self.amounts()})
    }

    /// Per currency code, the threshold as a decimal string.
    pub fn amounts(&self) -> BTreeMap<&'static str, String> {
        self.0.iter().map(|(c, a)| (*c, a.to_string())).collect()
    }
}

/// The per-account overrides.
#[derive(Clone, Debug)]
pub struct ThresholdStore {
    client: Client,
    table: String,
}

impl ThresholdStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        ThresholdStore { client, table: table.into() }
    }

    pub async fn get(&self, user: &str) -> Result<Option<Thresholds>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.table).key("user", s(user)).consistent_read(true).send().await?;
        let Some(item) = output.item() else { return Ok(None) };
        let stored: Value = serde_json::from_str(get_s(item, "thresholds")?)
            .map_err(|e| StoreError::caused("a stored threshold override is not JSON", e))?;
        Thresholds::from_group(&stored)
            .map(Some)
            .ok_or_else(|| StoreError::new("a stored threshold override is corrupt"))
    }

    /// `user`'s override, replacing any earlier one.
    pub fn put_item(&self, user: &str, thresholds: &Thresholds) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("user", s(user))
            .item("thresholds", s(thresholds.view().to_string()))
            .build()?;
        Ok(Write::put("threshold.written", put))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds(value: Value) -> Result<Thresholds, Problem> {
        serde_json::from_value::<ThresholdsJson>(value).expect("the shape").validate()
    }

    #[test]
    fn the_accounts_threshold_comes_first_then_the_groups_then_zero() {
        let usd: Currency = "USD".parse().unwrap();
        let eur: Currency = "EUR".parse().unwrap();
        let group =
            Thresholds::from_group(&json!({"device_signature_above": {"USD": "200.00", "EUR": "150"}})).unwrap();
        let mine = thresholds(json!({"device_signature_above": {"USD": "0"}})).unwrap();
        assert_eq!(group.of(usd, None), Decimal::new(20_000, 2));
        assert_eq!(group.of(eur, Some(&mine)), Decimal::new(150, 0));
        assert_eq!(group.of(usd, Some(&mine)), Decimal::ZERO);
        assert_eq!(group.of("CNY".parse().unwrap(), None), Decimal::ZERO, "a currency not named needs the device");
        assert_eq!(Thresholds::from_group(&json!({"device_signature_above": {"USD": 200}})), None);
        assert_eq!(Thresholds::from_group(&json!({"other": 1})), None);
        assert_eq!(Thresholds::from_group(&group.view()), Some(group));
    }

    #[cfg(feature = "openapi")]
    #[test]
    fn the_schema_takes_each_currency_with_its_amounts_grammar_or_zero_in_any_spelling_read() {
        let schema = amounts_by_currency(&mut schemars::SchemaGenerator::default());
        assert_eq!(schema.get("additionalProperties"), Some(&json!(false)));
        let pattern = |code: &str| schema.as_value()["properties"][code]["pattern"].as_str().map(str::to_owned);
        let usd = pattern("USD").expect("USD is a currency");
        assert!(usd.starts_with(r"^\+?[0_.]+$|^(([1-9][0-9]{0,4})(\.[0-9]{1,2})?|"), "{usd}");
        assert!(pattern("JPY").is_some_and(|jpy| jpy.ends_with("|10000000)$")));
        assert_eq!(pattern("XXX"), None);
        // What the zero alternative is for: Decimal reads zero in these spellings too.
        for zero in ["00", "+0", "0.", ".0", "0_0", "0._", "+.0"] {
            assert!(thresholds(json!({"device_signature_above": {"USD": zero}})).is_ok(), "{zero}");
        }
    }

    #[test]
    fn a_threshold_is_a_decimal_string_within_the_currency() {
        for bad in ["-1", "-0", "1.001", "abc", "", "1e3", "100000000"] {
            let refused = thresholds(json!({"device_signature_above": {"USD": bad}})).unwrap_err();
            assert_eq!(refused.code, "invalid_threshold", "{bad}");
        }
        let unknown = thresholds(json!({"device_signature_above": {"XXX": "1"}})).unwrap_err();
        assert_eq!(unknown.code, "unknown_currency");
        assert!(thresholds(json!({"device_signature_above": {"USD": "0.00"}})).is_ok());
    }
}
