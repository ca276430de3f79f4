//! The authorizer: decides whether a principal from a host may do an operation on a resource,
//! with Kafka's rules (StandardAuthorizer):
//!
//! | step | rule                                                                              |
//! |------|-----------------------------------------------------------------------------------|
//! | 1    | the authorizer is off (no `authorizer.class.name`): allowed                       |
//! | 2    | a `super.users` principal: allowed                                                |
//! | 3    | a Deny binding for the principal (or `User:*`), the host (or `*`) and the         |
//! |      | operation (or All) on a pattern covering the resource: denied                     |
//! | 4    | an Allow binding likewise: allowed. Describe is also allowed by Read, Write,      |
//! |      | Delete or Alter; DescribeConfigs by AlterConfigs (a Deny implies nothing)         |
//! | 5    | no binding at all covers the resource: `allow.everyone.if.no.acl.found`           |
//! | 6    | otherwise: denied                                                                 |
//!
//! Runs on every shard over its read-only copy of the bindings. A connection's decisions are
//! cached in its `Session`, keyed by the metadata version they were made at, so the data path
//! (Produce, Fetch) pays one hash lookup per topic, not a scan of the bindings; with the
//! authorizer off it pays one branch.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use super::{AclBinding, Operation, PatternType, Permission, ResourceType, WILDCARD};
use crate::metadata::Metadata;
use crate::security::Session;

/// The class names `authorizer.class.name` accepts (Kafka's two, and Weir's own name); all mean
/// the same authorizer. Empty (the default) turns it off.
pub const AUTHORIZER_CLASS_NAMES: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
    "weir",
];

/// Decisions a connection remembers before it starts over (a client naming many topics costs
/// bounded memory).
const CACHED_DECISIONS_MAX: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    pub enabled: bool,
    /// `super.users`: principals (`User:admin`) allowed everything.
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

/// Whether `principal` from `host` may do `operation` on resource `name` of type `kind`, given
/// `bindings` (steps 2-6 of the table above; the caller checks step 1).
pub fn decide<'a>(
    config: &AuthorizerConfig,
    bindings: impl Iterator<Item = &'a AclBinding>,
    principal: &str,
    host: &str,
    operation: Operation,
    kind: ResourceType,
    name: &str,
) -> bool {
    if config.super_users.iter().any(|user| user == principal) {
        return true;
    }
    let mut any_binding = false;
    let mut allowed = false;
    for binding in bindings.filter(|binding| binding.covers(kind, name)) {
        any_binding = true;
        let applies = (binding.principal == principal || binding.principal == "User:*")
            && (binding.host == host || binding.host == WILDCARD);
        if !applies {
            continue;
        }
        match binding.permission {
            Permission::Deny if grants(binding.operation, operation, false) => return false,
            Permission::Allow if grants(binding.operation, operation, true) => allowed = true,
            _ => {}
        }
    }
    allowed || (!any_binding && config.allow_everyone_if_no_acl_found)
}

/// Whether `principal` from `host` may do `operation` on SOME resource of type `kind` (Kafka's
/// `authorizeByResourceType`, with which InitProducerId lets Write on any topic stand in for
/// IdempotentWrite on the cluster): a super user; else not when a Deny covers every name (the
/// Literal `*`); else when an Allow binding grants it on some pattern; else, when no binding
/// names the type at all, `allow.everyone.if.no.acl.found`.
pub fn decide_some<'a>(
    config: &AuthorizerConfig,
    bindings: impl Iterator<Item = &'a AclBinding> + Clone,
    principal: &str,
    host: &str,
    operation: Operation,
    kind: ResourceType,
) -> bool {
    if config.super_users.iter().any(|user| user == principal) {
        return true;
    }
    let of_kind = bindings.filter(|binding| binding.resource_type == kind);
    let applies = |binding: &&AclBinding| {
        (binding.principal == principal || binding.principal == "User:*")
            && (binding.host == host || binding.host == WILDCARD)
    };
    let mut relevant = of_kind.clone().filter(applies);
    let denied_everywhere = relevant.clone().any(|binding| {
        binding.permission == Permission::Deny
            && binding.pattern_type == PatternType::Literal
            && binding.resource_name == WILDCARD
            && grants(binding.operation, operation, false)
    });
    if denied_everywhere {
        return false;
    }
    let allowed = relevant.any(|binding| {
        binding.permission == Permission::Allow && grants(binding.operation, operation, true)
    });
    allowed || (of_kind.count() == 0 && config.allow_everyone_if_no_acl_found)
}

