//! The partner's signed routes (served by `LinksFunction`; signed as merchants sign theirs, with
//! the partner's key: docs/api/merchants.md, "Signed calls"):
//!
//! - `GET /partner/users/{partner_user}/link`     the link of that user of the partner's: its grant
//!   and, if `read` is granted, its instruments (token and display data only)
//! - `DELETE /partner/users/{partner_user}/link`  ends it at once; the user sees it ended by the partner
//! - `POST /partner/charges`                      with an Idempotency-Key, `{"token", "amount"}`:
//!   debits the linked instrument the token names through the bank and pays the partner's
//!   merchant account, within the link's caps (exact under concurrency); 201 `completed` or
//!   `declined`, 202 `pending` (its check settles it: GET it)
//! - `POST /partner/charges/{id}/refunds`         with an Idempotency-Key, `{"amount"}`: pays part or all
//!   of a completed charge back to its instrument (a payout through the bank, held from the
//!   partner's merchant account first), never beyond what was charged, exactly under concurrency;
//!   201 `completed` or `declined` (the hold back in the account), 202 `pending`
//! - `POST /partner/charges/{id}/void`            with an Idempotency-Key: refunds all of it that is
//!   still refundable
//! - `GET /partner/charges/{id}`                  one of the partner's charges or refunds
//!
//! A token is its partner's only: another partner's token names nothing here.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::api::Links;
use super::store::CHARGE_INDEX_NEW;
use super::{Link, LinkState, partner_link_view};
use crate::Problem;
use crate::aws::MissingEnv;
use crate::clock::now_epoch_seconds;
use crate::crypto::SignatureError;
use crate::dynamo::{StoreError, Write};
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::StoredResponse;
use crate::idempotency::key_reused;
use crate::ids;
use crate::instrument::cash::service::{Allowance, Asker, CashService, Settled};
use crate::instrument::cash::store::CHARGE_REFUNDABLE;
use crate::instrument::cash::{Caps, CashState, ChargeOf, Direction, LimitRefusal, Movement, Window};
use crate::instrument::partner::{PARTNER_ACTIVE, Partner};
use crate::instrument::store::INSTRUMENT_PRESENT;
use crate::instrument::{Details, Expiry, year_month};
use crate::merchant::MerchantStatus;
use crate::money::MoneyInput;
use crate::party_keys::KeyedParty;
use crate::problem::catalogue;
use crate::signed;

pub struct PartnerApi {
    cash: CashService,
}

/// `POST /partner/charges`' body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct PartnerChargeRequest {
    /// The linked instrument's token, as the link gave it.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::id"))]
    token: String,
    /// In the partner's currency, within the link's caps.
    amount: MoneyInput,
}

/// `POST /partner/charges/{id}/refunds`' body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct PartnerRefundRequest {
    /// In the charge's currency, at most what is still refundable.
    amount: MoneyInput,
}

/// `DELETE /partner/users/{partner_user}/link`'s answer: the link as it ended.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct EndedLink {
    link_id: String,
    /// `unlinked`.
    state: &'static str,
}

