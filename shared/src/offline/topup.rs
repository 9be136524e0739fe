//! Top-up links (`TopUpsTable`, partition `token`): when a payer's offline reserve did not cover
//! a payment, they get a link to a page that funds the reserve from their bank.
//!
//! - The link's token is the page's credential. The table keeps only its SHA-256 (`key`), so a
//!   table read or a backup hands out no live link (the payer's own conversation still carries the
//!   link, by design). Links made before tokens were hashed are keyed by the token itself and have
//!   no `hashed` attribute; they are found as such until they expire.
//! - A link's life: open -> debit started (the bank is asked; the amount is fixed) -> paid (the
//!   reserve is credited, once: the transfer's id derives from the key). A declined debit opens the
//!   link again (the next attempt has its own bank reference); an unanswered one stays started
//!   until the bank's answer is had, by the page or by the settlement function through the outbox.
//!   The payment's expiry expires the link only while no debit is started: money the bank may have
//!   taken always ends in the payer's reserve.
//! - Items are kept `RETENTION_SECONDS` past the link's end (the TTL attribute `expires_at`), past
//!   every job that may still read them; a missing item counts as expired, never as paid.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Update};
use rust_decimal::Decimal;

use crate::crypto::sha256_hex;
use crate::dynamo::{Item, StoreError, Write, get_decimal, get_n, get_s, n, s, scan_all};
use crate::ledger::Books;
use crate::money::{Currency, Money};
use crate::reconcile::Violation;

/// Rule: the top-up link was not paid.
pub const TOPUP_UNPAID: &str = "topup.unpaid";
/// Rule: the link is open: not paid, not expired, no debit running, and the amount is the one fixed.
pub const TOPUP_OPEN: &str = "topup.open";
/// Rule: no debit was started on the link (its payment may expire).
pub const TOPUP_NO_DEBIT: &str = "topup.no_debit_started";
/// Rule: the debit being settled is the link's current attempt.
pub const TOPUP_DEBIT_CURRENT: &str = "topup.debit_current";

/// How long an item outlives its link: longer than any expiry job or debit check may still come.
pub const RETENTION_SECONDS: i64 = 30 * 24 * 60 * 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    /// The table key: the token's hash (a link made before hashing: the token).
    pub key: String,
    pub payment_id: String,
    pub user: String,
    pub merchant_id: String,
    /// What the reserve lacks for the payment.
    pub amount_due: Money,
    /// What the payment is for, in full.
    pub payment_amount: Money,
    /// Until when the link can be used.
    pub link_expires_at: i64,
    pub paid: bool,
    /// Its payment expired while no debit was started: the link is dead.
    pub expired: bool,
    /// The amount the link funds, fixed by the first form sent.
    pub amount: Option<Money>,
    /// When the current debit was asked for, while its outcome is not settled.
    pub debit_started_at: Option<i64>,
    /// Which debit this is (each declined one makes the next its own reference).
    pub debit_attempt: u32,
}

impl TopUp {
    /// The bank's reference of the current debit: the bank debits a reference once.
    pub fn debit_reference(&self) -> String {
        match self.debit_attempt {
            0 => format!("topup/{}", self.key),
            n => format!("topup/{}/{n}", self.key),
        }
    }

    /// The id of the reserve's credit: one per link, whichever attempt the bank approved.
    pub fn transfer_id(&self) -> String {
        format!("topup/{}", self.key)
    }

    /// The outbox item that keeps the current debit's outcome from being lost (`DebitCheck`).
    pub fn check_id(&self) -> String {
        format!("topup-debit/{}/{}", self.key, self.debit_attempt)
    }

    /// A short, stable label of the link for message ids (not the token).
    pub fn label(&self) -> &str {
        &self.key[..self.key.len().min(8)]
    }
}

/// When a link's item may go (its TTL): `RETENTION_SECONDS` after its link's end or after `now`,
/// whichever is later.
fn purge_at(topup: &TopUp, now: i64) -> i64 {
    topup.link_expires_at.max(now) + RETENTION_SECONDS
}

