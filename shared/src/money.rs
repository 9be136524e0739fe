//! Money: `rust_decimal::Decimal` amounts in an ISO 4217 currency, carried in JSON as strings.
//!
//! A `Money` can only be built through validation, so every amount in the system is positive, has
//! no more decimals than its currency's minor unit, and is at most the currency's per-operation limit.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An ISO 4217 currency this deployment accepts, with its minor unit and per-operation limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
    /// Largest amount one operation may move, in major units.
    limit: i64,
}

/// The accepted currencies. Limits are per operation (a wallet payment), in major units.
const CURRENCIES: &[Currency] = &[
    Currency { code: "AUD", minor_units: 2, limit: 100_000 },
    Currency { code: "BHD", minor_units: 3, limit: 50_000 },
    Currency { code: "CNY", minor_units: 2, limit: 500_000 },
    Currency { code: "EUR", minor_units: 2, limit: 100_000 },
    Currency { code: "GBP", minor_units: 2, limit: 100_000 },
    Currency { code: "HKD", minor_units: 2, limit: 500_000 },
    Currency { code: "IDR", minor_units: 2, limit: 1_000_000_000 },
    Currency { code: "INR", minor_units: 2, limit: 5_000_000 },
    Currency { code: "JPY", minor_units: 0, limit: 10_000_000 },
    Currency { code: "KRW", minor_units: 0, limit: 100_000_000 },
    Currency { code: "KWD", minor_units: 3, limit: 30_000 },
    Currency { code: "SGD", minor_units: 2, limit: 100_000 },
    Currency { code: "USD", minor_units: 2, limit: 100_000 },
];

impl Currency {
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point (2 for USD, 0 for JPY, 3 for KWD).
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }

    /// `amount` written with exactly this currency's decimals (DynamoDB drops trailing zeros).
    pub fn rescale(&self, amount: Decimal) -> Decimal {
        let mut amount = amount;
        amount.rescale(self.minor_units);
        amount
    }

    pub fn limit(&self) -> Decimal {
        Decimal::from(self.limit)
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        CURRENCIES.iter().find(|c| c.code == code).copied().ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must be a decimal string such as \"12.50\", got {0}")]
    NotADecimalString(String),
    #[error("amount must be greater than zero, got {0}")]
    NotPositive(Decimal),
    #[error("{currency} amounts have at most {minor_units} decimal places, got {amount}")]
    TooManyDecimals { amount: String, currency: &'static str, minor_units: u32 },
    #[error("amount {amount} is over the {currency} limit of {limit}")]
    OverLimit { amount: Decimal, currency: &'static str, limit: Decimal },
    #[error("currency {0:?} is not an accepted ISO 4217 code")]
    UnknownCurrency(String),
}

impl MoneyError {
    /// The stable problem code a client can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            MoneyError::NotADecimalString(_) => "amount_not_decimal_string",
            MoneyError::NotPositive(_) => "amount_not_positive",
            MoneyError::TooManyDecimals { .. } => "amount_too_many_decimals",
            MoneyError::OverLimit { .. } => "amount_over_limit",
            MoneyError::UnknownCurrency(_) => "unknown_currency",
        }
    }
}

/// A validated positive amount of one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MoneyInput", into = "MoneyInput")]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Validates `amount` (the exact decimal text a client sent) in `currency`.
    pub fn parse(amount: &str, currency: &str) -> Result<Self, MoneyError> {
        let currency: Currency = currency.parse()?;
        // Plain digits, an optional sign and one point: no exponents, spaces or underscores.
        let well_formed = amount.bytes().any(|b| b.is_ascii_digit())
            && amount.trim_start_matches(['-', '+']).bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && amount.bytes().filter(|b| *b == b'.').count() <= 1;
        if !well_formed {
            return Err(MoneyError::NotADecimalString(format!("{amount:?}")));
        }
        let too_many_decimals = || MoneyError::TooManyDecimals {
            amount: amount.to_owned(),
            currency: currency.code,
            minor_units: currency.minor_units,
        };
        // `from_str_exact` refuses what `from_str` would silently round ("12.9999…9" to 13).
        let value = Decimal::from_str_exact(amount).map_err(|e| match e {
            rust_decimal::Error::Underflow => too_many_decimals(),
            // Well-formed digits that do not fit a Decimal: far over any limit.
            _ => MoneyError::OverLimit { amount: Decimal::MAX, currency: currency.code, limit: currency.limit() },
        })?;
        Self::new(value, currency).map_err(|e| match e {
            MoneyError::TooManyDecimals { .. } => too_many_decimals(),
            other => other,
        })
    }

    /// Validates an amount already held as a `Decimal`.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        if amount <= Decimal::ZERO {
            return Err(MoneyError::NotPositive(amount));
        }
        // "12.50" has scale 2 but "12.500" has scale 3: judge the value, not the text's zeros.
        if amount.normalize().scale() > currency.minor_units {
            return Err(MoneyError::TooManyDecimals {
                amount: amount.to_string(),
                currency: currency.code,
                minor_units: currency.minor_units,
            });
        }
        if amount > currency.limit() {
            return Err(MoneyError::OverLimit { amount, currency: currency.code, limit: currency.limit() });
        }
        Ok(Money { amount: currency.rescale(amount), currency })
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// The wire form: `{"amount": "12.50", "currency": "USD"}`. An amount sent as a JSON number is
/// refused with a clear message rather than silently rounded through a float. Request bodies take
/// a `MoneyInput` and validate it themselves, so each refusal keeps its own problem code.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyInput {
    amount: serde_json::Value,
    currency: String,
}

