use proptest::prelude::*;

use super::*;
use crate::ledger::plan;

const NOW: i64 = 1_800_000_000;

fn cash() -> Caps {
    Caps::cash("USD".parse().unwrap())
}

fn usd(amount: &str) -> Money {
    Money::parse(amount, "USD").expect("an amount")
}

fn movement(id: &str, direction: Direction, amount: &str, state: CashState) -> Movement {
    Movement {
        id: id.into(),
        user: "alice".into(),
        direction,
        instrument_id: "in_1".into(),
        instrument_label: "visa 1111".into(),
        amount: usd(amount),
        state,
        created_at: NOW,
        decided_at: None,
        reason: None,
        asked: false,
        charge: None,
        refund_of: None,
        refunded: Decimal::ZERO,
    }
}

#[test]
fn a_movement_is_refused_over_its_own_limit_the_window_s_total_or_its_count() {
    let usd_limit = movement_limit("USD".parse::<Currency>().unwrap());
    assert_eq!(usd_limit, Decimal::new(10_000, 0));
    assert_eq!(Window::default().admit(usd("10000.01"), NOW, cash()), Err(LimitRefusal::Movement { limit: usd_limit }));
    let mut window = Window::default();
    for _ in 0..2 {
        window = window.admit(usd("10000"), NOW, cash()).expect("within the window");
    }
    assert_eq!((window.version, window.entries.len()), (2, 2));
    assert_eq!(
        window.admit(usd("5000.01"), NOW + 1, cash()),
        Err(LimitRefusal::Window { limit: Decimal::new(25_000, 0), used: Decimal::new(20_000, 0) })
    );
    assert!(window.admit(usd("5000"), NOW + 1, cash()).is_ok(), "exactly the limit passes");
    // A day later the old movements no longer count, and are dropped.
    let later = window.admit(usd("10000"), NOW + WINDOW_SECONDS, cash()).expect("a new day");
    assert_eq!(later.entries, vec![(NOW + WINDOW_SECONDS, Decimal::new(10_000, 0))]);
    let mut small = Window::default();
    for i in 0..MAX_MOVEMENTS_PER_WINDOW {
        small = small.admit(usd("1"), NOW + i as i64, cash()).expect("under the count");
    }
    assert_eq!(small.admit(usd("1"), NOW + 100, cash()), Err(LimitRefusal::Count { limit: MAX_MOVEMENTS_PER_WINDOW }));
}

proptest! {
    /// Whatever was admitted before, the movements of any 24 hours never add up past the window's
    /// limit nor number more than its count.
    #[test]
    fn what_a_window_admits_stays_within_its_limits(asks in proptest::collection::vec((0i64..40_000, 1i64..1_500_000), 1..60)) {
        let mut window = Window::default();
        let mut at = NOW;
        for (gap, cents) in asks {
            at += gap;
            let amount = Money::new(Decimal::new(cents, 2), "USD".parse::<Currency>().unwrap()).unwrap();
            if let Ok(admitted) = window.admit(amount, at, cash()) {
                window = admitted;
            }
            let recent: Vec<_> = window.entries.iter().filter(|(t, _)| *t > at - WINDOW_SECONDS).collect();
            prop_assert!(recent.len() <= MAX_MOVEMENTS_PER_WINDOW);
            prop_assert!(recent.iter().map(|(_, a)| *a).sum::<Decimal>() <= Decimal::new(25_000, 0));
        }
    }
}

#[test]
fn ids_say_their_direction_and_name_their_transfers() {
    assert_eq!(Direction::of_id("ci_abc"), Some(Direction::In));
    assert_eq!(Direction::of_id("co_abc"), Some(Direction::Out));
    assert_eq!(Direction::of_id("in_abc"), None);
    let out = movement("co_1", Direction::Out, "5.00", CashState::Pending);
    assert_eq!(
        (out.reference(), out.hold_id(), out.settlement_id()),
        ("cash-out/co_1".to_owned(), "cash-out/co_1/hold".to_owned(), "cash-out/co_1/settle".to_owned())
    );
    // A capture and a release are one settlement: one transfer id, at most one applies.
    assert_eq!(out.on_approval().unwrap().id, out.release().unwrap().id);
    let cash_in = movement("ci_1", Direction::In, "5.00", CashState::Pending);
    assert_eq!(
        cash_in.on_approval().unwrap().accounts(),
        vec![AccountId::funding("in_1/USD"), AccountId::wallet("alice")]
    );
}

