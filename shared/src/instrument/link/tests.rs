use super::*;
use serde_json::json;

const NOW: i64 = 1_800_000_000;

fn code(user: &str, issued_at: i64, expires_at: i64) -> Value {
    json!({"key_id": "pp_b.k1", "partner_user": "b-user-7", "user": user, "nonce": "0123456789abcdef01",
           "issued_at": issued_at, "expires_at": expires_at})
}

fn judged(text: &str, key: &Key, caller: &str) -> Result<LinkCode, CodeError> {
    let (code, payload, signature) = LinkCode::parse(text)?;
    code.judge(payload, signature, key, caller, NOW)?;
    Ok(code)
}

#[test]
fn a_code_links_only_for_its_own_user_while_it_lives_and_signed_by_its_partner() {
    let key = Key::random();
    let good = issue(&code("alice", NOW - 10, NOW + 290), &key);
    let linked = judged(&good, &key, "alice").expect("a good code");
    assert_eq!((linked.partner(), linked.partner_user.as_str()), ("pp_b", "b-user-7"));
    assert_eq!(judged(&good, &key, "mallory"), Err(CodeError::NotYours));
    assert_eq!(judged(&good, &Key::random(), "alice"), Err(CodeError::Forged));
    for (issued, expires) in [(NOW - 300, NOW), (NOW - 10, NOW + 291), (NOW + 31, NOW + 100), (NOW, NOW)] {
        let text = issue(&code("alice", issued, expires), &key);
        assert_eq!(judged(&text, &key, "alice"), Err(CodeError::Expired), "{issued}..{expires}");
    }
    // A payload changed after signing (another user, a later expiry) is forged.
    let (payload, signature) = good.split_once('.').unwrap();
    let other = BASE64URL.encode(code("mallory", NOW - 10, NOW + 290).to_string());
    assert_eq!(judged(&format!("{other}.{signature}"), &key, "mallory"), Err(CodeError::Forged));
    assert!(judged(&format!("{payload}.{}", "0".repeat(64)), &key, "alice").is_err());
}

#[test]
fn a_code_that_is_not_one_is_refused_before_any_key_is_looked_up() {
    let key = Key::random();
    let mut short_nonce = code("alice", NOW, NOW + 60);
    short_nonce["nonce"] = "abc".into();
    let mut extra = code("alice", NOW, NOW + 60);
    extra["amount"] = "100".into();
    let mut bad_id = code("alice", NOW, NOW + 60);
    bad_id["partner_user"] = "a b".into();
    for text in [
        "".to_owned(),
        "no-dot".to_owned(),
        "!!!.abc".to_owned(),
        format!("{}.x", BASE64URL.encode("not json")),
        issue(&short_nonce, &key),
        issue(&extra, &key),
        issue(&bad_id, &key),
    ] {
        assert!(matches!(LinkCode::parse(&text), Err(CodeError::Malformed(_))), "{text}");
    }
    assert_eq!(CodeError::Used.code().code(), "link_code_used");
}

fn usd(amount: &str) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

fn grant(json: Value) -> Result<Grant, Problem> {
    Grant::parse(serde_json::from_value(json).map_err(|e| Problem::internal(e.to_string()))?, "USD".parse().unwrap())
}

#[test]
fn a_grant_allows_something_within_the_limits_in_the_partner_s_currency() {
    let read_only = grant(json!({"read": true})).unwrap();
    assert_eq!((read_only.read, read_only.caps()), (true, None));
    let charging = grant(json!({"charge": {"per_charge": usd("50.00"), "per_day": usd("200.00")}})).unwrap();
    let caps = charging.caps().expect("caps");
    assert_eq!((caps.per_movement, caps.per_window, caps.count), (Decimal::new(50, 0), Decimal::new(200, 0), 50));
    for refused in [
        json!({"read": false}),
        json!({}),
        json!({"charge": {"per_charge": usd("300.00"), "per_day": usd("200.00")}}),
        json!({"charge": {"per_charge": usd("10000.01"), "per_day": usd("20000.00")}}),
        json!({"charge": {"per_charge": usd("1.00"), "per_day": usd("25000.01")}}),
        json!({"charge": {"per_charge": {"amount": "1.00", "currency": "EUR"}, "per_day": {"amount": "2.00", "currency": "EUR"}}}),
    ] {
        let problem = grant(refused.clone()).expect_err("refused");
        assert_eq!(problem.code, "invalid_grant", "{refused}: {problem:?}");
    }
}

#[test]
fn a_partner_sees_a_token_and_display_data_never_the_number_id_or_holder() {
    let card = Instrument {
        id: "in_1".into(),
        user: "alice".into(),
        details: crate::instrument::Details::Card {
            brand: crate::instrument::Brand::Visa,
            expiry: crate::instrument::Expiry { month: 12, year: 2030 },
        },
        last4: "4242".into(),
        holder: "Ada Lovelace".into(),
        created_at: NOW,
    };
    let view = json!(partner_view("pt_x", Some(&card), NOW));
    assert_eq!(
        view,
        json!({"token": "pt_x", "status": "active", "last4": "4242", "kind": "card", "brand": "visa",
                            "expiry_month": 12, "expiry_year": 2030})
    );
    assert_eq!(json!(partner_view("pt_x", None, NOW)), json!({"token": "pt_x", "status": "removed"}));
    assert!(new_token().starts_with("pt_") && new_token() != new_token());
}

