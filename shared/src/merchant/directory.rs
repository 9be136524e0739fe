//! Merchants with their working keys: who signed a request, and the keys we sign our calls to them with.

use std::sync::Arc;

use super::store::MerchantStore;
use super::{Merchant, require_active, unknown_merchant};
use crate::Problem;
use crate::clock::now_epoch_seconds;
use crate::crypto::SignatureError;
use crate::keys::{KeyRing, KeyService, PartyKeys};
use crate::nonce::NonceStore;
use crate::party_keys::KeyedParty;
use crate::signed;

pub struct MerchantDirectory {
    store: MerchantStore,
    ring: KeyRing,
}

impl MerchantDirectory {
    pub fn new(store: MerchantStore, keys: KeyService) -> Self {
        MerchantDirectory { store, ring: KeyRing::new(keys) }
    }

    /// See `MerchantStore::active_check`.
    pub fn active_check(&self, id: &str) -> Result<crate::dynamo::Write, crate::dynamo::StoreError> {
        self.store.active_check(id)
    }

    /// The merchant, whatever its status.
    pub async fn get(&self, id: &str) -> Result<Merchant, Problem> {
        self.store.get(id).await?.ok_or_else(|| unknown_merchant(id))
    }

    /// The merchant, if it exists and is active.
    pub async fn active(&self, id: &str) -> Result<Merchant, Problem> {
        require_active(self.store.get(id).await?, id)
    }

    /// The keys we sign our calls to `merchant` with (its previous key while honoured).
    pub async fn keys(&self, merchant: &Merchant) -> Result<Arc<PartyKeys>, Problem> {
        Ok(self.ring.signing_keys(&merchant.kms_owner(), &merchant.stored_key(), now_epoch_seconds()).await?)
    }

    /// The merchant who signed `request` (signature, time window, single-use nonce), whatever its
    /// status: the caller decides what a suspended merchant may still do.
    pub async fn signer(
        &self,
        request: &lambda_http::Request,
        nonces: &NonceStore,
        now: i64,
    ) -> Result<Merchant, Problem> {
        let signature = signed::signature(request)?;
        let (merchant, keys) = self.by_key_id(&signature.key_id).await?;
        signed::check(request, &signature, &keys.signing, nonces, now).await?;
        Ok(merchant)
    }

    /// The merchant a signature's key id names (`<merchant id>.k<n>`), with that key: its current
    /// key, or the previous one while it is honoured.
    pub async fn by_key_id(&self, key_id: &str) -> Result<(Merchant, Arc<PartyKeys>), Problem> {
        let merchant_id = key_id.split_once('.').map(|(m, _)| m).ok_or(SignatureError::UnknownKey)?;
        let merchant = self.store.get(merchant_id).await?.ok_or(SignatureError::UnknownKey)?;
        let keys = self
            .ring
            .named_keys(key_id, &merchant.kms_owner(), &merchant.stored_key(), now_epoch_seconds())
            .await?
            .ok_or(SignatureError::UnknownKey)?;
        Ok((merchant, keys))
    }
}
