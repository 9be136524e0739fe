//! The home function's routes (template.yaml `HomeFunction`), for a signed-in user:
//!
//! - `GET  /home`  the primary element, the others by placement, and what is personal (display
//!   name, wallet and reserve balances, the latest postings, conversations with unread messages,
//!   linked platforms, devices that pay offline);
//!   `ETag`, 304 on `If-None-Match`, `refresh_after_seconds`. The platform and app version, as
//!   headers (`X-Superpay-Platform`, `X-Superpay-App-Version`), choose the announcement.
//! - `POST /home/elements/{id}/dismiss`  the user dismisses an element (idempotent; a critical one
//!   is refused)
//!
//! Everything is read consistently and at once: the user's attention items, dismissals and
//! personal items (one query of their partition, one per kind in a partition too big for one:
//! `AttentionStore::read`), the wallet and reserve (one batch), the latest postings and the
//! conversations (one query each).

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::Value;

use super::announcements::{self, Announcements, GROUP};
use super::{PersonalKind, Ranked, balance_card, etag, listed, rank};
use crate::Problem;
use crate::attention::{AttentionStore, DISMISSAL_NEW};
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::config::GroupName;
use crate::config::held::HeldGroup;
use crate::conversation::store::ConversationStore;
use crate::dynamo::transact;
use crate::http::{json_response, path_parameter, route_key};
use crate::ledger::AccountId;
use crate::ledger::store::LedgerStore;
use crate::problem::catalogue;

/// How many postings and conversations the home shows.
const RECENT: usize = 5;
/// The request headers that choose the announcement (so the answer varies with them).
pub const PLATFORM_HEADER: &str = "x-superpay-platform";
pub const APP_VERSION_HEADER: &str = "x-superpay-app-version";

/// `GET /home`'s answer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct HomeView {
    #[serde(flatten)]
    ranked: Ranked,
    personalized: Personalized,
}

/// What is the user's own, around the elements.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Personalized {
    /// The token's `name` claim, when the identity provider sends one.
    display_name: Option<String>,
    wallet: Balance,
    reserve: Balance,
    /// The wallet's latest postings, newest first.
    recent_postings: Vec<RecentPosting>,
    /// Conversations with unread messages, newest first.
    unread_conversations: Vec<Unread>,
    /// Active partner links, newest first (`GET /links` lists them all).
    linked_platforms: Vec<Value>,
    /// Devices that can pay offline, newest first.
    devices: Vec<Value>,
}

/// An account's balance: `"0"` and no currency before its first credit.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Balance {
    amount: String,
    currency: Option<&'static str>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct RecentPosting {
    sequence: u64,
    amount: String,
    kind: String,
    at: i64,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Unread {
    counterparty: String,
    unread: u64,
    last_text: String,
    last_at: i64,
}

/// `POST /home/elements/{id}/dismiss`'s answer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Dismissed {
    id: String,
    dismissed: bool,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "GET /home",
            summary: "the primary element, the others by placement, and what is the user's own",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<HomeView>)), (304, None)],
            codes: &[],
            headers: &[Header::Revalidated, Header::ClientFacts],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /home/elements/{id}/dismiss",
            summary: "dismiss an element: not shown again for 90 days (idempotent)",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<Dismissed>))],
            codes: &[catalogue::UNKNOWN_HOME_ELEMENT, catalogue::HOME_ELEMENT_NOT_DISMISSABLE],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

pub struct HomeApi {
    attention: AttentionStore,
    ledger: LedgerStore,
    conversations: ConversationStore,
    announcements: HeldGroup<Announcements>,
    dynamodb: aws_sdk_dynamodb::Client,
}

