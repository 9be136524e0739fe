//! Enrolled devices (`DevicesTable`, partition `id`): whose they are, their public key, their
//! offline limit and what their unsettled payments add up to, and whether their owner revoked them
//! (a lost phone).
//!
//! A phone offline for days may sign any number of codes, each under its limit. What bounds the
//! platform's exposure is the device's `outstanding`: each accepted payment adds its amount in the
//! payment's own transaction, only while the sum stays within the limit, and settling or expiring
//! takes it off in the transaction that ends the payment.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Put, Update};
use rust_decimal::Decimal;
use serde::Serialize;

use super::payment::{Payment, PaymentState};
use crate::Problem;
use crate::device_keys::{DeviceKey, device_of_key, key_from_item};
use crate::dynamo::{Item, StoreError, TransactError, Write, get_decimal, get_n, get_s, n, s, scan_all, transact};
use crate::money::{Currency, Money};
use crate::problem::catalogue;
use crate::reconcile::Violation;

/// Rule: the payer's offline profile takes the device: its currency, and room for one more.
pub const OFFLINE_PROFILE: &str = "offline_profile.takes_device";
/// Rule: the device is the caller's and not revoked yet.
const DEVICE_REVOCABLE: &str = "device.revocable";

/// The most live (not revoked) devices one payer may hold: each can owe its offline limit at once.
pub const MAX_DEVICES: u32 = 5;
/// Rule: the device was not revoked, and its unsettled payments with this one stay within its
/// offline limit.
pub const DEVICE_MAY_PAY: &str = "device.may_pay_offline";
/// Rule: the device's unsettled amount still counts the payment that settles or expires.
pub const DEVICE_COUNTS_PAYMENT: &str = "device.counts_payment";

/// A device as its owner sees it (`/devices` routes).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct DeviceView {
    pub id: String,
    /// The account its codes pay from.
    pub account: String,
    pub key_id: String,
    /// P-256, uncompressed SEC1, base64.
    pub public_key: String,
    pub offline_limit: Money,
    /// What its codes may still pay before earlier ones settle or expire.
    pub offline_available: String,
    pub enrolled_at: i64,
    /// `active` or `revoked`.
    pub status: &'static str,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    /// The account its codes pay from.
    pub user: String,
    /// `<device id>.k1`: names the key in codes.
    pub key_id: String,
    /// P-256, uncompressed SEC1, base64.
    pub public_key: String,
    /// The most its unsettled offline payments may add up to (so also the most one code may pay).
    pub offline_limit: Money,
    /// What its accepted payments not yet settled or expired add up to, in the limit's currency.
    pub outstanding: Decimal,
    pub enrolled_at: i64,
    /// When its owner revoked it: codes presented after that are refused.
    pub revoked_at: Option<i64>,
}

impl Device {
    pub fn view(&self) -> DeviceView {
        DeviceView {
            id: self.id.clone(),
            account: self.user.clone(),
            key_id: self.key_id.clone(),
            public_key: self.public_key.clone(),
            offline_limit: self.offline_limit,
            offline_available: self.available_offline().to_string(),
            enrolled_at: self.enrolled_at,
            status: if self.revoked_at.is_some() { "revoked" } else { "active" },
            revoked_at: self.revoked_at,
        }
    }

    /// What its codes may still pay before earlier ones settle or expire.
    pub fn available_offline(&self) -> Decimal {
        let currency = self.offline_limit.currency();
        currency.rescale((self.offline_limit.amount() - self.outstanding).max(Decimal::ZERO))
    }

    /// Whether a code for `amount` may be accepted now. `Ok` carries the most `outstanding` may be
    /// when the payment commits, the condition the store states since a condition cannot add
    /// (`outstanding + amount <= limit` is `outstanding <= limit - amount`). It depends on the limit
    /// and the amount only, so a read that went stale cannot let two payments past the limit.
    pub fn admit(&self, amount: Money) -> Result<Decimal, OfflineRefusal> {
        let limit = self.offline_limit;
        if amount.currency() != limit.currency() || amount.amount() > limit.amount() {
            return Err(OfflineRefusal::OverLimit { limit });
        }
        let ceiling = limit.amount() - amount.amount();
        if self.outstanding > ceiling {
            return Err(OfflineRefusal::LimitReached { available: self.available_offline(), limit });
        }
        Ok(ceiling)
    }
}