/// Whether a binding for `granted` covers `wanted`; an Allow also covers what it implies.
fn grants(granted: Operation, wanted: Operation, implied: bool) -> bool {
    use Operation::*;
    granted == wanted
        || granted == All
        || (implied
            && match wanted {
                Describe => matches!(granted, Read | Write | Delete | Alter),
                DescribeConfigs => granted == AlterConfigs,
                _ => false,
            })
}

/// What a request may do: built per request from the shard's config and metadata and the
/// connection's session. `Access::everything()` when the authorizer is off.
#[derive(Clone)]
pub struct Access {
    rules: Option<Rules>,
}

#[derive(Clone)]
struct Rules {
    config: Arc<AuthorizerConfig>,
    metadata: Arc<Metadata>,
    session: Rc<Session>,
    host: Rc<str>,
}

impl Access {
    /// Everything allowed (the authorizer is off, or an internal caller).
    pub fn everything() -> Access {
        Access { rules: None }
    }

    /// `host` as the client connects from (an IP address, without Kafka's leading `/`).
    pub fn new(
        config: &Arc<AuthorizerConfig>,
        metadata: Arc<Metadata>,
        session: &Rc<Session>,
        host: &str,
    ) -> Access {
        if !config.enabled {
            return Access::everything();
        }
        let rules = Rules {
            config: config.clone(),
            metadata,
            session: session.clone(),
            host: host.trim_start_matches('/').into(),
        };
        Access { rules: Some(rules) }
    }

    /// Whether the authorizer is on (DescribeAcls and friends answer SECURITY_DISABLED if not).
    pub fn enabled(&self) -> bool {
        self.rules.is_some()
    }

    pub fn allows(&self, operation: Operation, kind: ResourceType, name: &str) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        let cache = &rules.session.decisions;
        if let Some(known) = cache.get(rules.metadata.version, operation, kind, name) {
            return known;
        }
        let principal = rules.session.principal().to_string();
        let allowed = decide(
            &rules.config,
            rules.metadata.acls.iter(),
            &principal,
            &rules.host,
            operation,
            kind,
            name,
        );
        cache.put(rules.metadata.version, operation, kind, name, allowed);
        allowed
    }

    /// Whether the principal may do `operation` on some resource of type `kind` (`decide_some`).
    pub fn allows_some(&self, operation: Operation, kind: ResourceType) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        decide_some(
            &rules.config,
            rules.metadata.acls.iter(),
            &rules.session.principal().to_string(),
            &rules.host,
            operation,
            kind,
        )
    }

    pub fn allows_topic(&self, operation: Operation, topic: &str) -> bool {
        self.allows(operation, ResourceType::Topic, topic)
    }

    pub fn allows_group(&self, operation: Operation, group: &str) -> bool {
        self.allows(operation, ResourceType::Group, group)
    }

    pub fn allows_cluster(&self, operation: Operation) -> bool {
        self.allows(operation, ResourceType::Cluster, super::CLUSTER_NAME)
    }
}

/// A connection's remembered decisions, valid for one metadata version (any change of the
/// bindings bumps it). Emptied when the principal changes.
#[derive(Debug, Default)]
pub struct DecisionCache {
    inner: RefCell<CacheInner>,
}

type DecisionKey = (Operation, ResourceType);

#[derive(Debug, Default)]
struct CacheInner {
    version: u64,
    count: usize,
    decisions: HashMap<DecisionKey, HashMap<String, bool>>,
}

impl DecisionCache {
    fn get(
        &self,
        version: u64,
        operation: Operation,
        kind: ResourceType,
        name: &str,
    ) -> Option<bool> {
        let inner = self.inner.borrow();
        if inner.version != version {
            return None;
        }
        inner.decisions.get(&(operation, kind))?.get(name).copied()
    }

    fn put(
        &self,
        version: u64,
        operation: Operation,
        kind: ResourceType,
        name: &str,
        allowed: bool,
    ) {
        let mut inner = self.inner.borrow_mut();
        if inner.version != version || inner.count >= CACHED_DECISIONS_MAX {
            *inner = CacheInner {
                version,
                ..CacheInner::default()
            };
        }
        inner.count += 1;
        inner
            .decisions
            .entry((operation, kind))
            .or_default()
            .insert(name.to_string(), allowed);
    }

    pub fn clear(&self) {
        *self.inner.borrow_mut() = CacheInner::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;
    use Permission::*;
    use ResourceType::*;

    fn binding(
        kind: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        host: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: host.into(),
            operation,
            permission,
        }
    }

    fn allow(
        name: &str,
        pattern: PatternType,
        principal: &str,
        operation: Operation,
    ) -> AclBinding {
        binding(Topic, name, pattern, principal, "*", operation, Allow)
    }

