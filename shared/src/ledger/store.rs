//! The ledger in DynamoDB (`LedgerTable`: partition `pk`, sort `sk`):
//! - `account#<id>` / `account`: currency, balance, available (absent: no floor), sequence;
//! - `account#<id>` / `posting#<sequence, 20 digits>`: one leg, so an account's history is one Query;
//! - `transfer#<id>` / `transfer`: the transfer record, written once (`attribute_not_exists`);
//! - `credit-shards#<merchant id>` / `credit-shards`: `n`, the merchant's credit sub-accounts, when
//!   it has more than one (`super::spread_credits`), in a partition of its own, since every process
//!   crediting the merchant reads it; and `credit-shards` / `<merchant id>`: the same count, one
//!   partition listing the merchants the sweeper sweeps, in one Query.
//!
//! `apply` reads the accounts (one consistent BatchGetItem), plans the writes, and commits them with
//! the caller's business items in ONE TransactWriteItems. If another transfer moved one of the
//! accounts in between, the sequence condition fails and it plans again; a transfer that was
//! already applied is reported as such and moves nothing.
//!
//! The same read takes the `credit_shards` of every merchant the transfer names that this process
//! has not read in the last minute, so a credit lands on one of a popular merchant's sub-accounts
//! without another call; a debit its main account lacks sweeps them first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, Update};

use rust_decimal::Decimal;

use super::{
    Account, AccountId, AccountKind, AccountUpdate, Books, LedgerError, MAX_CREDIT_SHARDS, Posting, Transfer,
    TransferRecord, plan, spread_credits, sweep,
};
use crate::dynamo::{
    Item, StoreError, TransactError, Write, backoff, conflicted, failed_rules, get_decimal, get_item, get_n, get_s,
    items_after, n, newest_before, partition_all, s, scan_all, transact,
};
use crate::money::Money;

/// The rule of the transfer record: this transfer id was never applied.
const TRANSFER_NEW: &str = "ledger.transfer_new";

/// How often a transfer re-plans after losing a race for one of its accounts.
const ATTEMPTS: u32 = 25;

/// The partition listing the merchants with credit sub-accounts; each one's count is read from
/// `credit-shards#<merchant>`.
const CREDIT_SHARDS: &str = "credit-shards";

/// The rule of a merchant's credit sub-account count: it only grows.
const SHARDS_GROW: &str = "ledger.credit_shards_grow";

/// How long a process spreads credits by a merchant's `credit_shards` as it read them before it
/// reads them again with a transfer: a count grown meanwhile is taken up within it, and until then
/// the smaller one spreads less, never wrongly. So the one partition of the counts is read about
/// once a minute per process and merchant, not with every credit.
const CREDIT_SHARDS_FRESH: Duration = Duration::from_secs(60);

/// Most merchants whose counts a process keeps: past it, it forgets them all and reads again.
const CREDIT_SHARDS_KEPT: usize = 10_000;

#[derive(Clone, Debug)]
pub struct LedgerStore {
    client: Client,
    table: String,
    /// The `credit_shards` this process has read, and when: any count up to the current one
    /// spreads credits rightly, and the count only grows.
    credit_shards: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
}

/// A merchant's balance: its main account and what its credit sub-accounts hold until a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantBalance {
    pub currency: Option<crate::money::Currency>,
    pub main: Decimal,
    pub credits: Decimal,
    pub credit_shards: u32,
}

impl MerchantBalance {
    pub fn total(&self) -> Decimal {
        self.main + self.credits
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreditShardsError {
    #[error("a merchant has 1 to {MAX_CREDIT_SHARDS} credit sub-accounts, not {0}")]
    OutOfRange(u32),
    /// Fewer would leave money on sub-accounts no sweep reads.
    #[error("merchant {merchant} has {has} credit sub-accounts; their number only grows")]
    OnlyGrows { merchant: String, has: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// This call moved the money.
    Now,
    /// The transfer had already been applied (a retry): nothing moved.
    Already,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// One of the caller's business writes failed its condition: the rule it names.
    #[error("business rule {0} did not hold")]
    Rejected(&'static str),
    /// The accounts kept changing under it; nothing moved and a retry is safe.
    #[error("too much contention on the accounts; nothing moved")]
    Contention,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn account_key(id: &AccountId) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), s(format!("account#{id}"))), ("sk".to_owned(), s("account"))])
}

