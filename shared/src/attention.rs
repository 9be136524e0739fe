//! Each user's attention items (`HomeTable`, key `user`, `id`): what a source needs its user for
//! (an offline payment waiting for funds, a security event), each written by the source in the
//! transaction that puts it in need of the user and deleted by the one that resolves it, so the
//! home (capability 5, `crate::home`) reads them consistently and in one query whatever the user's
//! history. An item is the element the home shows (`Element`), keyed `element#<element id>`, with
//! `gone_at` for the table's TTL when it has an end. An element of a source any request can make
//! many of, moving no money (an open payment session, a mini-app payment that failed), is kept
//! apart, keyed `many#<element id>` (`put_many_item`), so that no number of them, made by the user
//! or by a stolen token, can crowd money or security out of a read. A user's dismissal of an
//! element is an item `dismissed#<element id>` in the same partition. What the home lists as the
//! user's own (a linked platform, a device that pays offline) is an item `personal#<kind>#<id>`
//! (`Personal`), written with what it lists and deleted when that ends. A partition is read in one
//! query while it holds fewer items than one read takes; past that, each of the four by its own
//! bounded query, so no number of one can crowd the others out of a read.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dynamo::{Item, StoreError, Write, get_s, n, s};

/// How long after its end an item stays for the TTL to take (the home drops it at `expires_at`).
const GONE_AFTER_SECONDS: i64 = 86_400;
/// How long a dismissal is kept: an element dismissed is not shown again for that long.
pub const DISMISSAL_SECONDS: i64 = 90 * 86_400;
/// The most items of each kind one read takes: a user's attention items are few (sources delete
/// theirs when resolved, everything else ends, and those a request can make many of are kept
/// apart), and only elements that exist can be dismissed.
/// A partition past it is logged (`alarm = home_partition_full`): the later keys are not read.
pub const READ_LIMIT: i32 = 200;
/// The key prefixes of the four kinds of item a partition holds, in the order `read` gives them.
const KINDS: [&str; 4] = ["element#", "many#", "dismissed#", "personal#"];

/// Why an element matters, in the order the home ranks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Money the user may lose or is waiting for: an offline payment waiting for funds, a hold
    /// awaiting a merchant, a payment that failed or expired.
    MoneyAtRisk,
    /// Something about the account's safety: a new device, a new partner link, a refused transfer.
    Security,
    /// Something with a date: a hold that will be released, a reminder.
    TimeBound,
    /// What the operators announce (config group `home-announcements`).
    Announcement,
    /// The balance card, shown when nothing else is.
    Default,
}

impl Class {
    /// The placement an element of this class goes to when it is not the primary one.
    pub fn placement(self) -> &'static str {
        match self {
            Class::MoneyAtRisk => "alerts",
            // Its own: no number of money elements (failed payments a stolen token can make) can
            // push the account's security events out of view.
            Class::Security => "security",
            Class::TimeBound => "reminders",
            Class::Announcement => "announcements",
            Class::Default => "balance",
        }
    }
}

/// What the client can do with an element: open a link, or call a route of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Action {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
}

impl Action {
    /// Open `url` (a top-up link, an announcement's page).
    pub fn open(id: &str, url: impl Into<String>) -> Self {
        Action { id: id.to_owned(), url: Some(url.into()), method: None, path: None }
    }

    /// Call `method path` of the API with the user's token.
    pub fn call(id: &str, method: &str, path: impl Into<String>) -> Self {
        Action { id: id.to_owned(), url: None, method: Some(method.to_owned()), path: Some(path.into()) }
    }
}

/// One thing the home may show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Element {
    /// Derived from its source (`<source kind>:<source id>`): one element per source.
    pub id: String,
    /// What it is (`offline.waiting_for_funds`, `security.device_enrolled`, ...).
    pub kind: String,
    #[serde(rename = "priority_class")]
    pub class: Class,
    /// Why it is shown, in words.
    pub reason: String,
    pub data: Value,
    pub actions: Vec<Action>,
    /// When the user must act by (an offline payment's top-up link's expiry), if ever.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deadline: Option<i64>,
    /// When it stops being shown, if ever: the server drops it then.
    pub expires_at: Option<i64>,
    /// When its source last changed (recency).
    pub at: i64,
    /// Cannot be dismissed (money the user may lose).
    pub critical: bool,
    /// The rule that made it and the inputs it saw.
    pub explain: Value,
}

impl Element {
    /// Its place in the home's total order: class, then the nearest deadline (none last), then the
    /// most recent, then the id (unique once deduplicated), so two elements never tie.
    pub fn rank_key(&self) -> (Class, i64, std::cmp::Reverse<i64>, &str) {
        (self.class, self.deadline.unwrap_or(i64::MAX), std::cmp::Reverse(self.at), &self.id)
    }