/// Why a device may not pay an amount offline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfflineRefusal {
    /// More than its whole limit, or in another currency: no code of this amount can ever pay.
    #[error("this device may pay at most {limit} offline")]
    OverLimit { limit: Money },
    /// Within its limit, but not beside its payments not yet settled: it may once they settle or
    /// expire.
    #[error(
        "this device has {available} {} left of its offline limit of {limit} until its earlier payments settle",
        limit.currency()
    )]
    LimitReached { available: Decimal, limit: Money },
}

impl From<OfflineRefusal> for Problem {
    fn from(refusal: OfflineRefusal) -> Self {
        match refusal {
            OfflineRefusal::OverLimit { .. } => Problem::new(catalogue::OVER_OFFLINE_LIMIT, refusal.to_string()),
            OfflineRefusal::LimitReached { available, .. } => {
                Problem::new(catalogue::OFFLINE_LIMIT_EXCEEDED, refusal.to_string())
                    .with("available", available.to_string())
            }
        }
    }
}

/// What must hold of each device (`crate::reconcile`): its `outstanding` is what its counted
/// payments not yet settled or expired add up to, within its limit. `payments` are all those of
/// these devices' owners.
pub fn check_devices(devices: &[Device], payments: &[Payment]) -> Vec<Violation> {
    let mut unsettled: HashMap<&str, Decimal> = HashMap::new();
    let mut violations = Vec::new();
    for payment in payments
        .iter()
        .filter(|p| p.counted && matches!(p.state, PaymentState::Pending | PaymentState::WaitingForFunds))
    {
        match device_of_key(&payment.device_key_id) {
            Some(device) => *unsettled.entry(device).or_default() += payment.amount.amount(),
            None => violations.push(Violation::record(
                format!("offline payment {}", payment.id),
                format!("counts in no device: its key id {} names none", payment.device_key_id),
            )),
        }
    }
    for device in devices {
        let expected = unsettled.get(device.id.as_str()).copied().unwrap_or_default();
        let mut problem = |text: String| violations.push(Violation::record(format!("device {}", device.id), text));
        if device.outstanding != expected {
            problem(format!("counts {} unsettled but its unsettled payments add up to {expected}", device.outstanding));
        }
        if device.outstanding > device.offline_limit.amount() {
            problem(format!("counts {} unsettled, over its limit of {}", device.outstanding, device.offline_limit));
        }
    }
    violations
}

#[derive(Clone, Debug)]
pub struct DeviceStore {
    client: Client,
    table: String,
}

