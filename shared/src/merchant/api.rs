//! The merchants function's HTTP routes (template.yaml `MerchantsFunction`), all admin:
//!
//! - `POST /merchants`               register; the answer shows the merchant's key once
//! - `GET  /merchants/{id}`          the merchant (never its key)
//! - `POST /merchants/{id}/status`   `{"status": "active" | "suspended"}`
//! - `POST /merchants/{id}/terminals` register a till terminal; the answer shows its key once
//! - `POST /merchants/{id}/terminals/{terminal}/status` `{"status": "active" | "suspended"}`
//! - `POST /merchants/{id}/keys`, `POST /merchants/{id}/terminals/{terminal}/keys`,
//!   `POST /miniapps/{id}/keys`      rotate a key; the answer shows the new key once
//! - `POST .../keys/end-grace` (each of the three) end the previous key's grace now
//! - `POST /miniapps`                register a merchant's mini-app; the answer shows its key once
//! - `GET  /miniapps/{id}`           the mini-app (never its key)
//! - `POST /miniapps/{id}/status`    `{"status": "active" | "suspended" | "revoked"}` (revoked is final)

use lambda_http::http::{StatusCode, header as h};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::store::MerchantStore;
use super::terminal::{Terminal, TerminalStore, unknown_terminal};
use super::{Merchant, MerchantStatus, Registration, RegistrationJson, unknown_merchant};
use crate::Problem;
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_millis;
use crate::dynamo::{Write, transact};
use crate::http::{body_bytes, json_body, json_response, path_parameter, route_key};
use crate::idempotency::store::{CLAIM_HELD, Claim, IdempotencyStore};
use crate::idempotency::{StoredResponse, in_flight};
use crate::keys::{
    GRACE_RUNNING, KeyService, MAX_ROTATION_GRACE_SECONDS, PreviousKey, StoredKey, end_grace_item, next_key_id,
    rotation_item,
};
use crate::miniapp::store::MiniAppStore;
use crate::miniapp::{MiniApp, MiniAppStatus, unknown_miniapp};
use crate::problem::{Code, catalogue};

pub struct MerchantsApi {
    dynamodb: aws_sdk_dynamodb::Client,
    merchants: MerchantStore,
    terminals: TerminalStore,
    miniapps: MiniAppStore,
    keys: KeyService,
    idempotency: IdempotencyStore,
    audit_table: String,
    /// Template `AllowPlainHttpPartners`: true only where partners are local simulators.
    allow_plain_http: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: String,
}

/// A new key about to be committed (a registration or a rotation), and how the audit log and the
/// answer describe it.
struct KeyIssue {
    resource: String,
    action: &'static str,
    view: Value,
    location: String,
    /// The problem when the write's condition fails (its id exists, its key changed meanwhile).
    conflict: (&'static Code, String),
}

/// What an admin sees of a merchant: everything but its key.
fn view(merchant: &Merchant) -> Value {
    json!({
        "id": merchant.id,
        "name": merchant.name,
        "product_server_url": merchant.product_server_url,
        "currency": merchant.currency.code(),
        "status": merchant.status.as_str(),
        "key_id": merchant.key_id,
        "created_at": merchant.created_at,
    })
}

/// Whose key a key route acts on.
#[derive(Debug, Clone, Copy)]
enum KeyParty {
    Merchant,
    Terminal,
    MiniApp,
}

impl KeyParty {
    fn rotate_action(self) -> &'static str {
        match self {
            KeyParty::Merchant => "merchant.rotate_key",
            KeyParty::Terminal => "terminal.rotate_key",
            KeyParty::MiniApp => "miniapp.rotate_key",
        }
    }

    fn end_grace_action(self) -> &'static str {
        match self {
            KeyParty::Merchant => "merchant.end_key_grace",
            KeyParty::Terminal => "terminal.end_key_grace",
            KeyParty::MiniApp => "miniapp.end_key_grace",
        }
    }
}

