//! The operator CLI (`cargo ops ...`), for the local stack and a deployed one alike. It talks to the
//! HTTP API with an admin token, so every action there is the admin route's, audited by it; it
//! reaches AWS directly only where no route exists (the dead-letter queues, the reconciliation
//! report's reads), and audits what it changes there itself.
//!
//!   cargo ops config show|diff|publish|rollback ...    config groups (`config`)
//!   cargo ops merchants|terminals|miniapps|partners ... parties: register, show, status, rotate keys (`parties`)
//!   cargo ops dlq count|show|redrive ...               dead-letter queues (`dlq`)
//!   cargo ops ledger shards|sweep ...                   a hot merchant's credit sub-accounts
//!   cargo ops reconcile                                 the reconciliation report (`reconcile`)
//!
//! `--api` and `--token` (or `SUPERPAY_API_URL`, `SUPERPAY_ADMIN_TOKEN`) default to the local
//! stack's (`.superpay/stack.json`, `.superpay/admin.token`, written by `cargo stack up`); `--stack`
//! names a deployed CloudFormation stack for the AWS commands (the default AWS credentials).
//! People read aligned text; `--json` prints what scripts read.

mod api;
mod aws;
mod config;
mod dlq;
mod parties;
mod reconcile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::Api;
pub use crate::config::ConfigCommand;
pub use crate::dlq::DlqCommand;
pub use crate::parties::{PartyCommand, TerminalCommand};

#[derive(Parser)]
#[command(
    name = "cargo ops",
    bin_name = "cargo ops",
    about = "Run superpay: config groups, parties, dead-letter queues, reconciliation"
)]
struct Cli {
    /// The HTTP API's URL [default: the local stack's]
    #[arg(long, global = true, env = "SUPERPAY_API_URL")]
    api: Option<String>,
    /// An admin token (scope superpay/admin) [default: .superpay/admin.token]
    #[arg(long, global = true, env = "SUPERPAY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A deployed stack's name, for the commands that reach AWS directly (dlq, reconcile)
    #[arg(long, global = true, env = "SUPERPAY_STACK_NAME")]
    stack: Option<String>,
    /// The local stack's description [default: .superpay/stack.json]
    #[arg(long, global = true, hide = true)]
    local_stack: Option<PathBuf>,
    /// Print JSON, for scripts
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Config groups: versioned parameters, published by admins
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Merchants: register, show, suspend or reactivate, rotate their signing key
    #[command(subcommand)]
    Merchants(PartyCommand),
    /// A merchant's terminals (tills, transfer terminals): register, status, rotate keys
    #[command(subcommand)]
    Terminals(TerminalCommand),
    /// Mini-apps: register, show, status, rotate keys
    #[command(subcommand)]
    Miniapps(PartyCommand),
    /// Partner platforms: register, show, status, rotate keys
    #[command(subcommand)]
    Partners(PartyCommand),
    /// Dead-letter queues: count, show with the reason, redrive after a fix
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The outbox: give items written before the sweeper's index their shard
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// A merchant's credit sub-accounts: how many its credits spread over, and their sweep
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// The reconciliation report: the books' invariants and every record against them, safe on a
    /// live table; holds older than their order's expiry
    Reconcile {
        /// How long past its deadline a record may still be in flight before it counts, in seconds
        #[arg(long, default_value_t = 60)]
        slack: i64,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Give every live item without a shard its shard, so the sweeper finds it: once, after
    /// deploying the release that added the sweeper's index over an outbox with items in it
    Index,
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Show a merchant's balance (its account and its credit sub-accounts), or give it more credit
    /// sub-accounts with --set: a popular merchant's credits then spread over them, and the
    /// notifier's schedule sweeps them into its account. The number only grows.
    Shards {
        merchant: String,
        /// How many credit sub-accounts, 2 to 64 (1: none, as a merchant starts)
        #[arg(long)]
        set: Option<u32>,
    },
    /// Sweep a merchant's credit sub-accounts into its account now, as the schedule would
    Sweep { merchant: String },
}

/// `ledger shards|sweep`: audited before it changes anything, as every action of ours on AWS
/// directly.
async fn ledger(aws: &aws::Aws, command: LedgerCommand, out: Out) -> Result<String, String> {
    let ledger = superpay::ledger::store::LedgerStore::new(aws.dynamodb.clone(), aws.table("LedgerTable")?);
    let merchants = superpay::merchant::store::MerchantStore::new(aws.dynamodb.clone(), aws.table("MerchantsTable")?);
    let merchant = match &command {
        LedgerCommand::Shards { merchant, .. } | LedgerCommand::Sweep { merchant } => merchant.clone(),
    };
    if merchants.get(&merchant).await.map_err(|e| format!("reading merchant {merchant}: {e}"))?.is_none() {
        return Err(format!("no merchant {merchant}"));
    }
    match command {
        LedgerCommand::Shards { set: Some(shards), .. } => {
            aws.audit(format!("merchant/{merchant}"), "ledger.credit_shards", json!({ "credit_shards": shards }))
                .await?;
            ledger.set_credit_shards(&merchant, shards).await.map_err(|e| e.to_string())?;
        }
        LedgerCommand::Sweep { .. } => {
            aws.audit(format!("merchant/{merchant}"), "ledger.sweep", json!({})).await?;
            let now = superpay::clock::now_epoch_seconds();
            let swept =
                ledger.sweep_credits(&merchant, now, None).await.map_err(|e| format!("sweeping {merchant}: {e}"))?;
            if swept.is_none() {
                return Err(format!("merchant {merchant} has no credit sub-accounts: nothing to sweep"));
            }
        }
        LedgerCommand::Shards { set: None, .. } => {}
    }
    let balance = ledger.merchant_balance(&merchant).await.map_err(|e| format!("reading {merchant}'s balance: {e}"))?;
    let currency = balance.currency.map_or("", |c| c.code());
    let answer = json!({
        "merchant": merchant, "currency": balance.currency.map(|c| c.code()), "credit_shards": balance.credit_shards,
        "balance": balance.total().to_string(), "main": balance.main.to_string(), "credits": balance.credits.to_string(),
    });
    Ok(out.told(&answer, || {
        format!(
            "merchant {merchant}: {} {currency} ({} in its account, {} on {} credit sub-account(s) until the sweep)\n",
            balance.total(),
            balance.main,
            balance.credits,
            if balance.credit_shards > 1 { balance.credit_shards } else { 0 },
        )
    }))
}

/// `outbox index`: audited before it changes anything, as every action of ours on AWS directly.
async fn index_outbox(aws: &aws::Aws, out: Out) -> Result<String, String> {
    let outbox = superpay::outbox::Outbox::new(aws.dynamodb.clone(), aws.sqs.clone(), aws.table("OutboxTable")?);
    aws.audit("outbox".into(), "outbox.index", json!({})).await?;
    out.progress("reading the outbox ...");
    let given = outbox.index_unsharded().await.map_err(|e| format!("indexing the outbox: {e}"))?;
    Ok(out.told(&json!({ "indexed": given }), || format!("gave {given} outbox item(s) their shard\n")))
}

/// Runs the command line `args` (the program's name first): what to print, or why it failed.
/// Progress of long work goes to stderr.
pub async fn run(args: impl IntoIterator<Item = String>) -> Result<String, String> {
    execute(args).await.map(|(text, _)| text)
}

/// `run`, and whether what it printed reports a problem found (the reconciliation's violations):
/// the program then exits 1.
pub async fn execute(args: impl IntoIterator<Item = String>) -> Result<(String, bool), String> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // Asked for: printed as any answer is.
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok((e.to_string(), false));
        }
        Err(e) => return Err(e.to_string()),
    };
    let local = LocalStack(cli.local_stack.unwrap_or_else(|| PathBuf::from(LOCAL_STATE).join("stack.json")));
    let out = Out { json: cli.json };
    let api = || Api::new(cli.api.clone(), cli.token.clone(), &local);
    let aws = || aws::Aws::connect(cli.stack.as_deref(), &local);
    let text = match cli.command {
        Command::Config(command) => config::config(&api()?, command, out).await,
        Command::Merchants(command) => parties::party(&api()?, &parties::MERCHANTS, command, out).await,
        Command::Miniapps(command) => parties::party(&api()?, &parties::MINIAPPS, command, out).await,
        Command::Partners(command) => parties::party(&api()?, &parties::PARTNERS, command, out).await,
        Command::Terminals(command) => parties::terminal(&api()?, command, out).await,
        Command::Dlq(command) => dlq::dlq(&aws().await?, command, out).await,
        Command::Outbox(OutboxCommand::Index) => index_outbox(&aws().await?, out).await,
        Command::Ledger(command) => ledger(&aws().await?, command, out).await,
        Command::Reconcile { slack } => return reconcile::report(&aws().await?, slack, out).await,
    };
    text.map(|text| (text, false))
}

