//! The operator CLI (`cargo ops ...`), for the local stack and a deployed one alike: it talks to the
//! HTTP API with an admin token, so every action is the admin route's, audited by it.
//!
//!   cargo ops config show GROUP                 the current version and its parameters
//!   cargo ops config diff GROUP SINCE           what changed since version SINCE (a JSON Merge Patch)
//!   cargo ops config publish GROUP FILE         FILE's parameters as the next version, compare-and-set
//!   cargo ops config rollback GROUP VERSION     VERSION's parameters republished as the next version
//!
//! `--api` and `--token` (or `SUPERPAY_API_URL`, `SUPERPAY_ADMIN_TOKEN`) default to the local
//! stack's (`.superpay/stack.json`, `.superpay/admin.token`, written by `cargo stack up`). People
//! read aligned text; `--json` prints the API's answers for scripts.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use superpay::config::GroupName;
use superpay::crypto::sha256_hex;

#[derive(Parser)]
#[command(
    name = "cargo ops",
    bin_name = "cargo ops",
    about = "Run superpay: config groups, over the HTTP API with an admin token"
)]
struct Cli {
    /// The HTTP API's URL [default: the local stack's, from .superpay/stack.json]
    #[arg(long, global = true, env = "SUPERPAY_API_URL")]
    api: Option<String>,
    /// An admin token (scope superpay/admin) [default: .superpay/admin.token]
    #[arg(long, global = true, env = "SUPERPAY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's answers as JSON, for scripts
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
}

#[derive(Subcommand)]
enum ConfigCommand {
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

/// Runs the command line `args` (the program's name first): what to print, or why it failed.
pub async fn run(args: impl IntoIterator<Item = String>) -> Result<String, String> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // Asked for: printed as any answer is.
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => return Ok(e.to_string()),
        Err(e) => return Err(e.to_string()),
    };
    let api = Api::new(cli.api, cli.token)?;
    match cli.command {
        Command::Config(command) => config(&api, command, cli.json).await,
    }
}

async fn config(api: &Api, command: ConfigCommand, json_out: bool) -> Result<String, String> {
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
            Ok(told(json_out, &current, || format!("{group} version {version}\n{}", pretty(&current["parameters"]))))
        }
        ConfigCommand::Diff { group, since } => {
            let answer = api.call(Method::GET, &format!("/config/{group}?version={since}"), &[], None).await?;
            if json_out {
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
            let (precondition, base) = match create {
                true => (("if-none-match", "*".to_owned()), 0),
                false => {
                    let (current, version) = current(api, &group).await?;
                    // Run again after it succeeded (its answer lost): nothing more to publish.
                    if current["parameters"] == parameters {
                        return Ok(told(json_out, &current, || {
                            format!("{group}: version {version} holds these parameters already; nothing published\n")
                        }));
                    }
                    (("if-match", format!("\"{version}\"")), version)
                }
            };
            let headers = [precondition, ("idempotency-key", idempotency_key("publish", &group, base, &parameters))];
            let published =
                api.call(Method::POST, &format!("/config/{group}/versions"), &headers, Some(&parameters)).await?;
            Ok(told(json_out, &published, || {
                format!("{group}: published version {} (over version {base})\n", published["version"])
            }))
        }
        ConfigCommand::Rollback { group, version } => {
            let (current, at) = current(api, &group).await?;
            // Run again after it succeeded: version `version`'s parameters are current already.
            let since = api.call(Method::GET, &format!("/config/{group}?version={version}"), &[], None).await?;
            if version < at && since.get("patch").is_some_and(|patch| patch == &json!({})) {
                return Ok(told(json_out, &current, || {
                    format!("{group}: version {at} holds version {version}'s parameters already; nothing published\n")
                }));
            }
            let body = json!({"version": version});
            let headers = [
                ("if-match", format!("\"{at}\"")),
                ("idempotency-key", idempotency_key("rollback", &group, at, &body)),
            ];
            let published = api.call(Method::POST, &format!("/config/{group}/rollback"), &headers, Some(&body)).await?;
            Ok(told(json_out, &published, || {
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

/// The key of `action` with `body` over `group`'s version `base`: the same command over the same
/// version is one request, however often it is retried.
fn idempotency_key(action: &str, group: &str, base: u64, body: &Value) -> String {
    format!("ops-{action}-{}", &sha256_hex(format!("{group}\n{base}\n{body}").as_bytes())[..40])
}

/// `answer` as JSON for scripts, or `text` for people.
fn told(json_out: bool, answer: &Value, text: impl FnOnce() -> String) -> String {
    match json_out {
        true => pretty(answer),
        false => text(),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// Where `cargo stack up` keeps the local stack's URL and tokens (the workspace's `.superpay/`,
/// wherever the command runs from).
const LOCAL_STATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.superpay");

/// The HTTP API, called with the admin token.
struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(url: Option<String>, token: Option<String>) -> Result<Self, String> {
        let url = match url {
            Some(url) => url,
            None => {
                let info = std::fs::read_to_string(format!("{LOCAL_STATE}/stack.json")).map_err(
                    |_| "no --api and no local stack (.superpay/stack.json): start one with `cargo stack up`",
                )?;
                let info: Value = serde_json::from_str(&info).map_err(|e| format!(".superpay/stack.json: {e}"))?;
                info["api_url"].as_str().ok_or(".superpay/stack.json has no api_url")?.to_owned()
            }
        };
        let token = match token {
            Some(token) => token,
            None => std::fs::read_to_string(format!("{LOCAL_STATE}/admin.token"))
                .map_err(|_| "no --token and no .superpay/admin.token: start the local stack with `cargo stack up`")?
                .trim()
                .to_owned(),
        };
        Ok(Api { url: url.trim_end_matches('/').to_owned(), token, http: reqwest::Client::new() })
    }

    /// `method path` with `headers` and a JSON `body`: the answer, or the problem as one line.
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.url)).bearer_auth(&self.token);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| match e.is_connect() {
            true => {
                format!("{method} {path}: nothing answers at {} (is the stack running? `cargo stack up`)", self.url)
            }
            false => format!("{method} {path}: {e}"),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return match answer.is_object() {
                true => Ok(answer),
                false => Err(format!(
                    "{method} {path}: {} with an answer that is no JSON object: {text:.200}",
                    status.as_u16()
                )),
            };
        }
        Err(match (status, answer["code"].as_str()) {
            (_, Some(code)) => {
                format!("{method} {path}: {} {code}: {}", status.as_u16(), answer["detail"].as_str().unwrap_or(""))
            }
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, None) => {
                format!("{method} {path}: {} (the token is not an admin's, or expired)", status.as_u16())
            }
            _ => format!("{method} {path}: {} {text:.200}", status.as_u16()),
        })
    }
}