#[test]
fn a_card_expires_after_its_month_and_its_partner_is_told_then_under_the_same_token() {
    use crate::instrument::Expiry;
    // 2030-12 ends at 2031-01-01T00:00:00Z; February of a leap year has 29 days.
    assert_eq!(Expiry { month: 12, year: 2030 }.ends_at(), 1_924_992_000);
    assert_eq!(Expiry { month: 2, year: 2028 }.ends_at(), 1_835_481_600);
    assert_eq!(crate::instrument::year_month(Expiry { month: 2, year: 2028 }.ends_at() - 1), (2028, 2));
    let card = Instrument {
        id: "in_1".into(),
        user: "alice".into(),
        details: crate::instrument::Details::Card {
            brand: crate::instrument::Brand::Visa,
            expiry: Expiry { month: 12, year: 2030 },
        },
        last4: "4242".into(),
        holder: "Ada".into(),
        created_at: NOW,
    };
    assert_eq!(partner_view("pt_x", Some(&card), 1_924_991_999).status, Some("active"));
    assert_eq!(partner_view("pt_x", Some(&card), 1_924_992_000).status, Some("expired"));
    let link = Link {
        id: "lk_1".into(),
        user: "alice".into(),
        partner: "pp_b".into(),
        partner_user: "b-7".into(),
        instruments: vec![Linked { instrument_id: "in_1".into(), token: "pt_x".into() }],
        grant: Grant { read: false, charge: None },
        state: LinkState::Active,
        created_at: NOW,
        ended: None,
        window: Window::default(),
    };
    let (notice, due_at) = expiry_notice(&link, &card, "linked").expect("a card expires");
    assert_eq!(due_at, 1_924_992_000);
    assert_eq!(crate::batch::QueueMessage::id(&notice), "lk_1/updated/in_1/expiry/2030-12/linked");
    // Without `read`, the partner sees the token only; a bank account never expires.
    assert_eq!(json!(link.shown("pt_x", Some(&card), NOW)), json!({"token": "pt_x"}));
    let account = Instrument { details: crate::instrument::Details::BankAccount { country: "DE".into() }, ..card };
    assert!(expiry_notice(&link, &account, "linked").is_none());
}

#[test]
fn a_link_shows_its_grant_use_and_end_to_its_user_and_its_instruments_only_while_active_to_its_partner() {
    let grant = grant(json!({"read": true, "charge": {"per_charge": usd("50"), "per_day": usd("200.5")}})).unwrap();
    let mut link = Link {
        id: "lk_1".into(),
        user: "alice".into(),
        partner: "pp_b".into(),
        partner_user: "b-7".into(),
        instruments: vec![Linked { instrument_id: "in_1".into(), token: "pt_x".into() }],
        grant,
        state: LinkState::Unlinked,
        created_at: NOW - 100,
        ended: Some((NOW, "partner".into())),
        // One charge within the last 24 hours, one before.
        window: Window {
            version: 2,
            entries: vec![(NOW - 90_000, Decimal::new(7, 0)), (NOW - 10, Decimal::new(125, 1))],
        },
    };
    let removed = LinkedInstrumentView { id: "in_1".into(), instrument: None, status: "removed" };
    assert_eq!(
        json!(link.view("Platform B", vec![removed], NOW)),
        json!({"id": "lk_1", "partner_id": "pp_b", "partner_name": "Platform B", "partner_user": "b-7",
               "instruments": [{"id": "in_1", "status": "removed"}],
               "grant": {"read": true, "charge": {"per_charge": usd("50.00"), "per_day": usd("200.50")}},
               "state": "unlinked", "created_at": NOW - 100, "use": {"charges_24h": 1, "asked_24h": "12.50"},
               "ended_at": NOW, "ended_by": "partner"})
    );
    assert_eq!(
        json!(partner_link_view(&link, &[None], NOW)),
        json!({"link_id": "lk_1", "partner_id": "pp_b", "partner_user": "b-7", "state": "unlinked",
               "grant": {"read": true, "charge": {"per_charge": usd("50.00"), "per_day": usd("200.50")}}})
    );
    (link.state, link.ended, link.grant) = (LinkState::Active, None, Grant { read: true, charge: None });
    assert_eq!(
        json!(partner_link_view(&link, &[None], NOW)),
        json!({"link_id": "lk_1", "partner_id": "pp_b", "partner_user": "b-7", "state": "active",
               "grant": {"read": true, "charge": null}, "instruments": [{"token": "pt_x", "status": "removed"}]})
    );
}