/// A party whose key a key route acts on, as read inside the route's run.
struct KeyHolder {
    /// The audit log's partition.
    resource: String,
    /// Whom KMS binds the key to.
    owner: String,
    location: String,
    /// The table holding the party (partition `id`).
    table: String,
    id: String,
    key_id: String,
    ciphertext: Vec<u8>,
    previous: Option<PreviousKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotation {
    #[serde(default)]
    grace_seconds: Option<i64>,
}

/// How long a rotated-out key stays honoured unless the rotation says otherwise.
const DEFAULT_ROTATION_GRACE_SECONDS: i64 = 24 * 3600;

fn rotation_in_progress(id: &str) -> Problem {
    Problem::new(
        catalogue::ROTATION_IN_PROGRESS,
        format!("{id} still honours its previous key; rotate again once its grace has ended"),
    )
}

fn no_rotation_in_grace(id: &str) -> Problem {
    Problem::new(
        catalogue::NO_ROTATION_IN_GRACE,
        format!("{id} honours no previous key: no rotation is in its grace, so there is none to end"),
    )
}

/// A merchant's or terminal's new status, from the body.
fn parse_status(request: &Request) -> Result<MerchantStatus, Problem> {
    let StatusChange { status } = json_body(request)?;
    MerchantStatus::parse(&status)
        .ok_or_else(|| Problem::new(catalogue::INVALID_STATUS, "status must be \"active\" or \"suspended\""))
}

fn already_registered(code: &'static Code, id: &str) -> (&'static Code, String) {
    (code, format!("{id} was already registered with this Idempotency-Key"))
}

impl MerchantsApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        Ok(MerchantsApi {
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            terminals: TerminalStore::new(dynamodb.clone(), aws::env("TERMINALS_TABLE")?),
            miniapps: MiniAppStore::new(dynamodb.clone(), aws::env("MINIAPPS_TABLE")?),
            keys: KeyService::new(aws_sdk_kms::Client::new(&config), aws::env("PARTY_KEYS_KEY_ID")?),
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            audit_table: aws::env("AUDIT_TABLE")?,
            allow_plain_http: aws::env("ALLOW_PLAIN_HTTP_PARTNERS")? == "true",
            dynamodb,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        caller.require_admin()?;
        match route_key(&request) {
            "POST /merchants" => self.register(&request, &caller).await,
            "GET /merchants/{id}" => {
                let id = path_parameter(&request, "id")?;
                let merchant = self.merchants.get(id).await?.ok_or_else(|| unknown_merchant(id))?;
                Ok(json_response(StatusCode::OK, &view(&merchant)))
            }
            "POST /merchants/{id}/status" => self.set_status(&request, &caller).await,
            "POST /merchants/{id}/terminals" => self.register_terminal(&request, &caller).await,
            "POST /merchants/{id}/terminals/{terminal}/status" => self.set_terminal_status(&request, &caller).await,
            "POST /merchants/{id}/keys" => self.rotate_key(&request, &caller, KeyParty::Merchant).await,
            "POST /merchants/{id}/terminals/{terminal}/keys" => {
                self.rotate_key(&request, &caller, KeyParty::Terminal).await
            }
            "POST /miniapps/{id}/keys" => self.rotate_key(&request, &caller, KeyParty::MiniApp).await,
            "POST /merchants/{id}/keys/end-grace" => self.end_grace(&request, &caller, KeyParty::Merchant).await,
            "POST /merchants/{id}/terminals/{terminal}/keys/end-grace" => {
                self.end_grace(&request, &caller, KeyParty::Terminal).await
            }
            "POST /miniapps/{id}/keys/end-grace" => self.end_grace(&request, &caller, KeyParty::MiniApp).await,
            "POST /miniapps" => self.register_miniapp(&request, &caller).await,
            "GET /miniapps/{id}" => {
                let id = path_parameter(&request, "id")?;
                let app = self.miniapps.get(id).await?.ok_or_else(|| unknown_miniapp(id))?;
                Ok(json_response(StatusCode::OK, &app.view()))
            }
            "POST /miniapps/{id}/status" => self.set_miniapp_status(&request, &caller).await,
            other => {
                Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the merchants function has no route {other:?}")))
            }
        }
    }

    async fn register(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let registration = Registration::parse(json_body::<RegistrationJson>(request)?, self.allow_plain_http)?;
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                // Derived from the key: a retry, even after the idempotency record expired, names
                // the same merchant and cannot register it twice.
                let id = format!("m_{}", &claim.scope.derived_id("merchant")[..20]);
                let key = self.keys.generate(&Merchant::key_owner(&id)).await?;
                let merchant = Merchant {
                    key_id: format!("{id}.k1"),
                    id,
                    name: registration.name,
                    product_server_url: registration.product_server_url,
                    currency: registration.currency,
                    status: MerchantStatus::Active,
                    key_ciphertext: key.ciphertext,
                    previous_key: None,
                    created_at: now,
                };
                let issued = KeyIssue {
                    resource: format!("merchant/{}", merchant.id),
                    action: "merchant.register",
                    view: view(&merchant),
                    location: format!("/merchants/{}", merchant.id),
                    conflict: already_registered(catalogue::MERCHANT_EXISTS, &merchant.id),
                };
                self.commit_new_key(&claim, now, issued, &key.key, self.merchants.create_item(&merchant)?).await
            })
            .await
    }

    /// A new key for a merchant, terminal or mini-app, shown once (the answer kept for replays
    /// has no secret). The previous key stays honoured for `grace_seconds` (default a day): the
    /// party may still sign with it, and we keep signing our calls to the party with it, so the
    /// party has that long to install the new one. The party is read inside the key's run, so
    /// that a replay answers as the first time.
    async fn rotate_key(&self, request: &Request, caller: &Caller, party: KeyParty) -> Result<Response<Body>, Problem> {
        let Rotation { grace_seconds } =
            if body_bytes(request).is_empty() { Rotation { grace_seconds: None } } else { json_body(request)? };
        let grace = grace_seconds.unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
        if !(1..=MAX_ROTATION_GRACE_SECONDS).contains(&grace) {
            return Err(Problem::new(
                catalogue::INVALID_GRACE_SECONDS,
                format!("grace_seconds must be from 1 to {MAX_ROTATION_GRACE_SECONDS}"),
            ));
        }
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                let holder = self.key_holder(request, party).await?;
                let stored = StoredKey {
                    key_id: &holder.key_id,
                    ciphertext: &holder.ciphertext,
                    previous: holder.previous.as_ref(),
                };
                if let Some(previous) = PreviousKey::honoured(stored.previous, now) {
                    return Err(rotation_in_progress(&holder.id).with("previous_valid_until", previous.until));
                }
                let key_id = next_key_id(&holder.key_id)
                    .ok_or_else(|| Problem::internal(format!("key id {} has no version", holder.key_id)))?;
                let key = self.keys.generate(&holder.owner).await?;
                let until = now + grace;
                let rotate = rotation_item(&holder.table, &holder.id, &stored, &key_id, key.ciphertext, until, now)?;
                let issued = KeyIssue {
                    resource: holder.resource.clone(),
                    action: party.rotate_action(),
                    view: json!({
                        "id": holder.id,
                        "key_id": key_id,
                        "previous_key_id": holder.key_id,
                        "previous_valid_until": until,
                    }),
                    location: holder.location.clone(),
                    conflict: (
                        catalogue::ROTATION_IN_PROGRESS,
                        "the key changed meanwhile; read it again and retry".into(),
                    ),
                };
                self.commit_new_key(&claim, now, issued, &key.key, rotate).await
            })
            .await
    }

    /// Ends the grace of a party's previous key now: from then on only its current key verifies,
    /// and we sign our calls to the party with that key. For a previous key that may have leaked,
    /// which a rotation alone leaves valid until its grace ends (up to 7 days).
    async fn end_grace(&self, request: &Request, caller: &Caller, party: KeyParty) -> Result<Response<Body>, Problem> {
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                let holder = self.key_holder(request, party).await?;
                let previous = PreviousKey::honoured(holder.previous.as_ref(), now)
                    .ok_or_else(|| no_rotation_in_grace(&holder.id))?;
                let ended = json!({
                    "id": holder.id,
                    "key_id": holder.key_id,
                    "previous_key_id": previous.key_id,
                    "previous_valid_until": now,
                });
                let response = json_response(StatusCode::OK, &ended);
                let audit = AuditEntry {
                    resource: holder.resource.clone(),
                    action: party.end_grace_action(),
                    actor: claim.scope.caller.clone(),
                    at_ms: now_epoch_millis(),
                    detail: ended,
                };
                let items = vec![
                    end_grace_item(&holder.table, &holder.id, previous, now)?,
                    audit.put_item(&self.audit_table, &claim.scope.derived_id("audit"))?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                ];
                match transact(&self.dynamodb, items).await {
                    Ok(()) => Ok(response),
                    // The grace ended meanwhile (its time came, or another call ended it).
                    Err(e) if e.broke(GRACE_RUNNING) => Err(no_rotation_in_grace(&holder.id)),
                    Err(e) if e.broke(CLAIM_HELD) => Err(in_flight()),
                    Err(e) => Err(Problem::internal(e)),
                }
            })
            .await
    }

    /// The party a key route names, as it is now.
    async fn key_holder(&self, request: &Request, party: KeyParty) -> Result<KeyHolder, Problem> {
        let id = path_parameter(request, "id")?;
        Ok(match party {
            KeyParty::Merchant => {
                let merchant = self.merchants.get(id).await?.ok_or_else(|| unknown_merchant(id))?;
                KeyHolder {
                    resource: format!("merchant/{id}"),
                    owner: Merchant::key_owner(id),
                    location: format!("/merchants/{id}"),
                    table: self.merchants.table().to_owned(),
                    id: merchant.id,
                    key_id: merchant.key_id,
                    ciphertext: merchant.key_ciphertext,
                    previous: merchant.previous_key,
                }
            }
            KeyParty::Terminal => {
                let terminal = self.terminal_of(id, path_parameter(request, "terminal")?).await?;
                KeyHolder {
                    resource: format!("merchant/{id}"),
                    owner: Terminal::key_owner(&terminal.id),
                    location: format!("/merchants/{id}/terminals/{}", terminal.id),
                    table: self.terminals.table().to_owned(),
                    id: terminal.id,
                    key_id: terminal.key_id,
                    ciphertext: terminal.key_ciphertext,
                    previous: terminal.previous_key,
                }
            }
            KeyParty::MiniApp => {
                let app = self.miniapps.get(id).await?.ok_or_else(|| unknown_miniapp(id))?;
                KeyHolder {
                    resource: format!("miniapp/{id}"),
                    owner: MiniApp::key_owner(id),
                    location: format!("/miniapps/{id}"),
                    table: self.miniapps.table().to_owned(),
                    id: app.id,
                    key_id: app.key_id,
                    ciphertext: app.key_ciphertext,
                    previous: app.previous_key,
                }
            }
        })
    }

    /// Terminal `id` of `merchant_id`: another merchant's terminal is as unknown as a missing one.
    async fn terminal_of(&self, merchant_id: &str, id: &str) -> Result<Terminal, Problem> {
        self.terminals.get(id).await?.filter(|t| t.merchant_id == merchant_id).ok_or_else(|| unknown_terminal(id))
    }

    /// Suspends a terminal (a lost or stolen till) or makes it active again. A suspended terminal's
    /// calls are refused where its key is verified (`crate::offline::payments_api`).
    async fn set_terminal_status(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let (merchant_id, id) = (path_parameter(request, "id")?, path_parameter(request, "terminal")?);
        let status = parse_status(request)?;
        let write = self.terminals.status_item(id, merchant_id, status)?;
        let detail = json!({ "terminal": id, "status": status.as_str() });
        if self.commit_audited(caller, format!("merchant/{merchant_id}"), "terminal.status", detail, write).await? {
            return Err(unknown_terminal(id));
        }
        Ok(json_response(StatusCode::OK, &self.terminal_of(merchant_id, id).await?.view()))
    }

    /// Commits an admin's `write` with its audit entry; `true` when the write's condition refused it
    /// (nothing is written then).
    async fn commit_audited(
        &self,
        caller: &Caller,
        resource: String,
        action: &'static str,
        detail: Value,
        write: Write,
    ) -> Result<bool, Problem> {
        let audit = AuditEntry { resource, action, actor: caller.subject.clone(), at_ms: now_epoch_millis(), detail };
        let rule = write.rule;
        let items = vec![write, audit.put_item(&self.audit_table, &uuid::Uuid::new_v4().to_string())?];
        match transact(&self.dynamodb, items).await {
            Ok(()) => Ok(false),
            Err(e) if e.broke(rule) => Ok(true),
            Err(e) => Err(Problem::internal(e)),
        }
    }

    /// A merchant's terminal: its own key id and key, shown once.
    async fn register_terminal(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let merchant_id = path_parameter(request, "id")?;
        let merchant = self.merchants.get(merchant_id).await?.ok_or_else(|| unknown_merchant(merchant_id))?;
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                let id = format!("t_{}", &claim.scope.derived_id("terminal")[..20]);
                let key = self.keys.generate(&Terminal::key_owner(&id)).await?;
                let terminal = Terminal {
                    key_id: format!("{id}.k1"),
                    id,
                    merchant_id: merchant.id.clone(),
                    key_ciphertext: key.ciphertext,
                    previous_key: None,
                    status: MerchantStatus::Active,
                    created_at: now,
                };
                let issued = KeyIssue {
                    resource: format!("merchant/{}", merchant.id),
                    action: "terminal.register",
                    view: terminal.view(),
                    location: format!("/merchants/{}/terminals/{}", merchant.id, terminal.id),
                    conflict: already_registered(catalogue::TERMINAL_EXISTS, &terminal.id),
                };
                self.commit_new_key(&claim, now, issued, &key.key, self.terminals.create_item(&terminal)?).await
            })
            .await
    }

    /// A merchant's mini-app: its key id and key (shown once) and its interface descriptor.
    async fn register_miniapp(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let registration = crate::miniapp::Registration::parse(json_body(request)?, self.allow_plain_http)?;
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                // Judged inside the key's run: a replay answers as the first time, whatever the owner became.
                let owner = self
                    .merchants
                    .get(&registration.owner_merchant_id)
                    .await?
                    .ok_or_else(|| unknown_merchant(&registration.owner_merchant_id))?;
                if owner.status != MerchantStatus::Active {
                    return Err(super::inactive_merchant(&owner.id));
                }
                let id = format!("a_{}", &claim.scope.derived_id("miniapp")[..20]);
                let key = self.keys.generate(&MiniApp::key_owner(&id)).await?;
                let app = MiniApp {
                    key_id: format!("{id}.k1"),
                    id,
                    owner_merchant_id: owner.id.clone(),
                    server_url: registration.server_url,
                    status: MiniAppStatus::Active,
                    key_ciphertext: key.ciphertext,
                    previous_key: None,
                    interface: registration.interface,
                    created_at: now,
                };
                let issued = KeyIssue {
                    resource: format!("miniapp/{}", app.id),
                    action: "miniapp.register",
                    view: app.view(),
                    location: format!("/miniapps/{}", app.id),
                    conflict: already_registered(catalogue::MINIAPP_EXISTS, &app.id),
                };
                self.commit_new_key(&claim, now, issued, &key.key, self.miniapps.create_item(&app)?).await
            })
            .await
    }

    async fn set_miniapp_status(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let id = path_parameter(request, "id")?;
        let StatusChange { status } = json_body(request)?;
        let status = MiniAppStatus::parse(&status).ok_or_else(|| {
            Problem::new(catalogue::INVALID_STATUS, "status must be \"active\", \"suspended\" or \"revoked\"")
        })?;
        let write = self.miniapps.status_item(id, status)?;
        let detail = json!({ "status": status.as_str() });
        let refused = self.commit_audited(caller, format!("miniapp/{id}"), "miniapp.status", detail, write).await?;
        let app = self.miniapps.get(id).await?.ok_or_else(|| unknown_miniapp(id))?;
        // The write is refused for a missing app (above) or a revoked one, unless it asked for revoked again.
        if refused && status != MiniAppStatus::Revoked {
            return Err(Problem::alternate(
                catalogue::MINIAPP_REVOKED,
                format!("mini-app {id:?} was revoked; revocation is final"),
            ));
        }
        Ok(json_response(StatusCode::OK, &app.view()))
    }

    /// Commits the write that stores the new key (first), its audit entry, and an idempotency record that
    /// keeps the answer without the secret: a secret shown once is never kept in clear.
    async fn commit_new_key(
        &self,
        claim: &Claim,
        now: i64,
        issued: KeyIssue,
        secret: &crate::crypto::Key,
        write: Write,
    ) -> Result<Response<Body>, Problem> {
        let mut shown = issued.view.clone();
        shown["secret"] = json!(secret.to_base64().expose());
        let mut kept = issued.view.clone();
        kept["secret"] = Value::Null;
        kept["secret_note"] = json!("the secret is shown only in the first answer; it is not stored in clear");
        let respond = |body: &Value| {
            let mut response = json_response(StatusCode::CREATED, body);
            if let Ok(value) = h::HeaderValue::from_str(&issued.location) {
                response.headers_mut().insert(h::LOCATION, value);
            }
            response
        };
        let audit = AuditEntry {
            resource: issued.resource.clone(),
            action: issued.action,
            actor: claim.scope.caller.clone(),
            at_ms: now_epoch_millis(),
            detail: issued.view.clone(),
        };
        let key_rule = write.rule;
        let items = vec![
            write,
            audit.put_item(&self.audit_table, &claim.scope.derived_id("audit"))?,
            self.idempotency.complete_item(claim, &StoredResponse::from_response(&respond(&kept)), now)?,
        ];
        match transact(&self.dynamodb, items).await {
            Ok(()) => Ok(respond(&shown)),
            Err(e) if e.broke(key_rule) => Err(Problem::new(issued.conflict.0, issued.conflict.1)),
            Err(e) if e.broke(CLAIM_HELD) => Err(in_flight()),
            Err(e) => Err(Problem::internal(e)),
        }
    }

    async fn set_status(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let id = path_parameter(request, "id")?;
        let status = parse_status(request)?;
        let write = self.merchants.status_item(id, status)?;
        let detail = json!({ "status": status.as_str() });
        if self.commit_audited(caller, format!("merchant/{id}"), "merchant.status", detail, write).await? {
            return Err(unknown_merchant(id));
        }
        let merchant = self.merchants.get(id).await?.ok_or_else(|| unknown_merchant(id))?;
        Ok(json_response(StatusCode::OK, &view(&merchant)))
    }
}