impl DeviceStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DeviceStore { client, table: table.into() }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        output.item().map(device_from_item).transpose()
    }

    /// Every device (not the owners' profiles beside them), for the invariant checker
    /// (`check_devices`).
    pub async fn all(&self) -> Result<Vec<Device>, StoreError> {
        let items = scan_all(&self.client, &self.table).await?;
        items
            .iter()
            .filter(|item| !get_s(item, "id").is_ok_and(|id| id.starts_with("user#")))
            .map(device_from_item)
            .collect()
    }

    /// The device a code's key id names (`<device id>.k<n>`), if that is its current key.
    pub async fn by_key_id(&self, key_id: &str) -> Result<Option<Device>, StoreError> {
        let Some(id) = device_of_key(key_id) else { return Ok(None) };
        Ok(self.get(id).await?.filter(|d| d.key_id == key_id))
    }

    /// Revokes `user`'s device `id` (once: a second call keeps the first time), with `with` (its
    /// security event, its home listing) in the same transaction, so they are written only by the
    /// revocation. `None`: no such device of theirs.
    /// The device no longer counts among its owner's live devices (its profile's count goes down
    /// with its first revocation, in one transaction).
    pub async fn revoke(&self, id: &str, user: &str, at: i64, with: Vec<Write>) -> Result<Option<Device>, StoreError> {
        let revoke = Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET revoked_at = :at")
            .condition_expression("attribute_exists(id) AND #user = :user AND attribute_not_exists(revoked_at)")
            .expression_attribute_names("#user", "user")
            .expression_attribute_values(":at", n(at))
            .expression_attribute_values(":user", s(user))
            .build()?;
        // Devices enrolled before profiles counted them have no count to take from.
        let uncount = Update::builder()
            .table_name(&self.table)
            .key("id", s(format!("user#{user}")))
            .update_expression("ADD devices :minus_one")
            .condition_expression("devices > :zero")
            .expression_attribute_values(":minus_one", n(-1))
            .expression_attribute_values(":zero", n(0))
            .build()?;
        let mut alone = vec![Write::update(DEVICE_REVOCABLE, revoke)];
        alone.extend(with);
        let mut writes = alone.clone();
        writes.push(Write::update("offline_profile.counted", uncount));
        match transact(&self.client, writes).await {
            Ok(()) => {}
            Err(e) if e.broke(DEVICE_REVOCABLE) => {}
            Err(TransactError::ConditionFailed(_)) => {
                // Not counted: revoke it alone.
                match transact(&self.client, alone).await {
                    Ok(()) | Err(TransactError::ConditionFailed(_)) => {}
                    Err(TransactError::Store(e)) => return Err(e),
                }
            }
            Err(TransactError::Store(e)) => return Err(e),
        }
        // Revoked now or before, if it is theirs; a second call keeps the first time.
        Ok(self.get(id).await?.filter(|d| d.user == user))
    }

    /// Counts an accepted payment of `amount` in the device's unsettled amount, only if the device
    /// is still not revoked and `ceiling` (`Device::admit`'s) holds. A device enrolled before
    /// devices counted their payments has no `outstanding`: it counts from 0.
    pub fn accept_item(&self, id: &str, amount: Money, ceiling: Decimal) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET outstanding = if_not_exists(outstanding, :zero) + :amount")
            .condition_expression(
                "attribute_exists(id) AND attribute_not_exists(revoked_at) \
                 AND (attribute_not_exists(outstanding) OR outstanding <= :ceiling)",
            )
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":amount", n(amount.amount()))
            .expression_attribute_values(":ceiling", n(ceiling))
            .build()?;
        Ok(Write::update(DEVICE_MAY_PAY, update))
    }

    /// Gives a payment's room back as it settles or expires. `None`: the payment was accepted
    /// before devices counted their payments, so there is nothing to take off.
    pub fn release_item(&self, payment: &Payment) -> Result<Option<Write>, StoreError> {
        if !payment.counted {
            return Ok(None);
        }
        let id = device_of_key(&payment.device_key_id)
            .ok_or_else(|| StoreError::new(format!("payment {} names no device", payment.id)))?;
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET outstanding = outstanding - :amount")
            .condition_expression("outstanding >= :amount")
            .expression_attribute_values(":amount", n(payment.amount.amount()))
            .build()?;
        Ok(Some(Write::update(DEVICE_COUNTS_PAYMENT, update)))
    }

    /// Counts a new device of `user` on their offline profile (an item `user#<user>` beside the
    /// devices), which fixes their offline currency at the first enrollment: only in that currency
    /// (a reserve then never meets a currency it does not hold) and below `MAX_DEVICES` live ones.
    pub fn enroll_item(&self, user: &str, currency: Currency) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(format!("user#{user}")))
            .update_expression("SET currency = if_not_exists(currency, :currency), #user = :user ADD devices :one")
            .condition_expression(
                "(attribute_not_exists(currency) OR currency = :currency) AND (attribute_not_exists(devices) OR devices < :max)",
            )
            .expression_attribute_names("#user", "user")
            .expression_attribute_values(":currency", s(currency.code()))
            .expression_attribute_values(":user", s(user))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(MAX_DEVICES))
            .build()?;
        Ok(Write::update(OFFLINE_PROFILE, update))
    }

    /// `user`'s offline profile: their currency and live devices, once a device fixed it.
    pub async fn profile_of(&self, user: &str) -> Result<Option<(Currency, u32)>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(format!("user#{user}")))
            .consistent_read(true)
            .send()
            .await?;
        let corrupt = || StoreError::new("stored offline profile is corrupt");
        output
            .item()
            .map(|item| {
                let currency = get_s(item, "currency")?.parse().map_err(|_| corrupt())?;
                let devices = item.get("devices").map(|_| get_n(item, "devices")).transpose()?.unwrap_or(0);
                Ok((currency, devices))
            })
            .transpose()
    }

    pub fn create_item(&self, device: &Device) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&device.id))
            .item("user", s(&device.user))
            .item("key_id", s(&device.key_id))
            .item("public_key", s(&device.public_key))
            .item("offline_limit", n(device.offline_limit.amount()))
            .item("outstanding", n(device.outstanding))
            .item("currency", s(device.offline_limit.currency().code()))
            .item("enrolled_at", n(device.enrolled_at))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put("device.new", put))
    }
}

