//! The instruments (`InstrumentsTable`, partition `user`, sort `id`). Each item keeps what may be
//! shown (kind, brand or country, last four, expiry, holder), the number sealed under the
//! instrument's own data key (`sealed`, AES-256-GCM, bound to the user and the id), that key as KMS
//! wrapped it (`wrapped_key`, encryption context `owner=instrument/<id>`), and a keyed token of the
//! number (`number_token`). Beside a user's instruments, two items of their own keep the rules
//! exact under concurrency: a marker per number kept (`#number/<token>`: the same number is added
//! once) and a count (`#count`: at most `MAX_INSTRUMENTS`), each written in the transaction that
//! adds or removes an instrument. Removing one drops its sealed number and wrapped key from the
//! table (point-in-time backups keep them for their 35 days); the rest stays as its record.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, Update};

use super::{Brand, Details, Expiry, Instrument};
use crate::crypto::Sealed;
use crate::dynamo::{Item, StoreError, Write, get_b, get_item, get_n, get_s, n, partition_all, s};

/// Rule: an instrument is added once.
pub const INSTRUMENT_NEW: &str = "instrument.new";
/// Rule: the instrument is there and not removed yet (and, to remove it, no movement with it is owed
/// its outcome).
pub const INSTRUMENT_PRESENT: &str = "instrument.present";
/// Rule: the user keeps no instrument with this number.
pub const NUMBER_NEW: &str = "instrument.number_new";
/// Rule: the user keeps fewer than `MAX_INSTRUMENTS`.
pub const ROOM_LEFT: &str = "instrument.room_left";

/// The most instruments one user keeps at once.
pub const MAX_INSTRUMENTS: u32 = 20;

/// The instruments' own items' ids start so; the marker and the count's do not.
const INSTRUMENT_ID_PREFIX: &str = "in_";
const COUNT_ID: &str = "#count";

fn marker_id(number_token: &str) -> String {
    format!("#number/{number_token}")
}

/// An instrument as stored beside what it shows: its number's keyed token.
pub struct Stored {
    pub instrument: Instrument,
    pub number_token: String,
    pub removed_at: Option<i64>,
    /// How many movements with it are owed their outcome by the bank.
    pub in_use: i64,
}

#[derive(Clone, Debug)]
pub struct InstrumentStore {
    client: Client,
    table: String,
}

