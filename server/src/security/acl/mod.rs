//! Access control lists with Kafka's model: a binding says that a principal, from a host, may
//! (Allow) or may not (Deny) do an operation on the resources a pattern matches. The authorizer
//! (`authorizer.rs`) decides a request from the bindings; filters (`filter.rs`) select bindings
//! for DescribeAcls and DeleteAcls.
//!
//! Core module: imports no protocol. Kafka's wire codes live here only as the numbers of its
//! enums (`code`/`from_code`), which both the Kafka layer and the journal use; AMQP names its
//! exchanges and queues as `Topic` resources (see docs/amqp-compat.md).
//!
//! The bindings are part of the metadata (`Metadata::acls`): changed by the controller on shard
//! 0, journaled, broadcast; each shard decides locally from its read-only copy.

mod authorizer;
mod filter;

pub use authorizer::{decide, Access, AuthorizerConfig, DecisionCache, AUTHORIZER_CLASS_NAMES};
pub use filter::{AclFilter, PatternFilter};

use serde::{Deserialize, Serialize};

/// What a binding's name names. Kafka's codes: Any 1, Topic 2, Group 3, Cluster 4,
/// TransactionalId 5 (DelegationToken 6 and User 7 are not supported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

/// How a binding's name matches a resource name. Kafka's codes: Any 1, Match 2, Literal 3,
/// Prefixed 4. A Literal `*` matches every name of its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    Literal,
    Prefixed,
}

/// Kafka's operations (codes 2..=12; Any is 1, and only filters use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

/// Kafka's codes: Any 1, Deny 2, Allow 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Deny,
    Allow,
}

/// The name of the one Cluster resource, as Kafka names it.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The wildcard: a Literal resource name, a principal (`User:*`) or a host.
pub const WILDCARD: &str = "*";

/// One ACL: Kafka's AclBinding (a resource pattern and an access control entry).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `User:NAME` or `User:*`.
    pub principal: String,
    /// `*` or an IP address as the client connects from.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Why Kafka would refuse to create this binding (INVALID_REQUEST), if it would.
    pub fn invalid(&self) -> Option<String> {
        if self.resource_name.is_empty() {
            return Some("resource name must not be empty".into());
        }
        if self.resource_type == ResourceType::Cluster
            && (self.resource_name != CLUSTER_NAME || self.pattern_type != PatternType::Literal)
        {
            return Some(format!(
                "a Cluster resource is the Literal '{CLUSTER_NAME}'"
            ));
        }
        match self.principal.split_once(':') {
            Some((crate::security::USER_TYPE, name)) if !name.is_empty() => {}
            _ => return Some(format!("principal '{}' is not User:NAME", self.principal)),
        }
        if self.host != WILDCARD && self.host.parse::<std::net::IpAddr>().is_err() {
            return Some(format!(
                "host '{}' is neither * nor an IP address",
                self.host
            ));
        }
        None
    }

    /// Whether this binding's pattern covers resource `name` of type `kind`.
    pub fn covers(&self, kind: ResourceType, name: &str) -> bool {
        self.resource_type == kind
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(self.resource_name.as_str()),
            }
    }
}

macro_rules! wire_codes {
    ($type:ty { $($variant:ident = $code:expr),* $(,)? }) => {
        impl $type {
            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self { $(<$type>::$variant => $code),* }
            }
            /// The variant of Kafka's code `code`, if Weir supports it.
            pub fn from_code(code: i8) -> Option<$type> {
                match code { $($code => Some(<$type>::$variant),)* _ => None }
            }
        }
    };
}

wire_codes!(ResourceType { Topic = 2, Group = 3, Cluster = 4, TransactionalId = 5 });
wire_codes!(PatternType { Literal = 3, Prefixed = 4 });
wire_codes!(Permission { Deny = 2, Allow = 3 });
wire_codes!(Operation {
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
});

/// Kafka's codes for "any" in filters (resource type, pattern type, operation, permission).
pub const ANY_CODE: i8 = 1;
/// Kafka's MATCH pattern filter: every pattern that would match the filter's name.
pub const MATCH_CODE: i8 = 2;