fn device_from_item(item: &Item) -> Result<Device, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("stored device is corrupt: {what}"));
    let currency: Currency = get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?;
    let DeviceKey { id, user, key_id, public_key, enrolled_at, revoked_at } = key_from_item(item)?;
    Ok(Device {
        id,
        user,
        key_id,
        public_key,
        offline_limit: Money::new(get_decimal(item, "offline_limit")?, currency)
            .map_err(|_| corrupt("offline_limit"))?,
        // Devices enrolled before payments were counted have none outstanding.
        outstanding: match item.get("outstanding") {
            Some(_) => currency.rescale(get_decimal(item, "outstanding")?),
            None => Decimal::ZERO,
        },
        enrolled_at,
        revoked_at,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn usd(cents: i64) -> Money {
        Money::new(Decimal::new(cents, 2), "USD".parse().expect("a currency")).expect("an amount")
    }

    fn device(limit: Money, outstanding: Decimal) -> Device {
        Device {
            id: "d_1".into(),
            user: "alice".into(),
            key_id: "d_1.k1".into(),
            public_key: "key".into(),
            offline_limit: limit,
            outstanding,
            enrolled_at: 1,
            revoked_at: None,
        }
    }

    #[test]
    fn a_code_fits_what_is_left_of_the_limit_beside_the_unsettled_ones() {
        let phone = device(usd(5000), Decimal::new(3000, 2));
        assert_eq!(phone.available_offline().to_string(), "20.00");
        assert_eq!(phone.admit(usd(2000)), Ok(Decimal::new(3000, 2)), "exactly up to the limit");
        assert_eq!(phone.admit(usd(500)), Ok(Decimal::new(4500, 2)));
        let refused = phone.admit(usd(2001)).unwrap_err();
        assert_eq!(refused, OfflineRefusal::LimitReached { available: Decimal::new(2000, 2), limit: usd(5000) });
        let problem = Problem::from(refused);
        assert_eq!((problem.status().as_u16(), problem.code), (409, "offline_limit_exceeded"));
        assert_eq!(problem.extensions["available"], "20.00");
        assert!(problem.detail.contains("20.00 USD left"), "{}", problem.detail);
        // More than the whole limit, or another currency, can never pay: not a matter of waiting.
        assert_eq!(phone.admit(usd(5001)), Err(OfflineRefusal::OverLimit { limit: usd(5000) }));
        let eur = Money::parse("1.00", "EUR").expect("an amount");
        assert_eq!(Problem::from(phone.admit(eur).unwrap_err()).code, "over_offline_limit");
        assert_eq!(device(usd(5000), Decimal::new(5000, 2)).available_offline().to_string(), "0.00");
    }

    #[test]
    fn a_device_counts_exactly_its_unsettled_counted_payments() {
        use crate::offline::payment::tests::payment;
        let waiting = payment(PaymentState::WaitingForFunds);
        let uncounted = Payment { id: "p_2".into(), counted: false, ..payment(PaymentState::Pending) };
        let settled = Payment { id: "p_3".into(), ..payment(PaymentState::Settled) };
        let payments = [waiting, uncounted, settled];
        assert_eq!(check_devices(&[device(usd(5000), Decimal::new(500, 2))], &payments), []);
        assert_eq!(
            check_devices(&[device(usd(5000), Decimal::new(1000, 2))], &payments),
            [Violation::record("device d_1", "counts 10.00 unsettled but its unsettled payments add up to 5.00")]
        );
        assert_eq!(
            check_devices(&[device(usd(400), Decimal::new(500, 2))], &payments),
            [Violation::record("device d_1", "counts 5.00 unsettled, over its limit of 4.00 USD")]
        );
    }

    #[test]
    fn a_device_enrolled_before_payments_were_counted_has_none_outstanding() {
        let mut item = Item::from([
            ("id".to_owned(), s("d_1")),
            ("user".to_owned(), s("alice")),
            ("key_id".to_owned(), s("d_1.k1")),
            ("public_key".to_owned(), s("key")),
            ("offline_limit".to_owned(), n("50")),
            ("currency".to_owned(), s("USD")),
            ("enrolled_at".to_owned(), n(1)),
        ]);
        assert_eq!(device_from_item(&item).expect("a device"), device(usd(5000), Decimal::ZERO));
        item.insert("outstanding".to_owned(), n("12.5"));
        assert_eq!(device_from_item(&item).expect("a device").outstanding.to_string(), "12.50");
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Unsettled {
        Pending,
        Waiting,
    }

    proptest! {
        /// Codes presented in any order with accepting, waiting, settling and expiring between them,
        /// some decided on a read that went stale: the store's `outstanding` (updated as
        /// `accept_item` and `release_item` state it) stays within 0 and the limit and is always
        /// the sum of the accepted payments not yet settled or expired.
        #[test]
        fn outstanding_is_the_unsettled_sum_and_never_passes_the_limit(
            limit in 1i64..10_000,
            moves in prop::collection::vec((0u8..4, 1i64..6_000, any::<prop::sample::Index>(), any::<bool>()), 1..80),
        ) {
            let limit = usd(limit);
            let mut stored = Decimal::ZERO;
            let mut before_last = Decimal::ZERO;
            let mut unsettled: Vec<(Money, Unsettled)> = Vec::new();
            for (kind, cents, pick, stale) in moves {
                let was = stored;
                match kind {
                    0 => {
                        let amount = usd(cents);
                        // The handler decides on its read, which may predate the last change.
                        let read = device(limit, if stale { before_last } else { stored });
                        let fits = stored + amount.amount() <= limit.amount();
                        match read.admit(amount) {
                            // `accept_item`: the condition on the current value, then the addition.
                            Ok(ceiling) => {
                                prop_assert_eq!(stored <= ceiling, fits);
                                if stored <= ceiling {
                                    stored += amount.amount();
                                    unsettled.push((amount, Unsettled::Pending));
                                }
                            }
                            Err(_) if !stale => prop_assert!(!fits, "a fresh read refuses only what does not fit"),
                            Err(_) => {}
                        }
                    }
                    // The reserve fell short: it waits, still unsettled.
                    1 => {
                        if let Some(p) = unsettled.iter_mut().find(|p| p.1 == Unsettled::Pending) {
                            p.1 = Unsettled::Waiting;
                        }
                    }
                    // Settles (from pending or waiting), or expires (only from waiting):
                    // `release_item`'s condition always holds, and it takes the amount off.
                    settle_or_expire => {
                        let candidates: Vec<usize> = (0..unsettled.len())
                            .filter(|&i| settle_or_expire == 2 || unsettled[i].1 == Unsettled::Waiting)
                            .collect();
                        if !candidates.is_empty() {
                            let (amount, _) = unsettled.remove(candidates[pick.index(candidates.len())]);
                            prop_assert!(stored >= amount.amount());
                            stored -= amount.amount();
                        }
                    }
                }
                before_last = was;
                let sum: Decimal = unsettled.iter().map(|(amount, _)| amount.amount()).sum();
                prop_assert_eq!(stored, sum);
                prop_assert!(Decimal::ZERO <= stored && stored <= limit.amount());
                prop_assert_eq!(device(limit, stored).available_offline(), limit.amount() - stored);
            }
        }
    }
}
