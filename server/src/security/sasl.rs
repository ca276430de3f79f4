//! One connection's SASL exchange, protocol-free: a mechanism chosen by name, then the client's
//! messages one at a time until success or failure. Kafka's SaslHandshake/SaslAuthenticate drive
//! it; it lives in the connection's `Session`, on the connection's shard.
//!
//! ```text
//! mechanism   message 1                         message 2
//! PLAIN       \0user\0password -> Success
//! SCRAM-*     client-first -> Challenge(server-first)
//!                                               client-final -> Success(server-final)
//! any refusal -> Failure (the connection is then closed by its protocol)
//! ```

use super::scram::{self, Mechanism, ScramFirst};
use super::users::{self, Users};

/// The mechanisms Weir offers, in the order Kafka lists them to a client.
pub const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// What the server answers a client's message with.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes and wait for the client's next message.
    Challenge(Vec<u8>),
    /// Authenticated as `user`; send these bytes (empty for PLAIN).
    Success { user: String, response: Vec<u8> },
    /// Refused; the message says why (for the client, never which part was wrong).
    Failure(String),
}

pub struct Exchange {
    mechanism: &'static str,
    state: State,
}

enum State {
    Plain,
    ScramStart(Mechanism),
    ScramFinal(Box<ScramFirst>),
    Done,
}

impl Exchange {
    /// `None` when the mechanism is not one Weir offers.
    pub fn start(mechanism: &str) -> Option<Exchange> {
        let mechanism = MECHANISMS.into_iter().find(|m| *m == mechanism)?;
        let state = match Mechanism::from_name(mechanism) {
            Some(scram) => State::ScramStart(scram),
            None => State::Plain,
        };
        Some(Exchange { mechanism, state })
    }

    pub fn mechanism(&self) -> &'static str {
        self.mechanism
    }

    /// The next step for the client's `message`, checked against `users`.
    pub fn step(&mut self, message: &[u8], users: &Users) -> Step {
        let failure = || {
            Step::Failure(format!(
                "Authentication failed during authentication due to invalid credentials with \
                 SASL mechanism {}",
                self.mechanism
            ))
        };
        match std::mem::replace(&mut self.state, State::Done) {
            State::Plain => match scram::parse_plain(message) {
                Some((user, password)) if users::verify_password(users, user, password) => {
                    Step::Success {
                        user: user.to_string(),
                        response: Vec::new(),
                    }
                }
                _ => failure(),
            },
            State::ScramStart(mechanism) => {
                let first = scram::server_first(mechanism, message, |user| {
                    users::credential(users, user, mechanism)
                });
                match first {
                    Ok(first) => {
                        let challenge = first.server_first().to_vec();
                        self.state = State::ScramFinal(Box::new(first));
                        Step::Challenge(challenge)
                    }
                    Err(scram::ScramError::Credentials) => failure(),
                    Err(error) => Step::Failure(format!("Authentication failed: {error}")),
                }
            }
            State::ScramFinal(first) => match scram::server_final(&first, message) {
                Ok(response) => Step::Success {
                    user: first.user().to_string(),
                    response,
                },
                Err(scram::ScramError::Credentials) => failure(),
                Err(error) => Step::Failure(format!("Authentication failed: {error}")),
            },
            State::Done => Step::Failure("Authentication already finished".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::Credential;
    use crate::security::users::{apply, UserChange};

    #[test]
    fn plain_and_unknown_mechanisms() {
        let mut users = Users::new();
        apply(
            &mut users,
            &[UserChange::Upsert {
                user: "alice".into(),
                mechanism: Mechanism::Sha512,
                credential: Credential::from_password(Mechanism::Sha512, "secret", 4096),
            }],
        );
        assert!(Exchange::start("GSSAPI").is_none());
        let mut plain = Exchange::start("PLAIN").unwrap();
        assert_eq!(
            plain.step(b"\0alice\0secret", &users),
            Step::Success {
                user: "alice".into(),
                response: vec![]
            }
        );
        let mut plain = Exchange::start("PLAIN").unwrap();
        assert!(matches!(
            plain.step(b"\0alice\0nope", &users),
            Step::Failure(_)
        ));
        let mut scram = Exchange::start("SCRAM-SHA-256").unwrap();
        // alice has no SCRAM-SHA-256 credential.
        assert!(matches!(
            scram.step(b"n,,n=alice,r=abc", &users),
            Step::Failure(_)
        ));
        assert!(matches!(scram.step(b"again", &users), Step::Failure(_)));
    }
}
