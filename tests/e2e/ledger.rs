//! The ledger against the emulator under concurrency, in the shape of the Jepsen bank test: many
//! concurrent transfers (some retried) among a few accounts, then every invariant checked.

use std::collections::HashMap;

use rust_decimal::Decimal;
use superpay::ledger::store::{Applied, LedgerStore, TransferError};
use superpay::ledger::{AccountId, AccountKind, LedgerError, Transfer};
use superpay::money::Money;
use superpay_e2e::{Env, unique};

async fn ledger() -> LedgerStore {
    Env::get().ledger().await
}

fn usd(cents: i64) -> Money {
    Money::new(Decimal::new(cents, 2), "USD".parse().unwrap()).unwrap()
}

/// Moves `cents` from `from` to `to` as transfer `id`, which must apply now (a test's setup).
async fn move_now(
    store: &LedgerStore,
    id: String,
    cents: i64,
    from: &AccountId,
    to: &AccountId,
    kind: &'static str,
    run: &str,
) {
    let transfer = Transfer::between(id, usd(cents), from.clone(), to.clone(), kind, run.to_owned()).unwrap();
    assert_eq!(store.apply(&transfer, vec![], 0).await.unwrap(), Applied::Now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack: cargo stack test"]
async fn concurrent_transfers_keep_every_invariant() {
    let run = unique("bank");
    let accounts: Vec<AccountId> = (0..4)
        .map(|i| AccountId::wallet(&format!("{run}-u{i}")))
        .chain([AccountId::merchant(&format!("{run}-m"))])
        .collect();
    let store = ledger().await;
    let source = AccountId::funding(&format!("{run}-bank"));
    for (i, account) in accounts.iter().take(4).enumerate() {
        let fund = Transfer::between(
            format!("{run}-fund-{i}"),
            usd(10_000),
            source.clone(),
            account.clone(),
            "test.fund",
            run.clone(),
        )
        .unwrap();
        assert_eq!(store.apply(&fund, vec![], 0).await.unwrap(), Applied::Now);
    }
    let total = Decimal::new(40_000, 2);

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..8u64 {
        let (accounts, run) = (accounts.clone(), run.clone());
        workers.spawn(async move {
            let store = ledger().await;
            let mut outcomes = Vec::new();
            for i in 0..40u64 {
                // A cheap deterministic spread of pairs and amounts per worker.
                let x = worker * 7919 + i * 104_729;
                let (from, to) = ((x % 5) as usize, ((x / 5 + 1 + x % 4) % 5) as usize);
                let Ok(transfer) = Transfer::between(
                    format!("{run}-w{worker}-{i}"),
                    usd(100 + (x % 6_000) as i64),
                    accounts[from].clone(),
                    accounts[to].clone(),
                    "test.move",
                    run.clone(),
                ) else {
                    continue;
                };
                let mut outcome = store.apply(&transfer, vec![], 0).await;
                // Every fifth transfer is retried, as a client would after a timeout.
                if i % 5 == 0 {
                    let again = store.apply(&transfer, vec![], 0).await;
                    if matches!(outcome, Ok(Applied::Now)) {
                        assert!(matches!(again, Ok(Applied::Already)), "a retry moved money again: {again:?}");
                    } else {
                        // The first try moved nothing; the retry may (the balances changed meanwhile).
                        outcome = again;
                    }
                }
                outcomes.push((transfer.id.clone(), outcome));
            }
            outcomes
        });
    }
    let mut applied = Vec::new();
    let mut refused = 0;
    for outcomes in workers.join_all().await {
        for (id, outcome) in outcomes {
            match outcome {
                Ok(Applied::Now) => applied.push(id),
                Ok(Applied::Already) => panic!("{id} was new"),
                Err(TransferError::Ledger(LedgerError::InsufficientFunds { .. })) | Err(TransferError::Contention) => {
                    refused += 1
                }
                Err(e) => panic!("{id}: {e}"),
            }
        }
    }
    assert!(applied.len() > 100, "most transfers apply ({} applied, {refused} refused)", applied.len());

    // Every invariant, from the table itself: conserved, no balance below its floor, postings that
    // rebuild each balance, every transfer with exactly its postings.
    let books = store.books(|account| account.as_str().contains(&run)).await.unwrap();
    let violations = superpay::reconcile::check(&books);
    assert!(violations.is_empty(), "{}", violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
    assert_eq!(books.accounts.len(), 6, "four wallets, the merchant and the bank");
    let sum: Decimal = books.accounts.iter().filter(|a| accounts.contains(&a.id)).map(|a| a.balance).sum();
    assert_eq!(sum, total, "what was funded is all still there");
    let mut postings_per_transfer: HashMap<&str, usize> = HashMap::new();
    for posting in &books.postings {
        *postings_per_transfer.entry(&posting.transfer_id).or_default() += 1;
    }
    for id in &applied {
        assert_eq!(postings_per_transfer.get(id.as_str()), Some(&2), "{id} applied exactly once");
    }
    let moves = postings_per_transfer.keys().filter(|id| id.contains("-w")).count();
    assert_eq!(moves, applied.len(), "no refused transfer left a posting");
}

/// The same with a popular merchant: users pay it (credits spread over its four sub-accounts), it
/// refunds them (from its account, sweeping first when short), and sweeps run meanwhile, all at
/// once. Nothing is lost or made twice, no sub-account gives money but to a sweep, and what the
/// merchant has is exactly what was paid less what was refunded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_popular_merchants_sub_accounts_keep_every_invariant_under_concurrency() {
    let run = unique("hot");
    let merchant_id = format!("{run}-m");
    let merchant = AccountId::merchant(&merchant_id);
    let wallets: Vec<AccountId> = (0..4).map(|i| AccountId::wallet(&format!("{run}-u{i}"))).collect();
    let store = ledger().await;
    store.set_credit_shards(&merchant_id, 4).await.unwrap();
    let source = AccountId::funding(&format!("{run}-bank"));
    for (i, wallet) in wallets.iter().enumerate() {
        move_now(&store, format!("{run}-fund-{i}"), 10_000, &source, wallet, "test.fund", &run).await;
    }

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..8u64 {
        let (wallets, merchant, merchant_id, run) =
            (wallets.clone(), merchant.clone(), merchant_id.clone(), run.clone());
        workers.spawn(async move {
            let store = ledger().await;
            let (mut paid, mut refunded) = (Decimal::ZERO, Decimal::ZERO);
            for i in 0..30u64 {
                let x = worker * 7919 + i * 104_729;
                let wallet = wallets[(x % 4) as usize].clone();
                let amount = usd(100 + (x % 3_000) as i64);
                let (from, to, kind) = match i % 5 {
                    // Every fifth tick of a worker sweeps, as the schedule would at any moment.
                    4 => match store.sweep_credits(&merchant_id, 0, None).await {
                        Ok(_) | Err(TransferError::Contention) => continue,
                        Err(e) => panic!("sweep: {e}"),
                    },
                    3 => (merchant.clone(), wallet, "test.refund"),
                    _ => (wallet, merchant.clone(), "test.pay"),
                };
                let transfer =
                    Transfer::between(format!("{run}-w{worker}-{i}"), amount, from, to, kind, run.clone()).unwrap();
                let outcome = store.apply(&transfer, vec![], 0).await;
                // Retried, as a client would after a timeout: never twice.
                let again = store.apply(&transfer, vec![], 0).await;
                match outcome {
                    Ok(Applied::Now) => {
                        assert!(matches!(again, Ok(Applied::Already)), "a retry moved money again: {again:?}");
                        if kind == "test.pay" { paid += amount.amount() } else { refunded += amount.amount() }
                    }
                    Err(TransferError::Ledger(LedgerError::InsufficientFunds { .. }))
                    | Err(TransferError::Contention) => {
                        assert!(!matches!(again, Ok(Applied::Already)), "refused, then found applied");
                        if matches!(again, Ok(Applied::Now)) {
                            if kind == "test.pay" { paid += amount.amount() } else { refunded += amount.amount() }
                        }
                    }
                    other => panic!("{}: {other:?}", transfer.id),
                }
            }
            (paid, refunded)
        });
    }
    let (mut paid, mut refunded) = (Decimal::ZERO, Decimal::ZERO);
    for (p, r) in workers.join_all().await {
        paid += p;
        refunded += r;
    }
    assert!(refunded > Decimal::ZERO, "some refunds applied, sweeping first");

    let books = store.books(|account| account.as_str().contains(&run)).await.unwrap();
    let violations = superpay::reconcile::check(&books);
    assert!(violations.is_empty(), "{}", violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
    let held = store.merchant_balance(&merchant_id).await.unwrap();
    assert_eq!(held.total(), paid - refunded, "the merchant has what was paid less what was refunded");
    let in_wallets: Decimal = books.accounts.iter().filter(|a| wallets.contains(&a.id)).map(|a| a.balance).sum();
    assert_eq!(in_wallets + held.total(), Decimal::new(40_000, 2), "nothing lost or made");
    let sub_accounts = books.accounts.iter().filter(|a| a.id.kind() == AccountKind::Credit).count();
    assert_eq!(sub_accounts, 4, "every sub-account took credits");
    assert!(books.transfers.iter().any(|t| t.kind == superpay::ledger::SWEEP_KIND));
}

/// Nine debits at once of a merchant whose money, enough for eight, is all in its sub-accounts:
/// each sweeps what it needs, again when the others spent what it swept, so eight apply and one
/// is refused `InsufficientFunds` (not busy), whichever it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack: cargo stack test"]
async fn debits_at_once_sweep_until_the_sum_of_the_sub_accounts_is_spent() {
    let run = unique("drain");
    let merchant_id = format!("{run}-m");
    let (merchant, wallet) = (AccountId::merchant(&merchant_id), AccountId::wallet(&format!("{run}-u")));
    let store = ledger().await;
    store.set_credit_shards(&merchant_id, 4).await.unwrap();
    move_now(&store, format!("{run}-fund"), 8_000, &AccountId::funding(&run), &wallet, "test.fund", &run).await;
    for i in 0..8 {
        move_now(&store, format!("{run}-pay-{i}"), 1_000, &wallet, &merchant, "test.pay", &run).await;
    }

    let mut debits = tokio::task::JoinSet::new();
    for i in 0..9 {
        let (wallet, merchant, run) = (wallet.clone(), merchant.clone(), run.clone());
        debits.spawn(async move {
            let store = ledger().await;
            let refund =
                Transfer::between(format!("{run}-refund-{i}"), usd(1_000), merchant, wallet, "test.refund", run)
                    .unwrap();
            // Busy is a retry's to settle, as a client's would; a refusal is an answer.
            for _ in 0..5 {
                match store.apply(&refund, vec![], 0).await {
                    Err(TransferError::Contention) => continue,
                    outcome => return outcome.map_err(|e| format!("{}: {e:?}", refund.id)),
                }
            }
            Err(format!("{}: busy five times", refund.id))
        });
    }
    let outcomes = debits.join_all().await;
    let applied = outcomes.iter().filter(|o| **o == Ok(Applied::Now)).count();
    let refused = outcomes.iter().filter(|o| o.as_ref().is_err_and(|e| e.contains("InsufficientFunds"))).count();
    assert_eq!((applied, refused), (8, 1), "eight fit in the sub-accounts, the ninth is refused: {outcomes:?}");
    assert_eq!(store.merchant_balance(&merchant_id).await.unwrap().total(), Decimal::ZERO);
    assert_eq!(store.account(&wallet).await.unwrap().map(|a| a.balance), Some(Decimal::new(8_000, 2)));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn refusals_move_nothing() {
    let run = unique("refuse");
    let store = ledger().await;
    let (wallet, merchant) = (AccountId::wallet(&run), AccountId::merchant(&run));
    let fund = Transfer::between(
        format!("{run}-fund"),
        usd(500),
        AccountId::funding(&run),
        wallet.clone(),
        "test.fund",
        run.clone(),
    )
    .unwrap();
    store.apply(&fund, vec![], 0).await.unwrap();

    let too_much =
        Transfer::between(format!("{run}-big"), usd(501), wallet.clone(), merchant.clone(), "test", run.clone())
            .unwrap();
    assert!(matches!(
        store.apply(&too_much, vec![], 0).await,
        Err(TransferError::Ledger(LedgerError::InsufficientFunds { .. }))
    ));
    let euros = Transfer::between(
        format!("{run}-eur"),
        Money::parse("1.00", "EUR").unwrap(),
        wallet.clone(),
        merchant.clone(),
        "test",
        run.clone(),
    )
    .unwrap();
    assert!(matches!(
        store.apply(&euros, vec![], 0).await,
        Err(TransferError::Ledger(LedgerError::CurrencyMismatch { .. }))
    ));

    let state = store.accounts(&[wallet.clone(), merchant.clone()]).await.unwrap();
    assert_eq!(state[&wallet].balance, Decimal::new(500, 2));
    assert_eq!(state[&wallet].sequence, 1);
    assert!(!state.contains_key(&merchant), "the merchant account was never written");
    assert!(!store.transfer_exists(&too_much.id).await.unwrap());
}

/// Accounts assumed rather than read (`apply_assuming`): a wrong assumption, either way, costs an
/// attempt and never a wrong balance; an assumption that would refuse the transfer is checked
/// against the accounts as they are.
#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_wrong_assumption_about_an_account_is_caught_by_its_condition() {
    use superpay::ledger::Account;
    let run = unique("assume");
    let store = ledger().await;
    let (wallet, merchant) = (AccountId::wallet(&run), AccountId::merchant(&run));
    let usd_of = |id: &AccountId, cents: i64, sequence: u64| Account {
        id: id.clone(),
        currency: "USD".parse().unwrap(),
        balance: Decimal::new(cents, 2),
        sequence,
    };
    let transfer = |name: &str, cents: i64, from: &AccountId, to: &AccountId| {
        Transfer::between(format!("{run}-{name}"), usd(cents), from.clone(), to.clone(), "test", run.clone()).unwrap()
    };
    let funding = AccountId::funding(&run);
    store.apply(&transfer("fund", 1_000, &funding, &wallet), vec![], 0).await.unwrap();
    store.apply(&transfer("first", 100, &wallet, &merchant), vec![], 0).await.unwrap();

    // The merchant's account assumed new, though it holds 1.00 at sequence 1: planned again, read.
    let second = transfer("second", 200, &wallet, &merchant);
    let assumed = [usd_of(&merchant, 0, 0)];
    assert_eq!(store.apply_assuming(&second, vec![], 0, &assumed).await.unwrap(), Applied::Now);
    // The wallet assumed empty (which would refuse the debit): read, and it has enough.
    let third = transfer("third", 300, &wallet, &merchant);
    assert_eq!(store.apply_assuming(&third, vec![], 0, &[usd_of(&wallet, 0, 1)]).await.unwrap(), Applied::Now);
    // Assumed richer than it is: its condition refuses the commit, and the read refuses the debit.
    let too_much = transfer("too-much", 500, &wallet, &merchant);
    let rich = [usd_of(&wallet, 100_000, 3)];
    assert!(matches!(
        store.apply_assuming(&too_much, vec![], 0, &rich).await,
        Err(TransferError::Ledger(LedgerError::InsufficientFunds { .. }))
    ));

    // The right sequence with a wrong balance, on an account with no floor: caught by the balance
    // condition, or the write would set a balance from the wrong one.
    let top_up = transfer("top-up", 50, &funding, &wallet);
    let off = [usd_of(&funding, -99_900, 1)];
    assert_eq!(store.apply_assuming(&top_up, vec![], 0, &off).await.unwrap(), Applied::Now);

    let state = store.accounts(&[wallet.clone(), merchant.clone(), funding.clone()]).await.unwrap();
    assert_eq!((state[&wallet].balance, state[&wallet].sequence), (Decimal::new(450, 2), 5));
    assert_eq!((state[&merchant].balance, state[&merchant].sequence), (Decimal::new(600, 2), 3));
    assert_eq!((state[&funding].balance, state[&funding].sequence), (Decimal::new(-1_050, 2), 2));
    assert!(!store.transfer_exists(&too_much.id).await.unwrap());
}

/// The books as a live read gives them (`LedgerStore::books_as_read`): a leg written without its
/// balance (a posting beyond its account's sequence, its transfer recorded) is never taken for a
/// transfer in flight, and a finished transfer reads whole.
#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_live_read_never_excuses_a_leg_written_without_its_balance() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let env = Env::get();
    let run = unique("live");
    let (bank, wallet) = (AccountId::funding(&format!("{run}-bank")), AccountId::wallet(&format!("{run}-u")));
    let store = ledger().await;
    let fund =
        Transfer::between(format!("{run}-fund"), usd(1_000), bank.clone(), wallet.clone(), "test.fund", run.clone())
            .unwrap();
    assert_eq!(store.apply(&fund, vec![], 0).await.unwrap(), Applied::Now);
    // A second transfer whose wallet leg was posted at sequence 2, the wallet's item left at 1.
    let ghost = format!("{run}-ghost");
    let legs = format!(r#"[{{"account":"{wallet}","amount":"5.00"}},{{"account":"{bank}","amount":"-5.00"}}]"#);
    let dynamodb = env.dynamodb().await;
    let table = env.table("LedgerTable");
    let put = |item: Vec<(&str, aws_sdk_dynamodb::types::AttributeValue)>| {
        let request = dynamodb
            .put_item()
            .table_name(table)
            .set_item(Some(item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
        async move { request.send().await.unwrap() }
    };
    put(vec![
        ("pk", S(format!("transfer#{ghost}"))),
        ("sk", S("transfer".into())),
        ("currency", S("USD".into())),
        ("kind", S("test.fund".into())),
        ("cause", S(run.clone())),
        ("legs", S(legs)),
        ("at", N("0".into())),
    ])
    .await;
    put(vec![
        ("pk", S(format!("account#{wallet}"))),
        ("sk", S(format!("posting#{:020}", 2))),
        ("amount", N("5.00".into())),
        ("balance_after", N("15.00".into())),
        ("transfer_id", S(ghost.clone())),
        ("kind", S("test.fund".into())),
        ("at", N("0".into())),
    ])
    .await;
    let (books, in_flight) = store.books_as_read().await.unwrap();
    assert!(!in_flight.contains(&ghost) && !in_flight.contains(&fund.id));
    let found = superpay::reconcile::check_as_read(&books, &in_flight);
    let about = |transfer: &str| {
        found
            .iter()
            .any(|v| matches!(v, superpay::reconcile::Violation::PostingsDiffer { transfer: t, .. } if t == transfer))
    };
    assert!(about(&ghost), "{found:?}");
    assert!(!about(&fund.id), "{found:?}");
}
