//! Listings: what a provider sells through signed transfer instructions, and at what price. Each
//! side keeps its own copy (`PlatformListingsTable`, `TransferListingsTable`, partition `id`), written
//! only by the provider's signed publications to that side. The payee is always the publishing
//! merchant's own account, never a field a publication can set to someone else's.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, Update};
use serde::{Deserialize, Serialize};

use crate::Problem;
use crate::dynamo::{Item, StoreError, Write, get_decimal, get_n, get_s, n, s};
use crate::ledger::AccountId;
use crate::money::{Currency, Money, MoneyInput};
use crate::problem::catalogue;

/// Rule: the copy is still the version (and freeze) the publication was judged against.
pub const LISTING_UNCHANGED: &str = "listing.unchanged_since_read";
/// Rule: the copy is at the version an operation was judged on, and not frozen.
pub const LISTING_AS_JUDGED: &str = "listing.as_judged";
/// Rule: the copy may be frozen for a divergence at its version: not frozen, and that version not
/// cleared by an admin.
pub const LISTING_FREEZABLE: &str = "listing.freezable";
/// Rule: the copy is frozen (an admin's unfreeze).
pub const LISTING_FROZEN: &str = "listing.frozen";

/// The highest `listing_version`: the largest integer every JSON client reads exactly (2^53 - 1), so
/// the next version is always one more.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

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
    /// The transfer side's divergence freeze (never set on the platform's copy).
    pub freeze: Freeze,
}

/// Whether the transfer side froze its copy because the platform's disagreed at one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freeze {
    /// When it was frozen; `None` when it is not.
    pub frozen_at: Option<i64>,
    /// An admin unfroze it at this version: divergences at it (or before) no longer freeze it (a
    /// buggy platform cannot freeze a listing for good), though they are still refused.
    pub cleared_through: u64,
}

impl Listing {
    /// Whether a divergence at `version` freezes this copy now.
    pub fn freezes_at(&self, version: u64) -> bool {
        self.freeze.frozen_at.is_none() && version > self.freeze.cleared_through
    }

    /// Where the money goes: the provider's own merchant account.
    pub fn payee(&self) -> AccountId {
        AccountId::merchant(&self.merchant_id)
    }

    pub fn view(&self) -> ListingView {
        ListingView {
            id: self.id.clone(),
            merchant_id: self.merchant_id.clone(),
            title: self.terms.title.clone(),
            price: self.terms.price,
            two_phase: self.terms.two_phase,
            payee_account: self.payee().as_str().to_owned(),
            listing_version: self.version,
            updated_at: self.updated_at,
            frozen: self.freeze.frozen_at.is_some(),
        }
    }
}

/// A side's copy of a listing.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ListingView {
    id: String,
    merchant_id: String,
    title: String,
    price: Money,
    /// An operation holds the amount; the provider then posts (part of) it or voids it.
    two_phase: bool,
    /// Where the money goes: the publishing merchant's own account (`merchant:<id>`).
    payee_account: String,
    /// Goes up by one on every change of the terms; an instruction names the version it priced.
    listing_version: u64,
    updated_at: i64,
    /// The transfer side froze its copy (the platform's disagreed at one version) until an admin
    /// unfreezes it; never the platform's copy.
    frozen: bool,
}

/// A publication's body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ListingJson {
    /// The version these terms are: one above this side's copy for a change, the copy's own for
    /// the same terms again, any (from 1) for this side's first copy. The provider numbers its own
    /// versions, so both sides' copies carry the same number for the same terms.
    #[serde(deserialize_with = "crate::http::whole")]
    #[cfg_attr(feature = "openapi", schemars(range(min = 1, max = MAX_VERSION)))]
    listing_version: u64,
    /// 1 to 120 characters once trimmed, each showing as itself: no control, invisible or
    /// direction-changing character.
    #[cfg_attr(feature = "openapi", schemars(length(min = 1)))]
    title: String,
    /// In the currency the merchant's account holds.
    price: MoneyInput,
    #[serde(default)]
    two_phase: bool,
    /// Optional, and only ever the publisher's own account (a client may state it to be sure).
    #[serde(default)]
    payee_account: Option<String>,
}