/// The table key of a link's token.
pub fn key_of(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// A fresh link token: 32 random bytes, hex.
pub fn new_token() -> String {
    crate::crypto::random_hex::<32>()
}

/// Why a form's amount cannot fund the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountRefusal {
    BelowDue(Money),
    AboveCeiling(Money),
}

/// The most a link may add: what is due, or the offline ceiling if that is more (a link completes
/// the payment it was made for, with something to spare: it is not a deposit).
pub fn ceiling(due: Money) -> Decimal {
    due.amount().max(super::offline_ceiling(due.currency()))
}

/// What one link may add: at least what is due (less would not complete the payment) and at most
/// `ceiling`.
pub fn judge_amount(asked: Money, due: Money) -> Result<Money, AmountRefusal> {
    let ceiling = ceiling(due);
    if asked.amount() < due.amount() {
        Err(AmountRefusal::BelowDue(due))
    } else if asked.amount() > ceiling {
        Money::new(ceiling, due.currency())
            .map_or(Err(AmountRefusal::BelowDue(due)), |c| Err(AmountRefusal::AboveCeiling(c)))
    } else {
        Ok(asked)
    }
}

/// What a payment's expiry does with its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtExpiry {
    /// No link, or one nobody paid or started to pay: the payment expires (and the link with it).
    Expire,
    /// Paid: the settlement that follows completes the payment.
    Paid,
    /// A debit is running: wait for its outcome, then look again.
    Wait,
}

pub fn at_expiry(topup: Option<&TopUp>) -> AtExpiry {
    match topup {
        Some(t) if t.paid => AtExpiry::Paid,
        Some(t) if t.debit_started_at.is_some() => AtExpiry::Wait,
        _ => AtExpiry::Expire,
    }
}

/// What must hold of top-up links and the money they moved (`crate::reconcile`): a paid link
/// credited the payer's reserve once with exactly its amount, an unpaid one nothing; a debit's
/// outcome is had within `slack` seconds of asking the bank (so money the bank took is never left
/// uncredited); and no top-up credit was made for a link that is not recorded. `topups` are all
/// the links of the users whose books these are.
pub fn check_topups(topups: &[TopUp], books: &Books, now: i64, slack: i64) -> Vec<Violation> {
    let transfers = books.transfers_by_id();
    let mut violations = Vec::new();
    for topup in topups {
        let mut problem = |text: String| violations.push(Violation::record(format!("top-up {}", topup.label()), text));
        let credit = transfers.get(topup.transfer_id().as_str()).map(|t| (t.kind.as_str(), t.amount()));
        let credited = credit.map_or("nothing".into(), |(kind, amount)| format!("{amount} as {kind}"));
        match (topup.paid, topup.amount, credit) {
            (true, Some(amount), Some(("offline.topup", credited))) if credited == amount.amount() => {}
            (true, amount, _) => problem(format!(
                "is paid {} but credited {credited}",
                amount.map_or("without an amount".into(), |a| a.to_string())
            )),
            (false, _, Some(_)) => problem(format!("is not paid but credited {credited}")),
            (false, _, None) => {}
        }
        if let Some(asked) = topup.debit_started_at.filter(|asked| now > asked + slack) {
            problem(format!("has a debit whose outcome is still unknown {} s after the bank was asked", now - asked));
        }
    }
    let links: std::collections::HashSet<String> = topups.iter().map(TopUp::transfer_id).collect();
    for credit in books.transfers.iter().filter(|t| t.kind == "offline.topup" && !links.contains(&t.id)) {
        violations.push(Violation::record(format!("credit {}", credit.id), "moved money for no recorded top-up"));
    }
    violations
}

#[derive(Clone, Debug)]
pub struct TopUpStore {
    client: Client,
    table: String,
}

