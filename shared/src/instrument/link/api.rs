//! The links function's routes for signed-in users (template.yaml `LinksFunction`):
//!
//! - `POST /links`          with an Idempotency-Key, `{"code", "instrument_ids", "grant": {"read",
//!   "charge": {"per_charge", "per_day"}}}`: links the B identity the code names to the caller's
//!   chosen instruments with that grant; 201 the link. B is told by signed webhook (`link.created`).
//! - `GET /links`           the caller's record of every consent: what it allows, its use, its end
//! - `GET /links/{id}`      one of them
//! - `DELETE /links/{id}`   ends it at once (reads and charges refused from then on); B is told
//!   (`link.ended`).
//!
//! The partner's own signed routes are `super::partner_api`'s; this function serves both.

use std::collections::HashSet;
use std::sync::Arc;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::store::{IDENTITY_FREE, LINK_ACTIVE, LINK_NEW, LinkStore};
use super::{CodeError, partner_api::PartnerApi};
use super::{
    Grant, GrantRequest, Link, LinkCode, LinkState, LinkView, Linked, LinkedInstrumentView, MAX_LINKED_INSTRUMENTS,
    expiry_notice, new_token,
};
use crate::Problem;
use crate::attention::{AttentionStore, Personal, PersonalKind};
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::dynamo::{StoreError, TransactError, Write, transact};
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::StoredResponse;
use crate::idempotency::store::{CLAIM_HELD, IdempotencyStore};
use crate::ids;
use crate::instrument::Instrument;
use crate::instrument::partner::{Partner, PartnerStore};
use crate::instrument::store::{InstrumentStore, Stored};
use crate::keys::{KeyRing, KeyService};
use crate::merchant::MerchantStatus;
use crate::nonce::{NONCE_UNSPENT, NonceStore};
use crate::outbox::Outbox;
use crate::party_keys::KeyedParty;
use crate::problem::catalogue;
use crate::queues::NotificationMessage;
use crate::security::{SecurityEvent, SecurityEvents};

/// What the user's and the partner's routes share.
pub struct Links {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub links: LinkStore,
    pub partners: PartnerStore,
    pub instruments: InstrumentStore,
    pub ring: Arc<KeyRing>,
    pub nonces: NonceStore,
    pub outbox: Outbox,
    pub idempotency: IdempotencyStore,
    security: SecurityEvents,
    home: AttentionStore,
    notifications_queue: String,
}

