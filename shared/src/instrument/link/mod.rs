//! Identity linking (capability 9): a user links their platform-B identity to instruments they
//! keep here, so that B never has them typed again. B issues a link code for its user, signed with
//! its key; the user brings it to us with the instruments they choose and what B may do with them
//! (a grant, RFC 9396's shape: `read`, and `charge` within a per-charge cap and a cap per rolling 24
//! hours); B then receives, by signed webhook, a token per instrument and display data only.
//!
//! - this module: the rules, pure: the link code (its signature, lifetime, owner), the grant, the
//!   link and what the user and the partner see of it.
//! - `store`: the links (`LinksTable`): each link, the B identity's marker (one B identity links to
//!   one user) and each token's item (a token names its link and instrument, for its partner only).
//! - `api`: the user's routes; `partner_api`: the partner's signed routes (reads, charges, unlink);
//!   `notices`: the webhooks to the partner, sent by the notifier.

pub mod api;
pub mod notices;
pub mod partner_api;
pub mod store;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cash::{Caps, Window, movement_limit, window_limit};
use super::{Details, DetailsView, Instrument};
use crate::crypto::{Key, sign, verify};
use crate::money::{Currency, Money, MoneyInput};
use crate::problem::{Code, catalogue};
use crate::queues::NotificationMessage;
use crate::{Problem, ids};

/// The longest a link code lives: it is a bearer of the user's B identity until it is used.
pub const MAX_CODE_SECONDS: i64 = 300;

/// How far ahead of our clock a code may say it was issued.
pub const CLOCK_SKEW_SECONDS: i64 = 30;

/// The most instruments one link holds.
pub const MAX_LINKED_INSTRUMENTS: usize = 10;

/// The most charges a link allows per rolling 24 hours, whatever its caps.
pub const MAX_CHARGES_PER_DAY: usize = 50;

/// The domain line of what a code's signature covers: no signed request starts so.
const CODE_DOMAIN: &str = "superpay-link-code/v1";

/// What a link code says, as B signed it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkCode {
    /// B's key that signed it (`<partner id>.k<n>`).
    pub key_id: String,
    /// The user's id on B.
    pub partner_user: String,
    /// Our user (the subject of their token here) B issued it for.
    pub user: String,
    /// Single use: spent with the link it makes.
    pub nonce: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Why a link code is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeError {
    /// Not `<payload>.<signature>`, not the payload's shape, or an id that is not one.
    Malformed(String),
    /// Not signed by the key it names (or that key is not B's now).
    Forged,
    /// Past its expiry, or issued for longer than a code may live, or from the future.
    Expired,
    /// Issued for another of our users than the caller.
    NotYours,
    /// Used already.
    Used,
}

impl CodeError {
    pub fn code(&self) -> &'static Code {
        match self {
            CodeError::Malformed(_) | CodeError::Forged => catalogue::LINK_CODE_INVALID,
            CodeError::Expired => catalogue::LINK_CODE_EXPIRED,
            CodeError::NotYours => catalogue::LINK_CODE_NOT_YOURS,
            CodeError::Used => catalogue::LINK_CODE_USED,
        }
    }
}

impl From<CodeError> for Problem {
    fn from(e: CodeError) -> Self {
        let detail = match &e {
            CodeError::Malformed(why) => format!("the link code is not one: {why}"),
            CodeError::Forged => "the link code is not signed by the partner it names".to_owned(),
            CodeError::Expired => {
                format!(
                    "the link code expired (a code lives at most {MAX_CODE_SECONDS} s): ask the partner for a new one"
                )
            }
            CodeError::NotYours => "the link code was issued for another user".to_owned(),
            CodeError::Used => "the link code was used already: ask the partner for a new one".to_owned(),
        };
        Problem::new(e.code(), detail)
    }
}

/// What B's signature covers: the domain line, then the payload as sent.
fn signed_text(payload: &str) -> String {
    format!("{CODE_DOMAIN}\n{payload}")
}