    /// `(bindings, principal, host, operation, topic, expected)`, one row per rule.
    fn check(
        bindings: &[AclBinding],
        principal: &str,
        host: &str,
        operation: Operation,
        topic: &str,
        expected: bool,
    ) {
        let config = AuthorizerConfig {
            enabled: true,
            super_users: vec!["User:admin".into()],
            allow_everyone_if_no_acl_found: false,
        };
        let got = decide(
            &config,
            bindings.iter(),
            principal,
            host,
            operation,
            Topic,
            topic,
        );
        assert_eq!(
            got, expected,
            "{principal}@{host} {operation:?} {topic} under {bindings:#?}"
        );
    }

    #[test]
    fn deny_wins_and_implied_describe() {
        use PatternType::*;
        let alice = |bindings: &[AclBinding], operation, expected| {
            check(bindings, "User:alice", "1.2.3.4", operation, "t", expected)
        };
        let read = allow("t", Literal, "User:alice", Read);
        let deny = binding(Topic, "t", Literal, "User:*", "*", Read, Deny);
        alice(std::slice::from_ref(&read), Read, true);
        check(
            std::slice::from_ref(&read),
            "User:bob",
            "1.2.3.4",
            Read,
            "t",
            false,
        );
        alice(&[read.clone(), deny.clone()], Read, false);
        // Read implies Describe; a Deny of Read denies no Describe.
        alice(&[read.clone(), deny], Describe, true);
        alice(std::slice::from_ref(&read), Write, false);
        alice(&[allow("t", Literal, "User:alice", Describe)], Read, false);
        alice(&[allow("t", Literal, "User:alice", All)], Delete, true);
        let alter_configs = binding(Topic, "t", Literal, "User:alice", "*", AlterConfigs, Allow);
        alice(&[alter_configs], DescribeConfigs, true);
        let deny_all = binding(Topic, "t", Literal, "User:alice", "*", All, Deny);
        alice(&[read, deny_all], Read, false);
        // Super users pass whatever the bindings say.
        check(&[], "User:admin", "h", Delete, "t", true);
    }

    #[test]
    fn patterns_principals_and_hosts() {
        use PatternType::*;
        let prefixed = allow("orders.", Prefixed, "User:alice", Write);
        check(
            std::slice::from_ref(&prefixed),
            "User:alice",
            "h",
            Write,
            "orders.eu",
            true,
        );
        check(
            std::slice::from_ref(&prefixed),
            "User:alice",
            "h",
            Write,
            "orders",
            false,
        );
        check(
            &[allow("*", Literal, "User:*", Read)],
            "User:anyone",
            "h",
            Read,
            "x",
            true,
        );
        // A Literal `*` is a wildcard only as a whole name; a Prefixed `*` is a plain prefix.
        check(
            &[allow("*", Prefixed, "User:alice", Read)],
            "User:alice",
            "h",
            Read,
            "x",
            false,
        );
        let from_host = binding(Topic, "t", Literal, "User:alice", "10.0.0.1", Read, Allow);
        check(
            std::slice::from_ref(&from_host),
            "User:alice",
            "10.0.0.1",
            Read,
            "t",
            true,
        );
        check(&[from_host], "User:alice", "10.0.0.2", Read, "t", false);
        // Group bindings say nothing about topics of the same name.
        let group = binding(Group, "t", Literal, "User:alice", "*", Read, Allow);
        check(&[group], "User:alice", "h", Read, "t", false);
    }

    #[test]
    fn allow_everyone_only_where_no_binding_covers_the_resource() {
        let config = AuthorizerConfig {
            enabled: true,
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: true,
        };
        let bob = [allow("t", PatternType::Literal, "User:bob", Read)];
        let decide_on = |topic| decide(&config, bob.iter(), "User:alice", "h", Read, Topic, topic);
        assert!(decide_on("other"));
        assert!(!decide_on("t"));
    }

    #[test]
    fn write_on_some_topic() {
        use PatternType::*;
        let config = AuthorizerConfig {
            enabled: true,
            super_users: vec!["User:admin".into()],
            allow_everyone_if_no_acl_found: false,
        };
        let some = |bindings: &[AclBinding], principal| {
            decide_some(&config, bindings.iter(), principal, "h", Write, Topic)
        };
        let write = allow("orders-", Prefixed, "User:alice", Write);
        let deny_all = binding(Topic, "*", Literal, "User:*", "*", All, Deny);
        assert!(some(std::slice::from_ref(&write), "User:alice"));
        assert!(!some(std::slice::from_ref(&write), "User:bob"));
        assert!(!some(&[write.clone(), deny_all], "User:alice"));
        assert!(some(&[], "User:admin"));
        assert!(!some(
            &[allow("t", Literal, "User:alice", Read)],
            "User:alice"
        ));
    }
}
