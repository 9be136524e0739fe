//! The links (`LinksTable`, keys `pk` and `sk`):
//!
//! - a link: `user#<user>` / `link#<id>`: the partner and its user, the instruments and their
//!   tokens, the grant, the state, and the window of its charges (entries `<at> <amount>` and a
//!   `version` every charge's write is conditional on, with the link still active);
//! - the B identity's marker: `identity#<partner>#<partner user>` / `identity`: the user and link
//!   it is linked to, written with the link (one B identity links to one user) and deleted when the
//!   link ends;
//! - each token's item: `token#<partner>#<token>` / `token`: the user, link and instrument it
//!   names. Keyed by its partner: another partner's token names nothing.
//! - each charge's index: `charge#<partner>#<id>` / `charge`: the user whose record the charge is
//!   (`CashTable`), written with the charge.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, Update};

use super::{ChargeCaps, Grant, Link, LinkState, Linked};
use crate::dynamo::{Item, StoreError, Write, get_decimal, get_item, get_n, get_s, n, partition_all, s};
use crate::instrument::cash::Window;
use crate::instrument::cash::store::WINDOW_CURRENT;
use crate::money::{Currency, Money};

/// Rule: a link is made once.
pub const LINK_NEW: &str = "link.new";
/// Rule: the B identity is linked to nobody yet.
pub const IDENTITY_FREE: &str = "link.identity_free";
/// Rule: the link is active (not ended yet).
pub const LINK_ACTIVE: &str = "link.active";
/// Rule: a charge's id is indexed once (never another user's charge).
pub const CHARGE_INDEX_NEW: &str = "link.charge_index_new";

fn user_pk(user: &str) -> String {
    format!("user#{user}")
}

fn link_sk(id: &str) -> String {
    format!("link#{id}")
}

fn identity_pk(partner: &str, partner_user: &str) -> String {
    format!("identity#{partner}#{partner_user}")
}

fn token_pk(partner: &str, token: &str) -> String {
    format!("token#{partner}#{token}")
}

fn charge_pk(partner: &str, id: &str) -> String {
    format!("charge#{partner}#{id}")
}

/// What a token names: its user, link and instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOf {
    pub user: String,
    pub link: String,
    pub instrument: String,
}

#[derive(Clone, Debug)]
pub struct LinkStore {
    client: Client,
    table: String,
}