impl TopUpStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        TopUpStore { client, table: table.into() }
    }

    /// The link `token` opens, if any.
    pub async fn find(&self, token: &str) -> Result<Option<TopUp>, StoreError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        if let Some((topup, true)) = self.read(&key_of(token)).await? {
            return Ok(Some(topup));
        }
        // A link from before hashing, keyed by its token; a hashed key presented as a token is not one.
        Ok(self.read(token).await?.filter(|(_, hashed)| !hashed).map(|(topup, _)| topup))
    }

    /// Every link, for the invariant checker (`check_topups`).
    pub async fn all(&self) -> Result<Vec<TopUp>, StoreError> {
        scan_all(&self.client, &self.table).await?.iter().map(topup_from_item).collect()
    }

    /// The link with table key `key` (what payments and messages refer to).
    pub async fn get(&self, key: &str) -> Result<Option<TopUp>, StoreError> {
        Ok(self.read(key).await?.map(|(topup, _)| topup))
    }

    async fn read(&self, key: &str) -> Result<Option<(TopUp, bool)>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.table).key("token", s(key)).consistent_read(true).send().await?;
        output.item().map(|item| Ok((topup_from_item(item)?, item.contains_key("hashed")))).transpose()
    }

    pub fn create_item(&self, topup: &TopUp) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("token", s(&topup.key))
            .item("hashed", AttributeValue::Bool(true))
            .item("payment_id", s(&topup.payment_id))
            .item("user", s(&topup.user))
            .item("merchant_id", s(&topup.merchant_id))
            .item("amount_due", n(topup.amount_due.amount()))
            .item("payment_amount", n(topup.payment_amount.amount()))
            .item("currency", s(topup.amount_due.currency().code()))
            .item("link_expires_at", n(topup.link_expires_at))
            .item("expires_at", n(purge_at(topup, 0)))
            .item("paid", AttributeValue::Bool(false))
            .item("debit_attempt", n(0))
            .condition_expression("attribute_not_exists(#token)")
            .expression_attribute_names("#token", "token")
            .build()?;
        Ok(Write::put("topup.new", put))
    }

    /// Starts a debit of `amount` at `now`: only on an open link, and fixes the amount for good.
    /// The item does not expire while the debit runs: its outcome is owed whenever it comes.
    pub fn start_debit_item(&self, topup: &TopUp, amount: Money, now: i64) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("token", s(&topup.key))
            .update_expression(
                "SET amount = :amount, debit_started_at = :now, link_expires_at = if_not_exists(link_expires_at, :link) \
                 REMOVE expires_at",
            )
            .expression_attribute_values(":link", n(topup.link_expires_at))
            .condition_expression(
                "paid = :no AND attribute_not_exists(expired) AND attribute_not_exists(debit_started_at) \
                 AND (attribute_not_exists(amount) OR amount = :amount)",
            )
            .expression_attribute_values(":amount", n(amount.amount()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .build()?;
        Ok(Write::update(TOPUP_OPEN, update))
    }

    /// The bank declined the current debit: the link is open again, and the next debit is another.
    pub fn declined_item(&self, topup: &TopUp, now: i64) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("token", s(&topup.key))
            .update_expression("REMOVE debit_started_at SET debit_attempt = :next, expires_at = :purge")
            .expression_attribute_values(":purge", n(purge_at(topup, now)))
            // A link from before debits were recorded has no `debit_started_at` (nor `hashed`).
            .condition_expression(
                "(attribute_exists(debit_started_at) OR attribute_not_exists(hashed)) \
                 AND (debit_attempt = :attempt OR attribute_not_exists(debit_attempt))",
            )
            .expression_attribute_values(":attempt", n(topup.debit_attempt))
            .expression_attribute_values(":next", n(topup.debit_attempt + 1))
            .build()?;
        Ok(Write::update(TOPUP_DEBIT_CURRENT, update))
    }

    /// Marks the link paid, only once (and only if it exists); its debit is settled with it.
    pub fn paid_item(&self, topup: &TopUp, now: i64) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("token", s(&topup.key))
            .update_expression("SET paid = :yes, expires_at = :purge REMOVE debit_started_at")
            .condition_expression("attribute_exists(#token) AND paid = :no")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":purge", n(purge_at(topup, now)))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .build()?;
        Ok(Write::update(TOPUP_UNPAID, update))
    }

    /// Expires the link with its payment, only if nobody paid or started to pay it.
    pub fn expire_item(&self, key: &str) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("token", s(key))
            .update_expression("SET expired = :yes")
            .condition_expression("attribute_exists(#token) AND paid = :no AND attribute_not_exists(debit_started_at)")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .build()?;
        Ok(Write::update(TOPUP_NO_DEBIT, update))
    }
}

