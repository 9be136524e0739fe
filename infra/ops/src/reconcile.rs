//! `cargo ops reconcile`: the reconciliation report (`superpay::reconciliation`), read from a live
//! stack's tables. Each account is checked at the sequence it was read at, and a transfer in flight
//! then is no violation; a record that had moved on between the two reads would look like one, so
//! whatever is found is looked at again a few seconds later, and only what is found about the same
//! subject twice is reported (as the second look found it). The command exits 1 when it reports a
//! violation. Holds past their order's expiry are listed, violations or not yet.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use superpay::clock::now_epoch_seconds;
use superpay::reconcile::Violation;
use superpay::reconciliation::{Findings, Reading, reconcile};

use crate::aws::Aws;
use crate::{Out, aligned};

/// How long the second look waits for what was in flight to finish.
const SECOND_LOOK: Duration = Duration::from_secs(3);

/// The report, and whether it found a violation (the command then exits 1, for a scheduler to
/// alert on).
pub async fn report(aws: &Aws, slack: i64, out: Out) -> Result<(String, bool), String> {
    // Checked before any read: a missing table is named, not a failed call.
    let names = ["LedgerTable", "OrdersTable", "MiniAppRequestsTable", "OfflinePaymentsTable", "OfflineCodesTable"];
    for name in
        names.iter().chain(&["TopUpsTable", "DevicesTable", "TransferOperationsTable", "CashTable", "OutboxTable"])
    {
        aws.table(name)?;
    }
    let table = |logical: &str| aws.table(logical).unwrap_or_default();
    let read = || async {
        reconcile(&aws.dynamodb, &aws.sqs, &table, Reading::Live, now_epoch_seconds(), slack)
            .await
            .map_err(|e| format!("reading the tables: {e}"))
    };
    out.progress("reading the ledger and every record ...");
    let first = read().await?;
    if first.violations.is_empty() {
        return Ok((out.told(&as_json(&first), || as_text(&first)), false));
    }
    out.progress(&format!("{} found; looking again in {} s ...", first.violations.len(), SECOND_LOOK.as_secs()));
    tokio::time::sleep(SECOND_LOOK).await;
    let mut findings = read().await?;
    // Matched by what each is about: a stuck record's age or a moving account's balance reads
    // otherwise the second time.
    let subjects: HashSet<String> = first.violations.iter().map(Violation::subject).collect();
    findings.violations.retain(|v| subjects.contains(&v.subject()));
    let found = !findings.violations.is_empty();
    Ok((out.told(&as_json(&findings), || as_text(&findings)), found))
}

fn as_json(findings: &Findings) -> Value {
    json!({
        "violations": findings.violations.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "stale_holds": findings.stale_holds.iter().map(|h| json!({
            "order": h.order, "user": h.user, "merchant": h.merchant, "amount": h.amount,
            "held": h.held.to_string(), "expired_for_seconds": h.expired_for,
        })).collect::<Vec<_>>(),
        "sharded_merchants": findings.sharded_merchants.iter().map(|m| json!({
            "merchant": m.merchant, "balance": m.balance().to_string(), "main": m.main.to_string(),
            "credits": m.credits.to_string(), "sub_accounts_holding": m.holding,
        })).collect::<Vec<_>>(),
        "accounts": findings.accounts,
        "transfers": findings.transfers,
        "in_flight": findings.in_flight,
        "records": findings.records,
    })
}

fn as_text(findings: &Findings) -> String {
    let records: Vec<String> = findings.records.iter().map(|(kind, count)| format!("{count} {kind}")).collect();
    let mut text = format!(
        "read {} accounts, {} transfers ({} in flight), {}\n",
        findings.accounts,
        findings.transfers,
        findings.in_flight,
        records.join(", ")
    );
    text += &match findings.violations.len() {
        0 => "no violation: the books balance and every record agrees with them\n".to_owned(),
        n => {
            format!("{n} violation(s):\n{}", findings.violations.iter().map(|v| format!("  {v}\n")).collect::<String>())
        }
    };
    if !findings.sharded_merchants.is_empty() {
        let rows: Vec<Vec<String>> = findings
            .sharded_merchants
            .iter()
            .map(|m| {
                let credits = format!("{} on {}", m.credits, m.holding);
                vec![m.merchant.clone(), m.balance().to_string(), m.main.to_string(), credits]
            })
            .collect();
        text += &format!(
            "merchants with credit sub-accounts (balance = main + what the sub-accounts hold until the sweep):\n{}",
            aligned(&["MERCHANT", "BALANCE", "MAIN", "CREDITS ON SUB-ACCOUNTS"], &rows)
        );
    }
    if findings.stale_holds.is_empty() {
        text += "no hold is older than its order's expiry\n";
    } else {
        let rows: Vec<Vec<String>> = findings
            .stale_holds
            .iter()
            .map(|h| {
                vec![
                    h.order.clone(),
                    h.user.clone(),
                    h.merchant.clone(),
                    h.amount.to_string(),
                    h.held.to_string(),
                    format!("{} s", h.expired_for),
                ]
            })
            .collect();
        text += &format!(
            "{} hold(s) older than their order's expiry:\n{}",
            rows.len(),
            aligned(&["ORDER", "USER", "MERCHANT", "AMOUNT", "HELD", "EXPIRED FOR"], &rows)
        );
    }
    text
}
