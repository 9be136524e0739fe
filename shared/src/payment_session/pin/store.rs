//! Payment PINs in DynamoDB (`PaymentPinsTable`, key `user`) and their KMS pepper
//! (`PaymentPinKey`, an HMAC key). An item holds `pin_hash` (see `super::hash`), `tries` (wrong
//! tries since the last right one), `last_try_at`, `set_at`. Tries are counted BEFORE the PIN is
//! checked, by a write conditional on the count, so parallel guesses cannot share one try; a try
//! that failed for a reason of ours (KMS, DynamoDB) is given back. Setting or changing a PIN
//! records a security event for the user in the same transaction.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Delete, Put, ReturnValue, Update};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::MacAlgorithmSpec;
use serde_json::json;

use super::{MAX_TRIES, Pin, hash, locked, locked_until, lockout_seconds, matches, wrong};
use crate::Problem;
use crate::crypto::random_hex;
use crate::dynamo::{Item, StoreError, Write, get_n, get_n_opt, get_s, n, s, transact};
use crate::problem::catalogue;
use crate::security::{SecurityEvent, SecurityEvents};

/// Rule: a first PIN is set only where none is.
pub const PIN_NEW: &str = "payment_pin.new";
/// Rule: a PIN is reset only where one is.
pub const PIN_SET: &str = "payment_pin.set";
/// Rule: a PIN is changed only from the one its old PIN matched.
pub const PIN_UNCHANGED: &str = "payment_pin.unchanged";

pub struct PinStore {
    dynamodb: Client,
    table: String,
    /// Where setting or changing a PIN is recorded for its user (`SecurityEventsTable`).
    security: SecurityEvents,
    kms: aws_sdk_kms::Client,
    /// The HMAC key (template.yaml `PaymentPinKey`).
    mac_key: String,
    /// How long a PIN stays locked after its fifth wrong try (template `PaymentPinLockoutSeconds`).
    lockout_seconds: i64,
}

/// What setting a PIN did.
#[derive(Debug, PartialEq, Eq)]
pub enum Set {
    First,
    Changed,
}

impl PinStore {
    pub fn new(
        dynamodb: Client,
        table: impl Into<String>,
        security: SecurityEvents,
        kms: aws_sdk_kms::Client,
        mac_key: impl Into<String>,
        lockout_seconds: i64,
    ) -> Self {
        PinStore { dynamodb, table: table.into(), security, kms, mac_key: mac_key.into(), lockout_seconds }
    }