#[test]
fn a_movement_shows_its_outcome_and_a_partner_sees_its_token_not_the_instrument() {
    let mut cash_in = movement("ci_1", Direction::In, "5", CashState::Declined);
    (cash_in.decided_at, cash_in.reason) = (Some(NOW + 1), Some("do not honor".into()));
    assert_eq!(
        serde_json::json!(cash_in.view()),
        serde_json::json!({"id": "ci_1", "direction": "in", "instrument_id": "in_1", "instrument": "visa 1111",
                           "amount": "5.00", "currency": "USD", "state": "declined", "created_at": NOW,
                           "decided_at": NOW + 1, "reason": "do not honor", "decline_code": "bank_declined"})
    );
    let mut charge = movement("ch_1", Direction::Charge, "5", CashState::Pending);
    charge.charge = Some(ChargeOf {
        partner: "p_1".into(),
        link: "l_1".into(),
        merchant: "m_1".into(),
        token: "pt_1".into(),
        number_token: "n".into(),
    });
    assert_eq!(
        serde_json::json!(charge.partner_view()),
        serde_json::json!({"id": "ch_1", "direction": "charge", "token": "pt_1", "amount": "5.00", "currency": "USD",
                           "state": "pending", "created_at": NOW, "partner_id": "p_1", "link_id": "l_1",
                           "refunded": "0.00"})
    );
}

/// The books after `transfers`, applied in order from nothing.
fn books(transfers: &[Transfer]) -> Books {
    let mut accounts: HashMap<AccountId, crate::ledger::Account> = HashMap::new();
    let mut postings = Vec::new();
    for transfer in transfers {
        for (update, posting) in plan(transfer, &accounts, NOW).expect("a valid transfer") {
            accounts.insert(
                update.account.clone(),
                crate::ledger::Account {
                    id: update.account.clone(),
                    currency: transfer.currency,
                    balance: update.balance,
                    sequence: update.sequence,
                },
            );
            postings.push(posting);
        }
    }
    Books {
        accounts: accounts.into_values().collect(),
        postings,
        transfers: transfers.iter().map(TransferRecord::of).collect(),
    }
}

fn funded(amount: &str) -> Transfer {
    Transfer::between(
        "seed".into(),
        usd(amount),
        AccountId::funding("bank"),
        AccountId::wallet("alice"),
        "test.fund",
        "seed".into(),
    )
    .unwrap()
}

#[test]
fn settled_movements_that_moved_exactly_their_money_pass() {
    let credited = movement("ci_1", Direction::In, "20.00", CashState::Completed);
    let declined_in = movement("ci_2", Direction::In, "20.00", CashState::Declined);
    let paid = movement("co_1", Direction::Out, "5.00", CashState::Completed);
    let released = movement("co_2", Direction::Out, "5.00", CashState::Declined);
    let pending = movement("co_3", Direction::Out, "5.00", CashState::Pending);
    let transfers = vec![
        funded("10.00"),
        credited.on_approval().unwrap(),
        paid.hold().unwrap(),
        paid.on_approval().unwrap(),
        released.hold().unwrap(),
        released.release().unwrap(),
        pending.hold().unwrap(),
    ];
    let movements = [credited, declined_in, paid, released, pending];
    assert_eq!(check_cash(&movements, &books(&transfers), NOW + 60, 60), vec![]);
    let found = check_cash(&movements, &books(&transfers), NOW + 61, 60);
    assert_eq!(found.len(), 1, "the pending one, past the slack: {found:?}");
    assert!(found[0].to_string().contains("still pending"), "{}", found[0]);
}