impl MoneyInput {
    pub fn validate(self) -> Result<Money, MoneyError> {
        self.try_into()
    }
}

impl TryFrom<MoneyInput> for Money {
    type Error = MoneyError;

    fn try_from(json: MoneyInput) -> Result<Self, Self::Error> {
        match json.amount {
            serde_json::Value::String(text) => Money::parse(&text, &json.currency),
            other => Err(MoneyError::NotADecimalString(other.to_string())),
        }
    }
}

impl From<Money> for MoneyInput {
    fn from(money: Money) -> Self {
        MoneyInput {
            amount: serde_json::Value::String(money.amount.to_string()),
            currency: money.currency.code.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_keeps_the_currency_scale() {
        let m = Money::parse("12.5", "USD").unwrap();
        assert_eq!(m.amount().to_string(), "12.50");
        assert_eq!(Money::parse("12.500", "USD").unwrap().amount().to_string(), "12.50");
        assert_eq!(Money::parse("7", "JPY").unwrap().amount().to_string(), "7");
        assert_eq!(Money::parse("0.001", "KWD").unwrap().amount().to_string(), "0.001");
    }

    #[test]
    fn refuses_bad_amounts_with_their_own_codes() {
        let code = |a: &str, c: &str| Money::parse(a, c).unwrap_err().code();
        assert_eq!(code("0", "USD"), "amount_not_positive");
        assert_eq!(code("0.00", "USD"), "amount_not_positive");
        assert_eq!(code("-1.00", "USD"), "amount_not_positive");
        assert_eq!(code("1.001", "USD"), "amount_too_many_decimals");
        assert_eq!(code("1.5", "JPY"), "amount_too_many_decimals");
        assert_eq!(code("100000.01", "USD"), "amount_over_limit");
        assert_eq!(code("1e3", "USD"), "amount_not_decimal_string");
        assert_eq!(code(" 1.00", "USD"), "amount_not_decimal_string");
        assert_eq!(code("", "USD"), "amount_not_decimal_string");
        assert_eq!(code("NaN", "USD"), "amount_not_decimal_string");
        assert_eq!(code("1.2.3", "USD"), "amount_not_decimal_string");
        assert_eq!(code("1_000", "USD"), "amount_not_decimal_string");
        assert_eq!(code(".", "USD"), "amount_not_decimal_string");
        // Digits beyond what a Decimal holds are refused, never rounded into range.
        assert_eq!(code("12.9999999999999999999999999999", "USD"), "amount_too_many_decimals");
        assert_eq!(code("99999.9999999999999999999999999", "USD"), "amount_too_many_decimals");
        assert_eq!(code("99999999999999999999999999999999", "USD"), "amount_over_limit");
        assert_eq!(code("1.00", "usd"), "unknown_currency");
        assert_eq!(code("1.00", "XXX"), "unknown_currency");
    }

    #[test]
    fn json_amounts_are_strings_and_numbers_are_refused() {
        let m: Money = serde_json::from_str(r#"{"amount":"3.10","currency":"EUR"}"#).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"amount":"3.10","currency":"EUR"}"#);
        let err = serde_json::from_str::<Money>(r#"{"amount":3.1,"currency":"EUR"}"#).unwrap_err();
        assert!(err.to_string().contains("decimal string"), "{err}");
    }

    proptest! {
        #[test]
        fn every_in_range_minor_unit_amount_round_trips(cents in 1i64..=10_000_000) {
            let amount = Decimal::new(cents, 2);
            let m = Money::parse(&amount.to_string(), "USD").unwrap();
            prop_assert_eq!(m.amount(), amount);
            let back: Money = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn amounts_with_sub_cent_digits_are_refused(cents in 1i64..=10_000_000, extra in 1i64..=9) {
            let amount = Decimal::new(cents * 10 + extra, 3);
            prop_assert_eq!(
                Money::parse(&amount.to_string(), "USD").unwrap_err().code(),
                "amount_too_many_decimals"
            );
        }
    }
}