impl InstrumentStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        InstrumentStore { client, table: table.into() }
    }

    /// Every instrument of `user`'s, removed ones too.
    pub async fn of_user(&self, user: &str) -> Result<Vec<Stored>, StoreError> {
        let items = partition_all(&self.client, &self.table, "user", user).await?;
        let theirs = items.iter().filter(|item| get_s(item, "id").is_ok_and(|id| id.starts_with(INSTRUMENT_ID_PREFIX)));
        theirs.map(stored_from_item).collect()
    }

    async fn item(&self, user: &str, id: &str) -> Result<Option<Item>, StoreError> {
        if !id.starts_with(INSTRUMENT_ID_PREFIX) {
            return Ok(None);
        }
        get_item(&self.client, &self.table, &[("user", user), ("id", id)]).await
    }

    /// `user`'s instrument `id` as stored (removed or not), with its number's token.
    pub async fn stored(&self, user: &str, id: &str) -> Result<Option<Stored>, StoreError> {
        self.item(user, id).await?.as_ref().map(stored_from_item).transpose()
    }

    /// `user`'s instrument `id`'s sealed number and its data key as KMS wrapped it (owner
    /// `super::number_key_owner`), unless it was removed.
    pub async fn sealed_number(&self, user: &str, id: &str) -> Result<Option<(Sealed, Vec<u8>)>, StoreError> {
        let Some(item) = self.item(user, id).await? else { return Ok(None) };
        if item.contains_key("removed_at") {
            return Ok(None);
        }
        let sealed =
            Sealed { nonce: get_s(&item, "sealed_nonce")?.to_owned(), ciphertext: get_s(&item, "sealed")?.to_owned() };
        Ok(Some((sealed, get_b(&item, "wrapped_key")?)))
    }

    /// One more movement with `user`'s instrument `id` whose outcome the bank owes: only while it is
    /// kept. It cannot be removed until that outcome is had (its number is needed to ask again).
    pub fn in_use_item(&self, user: &str, id: &str) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("user", s(user))
            .key("id", s(id))
            .update_expression("ADD in_use :one")
            .condition_expression("attribute_exists(id) AND attribute_not_exists(removed_at)")
            .expression_attribute_values(":one", n(1))
            .build()?;
        Ok(Write::update(INSTRUMENT_PRESENT, update))
    }

    /// One less, with the outcome that settles a movement.
    pub fn done_using_item(&self, user: &str, id: &str) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("user", s(user))
            .key("id", s(id))
            .update_expression("ADD in_use :minus_one")
            .expression_attribute_values(":minus_one", n(-1))
            .build()?;
        Ok(Write::update("instrument.in_use", update))
    }

    /// The instrument `user` keeps with the number `number_token` names, if any.
    pub async fn with_number(&self, user: &str, number_token: &str) -> Result<Option<String>, StoreError> {
        let marker = get_item(&self.client, &self.table, &[("user", user), ("id", &marker_id(number_token))]).await?;
        Ok(marker.and_then(|item| get_s(&item, "instrument").ok().map(str::to_owned)))
    }

    /// The marker that keeps the number once, and one more in the count, with an add.
    pub fn kept_items(&self, user: &str, id: &str, number_token: &str) -> Result<[Write; 2], StoreError> {
        let marker = Put::builder()
            .table_name(&self.table)
            .item("user", s(user))
            .item("id", s(marker_id(number_token)))
            .item("instrument", s(id))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        let count = Update::builder()
            .table_name(&self.table)
            .key("user", s(user))
            .key("id", s(COUNT_ID))
            .update_expression("ADD kept :one")
            .condition_expression("attribute_not_exists(kept) OR kept < :max")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(MAX_INSTRUMENTS))
            .build()?;
        Ok([Write::put(NUMBER_NEW, marker), Write::update(ROOM_LEFT, count)])
    }

    /// The marker dropped (only instrument `id`'s) and one less in the count, with a removal.
    pub fn released_items(&self, user: &str, id: &str, number_token: &str) -> Result<[Write; 2], StoreError> {
        let marker = Delete::builder()
            .table_name(&self.table)
            .key("user", s(user))
            .key("id", s(marker_id(number_token)))
            .condition_expression("attribute_not_exists(id) OR instrument = :id")
            .expression_attribute_values(":id", s(id))
            .build()?;
        let count = Update::builder()
            .table_name(&self.table)
            .key("user", s(user))
            .key("id", s(COUNT_ID))
            .update_expression("ADD kept :minus_one")
            .expression_attribute_values(":minus_one", n(-1))
            .build()?;
        Ok([Write::delete("instrument.marker", marker), Write::update("instrument.count", count)])
    }

    /// `user`'s instrument `id`, unless removed.
    pub async fn get(&self, user: &str, id: &str) -> Result<Option<Instrument>, StoreError> {
        Ok(self.stored(user, id).await?.filter(|s| s.removed_at.is_none()).map(|s| s.instrument))
    }

    /// The new instrument, its sealed number and that key as KMS wrapped it, written once.
    pub fn create_item(
        &self,
        instrument: &Instrument,
        number_token: &str,
        sealed: &Sealed,
        wrapped_key: Vec<u8>,
    ) -> Result<Write, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .item("user", s(&instrument.user))
            .item("id", s(&instrument.id))
            .item("last4", s(&instrument.last4))
            .item("holder", s(&instrument.holder))
            .item("created_at", n(instrument.created_at))
            .item("number_token", s(number_token))
            .item("sealed_nonce", s(&sealed.nonce))
            .item("sealed", s(&sealed.ciphertext))
            .item("wrapped_key", AttributeValue::B(Blob::new(wrapped_key)))
            .condition_expression("attribute_not_exists(id)");
        put = match &instrument.details {
            Details::Card { brand, expiry } => put
                .item("kind", s("card"))
                .item("brand", s(brand.as_str()))
                .item("expiry_month", n(expiry.month))
                .item("expiry_year", n(expiry.year)),
            Details::BankAccount { country } => put.item("kind", s("bank_account")).item("country", s(country)),
        };
        Ok(Write::put(INSTRUMENT_NEW, put.build()?))
    }

    /// Replaces `instrument` (its user and id kept) with a new number, sealed under a new data key,
    /// and what it shows: only while it is kept and no movement with it is owed its outcome.
    /// `old` is the number token as read: a replacement racing another fails.
    pub fn replace_item(
        &self,
        instrument: &Instrument,
        old: &str,
        number_token: &str,
        sealed: &Sealed,
        wrapped_key: Vec<u8>,
    ) -> Result<Write, StoreError> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("user", s(&instrument.user))
            .key("id", s(&instrument.id))
            .condition_expression(
                "attribute_exists(id) AND attribute_not_exists(removed_at) \
                 AND (attribute_not_exists(in_use) OR in_use = :none) AND number_token = :old",
            )
            .expression_attribute_values(":none", n(0))
            .expression_attribute_values(":old", s(old))
            .expression_attribute_values(":last4", s(&instrument.last4))
            .expression_attribute_values(":holder", s(&instrument.holder))
            .expression_attribute_values(":token", s(number_token))
            .expression_attribute_values(":nonce", s(&sealed.nonce))
            .expression_attribute_values(":sealed", s(&sealed.ciphertext))
            .expression_attribute_values(":key", AttributeValue::B(Blob::new(wrapped_key)));
        let common = "SET last4 = :last4, holder = :holder, number_token = :token, sealed_nonce = :nonce, \
                      sealed = :sealed, wrapped_key = :key";
        update = match &instrument.details {
            Details::Card { brand, expiry } => update
                .update_expression(format!("{common}, brand = :brand, expiry_month = :month, expiry_year = :year"))
                .expression_attribute_values(":brand", s(brand.as_str()))
                .expression_attribute_values(":month", n(expiry.month))
                .expression_attribute_values(":year", n(expiry.year)),
            Details::BankAccount { country } => update
                .update_expression(format!("{common}, country = :country"))
                .expression_attribute_values(":country", s(country)),
        };
        Ok(Write::update(INSTRUMENT_PRESENT, update.build()?))
    }

    /// The marker of a replaced number dropped and the new one's kept (the count unchanged).
    pub fn swapped_items(&self, user: &str, id: &str, old: &str, new: &str) -> Result<[Write; 2], StoreError> {
        let [marker, _] = self.kept_items(user, id, new)?;
        let [released, _] = self.released_items(user, id, old)?;
        Ok([marker, released])
    }

    /// Removes `user`'s instrument `id` at `at`, unless a movement with it is still owed its outcome:
    /// its sealed number and wrapped key are dropped.
    pub fn remove_item(&self, user: &str, id: &str, at: i64) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("user", s(user))
            .key("id", s(id))
            .update_expression("SET removed_at = :at REMOVE sealed, sealed_nonce, wrapped_key, number_token")
            .condition_expression(
                "attribute_exists(id) AND attribute_not_exists(removed_at) \
                 AND (attribute_not_exists(in_use) OR in_use = :none)",
            )
            .expression_attribute_values(":at", n(at))
            .expression_attribute_values(":none", n(0))
            .build()?;
        Ok(Write::update(INSTRUMENT_PRESENT, update))
    }
}

fn stored_from_item(item: &Item) -> Result<Stored, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("a stored instrument is corrupt: {what}"));
    let details = match get_s(item, "kind")? {
        "card" => Details::Card {
            brand: Brand::parse(get_s(item, "brand")?).ok_or_else(|| corrupt("brand"))?,
            expiry: Expiry { month: get_n(item, "expiry_month")?, year: get_n(item, "expiry_year")? },
        },
        "bank_account" => Details::BankAccount { country: get_s(item, "country")?.to_owned() },
        _ => return Err(corrupt("kind")),
    };
    Ok(Stored {
        instrument: Instrument {
            id: get_s(item, "id")?.to_owned(),
            user: get_s(item, "user")?.to_owned(),
            details,
            last4: get_s(item, "last4")?.to_owned(),
            holder: get_s(item, "holder")?.to_owned(),
            created_at: get_n(item, "created_at")?,
        },
        number_token: item.get("number_token").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default(),
        removed_at: if item.contains_key("removed_at") { Some(get_n(item, "removed_at")?) } else { None },
        in_use: if item.contains_key("in_use") { get_n(item, "in_use")? } else { 0 },
    })
}