fn topup_from_item(item: &Item) -> Result<TopUp, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("stored top-up is corrupt: {what}"));
    let currency: Currency = get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?;
    let money = |name: &str| -> Result<Money, StoreError> {
        Money::new(get_decimal(item, name)?, currency).map_err(|_| corrupt(name))
    };
    let optional = |name: &str| item.get(name).map(|_| get_n::<i64>(item, name)).transpose();
    let paid = matches!(item.get("paid"), Some(AttributeValue::Bool(true)));
    let amount = item.get("amount").map(|_| money("amount")).transpose()?;
    let debit_attempt = optional("debit_attempt")?.unwrap_or(0);
    // A link from before debits were recorded whose amount was fixed may have had its bank asked
    // (under this very reference, attempt 0): its outcome is owed as a started debit's is.
    let asked_before_recording = !item.contains_key("hashed") && amount.is_some() && !paid && debit_attempt == 0;
    Ok(TopUp {
        key: get_s(item, "token")?.to_owned(),
        payment_id: get_s(item, "payment_id")?.to_owned(),
        user: get_s(item, "user")?.to_owned(),
        merchant_id: get_s(item, "merchant_id")?.to_owned(),
        amount_due: money("amount_due")?,
        payment_amount: money("payment_amount")?,
        // Links from before `link_expires_at` ended when their item's TTL did.
        link_expires_at: optional("link_expires_at")?.map_or_else(|| get_n(item, "expires_at"), Ok)?,
        paid,
        expired: matches!(item.get("expired"), Some(AttributeValue::Bool(true))),
        amount,
        debit_started_at: optional("debit_started_at")?.or(asked_before_recording.then_some(0)),
        debit_attempt: debit_attempt.try_into().map_err(|_| corrupt("debit_attempt"))?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(amount: &str) -> Money {
        Money::parse(amount, "USD").expect("an amount")
    }

    pub(crate) fn topup() -> TopUp {
        TopUp {
            key: key_of(&"ab".repeat(32)),
            payment_id: "p_1".into(),
            user: "u".into(),
            merchant_id: "m".into(),
            amount_due: usd("7.00"),
            payment_amount: usd("10.00"),
            link_expires_at: 100,
            paid: false,
            expired: false,
            amount: None,
            debit_started_at: None,
            debit_attempt: 0,
        }
    }

    #[test]
    fn a_link_credited_the_reserve_once_if_and_only_if_it_was_paid_and_no_debit_hangs() {
        let paid = TopUp { paid: true, amount: Some(usd("7.50")), ..topup() };
        let credit = |amount: &str| {
            let transfer = crate::ledger::Transfer::between(
                paid.transfer_id(),
                usd(amount),
                crate::ledger::AccountId::funding("u"),
                crate::ledger::AccountId::reserve("u"),
                "offline.topup",
                "offline-payment/p_1".into(),
            );
            Books { transfers: vec![crate::ledger::TransferRecord::of(&transfer.unwrap())], ..Books::default() }
        };
        let label = format!("top-up {}", paid.label());
        assert_eq!(check_topups(std::slice::from_ref(&paid), &credit("7.50"), 0, 60), []);
        assert_eq!(check_topups(&[topup()], &Books::default(), 0, 60), []);
        assert_eq!(
            check_topups(std::slice::from_ref(&paid), &credit("7.00"), 0, 60),
            [Violation::record(&label, "is paid 7.50 USD but credited 7.00 as offline.topup")]
        );
        assert_eq!(
            check_topups(&[topup()], &credit("7.50"), 0, 60),
            [Violation::record(&label, "is not paid but credited 7.50 as offline.topup")]
        );
        assert_eq!(
            check_topups(&[], &credit("7.50"), 0, 60),
            [Violation::record(format!("credit {}", paid.transfer_id()), "moved money for no recorded top-up")]
        );
        let asking = TopUp { debit_started_at: Some(100), amount: Some(usd("7.50")), ..topup() };
        assert_eq!(check_topups(std::slice::from_ref(&asking), &Books::default(), 160, 60), []);
        assert_eq!(
            check_topups(&[asking], &Books::default(), 161, 60),
            [Violation::record(&label, "has a debit whose outcome is still unknown 61 s after the bank was asked")]
        );
    }

    #[test]
    fn the_table_keeps_a_hash_never_the_token() {
        let token = new_token();
        let key = key_of(&token);
        assert_eq!(key.len(), 64);
        assert_ne!(key, token);
        assert_eq!(key, key_of(&token), "stable");
    }

    #[test]
    fn each_debit_attempt_has_its_own_reference_and_check_but_the_credit_is_one() {
        let mut t = topup();
        let (first, first_check) = (t.debit_reference(), t.check_id());
        t.debit_attempt = 1;
        assert_ne!(t.debit_reference(), first);
        assert_ne!(t.check_id(), first_check);
        assert_eq!(t.transfer_id(), format!("topup/{}", t.key));
        assert!(!t.debit_reference().contains(&"ab".repeat(32)), "no token in a reference");
    }

    #[test]
    fn a_link_adds_what_is_due_up_to_its_ceiling() {
        assert_eq!(judge_amount(usd("7.00"), usd("7.00")), Ok(usd("7.00")));
        assert_eq!(judge_amount(usd("6.99"), usd("7.00")), Err(AmountRefusal::BelowDue(usd("7.00"))));
        assert_eq!(judge_amount(usd("1000.00"), usd("7.00")), Ok(usd("1000.00")));
        assert_eq!(judge_amount(usd("1000.01"), usd("7.00")), Err(AmountRefusal::AboveCeiling(usd("1000.00"))));
        // A payment larger than the ceiling can still be completed, with nothing to spare.
        assert_eq!(judge_amount(usd("1900.00"), usd("1900.00")), Ok(usd("1900.00")));
        assert_eq!(judge_amount(usd("1900.01"), usd("1900.00")), Err(AmountRefusal::AboveCeiling(usd("1900.00"))));
        let yen = |a: &str| Money::parse(a, "JPY").expect("an amount");
        assert_eq!(judge_amount(yen("100001"), yen("500")), Err(AmountRefusal::AboveCeiling(yen("100000"))));
    }

    #[test]
    fn expiry_never_expires_money_that_may_have_left_the_bank() {
        assert_eq!(at_expiry(None), AtExpiry::Expire, "a missing link counts as expired, never as paid");
        let mut t = topup();
        assert_eq!(at_expiry(Some(&t)), AtExpiry::Expire);
        t.debit_started_at = Some(50);
        assert_eq!(at_expiry(Some(&t)), AtExpiry::Wait);
        t.paid = true;
        assert_eq!(at_expiry(Some(&t)), AtExpiry::Paid);
    }

    proptest! {
        #[test]
        fn an_accepted_amount_is_between_due_and_the_ceiling(due in 1i64..10_000_000, asked in 1i64..10_000_000) {
            let (due, asked) = (Money::new(Decimal::new(due, 2), usd("1.00").currency()), Money::new(Decimal::new(asked, 2), usd("1.00").currency()));
            let (due, asked) = (due.expect("an amount"), asked.expect("an amount"));
            match judge_amount(asked, due) {
                Ok(amount) => {
                    prop_assert!(amount.amount() >= due.amount() && amount.amount() <= ceiling(due));
                    prop_assert_eq!(amount, asked);
                }
                Err(_) => prop_assert!(asked.amount() < due.amount() || asked.amount() > ceiling(due)),
            }
        }
    }
}