impl LinkStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        LinkStore { client, table: table.into() }
    }

    async fn item(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        get_item(&self.client, &self.table, &[("pk", pk), ("sk", sk)]).await
    }

    /// `user`'s link `id`.
    pub async fn get(&self, user: &str, id: &str) -> Result<Option<Link>, StoreError> {
        self.item(&user_pk(user), &link_sk(id)).await?.as_ref().map(link_from_item).transpose()
    }

    /// Every link of `user`'s, ended ones too.
    pub async fn of_user(&self, user: &str) -> Result<Vec<Link>, StoreError> {
        let items = partition_all(&self.client, &self.table, "pk", &user_pk(user)).await?;
        items.iter().map(link_from_item).collect()
    }

    /// The active link of `partner`'s user `partner_user`, if any.
    pub async fn of_identity(&self, partner: &str, partner_user: &str) -> Result<Option<Link>, StoreError> {
        let Some(marker) = self.item(&identity_pk(partner, partner_user), "identity").await? else { return Ok(None) };
        self.get(get_s(&marker, "user")?, get_s(&marker, "link")?).await
    }

    /// What `partner`'s `token` names, if it is one of that partner's.
    pub async fn token(&self, partner: &str, token: &str) -> Result<Option<TokenOf>, StoreError> {
        let Some(item) = self.item(&token_pk(partner, token), "token").await? else { return Ok(None) };
        Ok(Some(TokenOf {
            user: get_s(&item, "user")?.to_owned(),
            link: get_s(&item, "link")?.to_owned(),
            instrument: get_s(&item, "instrument")?.to_owned(),
        }))
    }

    /// The new link, its identity's marker and its tokens' items, each written once.
    pub fn create_items(&self, link: &Link) -> Result<Vec<Write>, StoreError> {
        let instruments = link
            .instruments
            .iter()
            .map(|l| {
                AttributeValue::M(
                    [("instrument".to_owned(), s(&l.instrument_id)), ("token".to_owned(), s(&l.token))].into(),
                )
            })
            .collect();
        let mut put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(user_pk(&link.user)))
            .item("sk", s(link_sk(&link.id)))
            .item("id", s(&link.id))
            .item("user", s(&link.user))
            .item("partner", s(&link.partner))
            .item("partner_user", s(&link.partner_user))
            .item("instruments", AttributeValue::L(instruments))
            .item("read", AttributeValue::Bool(link.grant.read))
            .item("state", s(link.state.as_str()))
            .item("created_at", n(link.created_at))
            .item("version", n(0))
            .item("entries", AttributeValue::L(vec![]))
            .condition_expression("attribute_not_exists(pk)");
        if let Some(caps) = link.grant.charge {
            put = put
                .item("per_charge", n(caps.per_charge.amount()))
                .item("per_day", n(caps.per_day.amount()))
                .item("currency", s(caps.per_charge.currency().code()));
        }
        let identity = Put::builder()
            .table_name(&self.table)
            .item("pk", s(identity_pk(&link.partner, &link.partner_user)))
            .item("sk", s("identity"))
            .item("user", s(&link.user))
            .item("link", s(&link.id))
            .condition_expression("attribute_not_exists(pk)")
            .build()?;
        let mut writes = vec![Write::put(LINK_NEW, put.build()?), Write::put(IDENTITY_FREE, identity)];
        for linked in &link.instruments {
            let token = Put::builder()
                .table_name(&self.table)
                .item("pk", s(token_pk(&link.partner, &linked.token)))
                .item("sk", s("token"))
                .item("user", s(&link.user))
                .item("link", s(&link.id))
                .item("instrument", s(&linked.instrument_id))
                .condition_expression("attribute_not_exists(pk)")
                .build()?;
            writes.push(Write::put("link.token_new", token));
        }
        Ok(writes)
    }

    /// Ends the link at `now`, by `by` (`user` or `partner`): only an active one; its identity is
    /// free again.
    pub fn end_items(&self, link: &Link, by: &str, now: i64) -> Result<[Write; 2], StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(user_pk(&link.user)))
            .key("sk", s(link_sk(&link.id)))
            .update_expression("SET #state = :ended, ended_at = :now, ended_by = :by")
            .condition_expression("#state = :active")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":ended", s(LinkState::Unlinked.as_str()))
            .expression_attribute_values(":active", s(LinkState::Active.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":by", s(by))
            .build()?;
        let marker = Delete::builder()
            .table_name(&self.table)
            .key("pk", s(identity_pk(&link.partner, &link.partner_user)))
            .key("sk", s("identity"))
            .condition_expression("link = :id")
            .expression_attribute_values(":id", s(&link.id))
            .build()?;
        Ok([Write::update(LINK_ACTIVE, update), Write::delete("link.identity_held", marker)])
    }

    /// A charge's place in `user`'s link `link`'s window: `admitted` over `read`, only while the
    /// link is active and nobody changed the window since.
    pub fn window_item(&self, user: &str, link: &str, read: &Window, admitted: &Window) -> Result<Write, StoreError> {
        let entries = admitted.entries.iter().map(|(at, amount)| s(format!("{at} {amount}"))).collect();
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(user_pk(user)))
            .key("sk", s(link_sk(link)))
            .update_expression("SET version = :next, entries = :entries")
            .condition_expression("#state = :active AND version = :read")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":active", s(LinkState::Active.as_str()))
            .expression_attribute_values(":read", n(read.version))
            .expression_attribute_values(":next", n(admitted.version))
            .expression_attribute_values(":entries", AttributeValue::L(entries))
            .build()?;
        Ok(Write::update(WINDOW_CURRENT, update))
    }

    /// Where `partner` finds its charge `id`: the user it charged (the charge is that user's record).
    /// Written once: an id is never another user's charge.
    pub fn charge_index_item(&self, partner: &str, id: &str, user: &str) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(charge_pk(partner, id)))
            .item("sk", s("charge"))
            .item("user", s(user))
            .condition_expression("attribute_not_exists(pk)")
            .build()?;
        Ok(Write::put(CHARGE_INDEX_NEW, put))
    }

    /// The user `partner`'s charge `id` charged, if it is that partner's.
    pub async fn charge_user(&self, partner: &str, id: &str) -> Result<Option<String>, StoreError> {
        let item = self.item(&charge_pk(partner, id), "charge").await?;
        item.map(|i| get_s(&i, "user").map(str::to_owned)).transpose()
    }
}

fn link_from_item(item: &Item) -> Result<Link, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("a stored link is corrupt: {what}"));
    let instruments = item
        .get("instruments")
        .and_then(|v| v.as_l().ok())
        .ok_or_else(|| corrupt("instruments"))?
        .iter()
        .map(|v| {
            let m = v.as_m().map_err(|_| corrupt("an instrument"))?;
            Ok(Linked { instrument_id: get_s(m, "instrument")?.to_owned(), token: get_s(m, "token")?.to_owned() })
        })
        .collect::<Result<_, StoreError>>()?;
    let charge = if item.contains_key("per_charge") {
        let currency: Currency = get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?;
        let money = |name: &str| Money::new(get_decimal(item, name)?, currency).map_err(|_| corrupt(name));
        Some(ChargeCaps { per_charge: money("per_charge")?, per_day: money("per_day")? })
    } else {
        None
    };
    let entries = item
        .get("entries")
        .and_then(|v| v.as_l().ok())
        .ok_or_else(|| corrupt("entries"))?
        .iter()
        .map(|entry| {
            let (at, amount) = entry.as_s().ok().and_then(|e| e.split_once(' ')).ok_or_else(|| corrupt("an entry"))?;
            Ok((at.parse().map_err(|_| corrupt("an entry"))?, amount.parse().map_err(|_| corrupt("an entry"))?))
        })
        .collect::<Result<_, StoreError>>()?;
    let state = match get_s(item, "state")? {
        "active" => LinkState::Active,
        "unlinked" => LinkState::Unlinked,
        _ => return Err(corrupt("state")),
    };
    let ended = match item.get("ended_at") {
        Some(_) => Some((get_n(item, "ended_at")?, get_s(item, "ended_by")?.to_owned())),
        None => None,
    };
    Ok(Link {
        id: get_s(item, "id")?.to_owned(),
        user: get_s(item, "user")?.to_owned(),
        partner: get_s(item, "partner")?.to_owned(),
        partner_user: get_s(item, "partner_user")?.to_owned(),
        instruments,
        grant: Grant { read: item.get("read").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false), charge },
        state,
        created_at: get_n(item, "created_at")?,
        ended,
        window: Window { version: get_n(item, "version")?, entries },
    })
}
