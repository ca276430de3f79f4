//! Who a connection acts for. Every protocol's connection holds a [`Session`]; authentication
//! (Kafka's SASL, AMQP's start-ok) sets its [`Principal`], and authorisation asks it.
//!
//! Core module: imports no protocol. A principal is named as Kafka names it (`User:alice`), the
//! form ACLs and `super.users` use; AMQP's user `guest` is the principal `User:guest`.
//!
//! Files: `listener.rs` (listener syntax, `SecurityProtocol`), `tls.rs` (the `ssl.*` settings,
//! rustls configuration, bounded handshakes), `stream.rs` (a connection's plain or TLS stream).

pub mod acl;
pub mod listener;
pub mod stream;
pub mod tls;

pub mod sasl;
pub mod scram;
pub mod users;

use std::cell::{Cell, RefCell};
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
pub struct Session {
    principal: RefCell<Principal>,
    /// The security protocol of the listener the connection came in through.
    protocol: listener::SecurityProtocol,
    /// Set by a successful SASL exchange (or AMQP's start-ok): the connection may do more than
    /// authenticate.
    authenticated: Cell<bool>,
    /// The SASL exchange under way, from the mechanism's choice to its end.
    exchange: RefCell<Option<sasl::Exchange>>,
    /// Whether a mechanism was chosen already on this connection (a second choice is illegal).
    mechanism_chosen: Cell<bool>,
    /// Set when authentication failed: the protocol reads no more and closes the connection.
    failed: Cell<bool>,
    /// The exchange's messages come without the protocol's own framing (Kafka's SaslHandshake
    /// v0: bare size-prefixed tokens until the exchange ends).
    unframed: Cell<bool>,
    /// The authorizer's decisions for this principal (`acl::Access`).
    pub decisions: acl::DecisionCache,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal.borrow())
            .field("authenticated", &self.authenticated.get())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn new(principal: Principal, protocol: listener::SecurityProtocol) -> Session {
        Session {
            principal: RefCell::new(principal),
            protocol,
            authenticated: Cell::new(false),
            exchange: RefCell::new(None),
            mechanism_chosen: Cell::new(false),
            failed: Cell::new(false),
            unframed: Cell::new(false),
            decisions: acl::DecisionCache::default(),
        }
    }

    /// The listener's security protocol: whether the connection is TLS, and whether it must
    /// authenticate with SASL.
    pub fn protocol(&self) -> listener::SecurityProtocol {
        self.protocol
    }

    pub fn is_unframed(&self) -> bool {
        self.unframed.get()
    }

    pub fn set_unframed(&self, unframed: bool) {
        self.unframed.set(unframed);
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.get()
    }

    pub fn has_failed(&self) -> bool {
        self.failed.get()
    }

    /// Authentication failed: the connection must close.
    pub fn fail(&self) {
        self.failed.set(true);
        *self.exchange.borrow_mut() = None;
    }

    /// Whether a SASL mechanism was chosen on this connection already.
    pub fn mechanism_chosen(&self) -> bool {
        self.mechanism_chosen.get()
    }

    /// Starts the exchange of `mechanism` (`false`: not offered).
    pub fn start_exchange(&self, mechanism: &str) -> bool {
        self.mechanism_chosen.set(true);
        let exchange = sasl::Exchange::start(mechanism);
        let started = exchange.is_some();
        *self.exchange.borrow_mut() = exchange;
        started
    }

    /// The next step of the exchange under way (`None`: no exchange, an illegal state). A
    /// success authenticates the session at once; a failure marks it failed.
    pub fn step_exchange(&self, message: &[u8], users: &users::Users) -> Option<sasl::Step> {
        let step = self.exchange.borrow_mut().as_mut()?.step(message, users);
        match &step {
            sasl::Step::Challenge(_) => {}
            sasl::Step::Success { user, .. } => {
                *self.exchange.borrow_mut() = None;
                self.authenticate(Principal::user(user));
            }
            sasl::Step::Failure(_) => self.fail(),
        }
        Some(step)
    }

    pub fn principal(&self) -> Principal {
        self.principal.borrow().clone()
    }

    /// Set once authentication succeeds.
    pub fn authenticate(&self, principal: Principal) {
        *self.principal.borrow_mut() = principal;
        self.authenticated.set(true);
        // Decisions made for the previous principal are not this one's.
        self.decisions.clear();
    }
}

/// Authentication settings (`--set`, see config.rs).
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Kafka's `connection.failed.authentication.delay.ms`: how long a failed authentication
    /// waits before its answer and the close, to slow password guessing (default 100).
    pub failed_authentication_delay_ms: u64,
    /// RabbitMQ's `loopback_users`: AMQP users who may connect only from a loopback address
    /// (`weir.amqp.loopback.users`, comma-separated; default `guest`).
    pub amqp_loopback_users: Vec<String>,
    /// Require SASL on every Kafka listener (`weir.sasl.required=true`), not only on the
    /// `SASL_PLAINTEXT://` and `SASL_SSL://` ones. Read in one place only:
    /// `kafka::connection::requires_sasl`.
    pub sasl_required: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            failed_authentication_delay_ms: 100,
            amqp_loopback_users: vec!["guest".to_string()],
            sasl_required: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_print_as_kafka_names_them() {
        assert_eq!(Principal::anonymous().to_string(), "User:ANONYMOUS");
        let session = Session::new(Principal::anonymous(), listener::SecurityProtocol::Ssl);
        assert!(session.protocol().tls());
        session.authenticate(Principal::user("alice"));
        assert_eq!(session.principal().to_string(), "User:alice");
        assert_eq!(session.principal().name(), "alice");
    }
}
