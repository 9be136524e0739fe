//! Seed data for local use (`infra/seed.json`): the demo users, the demo config groups (and the house
//! error-flow table and payment-sessions policy), a demo
//! merchant whose product server is the simulator with a till terminal, and the demo user's funded
//! wallet and offline reserve, and a demo mini-app of that merchant whose server is the mini-app simulator.
//! Wallets are only created when missing, config groups too, or republished when a kept stack's
//! copy is still the seed's and the seed changed. The demo merchant gets a fresh key at
//! every start, since moto forgets KMS keys between runs (README); for the same reason the server's
//! token secret is forgotten, and the first function that needs it makes a fresh one.

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Deserialize;
use superpay::config::store::ConfigStore;
use superpay::config::{GroupName, GroupVersion, Parameters};
use superpay::instruction::listing::{Freeze, Listing, ListingStore, Terms};
use superpay::keys::KeyService;
use superpay::ledger::store::LedgerStore;
use superpay::ledger::{AccountId, Transfer};
use superpay::merchant::store::MerchantStore;
use superpay::merchant::terminal::{Terminal, TerminalKind, TerminalStore};
use superpay::merchant::{Merchant, MerchantStatus};
use superpay::miniapp::store::MiniAppStore;
use superpay::miniapp::{Interface, MiniApp, MiniAppStatus};
use superpay::money::Money;

use crate::stack::Stack;

/// The user the printed development token belongs to.
pub const DEMO_USER: &str = "demo-user";
/// The admin (scope `superpay/admin`) the printed admin token belongs to.
pub const DEMO_ADMIN: &str = "demo-admin";

#[derive(Deserialize)]
struct Seed {
    config: ConfigSeed,
    merchants: Vec<MerchantSeed>,
    wallets: Vec<WalletSeed>,
    terminals: Vec<TerminalSeed>,
    /// Offline reserves, funded like wallets.
    reserves: Vec<WalletSeed>,
    miniapps: Vec<MiniAppSeed>,
    /// Published at version 1 to both sides of signed transfer instructions.
    listings: Vec<ListingSeed>,
}

#[derive(Deserialize)]
struct ListingSeed {
    id: String,
    merchant: String,
    title: String,
    price: superpay::money::MoneyInput,
}

#[derive(Deserialize)]
struct MiniAppSeed {
    id: String,
    owner: String,
    /// Its server's path on the mini-app simulator.
    path: String,
    /// `entry_page` is a path on the simulator.
    interface: Interface,
}

#[derive(Deserialize)]
struct TerminalSeed {
    id: String,
    merchant: String,
}

#[derive(Deserialize)]
struct MerchantSeed {
    id: String,
    name: String,
    /// Its product server's path on the simulator.
    path: String,
    currency: String,
}

#[derive(Deserialize)]
struct WalletSeed {
    user: String,
    amount: String,
    currency: String,
}

#[derive(Deserialize)]
struct ConfigSeed {
    /// The logical id of the config table in template.yaml.
    table: String,
    groups: BTreeMap<String, serde_json::Value>,
}

/// Applies the seed. The demo terminal's key (shown once) is written to `<state>/terminal.json`
/// for `cargo device present`.
pub async fn apply(stack: &Stack, path: &Path, state: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let seed: Seed = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let table =
        stack.info.tables.get(&seed.config.table).ok_or(format!("no table {} in template.yaml", seed.config.table))?;
    let store = ConfigStore::new(stack.info.dynamodb().await, table);
    // The house error-flow table and payment-sessions policy, published as version 1 so clients
    // and admins find them like any group.
    let house = |text: &str| serde_json::from_str(text).map_err(|e| format!("a house config group: {e}"));
    let houses = [
        (superpay::flows::GROUP.to_owned(), house(superpay::flows::HOUSE_TABLE)?),
        (superpay::payment_session::policy::GROUP.to_owned(), house(superpay::payment_session::policy::HOUSE_POLICY)?),
    ];
    let groups = seed.config.groups.into_iter().chain(houses);
    for (name, parameters) in groups {
        let group = GroupName::parse(&name).map_err(|e| e.to_string())?;
        let parameters = Parameters::parse(parameters).map_err(|e| format!("seed group {name}: {e}"))?;
        // A stack kept between runs gets the seed's newer parameters, unless an admin published since.
        let version = match store.latest(&group).await.map_err(|e| e.to_string())? {
            None => 1,
            Some(latest) if latest.published_by == "seed" && latest.parameters != parameters => latest.version + 1,
            Some(_) => continue,
        };
        let next = GroupVersion {
            group,
            version,
            parameters,
            published_at: superpay::clock::now_epoch_seconds(),
            published_by: "seed".into(),
        };
        store.publish(&next, superpay::config::pruned_by(version), vec![]).await.map_err(|e| e.to_string())?;
    }
    forget_token_secret(stack).await?;
    for merchant in seed.merchants {
        seed_merchant(stack, merchant).await?;
    }
    for app in seed.miniapps {
        seed_miniapp(stack, app).await?;
    }
    for terminal in seed.terminals {
        seed_terminal(stack, terminal, state).await?;
    }
    for listing in seed.listings {
        seed_listing(stack, listing).await?;
    }
    let ledger = ledger(stack).await?;
    let reserves = seed.reserves.into_iter().map(|r| (r, AccountId::reserve as fn(&str) -> AccountId));
    for (wallet, account) in
        seed.wallets.into_iter().map(|w| (w, AccountId::wallet as fn(&str) -> AccountId)).chain(reserves)
    {
        let money = Money::parse(&wallet.amount, &wallet.currency).map_err(|e| e.to_string())?;
        // A fixed transfer id: applied by the first start only.
        fund(&ledger, &wallet.user, account(&wallet.user), money, "infra/seed.json").await?;
    }
    Ok(())
}

