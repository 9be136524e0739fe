//! Signed calls we make to a partner's server (a merchant's product server, a mini-app's server,
//! the payers' bank): the request is signed with the partner's request-signing key (the canonical
//! request of docs/design.md, "Signed calls"), and an answer counts only if it is signed with the
//! same key over method `RESPONSE` and the request's path and nonce, so an answer cannot be
//! replayed onto another request.
//!
//! The client follows no redirect (a 307 would carry our signed POST elsewhere) and connects only to
//! public addresses (`AddressPolicy`): a name is checked on every address it resolves to, when the
//! connection is made (so a name cannot resolve to a public address when registered and to a
//! private one later), and an IP literal in the URL, which no resolver sees, before sending.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use crate::crypto::{Signature, SignatureError};
use crate::keys::PartyKeys;

/// Well under API Gateway's 30 s, so a slow partner leaves time to answer the client.
pub const PARTNER_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read from a partner; every answer of the protocols is a few hundred bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a partner's answer is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the server did not answer within {} s", PARTNER_TIMEOUT.as_secs())]
    Timeout,
    #[error("the server could not be reached: {0}")]
    Unreachable(String),
    /// The server's address is one we never call (`AddressPolicy`); nothing was sent.
    #[error("the server's address is refused: {0}")]
    Refused(String),
    #[error("the server answered HTTP {status}{note}", status = .0, note = if (300..400).contains(.0) { " (redirects are not followed)" } else { "" })]
    Status(u16),
    #[error("the answer is not signed: {0}")]
    Unsigned(String),
    #[error("the answer's signature does not verify")]
    BadSignature,
}

/// The path an answer's signature covers: the request's path and nonce.
pub fn answer_path(request_path: &str, request_nonce: &str) -> String {
    format!("{request_path}#{request_nonce}")
}

/// The path part of an absolute URL, which is what signatures cover.
pub fn url_path(url: &str) -> String {
    url.split("://").nth(1).and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned())).unwrap_or_else(|| "/".into())
}

/// Which addresses a partner call may connect to: public unicast addresses only, and loopback where
/// partners are the local stack's simulators on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
}

impl AddressPolicy {
    /// Loopback is allowed only where plain http partners are (`ALLOW_PLAIN_HTTP_PARTNERS=true`,
    /// template parameter `AllowPlainHttpPartners`, which only the local stack sets); unset: refused.
    pub fn from_env() -> Self {
        AddressPolicy { allow_loopback: std::env::var("ALLOW_PLAIN_HTTP_PARTNERS").is_ok_and(|v| v == "true") }
    }

    /// Why `ip` may not be called (`"a private address"`), or `None` when it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        match ip {
            IpAddr::V4(ip) => self.refusal_v4(ip),
            IpAddr::V6(ip) => self.refusal_v6(ip),
        }
    }

    fn refusal_v4(&self, ip: Ipv4Addr) -> Option<&'static str> {
        let [a, b, c, _] = ip.octets();
        Some(match (a, b, c) {
            _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "the cloud metadata address",
            (0, _, _) => "an unspecified address",
            (127, _, _) if self.allow_loopback => return None,
            (127, _, _) => "a loopback address",
            (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address",
            (100, 64..=127, _) => "a shared (carrier-grade NAT) address",
            (169, 254, _) => "a link-local address",
            // IETF protocol assignments, e.g. 192.0.0.192 (Oracle Cloud's metadata).
            (192, 0, 0) => "a reserved address",
            (198, 18..=19, _) => "a benchmarking address",
            (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
            (224..=239, _, _) => "a multicast address",
            _ if ip.is_broadcast() => "the broadcast address",
            (240..=255, _, _) => "a reserved address",
            _ => return None,
        })
    }

    fn refusal_v6(&self, ip: Ipv6Addr) -> Option<&'static str> {
        let segments = ip.segments();
        let embedded_v4 = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
        Some(match segments {
            _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => "the cloud metadata address",
            _ if ip.is_unspecified() => "an unspecified address",
            _ if ip.is_loopback() && self.allow_loopback => return None,
            _ if ip.is_loopback() => "a loopback address",
            // IPv4-mapped (::ffff:a.b.c.d) and the deprecated IPv4-compatible (::a.b.c.d): the IPv4 address is called.
            [0, 0, 0, 0, 0, 0xffff | 0, high, low] => return self.refusal_v4(embedded_v4(high, low)),
            // IPv4-translated (::ffff:0:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach the IPv4
            // address they embed; a local NAT64 prefix (64:ff9b:1::/48) reaches local networks.
            [0, 0, 0, 0, 0xffff, 0, high, low] => return self.refusal_v4(embedded_v4(high, low)),
            [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return self.refusal_v4(embedded_v4(high, low)),
            [0x64, 0xff9b, 1, ..] => "a local NAT64 address",
            // Teredo (2001:0::/32) tunnels to an address we cannot judge.
            [0x2001, 0, ..] => "a Teredo address",
            // 6to4 (2002:AABB:CCDD::) routes to the IPv4 address it embeds.
            [0x2002, high, low, ..] => return self.refusal_v4(embedded_v4(high, low)),
            [first, ..] if first & 0xfe00 == 0xfc00 => "a unique-local address",
            [first, ..] if first & 0xffc0 == 0xfe80 => "a link-local address",
            [first, ..] if first & 0xffc0 == 0xfec0 => "a site-local address",
            [first, ..] if first & 0xff00 == 0xff00 => "a multicast address",
            _ => return None,
        })
    }

    /// Refuses a name if any address it resolves to is refused: one bad address is enough to make
    /// the name untrustworthy, and which one a connection would use is not ours to choose.
    fn check_name(&self, host: &str, addresses: &[SocketAddr]) -> Result<(), Refused> {
        match addresses.iter().find_map(|a| Some((a.ip(), self.refusal(a.ip())?))) {
            Some((ip, why)) => Err(Refused(format!("{host} resolves to {ip}, {why}"))),
            None => Ok(()),
        }
    }
}