impl Links {
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        Ok(Links {
            links: LinkStore::new(dynamodb.clone(), aws::env("LINKS_TABLE")?),
            partners: PartnerStore::new(dynamodb.clone(), aws::env("PARTNERS_TABLE")?),
            instruments: InstrumentStore::new(dynamodb.clone(), aws::env("INSTRUMENTS_TABLE")?),
            ring: Arc::new(KeyRing::new(KeyService::new(
                aws_sdk_kms::Client::new(config),
                aws::env("PARTY_KEYS_KEY_ID")?,
            ))),
            nonces: NonceStore::new(dynamodb.clone(), aws::env("NONCE_TABLE")?),
            outbox: Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(config), aws::env("OUTBOX_TABLE")?),
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            security: SecurityEvents::from_env(&dynamodb)?,
            home: AttentionStore::new(dynamodb.clone(), aws::env("HOME_TABLE")?),
            notifications_queue: aws::env("NOTIFICATIONS_QUEUE_URL")?,
            dynamodb,
        })
    }

    /// The partner's webhook about `link` (`link.created`, `link.ended`), through the outbox.
    pub fn notice(&self, link: &Link, event: &str) -> Result<(NotificationMessage, Write), StoreError> {
        let message = NotificationMessage::LinkChanged {
            id: format!("{}/{event}", link.id),
            user: link.user.clone(),
            link_id: link.id.clone(),
            event: event.to_owned(),
        };
        let outbox = message
            .outbox(&self.notifications_queue, 0)
            .map_err(|e| StoreError::caused("the link's notice could not be written", e))?;
        let item = self.outbox.put_item(&outbox, crate::clock::now_epoch_seconds())?;
        Ok((message, item))
    }

    /// The outbox item that tells `link`'s partner when `instrument`'s card expires, due then (the
    /// sweeper sends it); none for a bank account.
    pub fn expiry_item(&self, link: &Link, instrument: &Instrument) -> Result<Option<Write>, StoreError> {
        let Some((message, due_at)) = expiry_notice(link, instrument, "linked") else { return Ok(None) };
        let outbox = message
            .outbox(&self.notifications_queue, 0)
            .map_err(|e| StoreError::caused("the expiry notice could not be written", e))?;
        Ok(Some(self.outbox.put_item_due(&outbox, due_at)?))
    }

    /// The user's security event `kind` about `link` (its partner and B identity only).
    pub fn security_event(&self, link: &Link, kind: &'static str, at: i64) -> Result<Vec<Write>, StoreError> {
        let detail = json!({"link_id": link.id, "partner_id": link.partner, "partner_user": link.partner_user});
        self.security.items(&SecurityEvent {
            user: link.user.clone(),
            id: format!("{kind}/{}", link.id),
            kind,
            at,
            detail,
        })
    }

    /// `link` as its user's home lists it (a linked platform), written with the link.
    fn personal_item(&self, link: &Link, partner_name: &str) -> Result<Write, StoreError> {
        let data = json!({
            "link_id": link.id,
            "partner_id": link.partner,
            "partner_name": partner_name,
            "grant": link.grant,
            "linked_at": link.created_at,
        });
        let personal = Personal { kind: PersonalKind::Link, id: link.id.clone(), at: link.created_at, data };
        self.home.put_personal(&link.user, &personal)
    }

    /// Ends `link` at `now` by `by` (`user` or `partner`), B told through the outbox; answers the
    /// link as it now stands (one ended meanwhile, as it ended).
    pub async fn end(&self, link: &Link, by: &str, now: i64) -> Result<Link, Problem> {
        let (message, notice) = self.notice(link, "link.ended")?;
        let mut writes = self.links.end_items(link, by, now)?.to_vec();
        writes.push(notice);
        writes.extend(self.security_event(link, "link.ended", now)?);
        writes.push(self.home.delete_personal(&link.user, PersonalKind::Link, &link.id)?);
        match transact(&self.dynamodb, writes).await {
            Ok(()) => {
                if let Ok(outbox) = message.outbox(&self.notifications_queue, 0) {
                    self.outbox.send(&outbox).await;
                }
            }
            Err(e) if e.broke(LINK_ACTIVE) => {}
            Err(e) => return Err(Problem::internal(e)),
        }
        Ok(self.links.get(&link.user, &link.id).await?.unwrap_or_else(|| link.clone()))
    }

    /// How the user sees `link`: the partner's name, each instrument by its label.
    pub async fn user_view(&self, link: &Link, now: i64) -> Result<LinkView, Problem> {
        let kept = self.instruments.of_user(&link.user).await?;
        self.user_view_with(link, &kept, now).await
    }

    /// The same, with the user's instruments as read (one read for all their links).
    async fn user_view_with(&self, link: &Link, kept: &[Stored], now: i64) -> Result<LinkView, Problem> {
        let partner = self.partners.get(&link.partner).await?;
        let instruments = link
            .instruments
            .iter()
            .map(|l| {
                let kept = kept.iter().find(|k| k.instrument.id == l.instrument_id);
                LinkedInstrumentView {
                    id: l.instrument_id.clone(),
                    instrument: kept.map(|k| k.instrument.label()),
                    status: if kept.is_some_and(|k| k.removed_at.is_none()) { "active" } else { "removed" },
                }
            })
            .collect();
        Ok(link.view(partner.as_ref().map_or("", |p| p.name.as_str()), instruments, now))
    }

    /// The partner a link code's key id names and that key's link-code key, or the code is forged.
    async fn code_signer(&self, code: &LinkCode) -> Result<(Partner, crate::crypto::Key), Problem> {
        let partner = self.partners.get(code.partner()).await?.ok_or(CodeError::Forged)?;
        let (owner, stored, now) = (partner.kms_owner(), partner.stored_key(), crate::clock::now_epoch_seconds());
        let keys = self.ring.named_keys(&code.key_id, &owner, &stored, now).await?.ok_or(CodeError::Forged)?;
        Ok((partner, keys.link_codes.clone()))
    }
}