/// Where `cargo stack up` keeps the local stack's description and tokens (the workspace's
/// `.superpay/`, wherever the command runs from).
const LOCAL_STATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.superpay");

/// The local stack's description (`cargo stack up` writes it).
pub struct LocalStack(PathBuf);

/// What `cargo ops` reads of it.
#[derive(Deserialize)]
pub struct LocalInfo {
    pub api_url: String,
    pub dynamodb_endpoint: String,
    pub moto_endpoint: String,
    pub tables: BTreeMap<String, String>,
    pub queues: BTreeMap<String, String>,
}

impl LocalStack {
    pub fn read(&self) -> Result<LocalInfo, String> {
        let text = std::fs::read_to_string(&self.0).map_err(|_| {
            format!("no local stack ({}): start one with `cargo stack up`, or name a deployed one", self.0.display())
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", self.0.display()))
    }

    /// The folder beside it that holds the tokens.
    pub fn dir(&self) -> &Path {
        self.0.parent().unwrap_or(Path::new("."))
    }
}

/// How the answer is printed.
#[derive(Clone, Copy)]
pub struct Out {
    json: bool,
}

impl Out {
    /// `answer` as JSON for scripts, or `text` for people.
    fn told(self, answer: &Value, text: impl FnOnce() -> String) -> String {
        match self.json {
            true => pretty(answer),
            false => text(),
        }
    }

    /// Progress of long work, for people only (scripts read stdout's JSON).
    fn progress(self, text: &str) {
        if !self.json {
            eprintln!("{text}");
        }
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// `rows` under `header`, each column as wide as its widest cell.
fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text += &line(row.iter().map(String::as_str).collect());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![vec!["SettlementDeadLetterQueue".into(), "3".into()], vec!["Cash".into(), "12".into()]];
        assert_eq!(
            aligned(&["QUEUE", "MESSAGES"], &rows),
            "QUEUE                      MESSAGES\nSettlementDeadLetterQueue  3\nCash                       12\n"
        );
    }
}
