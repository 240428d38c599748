//! What the feed detections share: their rules, deterministic alert ids and the
//! alert builder.

use serde_json::{Map, Value};
use ward_protocol::{Entity, Id128, RuleRef, Severity};

use crate::store::{AlertSource, SourcedAlert};

/// A feed detection rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    pub technique: &'static str,
    pub tactic: &'static str,
}

pub const RISKY_SIGN_IN: Rule = Rule {
    id: "ward-identity-risky-sign-in",
    title: "Risky sign-in",
    technique: "T1078",
    tactic: "TA0001",
};
pub const PASSWORD_SPRAY: Rule = Rule {
    id: "ward-identity-password-spray",
    title: "Password spray: many users failing from one IP",
    technique: "T1110.003",
    tactic: "TA0006",
};
pub const BRUTE_FORCE: Rule = Rule {
    id: "ward-identity-brute-force",
    title: "Brute force on one user",
    technique: "T1110.001",
    tactic: "TA0006",
};
pub const IMPOSSIBLE_TRAVEL: Rule = Rule {
    id: "ward-identity-impossible-travel",
    title: "Impossible travel between two successful sign-ins",
    technique: "T1078",
    tactic: "TA0001",
};
pub const MFA_FATIGUE: Rule = Rule {
    id: "ward-identity-mfa-fatigue",
    title: "MFA fatigue: repeated MFA denials",
    technique: "T1621",
    tactic: "TA0006",
};
pub const MALICIOUS_DELIVERED: Rule = Rule {
    id: "ward-mailbox-malicious-delivered",
    title: "Phishing or malicious mail delivered",
    technique: "T1566",
    tactic: "TA0001",
};
pub const MALICIOUS_URL_CLICK: Rule = Rule {
    id: "ward-mailbox-malicious-url-click",
    title: "Click on a malicious URL",
    technique: "T1204.001",
    tactic: "TA0002",
};
pub const USER_REPORTED_PHISH: Rule = Rule {
    id: "ward-mailbox-user-reported-phish",
    title: "User reported a phishing mail",
    technique: "T1566",
    tactic: "TA0001",
};
pub const HIDING_INBOX_RULE: Rule = Rule {
    id: "ward-mailbox-hiding-inbox-rule",
    title: "Inbox rule hides incoming mail",
    technique: "T1564.008",
    tactic: "TA0005",
};
pub const EXTERNAL_FORWARDING: Rule = Rule {
    id: "ward-mailbox-external-forwarding",
    title: "Mail forwarded outside the organisation",
    technique: "T1114.003",
    tactic: "TA0009",
};

pub const APP_CREDENTIAL_THEN_MAIL_ACCESS: Rule = Rule {
    id: "ward-identity-app-credential-then-mail-access",
    title: "New credential on an application, then mailbox access by it",
    technique: "T1098.001",
    tactic: "TA0003",
};
pub const RISKY_CONSENT: Rule = Rule {
    id: "ward-identity-risky-consent",
    title: "Consent or permission grant to an unverified app or for risky permissions",
    technique: "T1528",
    tactic: "TA0006",
};
pub const PRIVILEGED_ROLE_ADDED: Rule = Rule {
    id: "ward-identity-privileged-role-added",
    title: "Privileged role or admin privilege given",
    technique: "T1098.003",
    tactic: "TA0003",
};
pub const MFA_REMOVED_THEN_SIGN_IN: Rule = Rule {
    id: "ward-identity-mfa-removed-then-sign-in",
    title: "MFA factor removed, then a sign-in of its user",
    technique: "T1556.006",
    tactic: "TA0005",
};
pub const RISKY_USER: Rule = Rule {
    id: "ward-identity-risky-user",
    title: "User flagged at risk",
    technique: "T1078",
    tactic: "TA0001",
};
pub const BULK_MAIL_ACCESS: Rule = Rule {
    id: "ward-mailbox-bulk-mail-access",
    title: "Bulk mailbox access by one actor",
    technique: "T1114.002",
    tactic: "TA0009",
};

/// A ULID-shaped id: `time_ms` in the 48-bit time part, then 80 bits of
/// SHA-256(rule id, keys), so the same records always give the same id.
pub fn alert_id(time_ms: u64, rule: &str, keys: &[&str]) -> String {
    let mut input = rule.as_bytes().to_vec();
    for k in keys {
        input.push(0);
        input.extend_from_slice(k.as_bytes());
    }
    let hash = crate::util::sha256(&input);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&time_ms.min((1 << 48) - 1).to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&hash[..10]);
    Id128(bytes).to_string()
}

