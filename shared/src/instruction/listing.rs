//! Listings: what a provider sells through signed transfer instructions, and at what price. Each
//! side keeps its own copy (`PlatformListingsTable`, `TransferListingsTable`, partition `id`), written
//! only by the provider's signed publications to that side. The payee is always the publishing
//! merchant's own account, never a field a publication can set to someone else's.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put};
use serde::Deserialize;

use crate::Problem;
use crate::dynamo::{Item, StoreError, Write, get_decimal, get_n, get_s, n, s};
use crate::ledger::AccountId;
use crate::money::{Currency, Money, MoneyInput};
use crate::problem::catalogue;

/// Rule: the copy is still the version the publication was judged against.
pub const LISTING_UNCHANGED: &str = "listing.unchanged_since_read";

/// The most characters a listing's title may have.
pub const MAX_TITLE_CHARS: usize = 120;

/// What a provider publishes: the terms of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub title: String,
    pub price: Money,
    /// The operation holds the amount; the provider then posts (part of) it or voids it.
    pub two_phase: bool,
}

/// A listing as one side keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub id: String,
    pub merchant_id: String,
    pub terms: Terms,
    /// Goes up by one on every change of the terms; an instruction names the version it priced.
    pub version: u64,
    pub updated_at: i64,
}

impl Listing {
    /// Where the money goes: the provider's own merchant account.
    pub fn payee(&self) -> AccountId {
        AccountId::merchant(&self.merchant_id)
    }

    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "merchant_id": self.merchant_id,
            "title": self.terms.title,
            "price": self.terms.price,
            "two_phase": self.terms.two_phase,
            "payee_account": self.payee().as_str(),
            "listing_version": self.version,
            "updated_at": self.updated_at,
        })
    }
}

/// A publication's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListingJson {
    title: String,
    price: MoneyInput,
    #[serde(default)]
    two_phase: bool,
    /// Optional, and only ever the publisher's own account (a client may state it to be sure).
    #[serde(default)]
    payee_account: Option<String>,
}

impl ListingJson {
    /// The terms `merchant_id`, whose account holds `currency`, may publish.
    pub fn validate(self, merchant_id: &str, currency: Currency) -> Result<Terms, Problem> {
        let title = self.title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS || !title.chars().all(shows_as_itself) {
            return Err(Problem::new(
                catalogue::INVALID_LISTING_TITLE,
                format!(
                    "title must be 1 to {MAX_TITLE_CHARS} characters, without control, invisible or \
                     direction-changing characters"
                ),
            ));
        }
        let price = self.price.validate()?;
        if price.currency() != currency {
            return Err(Problem::new(
                catalogue::LISTING_CURRENCY_MISMATCH,
                format!("the price is in {}, but merchant {merchant_id}'s account holds {currency}", price.currency()),
            ));
        }
        let own = AccountId::merchant(merchant_id);
        if let Some(named) = self.payee_account.filter(|named| named != own.as_str()) {
            return Err(Problem::new(
                catalogue::PAYEE_NOT_OWN_ACCOUNT,
                format!("a listing pays its publisher's own account {own}, not {named:?}"),
            ));
        }
        Ok(Terms { title: title.to_owned(), price, two_phase: self.two_phase })
    }
}

/// Whether `c` shows as itself: not a control character, nor one that is invisible or reorders
/// the text around it (a title is what the user confirms; "Room\u{202e}00.1" must not read as a
/// price it is not).
fn shows_as_itself(c: char) -> bool {
    !c.is_control()
        && !matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

/// What a publication does to a side's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// A new listing, at version 1.
    Created(Listing),
    /// New terms, at the next version.
    Updated(Listing),
    /// The same terms again (a retry): nothing changes, the version stays.
    Unchanged(Listing),
}

impl Publication {
    pub fn listing(&self) -> &Listing {
        match self {
            Publication::Created(l) | Publication::Updated(l) | Publication::Unchanged(l) => l,
        }
    }
}

/// How `merchant_id` publishing `terms` as listing `id` changes `current`, the side's copy.
pub fn publish(
    current: Option<&Listing>,
    id: &str,
    merchant_id: &str,
    terms: Terms,
    now: i64,
) -> Result<Publication, Problem> {
    let Some(current) = current else {
        let listing =
            Listing { id: id.to_owned(), merchant_id: merchant_id.to_owned(), terms, version: 1, updated_at: now };
        return Ok(Publication::Created(listing));
    };
    if current.merchant_id != merchant_id {
        return Err(Problem::new(catalogue::LISTING_ID_TAKEN, format!("listing {id:?} is another merchant's")));
    }
    if current.terms == terms {
        return Ok(Publication::Unchanged(current.clone()));
    }
    Ok(Publication::Updated(Listing { terms, version: current.version + 1, updated_at: now, ..current.clone() }))
}

pub fn unknown_listing(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_LISTING, format!("no listing {id:?}"))
}

/// One side's copies of the listings.
#[derive(Clone, Debug)]
pub struct ListingStore {
    client: Client,
    table: String,
}

