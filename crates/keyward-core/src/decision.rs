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
