//! The authorization decision: `authorize(record, facts, now) -> Decision`. Pure.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{KeyRecord, KeyState, Scope};

/// How a route's required scopes combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeMode {
    /// The credential must carry every required scope (default).
    #[default]
    AllOf,
    /// One of the required scopes is enough.
    AnyOf,
}

/// What the decision needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub required_scopes: &'a [Scope],
    pub scope_mode: ScopeMode,
    /// The client's address (after trusted-proxy resolution); `None` skips allowlists.
    pub client_ip: Option<std::net::IpAddr>,
}

/// Why a credential is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    Revoked,
    Expired,
    /// Temporarily disabled.
    Disabled,
    /// The client address is outside the key's or the app's allowlist.
    IpNotAllowed,
    /// The scopes the route needs and the credential lacks (for `AnyOf`: all candidates).
    InsufficientScope {
        missing: Vec<Scope>,
    },
    /// An exchange-only key on an API route: it only works at the token endpoint.
    ExchangeOnly,
    /// A publishable key on a route that does not take them.
    PublishableNotAllowed,
    /// A publishable key without one of its allowed origins.
    OriginNotAllowed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Denial),
}

/// Decides whether `record` may make a request with these `facts` at `now`.
pub fn authorize(record: &KeyRecord, facts: &RequestFacts<'_>, now: OffsetDateTime) -> Decision {
    match record.state(now) {
        KeyState::Revoked => return Decision::Deny(Denial::Revoked),
        KeyState::Expired => return Decision::Deny(Denial::Expired),
        KeyState::Disabled => return Decision::Deny(Denial::Disabled),
        KeyState::Active => {}
    }
    if let Some(ip) = facts.client_ip {
        if !record.policy.ips.allows(ip) || !record.app_policy.ips.allows(ip) {
            return Decision::Deny(Denial::IpNotAllowed);
        }
    }
    check_scopes(&record.scopes, facts)
}

/// Where a key is being used: what a route accepts beyond scopes, and the request's browser
/// origin (the `Origin` header, which page scripts cannot set).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyUse<'a> {
    /// The route takes publishable keys (it is marked public-safe).
    pub route_takes_publishable: bool,
    pub origin: Option<&'a str>,
}

/// The rules of a key's kind, after [`authorize`]: an exchange-only key never works on an API
/// route; a publishable key works only on routes that take them, from one of its origins.
pub fn check_key_use(record: &KeyRecord, usage: &KeyUse<'_>) -> Decision {
    if record.lifecycle.exchange_only {
        return Decision::Deny(Denial::ExchangeOnly);
    }
    if record.kind() != crate::key::KeyKind::Publishable {
        return Decision::Allow;
    }
    if !usage.route_takes_publishable {
        return Decision::Deny(Denial::PublishableNotAllowed);
    }
    let allowed = usage
        .origin
        .is_some_and(|o| record.policy.origins.iter().any(|a| a.matches(o)));
    if allowed {
        Decision::Allow
    } else {
        Decision::Deny(Denial::OriginNotAllowed)
    }
}

/// The decision for an OAuth client standing in for a key (an access token's client, or the
/// client a TLS certificate is registered to): its own address allowlist, then the scopes it
/// was granted. Lifecycle was decided when the token was verified or the client looked up.
pub fn authorize_client(granted: &[Scope], policy: &crate::policy::Policy, facts: &RequestFacts<'_>) -> Decision {
    if let Some(ip) = facts.client_ip {
        if !policy.ips.allows(ip) {
            return Decision::Deny(Denial::IpNotAllowed);
        }
    }
    check_scopes(granted, facts)
}

