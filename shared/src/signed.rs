//! Signed requests from merchants, terminals, devices and partners (DESIGN.md): read the signature
//! headers, look the key up (the caller's part), then check signature, window and single use.

use lambda_http::Request;

use crate::Problem;
use crate::crypto::{Key, Signature};
use crate::http::{body_bytes, header};
use crate::nonce::NonceStore;

/// The signature headers of `request`; 401 when they are missing or malformed.
pub fn signature(request: &Request) -> Result<Signature, Problem> {
    Ok(Signature::from_headers(|name| header(request, name).ok().flatten())?)
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
