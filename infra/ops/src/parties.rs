//! `cargo ops merchants|miniapps|partners|terminals ...`: the parties that sign their calls, over
//! their admin routes (each action audited there).
//!
//! A registration's or rotation's `secret` is shown once, in the first answer: the command prints it
//! then. A party's registration run again is the same request (its `Idempotency-Key` derives from
//! it), so a lost answer never registers it twice; the replay says so and where to read the party
//! as it is now (its own fields are as they were then).
//! A terminal's registration, a rotation and an end of grace are each a request of their own: a
//! merchant may have many terminals alike, and the API itself refuses a rotation while another's
//! grace runs.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::Out;
use crate::api::{Api, idempotency_key};

/// One kind of party: its routes' root and its registration's fields.
pub struct Party {
    /// `merchants`: the routes are `/merchants`, `/merchants/{id}`, ...
    root: &'static str,
    /// What one is called in messages.
    one: &'static str,
}

pub const MERCHANTS: Party = Party { root: "merchants", one: "merchant" };
pub const MINIAPPS: Party = Party { root: "miniapps", one: "mini-app" };
pub const PARTNERS: Party = Party { root: "partners", one: "partner" };

#[derive(Subcommand)]
pub enum PartyCommand {
    /// Register one from FIELD=VALUE pairs (FIELD=@FILE reads a JSON value from FILE).
    /// Merchants: name, product_server_url, currency. Mini-apps: owner_merchant_id, server_url,
    /// interface. Partners: name, callback_url, merchant_id
    Register {
        #[arg(required = true, value_name = "FIELD=VALUE")]
        fields: Vec<String>,
    },
    /// One as it is now (never its key)
    Show { id: String },
    /// Suspend (its signed calls refused) or reactivate one
    Status {
        id: String,
        #[arg(value_parser = ["active", "suspended"])]
        status: String,
    },
    /// Rotate its signing key; the previous one is still honoured during the grace
    Rotate {
        id: String,
        #[command(flatten)]
        grace: Grace,
    },
    /// End the previous key's grace now (it was leaked, or every caller has the new one)
    EndGrace { id: String },
}

#[derive(Subcommand)]
pub enum TerminalCommand {
    /// Register a terminal of MERCHANT: a till (offline payments) or a transfer signer
    Register {
        merchant: String,
        #[arg(long, default_value = "till", value_parser = ["till", "transfer"])]
        kind: String,
    },
    /// Suspend or reactivate a terminal
    Status {
        merchant: String,
        terminal: String,
        #[arg(value_parser = ["active", "suspended"])]
        status: String,
    },
    /// Rotate a terminal's key
    Rotate {
        merchant: String,
        terminal: String,
        #[command(flatten)]
        grace: Grace,
    },
    /// End a terminal's previous key's grace now
    EndGrace { merchant: String, terminal: String },
}

#[derive(Args)]
pub struct Grace {
    /// How long the previous key is still honoured, in seconds [default: the API's]
    #[arg(long)]
    grace_seconds: Option<i64>,
}

impl Grace {
    fn body(&self) -> Value {
        match self.grace_seconds {
            Some(seconds) => json!({"grace_seconds": seconds}),
            None => json!({}),
        }
    }
}

pub async fn party(api: &Api, party: &Party, command: PartyCommand, out: Out) -> Result<String, String> {
    let root = party.root;
    match command {
        PartyCommand::Register { fields } => {
            let body = Value::Object(registration(&fields)?);
            let answer = keyed(api, "register", &format!("/{root}"), &body).await?;
            let id = plain(&answer["id"]);
            Ok(out.told(&answer, || match answer["secret"].is_string() {
                true => issued(&format!("registered {} {id}", party.one), &answer),
                // A replay: its fields are as they were then, so none is shown as if current.
                false => format!(
                    "{} {id} was registered by an earlier run of this command, which showed its secret; \
                     `cargo ops {root} show {id}` shows it as it is now\n",
                    party.one
                ),
            }))
        }
        PartyCommand::Show { id } => {
            let answer = api.call(Method::GET, &format!("/{root}/{}", checked(&id)?), &[], None).await?;
            Ok(out.told(&answer, || fields(&answer)))
        }
        PartyCommand::Status { id, status } => {
            let path = format!("/{root}/{}/status", checked(&id)?);
            let answer = api.call(Method::POST, &path, &[], Some(&json!({"status": status}))).await?;
            Ok(out.told(&answer, || format!("{} {id} is {}\n", party.one, answer["status"].as_str().unwrap_or("?"))))
        }
        PartyCommand::Rotate { id, grace } => rotate(api, &format!("/{root}/{}", checked(&id)?), &grace, out).await,
        PartyCommand::EndGrace { id } => end_grace(api, &format!("/{root}/{}", checked(&id)?), out).await,
    }
}

pub async fn terminal(api: &Api, command: TerminalCommand, out: Out) -> Result<String, String> {
    let path = |merchant: &str, terminal: &str| -> Result<String, String> {
        Ok(format!("/merchants/{}/terminals/{}", checked(merchant)?, checked(terminal)?))
    };
    match command {
        TerminalCommand::Register { merchant, kind } => {
            // Each run registers one more terminal: a merchant may have many alike.
            let path = format!("/merchants/{}/terminals", checked(&merchant)?);
            let answer = once(api, &path, &json!({"kind": kind})).await?;
            Ok(out.told(&answer, || {
                issued(&format!("registered {kind} terminal {} of {merchant}", plain(&answer["id"])), &answer)
            }))
        }
        TerminalCommand::Status { merchant, terminal, status } => {
            let status_path = format!("{}/status", path(&merchant, &terminal)?);
            let answer = api.call(Method::POST, &status_path, &[], Some(&json!({"status": status}))).await?;
            Ok(out.told(&answer, || format!("terminal {terminal} is {}\n", answer["status"].as_str().unwrap_or("?"))))
        }
        TerminalCommand::Rotate { merchant, terminal, grace } => {
            rotate(api, &path(&merchant, &terminal)?, &grace, out).await
        }
        TerminalCommand::EndGrace { merchant, terminal } => end_grace(api, &path(&merchant, &terminal)?, out).await,
    }
}