    pub fn live_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// How long money given back (an order declined, a hold voided) stays on its user's home.
pub const GIVEN_BACK_SHOWN_SECONDS: i64 = 3 * 86_400;

/// Where the money of a user's payment stands, for their home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Held until a party decides, at the latest at this time.
    Until(Option<i64>),
    /// Given back: the payment will not be made.
    GivenBack,
}

/// A payment whose money is held for, or was given back to, its user: the one rule of every such
/// element. Held money is in view until it is decided (critical, its deadline the decision's, no
/// end but the transaction that decides it); money given back is told for
/// `GIVEN_BACK_SHOWN_SECONDS`, and may be dismissed.
pub struct HeldMoney {
    pub id: String,
    pub kind: &'static str,
    pub reason: String,
    pub data: Value,
    /// The route the user reads the payment at.
    pub path: String,
    pub held: Held,
    pub explain: Value,
}

impl HeldMoney {
    pub fn element(self, now: i64) -> Element {
        let (deadline, expires_at, critical) = match self.held {
            Held::Until(deadline) => (deadline, None, true),
            Held::GivenBack => (None, Some(now + GIVEN_BACK_SHOWN_SECONDS), false),
        };
        Element {
            id: self.id,
            kind: self.kind.into(),
            class: Class::MoneyAtRisk,
            reason: self.reason,
            data: self.data,
            actions: vec![Action::call("view", "GET", self.path)],
            deadline,
            expires_at,
            at: now,
            critical,
            explain: self.explain,
        }
    }
}

/// What a `Personal` item lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonalKind {
    /// A partner platform linked to the account (`LinksTable`).
    Link,
    /// A device enrolled to pay offline (`DevicesTable`).
    Device,
}

impl PersonalKind {
    fn key(self, id: &str) -> String {
        let kind = match self {
            PersonalKind::Link => "link",
            PersonalKind::Device => "device",
        };
        format!("personal#{kind}#{id}")
    }
}

/// Something of the user's the home lists (`personalized`): its source's id, when it began, and
/// what the home shows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Personal {
    pub kind: PersonalKind,
    pub id: String,
    pub at: i64,
    pub data: Value,
}

/// Rule: a dismissal is written once (a second one is the same dismissal).
pub const DISMISSAL_NEW: &str = "attention.dismissal_new";

/// The attention items and dismissals of `HomeTable`.
#[derive(Clone, Debug)]
pub struct AttentionStore {
    client: Client,
    table: String,
}

/// A user's partition as read: the live items and what they dismissed.
#[derive(Debug, Default)]
pub struct Partition {
    pub elements: Vec<Element>,
    pub dismissed: BTreeSet<String>,
    pub personal: Vec<Personal>,
}

