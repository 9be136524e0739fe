//! The conversations function's HTTP routes (template.yaml `ConversationsFunction`), for the user:
//!
//! - `GET  /conversations`                                  every conversation, with unread counts
//! - `GET  /conversations/{counterparty}/messages?before=N` messages newest first, 50 a page
//! - `POST /conversations/{counterparty}/read`              `{"up_to": N}` marks them read

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::store::ConversationStore;
use super::{Counterparty, Message, Summary};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::http::{json_body, json_response, path_parameter, query_parameter, route_key};
use crate::problem::catalogue;

const PAGE: i32 = 50;

pub struct ConversationsApi {
    store: ConversationStore,
}

/// `POST /conversations/{counterparty}/read`'s body: every message up to this sequence is read.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct ReadUpTo {
    #[serde(deserialize_with = "crate::http::whole")]
    up_to: u64,
}

/// `GET /conversations`'s answer: every conversation of the user's, with its unread count.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Conversations {
    conversations: Vec<Summary>,
}

/// A page of one conversation's messages, newest first; `next_before` asks for the next page.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct MessagesPage {
    counterparty: Counterparty,
    messages: Vec<Message>,
    next_before: Option<u64>,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Param, RouteDoc, schema, sequence};
    // Within the id rule's 128 characters, as every path parameter.
    fn counterparty(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(platform|merchant:[A-Za-z0-9_.-]{1,119}|miniapp:[A-Za-z0-9_.-]{1,120})$",
        })
    }
    const COUNTERPARTY: &[Param] =
        &[Param { name: "counterparty", description: "merchant:<id>, miniapp:<id> or platform", schema: counterparty }];
    &[
        RouteDoc {
            key: "GET /conversations",
            summary: "every conversation of the user's, with unread counts",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<Conversations>))],
            codes: &[],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /conversations/{counterparty}/messages",
            summary: "one conversation's messages, newest first, 50 a page",
            request: None,
            path: COUNTERPARTY,
            query: &[Param {
                name: "before",
                description: "the page before this message sequence (the last page's next_before)",
                schema: sequence,
            }],
            answers: &[(200, Some(schema::<MessagesPage>))],
            codes: &[catalogue::INVALID_COUNTERPARTY, catalogue::INVALID_CURSOR],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /conversations/{counterparty}/read",
            summary: "mark the messages up to a sequence read",
            request: Some(schema::<ReadUpTo>),
            path: COUNTERPARTY,
            query: &[],
            answers: &[(200, Some(schema::<Summary>))],
            codes: &[catalogue::INVALID_COUNTERPARTY, catalogue::BEYOND_LAST_MESSAGE],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

impl ConversationsApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws::sdk_config().await);
        Ok(ConversationsApi { store: ConversationStore::new(dynamodb, aws::env("CONVERSATIONS_TABLE")?) })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        let user = caller.subject.as_str();
        if route_key(&request) == "GET /conversations" {
            let conversations = self.store.summaries(user).await?;
            return Ok(json_response(StatusCode::OK, &Conversations { conversations }));
        }
        let raw = path_parameter(&request, "counterparty")?;
        let with = Counterparty::parse(raw).ok_or_else(|| {
            Problem::new(
                catalogue::INVALID_COUNTERPARTY,
                format!("{raw:?} is not merchant:<id>, miniapp:<id> or platform"),
            )
        })?;
        match route_key(&request) {
            "GET /conversations/{counterparty}/messages" => {
                let before = query_parameter(&request, "before")
                    .map(|b| {
                        b.parse::<u64>().map_err(|_| {
                            Problem::new(catalogue::INVALID_CURSOR, "before must be a message sequence number")
                        })
                    })
                    .transpose()?;
                let messages = self.store.messages(user, &with, before, PAGE).await?;
                let next_before =
                    (messages.len() == PAGE as usize).then(|| messages.last().map(|m| m.sequence)).flatten();
                Ok(json_response(StatusCode::OK, &MessagesPage { counterparty: with, messages, next_before }))
            }
            "POST /conversations/{counterparty}/read" => {
                let ReadUpTo { up_to } = json_body(&request)?;
                if !self.store.mark_read(user, &with, up_to).await? {
                    return Err(Problem::new(
                        catalogue::BEYOND_LAST_MESSAGE,
                        format!("there is no message {up_to} in this conversation"),
                    ));
                }
                let summary = self.store.summary(user, &with).await?;
                Ok(json_response(StatusCode::OK, &summary))
            }
            other => Err(Problem::new(
                catalogue::UNKNOWN_ROUTE,
                format!("the conversations function has no route {other:?}"),
            )),
        }
    }
}
