//! Our signed HTTP client to a merchant's product server (through `crate::outbound`): a call whose
//! signed answer we wait for (the purchase relay's order, `crate::purchase::relay`), and the
//! webhooks that tell the merchant what happened (purchases, offline payments).

use serde::Serialize;

use super::Merchant;
use crate::keys::PartyKeys;
use crate::outbound::PartnerClient;

#[derive(Default)]
pub struct MerchantClient {
    partner: PartnerClient,
}

impl MerchantClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// POSTs `body` to `<product_server_url><path>`, signed, and gives the body of its signed
    /// answer; `Err` says why there is no usable answer.
    pub async fn exchange(
        &self,
        merchant: &Merchant,
        path: &str,
        keys: &PartyKeys,
        body: Vec<u8>,
        now: i64,
    ) -> Result<Vec<u8>, String> {
        let url = format!("{}{path}", merchant.product_server_url);
        self.partner.exchange(&url, keys, body, now).await.map_err(|e| format!("the product server: {e}"))
    }

    /// Delivers a signed webhook to `<product_server_url>/webhooks`; `Err` says why it must be retried.
    pub async fn webhook(
        &self,
        merchant: &Merchant,
        keys: &PartyKeys,
        body: &impl Serialize,
        now: i64,
    ) -> Result<(), String> {
        let url = format!("{}/webhooks", merchant.product_server_url);
        let body = serde_json::to_vec(body).map_err(|e| format!("the webhook's body: {e}"))?;
        self.partner.deliver(&url, keys, body, now).await.map_err(|e| format!("the product server: {e}"))
    }
}