impl LedgerStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        LedgerStore { client, table: table.into(), credit_shards: Arc::default() }
    }

    /// The current state of `ids` (absent: never used), read consistently.
    pub async fn accounts(&self, ids: &[AccountId]) -> Result<HashMap<AccountId, Account>, StoreError> {
        self.read(ids, &[]).await
    }

    /// `accounts`, and in the same read the `credit_shards` of `merchants` (absent: 1), which the
    /// process keeps.
    async fn read(&self, ids: &[AccountId], merchants: &[&str]) -> Result<HashMap<AccountId, Account>, StoreError> {
        let mut found = HashMap::new();
        let mut shards: HashMap<String, u32> = merchants.iter().map(|m| ((*m).to_owned(), 1)).collect();
        if ids.is_empty() && merchants.is_empty() {
            return Ok(found);
        }
        let mut keys = KeysAndAttributes::builder().consistent_read(true);
        for id in ids {
            keys = keys.keys(account_key(id));
        }
        for merchant in merchants {
            keys = keys.keys(credit_shards_key(merchant));
        }
        let mut request = Some(HashMap::from([(self.table.clone(), keys.build()?)]));
        while let Some(items) = request.take().filter(|r| !r.is_empty()) {
            let output = self.client.batch_get_item().set_request_items(Some(items)).send().await?;
            for item in output.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                if let Some(merchant) = shards_owner(get_s(item, "pk")?) {
                    shards.insert(merchant.to_owned(), get_n(item, "n")?);
                    continue;
                }
                let account = account_from_item(item)?;
                found.insert(account.id.clone(), account);
            }
            request = output.unprocessed_keys().cloned();
        }
        let mut known = self.known_shards();
        if known.len() + shards.len() > CREDIT_SHARDS_KEPT {
            known.clear();
        }
        let now = Instant::now();
        known.extend(shards.into_iter().map(|(merchant, n)| (merchant, (n, now))));
        Ok(found)
    }

    /// The `credit_shards` this process has read, and when.
    fn known_shards(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        // A panic elsewhere while it was held leaves counts that are still right.
        self.credit_shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counts this process spreads credits by, and which of `merchants` it has not read lately.
    fn spreading<'m>(&self, merchants: &[&'m str]) -> (HashMap<String, u32>, Vec<&'m str>) {
        let known = self.known_shards();
        let counts = merchants.iter().filter_map(|m| known.get(*m).map(|(n, _)| ((*m).to_owned(), *n))).collect();
        let fresh = |m: &str| known.get(m).is_some_and(|(_, read)| read.elapsed() < CREDIT_SHARDS_FRESH);
        (counts, merchants.iter().copied().filter(|m| !fresh(m)).collect())
    }

    /// How many credit sub-accounts `merchant` has (1: none but its main account).
    pub async fn credit_shards(&self, merchant: &str) -> Result<u32, StoreError> {
        let pk = format!("{CREDIT_SHARDS}#{merchant}");
        let key = [("pk", pk.as_str()), ("sk", CREDIT_SHARDS)];
        get_item(&self.client, &self.table, &key).await?.map_or(Ok(1), |item| get_n(&item, "n"))
    }

    /// Gives `merchant` `shards` credit sub-accounts, from then on: the count only grows, because a
    /// sub-account beyond a smaller one could still hold money no sweep would read.
    pub async fn set_credit_shards(&self, merchant: &str, shards: u32) -> Result<u32, CreditShardsError> {
        if !(1..=MAX_CREDIT_SHARDS).contains(&shards) {
            return Err(CreditShardsError::OutOfRange(shards));
        }
        // The count and its line in the sweeper's list, together.
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(credit_shards_key(merchant)))
            .update_expression("SET n = :n")
            .condition_expression("attribute_not_exists(n) OR n <= :n")
            .expression_attribute_values(":n", n(shards))
            .build()
            .map_err(StoreError::from)?;
        let listed = Put::builder()
            .table_name(&self.table)
            .item("pk", s(CREDIT_SHARDS))
            .item("sk", s(merchant))
            .item("n", n(shards))
            .build()
            .map_err(StoreError::from)?;
        let writes = vec![Write::update(SHARDS_GROW, count), Write::put("ledger.credit_shards_listed", listed)];
        match transact(&self.client, writes).await {
            Ok(()) => Ok(shards),
            Err(e) if e.broke(SHARDS_GROW) => Err(CreditShardsError::OnlyGrows {
                merchant: merchant.to_owned(),
                has: self.credit_shards(merchant).await?,
            }),
            Err(TransactError::Store(e)) => Err(e.into()),
            Err(e) => Err(StoreError::new(e.to_string()).into()),
        }
    }

    /// The merchants with more than one credit sub-account, and how many.
    pub async fn sharded_merchants(&self) -> Result<Vec<(String, u32)>, StoreError> {
        partition_all(&self.client, &self.table, "pk", CREDIT_SHARDS)
            .await?
            .iter()
            .map(|item| Ok((get_s(item, "sk")?.to_owned(), get_n(item, "n")?)))
            .collect()
    }

    /// `merchant`'s balance: its main account and its credit sub-accounts, read together.
    pub async fn merchant_balance(&self, merchant: &str) -> Result<MerchantBalance, StoreError> {
        let shards = self.credit_shards(merchant).await?;
        let main = AccountId::merchant(merchant);
        let accounts = self.accounts(&merchant_accounts(merchant, shards)).await?;
        let credits = accounts.values().filter(|a| a.id != main).map(|a| a.balance).sum();
        Ok(MerchantBalance {
            currency: accounts.values().next().map(|a| a.currency),
            main: accounts.get(&main).map_or(Decimal::ZERO, |a| a.balance),
            credits,
            credit_shards: shards,
        })
    }

    /// Sweeps the credit sub-accounts of every merchant that has them (the notifier's schedule),
    /// starting at another merchant each tick and starting none after `budget`: how many sweeps
    /// applied. A merchant whose sweep fails is logged and left for the next tick; its money is
    /// where it was, and its balance the sum.
    pub async fn sweep_all_credits(&self, at: i64, budget: Duration) -> Result<usize, StoreError> {
        let started = Instant::now();
        let mut merchants = self.sharded_merchants().await?;
        if !merchants.is_empty() {
            let len = merchants.len();
            // Another first merchant each tick (a minute apart), so a slow one starves none for good.
            merchants.rotate_left((at / 60).rem_euclid(len as i64) as usize);
        }
        let mut applied = 0;
        for (merchant, _) in merchants {
            if started.elapsed() > budget {
                tracing::warn!("credit sweep out of time; the next tick goes on");
                break;
            }
            match self.sweep_credits(&merchant, at, None).await {
                Ok(n) => applied += n.unwrap_or(0),
                Err(e) => tracing::warn!(merchant, error = %e, "credit sweep left for the next tick"),
            }
        }
        Ok(applied)
    }

    /// Moves what `merchant`'s credit sub-accounts hold into its main account (`super::sweep`), the
    /// fullest first, until `enough` has moved (`None`: all): how many sweeps applied, `None` if it
    /// has no sub-accounts. A sweep that finds its sub-account emptied meanwhile (by another
    /// sweeper, whose money is in the main account already) reads them all again; one refused for
    /// its currency is left, for the reconciliation to name.
    pub async fn sweep_credits(
        &self,
        merchant: &str,
        at: i64,
        enough: Option<Decimal>,
    ) -> Result<Option<usize>, TransferError> {
        Ok(self.sweep_credits_moving(merchant, at, enough).await?.map(|(applied, _)| applied))
    }

    /// `sweep_credits`, with what reached the main account: by this call's sweeps, or by another
    /// sweeper's of the same sub-account at the same sequence.
    async fn sweep_credits_moving(
        &self,
        merchant: &str,
        at: i64,
        enough: Option<Decimal>,
    ) -> Result<Option<(usize, Decimal)>, TransferError> {
        let shards = self.credit_shards(merchant).await?;
        if shards < 2 {
            return Ok(None);
        }
        let main = AccountId::merchant(merchant);
        let (mut applied, mut moved) = (0, Decimal::ZERO);
        'read: for _ in 0..ATTEMPTS {
            let accounts = self.accounts(&merchant_accounts(merchant, shards)).await?;
            let sub_accounts: Vec<Account> = accounts.into_values().filter(|a| a.id != main).collect();
            for transfer in sweep(merchant, &sub_accounts) {
                if enough.is_some_and(|enough| moved >= enough) {
                    break;
                }
                match self.apply(&transfer, vec![], at).await {
                    Ok(Applied::Now) => {
                        applied += 1;
                        moved += TransferRecord::of(&transfer).amount();
                    }
                    // The same sub-account at the same sequence: another sweeper moved it.
                    Ok(Applied::Already) => moved += TransferRecord::of(&transfer).amount(),
                    Err(TransferError::Ledger(LedgerError::InsufficientFunds { account, .. }))
                        if account.kind() == AccountKind::Credit =>
                    {
                        continue 'read;
                    }
                    Err(TransferError::Ledger(e @ LedgerError::CurrencyMismatch { .. })) => {
                        tracing::error!(merchant, error = %e, "a credit sub-account in another currency is not swept");
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(Some((applied, moved)));
        }
        Err(TransferError::Contention)
    }

    pub async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.accounts(std::slice::from_ref(id)).await?.remove(id))
    }

    /// Applies `transfer` together with `with` (business items: order state, idempotency record,
    /// outbox messages) in one transaction, or not at all.
    pub async fn apply(&self, transfer: &Transfer, with: Vec<Write>, at: i64) -> Result<Applied, TransferError> {
        self.apply_assuming(transfer, with, at, &[]).await
    }

    /// `apply`, taking the `assumed` accounts to be as given on its first attempt instead of
    /// reading them (sequence 0: not there yet): accounts the caller's own writes leave in a known
    /// state, such as an order's hold account. Their writes are conditional on the balance assumed
    /// as well as the sequence, so a wrong assumption costs one more attempt, which reads
    /// everything, and never a balance written from a wrong one.
    pub async fn apply_assuming(
        &self,
        transfer: &Transfer,
        with: Vec<Write>,
        at: i64,
        assumed: &[Account],
    ) -> Result<Applied, TransferError> {
        // The merchants it names: their credit sub-account counts, read with the accounts when
        // this process has not read them lately.
        let mut merchants: Vec<&str> = transfer.legs.iter().filter_map(|l| l.account.merchant_id()).collect();
        merchants.sort_unstable();
        merchants.dedup();
        let mut swept_short = false;
        for attempt in 0..ATTEMPTS {
            let assuming = attempt == 0 && !assumed.is_empty();
            let (counts, unread) = self.spreading(&merchants);
            let spread = spread_credits(transfer, &counts);
            let current = if assuming {
                let unknown: Vec<AccountId> =
                    spread.accounts().into_iter().filter(|id| assumed.iter().all(|a| &a.id != id)).collect();
                let mut current = self.read(&unknown, &unread).await?;
                current.extend(assumed.iter().map(|a| (a.id.clone(), a.clone())));
                current
            } else {
                self.read(&spread.accounts(), &unread).await?
            };
            // A count that grew, read now: land on one of the sub-accounts, not where it planned.
            if spread_credits(transfer, &self.spreading(&merchants).0) != spread {
                continue;
            }
            let planned = plan(&spread, &current, at);
            // A merchant's main account short of a debit while its credits may wait for a sweep:
            // sweep them now and plan again on a fresh read; again when other debits spent what a
            // sweep moved. Once a sweep moved less than the shortfall (the sub-accounts it read
            // held less, or another sweeper had emptied them), the next plan's read of the main
            // account is the answer, unless its transaction is cancelled (another plan, which may
            // sweep). A sub-account in another currency is not swept (`sweep_credits`).
            if let Err(LedgerError::InsufficientFunds { account, available, wanted }) = &planned
                && !swept_short
                && account.kind() == AccountKind::Merchant
                && let Some(merchant) = account.merchant_id()
            {
                let shortfall = *wanted - *available;
                match Box::pin(self.sweep_credits_moving(merchant, at, Some(shortfall))).await {
                    Ok(None) => {}
                    Ok(Some((_, moved))) => {
                        swept_short = moved < shortfall;
                        continue;
                    }
                    // Too busy to sweep now, or the sweep failed: not a refusal the sum of its
                    // accounts might not deserve; a retry may find it swept.
                    Err(_) if self.transfer_exists(&transfer.id).await? => return Ok(Applied::Already),
                    Err(e) => {
                        tracing::warn!(merchant, error = %e, "the sweep before a debit failed");
                        return Err(e);
                    }
                }
            }
            let plan = match planned {
                Ok(plan) => plan,
                // An assumed account does not allow it: see it as it is.
                Err(e) if assuming && e.account().is_some_and(|id| assumed.iter().any(|a| &a.id == id)) => continue,
                // A retry of a transfer that already moved the money may no longer fit the
                // balances: it is still the same transfer, applied once.
                Err(_) if self.transfer_exists(&transfer.id).await? => return Ok(Applied::Already),
                Err(e) => return Err(e.into()),
            };
            let mut writes = vec![self.transfer_record(&spread, at)?];
            for (update, posting) in &plan {
                let was_assumed = assuming && assumed.iter().any(|a| a.id == update.account);
                writes.push(self.account_write(update, &spread, was_assumed)?);
                writes.push(self.posting_write(posting)?);
            }
            writes.extend(with.iter().cloned());
            let items = writes.iter().map(|w| w.item.clone()).collect();
            let error = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => return Ok(Applied::Now),
                Err(e) => e,
            };
            let Some(failed) = failed_rules(&error, &writes) else {
                // Not cancelled by a condition: a conflict with another transaction is worth
                // another plan, anything else is the caller's to see.
                if conflicted(&error) {
                    // Credits may have landed meanwhile: a short plan may sweep again.
                    swept_short = false;
                    backoff(attempt).await;
                    continue;
                }
                return Err(StoreError::from(error).into());
            };
            if failed.contains(&TRANSFER_NEW) {
                return Ok(Applied::Already);
            }
            if let Some(rule) = failed.iter().find(|rule| with.iter().any(|w| w.rule == **rule)) {
                return Err(TransferError::Rejected(rule));
            }
            // An account moved since it was read: plan again, sweeping again if short.
            swept_short = false;
            backoff(attempt).await;
        }
        Err(TransferError::Contention)
    }

    pub async fn transfer_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.transfer_record_of(id).await?.is_some())
    }

    async fn transfer_record_of(&self, id: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("transfer#{id}")))
            .key("sk", s("transfer"))
            .consistent_read(true)
            .send()
            .await?;
        Ok(output.item)
    }

    /// What a recorded transfer moved (the sum of its credits), if it was applied: a request whose
    /// id derives from a reused key is told apart from the request that made the transfer by it.
    pub async fn transfer_amount(&self, id: &str) -> Result<Option<Money>, StoreError> {
        let Some(ref item) = self.transfer_record_of(id).await? else { return Ok(None) };
        let transfer = transfer_from_item(item)?;
        Money::new(transfer.amount(), transfer.currency)
            .map(Some)
            .map_err(|e| StoreError::caused(format!("transfer {id} is corrupt: amount"), e))
    }

    /// The books of the accounts `in_scope` picks: each account, all its postings and every
    /// transfer that touches it, read by one consistent scan of the table. Only a quiet table gives
    /// books that agree with themselves: this is for checks (`crate::reconcile`), not for requests.
    pub async fn books(&self, in_scope: impl Fn(&AccountId) -> bool) -> Result<Books, StoreError> {
        let mut books = Books::default();
        for item in scan_all(&self.client, &self.table).await? {
            let (pk, sk) = (get_s(&item, "pk")?, get_s(&item, "sk")?);
            if pk == CREDIT_SHARDS || shards_owner(pk).is_some() {
                continue;
            }
            if pk.starts_with("transfer#") {
                let transfer = transfer_from_item(&item)?;
                if transfer.legs.iter().any(|(account, _)| in_scope(account)) {
                    books.transfers.push(transfer);
                }
                continue;
            }
            let account = account_id_of(pk)?;
            if !in_scope(&account) {
                continue;
            }
            if sk == "account" {
                books.accounts.push(account_from_item(&item)?);
            } else {
                books.postings.push(posting_from_item(&account, &item)?);
            }
        }
        Ok(books)
    }

    /// The books as a live table gives them (`crate::reconcile::check_as_read`): every account at
    /// the sequence its item was read at, with exactly its postings up to it, and every transfer;
    /// and which transfers were in flight, a leg posted after its account was read. One scan (an
    /// account's item sorts before its postings, so those up to its sequence are all read after
    /// it), a consistent read of each transfer a posting names that the scan passed before it was
    /// written, and for each leg missing then, one look at its account's later postings, taken only
    /// up to the sequence its item has reached (a posting beyond it is a leg written without its
    /// balance, not one in flight). Postings of an account with no item are kept, as orphans.
    pub async fn books_as_read(&self) -> Result<(Books, HashSet<String>), StoreError> {
        let mut books = Books::default();
        let mut postings = Vec::new();
        for item in scan_all(&self.client, &self.table).await? {
            let (pk, sk) = (get_s(&item, "pk")?, get_s(&item, "sk")?);
            if pk == CREDIT_SHARDS || shards_owner(pk).is_some() {
                continue;
            }
            if pk.starts_with("transfer#") {
                books.transfers.push(transfer_from_item(&item)?);
            } else if sk == "account" {
                books.accounts.push(account_from_item(&item)?);
            } else {
                postings.push(posting_from_item(&account_id_of(pk)?, &item)?);
            }
        }
        let read_at: HashMap<AccountId, u64> = books.accounts.iter().map(|a| (a.id.clone(), a.sequence)).collect();
        // An account whose item the scan did not find: written after the scan passed it, or gone
        // (its postings are then orphans, which the check finds).
        let unseen: Vec<AccountId> = postings
            .iter()
            .map(|p| &p.account)
            .filter(|a| !read_at.contains_key(*a))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut exist = HashSet::new();
        for chunk in unseen.chunks(100) {
            exist.extend(self.accounts(chunk).await?.into_keys());
        }
        for posting in postings {
            match read_at.get(&posting.account) {
                Some(sequence) if posting.sequence > *sequence => {}
                None if exist.contains(&posting.account) => {}
                _ => books.postings.push(posting),
            }
        }
        let known: HashSet<String> = books.transfers.iter().map(|t| t.id.clone()).collect();
        let unknown: BTreeSet<&str> =
            books.postings.iter().map(|p| p.transfer_id.as_str()).filter(|id| !known.contains(*id)).collect();
        for id in unknown {
            // Absent still: the posting names a transfer never recorded, as the check will say.
            if let Some(item) = self.transfer_record_of(id).await? {
                books.transfers.push(transfer_from_item(&item)?);
            }
        }
        let posted: HashSet<(&str, &AccountId)> =
            books.postings.iter().map(|p| (p.transfer_id.as_str(), &p.account)).collect();
        let mut in_flight = HashSet::new();
        // Each account's postings written since it was read, up to the sequence its item has
        // reached now: one written beyond it (without its balance) is no transfer in flight.
        let mut later: HashMap<AccountId, Vec<Posting>> = HashMap::new();
        for transfer in &books.transfers {
            let missing: Vec<&AccountId> = transfer
                .legs
                .iter()
                .map(|(account, _)| account)
                .filter(|a| !posted.contains(&(transfer.id.as_str(), *a)))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let mut all_later = true;
            for account in missing {
                if !later.contains_key(account) {
                    let after = format!("posting#{:020}", read_at.get(account).copied().unwrap_or(0));
                    let items = items_after(&self.client, &self.table, &format!("account#{account}"), &after).await?;
                    let reached = self.account(account).await?.map_or(0, |a| a.sequence);
                    let fresh = items
                        .iter()
                        .map(|item| posting_from_item(account, item))
                        .filter(|p| p.as_ref().map_or(true, |p| p.sequence <= reached))
                        .collect::<Result<Vec<_>, _>>()?;
                    later.insert(account.clone(), fresh);
                }
                all_later &= later.get(account).is_some_and(|p| p.iter().any(|p| p.transfer_id == transfer.id));
            }
            if all_later {
                in_flight.insert(transfer.id.clone());
            }
        }
        Ok((books, in_flight))
    }

    /// An account's postings, newest first: `limit` of them before sequence `before` (exclusive).
    pub async fn postings(&self, id: &AccountId, before: Option<u64>, limit: i32) -> Result<Vec<Posting>, StoreError> {
        let page = newest_before(&self.client, &self.table, format!("account#{id}"), "posting#", before, limit).await?;
        page.iter().map(|item| posting_from_item(id, item)).collect()
    }

    fn transfer_record(&self, transfer: &Transfer, at: i64) -> Result<Write, StoreError> {
        let legs: Vec<serde_json::Value> = transfer
            .legs
            .iter()
            .map(|l| serde_json::json!({ "account": l.account.as_str(), "amount": l.amount.to_string() }))
            .collect();
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("transfer#{}", transfer.id)))
            .item("sk", s("transfer"))
            .item("currency", s(transfer.currency.code()))
            .item("kind", s(transfer.kind))
            .item("cause", s(&transfer.cause))
            .item("legs", s(serde_json::Value::Array(legs).to_string()))
            .item("at", n(at))
            .condition_expression("attribute_not_exists(pk)")
            .build()?;
        Ok(Write::put(TRANSFER_NEW, put))
    }

    /// The account's update, conditional on the sequence it was planned from (and, for an account
    /// assumed rather than read, `check_balance`, on its balance too).
    fn account_write(
        &self,
        update: &AccountUpdate,
        transfer: &Transfer,
        check_balance: bool,
    ) -> Result<Write, StoreError> {
        let mut set = vec!["balance = :balance", "#seq = :seq", "currency = :currency"];
        let mut values = HashMap::from([
            (":balance".to_owned(), n(update.balance)),
            (":seq".to_owned(), n(update.sequence)),
            (":currency".to_owned(), s(transfer.currency.code())),
        ]);
        if let Some(available) = update.available {
            set.push("available = :available");
            values.insert(":available".to_owned(), n(available));
        }
        let condition = if update.expected_sequence == 0 {
            "attribute_not_exists(pk)".to_owned()
        } else {
            values.insert(":expected".to_owned(), n(update.expected_sequence));
            let mut condition = "#seq = :expected AND currency = :currency".to_owned();
            if check_balance {
                condition.push_str(" AND balance = :before");
                values.insert(":before".to_owned(), n(update.expected_balance));
            }
            // The floor, stated where DynamoDB checks it: `available` must cover the debit.
            if let Some(debit) = update.debit {
                condition.push_str(" AND available >= :debit");
                values.insert(":debit".to_owned(), n(debit));
            }
            condition
        };
        let write = Update::builder()
            .table_name(&self.table)
            .set_key(Some(account_key(&update.account)))
            .update_expression(format!("SET {}", set.join(", ")))
            .condition_expression(condition)
            .expression_attribute_names("#seq", "sequence")
            .set_expression_attribute_values(Some(values))
            .build()?;
        Ok(Write::update("ledger.account_unchanged_and_covers_debit", write))
    }

    fn posting_write(&self, posting: &Posting) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("account#{}", posting.account)))
            .item("sk", s(format!("posting#{:020}", posting.sequence)))
            .item("amount", n(posting.amount))
            .item("balance_after", n(posting.balance_after))
            .item("transfer_id", s(&posting.transfer_id))
            .item("kind", s(&posting.kind))
            .item("at", n(posting.at))
            .condition_expression("attribute_not_exists(pk)")
            .build()?;
        Ok(Write::put("ledger.posting_new", put))
    }
}