#[test]
fn a_movement_that_lies_about_its_money_is_found() {
    let credited = movement("ci_1", Direction::In, "20.00", CashState::Completed);
    let paid = movement("co_1", Direction::Out, "5.00", CashState::Completed);
    let find = |movements: &[Movement], transfers: &[Transfer]| check_cash(movements, &books(transfers), NOW, 60);
    // Completed with no credit; declined with one; credited twice the amount.
    assert_eq!(find(std::slice::from_ref(&credited), &[]).len(), 1);
    let declined = Movement { state: CashState::Declined, ..credited.clone() };
    assert_eq!(find(std::slice::from_ref(&declined), &[credited.on_approval().unwrap()]).len(), 1);
    let doubled = Movement { amount: usd("40.00"), ..credited.clone() };
    assert_eq!(find(std::slice::from_ref(&credited), &[doubled.on_approval().unwrap()]).len(), 1);
    // A cash-out paid out but released too (as the capture's id is taken, as another kind).
    let transfers = [funded("10.00"), paid.hold().unwrap(), paid.release().unwrap()];
    let found = find(std::slice::from_ref(&paid), &transfers);
    assert!(found.iter().any(|v| v.to_string().contains("cash.out_release")), "{found:?}");
    // A cash-out completed with no hold, and a credit for a movement nobody recorded.
    let found = find(&[], &[credited.on_approval().unwrap()]);
    assert!(found[0].to_string().contains("no recorded movement"), "{found:?}");
    let unheld = find(std::slice::from_ref(&paid), &[funded("10.00")]);
    assert!(unheld.iter().any(|v| v.to_string().contains("no hold")), "{unheld:?}");
}

#[test]
fn a_charge_s_refunds_stay_within_it_and_its_refunded_says_what_they_took_back() {
    let of = ChargeOf {
        partner: "pp_b".into(),
        link: "lk_1".into(),
        merchant: "m_b".into(),
        token: "pt_1".into(),
        number_token: "nt".into(),
    };
    let charge = Movement {
        direction: Direction::Charge,
        charge: Some(of.clone()),
        refunded: Decimal::new(10, 0),
        ..movement("ch_1", Direction::Charge, "30.00", CashState::Completed)
    };
    let refund = |id: &str, amount: &str, state| Movement {
        direction: Direction::Refund,
        charge: Some(of.clone()),
        refund_of: Some("ch_1".into()),
        ..movement(id, Direction::Refund, amount, state)
    };
    let (paid, declined) =
        (refund("rf_1", "10.00", CashState::Completed), refund("rf_2", "15.00", CashState::Declined));
    assert_eq!(charge.on_approval().unwrap().accounts()[1], AccountId::merchant("m_b"));
    assert_eq!(paid.hold().unwrap().accounts(), vec![AccountId::merchant("m_b"), AccountId::hold("rf_1")]);
    let sales = Transfer::between(
        "sales".into(),
        usd("100.00"),
        AccountId::funding("shop"),
        AccountId::merchant("m_b"),
        "test.fund",
        "sales".into(),
    );
    let transfers = vec![
        sales.unwrap(),
        charge.on_approval().unwrap(),
        paid.hold().unwrap(),
        paid.on_approval().unwrap(),
        declined.hold().unwrap(),
        declined.release().unwrap(),
    ];
    let movements = [charge.clone(), paid.clone(), declined.clone()];
    assert_eq!(check_cash(&movements, &books(&transfers), NOW, 60), vec![]);
    // A charge whose `refunded` disagrees with its refunds, or refunds beyond it, is found.
    let lying = Movement { refunded: Decimal::new(20, 0), ..charge.clone() };
    assert_eq!(check_cash(&[lying, paid.clone(), declined.clone()], &books(&transfers), NOW, 60).len(), 1);
    let beyond = refund("rf_3", "25.00", CashState::Completed);
    let mut more = transfers.clone();
    more.extend([beyond.hold().unwrap(), beyond.on_approval().unwrap()]);
    let over = Movement { refunded: Decimal::new(35, 0), ..charge };
    let found = check_cash(&[over, paid, declined, beyond], &books(&more), NOW, 60);
    assert!(found.iter().any(|v| v.to_string().contains("refunds add up to 35")), "{found:?}");
}
