//! Capability 9, payment instruments: a user's bank cards and bank accounts, held once. An
//! instrument is kept as an id, its brand and last four, and (a card) its expiry and holder; the
//! full number is sealed under a data key of its own from KMS (`InstrumentsKey`, encryption context
//! `owner=instrument/<id>`) and is never logged, returned, queued or put in an idempotency record.
//! A card's security code is never accepted.
//!
//! - this module: the rules, pure: a card number's length and Luhn check per brand, an expiry not
//!   passed, a holder's name, an IBAN's check digits; what a user may see of an instrument.
//! - `store`: the instruments (`InstrumentsTable`, partition `user`, sort `id`).
//! - `api`: the user's routes.
//! - `partner`, `partner_admin`: the partner platforms users link instruments to, and their admin
//!   routes (registered, suspended, keys rotated: audited).
//! - `cash`: money into the wallet from an instrument, and out of it to a bank account, through
//!   the bank port (and a partner's charges of a linked instrument).
//! - `link`: identity linking: a partner identity linked to a user's instruments with a grant, the
//!   partner's reads and charges within it.

pub mod api;
pub mod cash;
pub mod link;
pub mod partner;
pub mod partner_admin;
pub mod store;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Problem;
use crate::crypto::Secret;
use crate::problem::catalogue;

/// Fields that carry a card's security code, under the names clients give them: refused by name,
/// never read.
const SECURITY_CODE_FIELDS: [&str; 6] = ["cvv", "cvc", "cvv2", "cvc2", "csc", "security_code"];

/// The most characters a holder's name may have.
pub const MAX_HOLDER_CHARS: usize = 100;

/// How many years ahead a card's expiry may be.
pub const MAX_EXPIRY_YEARS: i32 = 20;

/// A card network, known by its number's leading digits and the lengths it issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    UnionPay,
    Diners,
}

impl Brand {
    const ALL: [Brand; 7] =
        [Brand::Visa, Brand::Mastercard, Brand::Amex, Brand::Discover, Brand::Jcb, Brand::UnionPay, Brand::Diners];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::UnionPay => "unionpay",
            Brand::Diners => "diners",
        }
    }

    /// The brand of a number (digits only), by its issuer identification prefix.
    fn of(digits: &str) -> Option<Self> {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
        match () {
            _ if digits.starts_with('4') => Some(Brand::Visa),
            _ if (51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4)) => Some(Brand::Mastercard),
            _ if [34, 37].contains(&prefix(2)) => Some(Brand::Amex),
            _ if prefix(4) == 6011 || (644..=649).contains(&prefix(3)) || prefix(2) == 65 => Some(Brand::Discover),
            _ if (3528..=3589).contains(&prefix(4)) => Some(Brand::Jcb),
            _ if prefix(2) == 62 => Some(Brand::UnionPay),
            _ if (300..=305).contains(&prefix(3)) || [36, 38, 39].contains(&prefix(2)) => Some(Brand::Diners),
            _ => None,
        }
    }

    /// The number lengths the brand issues.
    fn lengths(self) -> &'static [usize] {
        match self {
            Brand::Visa => &[13, 16, 19],
            Brand::Mastercard => &[16],
            Brand::Amex => &[15],
            Brand::Discover | Brand::Jcb | Brand::UnionPay => &[16, 17, 18, 19],
            Brand::Diners => &[14, 15, 16, 17, 18, 19],
        }
    }
}

/// Whether `digits` pass the Luhn check.
fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A card number, checked: its digits (kept secret: `Debug` shows nothing of them), brand and
/// last four.
#[derive(Debug)]
pub struct CardNumber {
    pub digits: Secret<String>,
    pub brand: Brand,
    pub last4: String,
}

impl CardNumber {
    /// Digits, with spaces or dashes between groups allowed. A refusal never repeats the number.
    pub fn parse(text: &str) -> Result<Self, Problem> {
        let digits: String = text.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        let invalid = |why: &str| Problem::new(catalogue::INVALID_CARD_NUMBER, format!("the card number {why}"));
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 19 {
            return Err(invalid("must be 12 to 19 digits (spaces or dashes between groups allowed)"));
        }
        let brand = Brand::of(&digits).ok_or_else(|| {
            Problem::new(catalogue::CARD_BRAND_NOT_ACCEPTED, "the card's network is not one we accept".to_owned())
        })?;
        if !brand.lengths().contains(&digits.len()) {
            return Err(invalid(&format!("has {} digits, which no {} card has", digits.len(), brand.as_str())));
        }
        if !luhn(&digits) {
            return Err(invalid("fails its check digit (a digit is mistyped)"));
        }
        let last4 = digits[digits.len() - 4..].to_owned();
        Ok(CardNumber { digits: Secret::new(digits), brand, last4 })
    }
}