/// The scope part of the decision, shared by every credential kind.
pub fn check_scopes(granted: &[Scope], facts: &RequestFacts<'_>) -> Decision {
    if facts.required_scopes.is_empty() {
        return Decision::Allow;
    }
    let missing: Vec<Scope> = facts
        .required_scopes
        .iter()
        .filter(|s| !granted.contains(s))
        .cloned()
        .collect();
    let ok = match facts.scope_mode {
        ScopeMode::AllOf => missing.is_empty(),
        ScopeMode::AnyOf => missing.len() < facts.required_scopes.len(),
    };
    if ok {
        Decision::Allow
    } else {
        Decision::Deny(Denial::InsufficientScope { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyEnv;
    use proptest::prelude::*;
    use time::Duration;

    fn s(x: &str) -> Scope {
        Scope::new(x).unwrap()
    }

    fn record(scopes: &[&str]) -> KeyRecord {
        KeyRecord {
            id: "key_1".into(),
            app_id: "app_1".into(),
            app_name: "cats".into(),
            name: None,
            hint: "kw_live_abcd…wxyz".into(),
            env: KeyEnv::Live,
            scopes: scopes.iter().map(|x| s(x)).collect(),
            expires_at: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            revoked_at: None,
            policy: Default::default(),
            app_policy: Default::default(),
            lifecycle: Default::default(),
        }
    }

    #[test]
    fn lifecycle_beats_scopes() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(10);
        let req = [s("facts:read")];
        let facts = RequestFacts {
            required_scopes: &req,
            scope_mode: ScopeMode::AllOf,
            client_ip: None,
        };
        let mut r = record(&["facts:read"]);
        assert_eq!(authorize(&r, &facts, now), Decision::Allow);
        r.expires_at = Some(now);
        assert_eq!(
            authorize(&r, &facts, now),
            Decision::Deny(Denial::Expired),
            "expiry is inclusive"
        );
        r.expires_at = Some(now + Duration::seconds(1));
        assert_eq!(authorize(&r, &facts, now), Decision::Allow);
        r.revoked_at = Some(now - Duration::seconds(1));
        r.expires_at = Some(now - Duration::days(1));
        assert_eq!(
            authorize(&r, &facts, now),
            Decision::Deny(Denial::Revoked),
            "revoked wins over expired"
        );
    }

    #[test]
    fn allowlists_of_key_and_app_both_apply() {
        use crate::policy::IpAllowlist;
        let now = OffsetDateTime::UNIX_EPOCH;
        let mut r = record(&[]);
        let facts = |ip: &str| RequestFacts {
            required_scopes: &[],
            scope_mode: ScopeMode::AllOf,
            client_ip: Some(ip.parse().unwrap()),
        };
        assert_eq!(authorize(&r, &facts("192.0.2.1"), now), Decision::Allow);
        r.policy.ips = IpAllowlist::parse(&["192.0.2.0/24"]).unwrap();
        assert_eq!(authorize(&r, &facts("192.0.2.1"), now), Decision::Allow);
        assert_eq!(authorize(&r, &facts("::ffff:192.0.2.1"), now), Decision::Allow);
        assert_eq!(
            authorize(&r, &facts("198.51.100.1"), now),
            Decision::Deny(Denial::IpNotAllowed)
        );
        r.app_policy.ips = IpAllowlist::parse(&["192.0.2.128/25"]).unwrap();
        assert_eq!(
            authorize(&r, &facts("192.0.2.1"), now),
            Decision::Deny(Denial::IpNotAllowed)
        );
        assert_eq!(authorize(&r, &facts("192.0.2.200"), now), Decision::Allow);
    }

    #[test]
    fn key_kinds_follow_their_rules() {
        use crate::policy::Origin;
        let mut r = record(&[]);
        let anywhere = KeyUse::default();
        assert_eq!(
            check_key_use(&r, &anywhere),
            Decision::Allow,
            "a secret key works anywhere"
        );
        r.lifecycle.exchange_only = true;
        assert_eq!(check_key_use(&r, &anywhere), Decision::Deny(Denial::ExchangeOnly));
        r.lifecycle.exchange_only = false;
        // A publishable key (its hint says so): only on public-safe routes, from its origins.
        r.hint = "kw_pk_live_abcd…wxyz".into();
        assert_eq!(r.kind(), crate::key::KeyKind::Publishable);
        r.policy.origins = vec![Origin::parse("https://cats.example").unwrap()];
        let public = |origin| KeyUse {
            route_takes_publishable: true,
            origin,
        };
        assert_eq!(
            check_key_use(&r, &anywhere),
            Decision::Deny(Denial::PublishableNotAllowed)
        );
        assert_eq!(
            check_key_use(&r, &public(None)),
            Decision::Deny(Denial::OriginNotAllowed)
        );
        assert_eq!(
            check_key_use(&r, &public(Some("https://evil.example"))),
            Decision::Deny(Denial::OriginNotAllowed)
        );
        assert_eq!(
            check_key_use(&r, &public(Some("https://cats.example"))),
            Decision::Allow
        );
        // Legacy imported secrets are secret keys whatever their hint.
        r.lifecycle.legacy = true;
        assert_eq!(check_key_use(&r, &anywhere), Decision::Allow);
    }

    #[test]
    fn clients_are_decided_by_allowlist_then_scopes() {
        use crate::policy::{IpAllowlist, Policy};
        let granted = [s("facts:read")];
        let req = [s("facts:write")];
        let mut policy = Policy::default();
        fn facts<'a>(ip: &str, required: &'a [Scope]) -> RequestFacts<'a> {
            RequestFacts {
                required_scopes: required,
                scope_mode: ScopeMode::AllOf,
                client_ip: Some(ip.parse().unwrap()),
            }
        }
        assert_eq!(
            authorize_client(&granted, &policy, &facts("192.0.2.1", &[])),
            Decision::Allow
        );
        policy.ips = IpAllowlist::parse(&["192.0.2.0/24"]).unwrap();
        assert_eq!(
            authorize_client(&granted, &policy, &facts("198.51.100.1", &[])),
            Decision::Deny(Denial::IpNotAllowed)
        );
        assert_eq!(
            authorize_client(&granted, &policy, &facts("198.51.100.1", &req)),
            Decision::Deny(Denial::IpNotAllowed),
            "the allowlist is decided before the scopes"
        );
        assert_eq!(
            authorize_client(&granted, &policy, &facts("192.0.2.1", &req)),
            Decision::Deny(Denial::InsufficientScope {
                missing: vec![s("facts:write")]
            })
        );
    }

    #[test]
    fn missing_scopes_are_named() {
        let req = [s("facts:read"), s("facts:write")];
        let all = RequestFacts {
            required_scopes: &req,
            scope_mode: ScopeMode::AllOf,
            client_ip: None,
        };
        let any = RequestFacts {
            required_scopes: &req,
            scope_mode: ScopeMode::AnyOf,
            client_ip: None,
        };
        let r = record(&["facts:read"]);
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            authorize(&r, &all, now),
            Decision::Deny(Denial::InsufficientScope {
                missing: vec![s("facts:write")]
            })
        );
        assert_eq!(authorize(&r, &any, now), Decision::Allow);
        assert!(matches!(authorize(&record(&[]), &any, now), Decision::Deny(_)));
        let none = RequestFacts {
            required_scopes: &[],
            scope_mode: ScopeMode::AllOf,
            client_ip: None,
        };
        assert_eq!(authorize(&record(&[]), &none, now), Decision::Allow);
    }

    proptest! {
        #[test]
        fn all_of_allows_exactly_supersets(granted in prop::collection::btree_set("[a-d]", 0..4),
                                            required in prop::collection::btree_set("[a-d]", 0..4)) {
            let g: Vec<Scope> = granted.iter().map(|x| s(x)).collect();
            let r: Vec<Scope> = required.iter().map(|x| s(x)).collect();
            let facts = RequestFacts { required_scopes: &r, scope_mode: ScopeMode::AllOf, client_ip: None };
            let allowed = check_scopes(&g, &facts) == Decision::Allow;
            prop_assert_eq!(allowed, required.is_subset(&granted));
            let facts = RequestFacts { required_scopes: &r, scope_mode: ScopeMode::AnyOf, client_ip: None };
            let allowed = check_scopes(&g, &facts) == Decision::Allow;
            prop_assert_eq!(allowed, required.is_empty() || !required.is_disjoint(&granted));
        }
    }
}