/// Moves `money` from `user`'s bank into `to` (their wallet or reserve), once: the transfer's id
/// names the account, so funding it again moves nothing.
pub async fn fund(ledger: &LedgerStore, user: &str, to: AccountId, money: Money, cause: &str) -> Result<(), String> {
    let fund = Transfer::between(format!("seed/{to}"), money, AccountId::funding(user), to, "seed.fund", cause.into())
        .map_err(|e| e.to_string())?;
    ledger.apply(&fund, vec![], superpay::clock::now_epoch_seconds()).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The ledger of `stack`, for `fund`.
pub async fn ledger(stack: &Stack) -> Result<LedgerStore, String> {
    Ok(LedgerStore::new(stack.info.dynamodb().await, table_of(stack, "LedgerTable")?))
}

fn table_of<'a>(stack: &'a Stack, logical_id: &str) -> Result<&'a String, String> {
    stack.info.tables.get(logical_id).ok_or(format!("no table {logical_id} in template.yaml"))
}

/// Replaces the seeded item `id` of `table` by `create` (a fresh key at every start, README).
async fn replace(stack: &Stack, table: &str, id: &str, create: superpay::dynamo::Write) -> Result<(), String> {
    let dynamodb = stack.info.dynamodb().await;
    let table = table_of(stack, table)?;
    dynamodb
        .delete_item()
        .table_name(table)
        .key("id", AttributeValue::S(id.to_owned()))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    superpay::dynamo::transact(&dynamodb, vec![create]).await.map_err(|e| e.to_string())
}

/// The listing on both sides, as its merchant's first publication to each would make it.
async fn seed_listing(stack: &Stack, seed: ListingSeed) -> Result<(), String> {
    let listing = Listing {
        id: seed.id,
        merchant_id: seed.merchant,
        terms: Terms { title: seed.title, price: seed.price.validate().map_err(|e| e.to_string())?, two_phase: false },
        version: 1,
        updated_at: superpay::clock::now_epoch_seconds(),
        freeze: Freeze::default(),
    };
    for table in ["PlatformListingsTable", "TransferListingsTable"] {
        let store = ListingStore::new(stack.info.dynamodb().await, table_of(stack, table)?);
        replace(stack, table, &listing.id, store.put_item(&listing, None).map_err(|e| e.to_string())?).await?;
    }
    Ok(())
}