/// A refused address, as the resolver reports it through reqwest's error chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Resolves names as the system does, then refuses the name if any of its addresses is refused:
/// checked when the connection is made, so DNS cannot answer differently later (rebinding).
struct CheckedResolver(AddressPolicy);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            policy.check_name(&host, &addresses)?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The process's one HTTP client for partners (product servers, mini-app servers, the bank), built
/// on the first call that needs it: building one reads the TLS roots (2-5 ms, `cargo stack bench`),
/// which a cold start whose request calls no partner should not pay, and two would pay twice. A
/// process uses one policy; the other slot serves tests.
fn http(policy: AddressPolicy) -> &'static reqwest::Client {
    static CLIENTS: [OnceLock<reqwest::Client>; 2] = [const { OnceLock::new() }; 2];
    CLIENTS[usize::from(policy.allow_loopback)].get_or_init(|| {
        reqwest::Client::builder()
            .timeout(PARTNER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(CheckedResolver(policy))
            // Through a proxy, the proxy's address would be the one checked, not the partner's.
            .no_proxy()
            .build()
            // Building fails only if the TLS backend cannot start, which no request could survive either.
            .expect("the HTTP client builds")
    })
}

/// The refusal somewhere in a failed call's error chain, if the resolver refused the address.
fn refusal_in(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(Refused(why)) = e.downcast_ref::<Refused>() {
            return Some(why.clone());
        }
        source = e.source();
    }
    None
}

pub struct PartnerClient {
    policy: AddressPolicy,
}

/// The process's policy (`AddressPolicy::from_env`).
impl Default for PartnerClient {
    fn default() -> Self {
        PartnerClient::new(AddressPolicy::from_env())
    }
}

impl PartnerClient {
    pub fn new(policy: AddressPolicy) -> Self {
        PartnerClient { policy }
    }

