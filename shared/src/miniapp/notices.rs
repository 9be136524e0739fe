//! What the notifier (`crate::notifier`) does with the notifications queue's `miniapp.outcome`:
//! the outcome's message in the user's conversation with the mini-app (if the request's own call
//! did not post it), then the signed outcome to the app's server, recorded on the outbox item so a
//! redelivery does not tell the server twice.

use super::relay::MiniAppClient;
use super::store::{MiniAppDirectory, MiniAppStore, RequestStore};
use crate::aws::{self, MissingEnv};
use crate::batch::Failure;
use crate::clock::now_epoch_seconds;
use crate::conversation::Counterparty;
use crate::conversation::store::ConversationStore;
use crate::keys::KeyService;
use crate::outbox::Outbox;

pub struct OutcomeNotices {
    apps: MiniAppDirectory,
    requests: RequestStore,
    client: MiniAppClient,
    conversations: ConversationStore,
    outbox: Outbox,
}

impl OutcomeNotices {
    pub fn from_env(
        dynamodb: &aws_sdk_dynamodb::Client,
        keys: KeyService,
        conversations: ConversationStore,
        outbox: Outbox,
    ) -> Result<Self, MissingEnv> {
        Ok(OutcomeNotices {
            apps: MiniAppDirectory::new(MiniAppStore::new(dynamodb.clone(), aws::env("MINIAPPS_TABLE")?), keys),
            requests: RequestStore::new(dynamodb.clone(), aws::env("MINIAPP_REQUESTS_TABLE")?),
            client: MiniAppClient::default(),
            conversations,
            outbox,
        })
    }

    /// The request is read from the table, never taken from the message: the table says how it ended.
    pub async fn outcome(&self, id: &str, request_id: &str) -> Result<(), Failure> {
        let request = self
            .requests
            .get(request_id)
            .await?
            .ok_or_else(|| Failure::poison(format!("unknown mini-app request {request_id:?}")))?;
        let app = self
            .apps
            .store
            .get(&request.app_id)
            .await?
            .ok_or_else(|| Failure::poison(format!("unknown mini-app {:?}", request.app_id)))?;
        // As the request's call posts it: same id, same time, so whichever comes first is the one.
        let message = request.message(&app.interface.title);
        self.conversations.post(&request.user, &Counterparty::mini_app(&app.id), &message, request.created_at).await?;
        if !self.outbox.step_done(id, "outcome").await? {
            let keys = self.apps.keys(&app).await?;
            self.client.notify(&app, &keys, &request.notice(), now_epoch_seconds()).await?;
            self.outbox.mark(id, "outcome").await?;
        }
        Ok(())
    }
}
