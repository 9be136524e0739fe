//! The invariant checker against the tables themselves: finished purchases reconcile (books and
//! orders agree), and an order whose recorded state disagrees with the money it moved is found;
//! the whole-table check the fault run ends with.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::AttributeValue;
use reqwest::StatusCode;
use superpay::clock::now_epoch_seconds;
use superpay::instruction::operation::{Operation, OperationStore, check_operations};
use superpay::instrument::cash::store::CashStore;
use superpay::instrument::cash::{Movement, check_cash};
use superpay::purchase::store::OrderStore;
use superpay::purchase::{Order, check_orders};
use superpay::reconcile::{Violation, check};
use superpay::reconciliation::{Reading, reconcile};
use superpay_e2e::{Env, unique};

use crate::purchases::{buy, funded_user, merchant, purchase};

/// Whom an account is named for (`wallet:alice` -> `alice`).
fn owner(account: &superpay::ledger::AccountId) -> String {
    account.as_str().split_once(':').map_or_else(String::new, |(_, owner)| owner.to_owned())
}

/// Every violation among `users`' orders, transfer operations and cash movements (partners'
/// charges included) and the accounts their money moved through (their own, their instruments',
/// their orders', operations' and cash-outs' holds, their merchants' and their partners'), read
/// from the tables.
pub async fn violations(users: &[&str]) -> Vec<Violation> {
    let env = Env::get();
    let store = OrderStore::new(env.dynamodb().await, env.table("OrdersTable"));
    let orders: Vec<Order> =
        store.all().await.unwrap().into_iter().filter(|o| users.contains(&o.user.as_str())).collect();
    let operations: Vec<Operation> = OperationStore::new(env.dynamodb().await, env.table("TransferOperationsTable"))
        .all()
        .await
        .unwrap()
        .into_iter()
        .filter(|o| users.contains(&o.payer.as_str()))
        .collect();
    let movements: Vec<Movement> = CashStore::new(env.dynamodb().await, env.table("CashTable"))
        .all()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| users.contains(&m.user.as_str()))
        .collect();
    let owners: HashSet<String> = users
        .iter()
        .map(|u| u.to_string())
        .chain(orders.iter().flat_map(|o| [o.id.clone(), o.merchant_id.clone()]))
        .chain(operations.iter().flat_map(|o| [o.id.clone(), o.merchant_id.clone()]))
        .chain(movements.iter().flat_map(|m| [m.id.clone(), owner(&m.funding())]))
        .chain(movements.iter().filter_map(|m| m.charge.as_ref().map(|c| c.merchant.clone())))
        .collect();
    let in_scope = |account: &superpay::ledger::AccountId| owners.contains(&owner(account));
    let books = env.ledger().await.books(in_scope).await.unwrap();
    assert!(books.transfers.len() >= 2 * orders.len(), "the orders' transfers were read");
    let mut found = check(&books);
    found.extend(check_orders(&orders, &books, now_epoch_seconds(), 60));
    found.extend(check_operations(&operations, &books, now_epoch_seconds(), 60));
    found.extend(check_cash(&movements, &books, now_epoch_seconds(), 60));
    found
}

/// Every violation anywhere in the tables (`superpay::reconciliation`), read quiet. For a stack
/// that runs nothing else (the fault run's): a test elsewhere may be mid-flight.
pub async fn violations_everywhere() -> Vec<Violation> {
    let env = Env::get();
    let table = |logical: &str| env.table(logical).to_owned();
    reconcile(&env.dynamodb().await, &env.stack.sqs().await, &table, Reading::Quiet, now_epoch_seconds(), 60)
        .await
        .unwrap()
        .violations
}

/// Writes `declined` over order `id`'s state in its item: a record that lies about its money.
pub async fn make_lie_declined(id: &str) {
    let env = Env::get();
    env.dynamodb()
        .await
        .update_item()
        .table_name(env.table("OrdersTable"))
        .key("id", AttributeValue::S(id.into()))
        .update_expression("SET #state = :declined")
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":declined", AttributeValue::S("declined".into()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn finished_purchases_reconcile_and_a_state_that_lies_is_found() {
    let shop = merchant().await;
    let (payer, decliner) = (funded_user("50.00").await, funded_user("50.00").await);
    let (status, paid) = buy(&payer, &purchase(&shop, "green-tea", "12.50"), &unique("key")).await;
    assert_eq!((status, paid["state"].as_str()), (StatusCode::CREATED, Some("paid")), "{paid}");
    let (_, declined) = buy(&decliner, &purchase(&shop, "decline-me", "7.00"), &unique("key")).await;
    assert_eq!(declined["state"], "declined", "{declined}");
    let found = violations(&[&payer, &decliner]).await;
    assert!(found.is_empty(), "{}", found.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));

    // A paid order whose item says declined: its money was captured, so the record lies.
    let id = paid["id"].as_str().unwrap();
    make_lie_declined(id).await;
    assert_eq!(
        violations(&[&payer]).await,
        [Violation::record(
            format!("order {id}"),
            format!(
                "is declined but its hold's settlement is purchase.capture of 12.50 USD from hold:{id} to merchant:{}",
                shop.id
            )
        )]
    );
}