impl ListingStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        ListingStore { client, table: table.into() }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Listing>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        output.item().map(listing_from_item).transpose()
    }

    /// The write of a created or updated copy, only if the copy is still the one it was judged
    /// against (absent, or at the version before).
    pub fn put_item(&self, listing: &Listing) -> Result<Write, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&listing.id))
            .item("merchant_id", s(&listing.merchant_id))
            .item("title", s(&listing.terms.title))
            .item("price", n(listing.terms.price.amount()))
            .item("currency", s(listing.terms.price.currency().code()))
            .item("two_phase", AttributeValue::Bool(listing.terms.two_phase))
            .item("listing_version", n(listing.version))
            .item("updated_at", n(listing.updated_at));
        put = match listing.version {
            1 => put.condition_expression("attribute_not_exists(id)"),
            v => put.condition_expression("listing_version = :before").expression_attribute_values(":before", n(v - 1)),
        };
        Ok(Write::put(LISTING_UNCHANGED, put.build()?))
    }
}

fn listing_from_item(item: &Item) -> Result<Listing, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("a stored listing is corrupt: {what}"));
    let currency: Currency = get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?;
    Ok(Listing {
        id: get_s(item, "id")?.to_owned(),
        merchant_id: get_s(item, "merchant_id")?.to_owned(),
        terms: Terms {
            title: get_s(item, "title")?.to_owned(),
            price: Money::new(get_decimal(item, "price")?, currency).map_err(|_| corrupt("price"))?,
            two_phase: matches!(item.get("two_phase"), Some(AttributeValue::Bool(true))),
        },
        version: get_n(item, "listing_version")?,
        updated_at: get_n(item, "updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(amount: &str) -> Money {
        Money::parse(amount, "USD").expect("an amount")
    }

    fn json(title: &str, price: &str, payee: Option<&str>) -> ListingJson {
        serde_json::from_value(serde_json::json!({
            "title": title,
            "price": {"amount": price, "currency": "USD"},
            "payee_account": payee,
        }))
        .expect("a listing body")
    }

    fn terms(price: &str) -> Terms {
        Terms { title: "Sea view room".into(), price: usd(price), two_phase: false }
    }

    #[test]
    fn a_listing_pays_only_its_publishers_account_in_its_currency() {
        let usd_code: Currency = "USD".parse().unwrap();
        assert_eq!(json(" Sea view room ", "80.00", None).validate("m_1", usd_code).unwrap(), terms("80.00"));
        assert!(json("Sea view room", "80.00", Some("merchant:m_1")).validate("m_1", usd_code).is_ok());
        let refused =
            |body: ListingJson, currency: &str| body.validate("m_1", currency.parse().unwrap()).unwrap_err().code;
        assert_eq!(refused(json("Sea view room", "80.00", Some("merchant:m_2")), "USD"), "payee_not_own_account");
        assert_eq!(refused(json("Sea view room", "80.00", Some("wallet:m_1")), "USD"), "payee_not_own_account");
        assert_eq!(refused(json("Sea view room", "80.00", None), "EUR"), "listing_currency_mismatch");
        assert_eq!(refused(json("  ", "80.00", None), "USD"), "invalid_listing_title");
        assert_eq!(refused(json(&"x".repeat(MAX_TITLE_CHARS + 1), "80.00", None), "USD"), "invalid_listing_title");
        for hidden in ["Room\u{202e}", "Ro\u{200b}om", "Room\u{2066}", "Ro\nom"] {
            assert_eq!(refused(json(hidden, "80.00", None), "USD"), "invalid_listing_title", "{hidden:?}");
        }
        assert_eq!(refused(json("Room", "0.00", None), "USD"), "amount_not_positive");
        let unknown: Result<ListingJson, _> = serde_json::from_value(
            serde_json::json!({"title": "t", "price": {"amount": "1.00", "currency": "USD"}, "payee": "x"}),
        );
        assert!(unknown.is_err(), "an unknown field is refused, not ignored");
    }

    #[test]
    fn the_version_goes_up_on_every_change_and_only_then() {
        let created = publish(None, "l_1", "m_1", terms("80.00"), 10).unwrap();
        let Publication::Created(v1) = &created else { panic!("{created:?}") };
        assert_eq!((v1.version, v1.payee().as_str()), (1, "merchant:m_1"));
        assert_eq!(publish(Some(v1), "l_1", "m_1", terms("80.00"), 20).unwrap(), Publication::Unchanged(v1.clone()));
        let Publication::Updated(v2) = publish(Some(v1), "l_1", "m_1", terms("85.00"), 20).unwrap() else { panic!() };
        assert_eq!((v2.version, v2.terms.price, v2.updated_at), (2, usd("85.00"), 20));
        let two_phase = Terms { two_phase: true, ..terms("85.00") };
        assert_eq!(publish(Some(&v2), "l_1", "m_1", two_phase, 30).unwrap().listing().version, 3);
        assert_eq!(publish(Some(&v2), "l_1", "m_2", terms("1.00"), 30).unwrap_err().code, "listing_id_taken");
    }
}