pub struct LinksApi {
    links: Links,
    partner: PartnerApi,
}

/// `POST /links`'s body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    /// The link code the partner issued for the user: `<payload, base64url>.<signature, hex>`.
    code: String,
    /// The instruments to link: 1 to 10, each once.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "instrument_ids"))]
    instrument_ids: Vec<String>,
    grant: GrantRequest,
}

/// `instrument_ids`' schema: ids, 1 to `MAX_LINKED_INSTRUMENTS`, each once (`invalid_grant` otherwise).
#[cfg(feature = "openapi")]
fn instrument_ids(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": crate::openapi::id(generator),
        "minItems": 1,
        "maxItems": MAX_LINKED_INSTRUMENTS,
        "uniqueItems": true,
    })
}

/// `GET /links`' answer: every link of the user's, ended ones too.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct LinksView {
    links: Vec<LinkView>,
}

/// The user's routes' documentation (`crate::openapi`); the partner's are `super::partner_api::ROUTES`.
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "POST /links",
            summary: "link the partner identity a link code names to instruments of the caller's, with a grant; the partner is told",
            request: Some(schema::<LinkRequest>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<LinkView>))],
            codes: &[
                catalogue::LINK_CODE_INVALID,
                catalogue::LINK_CODE_EXPIRED,
                catalogue::LINK_CODE_NOT_YOURS,
                catalogue::LINK_CODE_USED,
                catalogue::INVALID_ID,
                catalogue::INVALID_GRANT,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::PARTNER_INACTIVE,
                catalogue::UNKNOWN_INSTRUMENT,
                catalogue::PARTNER_IDENTITY_LINKED,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /links",
            summary: "every link of the caller's, ended ones too: what each allows, its use, its end",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<LinksView>))],
            codes: &[],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /links/{id}",
            summary: "one of the caller's links",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<LinkView>))],
            codes: &[catalogue::UNKNOWN_LINK],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "DELETE /links/{id}",
            summary: "end one of the caller's links at once (reads and charges refused from then on); the partner is told",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<LinkView>))],
            codes: &[catalogue::UNKNOWN_LINK],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

fn unknown_link(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_LINK, format!("no link {id:?} of yours"))
}