impl AttentionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        AttentionStore { client, table: table.into() }
    }

    /// The write that puts (or replaces) `element` as `user`'s attention item.
    pub fn put_item(&self, user: &str, element: &Element) -> Result<Write, StoreError> {
        self.put(user, "element#", element)
    }

    /// The same, for an element of a source any request can make many of (kept apart: see above).
    pub fn put_many_item(&self, user: &str, element: &Element) -> Result<Write, StoreError> {
        self.put(user, "many#", element)
    }

    fn put(&self, user: &str, prefix: &str, element: &Element) -> Result<Write, StoreError> {
        let text = serde_json::to_string(element)
            .map_err(|e| StoreError::caused("an attention item could not be written as JSON", e))?;
        let mut item = Item::from([
            ("user".to_owned(), s(user)),
            ("id".to_owned(), s(format!("{prefix}{}", element.id))),
            ("element".to_owned(), s(text)),
        ]);
        if let Some(end) = element.expires_at {
            item.insert("gone_at".to_owned(), n(end + GONE_AFTER_SECONDS));
        }
        Ok(Write::put("attention.put", Put::builder().table_name(&self.table).set_item(Some(item)).build()?))
    }

    /// The write that removes `user`'s attention item `id` (there or not).
    pub fn delete_item(&self, user: &str, id: &str) -> Result<Write, StoreError> {
        self.delete(user, format!("element#{id}"))
    }

    /// The same, for an element put by `put_many_item`.
    pub fn delete_many_item(&self, user: &str, id: &str) -> Result<Write, StoreError> {
        self.delete(user, format!("many#{id}"))
    }

    fn delete(&self, user: &str, key: String) -> Result<Write, StoreError> {
        let delete = Delete::builder().table_name(&self.table).key("user", s(user)).key("id", s(key)).build()?;
        Ok(Write::delete("attention.delete", delete))
    }

    /// The write that puts (or replaces) `personal` in `user`'s home.
    pub fn put_personal(&self, user: &str, personal: &Personal) -> Result<Write, StoreError> {
        let text = serde_json::to_string(personal)
            .map_err(|e| StoreError::caused("a personal item could not be written as JSON", e))?;
        let put = Put::builder()
            .table_name(&self.table)
            .item("user", s(user))
            .item("id", s(personal.kind.key(&personal.id)))
            .item("personal", s(text))
            .build()?;
        Ok(Write::put("attention.personal_put", put))
    }

    /// The write that removes `user`'s personal item `kind` `id` (there or not).
    pub fn delete_personal(&self, user: &str, kind: PersonalKind, id: &str) -> Result<Write, StoreError> {
        self.delete(user, kind.key(id))
    }

    /// The write that records `user`'s dismissal of element `id` at `now`, once.
    pub fn dismissal_item(&self, user: &str, id: &str, now: i64) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("user", s(user))
            .item("id", s(format!("dismissed#{id}")))
            .item("at", n(now))
            .item("gone_at", n(now + DISMISSAL_SECONDS))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put(DISMISSAL_NEW, put))
    }

    /// `user`'s partition, read consistently: its elements (those of sources that make many
    /// apart), its dismissals and its personal items. One query of the whole partition, which
    /// nearly always holds fewer than `READ_LIMIT` items; only when it holds more, one bounded query
    /// per kind, at once, so that no number of one kind can crowd the others out of a
    /// read. An item that cannot be read is logged and left out, never the whole home.
    pub async fn read(&self, user: &str) -> Result<Partition, StoreError> {
        let (all, complete) = self.query(user, None).await?;
        let [elements, many, dismissed, personal] = if complete {
            let mut kinds: [Vec<Item>; 4] = Default::default();
            for item in all {
                let id = get_s(&item, "id").unwrap_or_default();
                if let Some(kind) = KINDS.iter().position(|prefix| id.starts_with(prefix)) {
                    kinds[kind].push(item);
                }
            }
            kinds
        } else {
            let [element, many, dismissed, personal] = KINDS;
            let kinds = tokio::try_join!(
                self.range(user, element),
                self.range(user, many),
                self.range(user, dismissed),
                self.range(user, personal)
            )?;
            kinds.into()
        };
        let mut elements: Vec<Element> = readable(user, &elements, "element");
        elements.extend(readable::<Element>(user, &many, "element"));
        let mut partition =
            Partition { elements, personal: readable(user, &personal, "personal"), ..Partition::default() };
        for item in &dismissed {
            if let Some(id) = get_s(item, "id").ok().and_then(|id| id.strip_prefix("dismissed#")) {
                partition.dismissed.insert(id.to_owned());
            }
        }
        Ok(partition)
    }

    /// `user`'s items whose key starts with `prefix`, at most `READ_LIMIT`.
    async fn range(&self, user: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let (items, complete) = self.query(user, Some(prefix)).await?;
        if !complete {
            tracing::error!(
                alarm = "home_partition_full",
                user,
                prefix,
                "a home partition holds more than a read takes"
            );
        }
        Ok(items)
    }

    /// At most `READ_LIMIT` of `user`'s items (those whose key starts with `prefix`, if given),
    /// read consistently, and whether they are all there are.
    async fn query(&self, user: &str, prefix: Option<&str>) -> Result<(Vec<Item>, bool), StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_names("#user", "user")
            .expression_attribute_values(":user", AttributeValue::S(user.to_owned()))
            .consistent_read(true)
            .limit(READ_LIMIT);
        let query = match prefix {
            Some(prefix) => query
                .key_condition_expression("#user = :user AND begins_with(id, :prefix)")
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned())),
            None => query.key_condition_expression("#user = :user"),
        };
        let out = query.send().await?;
        let complete = out.last_evaluated_key().is_none();
        Ok((out.items.unwrap_or_default(), complete))
    }
}

/// The JSON attribute `attribute` of each of `user`'s `items`, each that can be read.
fn readable<T: serde::de::DeserializeOwned>(user: &str, items: &[Item], attribute: &str) -> Vec<T> {
    let mut read = Vec::with_capacity(items.len());
    for item in items {
        let value = get_s(item, attribute)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<T>(text).map_err(|e| e.to_string()));
        match value {
            Ok(value) => read.push(value),
            Err(error) => tracing::error!(
                %error, user, id = get_s(item, "id").unwrap_or_default(), "an attention item cannot be read; left out"
            ),
        }
    }
    read
}
