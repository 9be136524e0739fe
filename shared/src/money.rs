//! Money: `rust_decimal::Decimal` amounts in an ISO 4217 currency, carried in JSON as strings.
//!
//! A `Money` can only be built through validation, so every amount in the system is positive, has
//! no more decimals than its currency's minor unit, and is at most the currency's per-operation limit.
//!
//! One grammar for every amount a client sends, with m the currency's minor unit:
//! `(0|[1-9][0-9]*)(\.[0-9]{1,m})?`, and no point at all when m is 0 (JPY, KRW). So `"12.50"`,
//! `"12.5"`, `"12"` and `"0.05"` are amounts; `"1."`, `".5"`, `"+1.00"`, `"-1.00"`, `"01.00"`,
//! `"1e3"`, `" 1.00"` and `"12.500"` are not. A leading zero is refused (only `0` itself may stand
//! before the point), as are a sign, an exponent and whitespace: one amount, one spelling.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::problem::{Code, catalogue};

/// An ISO 4217 currency this deployment accepts, with its minor unit and per-operation limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
    /// Largest amount one operation may move, in major units.
    limit: i64,
}

/// The accepted currencies, a row each: the ISO 4217 code, the minor unit (digits after the point),
/// and the limit per operation (a wallet payment), in major units.
const CURRENCIES: &[(&str, u32, i64)] = &[
    ("AUD", 2, 100_000),
    ("BHD", 3, 50_000),
    ("CNY", 2, 500_000),
    ("EUR", 2, 100_000),
    ("GBP", 2, 100_000),
    ("HKD", 2, 500_000),
    ("IDR", 2, 1_000_000_000),
    ("INR", 2, 5_000_000),
    ("JPY", 0, 10_000_000),
    ("KRW", 0, 100_000_000),
    ("KWD", 3, 30_000),
    ("SGD", 2, 100_000),
    ("USD", 2, 100_000),
];

impl Currency {
    /// Every accepted currency.
    fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES.iter().map(|&(code, minor_units, limit)| Currency { code, minor_units, limit })
    }

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
        Currency::all().find(|c| c.code == code).ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error(
        "amount must be a decimal string: digits, then optionally a point and 1 to the currency's number of decimals, such as \"12.50\" (no sign, exponent, spaces or leading zeros), got {0}"
    )]
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
    pub fn code(&self) -> &'static Code {
        match self {
            MoneyError::NotADecimalString(_) => catalogue::AMOUNT_NOT_DECIMAL_STRING,
            MoneyError::NotPositive(_) => catalogue::AMOUNT_NOT_POSITIVE,
            MoneyError::TooManyDecimals { .. } => catalogue::AMOUNT_TOO_MANY_DECIMALS,
            MoneyError::OverLimit { .. } => catalogue::AMOUNT_OVER_LIMIT,
            MoneyError::UnknownCurrency(_) => catalogue::UNKNOWN_CURRENCY,
        }
    }
}

impl From<MoneyError> for crate::Problem {
    fn from(e: MoneyError) -> Self {
        crate::Problem::new(e.code(), e.to_string())
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
        // What the refusal quotes: enough to recognise, never a whole oversized body.
        let quoted = || {
            let mut head: String = amount.chars().take(40).collect();
            if head.len() < amount.len() {
                head.push('…');
            }
            format!("{head:?}")
        };
        let too_many_decimals = || MoneyError::TooManyDecimals {
            amount: amount.chars().take(40).collect(),
            currency: currency.code,
            minor_units: currency.minor_units,
        };
        // The grammar (module comment); more decimals than the currency has get their own code.
        let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        let (whole, fraction) = amount.split_once('.').map_or((amount, None), |(w, f)| (w, Some(f)));
        let whole_ok = digits(whole) && (whole == "0" || !whole.starts_with('0'));
        match fraction {
            _ if !whole_ok => return Err(MoneyError::NotADecimalString(quoted())),
            Some(fraction) if !digits(fraction) => return Err(MoneyError::NotADecimalString(quoted())),
            Some(fraction) if fraction.len() > currency.minor_units as usize => return Err(too_many_decimals()),
            _ => {}
        }
        // Well-formed digits that do not fit a Decimal (`from_str_exact` never rounds): far over any limit.
        let value = Decimal::from_str_exact(amount).map_err(|_| MoneyError::OverLimit {
            amount: Decimal::MAX,
            currency: currency.code,
            limit: currency.limit(),
        })?;
        Self::new(value, currency)
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

/// An amount's schema: one alternative per currency, its `amount` the grammar as a pattern within
/// the currency's decimals and limit, so a client (or schemathesis) knows what is accepted.
#[cfg(feature = "openapi")]
impl schemars::JsonSchema for MoneyInput {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let currencies: Vec<serde_json::Value> = Currency::all()
            .map(|c| {
                serde_json::json!({
                    "type": "object",
                    "properties": {"amount": {"type": "string", "pattern": amount_pattern(c)}, "currency": {"const": c.code}},
                    "required": ["amount", "currency"],
                    "additionalProperties": false,
                })
            })
            .collect();
        schemars::json_schema!({
            "description": "An amount: a decimal string, positive, with at most the currency's decimals and at most its limit (docs/api/conventions.md).",
            "oneOf": currencies,
        })
    }
}

/// The answer's form is the request's.
#[cfg(feature = "openapi")]
impl schemars::JsonSchema for Money {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        MoneyInput::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        MoneyInput::json_schema(generator)
    }
}