/// An IBAN, checked: its text (kept secret, uppercase, no spaces), country and last four.
#[derive(Debug)]
pub struct Iban {
    pub text: Secret<String>,
    pub country: String,
    pub last4: String,
}

impl Iban {
    pub fn parse(text: &str) -> Result<Self, Problem> {
        let iban: String = text.chars().filter(|c| *c != ' ').collect::<String>().to_ascii_uppercase();
        let invalid = || {
            Problem::new(
                catalogue::INVALID_IBAN,
                "the IBAN must be 15 to 34 letters and digits, starting with a country code, with valid check digits",
            )
        };
        let well_formed = (15..=34).contains(&iban.len())
            && iban.bytes().all(|b| b.is_ascii_alphanumeric())
            && iban.as_bytes()[..2].iter().all(u8::is_ascii_uppercase)
            && iban.as_bytes()[2..4].iter().all(u8::is_ascii_digit);
        if !well_formed {
            return Err(invalid());
        }
        // ISO 13616: the first four characters moved to the end, letters as 10..35, mod 97 is 1.
        let rearranged = iban[4..].bytes().chain(iban[..4].bytes());
        let remainder = rearranged.fold(0u32, |acc, b| {
            let value = if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') + 10 };
            if value >= 10 { (acc * 100 + value) % 97 } else { (acc * 10 + value) % 97 }
        });
        if remainder != 1 {
            return Err(invalid());
        }
        Ok(Iban { country: iban[..2].to_owned(), last4: iban[iban.len() - 4..].to_owned(), text: Secret::new(iban) })
    }
}

/// A card's expiry: the last month it may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub month: u32,
    pub year: i32,
}

impl Expiry {
    /// `month`/`year` (four digits), not passed at `(this_year, this_month)` and at most
    /// `MAX_EXPIRY_YEARS` ahead.
    pub fn check(month: u32, year: i32, (this_year, this_month): (i32, u32)) -> Result<Self, Problem> {
        if !(1..=12).contains(&month) || !(2000..=9999).contains(&year) {
            return Err(Problem::new(
                catalogue::INVALID_EXPIRY,
                "expiry_month must be 1 to 12 and expiry_year four digits",
            ));
        }
        if (year, month) < (this_year, this_month) {
            return Err(Problem::new(
                catalogue::CARD_EXPIRED,
                format!("the card expired at the end of {month:02}/{year}"),
            ));
        }
        if year > this_year + MAX_EXPIRY_YEARS {
            return Err(Problem::new(
                catalogue::INVALID_EXPIRY,
                format!("expiry_year is more than {MAX_EXPIRY_YEARS} years ahead"),
            ));
        }
        Ok(Expiry { month, year })
    }
}

/// The year and month of `epoch_seconds` (UTC), for expiry checks.
pub fn year_month(epoch_seconds: i64) -> (i32, u32) {
    // Civil-from-days (Howard Hinnant's algorithm): no calendar crate for one conversion.
    let days = epoch_seconds.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as u32)
}

