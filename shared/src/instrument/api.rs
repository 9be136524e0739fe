//! The instruments function's routes (template.yaml `InstrumentsFunction`), for signed-in users:
//!
//! - `POST /instruments`         with an Idempotency-Key: a card `{"kind": "card", "number",
//!   "expiry_month", "expiry_year", "holder"}` or a bank account `{"kind": "bank_account", "iban",
//!   "holder"}`; 201 the instrument (never its number). The request's idempotency fingerprint is
//!   keyed, and the body is judged before the key's run, so no record holds the number or a
//!   refusal quoting it.
//! - `GET /instruments`          the caller's instruments
//! - `GET /instruments/{id}`     one of them
//! - `PUT /instruments/{id}`     with an Idempotency-Key, a body as the add's of the same kind: replaces
//!   its number (a renewed or reissued card) under the same id, so every partner it is linked to
//!   keeps its token and is told (`instrument.updated`)
//! - `DELETE /instruments/{id}`  removes it: its sealed number and key are dropped for good

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::store::{INSTRUMENT_NEW, INSTRUMENT_PRESENT, InstrumentStore, MAX_INSTRUMENTS, NUMBER_NEW, ROOM_LEFT};
use super::{Instrument, InstrumentView, NewInstrument, number_binding, number_key_owner};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::crypto::{TokenPurpose, keyed_token, seal};
use crate::dynamo::{StoreError, Write, transact};
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::StoredResponse;
use crate::idempotency::store::{CLAIM_HELD, IdempotencyStore};
use crate::idempotency::{in_flight, key_reused};
use crate::ids;
use crate::instrument::link::store::LinkStore;
use crate::instrument::link::{LinkState, expiry_notice, update_notice};
use crate::keys::{KeyService, TokenSecret};
use crate::outbox::Outbox;
use crate::problem::catalogue;
use crate::security::{SecurityEvent, SecurityEvents};

pub struct InstrumentsApi {
    dynamodb: aws_sdk_dynamodb::Client,
    instruments: InstrumentStore,
    idempotency: IdempotencyStore,
    /// Makes each instrument's data key under `InstrumentsKey` (never unwraps one here).
    numbers: KeyService,
    security: SecurityEvents,
    /// The instruments' own secret (under `InstrumentsKey`, no other function's): keys request
    /// fingerprints and number tokens.
    token_secret: TokenSecret,
    /// The links an instrument is in, whose partners a replacement is told to.
    links: LinkStore,
    outbox: Outbox,
    notifications_queue: String,
}

/// `GET /instruments`'s answer: the caller's instruments not removed.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct InstrumentList {
    instruments: Vec<InstrumentView>,
}

/// `DELETE /instruments/{id}`'s answer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct RemovedInstrument {
    id: String,
    removed_at: i64,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use super::InstrumentRequest;
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "POST /instruments",
            summary: "add a card or a bank account: its number is sealed, never shown again",
            request: Some(schema::<InstrumentRequest>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<InstrumentView>))],
            codes: &[
                catalogue::SECURITY_CODE_NOT_ACCEPTED,
                catalogue::INVALID_CARD_NUMBER,
                catalogue::CARD_BRAND_NOT_ACCEPTED,
                catalogue::INVALID_EXPIRY,
                catalogue::CARD_EXPIRED,
                catalogue::INVALID_IBAN,
                catalogue::INVALID_HOLDER,
                catalogue::INSTRUMENT_EXISTS,
                catalogue::TOO_MANY_INSTRUMENTS,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /instruments",
            summary: "the caller's instruments",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<InstrumentList>))],
            codes: &[],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /instruments/{id}",
            summary: "one of the caller's instruments",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<InstrumentView>))],
            codes: &[catalogue::UNKNOWN_INSTRUMENT],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "PUT /instruments/{id}",
            summary: "replace an instrument's number (a renewed or reissued card) under the same id: its partners keep their token and are told",
            request: Some(schema::<InstrumentRequest>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<InstrumentView>))],
            codes: &[
                catalogue::SECURITY_CODE_NOT_ACCEPTED,
                catalogue::INVALID_CARD_NUMBER,
                catalogue::CARD_BRAND_NOT_ACCEPTED,
                catalogue::INVALID_EXPIRY,
                catalogue::CARD_EXPIRED,
                catalogue::INVALID_IBAN,
                catalogue::INVALID_HOLDER,
                catalogue::UNKNOWN_INSTRUMENT,
                catalogue::REPLACEMENT_KIND_MISMATCH,
                catalogue::INSTRUMENT_IN_USE,
                catalogue::INSTRUMENT_EXISTS,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "DELETE /instruments/{id}",
            summary: "remove an instrument: its sealed number is dropped for good",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<RemovedInstrument>))],
            codes: &[catalogue::UNKNOWN_INSTRUMENT, catalogue::INSTRUMENT_IN_USE],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

