//! The home interface (capability 5): the one element a user must see first
//! (`primary`), the others in named placements, and what is personal around them. Its candidates
//! come from live state (money at risk, security events, time-bound items), from announcements
//! (`announcements`, a config group the one rules module evaluates) and a default balance card;
//! this module ranks them. Pure: the shell brings the candidates and what the user dismissed.
//!
//! The order is total and documented (`Element::rank_key`): class first (money at risk, security,
//! time-bound, announcement, default), then the nearest deadline, then the most recent, then the
//! id. So money at risk and security are never outranked by an announcement. An element's id
//! derives from its source (`offline:<payment>`), so a source gives one element however often it is
//! read; the server drops what expired and what the user dismissed (never a critical element).

pub mod announcements;
pub mod api;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

pub use crate::attention::{Action, Class, Element, Personal, PersonalKind};
use crate::crypto::sha256_hex;

/// How many elements one placement shows.
pub const PLACEMENT_LIMIT: usize = 5;
/// The bounds of `refresh_after_seconds`: a client polls no more often than the first (a rate
/// limit on its refreshes), and no less often than the second.
pub const REFRESH_SECONDS: (i64, i64) = (15, 300);

/// What the home shows: the primary element and the others by placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Ranked {
    pub primary: Element,
    pub placements: BTreeMap<&'static str, Vec<Element>>,
    pub refresh_after_seconds: i64,
}

/// Ranks `candidates` and `default` at `now` for a user who dismissed `dismissed`: drops the
/// expired, keeps one element per id (the most recent), drops the dismissed unless critical,
/// orders the rest totally; the first is the primary (`default`, last of all, when nothing else is
/// left), the others go to their placements, at most `PLACEMENT_LIMIT` each (so the balance card
/// is always shown: first, or in its own placement). The client is told to refresh when the next
/// element expires or falls due, within `REFRESH_SECONDS`.
pub fn rank(candidates: Vec<Element>, default: Element, dismissed: &BTreeSet<String>, now: i64) -> Ranked {
    // One per id: the most recent; two read at the same moment are told apart by their content,
    // so the answer never depends on the order the sources were read in.
    let version = |e: &Element| (e.at, e.kind.clone(), serde_json::to_string(e).unwrap_or_default());
    let mut by_id: BTreeMap<String, Element> = BTreeMap::new();
    for element in candidates.into_iter().chain([default.clone()]).filter(|e| e.live_at(now)) {
        match by_id.get(&element.id) {
            Some(kept) if version(kept) >= version(&element) => {}
            _ => {
                by_id.insert(element.id.clone(), element);
            }
        }
    }
    let mut shown: Vec<Element> = by_id.into_values().filter(|e| e.critical || !dismissed.contains(&e.id)).collect();
    shown.sort_by(|a, b| a.rank_key().cmp(&b.rank_key()));
    let next = shown.iter().flat_map(|e| [e.expires_at, e.deadline]).flatten().filter(|at| *at > now).min();
    let refresh_after_seconds =
        next.map_or(REFRESH_SECONDS.1, |at| at - now).clamp(REFRESH_SECONDS.0, REFRESH_SECONDS.1);
    let mut shown = shown.into_iter();
    let primary = shown.next().unwrap_or(default);
    let mut placements: BTreeMap<&'static str, Vec<Element>> = BTreeMap::new();
    for element in shown {
        let placed = placements.entry(element.class.placement()).or_default();
        if placed.len() < PLACEMENT_LIMIT {
            placed.push(element);
        }
    }
    Ranked { primary, placements, refresh_after_seconds }
}

/// How many of a kind of personal items (linked platforms, devices) the home lists: the most
/// recent; the whole list is the kind's own route's.
pub const LISTED: usize = 10;

/// What the home lists of `kind` among `personal`: the data of the most recent `LISTED`, newest
/// first (ties by id, so the answer never depends on the order they were read in).
pub fn listed(personal: &[Personal], kind: PersonalKind) -> Vec<Value> {
    let mut of_kind: Vec<&Personal> = personal.iter().filter(|p| p.kind == kind).collect();
    of_kind.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
    of_kind.into_iter().take(LISTED).map(|p| p.data.clone()).collect()
}

/// The entity tag of a home answer: a hash of its body, which already holds everything it varies
/// on (the user's state, the announcement the request's platform and app version chose).
pub fn etag(body: &Value) -> String {
    format!("\"{}\"", &sha256_hex(body.to_string().as_bytes())[..32])
}