    async fn pepper(&self, user: &str, pin: &Pin) -> Result<Vec<u8>, StoreError> {
        let out = self
            .kms
            .generate_mac()
            .key_id(&self.mac_key)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(pin.mac_message(user)))
            .send()
            .await
            .map_err(|e| StoreError::caused("KMS GenerateMac failed", aws_sdk_kms::Error::from(e)))?;
        out.mac().map(|mac| mac.as_ref().to_vec()).ok_or_else(|| StoreError::new("KMS GenerateMac returned no MAC"))
    }

    /// Checks `user`'s PIN, counting the try first: Ok when right (the count starts again), else
    /// 403 `payment_pin_wrong` with the tries left, 423 `payment_pin_locked`, or 409
    /// `payment_pin_not_set`. Returns the stored hash it matched.
    pub async fn check(&self, user: &str, pin: &Pin, now: i64) -> Result<String, Problem> {
        let item = self.take_try(user, now).await?;
        let stored = get_s(&item, "pin_hash")?.to_owned();
        let tries: u32 = get_n(&item, "tries")?;
        let peppered = match self.pepper(user, pin).await {
            Ok(peppered) => peppered,
            // Not the user's failure: the try is given back (unless others were counted since).
            Err(e) => {
                self.give_back(user, tries).await;
                return Err(e.into());
            }
        };
        if !matches(&peppered, &stored) {
            if tries >= MAX_TRIES {
                self.lock(user, &item, now).await;
            }
            return Err(wrong(tries));
        }
        // Right: the count and the lockouts start again, unless wrong tries were counted meanwhile
        // (those stand).
        let reset = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("user", s(user))
            .update_expression("SET tries = :zero, lockouts = :zero REMOVE locked_until")
            .condition_expression("pin_hash = :hash AND tries = :seen")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":hash", s(&stored))
            .expression_attribute_values(":seen", n(tries))
            .send()
            .await;
        match reset {
            Ok(_) => Ok(stored),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(stored),
            Err(e) => Err(StoreError::from(e).into()),
        }
    }

    /// Records the lockout the fifth wrong try in a row (`item`, as it left it) began: its end, by
    /// how many came before it, and one more lockout. If it cannot be written, the lockout is the
    /// base one (the store's conditions hold it from the last try regardless).
    async fn lock(&self, user: &str, item: &Item, now: i64) {
        let earlier = get_n_opt(item, "lockouts").ok().flatten().unwrap_or(0);
        let until = now + lockout_seconds(self.lockout_seconds, earlier);
        let locked = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("user", s(user))
            .update_expression("SET locked_until = :until, lockouts = :lockouts")
            .condition_expression("tries >= :max AND last_try_at = :at")
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":lockouts", n(earlier + 1))
            .expression_attribute_values(":max", n(MAX_TRIES))
            .expression_attribute_values(":at", n(now))
            .send()
            .await;
        if let Err(e) = locked.map_err(StoreError::from) {
            tracing::warn!(error = %e, "a lockout's end could not be recorded; the base lockout holds");
        }
    }

    /// Gives back the try that made the count `tries`, if it still is.
    async fn give_back(&self, user: &str, tries: u32) {
        let back = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("user", s(user))
            .update_expression("SET tries = :before")
            .condition_expression("tries = :seen")
            .expression_attribute_values(":before", n(tries.saturating_sub(1)))
            .expression_attribute_values(":seen", n(tries))
            .send()
            .await;
        if let Err(e) = back.map_err(StoreError::from) {
            tracing::warn!(error = %e, "a try that failed on our side could not be given back");
        }
    }

    /// Takes one try: the item after it, or why none is left.
    async fn take_try(&self, user: &str, now: i64) -> Result<Item, Problem> {
        let next = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("user", s(user))
            .update_expression("SET tries = tries + :one, last_try_at = :now")
            .condition_expression("attribute_exists(pin_hash) AND tries < :max")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":max", n(MAX_TRIES))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match next {
            Ok(out) => return out.attributes.ok_or_else(|| Problem::internal("a try came back without its item")),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(StoreError::from(e).into()),
        }
        // Locked, unless its lockout has passed: then the count starts again at this try.
        let reopen = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("user", s(user))
            .update_expression("SET tries = :one, last_try_at = :now")
            .condition_expression(
                "attribute_exists(pin_hash) AND tries >= :max AND last_try_at <= :opened \
                 AND (attribute_not_exists(locked_until) OR locked_until <= :now)",
            )
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":max", n(MAX_TRIES))
            .expression_attribute_values(":opened", n(now - self.lockout_seconds))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match reopen {
            Ok(out) => return out.attributes.ok_or_else(|| Problem::internal("a try came back without its item")),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(StoreError::from(e).into()),
        }
        let item = self.get(user).await?.ok_or_else(not_set)?;
        let recorded = get_n_opt(&item, "locked_until")?;
        let until =
            locked_until(get_n(&item, "tries")?, get_n(&item, "last_try_at")?, recorded, self.lockout_seconds, now);
        // Not locked by now: the lockout ended between the writes; a try again takes it.
        Err(locked(until.unwrap_or(now)))
    }

    async fn get(&self, user: &str) -> Result<Option<Item>, StoreError> {
        let out =
            self.dynamodb.get_item().table_name(&self.table).key("user", s(user)).consistent_read(true).send().await?;
        Ok(out.item)
    }

    /// Sets `user`'s PIN to `new`: the first time with no `old`, after that only with the right
    /// `old` (a try like any other). The new PIN is hashed only once the request may set it.
    pub async fn set(&self, user: &str, old: Option<&Pin>, new: &Pin, now: i64) -> Result<Set, Problem> {
        let already_set = || {
            Problem::new(
                catalogue::PAYMENT_PIN_ALREADY_SET,
                "a payment PIN is set: send old_pin (the one set) to change it",
            )
        };
        let matched = match old {
            None if self.get(user).await?.is_some() => return Err(already_set()),
            None => None,
            Some(old) => Some(self.check(user, old, now).await?),
        };
        let salt = random_hex::<16>();
        let stored = hash(&self.pepper(user, new).await?, salt.as_bytes());
        let (write, set) = match &matched {
            None => {
                let item = Item::from([
                    ("user".to_owned(), s(user)),
                    ("pin_hash".to_owned(), s(&stored)),
                    ("tries".to_owned(), n(0)),
                    ("last_try_at".to_owned(), n(0)),
                    ("set_at".to_owned(), n(now)),
                ]);
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pin_hash)")
                    .build()
                    .map_err(StoreError::from)?;
                (Write::put(PIN_NEW, put), Set::First)
            }
            Some(matched) => {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("user", s(user))
                    .update_expression("SET pin_hash = :new, tries = :zero, set_at = :now")
                    .condition_expression("pin_hash = :old")
                    .expression_attribute_values(":new", s(&stored))
                    .expression_attribute_values(":old", s(matched))
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":now", n(now))
                    .build()
                    .map_err(StoreError::from)?;
                (Write::update(PIN_UNCHANGED, update), Set::Changed)
            }
        };
        let event = SecurityEvent {
            user: user.to_owned(),
            id: format!("payment-pin/{salt}"),
            kind: if set == Set::First { "payment_pin.set" } else { "payment_pin.changed" },
            at: now,
            detail: json!({}),
        };
        let mut writes = vec![write];
        writes.extend(self.security.items(&event)?);
        match transact(&self.dynamodb, writes).await {
            Ok(()) => Ok(set),
            Err(e) if e.broke(PIN_NEW) => Err(already_set()),
            // Changed by another request since the check: the old PIN no longer is.
            Err(e) if e.broke(PIN_UNCHANGED) => Err(Problem::new(
                catalogue::PAYMENT_PIN_WRONG,
                "the payment PIN was changed meanwhile by another request",
            )),
            Err(e) => Err(Problem::internal(e)),
        }
    }
}

impl PinStore {
    /// The writes that remove `user`'s PIN (only if one is set) and record that for the user, for
    /// an admin's reset of a forgotten PIN: the user then sets a new one as the first time.
    pub fn reset_items(&self, user: &str, now: i64) -> Result<Vec<Write>, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("user", s(user))
            .condition_expression("attribute_exists(pin_hash)")
            .build()?;
        let event = SecurityEvent {
            user: user.to_owned(),
            id: format!("payment-pin-reset/{now}"),
            kind: "payment_pin.reset",
            at: now,
            detail: json!({}),
        };
        let mut writes = vec![Write::delete(PIN_SET, delete)];
        writes.extend(self.security.items(&event)?);
        Ok(writes)
    }
}

pub fn not_set() -> Problem {
    Problem::new(catalogue::PAYMENT_PIN_NOT_SET, "no payment PIN is set: set one with PUT /payment-pin first")
}