impl Expiry {
    /// When the card expires: the first second (UTC) after the last day of its expiry month.
    pub fn ends_at(&self) -> i64 {
        let (year, month) = if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        // Days-from-civil (Howard Hinnant's algorithm), the inverse of `year_month`'s.
        let y = i64::from(year) - i64::from(month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (i64::from(month) + 9) % 12;
        let doy = (153 * mp + 2) / 5;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        (era * 146_097 + doe - 719_468) * 86_400
    }
}

fn holder(name: &str) -> Result<String, Problem> {
    let name = name.trim();
    // A name is shown and kept in the clear: a card number typed into it must not be.
    let digits = name.chars().filter(char::is_ascii_digit).count();
    if name.is_empty() || name.chars().count() > MAX_HOLDER_CHARS || !crate::text::is_plain(name) || digits >= 6 {
        return Err(Problem::new(
            catalogue::INVALID_HOLDER,
            format!("holder must be 1 to {MAX_HOLDER_CHARS} characters that show as themselves, not a number"),
        ));
    }
    Ok(name.to_owned())
}

/// What a user adds (`POST /instruments`), or replaces an instrument with (`PUT /instruments/{id}`).
/// A card's security code is refused by name (`cvv`, `cvc`, `cvv2`, `cvc2`, `csc`,
/// `security_code`), as is any other field.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum InstrumentRequest {
    /// A bank card.
    Card {
        /// 13 to 19 digits, spaces or dashes between groups allowed; of a network we accept, with
        /// its check digit right.
        #[cfg_attr(feature = "openapi", schemars(regex(pattern = r"^[ -]*([0-9][ -]*){13,19}$")))]
        number: String,
        #[serde(deserialize_with = "crate::http::whole")]
        #[cfg_attr(feature = "openapi", schemars(range(min = 1, max = 12)))]
        expiry_month: u32,
        /// Four digits; with the month, not passed (`card_expired`) and at most 20 years ahead.
        #[serde(deserialize_with = "crate::http::whole")]
        #[cfg_attr(feature = "openapi", schemars(range(min = 2000, max = 9999)))]
        expiry_year: i32,
        /// 1 to 100 characters that show as themselves (surrounding spaces aside), fewer than six
        /// of them digits.
        #[cfg_attr(feature = "openapi", schemars(length(min = 1, max = MAX_HOLDER_CHARS)))]
        holder: String,
    },
    /// A bank account.
    BankAccount {
        /// 15 to 34 letters and digits (spaces allowed), a country code and check digits first.
        #[cfg_attr(
            feature = "openapi",
            schemars(regex(pattern = r"^ *[A-Za-z] *[A-Za-z] *[0-9] *[0-9]( *[A-Za-z0-9]){11,30} *$"))
        )]
        iban: String,
        /// 1 to 100 characters that show as themselves (surrounding spaces aside), fewer than six
        /// of them digits.
        #[cfg_attr(feature = "openapi", schemars(length(min = 1, max = MAX_HOLDER_CHARS)))]
        holder: String,
    },
}

/// What kind of instrument, with what only it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Details {
    Card { brand: Brand, expiry: Expiry },
    BankAccount { country: String },
}

/// What may be shown of an instrument's kind and what only it has (never its number).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DetailsView {
    Card {
        /// `visa`, `mastercard`, `amex`, `discover`, `jcb`, `unionpay` or `diners`.
        brand: &'static str,
        expiry_month: u32,
        expiry_year: i32,
    },
    BankAccount {
        /// The IBAN's country code.
        country: String,
    },
}

impl Details {
    pub fn view(&self) -> DetailsView {
        match self {
            Details::Card { brand, expiry } => {
                DetailsView::Card { brand: brand.as_str(), expiry_month: expiry.month, expiry_year: expiry.year }
            }
            Details::BankAccount { country } => DetailsView::BankAccount { country: country.clone() },
        }
    }
}

/// A new instrument, checked: what is kept in the clear, and the number to seal.
#[derive(Debug)]
pub struct NewInstrument {
    pub details: Details,
    pub last4: String,
    pub holder: String,
    pub number: Secret<String>,
}

impl NewInstrument {
    /// A request body, judged at `now`. A security code is refused by name before anything else is
    /// read, and no refusal repeats what was sent.
    pub fn parse(body: &Value, now: i64) -> Result<Self, Problem> {
        if let Some(field) = SECURITY_CODE_FIELDS.iter().find(|f| body.get(**f).is_some()) {
            return Err(Problem::new(
                catalogue::SECURITY_CODE_NOT_ACCEPTED,
                format!("{field}: a card's security code is never accepted or stored; send the card without it"),
            ));
        }
        // serde's own messages may quote a value (a number sent as a JSON number): not these.
        let json = serde_json::from_value::<InstrumentRequest>(body.clone()).map_err(|_| {
            Problem::new(
                catalogue::MALFORMED_JSON,
                "an instrument is {\"kind\": \"card\", \"number\", \"expiry_month\", \"expiry_year\", \"holder\"} \
                 or {\"kind\": \"bank_account\", \"iban\", \"holder\"}, numbers and names as strings, months and years \
                 as integers",
            )
        })?;
        match json {
            InstrumentRequest::Card { number, expiry_month, expiry_year, holder: name } => {
                let card = CardNumber::parse(&number)?;
                let expiry = Expiry::check(expiry_month, expiry_year, year_month(now))?;
                Ok(NewInstrument {
                    details: Details::Card { brand: card.brand, expiry },
                    last4: card.last4,
                    holder: holder(&name)?,
                    number: card.digits,
                })
            }
            InstrumentRequest::BankAccount { iban, holder: name } => {
                let iban = Iban::parse(&iban)?;
                Ok(NewInstrument {
                    details: Details::BankAccount { country: iban.country },
                    last4: iban.last4,
                    holder: holder(&name)?,
                    number: iban.text,
                })
            }
        }
    }
}