/// A feed alert under construction.
#[derive(Debug)]
pub struct Raise {
    pub rule: Rule,
    /// Overrides the rule's technique (e.g. T1566.001 for an attachment).
    pub technique: Option<&'static str>,
    pub severity: Severity,
    pub source: AlertSource,
    pub first_ms: u64,
    pub last_ms: u64,
    pub count: u32,
    pub entities: Vec<Entity>,
    pub matched: Map<String, Value>,
    /// A second step's technique and tactic (a sequence: persistence, then collection).
    pub also: Option<(&'static str, &'static str)>,
}

impl Raise {
    pub fn new(rule: Rule, source: AlertSource, severity: Severity, time_ms: u64) -> Raise {
        Raise {
            rule,
            technique: None,
            severity,
            source,
            first_ms: time_ms,
            last_ms: time_ms,
            count: 1,
            entities: Vec::new(),
            matched: Map::new(),
            also: None,
        }
    }

    /// Adds a matched field when it has a value.
    pub fn field(&mut self, name: &str, value: Option<impl ToString>) -> &mut Self {
        if let Some(v) = value {
            self.matched.insert(name.into(), Value::String(v.to_string()));
        }
        self
    }

    /// Adds an entity unless an equal one is already there.
    pub fn entity(&mut self, e: Entity) -> &mut Self {
        if !self.entities.contains(&e) {
            self.entities.push(e);
        }
        self
    }

    /// The alert, its id from `id_time_ms` and the keys of the records that raised it.
    pub fn build(self, id_time_ms: u64, keys: &[&str]) -> SourcedAlert {
        SourcedAlert {
            id: alert_id(id_time_ms, self.rule.id, keys),
            source: self.source,
            device_id: None,
            observed_at_ms: self.first_ms,
            last_observed_at_ms: self.last_ms,
            rule: RuleRef {
                id: self.rule.id.into(),
                title: self.rule.title.into(),
                author: "Ward".into(),
                severity: self.severity,
                techniques: std::iter::once(self.technique.unwrap_or(self.rule.technique))
                    .chain(self.also.map(|a| a.0))
                    .map(Into::into)
                    .collect(),
                tactics: std::iter::once(self.rule.tactic)
                    .chain(self.also.map(|a| a.1))
                    .map(Into::into)
                    .collect(),
            },
            entities: self.entities,
            count: self.count,
            matched: self.matched,
        }
    }
}

/// A user entity from a principal name (lowercased by the normalizers).
pub fn user(name: &str) -> Entity {
    Entity::User {
        name: name.to_ascii_lowercase(),
        uid: None,
    }
}

/// The domain of an address or URL host, if it has one.
pub fn domain_of_address(address: &str) -> Option<Entity> {
    let d = address.rsplit_once('@')?.1.trim();
    (!d.is_empty()).then(|| Entity::Domain {
        name: d.to_ascii_lowercase(),
    })
}

/// The host of a URL (`scheme://host[:port]/...`), if it has one.
pub fn host_of_url(url: &str) -> Option<Entity> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split(']').next()?.trim_start_matches('[')
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then(|| Entity::Domain {
        name: host.to_ascii_lowercase(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn alert_ids_are_deterministic_ulids() {
        let a = alert_id(1_700_000_000_000, "r", &["k1", "k2"]);
        assert_eq!(a.len(), 26);
        assert_eq!(a, alert_id(1_700_000_000_000, "r", &["k1", "k2"]));
        assert_ne!(a, alert_id(1_700_000_000_000, "r", &["k1k2"]));
        assert_ne!(a, alert_id(1_700_000_000_000, "other", &["k1", "k2"]));
        assert_eq!(a.parse::<Id128>().unwrap().timestamp_ms(), 1_700_000_000_000);
    }

    #[test]
    fn hosts_and_domains_are_extracted() {
        let d = |e: Option<Entity>| match e {
            Some(Entity::Domain { name }) => name,
            other => panic!("{other:?}"),
        };
        assert_eq!(d(host_of_url("https://User@Evil.Example:8443/a?b")), "evil.example");
        assert_eq!(d(host_of_url("evil.example/path")), "evil.example");
        assert_eq!(d(host_of_url("http://[2001:db8::1]/x")), "2001:db8::1");
        assert_eq!(d(domain_of_address("billing@Evil.Example")), "evil.example");
        assert!(domain_of_address("nobody").is_none());
    }
}