/// The partner's routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use super::PartnerLinkView;
    use crate::instrument::cash::PartnerChargeView;
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "GET /partner/users/{partner_user}/link",
            summary: "the link of one of the partner's users: its grant and, if read is granted, its instruments' tokens and display data",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<PartnerLinkView>))],
            codes: &[catalogue::PARTNER_INACTIVE, catalogue::UNKNOWN_LINK],
            headers: &[Header::Signed],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "DELETE /partner/users/{partner_user}/link",
            summary: "end the link of one of the partner's users at once (a suspended partner may too); the user sees it ended by the partner",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<EndedLink>))],
            codes: &[catalogue::UNKNOWN_LINK],
            headers: &[Header::Signed],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /partner/charges",
            summary: "charge the linked instrument a token names, within the link's caps, into the partner's merchant account; 201 completed or declined, 202 pending (GET it)",
            request: Some(schema::<PartnerChargeRequest>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<PartnerChargeView>)), (202, Some(schema::<PartnerChargeView>))],
            codes: &[
                catalogue::INVALID_ID,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::CURRENCY_NOT_ACCEPTED,
                catalogue::PARTNER_INACTIVE,
                catalogue::UNKNOWN_TOKEN,
                catalogue::UNKNOWN_INSTRUMENT,
                catalogue::LINK_ENDED,
                catalogue::INSTRUMENT_REMOVED,
                catalogue::CARD_EXPIRED,
                catalogue::CHARGE_NOT_GRANTED,
                catalogue::LINK_CAP_EXCEEDED,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::IdempotencyKey, Header::Signed],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /partner/charges/{id}",
            summary: "one of the partner's charges or refunds",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<PartnerChargeView>))],
            codes: &[catalogue::PARTNER_INACTIVE, catalogue::UNKNOWN_CHARGE],
            headers: &[Header::Signed],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /partner/charges/{id}/refunds",
            summary: "pay part or all of a completed charge back to its instrument, held from the partner's merchant account; 201 completed or declined, 202 pending",
            request: Some(schema::<PartnerRefundRequest>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<PartnerChargeView>)), (202, Some(schema::<PartnerChargeView>))],
            codes: &[
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::CURRENCY_NOT_ACCEPTED,
                catalogue::PARTNER_INACTIVE,
                catalogue::UNKNOWN_CHARGE,
                catalogue::CHARGE_NOT_COMPLETED,
                catalogue::INSTRUMENT_REMOVED,
                catalogue::REFUND_EXCEEDS_CHARGE,
                catalogue::MERCHANT_INSUFFICIENT_FUNDS,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::IdempotencyKey, Header::Signed],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /partner/charges/{id}/void",
            summary: "pay back all of a completed charge that is still refundable, as a refund; 201 completed or declined, 202 pending",
            request: None,
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<PartnerChargeView>)), (202, Some(schema::<PartnerChargeView>))],
            codes: &[
                catalogue::PARTNER_INACTIVE,
                catalogue::UNKNOWN_CHARGE,
                catalogue::CHARGE_NOT_COMPLETED,
                catalogue::INSTRUMENT_REMOVED,
                catalogue::REFUND_EXCEEDS_CHARGE,
                catalogue::MERCHANT_INSUFFICIENT_FUNDS,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::IdempotencyKey, Header::Signed],
            form: None,
            pages: &[],
        },
    ]
};

fn unknown_user(partner_user: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_LINK, format!("no user {partner_user:?} of yours is linked"))
}

fn inactive(partner: &Partner) -> Problem {
    Problem::new(catalogue::PARTNER_INACTIVE, format!("partner {} is suspended: it may only end its links", partner.id))
}

fn unknown_token() -> Problem {
    Problem::new(catalogue::UNKNOWN_TOKEN, "no instrument of a user linked to you has this token")
}

fn link_ended(link: &Link) -> Problem {
    let by = link.ended.as_ref().map_or("", |(_, by)| by.as_str());
    Problem::new(catalogue::LINK_ENDED, format!("the link was ended by the {by}: nothing may be read or charged"))
}

/// A refund's place: within what its charge may still pay back (the charge's `refunded`, written
/// conditionally in the refund's transaction), and its index item (its partner finds it by id).
struct RefundAllowance<'a> {
    links: &'a Links,
    cash: &'a CashService,
    charge: &'a Movement,
    refund: &'a Movement,
}