/// An instrument as kept: never its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    pub id: String,
    pub user: String,
    pub details: Details,
    pub last4: String,
    pub holder: String,
    pub created_at: i64,
}

/// The KMS owner (encryption context) of instrument `id`'s number's data key.
pub fn number_key_owner(id: &str) -> String {
    format!("instrument/{id}")
}

/// What a sealed number is bound to (the seal's associated data): its owner and its instrument.
pub fn number_binding(user: &str, id: &str) -> String {
    format!("{user}/{id}")
}

impl Instrument {
    /// How it shows in a record that outlives it: `visa 1111`, `DE 3000`.
    pub fn label(&self) -> String {
        match &self.details {
            Details::Card { brand, .. } => format!("{} {}", brand.as_str(), self.last4),
            Details::BankAccount { country } => format!("{country} {}", self.last4),
        }
    }

    pub fn view(&self) -> InstrumentView {
        InstrumentView {
            id: self.id.clone(),
            details: self.details.view(),
            last4: self.last4.clone(),
            holder: self.holder.clone(),
            created_at: self.created_at,
        }
    }
}

/// An instrument as its owner sees it: never its number.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct InstrumentView {
    pub id: String,
    #[serde(flatten)]
    pub details: DetailsView,
    /// The number's last four digits (a card's) or characters (an IBAN's).
    pub last4: String,
    pub holder: String,
    pub created_at: i64,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// 2026-12-06.
    const NOW: i64 = 1_796_515_200;

    #[test]
    fn test_cards_of_each_network_are_read_with_their_brand_and_last_four() {
        for (number, brand) in [
            ("4111 1111 1111 1111", Brand::Visa),
            ("4012888888881881", Brand::Visa),
            ("5555-5555-5555-4444", Brand::Mastercard),
            ("2223003122003222", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("3530111333300000", Brand::Jcb),
            ("6200000000000005", Brand::UnionPay),
            ("36227206271667", Brand::Diners),
        ] {
            let card = CardNumber::parse(number).unwrap_or_else(|p| panic!("{number}: {}", p.detail));
            assert_eq!(card.brand, brand, "{number}");
            let digits: String = number.chars().filter(char::is_ascii_digit).collect();
            assert_eq!((card.last4.as_str(), card.digits.expose()), (&digits[digits.len() - 4..], &digits));
        }
    }

    #[test]
    fn a_bad_number_is_refused_without_being_repeated() {
        for (number, code) in [
            ("4111111111111112", "invalid_card_number"),
            ("411111111111111", "invalid_card_number"),
            ("41111111111111111111", "invalid_card_number"),
            ("4111-1111-1111-111x", "invalid_card_number"),
            ("", "invalid_card_number"),
            ("9111111111111111", "card_brand_not_accepted"),
            ("37828224631000", "invalid_card_number"),
        ] {
            let refused = CardNumber::parse(number).err().unwrap_or_else(|| panic!("{number} accepted"));
            assert_eq!(refused.code, code, "{number}");
            let digits: String = number.chars().filter(char::is_ascii_digit).collect();
            assert!(digits.len() < 6 || !refused.detail.contains(&digits[..6]), "{}", refused.detail);
        }
    }

    #[test]
    fn an_expiry_is_this_month_or_later_and_not_decades_ahead() {
        let now = year_month(NOW);
        assert_eq!(now, (2026, 12));
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(951_782_400), (2000, 2), "29 Feb 2000");
        assert!(Expiry::check(12, 2026, now).is_ok(), "usable to the end of its month");
        assert_eq!(Expiry::check(11, 2026, now).unwrap_err().code, "card_expired");
        assert_eq!(Expiry::check(13, 2027, now).unwrap_err().code, "invalid_expiry");
        assert_eq!(Expiry::check(1, 27, now).unwrap_err().code, "invalid_expiry");
        assert_eq!(Expiry::check(1, 2047, now).unwrap_err().code, "invalid_expiry");
    }

    #[test]
    fn an_iban_needs_its_check_digits() {
        let iban = Iban::parse("DE89 3704 0044 0532 0130 00").unwrap();
        assert_eq!(
            (iban.country.as_str(), iban.last4.as_str(), iban.text.expose().as_str()),
            ("DE", "3000", "DE89370400440532013000")
        );
        assert!(Iban::parse("gb82 west 1234 5698 7654 32").is_ok());
        for bad in ["DE88370400440532013000", "DE89", "1289370400440532013000", "DE89-3704-0044-0532-0130-00"] {
            assert_eq!(Iban::parse(bad).err().map(|p| p.code), Some("invalid_iban"), "{bad}");
        }
    }

    #[test]
    fn a_security_code_is_refused_by_name_and_nothing_sent_is_repeated() {
        let card = json!({"kind": "card", "number": "4111111111111111", "expiry_month": 12, "expiry_year": 2030,
                          "holder": "Ada Lovelace"});
        let added = NewInstrument::parse(&card, NOW).unwrap();
        assert_eq!((added.last4.as_str(), added.number.expose().as_str()), ("1111", "4111111111111111"));
        let mut with_code = card.clone();
        with_code["cvv"] = "123".into();
        assert_eq!(NewInstrument::parse(&with_code, NOW).unwrap_err().code, "security_code_not_accepted");
        // A number sent as a JSON number: the refusal does not quote it.
        let mut numeric = card.clone();
        numeric["number"] = json!(4111111111111111u64);
        let refused = NewInstrument::parse(&numeric, NOW).unwrap_err();
        assert_eq!(refused.code, "malformed_json");
        assert!(!refused.detail.contains("4111"), "{}", refused.detail);
        for holder in ["Ada\u{202e}", "4111 1111 1111 1111", "Ada 411111"] {
            let mut named = card.clone();
            named["holder"] = holder.into();
            assert_eq!(NewInstrument::parse(&named, NOW).unwrap_err().code, "invalid_holder", "{holder}");
        }
        let account = json!({"kind": "bank_account", "iban": "DE89370400440532013000", "holder": "Ada Lovelace"});
        let view = json!(
            Instrument {
                id: "in_1".into(),
                user: "ada".into(),
                details: NewInstrument::parse(&account, NOW).unwrap().details,
                last4: "3000".into(),
                holder: "Ada Lovelace".into(),
                created_at: NOW,
            }
            .view()
        );
        assert_eq!(
            view,
            json!({"id": "in_1", "kind": "bank_account", "country": "DE", "last4": "3000", "holder": "Ada Lovelace",
                   "created_at": NOW})
        );
    }

    #[test]
    fn a_card_shows_its_brand_and_expiry_and_its_month_and_year_may_end_in_point_zero() {
        let card = json!({"kind": "card", "number": "4111111111111111", "expiry_month": 12.0, "expiry_year": 2030.0,
                          "holder": "Ada Lovelace"});
        let added = NewInstrument::parse(&card, NOW).unwrap();
        let instrument = Instrument {
            id: "in_1".into(),
            user: "ada".into(),
            details: added.details,
            last4: added.last4,
            holder: added.holder,
            created_at: NOW,
        };
        assert_eq!(
            json!(instrument.view()),
            json!({"id": "in_1", "kind": "card", "brand": "visa", "expiry_month": 12, "expiry_year": 2030,
                   "last4": "1111", "holder": "Ada Lovelace", "created_at": NOW})
        );
        let mut half = card.clone();
        half["expiry_month"] = json!(12.5);
        assert_eq!(NewInstrument::parse(&half, NOW).unwrap_err().code, "malformed_json");
    }

    proptest! {
        /// Any valid number with one digit changed fails the check digit (Luhn catches every
        /// single-digit error).
        #[test]
        fn one_mistyped_digit_is_caught(position in 0usize..16, delta in 1u8..10) {
            let valid = "4111111111111111";
            let mut bytes = valid.as_bytes().to_vec();
            bytes[position] = b'0' + (bytes[position] - b'0' + delta) % 10;
            let typo = String::from_utf8(bytes).unwrap();
            prop_assert!(CardNumber::parse(&typo).is_err());
        }
    }
}
