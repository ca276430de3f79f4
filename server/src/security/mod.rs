//! Who a connection acts for. Every protocol's connection holds a [`Session`]; authentication
//! (Kafka's SASL, AMQP's start-ok) sets its [`Principal`], and authorisation asks it.
//!
//! Core module: imports no protocol. A principal is named as Kafka names it (`User:alice`), the
//! form ACLs and `super.users` use; AMQP's user `guest` is the principal `User:guest`.

pub mod acl;

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

/// Kafka's principal type for users (the only type Weir authenticates).
pub const USER_TYPE: &str = "User";

/// The user a connection acts for. Cheap to clone (the name is shared).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    name: Rc<str>,
}

impl Principal {
    /// Kafka's name for a connection that has not authenticated (a PLAINTEXT or SSL listener
    /// without a client certificate): `User:ANONYMOUS`.
    pub const ANONYMOUS: &'static str = "ANONYMOUS";

    pub fn user(name: &str) -> Principal {
        Principal { name: name.into() }
    }

    pub fn anonymous() -> Principal {
        Principal::user(Principal::ANONYMOUS)
    }

    /// The user's name, without the `User:` type.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{USER_TYPE}:{}", self.name)
    }
}

/// A connection's security state, shared by its reader and the handlers of its requests (one
/// shard, one connection: a `RefCell`, borrowed only inside a call).
#[derive(Debug)]
pub struct Session {
    principal: RefCell<Principal>,
    /// The authorizer's decisions for this principal (`acl::Access`).
    pub decisions: acl::DecisionCache,
}

impl Session {
    pub fn new(principal: Principal) -> Session {
        Session {
            principal: RefCell::new(principal),
            decisions: acl::DecisionCache::default(),
        }
    }

    pub fn principal(&self) -> Principal {
        self.principal.borrow().clone()
    }

    /// Set once authentication succeeds.
    pub fn authenticate(&self, principal: Principal) {
        *self.principal.borrow_mut() = principal;
        // Decisions made for the previous principal are not this one's.
        self.decisions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_print_as_kafka_names_them() {
        assert_eq!(Principal::anonymous().to_string(), "User:ANONYMOUS");
        let session = Session::new(Principal::anonymous());
        session.authenticate(Principal::user("alice"));
        assert_eq!(session.principal().to_string(), "User:alice");
        assert_eq!(session.principal().name(), "alice");
    }
}
