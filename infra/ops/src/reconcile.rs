//! `cargo ops reconcile`: the reconciliation report (`superpay::reconciliation`), read from a live
//! stack's tables. Each account is checked at the sequence it was read at, and a transfer in flight
//! then is no violation; a record that had moved on between the two reads would look like one, so
//! whatever is found is looked at again a few seconds later, and only what is found twice is
//! reported. Holds past their order's expiry are listed, violations or not yet.

use std::time::Duration;

use serde_json::{Value, json};
use superpay::clock::now_epoch_seconds;
use superpay::reconciliation::{Findings, Reading, reconcile};

use crate::aws::Aws;
use crate::{Out, aligned};

/// How long the second look waits for what was in flight to finish.
const SECOND_LOOK: Duration = Duration::from_secs(3);

pub async fn report(aws: &Aws, slack: i64, out: Out) -> Result<String, String> {
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
    let mut findings = read().await?;
    if !findings.violations.is_empty() {
        out.progress(&format!("{} found; looking again in {} s ...", findings.violations.len(), SECOND_LOOK.as_secs()));
        tokio::time::sleep(SECOND_LOOK).await;
        let again = read().await?;
        let seen: Vec<String> = again.violations.iter().map(ToString::to_string).collect();
        findings.violations.retain(|v| seen.contains(&v.to_string()));
        findings.stale_holds = again.stale_holds;
    }
    Ok(out.told(&as_json(&findings), || as_text(&findings)))
}

fn as_json(findings: &Findings) -> Value {
    json!({
        "violations": findings.violations.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "stale_holds": findings.stale_holds.iter().map(|h| json!({
            "order": h.order, "user": h.user, "merchant": h.merchant, "amount": h.amount,
            "held": h.held.to_string(), "expired_for_seconds": h.expired_for,
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