impl ListingJson {
    /// The version `merchant_id`, whose account holds `currency`, publishes, and its terms.
    pub fn validate(self, merchant_id: &str, currency: Currency) -> Result<(u64, Terms), Problem> {
        let title = self.title.trim();
        if title.is_empty()
            || title.chars().count() > MAX_TITLE_CHARS
            || !title.chars().all(crate::text::shows_as_itself)
        {
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
        if !(1..=MAX_VERSION).contains(&self.listing_version) {
            return Err(Problem::new(
                catalogue::INVALID_LISTING_VERSION,
                format!("listing_version must be 1 to {MAX_VERSION}"),
            ));
        }
        let own = AccountId::merchant(merchant_id);
        if let Some(named) = self.payee_account.filter(|named| named != own.as_str()) {
            // Quoted in part: the refusal is audited, and a body may be large.
            let quoted = crate::text::head(&named, 80);
            return Err(Problem::new(
                catalogue::PAYEE_NOT_OWN_ACCOUNT,
                format!("a listing pays its publisher's own account {own}, not {quoted:?}"),
            ));
        }
        Ok((self.listing_version, Terms { title: title.to_owned(), price, two_phase: self.two_phase }))
    }
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

/// How `merchant_id` publishing `terms` as version `version` of listing `id` changes `current`, the
/// side's copy: only the next version changes it (any version creates the side's first copy), and
/// the current one again with the same terms is a retry. A late retry of older terms, or a version
/// skipped, changes nothing.
pub fn publish(
    current: Option<&Listing>,
    id: &str,
    merchant_id: &str,
    (version, terms): (u64, Terms),
    now: i64,
) -> Result<Publication, Problem> {
    // A listing's id names its merchant: no merchant can take, or squat, another's ids.
    if id.strip_prefix(merchant_id).and_then(|rest| rest.strip_prefix('.')).is_none_or(str::is_empty) {
        return Err(Problem::new(
            catalogue::LISTING_ID_NOT_OWN,
            format!("merchant {merchant_id}'s listing ids start with \"{merchant_id}.\", and {id:?} does not"),
        ));
    }
    let current_version = current.map_or(0, |c| c.version);
    match current {
        Some(current) if version == current.version && terms == current.terms => {
            Ok(Publication::Unchanged(current.clone()))
        }
        Some(current) if version == current.version + 1 => {
            Ok(Publication::Updated(Listing { terms, version, updated_at: now, ..current.clone() }))
        }
        // A side's first copy takes the provider's number: it may come to this side later.
        None if version >= 1 => Ok(Publication::Created(Listing {
            id: id.to_owned(),
            merchant_id: merchant_id.to_owned(),
            terms,
            version,
            updated_at: now,
            freeze: Freeze::default(),
        })),
        _ => Err(Problem::new(
            catalogue::LISTING_VERSION_MISMATCH,
            format!(
                "listing {id:?} is at version {current_version}: publish version {} to change it (or {current_version} with its terms unchanged)",
                current_version + 1
            ),
        )
        .with("current_version", current_version)),
    }
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
    /// against: absent (`before` is `None`), or at version `before`.
    pub fn put_item(&self, listing: &Listing, before: Option<u64>) -> Result<Write, StoreError> {
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
        if let Some(at) = listing.freeze.frozen_at {
            put = put.item("frozen_at", n(at));
        }
        if listing.freeze.cleared_through > 0 {
            put = put.item("cleared_through", n(listing.freeze.cleared_through));
        }
        // The freeze is carried over as read: a freeze or unfreeze that lands meanwhile makes the
        // publication judge again rather than be undone by it.
        put = match (before, listing.freeze.frozen_at) {
            (None, _) => put.condition_expression("attribute_not_exists(id)"),
            (Some(version), None) => put
                .condition_expression("listing_version = :before AND attribute_not_exists(frozen_at)")
                .expression_attribute_values(":before", n(version)),
            (Some(version), Some(at)) => put
                .condition_expression("listing_version = :before AND frozen_at = :frozen")
                .expression_attribute_values(":before", n(version))
                .expression_attribute_values(":frozen", n(at)),
        };
        Ok(Write::put(LISTING_UNCHANGED, put.build()?))
    }

    /// The check that the copy is still at `version` and not frozen, for an operation's transaction.
    pub fn as_judged_check(&self, id: &str, version: u64) -> Result<Write, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .condition_expression("listing_version = :version AND attribute_not_exists(frozen_at)")
            .expression_attribute_values(":version", n(version))
            .build()?;
        Ok(Write::check(LISTING_AS_JUDGED, check))
    }

    /// Freezes the copy for a divergence at `version`, if it may be (`Listing::freezes_at`).
    pub fn freeze_item(&self, id: &str, version: u64, at: i64) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET frozen_at = :at")
            .condition_expression(
                "listing_version = :version AND attribute_not_exists(frozen_at) AND \
                 (attribute_not_exists(cleared_through) OR cleared_through < :version)",
            )
            .expression_attribute_values(":at", n(at))
            .expression_attribute_values(":version", n(version))
            .build()?;
        Ok(Write::update(LISTING_FREEZABLE, update))
    }