/// Deletes the token secret (`superpay::keys::TokenSecret`) an earlier run wrapped with a KMS key
/// moto no longer has; mini-app pseudonyms change at each local start, as party keys do (and so
/// does the instruments' own secret).
async fn forget_token_secret(stack: &Stack) -> Result<(), String> {
    for id in [superpay::keys::TOKEN_SECRET_ID, superpay::keys::INSTRUMENT_SECRET_ID] {
        stack
            .info
            .dynamodb()
            .await
            .delete_item()
            .table_name(table_of(stack, "ServerSecretsTable")?)
            .key("id", AttributeValue::S(id.to_owned()))
            .send()
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn seed_terminal(stack: &Stack, seed: TerminalSeed, state: &Path) -> Result<(), String> {
    let key_id = stack.info.keys.get("PartyKeysKey").ok_or("no PartyKeysKey in template.yaml")?;
    let keys = KeyService::new(stack.info.kms().await, key_id);
    // The demo terminal is a till (`cargo device present` signs as it).
    let new_key = keys.generate(&Terminal::key_owner(TerminalKind::Till, &seed.id)).await.map_err(|e| e.to_string())?;
    let terminal = Terminal {
        id: seed.id.clone(),
        merchant_id: seed.merchant,
        kind: TerminalKind::Till,
        key_id: format!("{}.k1", seed.id),
        key_ciphertext: new_key.ciphertext,
        previous_key: None,
        status: MerchantStatus::Active,
        created_at: superpay::clock::now_epoch_seconds(),
    };
    let store = TerminalStore::new(stack.info.dynamodb().await, table_of(stack, "TerminalsTable")?);
    replace(stack, "TerminalsTable", &seed.id, store.create_item(&terminal).map_err(|e| e.to_string())?).await?;
    let file = serde_json::json!({ "key_id": terminal.key_id, "secret": new_key.key.to_base64().expose(), "api_url": stack.info.api_url });
    std::fs::write(state.join("terminal.json"), file.to_string()).map_err(|e| e.to_string())
}

async fn seed_merchant(stack: &Stack, seed: MerchantSeed) -> Result<(), String> {
    merchant(stack, &seed.id, seed.name, &seed.path, &seed.currency).await
}

/// An active merchant `id` whose product server is the simulator's `path`, with a fresh key the
/// simulator is given (as a registration's answer shows it once).
pub async fn merchant(stack: &Stack, id: &str, name: String, path: &str, currency: &str) -> Result<(), String> {
    let seed = MerchantSeed { id: id.to_owned(), name, path: path.to_owned(), currency: currency.to_owned() };
    let key_id = stack.info.keys.get("PartyKeysKey").ok_or("no PartyKeysKey in template.yaml")?;
    let keys = KeyService::new(stack.info.kms().await, key_id);
    let new_key = keys.generate(&Merchant::key_owner(&seed.id)).await.map_err(|e| e.to_string())?;
    let merchant = Merchant {
        id: seed.id.clone(),
        name: seed.name,
        product_server_url: format!("{}{}", stack.info.merchant_simulator_url, seed.path),
        currency: seed.currency.parse().map_err(|e: superpay::money::MoneyError| e.to_string())?,
        status: MerchantStatus::Active,
        key_id: format!("{}.k1", seed.id),
        key_ciphertext: new_key.ciphertext,
        previous_key: None,
        created_at: superpay::clock::now_epoch_seconds(),
    };
    let store = MerchantStore::new(stack.info.dynamodb().await, table_of(stack, "MerchantsTable")?);
    replace(stack, "MerchantsTable", &seed.id, store.create_item(&merchant).map_err(|e| e.to_string())?).await?;
    give_simulator_key(&format!("{}/_sim/merchants", stack.info.merchant_simulator_url), &merchant.key_id, &new_key.key)
        .await
}

/// Gives a simulated partner its key, as the registration's answer shows it once.
async fn give_simulator_key(url: &str, key_id: &str, key: &superpay::crypto::Key) -> Result<(), String> {
    let grant = serde_json::json!({ "key_id": key_id, "secret": key.to_base64().expose() });
    reqwest::Client::new()
        .post(url)
        .json(&grant)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("giving the simulator the key {key_id}: {e}"))?;
    Ok(())
}

async fn seed_miniapp(stack: &Stack, seed: MiniAppSeed) -> Result<(), String> {
    let key_id = stack.info.keys.get("PartyKeysKey").ok_or("no PartyKeysKey in template.yaml")?;
    let keys = KeyService::new(stack.info.kms().await, key_id);
    let new_key = keys.generate(&MiniApp::key_owner(&seed.id)).await.map_err(|e| e.to_string())?;
    let simulator = &stack.info.miniapp_simulator_url;
    let interface = Interface { entry_page: format!("{simulator}{}", seed.interface.entry_page), ..seed.interface };
    let app = MiniApp {
        id: seed.id.clone(),
        owner_merchant_id: seed.owner,
        server_url: format!("{simulator}{}", seed.path),
        status: MiniAppStatus::Active,
        key_id: format!("{}.k1", seed.id),
        key_ciphertext: new_key.ciphertext,
        previous_key: None,
        // The simulator speaks plain http.
        interface: interface.validate(true).map_err(|e| format!("seed mini-app {}: {e}", seed.id))?,
        created_at: superpay::clock::now_epoch_seconds(),
    };
    let store = MiniAppStore::new(stack.info.dynamodb().await, table_of(stack, "MiniAppsTable")?);
    replace(stack, "MiniAppsTable", &seed.id, store.create_item(&app).map_err(|e| e.to_string())?).await?;
    give_simulator_key(&format!("{simulator}/_sim/apps"), &app.key_id, &new_key.key).await
}