    /// POSTs `body` signed to `url` and sends the response back, or why there is none.
    async fn post(
        &self,
        url: &str,
        keys: &PartyKeys,
        body: Vec<u8>,
        now: i64,
    ) -> Result<(Signature, reqwest::Response), CallError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| CallError::Unreachable(format!("{url:?} is not a URL: {e}")))?;
        // An IP literal is connected to without resolving, so it is checked here.
        let literal = parsed.host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse().ok());
        if let Some((ip, why)) = literal.and_then(|ip: IpAddr| Some((ip, self.policy.refusal(ip)?))) {
            return Err(CallError::Refused(format!("{ip} is {why}")));
        }
        let signature = Signature::create(&keys.key_id, &keys.signing, "POST", &url_path(url), &body, now);
        let request = signature.headers().into_iter().fold(
            http(self.policy).post(parsed).header("content-type", "application/json").body(body),
            |r, (name, value)| r.header(name, value),
        );
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok((signature, response)),
            Ok(response) => Err(CallError::Status(response.status().as_u16())),
            Err(e) if e.is_timeout() => Err(CallError::Timeout),
            Err(e) => Err(refusal_in(&e).map_or_else(|| CallError::Unreachable(e.to_string()), CallError::Refused)),
        }
    }

    /// A signed request whose answer must be signed by the same key: the answer's body.
    pub async fn exchange(&self, url: &str, keys: &PartyKeys, body: Vec<u8>, now: i64) -> Result<Vec<u8>, CallError> {
        let (signature, mut response) = self.post(url, keys, body, now).await?;
        let headers = response.headers().clone();
        // Read before its signature can be checked, so bounded: a runaway answer must not exhaust memory.
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if answer.len() + chunk.len() <= MAX_ANSWER_BYTES => answer.extend_from_slice(&chunk),
                Ok(Some(_)) => return Err(CallError::Unsigned(format!("the answer is over {MAX_ANSWER_BYTES} bytes"))),
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(CallError::Timeout),
                Err(e) => return Err(CallError::Unreachable(format!("the answer was cut off: {e}"))),
            }
        }
        let answer_signature = Signature::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
            .map_err(|e| match e {
                SignatureError::Missing(header) => CallError::Unsigned(format!("header {header} is missing")),
                other => CallError::Unsigned(other.to_string()),
            })?;
        if answer_signature.key_id != keys.key_id
            || answer_signature
                .check(&keys.signing, "RESPONSE", &answer_path(&url_path(url), &signature.nonce), &answer, now)
                .is_err()
        {
            return Err(CallError::BadSignature);
        }
        Ok(answer)
    }

    /// A signed notification (a webhook): delivered when the server answers 2xx.
    pub async fn deliver(&self, url: &str, keys: &PartyKeys, body: Vec<u8>, now: i64) -> Result<(), CallError> {
        self.post(url, keys, body, now).await.map(|_| ())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use proptest::prelude::*;

    use super::*;
    use crate::crypto::Key;

    const DEPLOYED: AddressPolicy = AddressPolicy { allow_loopback: false };
    const LOCAL: AddressPolicy = AddressPolicy { allow_loopback: true };

    /// Serves `app` on a free port of 127.0.0.1 for the calling test.
    pub(crate) async fn local_server(app: axum::Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let address = listener.local_addr().expect("a bound address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    const LOOPBACK: Option<&str> = Some("a loopback address");
    const PRIVATE: Option<&str> = Some("a private address");
    const METADATA: Option<&str> = Some("the cloud metadata address");

    /// Every address the rule judges, and its judgement where loopback is not allowed.
    const ADDRESSES: &[(&str, Option<&str>)] = &[
        ("93.184.215.14", None),
        ("8.8.8.8", None),
        ("172.15.255.255", None),
        ("172.32.0.1", None),
        ("100.63.255.255", None),
        ("100.128.0.1", None),
        ("2606:4700::1111", None),
        ("127.0.0.1", LOOPBACK),
        ("127.8.9.10", LOOPBACK),
        ("::1", LOOPBACK),
        ("::ffff:127.0.0.1", LOOPBACK),
        ("10.0.0.1", PRIVATE),
        ("10.255.255.255", PRIVATE),
        ("172.16.0.1", PRIVATE),
        ("172.31.255.255", PRIVATE),
        ("192.168.1.1", PRIVATE),
        ("100.64.0.1", Some("a shared (carrier-grade NAT) address")),
        ("100.127.255.255", Some("a shared (carrier-grade NAT) address")),
        ("169.254.169.254", METADATA),
        ("fd00:ec2::254", METADATA),
        ("169.254.0.1", Some("a link-local address")),
        ("169.254.170.2", Some("a link-local address")),
        ("fe80::1", Some("a link-local address")),
        ("febf::1", Some("a link-local address")),
        ("fec0::1", Some("a site-local address")),
        ("fc00::1", Some("a unique-local address")),
        ("198.18.0.1", Some("a benchmarking address")),
        ("203.0.113.7", Some("a documentation address")),
        ("::ffff:0:10.0.0.1", Some("a private address")),
        ("64:ff9b:1::1", Some("a local NAT64 address")),
        ("2001:0:4136:e378::1", Some("a Teredo address")),
        ("fdff:ffff::1", Some("a unique-local address")),
        ("0.0.0.0", Some("an unspecified address")),
        ("0.1.2.3", Some("an unspecified address")),
        ("::", Some("an unspecified address")),
        ("224.0.0.1", Some("a multicast address")),
        ("239.255.255.250", Some("a multicast address")),
        ("ff02::1", Some("a multicast address")),
        ("255.255.255.255", Some("the broadcast address")),
        ("240.0.0.1", Some("a reserved address")),
        ("192.0.0.192", Some("a reserved address")),
        // IPv6 forms that reach an IPv4 address are judged by it.
        ("::ffff:10.0.0.1", PRIVATE),
        ("::ffff:169.254.169.254", METADATA),
        ("::ffff:8.8.8.8", None),
        ("::10.0.0.1", PRIVATE),
        ("64:ff9b::a00:1", PRIVATE),
        ("64:ff9b::808:808", None),
        ("2002:a00:1::1", PRIVATE),
        ("2002:a9fe:a9fe::", METADATA),
        ("2002:808:808::1", None),
    ];

    #[test]
    fn only_public_addresses_may_be_called() {
        for (address, expected) in ADDRESSES {
            let ip: IpAddr = address.parse().expect("an address");
            assert_eq!(DEPLOYED.refusal(ip), *expected, "{address}");
            // The local stack allows loopback, for its simulators, and nothing more.
            let local = if *expected == LOOPBACK { None } else { *expected };
            assert_eq!(LOCAL.refusal(ip), local, "{address} where loopback is allowed");
        }
    }

    proptest! {
        #[test]
        fn an_ipv4_address_is_judged_alike_in_its_ipv6_forms(bits: u32) {
            let ip = Ipv4Addr::from(bits);
            let judged = DEPLOYED.refusal(IpAddr::V4(ip));
            prop_assert_eq!(DEPLOYED.refusal(IpAddr::V6(ip.to_ipv6_mapped())), judged);
            let [a, b, c, d] = ip.octets();
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            prop_assert_eq!(DEPLOYED.refusal(IpAddr::V6(nat64)), judged);
        }
    }

    fn keys() -> PartyKeys {
        PartyKeys::derive("p_1.k1", &Key::random())
    }

    /// A server that counts the requests it receives and answers 204.
    async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            StatusCode::NO_CONTENT
        });
        (local_server(app).await, hits)
    }

    #[tokio::test]
    async fn a_redirect_is_a_failed_call_and_is_not_followed() {
        let (target, hits) = counting_server().await;
        let elsewhere = format!("http://{target}/elsewhere");
        let app = axum::Router::new().fallback(move || async move {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, elsewhere)]).into_response()
        });
        let redirecting = local_server(app).await;
        let client = PartnerClient::new(LOCAL);
        let url = format!("http://{redirecting}/orders");
        let delivered = client.deliver(&url, &keys(), b"{}".to_vec(), 1_800_000_000).await;
        assert_eq!(delivered, Err(CallError::Status(307)));
        let exchanged = client.exchange(&url, &keys(), b"{}".to_vec(), 1_800_000_000).await;
        assert_eq!(exchanged, Err(CallError::Status(307)));
        assert_eq!(CallError::Status(307).to_string(), "the server answered HTTP 307 (redirects are not followed)");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the signed POST went nowhere else");
    }

    #[tokio::test]
    async fn refused_addresses_get_nothing_whether_named_or_literal() {
        let (server, hits) = counting_server().await;
        let port = server.port();
        let deployed = PartnerClient::new(DEPLOYED);
        for (url, refusal) in [
            (format!("http://127.0.0.1:{port}/x"), "127.0.0.1 is a loopback address"),
            (format!("http://[::ffff:127.0.0.1]:{port}/x"), "::ffff:127.0.0.1 is a loopback address"),
            // The URL parser reads other spellings of an IPv4 address as the address.
            (format!("http://0x7f.1:{port}/x"), "127.0.0.1 is a loopback address"),
            ("http://10.0.0.1:9/x".to_owned(), "10.0.0.1 is a private address"),
            ("https://[fd00:ec2::254]/x".to_owned(), "fd00:ec2::254 is the cloud metadata address"),
        ] {
            let called = deployed.deliver(&url, &keys(), b"{}".to_vec(), 1_800_000_000).await;
            assert_eq!(called, Err(CallError::Refused(refusal.into())), "{url}");
        }
        // A name is judged by what it resolves to, when the connection is made.
        let named = deployed.exchange(&format!("http://localhost:{port}/x"), &keys(), vec![], 1_800_000_000).await;
        match named {
            Err(CallError::Refused(why)) => {
                assert!(why.starts_with("localhost resolves to ") && why.ends_with(", a loopback address"), "{why}")
            }
            other => panic!("localhost must be refused: {other:?}"),
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the server");

        // Where loopback is allowed (the local stack), the same server is called, by address or name.
        let local = PartnerClient::new(LOCAL);
        for url in [format!("http://127.0.0.1:{port}/x"), format!("http://localhost:{port}/x")] {
            assert_eq!(local.deliver(&url, &keys(), b"{}".to_vec(), 1_800_000_000).await, Ok(()), "{url}");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}