impl Allowance for RefundAllowance<'_> {
    async fn window(&self) -> Result<(Window, Caps), Problem> {
        // No window: a refund is bounded by its charge alone.
        let caps = Caps { per_movement: self.charge.amount.amount(), per_window: Decimal::MAX, count: usize::MAX };
        Ok((Window::default(), caps))
    }

    fn writes(&self, _read: &Window, _admitted: &Window) -> Result<Vec<Write>, StoreError> {
        let partner = self.charge.charge.as_ref().map_or("", |c| c.partner.as_str());
        Ok(vec![
            self.cash.movements.refund_item(self.charge, self.refund.amount)?,
            self.links.links.charge_index_item(partner, &self.refund.id, &self.refund.user)?,
        ])
    }

    fn refusal(&self, _refusal: LimitRefusal) -> Problem {
        beyond_charge(self.charge)
    }

    fn broke(&self, rules: &[&'static str]) -> Option<Problem> {
        match () {
            _ if rules.contains(&CHARGE_REFUNDABLE) => Some(beyond_charge(self.charge)),
            _ if rules.contains(&INSTRUMENT_PRESENT) => Some(Problem::new(
                catalogue::INSTRUMENT_REMOVED,
                "the user removed the charged instrument meanwhile: nothing was paid back",
            )),
            _ if rules.contains(&CHARGE_INDEX_NEW) => Some(key_reused()),
            _ => None,
        }
    }
}

fn beyond_charge(charge: &Movement) -> Problem {
    Problem::new(
        catalogue::REFUND_EXCEEDS_CHARGE,
        format!(
            "charge {} of {} cannot pay back that much: refunds may not exceed what was charged",
            charge.id, charge.amount
        ),
    )
}

/// A charge's place in its link's window: the link's caps, on the link's own item (only while it
/// is active), the charge's index item (its partner finds it by id), and the partner still active.
struct LinkAllowance<'a> {
    links: &'a Links,
    user: &'a str,
    link: &'a str,
    charge: &'a Movement,
}

impl Allowance for LinkAllowance<'_> {
    async fn window(&self) -> Result<(Window, Caps), Problem> {
        let link = self.links.links.get(self.user, self.link).await?.ok_or_else(unknown_token)?;
        if link.state != LinkState::Active {
            return Err(link_ended(&link));
        }
        let caps = link.grant.caps().ok_or_else(|| {
            Problem::new(catalogue::CHARGE_NOT_GRANTED, "the user did not allow you to charge this link")
        })?;
        Ok((link.window, caps))
    }

    fn writes(&self, read: &Window, admitted: &Window) -> Result<Vec<Write>, StoreError> {
        let charge = self.charge.charge.as_ref().ok_or_else(|| StoreError::new("a charge names its partner"))?;
        Ok(vec![
            self.links.links.window_item(self.user, self.link, read, admitted)?,
            self.links.links.charge_index_item(&charge.partner, &self.charge.id, self.user)?,
            self.links.partners.active_check(&charge.partner)?,
        ])
    }

    fn broke(&self, rules: &[&'static str]) -> Option<Problem> {
        match () {
            _ if rules.contains(&PARTNER_ACTIVE) => Some(Problem::new(
                catalogue::PARTNER_INACTIVE,
                "the partner was suspended while the charge was made: nothing was charged",
            )),
            // Another user's charge has this id: the key named it once.
            _ if rules.contains(&CHARGE_INDEX_NEW) => Some(key_reused()),
            _ => None,
        }
    }

    fn refusal(&self, refusal: LimitRefusal) -> Problem {
        let (detail, limit, used) = match refusal {
            LimitRefusal::Movement { limit } => (format!("one charge is at most {limit}"), "per_charge", None),
            LimitRefusal::Window { limit, used } => (
                format!("charges add up to at most {limit} per rolling 24 hours; {used} was charged"),
                "per_day",
                Some(used),
            ),
            LimitRefusal::Count { limit } => (format!("at most {limit} charges per rolling 24 hours"), "count", None),
        };
        let problem = Problem::new(catalogue::LINK_CAP_EXCEEDED, detail).with("limit", limit);
        match used {
            Some(used) => problem.with("used", used.to_string()),
            None => problem,
        }
    }
}