impl LinksApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        Ok(LinksApi { links: Links::from_env(&config)?, partner: PartnerApi::from_env(&config)? })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        if route_key(&request).contains(" /partner/") {
            return self.partner.handle(&self.links, &request).await;
        }
        let caller = Caller::from_request(&request)?;
        let user = caller.subject.as_str();
        let now = crate::clock::now_epoch_seconds();
        match route_key(&request) {
            "POST /links" => self.create(&request, user).await,
            "GET /links" => {
                let kept = self.links.instruments.of_user(user).await?;
                let mut views = Vec::new();
                for link in self.links.links.of_user(user).await? {
                    views.push(self.links.user_view_with(&link, &kept, now).await?);
                }
                Ok(json_response(StatusCode::OK, &LinksView { links: views }))
            }
            "GET /links/{id}" => {
                let id = ids::check("id", path_parameter(&request, "id")?)?;
                let link = self.links.links.get(user, id).await?.ok_or_else(|| unknown_link(id))?;
                Ok(json_response(StatusCode::OK, &self.links.user_view(&link, now).await?))
            }
            "DELETE /links/{id}" => {
                let id = ids::check("id", path_parameter(&request, "id")?)?;
                let link = self.links.links.get(user, id).await?.ok_or_else(|| unknown_link(id))?;
                let ended = self.links.end(&link, "user", now).await?;
                Ok(json_response(StatusCode::OK, &self.links.user_view(&ended, now).await?))
            }
            other => Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the links function has no route {other:?}"))),
        }
    }

    async fn create(&self, request: &Request, user: &str) -> Result<Response<Body>, Problem> {
        let body = json_body::<LinkRequest>(request)?;
        let (code, payload, signature) = LinkCode::parse(&body.code)?;
        if body.instrument_ids.is_empty() || body.instrument_ids.len() > MAX_LINKED_INSTRUMENTS {
            return Err(Problem::new(
                catalogue::INVALID_GRANT,
                format!("a link holds 1 to {MAX_LINKED_INSTRUMENTS} instruments"),
            ));
        }
        let mut seen = HashSet::new();
        for id in &body.instrument_ids {
            ids::check("instrument_ids", id)?;
            if !seen.insert(id.as_str()) {
                return Err(Problem::new(catalogue::INVALID_GRANT, "an instrument is named twice"));
            }
        }
        let links = &self.links;
        links
            .idempotency
            .run_request(request, user, &[], |claim, now| async move {
                let id = format!("lk_{}", &claim.scope.derived_id("link")[..20]);
                if let Some(link) = links.links.get(user, &id).await? {
                    let same_instruments =
                        link.instruments.iter().map(|l| &l.instrument_id).eq(body.instrument_ids.iter());
                    if link.partner != code.partner() || link.partner_user != code.partner_user || !same_instruments {
                        // The key made another link once (its record has expired since).
                        return Err(crate::idempotency::key_reused());
                    }
                    let response = json_response(StatusCode::CREATED, &links.user_view(&link, now).await?);
                    links.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                    return Ok(response);
                }
                // The signature first: nothing in an unsigned code is believed.
                let (partner, key) = links.code_signer(&code).await?;
                code.judge(payload, signature, &key, user, now)?;
                if partner.status != MerchantStatus::Active {
                    return Err(Problem::new(
                        catalogue::PARTNER_INACTIVE,
                        format!("partner {} is suspended: it cannot be linked", partner.id),
                    ));
                }
                let grant = Grant::parse(body.grant, partner.currency)?;
                let mut instruments = Vec::new();
                let mut kept = Vec::new();
                for instrument_id in &body.instrument_ids {
                    kept.push(links.instruments.get(user, instrument_id).await?.ok_or_else(|| {
                        Problem::new(catalogue::UNKNOWN_INSTRUMENT, "instrument_ids names no instrument of yours")
                    })?);
                    instruments.push(Linked { instrument_id: instrument_id.clone(), token: new_token() });
                }
                let link = Link {
                    id,
                    user: user.to_owned(),
                    partner: partner.id.clone(),
                    partner_user: code.partner_user.clone(),
                    instruments,
                    grant,
                    state: LinkState::Active,
                    created_at: now,
                    ended: None,
                    window: Default::default(),
                };
                let response = json_response(StatusCode::CREATED, &links.user_view(&link, now).await?);
                let (message, notice) = links.notice(&link, "link.created")?;
                let mut writes = links.links.create_items(&link)?;
                writes.push(links.nonces.spend_item(&code.key_id, &format!("link/{}", code.nonce), code.expires_at)?);
                writes.push(notice);
                writes.extend(links.security_event(&link, "link.created", now)?);
                writes.push(links.personal_item(&link, &partner.name)?);
                // Each card's expiry reaches the partner when it comes (the outbox keeps it till then).
                for instrument in &kept {
                    writes.extend(links.expiry_item(&link, instrument)?);
                }
                writes.push(links.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?);
                match transact(&links.dynamodb, writes).await {
                    Ok(()) => {
                        if let Ok(outbox) = message.outbox(&links.notifications_queue, 0) {
                            links.outbox.send(&outbox).await;
                        }
                        Ok(response)
                    }
                    Err(e) if e.broke(NONCE_UNSPENT) => Err(CodeError::Used.into()),
                    Err(e) if e.broke(IDENTITY_FREE) => Err(Problem::new(
                        catalogue::PARTNER_IDENTITY_LINKED,
                        "this account on the partner is linked already (to you or to another user): it is unlinked first",
                    )),
                    Err(e) if e.broke(LINK_NEW) || e.broke(CLAIM_HELD) => {
                        Err(Problem::internal("the link was made meanwhile by another attempt; retry with the same key"))
                    }
                    Err(TransactError::ConditionFailed(rules)) => {
                        Err(Problem::internal(format!("the link was refused by {rules:?}")))
                    }
                    Err(TransactError::Store(e)) => Err(e.into()),
                }
            })
            .await
    }
}
