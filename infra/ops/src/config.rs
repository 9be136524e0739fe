//! `cargo ops config ...`: config groups over their admin routes.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use superpay::config::GroupName;

use crate::api::{Api, idempotency_key};
use crate::{Out, pretty};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// The group's current version and its parameters
    Show { group: String },
    /// What changed since version SINCE: the JSON Merge Patch to the current version
    Diff { group: String, since: u64 },
    /// Publish FILE (a JSON object) as the group's next version, only over the version read first
    Publish {
        group: String,
        file: PathBuf,
        /// The group does not exist yet: create it as version 1
        #[arg(long)]
        create: bool,
    },
    /// Republish VERSION's parameters as the group's next version
    Rollback { group: String, version: u64 },
}

pub async fn config(api: &Api, command: ConfigCommand, out: Out) -> Result<String, String> {
    let group = match &command {
        ConfigCommand::Show { group }
        | ConfigCommand::Diff { group, .. }
        | ConfigCommand::Publish { group, .. }
        | ConfigCommand::Rollback { group, .. } => group,
    };
    // It goes into the route's path: a name, never a path of its own.
    GroupName::parse(group).map_err(|e| e.to_string())?;
    match command {
        ConfigCommand::Show { group } => {
            let (current, version) = current(api, &group).await?;
            Ok(out.told(&current, || format!("{group} version {version}\n{}", pretty(&current["parameters"]))))
        }
        ConfigCommand::Diff { group, since } => {
            let answer = api.call(Method::GET, &format!("/config/{group}?version={since}"), &[], None).await?;
            if out.json {
                return Ok(pretty(&answer));
            }
            let version = &answer["version"];
            Ok(if answer["up_to_date"] == true {
                format!("{group}: version {since} is the current one; nothing changed\n")
            } else if let Some(patch) = answer.get("patch") {
                format!("{group}: from version {since} to {version}, as a JSON Merge Patch\n{}", pretty(patch))
            } else {
                // Version `since` is no longer kept, or the patch would be no smaller.
                format!(
                    "{group}: version {since} is not kept (or differs wholly); version {version} is\n{}",
                    pretty(&answer["parameters"])
                )
            })
        }
        ConfigCommand::Publish { group, file, create } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let parameters: Value =
                serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
            // `--json config show`'s answer saved as is: the group would become that answer.
            if parameters.as_object().is_some_and(|o| o.contains_key("parameters") && o.contains_key("version")) {
                return Err(format!(
                    "{} holds a group as `cargo ops --json config show` prints it; publish its parameters \
                     alone (e.g. `jq .parameters`)",
                    file.display()
                ));
            }
            let (precondition, base) = match create {
                true => (("if-none-match", "*".to_owned()), 0),
                false => {
                    let (current, version) =
                        current(api, &group).await.map_err(|e| match e.contains("unknown_group") {
                            true => format!("{e} (a new group: publish it with --create)"),
                            false => e,
                        })?;
                    // Run again after it succeeded (its answer lost): nothing more to publish.
                    if current["parameters"] == parameters {
                        return Ok(out.told(&current, || {
                            format!("{group}: version {version} holds these parameters already; nothing published\n")
                        }));
                    }
                    (("if-match", format!("\"{version}\"")), version)
                }
            };
            let headers = [precondition, ("idempotency-key", idempotency_key("publish", &group, base, &parameters))];
            let published = api
                .call(Method::POST, &format!("/config/{group}/versions"), &headers, Some(&parameters))
                .await
                .map_err(|e| match e.contains("group_exists") {
                    true => format!("{e} (it exists: publish without --create)"),
                    false => e,
                })?;
            Ok(out.told(&published, || {
                format!("{group}: published version {} (over version {base})\n", published["version"])
            }))
        }
        ConfigCommand::Rollback { group, version } => {
            let (current, at) = current(api, &group).await?;
            // Run again after it succeeded: version `version`'s parameters are current already.
            let since = api.call(Method::GET, &format!("/config/{group}?version={version}"), &[], None).await?;
            if version < at && since.get("patch").is_some_and(|patch| patch == &json!({})) {
                return Ok(out.told(&current, || {
                    format!("{group}: version {at} holds version {version}'s parameters already; nothing published\n")
                }));
            }
            let body = json!({"version": version});
            let headers = [
                ("if-match", format!("\"{at}\"")),
                ("idempotency-key", idempotency_key("rollback", &group, at, &body)),
            ];
            let published = api.call(Method::POST, &format!("/config/{group}/rollback"), &headers, Some(&body)).await?;
            Ok(out.told(&published, || {
                format!(
                    "{group}: version {version}'s parameters published as version {} (over version {at})\n",
                    published["version"]
                )
            }))
        }
    }
}

/// `group`'s current answer and its version.
async fn current(api: &Api, group: &str) -> Result<(Value, u64), String> {
    let current = api.call(Method::GET, &format!("/config/{group}"), &[], None).await?;
    let version = current["version"].as_u64().ok_or("the group's answer has no version")?;
    Ok((current, version))
}