impl PartnerApi {
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        Ok(PartnerApi { cash: CashService::from_env(config)? })
    }

    pub async fn handle(&self, links: &Links, request: &Request) -> Result<Response<Body>, Problem> {
        let now = now_epoch_seconds();
        let partner = signer(links, request, now).await?;
        // A suspended partner may still end its links, nothing else.
        if partner.status != MerchantStatus::Active && route_key(request) != "DELETE /partner/users/{partner_user}/link"
        {
            return Err(inactive(&partner));
        }
        match route_key(request) {
            "GET /partner/users/{partner_user}/link" => {
                let link = self.link_of(links, request, &partner).await?;
                let mut instruments = Vec::new();
                for linked in &link.instruments {
                    instruments.push(links.instruments.get(&link.user, &linked.instrument_id).await?);
                }
                Ok(json_response(StatusCode::OK, &partner_link_view(&link, &instruments, now)))
            }
            "DELETE /partner/users/{partner_user}/link" => {
                let link = self.link_of(links, request, &partner).await?;
                let ended = links.end(&link, "partner", now).await?;
                Ok(json_response(StatusCode::OK, &EndedLink { link_id: ended.id, state: ended.state.as_str() }))
            }
            "POST /partner/charges" => self.charge(links, request, &partner).await,
            "POST /partner/charges/{id}/refunds" => {
                let PartnerRefundRequest { amount } = json_body(request)?;
                self.refund(links, request, &partner, Some(amount.validate()?)).await
            }
            "POST /partner/charges/{id}/void" => self.refund(links, request, &partner, None).await,
            "GET /partner/charges/{id}" => {
                let id = ids::check("id", path_parameter(request, "id")?)?;
                let unknown = || Problem::new(catalogue::UNKNOWN_CHARGE, format!("no charge {id:?} of yours"));
                let user = links.links.charge_user(&partner.id, id).await?.ok_or_else(unknown)?;
                let charge = self.cash.movements.get(&user, id).await?.ok_or_else(unknown)?;
                Ok(json_response(StatusCode::OK, &charge.partner_view()))
            }
            other => Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the links function has no route {other:?}"))),
        }
    }

    /// The active link of the partner's user the path names.
    async fn link_of(&self, links: &Links, request: &Request, partner: &Partner) -> Result<Link, Problem> {
        let partner_user = ids::check("partner_user", path_parameter(request, "partner_user")?)?;
        links.links.of_identity(&partner.id, partner_user).await?.ok_or_else(|| unknown_user(partner_user))
    }

    async fn charge(&self, links: &Links, request: &Request, partner: &Partner) -> Result<Response<Body>, Problem> {
        let body = json_body::<PartnerChargeRequest>(request)?;
        let token = ids::check("token", &body.token)?;
        let amount = body.amount.validate()?;
        let caller = format!("partner/{}", partner.id);
        links
            .idempotency
            .run_request(request, &caller, &[], |claim, now| async move {
                let of = links.links.token(&partner.id, token).await?.ok_or_else(unknown_token)?;
                let id = format!("ch_{}", &claim.scope.derived_id("charge")[..20]);
                // The key named a charge of another user's once (its record has expired since).
                if links.links.charge_user(&partner.id, &id).await?.is_some_and(|user| user != of.user) {
                    return Err(key_reused());
                }
                let link = links.links.get(&of.user, &of.link).await?.ok_or_else(unknown_token)?;
                let recorded = match self.cash.movements.get(&of.user, &id).await? {
                    Some(recorded) => recorded,
                    None => {
                        if link.state != LinkState::Active {
                            return Err(link_ended(&link));
                        }
                        if amount.currency() != partner.currency {
                            return Err(Problem::new(
                                catalogue::CURRENCY_NOT_ACCEPTED,
                                format!("you charge in {}, not {}", partner.currency, amount.currency()),
                            ));
                        }
                        let kept = links
                            .instruments
                            .stored(&of.user, &of.instrument)
                            .await?
                            .filter(|s| s.removed_at.is_none());
                        let kept = kept.ok_or_else(|| {
                            Problem::new(catalogue::INSTRUMENT_REMOVED, "the user removed this instrument")
                        })?;
                        let instrument = kept.instrument;
                        if let Details::Card { expiry, .. } = &instrument.details {
                            Expiry::check(expiry.month, expiry.year, year_month(now))?;
                        }
                        let wanted = Movement {
                            charge: Some(ChargeOf {
                                partner: partner.id.clone(),
                                link: of.link.clone(),
                                merchant: partner.merchant_id.clone(),
                                token: token.to_owned(),
                                number_token: kept.number_token,
                            }),
                            ..Movement::pending(id, &of.user, Direction::Charge, &instrument, amount, now)
                        };
                        let allowance = LinkAllowance { links, user: &of.user, link: &of.link, charge: &wanted };
                        self.cash.start(&wanted, &allowance, now).await?
                    }
                };
                if recorded.instrument_id != of.instrument || recorded.amount != amount {
                    return Err(key_reused());
                }
                // Never sent to the bank (an earlier request died first) and its consent ended since:
                // it is not sent now.
                // (Read again only for such a charge: the link may have ended since it was read.)
                let unsent_after_end = recorded.state == CashState::Pending
                    && !recorded.asked
                    && (link.state != LinkState::Active
                        || links.links.get(&of.user, &of.link).await?.is_some_and(|l| l.state != LinkState::Active));
                let settled = match recorded.state {
                    CashState::Pending if unsent_after_end => Some(
                        self.cash
                            .decline_unsent(&recorded, "the link ended before the charge reached the bank", now)
                            .await,
                    ),
                    CashState::Pending => Some(self.cash.settle(&recorded, Asker::Request, now).await),
                    _ => None,
                };
                let charge = match settled {
                    None | Some(Ok(Settled::Unknown(_))) => recorded,
                    Some(Ok(Settled::Decided(charge))) => *charge,
                    Some(Err(e)) => {
                        tracing::error!(charge = %recorded.id, error = %e, "the charge stays owed to its check");
                        recorded
                    }
                };
                let status =
                    if charge.state == CashState::Pending { StatusCode::ACCEPTED } else { StatusCode::CREATED };
                let response = json_response(status, &charge.partner_view());
                links.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                Ok(response)
            })
            .await
    }
}