/// The balance card, the default element: shown first when nothing else is.
pub fn balance_card(balance: Value) -> Element {
    Element {
        id: "balance".into(),
        kind: "balance".into(),
        class: Class::Default,
        reason: "your wallet's balance".into(),
        data: json!({"wallet": balance}),
        actions: vec![
            Action::call("top_up", "POST", "/wallet/cash-ins"),
            Action::call("history", "GET", "/wallet/postings"),
        ],
        deadline: None,
        expires_at: None,
        // Last of its class, and the same at every call (an answer's ETag covers it).
        at: 0,
        critical: true,
        explain: json!({"rule": "default", "inputs": {}}),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn no_number_of_money_elements_pushes_a_security_event_out_of_view() {
        let mut candidates: Vec<Element> =
            (0..10).map(|i| element(&format!("miniapp_request:r_{i}"), Class::MoneyAtRisk, None, i)).collect();
        candidates.push(element("security:x", Class::Security, None, 0));
        let ranked = rank(candidates, balance_card(json!({})), &BTreeSet::new(), 100);
        assert_eq!(ranked.placements["alerts"].len(), PLACEMENT_LIMIT);
        assert_eq!(ranked.placements["security"].iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["security:x"]);
    }

    #[test]
    fn personal_items_are_listed_by_kind_newest_first_at_most_listed() {
        let item = |kind, id: &str, at| Personal { kind, id: id.into(), at, data: json!({"id": id}) };
        let mut personal: Vec<Personal> = (0..12).map(|i| item(PersonalKind::Link, &format!("l_{i:02}"), i)).collect();
        personal.push(item(PersonalKind::Device, "d_1", 5));
        personal.push(item(PersonalKind::Device, "d_0", 5));
        let links = listed(&personal, PersonalKind::Link);
        assert_eq!(links.len(), LISTED);
        assert_eq!((links[0]["id"].as_str(), links[9]["id"].as_str()), (Some("l_11"), Some("l_02")));
        personal.reverse();
        assert_eq!(listed(&personal, PersonalKind::Device), vec![json!({"id": "d_1"}), json!({"id": "d_0"})]);
    }

    fn element(id: &str, class: Class, deadline: Option<i64>, at: i64) -> Element {
        Element {
            id: id.into(),
            kind: "test".into(),
            class,
            reason: "r".into(),
            data: json!({}),
            actions: vec![],
            deadline,
            expires_at: None,
            at,
            critical: class == Class::MoneyAtRisk,
            explain: json!({}),
        }
    }

    fn default() -> Element {
        balance_card(json!({"amount": "1.00", "currency": "USD"}))
    }

    /// Candidates with ids from a small set (so some repeat); an id's class is always the same,
    /// as a source's is.
    fn candidates() -> impl Strategy<Value = Vec<Element>> {
        const CLASSES: [Class; 4] = [Class::MoneyAtRisk, Class::Security, Class::TimeBound, Class::Announcement];
        prop::collection::vec(
            (0u8..12, prop::option::of(100i64..200), 0i64..50, prop::option::of(0i64..300), any::<bool>()),
            0..16,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .map(|(id, deadline, at, expires_at, critical)| {
                    (id, CLASSES[usize::from(id) % 4], deadline, at, expires_at, critical)
                })
                .map(|(id, class, deadline, at, expires_at, critical)| Element {
                    expires_at,
                    critical: critical || class == Class::MoneyAtRisk,
                    ..element(&format!("e{id}"), class, deadline, at)
                })
                .collect()
        })
    }

    fn order(ranked: &Ranked) -> Vec<&Element> {
        let placed = ["alerts", "security", "reminders", "announcements", "balance"]
            .iter()
            .flat_map(|p| ranked.placements.get(p))
            .flatten();
        std::iter::once(&ranked.primary).chain(placed).collect()
    }

    proptest! {
        /// The order is total and deterministic: any arrangement of the same candidates ranks
        /// alike; money at risk comes first whenever there is any; no id twice, nothing expired,
        /// nothing dismissed unless critical.
        #[test]
        fn the_ranking_is_a_total_order_with_money_at_risk_first(
            elements in candidates(),
            dismissed in prop::collection::btree_set((0u8..12).prop_map(|i| format!("e{i}")), 0..6),
            now in 0i64..300,
            seed in any::<u64>(),
        ) {
            let ranked = rank(elements.clone(), default(), &dismissed, now);
            let mut shuffled = elements.clone();
            let len = shuffled.len().max(1);
            shuffled.rotate_left((seed as usize) % len);
            shuffled.reverse();
            prop_assert_eq!(&rank(shuffled, default(), &dismissed, now), &ranked);

            let live: Vec<&Element> = elements.iter().filter(|e| e.expires_at.is_none_or(|at| now < at)).collect();
            let money = live.iter().any(|e| e.class == Class::MoneyAtRisk);
            prop_assert_eq!(ranked.primary.class == Class::MoneyAtRisk, money);
            let shown = order(&ranked);
            let ids: BTreeSet<&str> = shown.iter().map(|e| e.id.as_str()).collect();
            prop_assert_eq!(ids.len(), shown.len(), "no duplicates");
            for e in &shown {
                prop_assert!(e.expires_at.is_none_or(|at| now < at), "expired {:?}", e);
                prop_assert!(e.critical || !dismissed.contains(&e.id), "dismissed {:?}", e);
            }
            // Within each placement (and from the primary on), the order never goes back.
            for placed in ranked.placements.values() {
                prop_assert!(placed.windows(2).all(|w| w[0].rank_key() < w[1].rank_key()));
                prop_assert!(placed.iter().all(|e| ranked.primary.rank_key() < e.rank_key()));
                prop_assert!(placed.len() <= PLACEMENT_LIMIT);
            }
            prop_assert!((REFRESH_SECONDS.0..=REFRESH_SECONDS.1).contains(&ranked.refresh_after_seconds));
        }
    }

    #[test]
    fn an_announcement_never_outranks_money_or_security_and_the_balance_card_is_the_default() {
        let urgent = Element { deadline: Some(1), ..element("announcement:sale", Class::Announcement, None, 99) };
        let security = element("security:device", Class::Security, None, 1);
        let ranked = rank(vec![urgent.clone(), security.clone()], default(), &BTreeSet::new(), 0);
        assert_eq!(ranked.primary.id, "security:device");
        assert_eq!(ranked.placements["announcements"], vec![urgent]);
        assert_eq!(ranked.placements["balance"], vec![default()], "outranked, the card is still shown");
        // Dismissed, the security element gives way; nothing else left: the balance card.
        let dismissed = BTreeSet::from(["security:device".to_owned()]);
        let ranked = rank(vec![security], default(), &dismissed, 0);
        assert_eq!((ranked.primary.id.as_str(), ranked.placements.len()), ("balance", 0));
        // A critical element stays dismissed or not; the nearest deadline first, then the newest.
        let a = element("topup:a", Class::MoneyAtRisk, Some(150), 1);
        let b = element("topup:b", Class::MoneyAtRisk, Some(120), 0);
        let c = element("topup:c", Class::MoneyAtRisk, None, 9);
        let dismissed = BTreeSet::from(["topup:b".to_owned()]);
        let ranked = rank(vec![a, b, c], default(), &dismissed, 0);
        let alerts: Vec<&str> = ranked.placements["alerts"].iter().map(|e| e.id.as_str()).collect();
        assert_eq!((ranked.primary.id.as_str(), alerts), ("topup:b", vec!["topup:a", "topup:c"]));
        assert_eq!(ranked.refresh_after_seconds, 120, "when the first deadline falls due");
    }

    #[test]
    fn one_element_per_source_the_latest_and_none_past_its_expiry() {
        let old =
            Element { kind: "order.awaiting_merchant".into(), ..element("order:o_1", Class::MoneyAtRisk, None, 1) };
        let new = Element { kind: "order.declined".into(), ..element("order:o_1", Class::MoneyAtRisk, None, 5) };
        let gone = Element { expires_at: Some(10), ..element("security:x", Class::Security, None, 2) };
        let ranked = rank(vec![new.clone(), old, gone], default(), &BTreeSet::new(), 10);
        assert_eq!(ranked.primary.kind.as_str(), "order.declined");
        assert_eq!(ranked.placements.keys().copied().collect::<Vec<_>>(), ["balance"], "the expired one is not shown");
    }

    #[test]
    fn every_action_the_home_offers_is_a_route_of_the_api() {
        let table: Value = serde_json::from_str(include_str!("../flows/house-table.json")).unwrap();
        let routes = table["routes"].as_object().unwrap();
        let route = |method: &str, path: &str| {
            // A concrete path matches its route's template segment by segment.
            routes.keys().any(|key| {
                let Some((m, template)) = key.split_once(' ') else { return false };
                let (a, b): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
                m == method && a.len() == b.len() && a.iter().zip(&b).all(|(t, p)| t == p || t.starts_with('{'))
            })
        };
        let actions = default().actions.into_iter().chain([
            Action::call("view", "GET", "/purchases/o_1"),
            Action::call("messages", "GET", "/conversations/platform/messages"),
        ]);
        for action in actions {
            let (method, path) = (action.method.unwrap(), action.path.unwrap());
            assert!(route(&method, &path), "{method} {path}");
        }
    }

    #[test]
    fn the_etag_changes_with_the_body_only() {
        let body = json!({"primary": {"id": "balance"}});
        assert_eq!(etag(&body), etag(&body.clone()));
        assert_ne!(etag(&body), etag(&json!({"primary": {"id": "topup:p_1"}})));
        assert!(etag(&body).starts_with('"') && etag(&body).len() == 34);
    }
}