/// A rotation of the key of the party at `path`. Each run is a request of its own: the API
/// refuses a second rotation while the first one's grace runs, and a leaked key must be rotatable
/// again the same day, once its grace is ended.
async fn rotate(api: &Api, path: &str, grace: &Grace, out: Out) -> Result<String, String> {
    let answer = once(api, &format!("{path}/keys"), &grace.body()).await?;
    Ok(out.told(&answer, || {
        let heading = format!(
            "{} now signs with {}; {} is honoured until {}",
            plain(&answer["id"]),
            plain(&answer["key_id"]),
            plain(&answer["previous_key_id"]),
            plain(&answer["previous_valid_until"])
        );
        issued(&heading, &answer)
    }))
}

async fn end_grace(api: &Api, path: &str, out: Out) -> Result<String, String> {
    let answer = once(api, &format!("{path}/keys/end-grace"), &json!({})).await?;
    Ok(out.told(&answer, || {
        format!(
            "{}: {} is no longer honoured; {} signs\n",
            plain(&answer["id"]),
            plain(&answer["previous_key_id"]),
            plain(&answer["key_id"])
        )
    }))
}

/// `POST path` with `body`, once per (`action`, `path`, `body`).
async fn keyed(api: &Api, action: &str, path: &str, body: &Value) -> Result<Value, String> {
    let key = idempotency_key(action, path, 0, body);
    api.call(Method::POST, path, &[("idempotency-key", key)], Some(body)).await
}

/// `POST path` with `body` as a request of its own.
async fn once(api: &Api, path: &str, body: &Value) -> Result<Value, String> {
    let key = format!("ops-{}", uuid::Uuid::new_v4());
    api.call(Method::POST, path, &[("idempotency-key", key)], Some(body)).await
}

/// A value as people read it: a string without its quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// What a registration or rotation issued: the answer's fields, the secret last and marked.
fn issued(heading: &str, answer: &Value) -> String {
    let secret = answer["secret"].as_str().unwrap_or_default();
    format!("{heading}\n{}\nsecret (shown this once; give it to the party, keep no copy):\n{secret}\n", fields(answer))
}

/// An answer's fields, one per line, aligned (the secret left out).
fn fields(answer: &Value) -> String {
    let Some(object) = answer.as_object() else { return crate::pretty(answer) };
    let rows: Vec<Vec<String>> = object
        .iter()
        .filter(|(name, _)| !name.starts_with("secret"))
        .map(|(name, value)| vec![format!("{name}:"), plain(value)])
        .collect();
    let text = crate::aligned(&["", ""], &rows);
    // The header row is empty.
    text.trim_start_matches('\n').to_owned()
}

/// A registration's body from `FIELD=VALUE` pairs; `FIELD=@FILE` reads FILE's JSON.
fn registration(pairs: &[String]) -> Result<Map<String, Value>, String> {
    let mut body = Map::new();
    for pair in pairs {
        let (field, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is no FIELD=VALUE"))?;
        let value = match value.strip_prefix('@') {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
                serde_json::from_str(&text).map_err(|e| format!("{file} is not JSON: {e}"))?
            }
            None => Value::String(value.to_owned()),
        };
        if body.insert(field.to_owned(), value).is_some() {
            return Err(format!("{field} is given twice"));
        }
    }
    Ok(body)
}

/// An id goes into a route's path: an id, never a path of its own (`..` follows the id rule, and
/// would climb out of the route).
fn checked(id: &str) -> Result<&str, String> {
    if id.chars().all(|c| c == '.') {
        return Err(format!("{id:?} is no id"));
    }
    superpay::ids::check("id", id).map_err(|problem| problem.detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_reads_pairs_and_json_files() {
        let file = std::env::temp_dir().join("ops-interface.json");
        std::fs::write(&file, r#"{"actions": []}"#).unwrap();
        let pairs = ["server_url=http://x".to_owned(), format!("interface=@{}", file.display())];
        assert_eq!(
            Value::Object(registration(&pairs).unwrap()),
            json!({"server_url": "http://x", "interface": {"actions": []}})
        );
        assert_eq!(registration(&["name".into()]).unwrap_err(), "\"name\" is no FIELD=VALUE");
        assert_eq!(registration(&["a=1".into(), "a=2".into()]).unwrap_err(), "a is given twice");
        assert!(checked("../merchants").is_err());
        assert!(checked("..").is_err() && checked(".").is_err());
    }

    #[test]
    fn an_issued_secret_is_shown_last() {
        let first = json!({"id": "m_1", "key_id": "m_1.k1", "secret": "c2VjcmV0"});
        let text = issued("registered merchant m_1", &first);
        assert!(text.starts_with("registered merchant m_1\nid:      m_1\nkey_id:  m_1.k1\n"), "{text}");
        assert!(text.ends_with("keep no copy):\nc2VjcmV0\n"), "{text}");
    }
}