/// A code as B makes one (and as the partner simulator and the tests do): the payload, base64url,
/// a dot, and the HMAC-SHA256 of it under B's link-code key, hex.
pub fn issue(code: &Value, key: &Key) -> String {
    let payload = BASE64URL.encode(code.to_string());
    let signature = sign(key, &signed_text(&payload));
    format!("{payload}.{signature}")
}

impl LinkCode {
    /// The code's parts, unverified (the key id names whose key checks it), and its signature.
    pub fn parse(text: &str) -> Result<(LinkCode, &str, &str), CodeError> {
        let malformed = |why: &str| CodeError::Malformed(why.to_owned());
        let (payload, signature) = text.split_once('.').ok_or_else(|| malformed("no signature"))?;
        let json = BASE64URL.decode(payload).map_err(|_| malformed("the payload is not base64url"))?;
        let code: LinkCode = serde_json::from_slice(&json)
            .map_err(|_| malformed("the payload is not {key_id, partner_user, user, nonce, issued_at, expires_at}"))?;
        ids::check_key_id("key_id", &code.key_id).map_err(|_| malformed("key_id is not a key id"))?;
        for (field, value) in [("partner_user", &code.partner_user), ("nonce", &code.nonce)] {
            ids::check(field, value).map_err(|_| malformed(&format!("{field} is not an id")))?;
        }
        if code.nonce.len() < 16 {
            return Err(malformed("the nonce is shorter than 16 characters"));
        }
        Ok((code, payload, signature))
    }

    /// The partner the key id names.
    pub fn partner(&self) -> &str {
        self.key_id.split_once('.').map_or("", |(partner, _)| partner)
    }

    /// Judges a parsed code at `now` for `caller`, its signature checked with `key` (B's link-code
    /// key for the key id): the signature first, so nothing unsigned is believed.
    pub fn judge(&self, payload: &str, signature: &str, key: &Key, caller: &str, now: i64) -> Result<(), CodeError> {
        if !verify(key, &signed_text(payload), signature) {
            return Err(CodeError::Forged);
        }
        let lifetime = self.expires_at - self.issued_at;
        if now >= self.expires_at
            || lifetime <= 0
            || lifetime > MAX_CODE_SECONDS
            || self.issued_at > now + CLOCK_SKEW_SECONDS
        {
            return Err(CodeError::Expired);
        }
        if self.user != caller {
            return Err(CodeError::NotYours);
        }
        Ok(())
    }
}

/// What B may do with a link's instruments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Grant {
    /// B may read the instruments' display data.
    pub read: bool,
    /// What B may charge; null: B may not charge.
    pub charge: Option<ChargeCaps>,
}

/// What B may charge, in its currency: one charge, and its charges over a rolling 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ChargeCaps {
    pub per_charge: Money,
    pub per_day: Money,
}

/// A grant as the user sends it: `read`, `charge`, or both (neither is refused as `invalid_grant`).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// B may read the instruments' display data.
    #[serde(default)]
    read: bool,
    /// B may charge within these caps (`invalid_grant` unless in the partner's currency, per_charge
    /// at most per_day, and within the currency's limits for a charge and for 24 hours).
    #[serde(default)]
    charge: Option<CapsRequest>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct CapsRequest {
    per_charge: MoneyInput,
    per_day: MoneyInput,
}

impl Grant {
    /// A grant as the user sent it, for a partner that charges in `currency`.
    pub fn parse(json: GrantRequest, currency: Currency) -> Result<Self, Problem> {
        let invalid = |detail: String| Problem::new(catalogue::INVALID_GRANT, detail);
        let charge = match json.charge {
            None => None,
            Some(caps) => {
                let (per_charge, per_day) = (caps.per_charge.validate()?, caps.per_day.validate()?);
                if per_charge.currency() != currency || per_day.currency() != currency {
                    return Err(invalid(format!("this partner charges in {currency}: caps are in {currency}")));
                }
                if per_charge.amount() > per_day.amount() {
                    return Err(invalid("per_charge is more than per_day".into()));
                }
                let (most_per_charge, most_per_day) = (movement_limit(currency), window_limit(currency));
                if per_charge.amount() > most_per_charge || per_day.amount() > most_per_day {
                    return Err(invalid(format!(
                        "caps are at most {most_per_charge} {currency} per charge and {most_per_day} per day"
                    )));
                }
                Some(ChargeCaps { per_charge, per_day })
            }
        };
        if !json.read && charge.is_none() {
            return Err(invalid("a grant allows `read`, `charge`, or both".into()));
        }
        Ok(Grant { read: json.read, charge })
    }

