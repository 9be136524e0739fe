//! Seed data for local use (`infra/seed.json`): the demo users' names and the demo config groups.
//! Seeding only creates what is missing, so it never overwrites what a developer published.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use superpay::config::store::ConfigStore;
use superpay::config::{GroupName, GroupVersion, Parameters};

use crate::stack::Stack;

/// The user the printed development token belongs to.
pub const DEMO_USER: &str = "demo-user";
/// The admin (scope `superpay/admin`) the printed admin token belongs to.
pub const DEMO_ADMIN: &str = "demo-admin";

#[derive(Deserialize)]
struct Seed {
    config: ConfigSeed,
}

#[derive(Deserialize)]
struct ConfigSeed {
    /// The logical id of the config table in template.yaml.
    table: String,
    groups: BTreeMap<String, serde_json::Value>,
}

pub async fn apply(stack: &Stack, path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let seed: Seed = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let table =
        stack.info.tables.get(&seed.config.table).ok_or(format!("no table {} in template.yaml", seed.config.table))?;
    let store = ConfigStore::new(stack.info.dynamodb().await, table);
    for (name, parameters) in seed.config.groups {
        let group = GroupName::parse(&name).map_err(|e| e.to_string())?;
        if store.latest(&group).await.map_err(|e| e.to_string())?.is_some() {
            continue;
        }
        let first = GroupVersion {
            group,
            version: 1,
            parameters: Parameters::parse(parameters).map_err(|e| format!("seed group {name}: {e}"))?,
            published_at: superpay::clock::now_epoch_seconds(),
            published_by: "seed".into(),
        };
        store.publish(&first, None, vec![]).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
