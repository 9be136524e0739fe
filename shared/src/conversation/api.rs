//! The conversations function's HTTP routes (template.yaml `ConversationsFunction`), for the user:
//!
//! - `GET  /conversations`                                  every conversation, with unread counts
//! - `GET  /conversations/{counterparty}/messages?before=N` messages newest first, 50 a page
//! - `POST /conversations/{counterparty}/read`              `{"up_to": N}` marks them read

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;

use super::Counterparty;
use super::store::ConversationStore;
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::http::{json_body, json_response, path_parameter, query_parameter, route_key};
use crate::problem::catalogue;

const PAGE: i32 = 50;

pub struct ConversationsApi {
    store: ConversationStore,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadUpTo {
    up_to: u64,
}

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
            return Ok(json_response(StatusCode::OK, &json!({ "conversations": conversations })));
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
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "counterparty": with, "messages": messages, "next_before": next_before }),
                ))
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