/// A merchant's credit sub-accounts, if it has more than one, and its main account.
fn merchant_accounts(merchant: &str, shards: u32) -> Vec<AccountId> {
    let credits = (0..shards).filter(|_| shards > 1).map(|k| AccountId::credit(merchant, k));
    credits.chain([AccountId::merchant(merchant)]).collect()
}

/// The key of `merchant`'s credit sub-account count, in a partition of its own.
fn credit_shards_key(merchant: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), s(format!("{CREDIT_SHARDS}#{merchant}"))), ("sk".to_owned(), s(CREDIT_SHARDS))])
}

/// The merchant whose count partition key `pk` is.
fn shards_owner(pk: &str) -> Option<&str> {
    pk.strip_prefix(CREDIT_SHARDS)?.strip_prefix('#')
}

fn account_id_of(pk: &str) -> Result<AccountId, StoreError> {
    pk.strip_prefix("account#")
        .and_then(AccountId::parse)
        .ok_or_else(|| StoreError::new(format!("{pk} is not an account key")))
}

fn transfer_from_item(item: &Item) -> Result<TransferRecord, StoreError> {
    let pk = get_s(item, "pk")?;
    let corrupt = |what: &str| StoreError::new(format!("{pk} is corrupt: {what}"));
    let id = pk.strip_prefix("transfer#").ok_or_else(|| corrupt("not a transfer key"))?;
    let legs: Vec<serde_json::Value> = serde_json::from_str(get_s(item, "legs")?).map_err(|_| corrupt("legs"))?;
    let legs = legs
        .iter()
        .map(|leg| {
            let account = leg["account"].as_str().and_then(AccountId::parse);
            let amount = leg["amount"].as_str().and_then(|a| a.parse::<Decimal>().ok());
            account.zip(amount).ok_or_else(|| corrupt("leg"))
        })
        .collect::<Result<_, _>>()?;
    Ok(TransferRecord {
        id: id.to_owned(),
        currency: get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?,
        kind: get_s(item, "kind")?.to_owned(),
        cause: get_s(item, "cause")?.to_owned(),
        legs,
    })
}

fn account_from_item(item: &Item) -> Result<Account, StoreError> {
    let id = account_id_of(get_s(item, "pk")?)?;
    let currency: crate::money::Currency = get_s(item, "currency")?
        .parse()
        .map_err(|e: crate::money::MoneyError| StoreError::caused("a stored account's currency is not accepted", e))?;
    Ok(Account {
        id,
        currency,
        balance: currency.rescale(get_decimal(item, "balance")?),
        sequence: get_n(item, "sequence")?,
    })
}

fn posting_from_item(account: &AccountId, item: &Item) -> Result<Posting, StoreError> {
    let sk = get_s(item, "sk")?;
    Ok(Posting {
        account: account.clone(),
        sequence: sk
            .strip_prefix("posting#")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::new(format!("{sk} is not a posting key")))?,
        amount: get_decimal(item, "amount")?,
        balance_after: get_decimal(item, "balance_after")?,
        transfer_id: get_s(item, "transfer_id")?.to_owned(),
        kind: get_s(item, "kind")?.to_owned(),
        at: get_n(item, "at")?,
    })
}
