//! What the notifier (`crate::notifier`) does with `link.changed`: a signed webhook to the partner
//! (`<callback_url>/webhooks`, kind `link.created` or `link.ended`) with the link as the partner may
//! see it (`super::partner_link_view`): its grant and state and, while active, each instrument's
//! token, with display data if `read` is granted.
//! Signed with the partner's key (its previous one while that is honoured).

use serde::{Deserialize, Serialize};

use super::store::LinkStore;
use super::{LinkState, PartnerInstrumentView, PartnerLinkView, partner_link_view};
use crate::aws::{self, MissingEnv};
use crate::batch::Failure;
use crate::clock::now_epoch_seconds;
use crate::instrument::partner::{Partner, PartnerStore};
use crate::instrument::store::InstrumentStore;
use crate::keys::{KeyRing, KeyService};
use crate::outbound::{AddressPolicy, PartnerClient};
use crate::party_keys::KeyedParty;

/// The signed webhooks this module sends (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const WEBHOOKS: &[crate::openapi::WebhookDoc] = {
    use crate::openapi::{WebhookDoc, schema};
    &[
        WebhookDoc {
            name: "link.created",
            summary: "to the partner's server, <callback_url>/webhooks, signed with the partner's key (its previous one while that is honoured): a user linked their identity on the partner to instruments, with each one's token; sent at least once, event_id naming it",
            body: schema::<LinkWebhook>,
            answer: None,
        },
        WebhookDoc {
            name: "link.ended",
            summary: "to the partner's server, <callback_url>/webhooks, signed with the partner's key (its previous one while that is honoured): the user or the partner ended a link, its tokens no longer charge; sent at least once, event_id naming it",
            body: schema::<LinkWebhook>,
            answer: None,
        },
        WebhookDoc {
            name: "instrument.updated",
            summary: "to the partner's server, <callback_url>/webhooks, signed with the partner's key (its previous one while that is honoured): an instrument of an active link changed (replaced, or its card's expiry passed), under the same token; sent at least once, event_id naming it",
            body: schema::<InstrumentUpdatedWebhook>,
            answer: None,
        },
    ]
};

/// The partner's webhook about a link made or ended.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct LinkWebhook {
    /// The same on each delivery of this notice.
    pub event_id: String,
    pub kind: LinkEvent,
    pub link: PartnerLinkView,
}

/// What happened to the link.
// Read from the notifications queue's `link.changed` event, which names it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(inline))]
pub enum LinkEvent {
    #[serde(rename = "link.created")]
    Created,
    #[serde(rename = "link.ended")]
    Ended,
}

/// The partner's webhook about an instrument of one of its active links.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct InstrumentUpdatedWebhook {
    /// The same on each delivery of this notice; opaque (the notice's own id names our instrument).
    pub event_id: String,
    pub kind: InstrumentUpdatedKind,
    pub link: PartnerLinkRef,
    pub instrument: PartnerInstrumentView,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(inline))]
pub enum InstrumentUpdatedKind {
    #[serde(rename = "instrument.updated")]
    InstrumentUpdated,
}

/// Which of the partner's links an instrument's notice is about.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PartnerLinkRef {
    pub link_id: String,
    pub partner_id: String,
    /// The user's id on the partner.
    pub partner_user: String,
}

pub struct LinkNotices {
    links: LinkStore,
    partners: PartnerStore,
    instruments: InstrumentStore,
    ring: KeyRing,
    client: PartnerClient,
}

impl LinkNotices {
    pub fn from_env(dynamodb: &aws_sdk_dynamodb::Client, keys: KeyService) -> Result<Self, MissingEnv> {
        let allow_http = aws::env("ALLOW_PLAIN_HTTP_PARTNERS")? == "true";
        Ok(LinkNotices {
            links: LinkStore::new(dynamodb.clone(), aws::env("LINKS_TABLE")?),
            partners: PartnerStore::new(dynamodb.clone(), aws::env("PARTNERS_TABLE")?),
            instruments: InstrumentStore::new(dynamodb.clone(), aws::env("INSTRUMENTS_TABLE")?),
            ring: KeyRing::new(keys),
            client: PartnerClient::new(AddressPolicy { allow_loopback: allow_http }),
        })
    }

    /// Tells the partner about `user`'s link `link_id` as it stands now (read from the table, never
    /// taken from the message); a link that is gone is poison.
    pub async fn changed(&self, id: &str, user: &str, link_id: &str, event: &str) -> Result<(), Failure> {
        let kind: LinkEvent = serde_json::from_value(event.into())
            .map_err(|_| Failure::poison(format!("unknown link event {event:?}")))?;
        let link =
            self.links.get(user, link_id).await?.ok_or_else(|| Failure::poison(format!("unknown link {link_id:?}")))?;
        let partner = self
            .partners
            .get(&link.partner)
            .await?
            .ok_or_else(|| Failure::poison(format!("link {link_id} names an unknown partner")))?;
        let mut instruments = Vec::new();
        for linked in &link.instruments {
            instruments.push(self.instruments.get(&link.user, &linked.instrument_id).await?);
        }
        let view = partner_link_view(&link, &instruments, now_epoch_seconds());
        self.deliver(&partner, &LinkWebhook { event_id: id.to_owned(), kind, link: view }).await
    }

    /// Tells the partner of `user`'s active link `link_id` how instrument `instrument_id` stands now
    /// (`instrument.updated`, under its token); nothing once the link ended.
    pub async fn updated(&self, id: &str, user: &str, link_id: &str, instrument_id: &str) -> Result<(), Failure> {
        let Some(link) = self.links.get(user, link_id).await?.filter(|l| l.state == LinkState::Active) else {
            return Ok(());
        };
        let Some(linked) = link.instruments.iter().find(|l| l.instrument_id == instrument_id) else { return Ok(()) };
        let partner = self
            .partners
            .get(&link.partner)
            .await?
            .ok_or_else(|| Failure::poison(format!("link {link_id} names an unknown partner")))?;
        let instrument = self.instruments.get(user, instrument_id).await?;
        let body = InstrumentUpdatedWebhook {
            // Opaque: the notice's own id names our instrument.
            event_id: crate::crypto::sha256_hex(id.as_bytes())[..32].to_owned(),
            kind: InstrumentUpdatedKind::InstrumentUpdated,
            instrument: link.shown(&linked.token, instrument.as_ref(), now_epoch_seconds()),
            link: PartnerLinkRef { link_id: link.id, partner_id: link.partner, partner_user: link.partner_user },
        };
        self.deliver(&partner, &body).await
    }

    /// A signed webhook to the partner (`<callback_url>/webhooks`), with its key.
    async fn deliver(&self, partner: &Partner, body: &impl Serialize) -> Result<(), Failure> {
        let body = serde_json::to_vec(body).map_err(|e| format!("the webhook's body: {e}"))?;
        let keys = self.ring.signing_keys(&partner.kms_owner(), &partner.stored_key(), now_epoch_seconds()).await?;
        let url = format!("{}/webhooks", partner.callback_url);
        self.client
            .deliver(&url, &keys, body, now_epoch_seconds())
            .await
            .map_err(|e| Failure::Retry(format!("the partner's server: {e}")))
    }
}