impl HomeApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws::sdk_config().await);
        Ok(HomeApi {
            attention: AttentionStore::new(dynamodb.clone(), aws::env("HOME_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            conversations: ConversationStore::new(dynamodb.clone(), aws::env("CONVERSATIONS_TABLE")?),
            // Read for each request (a new version shows at once), parsed once per version; one
            // that no longer verifies shows no announcement.
            announcements: HeldGroup::new(
                aws::env("CONFIG_TABLE")?,
                GroupName::parse(GROUP).expect("home-announcements is a group name (tests)"),
                0,
                |json, version| Announcements::parse(json, version).map_err(|e| e.to_string()),
                || std::sync::Arc::new(Announcements::none()),
            ),
            dynamodb,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        match route_key(&request) {
            "GET /home" => self.home(&request, &caller).await,
            "POST /home/elements/{id}/dismiss" => self.dismiss(&request, &caller).await,
            other => Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the home function has no route {other:?}"))),
        }
    }

    async fn home(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let user = caller.subject.as_str();
        let now = now_epoch_seconds();
        let (wallet, reserve) = (AccountId::wallet(user), AccountId::reserve(user));
        let accounts = [wallet.clone(), reserve.clone()];
        let (partition, accounts, postings, conversations, announced) = tokio::join!(
            self.attention.read(user),
            self.ledger.accounts(&accounts),
            self.ledger.postings(&wallet, None, RECENT as i32),
            self.conversations.summaries(user),
            self.announcements.get(),
        );
        let (partition, accounts, postings, conversations) = (partition?, accounts?, postings?, conversations?);
        let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
        let facts = announcements::facts(header(PLATFORM_HEADER), header(APP_VERSION_HEADER));
        let balance = |id: &AccountId| match accounts.get(id) {
            Some(account) => Balance {
                amount: account.currency.rescale(account.balance).to_string(),
                currency: Some(account.currency.code()),
            },
            // An account exists from its first credit; before that it is empty.
            None => Balance { amount: "0".into(), currency: None },
        };
        let mut candidates = partition.elements;
        candidates.extend(announced.for_user(&facts, user, now));
        let in_wallet = balance(&wallet);
        let card = serde_json::to_value(&in_wallet).map_err(Problem::internal)?;
        let ranked = rank(candidates, balance_card(card), &partition.dismissed, now);
        let show = |d: rust_decimal::Decimal| accounts.get(&wallet).map_or(d, |a| a.currency.rescale(d)).to_string();
        let recent_postings = postings
            .iter()
            .map(|p| RecentPosting { sequence: p.sequence, amount: show(p.amount), kind: p.kind.clone(), at: p.at })
            .collect();
        let mut unread: Vec<_> = conversations.into_iter().filter(|c| c.unread > 0).collect();
        unread.sort_by_key(|c| std::cmp::Reverse(c.last_at));
        let unread_conversations = unread
            .iter()
            .take(RECENT)
            .map(|c| Unread {
                counterparty: c.counterparty.as_str().to_owned(),
                unread: c.unread,
                last_text: c.last_text.clone(),
                last_at: c.last_at,
            })
            .collect();
        let view = HomeView {
            ranked,
            personalized: Personalized {
                display_name: crate::auth::claim(request, "name"),
                wallet: in_wallet,
                reserve: balance(&reserve),
                recent_postings,
                unread_conversations,
                linked_platforms: listed(&partition.personal, PersonalKind::Link),
                devices: listed(&partition.personal, PersonalKind::Device),
            },
        };
        let mut body = serde_json::to_value(&view).map_err(Problem::internal)?;
        // Of what is shown, not of when to call again (that counts down by the second).
        let refresh = body.as_object_mut().and_then(|fields| fields.remove("refresh_after_seconds"));
        let tag = etag(&body);
        body["refresh_after_seconds"] = refresh.unwrap_or_default();
        let seen = request.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
        let current =
            |seen: &str| seen.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == tag);
        let mut response = match seen.is_some_and(current) {
            true => {
                Response::builder().status(StatusCode::NOT_MODIFIED).body(Body::Empty).map_err(Problem::internal)?
            }
            false => json_response(StatusCode::OK, &body),
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, HeaderValue::from_str(&tag).map_err(Problem::internal)?);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
        headers.insert(
            header::VARY,
            HeaderValue::from_static("Authorization, If-None-Match, X-Superpay-Platform, X-Superpay-App-Version"),
        );
        Ok(response)
    }

    /// The user dismisses element `id`: it is not shown again (for `DISMISSAL_SECONDS`). Dismissing
    /// it again answers the same; a critical element (money the user may lose) is refused.
    async fn dismiss(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let user = caller.subject.as_str();
        // Follows the id rule, as every path parameter does (`http::admit`).
        let id = path_parameter(request, "id")?;
        let partition = self.attention.read(user).await?;
        let known = partition.elements.iter().find(|e| e.id == id);
        if known.is_some_and(|e| e.critical) || id == "balance" {
            return Err(Problem::new(
                catalogue::HOME_ELEMENT_NOT_DISMISSABLE,
                format!("element {id:?} cannot be dismissed: it goes when what it is about is resolved"),
            ));
        }
        let answer = Dismissed { id: id.to_owned(), dismissed: true };
        if partition.dismissed.contains(id) {
            return Ok(json_response(StatusCode::OK, &answer));
        }
        // Announcements are not stored per user: one that is published may be dismissed.
        let announced = match id.strip_prefix("announcement:") {
            Some(announcement) => self.announcements.get().await.publishes(announcement),
            None => false,
        };
        if known.is_none() && !announced {
            return Err(Problem::new(catalogue::UNKNOWN_HOME_ELEMENT, format!("your home has no element {id:?}")));
        }
        match transact(&self.dynamodb, vec![self.attention.dismissal_item(user, id, now_epoch_seconds())?]).await {
            Ok(()) => Ok(json_response(StatusCode::OK, &answer)),
            Err(e) if e.broke(DISMISSAL_NEW) => Ok(json_response(StatusCode::OK, &answer)),
            Err(e) => Err(Problem::internal(e)),
        }
    }
}
