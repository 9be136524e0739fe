//! Signed requests from merchants, terminals, devices and partners (docs/design.md, "Signed
//! calls"): read the signature headers, look the key up (the caller's part), then check signature,
//! window and single use.

use lambda_http::Request;

use crate::crypto::{HEADER_KEY_ID, Key, Signature};
use crate::http::{body_bytes, header};
use crate::nonce::NonceStore;
use crate::{Problem, ids};

/// The signature headers of `request`; 401 when they are missing or malformed, 400 `invalid_id`
/// when the key id is not an id (checked here, before the caller looks the key up).
pub fn signature(request: &Request) -> Result<Signature, Problem> {
    let signature = Signature::from_headers(|name| header(request, name).ok().flatten())?;
    ids::check_key_id(HEADER_KEY_ID, &signature.key_id)?;
    Ok(signature)
}

/// Checks `signature` over `request` with the signer's request-signing key, then spends its nonce.
pub async fn check(
    request: &Request,
    signature: &Signature,
    signing: &Key,
    nonces: &NonceStore,
    now: i64,
) -> Result<(), Problem> {
    signature.check(signing, request.method().as_str(), request.uri().path(), body_bytes(request), now)?;
    nonces.use_once(&signature.key_id, &signature.nonce, now).await??;
    Ok(())
}