    /// What the window of a link's charges admits; `None` when it allows no charge.
    pub fn caps(&self) -> Option<Caps> {
        self.charge.map(|c| Caps {
            per_movement: c.per_charge.amount(),
            per_window: c.per_day.amount(),
            count: MAX_CHARGES_PER_DAY,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Active,
    /// Ended by the user or by the partner: reads and charges are refused from then on.
    Unlinked,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Active => "active",
            LinkState::Unlinked => "unlinked",
        }
    }
}

/// One linked instrument: the user's, and the token its partner knows it by (random, so two
/// partners, or two links, cannot tell they hold the same card).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    pub instrument_id: String,
    pub token: String,
}

/// A user's consent to one partner identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub id: String,
    pub user: String,
    pub partner: String,
    pub partner_user: String,
    pub instruments: Vec<Linked>,
    pub grant: Grant,
    pub state: LinkState,
    pub created_at: i64,
    /// When it ended, and by whom (`user` or `partner`).
    pub ended: Option<(i64, String)>,
    /// The charges of the last 24 hours (the caps' window), versioned.
    pub window: Window,
}

impl Link {
    /// How its partner sees one of its instruments: the token, and display data if `read` is granted.
    pub fn shown(&self, token: &str, instrument: Option<&Instrument>, now: i64) -> PartnerInstrumentView {
        match self.grant.read {
            true => partner_view(token, instrument, now),
            false => PartnerInstrumentView { token: token.to_owned(), status: None, last4: None, details: None },
        }
    }

    /// Whether it holds instrument `id`.
    pub fn instrument_of_id(&self, id: &str) -> bool {
        self.instruments.iter().any(|l| l.instrument_id == id)
    }

    /// The linked instrument a token names.
    pub fn instrument_of(&self, token: &str) -> Option<&str> {
        self.instruments.iter().find(|l| l.token == token).map(|l| l.instrument_id.as_str())
    }

    /// What it allows and how it was used, for its user (`GET /links`): never the tokens.
    pub fn view(&self, partner_name: &str, instruments: Vec<LinkedInstrumentView>, now: i64) -> LinkView {
        let recent = self.window.recent(now);
        let charged: Decimal = recent.iter().map(|(_, amount)| *amount).sum();
        let charged = self.grant.charge.map_or(charged, |caps| caps.per_day.currency().rescale(charged));
        LinkView {
            id: self.id.clone(),
            partner_id: self.partner.clone(),
            partner_name: partner_name.to_owned(),
            partner_user: self.partner_user.clone(),
            instruments,
            grant: self.grant.clone(),
            state: self.state.as_str(),
            created_at: self.created_at,
            usage: LinkUse { charges_24h: recent.len(), asked_24h: charged.to_string() },
            ended_at: self.ended.as_ref().map(|(at, _)| *at),
            ended_by: self.ended.as_ref().map(|(_, by)| by.clone()),
        }
    }
}

/// A link as its user sees it: what it allows and how it was used, never the tokens.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct LinkView {
    id: String,
    partner_id: String,
    /// Empty once the partner is no longer known.
    partner_name: String,
    /// The user's id on the partner.
    partner_user: String,
    instruments: Vec<LinkedInstrumentView>,
    grant: Grant,
    /// `active` or `unlinked`.
    state: &'static str,
    created_at: i64,
    #[serde(rename = "use")]
    usage: LinkUse,
    /// When it ended, once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<i64>,
    /// Who ended it (`user` or `partner`), once it has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_by: Option<String>,
}

/// A link's charges over the rolling 24 hours its caps count.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct LinkUse {
    charges_24h: usize,
    /// What they asked, together, in the caps' currency.
    asked_24h: String,
}