    /// Unfreezes the copy the admin read at `version`: divergences at it no longer freeze it (a
    /// version published since stays frozen until it too is looked at).
    pub fn unfreeze_item(&self, id: &str, version: u64) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("REMOVE frozen_at SET cleared_through = :version")
            .condition_expression("attribute_exists(frozen_at) AND listing_version = :version")
            .expression_attribute_values(":version", n(version))
            .build()?;
        Ok(Write::update(LISTING_FROZEN, update))
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
        freeze: Freeze {
            frozen_at: if item.contains_key("frozen_at") { Some(get_n(item, "frozen_at")?) } else { None },
            cleared_through: if item.contains_key("cleared_through") { get_n(item, "cleared_through")? } else { 0 },
        },
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
            "listing_version": 1,
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
        assert_eq!(json(" Sea view room ", "80.00", None).validate("m_1", usd_code).unwrap(), (1, terms("80.00")));
        for shown in ["Zimmer mit Meerblick", "海景房", "غرفة مطلة على البحر", "Café ☕ 🌊"] {
            assert!(json(shown, "80.00", None).validate("m_1", usd_code).is_ok(), "{shown}");
        }
        assert!(json("Sea view room", "80.00", Some("merchant:m_1")).validate("m_1", usd_code).is_ok());
        let refused =
            |body: ListingJson, currency: &str| body.validate("m_1", currency.parse().unwrap()).unwrap_err().code;
        assert_eq!(refused(json("Sea view room", "80.00", Some("merchant:m_2")), "USD"), "payee_not_own_account");
        assert_eq!(refused(json("Sea view room", "80.00", Some("wallet:m_1")), "USD"), "payee_not_own_account");
        assert_eq!(refused(json("Sea view room", "80.00", None), "EUR"), "listing_currency_mismatch");
        assert_eq!(refused(json("  ", "80.00", None), "USD"), "invalid_listing_title");
        assert_eq!(refused(json(&"x".repeat(MAX_TITLE_CHARS + 1), "80.00", None), "USD"), "invalid_listing_title");
        for hidden in [
            "Room\u{202e}",
            "Ro\u{200b}om",
            "Room\u{2066}",
            "Ro\nom",
            "Room\u{61c}",
            "Ro\u{2028}om",
            "Ro\u{ad}om",
            "Room\u{fe0f}",
            "Room\u{e0041}",
            "Room\u{3164}",
            "Room\u{17b4}",
            "Room\u{e000}",
        ] {
            assert_eq!(refused(json(hidden, "80.00", None), "USD"), "invalid_listing_title", "{hidden:?}");
        }
        assert_eq!(refused(json("Room", "0.00", None), "USD"), "amount_not_positive");
        let version = |v: u64| {
            let mut body = serde_json::json!({"listing_version": v, "title": "Room", "price": {"amount": "1.00", "currency": "USD"}});
            body["listing_version"] = serde_json::json!(v);
            serde_json::from_value::<ListingJson>(body).unwrap().validate("m_1", usd_code)
        };
        assert_eq!(version(0).unwrap_err().code, "invalid_listing_version");
        assert_eq!(version(MAX_VERSION + 1).unwrap_err().code, "invalid_listing_version");
        assert_eq!(version(MAX_VERSION).unwrap().0, MAX_VERSION);
        let long_payee = json("Room", "1.00", Some(&"\u{200b}".repeat(10_000))).validate("m_1", usd_code).unwrap_err();
        assert!(long_payee.detail.len() < 1_000, "the refusal quotes the payee in part: {}", long_payee.detail.len());
        let unknown: Result<ListingJson, _> = serde_json::from_value(
            serde_json::json!({"listing_version": 1, "title": "t", "price": {"amount": "1.00", "currency": "USD"}, "payee": "x"}),
        );
        assert!(unknown.is_err(), "an unknown field is refused, not ignored");
    }

    #[test]
    fn only_the_next_version_changes_a_listing_and_the_same_one_again_is_a_retry() {
        let created = publish(None, "m_1.l_1", "m_1", (1, terms("80.00")), 10).unwrap();
        let Publication::Created(v1) = &created else { panic!("{created:?}") };
        assert_eq!((v1.version, v1.payee().as_str()), (1, "merchant:m_1"));
        assert_eq!(
            publish(Some(v1), "m_1.l_1", "m_1", (1, terms("80.00")), 20).unwrap(),
            Publication::Unchanged(v1.clone())
        );
        let Publication::Updated(v2) = publish(Some(v1), "m_1.l_1", "m_1", (2, terms("85.00")), 20).unwrap() else {
            panic!()
        };
        assert_eq!((v2.version, v2.terms.price, v2.updated_at), (2, usd("85.00"), 20));
        let mismatch = |current: Option<&Listing>, version: u64, price: &str| {
            let refused = publish(current, "m_1.l_1", "m_1", (version, terms(price)), 30).unwrap_err();
            (refused.code, refused.extensions["current_version"].clone())
        };
        // A late retry of version 1's terms, other terms at the current version, a skipped version.
        assert_eq!(mismatch(Some(&v2), 1, "80.00"), ("listing_version_mismatch", serde_json::json!(2)));
        assert_eq!(mismatch(Some(&v2), 2, "90.00"), ("listing_version_mismatch", serde_json::json!(2)));
        assert_eq!(mismatch(Some(&v2), 4, "90.00"), ("listing_version_mismatch", serde_json::json!(2)));
        assert_eq!(mismatch(None, 0, "90.00"), ("listing_version_mismatch", serde_json::json!(0)));
        let Publication::Created(late) = publish(None, "m_1.l_1", "m_1", (2, terms("85.00")), 40).unwrap() else {
            panic!()
        };
        assert_eq!(late.version, 2, "a side's first copy takes the provider's number");
        for (id, merchant) in
            [("m_1.l_1", "m_2"), ("m_1.l_1", "m_1.l"), ("m_12.l_1", "m_1"), ("m_1.", "m_1"), ("m_1", "m_1")]
        {
            let refused = publish(Some(&v2), id, merchant, (3, terms("1.00")), 30).unwrap_err();
            assert_eq!(refused.code, "listing_id_not_own", "{id} by {merchant}");
        }
    }
}