/// The refusal never quotes the id: a card number typed as one must not reach a log.
fn unknown_instrument() -> Problem {
    Problem::new(catalogue::UNKNOWN_INSTRUMENT, "no such instrument of yours")
}

impl InstrumentsApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let numbers = KeyService::new(aws_sdk_kms::Client::new(&config), aws::env("INSTRUMENTS_KEY_ID")?);
        Ok(InstrumentsApi {
            instruments: InstrumentStore::new(dynamodb.clone(), aws::env("INSTRUMENTS_TABLE")?),
            security: SecurityEvents::from_env(&dynamodb)?,
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            token_secret: TokenSecret::instruments(
                dynamodb.clone(),
                aws::env("SERVER_SECRETS_TABLE")?,
                numbers.clone(),
            ),
            numbers,
            links: LinkStore::new(dynamodb.clone(), aws::env("LINKS_TABLE")?),
            outbox: Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(&config), aws::env("OUTBOX_TABLE")?),
            notifications_queue: aws::env("NOTIFICATIONS_QUEUE_URL")?,
            dynamodb,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        let user = caller.subject.as_str();
        match route_key(&request) {
            "POST /instruments" => self.add(&request, user).await,
            "PUT /instruments/{id}" => self.replace(&request, user).await,
            "GET /instruments" => {
                let kept = self.instruments.of_user(user).await?;
                let instruments = kept.iter().filter(|s| s.removed_at.is_none()).map(|s| s.instrument.view()).collect();
                Ok(json_response(StatusCode::OK, &InstrumentList { instruments }))
            }
            "GET /instruments/{id}" => {
                let id = ids::check("id", path_parameter(&request, "id")?)?;
                let instrument = self.instruments.get(user, id).await?.ok_or_else(unknown_instrument)?;
                Ok(json_response(StatusCode::OK, &instrument.view()))
            }
            "DELETE /instruments/{id}" => {
                let id = ids::check("id", path_parameter(&request, "id")?)?;
                let stored = self.instruments.stored(user, id).await?.filter(|s| s.removed_at.is_none());
                let stored = stored.ok_or_else(unknown_instrument)?;
                let now = now_epoch_seconds();
                let mut writes = vec![self.instruments.remove_item(user, id, now)?];
                writes.extend(self.security_event("instrument.removed", "", &stored.instrument, now)?);
                writes.extend(self.instruments.released_items(user, id, &stored.number_token)?);
                match transact(&self.dynamodb, writes).await {
                    Ok(()) => {
                        Ok(json_response(StatusCode::OK, &RemovedInstrument { id: id.to_owned(), removed_at: now }))
                    }
                    Err(e) if e.broke(INSTRUMENT_PRESENT) => match self.instruments.stored(user, id).await? {
                        Some(now) if now.removed_at.is_none() && now.in_use > 0 => Err(Problem::new(
                            catalogue::INSTRUMENT_IN_USE,
                            "a cash movement with this instrument is still owed its outcome by the bank; remove it once \
                             that movement is completed or declined",
                        )),
                        _ => Err(unknown_instrument()),
                    },
                    Err(e) => Err(Problem::internal(e)),
                }
            }
            other => {
                Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the instruments function has no route {other:?}")))
            }
        }
    }

    /// The owner's security event of `kind` about `instrument` (its brand and last four only), under
    /// `<kind>/<instrument id><suffix>` (a replacement's suffix keeps each of a card's replacements).
    fn security_event(
        &self,
        kind: &'static str,
        suffix: &str,
        instrument: &Instrument,
        at: i64,
    ) -> Result<Vec<Write>, StoreError> {
        let mut detail = json!(instrument.view());
        if let Some(view) = detail.as_object_mut() {
            view.retain(|field, _| ["id", "kind", "brand", "country", "last4"].contains(&field.as_str()));
        }
        let event = SecurityEvent {
            user: instrument.user.clone(),
            id: format!("{kind}/{}{suffix}", instrument.id),
            kind,
            at,
            detail,
        };
        self.security.items(&event)
    }

    async fn replace(&self, request: &Request, user: &str) -> Result<Response<Body>, Problem> {
        let id = ids::check("id", path_parameter(request, "id")?)?;
        // Judged before the key's run, as an add is: no refusal quoting the number is recorded.
        let body = json_body::<Value>(request)?;
        let new = NewInstrument::parse(&body, now_epoch_seconds())?;
        let secret = self.token_secret.get().await?;
        let number_token = keyed_token(secret, TokenPurpose::InstrumentNumber, &[user, new.number.expose()]);
        self.idempotency
            .run_request_keyed(request, user, secret, |claim, now| async move {
                let kept = self.instruments.stored(user, id).await?.filter(|s| s.removed_at.is_none());
                let kept = kept.ok_or_else(unknown_instrument)?;
                if std::mem::discriminant(&kept.instrument.details) != std::mem::discriminant(&new.details) {
                    return Err(Problem::new(
                        catalogue::REPLACEMENT_KIND_MISMATCH,
                        "a card is replaced by a card, a bank account by a bank account",
                    ));
                }
                let instrument = Instrument {
                    id: id.to_owned(),
                    user: user.to_owned(),
                    details: new.details,
                    last4: new.last4,
                    holder: new.holder,
                    created_at: kept.instrument.created_at,
                };
                let key = self.numbers.generate(&number_key_owner(id)).await?;
                let sealed = seal(&key.key, new.number.expose().as_bytes(), number_binding(user, id).as_bytes());
                let why = format!("replaced/{}", &claim.scope.derived_id("replace")[..12]);
                let response = json_response(StatusCode::OK, &instrument.view());
                let mut items = vec![
                    self.instruments.replace_item(&instrument, &kept.number_token, &number_token, &sealed, key.ciphertext)?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                ];
                items.extend(self.security_event("instrument.replaced", &format!("/{}", &why[9..]), &instrument, now)?);
                if kept.number_token != number_token {
                    items.extend(self.instruments.swapped_items(user, id, &kept.number_token, &number_token)?);
                }
                // Every partner it is linked to is told under the same token; a new expiry is told when it comes.
                let mut notices = Vec::new();
                for link in self.links.of_user(user).await?.iter().filter(|l| l.state == LinkState::Active) {
                    if link.instrument_of_id(id) {
                        let notice = update_notice(link, id, &why).outbox(&self.notifications_queue, 0).map_err(Problem::internal)?;
                        items.push(self.outbox.put_item(&notice, now)?);
                        notices.push(notice);
                        let expiry = expiry_notice(link, &instrument, &why);
                        if let Some((expiry, due_at)) = expiry.filter(|_| instrument.details != kept.instrument.details) {
                            let expiry = expiry.outbox(&self.notifications_queue, 0).map_err(Problem::internal)?;
                            items.push(self.outbox.put_item_due(&expiry, due_at)?);
                        }
                    }
                }
                match transact(&self.dynamodb, items).await {
                    Ok(()) => {
                        for notice in &notices {
                            self.outbox.send(notice).await;
                        }
                        Ok(response)
                    }
                    Err(e) if e.broke(CLAIM_HELD) => Err(in_flight()),
                    Err(e) if e.broke(INSTRUMENT_PRESENT) => Err(Problem::new(
                        catalogue::INSTRUMENT_IN_USE,
                        "a cash movement with this instrument is still owed its outcome by the bank (or it was removed, or \
                         replaced meanwhile); replace it once that movement is completed or declined",
                    )),
                    Err(e) if e.broke(NUMBER_NEW) => {
                        let same = self.instruments.with_number(user, &number_token).await?.unwrap_or_default();
                        Err(Problem::new(catalogue::INSTRUMENT_EXISTS, format!("this number is already instrument {same}"))
                            .with("instrument_id", same))
                    }
                    Err(e) => Err(Problem::internal(e)),
                }
            })
            .await
    }

    async fn add(&self, request: &Request, user: &str) -> Result<Response<Body>, Problem> {
        // Judged before the key's run: a refusal is never recorded, and none quotes the number.
        let body = json_body::<Value>(request)?;
        let added = NewInstrument::parse(&body, now_epoch_seconds())?;
        let secret = self.token_secret.get().await?;
        let number_token = keyed_token(secret, TokenPurpose::InstrumentNumber, &[user, added.number.expose()]);
        self.idempotency
            .run_request_keyed(request, user, secret, |claim, now| async move {
                let id = format!("in_{}", &claim.scope.derived_id("instrument")[..20]);
                let instrument = Instrument {
                    id: id.clone(),
                    user: user.to_owned(),
                    details: added.details,
                    last4: added.last4,
                    holder: added.holder,
                    created_at: now,
                };
                // Its own data key, bound to it by KMS's encryption context; the number bound to
                // its owner and id by the seal's associated data.
                let key = self.numbers.generate(&number_key_owner(&id)).await?;
                let sealed = seal(&key.key, added.number.expose().as_bytes(), number_binding(user, &id).as_bytes());
                let response = json_response(StatusCode::CREATED, &instrument.view());
                let mut items = vec![
                    self.instruments.create_item(&instrument, &number_token, &sealed, key.ciphertext)?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                ];
                // A card added to an account is something its owner must see (a stolen token could
                // add one).
                items.extend(self.security_event("instrument.added", "", &instrument, now)?);
                // The number kept once and the count kept, exactly, whatever runs at once.
                items.extend(self.instruments.kept_items(user, &id, &number_token)?);
                match transact(&self.dynamodb, items).await {
                    Ok(()) => Ok(response),
                    Err(e) if e.broke(CLAIM_HELD) => Err(in_flight()),
                    // This key's earlier add (its record expired since), if it was for this number.
                    Err(e) if e.broke(INSTRUMENT_NEW) => match self.instruments.stored(user, &id).await? {
                        Some(done) if done.number_token == number_token => {
                            let response = json_response(StatusCode::CREATED, &done.instrument.view());
                            self.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                            Ok(response)
                        }
                        _ => Err(key_reused()),
                    },
                    Err(e) if e.broke(NUMBER_NEW) => {
                        let same = self.instruments.with_number(user, &number_token).await?.unwrap_or_default();
                        Err(Problem::new(
                            catalogue::INSTRUMENT_EXISTS,
                            format!("this number is already instrument {same}"),
                        )
                        .with("instrument_id", same))
                    }
                    Err(e) if e.broke(ROOM_LEFT) => Err(Problem::new(
                        catalogue::TOO_MANY_INSTRUMENTS,
                        format!("you keep {MAX_INSTRUMENTS} instruments already: remove one first"),
                    )),
                    Err(e) => Err(Problem::internal(e)),
                }
            })
            .await
    }
}