/// A linked instrument as its user sees it: by its label while it is kept.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct LinkedInstrumentView {
    pub id: String,
    /// Its label (`visa 1111`, `DE 3000`); absent once it is gone altogether.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instrument: Option<String>,
    /// `active` or `removed`.
    pub status: &'static str,
}

/// What a partner sees of its link: its grant and state and, while it is active, each instrument's
/// token (what it charges) with, if `read` is granted, its display data (`instruments`: each
/// linked instrument as it stands, `None` once removed) as of `now`.
pub fn partner_link_view(link: &Link, instruments: &[Option<Instrument>], now: i64) -> PartnerLinkView {
    let shown = (link.state == LinkState::Active).then(|| {
        link.instruments
            .iter()
            .zip(instruments)
            .map(|(linked, instrument)| link.shown(&linked.token, instrument.as_ref(), now))
            .collect()
    });
    PartnerLinkView {
        link_id: link.id.clone(),
        partner_id: link.partner.clone(),
        partner_user: link.partner_user.clone(),
        state: link.state.as_str(),
        grant: link.grant.clone(),
        instruments: shown,
    }
}

/// A link as its partner sees it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PartnerLinkView {
    link_id: String,
    partner_id: String,
    /// The user's id on the partner.
    partner_user: String,
    /// `active` or `unlinked`.
    state: &'static str,
    grant: Grant,
    /// Each linked instrument, while the link is active.
    #[serde(skip_serializing_if = "Option::is_none")]
    instruments: Option<Vec<PartnerInstrumentView>>,
}

/// A linked instrument as its partner sees it: the token it charges and, if `read` is granted,
/// display data; never its number, id or holder.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PartnerInstrumentView {
    token: String,
    /// `active`, `expired` (a card past its expiry) or `removed`; only if `read` is granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    /// Only if `read` is granted, while it is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    last4: Option<String>,
    /// Its kind and what only that kind shows; only if `read` is granted, while it is kept.
    #[serde(flatten)]
    details: Option<DetailsView>,
}

/// What a partner sees of a linked instrument at `now`: its token and display data, never its
/// number, id or holder; a removed instrument, or a card past its expiry, shows as such.
pub fn partner_view(token: &str, instrument: Option<&Instrument>, now: i64) -> PartnerInstrumentView {
    let token = token.to_owned();
    let Some(instrument) = instrument else {
        return PartnerInstrumentView { token, status: Some("removed"), last4: None, details: None };
    };
    let expired = matches!(&instrument.details, Details::Card { expiry, .. } if now >= expiry.ends_at());
    PartnerInstrumentView {
        token,
        status: Some(if expired { "expired" } else { "active" }),
        last4: Some(instrument.last4.clone()),
        details: Some(instrument.details.view()),
    }
}

/// The partner's webhook that `link`'s instrument `instrument_id` changed (`why`: `replaced`, or
/// `expiry/<yyyy-mm>` for a card's expiry, which is due then).
pub fn update_notice(link: &Link, instrument_id: &str, why: &str) -> NotificationMessage {
    NotificationMessage::InstrumentUpdated {
        id: format!("{}/updated/{instrument_id}/{why}", link.id),
        user: link.user.clone(),
        link_id: link.id.clone(),
        instrument_id: instrument_id.to_owned(),
    }
}

/// The notice `link`'s partner gets when `instrument`'s card expires, and when it is due (`made_by`:
/// what scheduled it, the link or a replacement, so two never share an id); `None` for a bank account.
pub fn expiry_notice(link: &Link, instrument: &Instrument, made_by: &str) -> Option<(NotificationMessage, i64)> {
    let Details::Card { expiry, .. } = &instrument.details else { return None };
    let why = format!("expiry/{}-{:02}/{made_by}", expiry.year, expiry.month);
    Some((update_notice(link, &instrument.id, &why), expiry.ends_at()))
}

/// A fresh token for one instrument of one link.
pub fn new_token() -> String {
    format!("pt_{}", crate::crypto::random_hex::<12>())
}

#[cfg(test)]
mod tests;