impl PartnerApi {
    /// Pays `amount` of the partner's completed charge the path names back to its instrument (`None`:
    /// all that is still refundable, a void).
    async fn refund(
        &self,
        links: &Links,
        request: &Request,
        partner: &Partner,
        amount: Option<crate::money::Money>,
    ) -> Result<Response<Body>, Problem> {
        let charge_id = ids::check("id", path_parameter(request, "id")?)?;
        let unknown = || Problem::new(catalogue::UNKNOWN_CHARGE, format!("no charge {charge_id:?} of yours"));
        let caller = format!("partner/{}", partner.id);
        links
            .idempotency
            .run_request(request, &caller, &[], |claim, now| async move {
                let user = links.links.charge_user(&partner.id, charge_id).await?.ok_or_else(unknown)?;
                let charge =
                    self.cash.movements.get(&user, charge_id).await?.filter(|c| c.direction == Direction::Charge);
                let charge = charge.ok_or_else(unknown)?;
                // Derived from the key and the charge: one key names one refund of one charge.
                let id = format!("rf_{}", &claim.scope.derived_id(&format!("refund/{charge_id}"))[..20]);
                if links.links.charge_user(&partner.id, &id).await?.is_some_and(|indexed| indexed != user) {
                    return Err(key_reused());
                }
                let recorded = match self.cash.movements.get(&user, &id).await? {
                    Some(recorded) => recorded,
                    None => {
                        if charge.state != CashState::Completed {
                            return Err(Problem::new(
                                catalogue::CHARGE_NOT_COMPLETED,
                                format!(
                                    "charge {} is {}: only a completed charge is refunded",
                                    charge.id,
                                    charge.state.as_str()
                                ),
                            ));
                        }
                        let left = charge.amount.amount() - charge.refunded;
                        let amount = match amount {
                            Some(amount) => amount,
                            None => crate::money::Money::new(left, charge.amount.currency())
                                .map_err(|_| beyond_charge(&charge))?,
                        };
                        if amount.currency() != charge.amount.currency() {
                            return Err(Problem::new(
                                catalogue::CURRENCY_NOT_ACCEPTED,
                                format!("the charge is in {}, not {}", charge.amount.currency(), amount.currency()),
                            ));
                        }
                        let kept = links.instruments.stored(&user, &charge.instrument_id).await?;
                        let kept = kept.filter(|s| s.removed_at.is_none()).ok_or_else(|| {
                            Problem::new(
                                catalogue::INSTRUMENT_REMOVED,
                                "the user removed the charged instrument: it cannot be paid back through the bank",
                            )
                        })?;
                        // Paid back to the number charged only, never to one the card was replaced by.
                        let charged_number = charge.charge.as_ref().map(|c| c.number_token.as_str());
                        if charged_number != Some(kept.number_token.as_str()) {
                            return Err(Problem::new(
                                catalogue::INSTRUMENT_REMOVED,
                                "the charged card was replaced since: the bank cannot pay the charged number back from here",
                            ));
                        }
                        let instrument = kept.instrument;
                        let wanted = Movement {
                            charge: charge.charge.clone(),
                            refund_of: Some(charge.id.clone()),
                            ..Movement::pending(id, &user, Direction::Refund, &instrument, amount, now)
                        };
                        let allowance = RefundAllowance { links, cash: &self.cash, charge: &charge, refund: &wanted };
                        self.cash.start(&wanted, &allowance, now).await.map_err(|problem| match problem.code {
                            // The hold comes from the partner's account, not a wallet.
                            "insufficient_funds" => Problem::new(
                                catalogue::MERCHANT_INSUFFICIENT_FUNDS,
                                "your merchant account does not hold the refund",
                            ),
                            _ => problem,
                        })?
                    }
                };
                if recorded.refund_of.as_deref() != Some(charge_id) || amount.is_some_and(|a| a != recorded.amount) {
                    return Err(key_reused());
                }
                let refund = match recorded.state {
                    CashState::Pending => match self.cash.settle(&recorded, Asker::Request, now).await {
                        Ok(Settled::Decided(refund)) => *refund,
                        Ok(Settled::Unknown(_)) => recorded,
                        Err(e) => {
                            tracing::error!(refund = %recorded.id, error = %e, "the refund stays owed to its check");
                            recorded
                        }
                    },
                    _ => recorded,
                };
                let status =
                    if refund.state == CashState::Pending { StatusCode::ACCEPTED } else { StatusCode::CREATED };
                let response = json_response(status, &refund.partner_view());
                links.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                Ok(response)
            })
            .await
    }
}

/// The partner who signed `request` (signature, time window, single-use nonce), whatever its status.
async fn signer(links: &Links, request: &Request, now: i64) -> Result<Partner, Problem> {
    let signature = signed::signature(request)?;
    let partner_id = signature.key_id.split_once('.').map(|(p, _)| p).ok_or(SignatureError::UnknownKey)?;
    let partner = links.partners.get(partner_id).await?.ok_or(SignatureError::UnknownKey)?;
    let keys = links
        .ring
        .named_keys(&signature.key_id, &partner.kms_owner(), &partner.stored_key(), now)
        .await?
        .ok_or(SignatureError::UnknownKey)?;
    signed::check(request, &signature, &keys.signing, &links.nonces, now).await?;
    Ok(partner)
}