/// `Money::parse`'s grammar for `currency` as a pattern: digits with no leading zero, at most the
/// currency's decimals, more than zero, at most its limit. Every limit is d x 10^k (`CURRENCIES`),
/// so "below the limit" is fewer digits, or as many with a smaller first digit.
#[cfg(feature = "openapi")]
fn amount_pattern(currency: Currency) -> String {
    let limit = currency.limit.to_string();
    let (first, zeros) = (limit.as_bytes()[0] - b'0', limit.len() - 1);
    let decimals = currency.minor_units as usize;
    let mut below = vec![format!("[1-9][0-9]{{0,{}}}", zeros - 1)];
    if first > 1 {
        below.push(format!("[1-{}][0-9]{{{zeros}}}", first - 1));
    }
    let alternatives = match decimals {
        0 => vec![format!("{}", below.join("|")), limit],
        _ => {
            let fraction = format!(r"(\.[0-9]{{1,{decimals}}})?");
            let under_one: Vec<String> =
                (0..decimals).map(|z| format!("0{{{z}}}[1-9][0-9]{{0,{}}}", decimals - 1 - z)).collect();
            vec![
                format!("({}){fraction}", below.join("|")),
                format!(r"0\.({})", under_one.join("|")),
                format!(r"{limit}(\.0{{1,{decimals}}})?"),
            ]
        }
    };
    format!("^({})$", alternatives.join("|"))
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

    #[cfg(feature = "openapi")]
    #[test]
    fn the_amount_pattern_is_the_grammar_within_decimals_and_limit() {
        let pattern = |code: &str| amount_pattern(code.parse().unwrap());
        assert_eq!(
            pattern("USD"),
            r"^(([1-9][0-9]{0,4})(\.[0-9]{1,2})?|0\.(0{0}[1-9][0-9]{0,1}|0{1}[1-9][0-9]{0,0})|100000(\.0{1,2})?)$"
        );
        assert_eq!(pattern("JPY"), r"^([1-9][0-9]{0,6}|10000000)$");
        assert!(pattern("BHD").starts_with(r"^(([1-9][0-9]{0,3}|[1-4][0-9]{4})(\.[0-9]{1,3})?|"), "{}", pattern("BHD"));
        // The pattern's shape holds only for limits that are d x 10^k.
        for currency in Currency::all() {
            let limit = currency.limit.to_string();
            assert!(limit[1..].bytes().all(|b| b == b'0'), "{} {limit}", currency.code);
        }
    }

    #[test]
    fn parses_and_keeps_the_currency_scale() {
        let m = Money::parse("12.5", "USD").unwrap();
        assert_eq!(m.amount().to_string(), "12.50");
        assert_eq!(Money::parse("12", "USD").unwrap().amount().to_string(), "12.00");
        assert_eq!(Money::parse("0.05", "USD").unwrap().amount().to_string(), "0.05");
        assert_eq!(Money::parse("10.50", "USD").unwrap().amount().to_string(), "10.50");
        assert_eq!(Money::parse("7", "JPY").unwrap().amount().to_string(), "7");
        assert_eq!(Money::parse("0.001", "KWD").unwrap().amount().to_string(), "0.001");
    }

    /// The code `amount` in `currency` is refused with.
    fn refusal(amount: &str, currency: &str) -> &'static str {
        Money::parse(amount, currency).unwrap_err().code().code()
    }

    #[test]
    fn one_spelling_per_amount() {
        for text in ["1.", ".5", "+1.00", "-1.00", "01.00", "00.50", "00", "1. 00", "1.00 ", "\u{661}", "1,00", "0x10"]
        {
            assert_eq!(refusal(text, "USD"), "amount_not_decimal_string", "{text:?}");
        }
    }

    #[test]
    fn refuses_bad_amounts_with_their_own_codes() {
        let cases = [
            ("0", "USD", "amount_not_positive"),
            ("0.00", "USD", "amount_not_positive"),
            ("1.001", "USD", "amount_too_many_decimals"),
            ("1.5", "JPY", "amount_too_many_decimals"),
            ("100000.01", "USD", "amount_over_limit"),
            ("1e3", "USD", "amount_not_decimal_string"),
            (" 1.00", "USD", "amount_not_decimal_string"),
            ("", "USD", "amount_not_decimal_string"),
            ("NaN", "USD", "amount_not_decimal_string"),
            ("1.2.3", "USD", "amount_not_decimal_string"),
            ("1_000", "USD", "amount_not_decimal_string"),
            (".", "USD", "amount_not_decimal_string"),
            // Trailing zeros count: the text may not carry more decimals than the currency has.
            ("12.500", "USD", "amount_too_many_decimals"),
            ("1.0", "JPY", "amount_too_many_decimals"),
            ("1.", "JPY", "amount_not_decimal_string"),
            ("1.0000", "KWD", "amount_too_many_decimals"),
            // Digits beyond what a Decimal holds are refused, never rounded into range.
            ("12.9999999999999999999999999999", "USD", "amount_too_many_decimals"),
            ("99999.9999999999999999999999999", "USD", "amount_too_many_decimals"),
            ("99999999999999999999999999999999", "USD", "amount_over_limit"),
            ("1.00", "usd", "unknown_currency"),
            ("1.00", "XXX", "unknown_currency"),
        ];
        for (amount, currency, code) in cases {
            assert_eq!(refusal(amount, currency), code, "{amount:?} {currency}");
        }
    }

    #[test]
    fn json_amounts_are_strings_and_numbers_are_refused() {
        let m: Money = serde_json::from_str(r#"{"amount":"3.10","currency":"EUR"}"#).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"amount":"3.10","currency":"EUR"}"#);
        let err = serde_json::from_str::<Money>(r#"{"amount":3.1,"currency":"EUR"}"#).unwrap_err();
        assert!(err.to_string().contains("decimal string"), "{err}");
    }

    /// Every accepted currency with an amount within its limit, as its canonical text.
    fn canonical_amount() -> impl Strategy<Value = (Currency, String)> {
        proptest::sample::select(Currency::all().collect::<Vec<_>>()).prop_flat_map(|currency| {
            let units = currency.limit * 10i64.pow(currency.minor_units);
            (1..=units).prop_map(move |units| (currency, Decimal::new(units, currency.minor_units).to_string()))
        })
    }

    proptest! {
        #[test]
        fn canonical_amounts_round_trip((currency, text) in canonical_amount()) {
            let money = Money::parse(&text, currency.code).unwrap();
            prop_assert_eq!(money.amount().to_string(), text.clone());
            let json = serde_json::to_value(money).unwrap();
            prop_assert_eq!(&json["amount"], &serde_json::json!(text));
            prop_assert_eq!(serde_json::from_value::<Money>(json).unwrap(), money);
        }

        #[test]
        fn every_other_spelling_is_refused((currency, text) in canonical_amount()) {
            let mut other = vec![
                format!("+{text}"), format!("-{text}"), format!("0{text}"), format!(" {text}"),
                format!("{text} "), format!("{text}e0"), format!("{text}."),
            ];
            match text.split_once('.') {
                Some(("0", fraction)) => other.push(format!(".{fraction}")),
                Some(_) => other.push(format!("{text}0")),
                None => other.push(format!("{text}.0")),
            }
            for spelling in other {
                prop_assert!(Money::parse(&spelling, currency.code).is_err(), "{} {} was accepted", spelling, currency);
            }
        }

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
                Money::parse(&amount.to_string(), "USD").unwrap_err().code().code(),
                "amount_too_many_decimals"
            );
        }
    }
}
