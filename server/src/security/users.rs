//! The user store: SCRAM credentials per user and mechanism, as Kafka keeps them (salt,
//! iterations, StoredKey, ServerKey; never the password).
//!
//! The store is part of the metadata (`Metadata::users`): the controller on shard 0 changes it
//! (`apply`), persists it in the metadata journal and broadcasts it with the metadata, and waits
//! for every shard to take the new snapshot before it answers. So every shard checks credentials
//! against its own read-only copy, without a lock, and a change answered to an admin client is
//! in force for every new authentication on every shard.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use super::scram::{Credential, Mechanism, ITERATIONS_MAX, ITERATIONS_MIN};

/// A user's credentials, at most one per SCRAM mechanism.
pub type UserCredentials = BTreeMap<Mechanism, Credential>;

/// All users, by name (the metadata's field).
pub type Users = imbl::OrdMap<String, UserCredentials>;

/// The longest user name accepted (Kafka has no limit; this keeps the store bounded per user).
pub const USER_NAME_BYTES_MAX: usize = 256;

/// One change of AlterUserScramCredentials (or `weir user`).
#[derive(Debug, Clone)]
pub enum UserChange {
    Upsert {
        user: String,
        mechanism: Mechanism,
        credential: Credential,
    },
    Delete {
        user: String,
        mechanism: Mechanism,
    },
}

impl UserChange {
    pub fn user(&self) -> &str {
        match self {
            UserChange::Upsert { user, .. } | UserChange::Delete { user, .. } => user,
        }
    }

    fn mechanism(&self) -> Mechanism {
        match self {
            UserChange::Upsert { mechanism, .. } | UserChange::Delete { mechanism, .. } => {
                *mechanism
            }
        }
    }
}

/// Why a user's changes were refused (Kafka's codes are chosen by the protocol layer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("Attempt to delete a user credential that does not exist")]
    NotFound,
    #[error("{0}")]
    Unacceptable(String),
    #[error("A user credential cannot be altered twice in the same request")]
    Duplicate,
    #[error("the change could not be made durable")]
    Storage,
}

/// Applies `changes`, user by user: a user's changes all take effect or (on any refusal) none
/// do, as Kafka answers one result per user. Results are in the order users first appear.
pub fn apply(users: &mut Users, changes: &[UserChange]) -> Vec<(String, Result<(), UserError>)> {
    let mut by_user: Vec<(String, Vec<&UserChange>)> = Vec::new();
    for change in changes {
        match by_user.iter_mut().find(|(user, _)| user == change.user()) {
            Some((_, list)) => list.push(change),
            None => by_user.push((change.user().to_string(), vec![change])),
        }
    }
    by_user
        .into_iter()
        .map(|(user, list)| {
            let result = apply_user(users, &user, &list);
            (user, result)
        })
        .collect()
}

fn apply_user(users: &mut Users, user: &str, changes: &[&UserChange]) -> Result<(), UserError> {
    if user.is_empty() || user.len() > USER_NAME_BYTES_MAX {
        return Err(UserError::Unacceptable(format!(
            "Username must be 1 to {USER_NAME_BYTES_MAX} bytes"
        )));
    }
    for (i, change) in changes.iter().enumerate() {
        if changes[..i]
            .iter()
            .any(|c| c.mechanism() == change.mechanism())
        {
            return Err(UserError::Duplicate);
        }
    }
    let mut credentials = users.get(user).cloned().unwrap_or_default();
    for change in changes {
        match change {
            UserChange::Upsert {
                mechanism,
                credential,
                ..
            } => {
                check_iterations(credential.iterations)?;
                if credential.salt.is_empty() {
                    return Err(UserError::Unacceptable("Salt must not be empty".into()));
                }
                credentials.insert(*mechanism, credential.clone());
            }
            UserChange::Delete { mechanism, .. } => {
                credentials.remove(mechanism).ok_or(UserError::NotFound)?;
            }
        }
    }
    if credentials.is_empty() {
        users.remove(user);
    } else {
        users.insert(user.to_string(), credentials);
    }
    Ok(())
}

pub fn check_iterations(iterations: u32) -> Result<(), UserError> {
    if (ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        Ok(())
    } else {
        Err(UserError::Unacceptable(format!(
            "Iterations {iterations} must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}"
        )))
    }
}

/// The credential for `(user, mechanism)`, if any.
pub fn credential(users: &Users, user: &str, mechanism: Mechanism) -> Option<Credential> {
    users.get(user)?.get(&mechanism).cloned()
}

/// Passwords checked by PLAIN (Kafka SASL/PLAIN, AMQP PLAIN and AMQPLAIN) against SCRAM
/// credentials cost a PBKDF2 each (4096+ HMACs, milliseconds of the shard's only thread). A
/// client that reconnects often would pay it every time, so each shard remembers the passwords
/// it has verified, as a digest keyed by the user and bound to the StoredKey it matched: a
/// changed or deleted credential no longer matches. Only successes are remembered, so failed
/// attempts cannot fill it; it is cleared when full (bounded memory).
const PLAIN_CACHE_ENTRIES_MAX: usize = 1024;

/// `(user, SHA-256(salt, password))` to the StoredKey that password matched.
type VerifiedPasswords = HashMap<(String, Vec<u8>), Vec<u8>>;

thread_local! {
    static PLAIN_VERIFIED: RefCell<VerifiedPasswords> = RefCell::new(HashMap::new());
}

/// Whether `password` is `user`'s, by any of the user's SCRAM credentials (SHA-512 first).
pub fn verify_password(users: &Users, user: &str, password: &str) -> bool {
    let Some(credentials) = users.get(user) else {
        return false;
    };
    credentials.iter().rev().any(|(mechanism, credential)| {
        use sha2::{Digest, Sha256};
        let key = (
            user.to_string(),
            Sha256::new()
                .chain_update(&credential.salt)
                .chain_update(password.as_bytes())
                .finalize()
                .to_vec(),
        );
        let known =
            PLAIN_VERIFIED.with(|cache| cache.borrow().get(&key) == Some(&credential.stored_key));
        if known {
            return true;
        }
        if !credential.matches_password(*mechanism, password) {
            return false;
        }
        PLAIN_VERIFIED.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() >= PLAIN_CACHE_ENTRIES_MAX {
                cache.clear();
            }
            cache.insert(key, credential.stored_key.clone());
        });
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(user: &str, mechanism: Mechanism, iterations: u32) -> UserChange {
        UserChange::Upsert {
            user: user.into(),
            mechanism,
            credential: Credential::from_password(mechanism, "pw", iterations),
        }
    }

    #[test]
    fn changes_apply_per_user() {
        let mut users = Users::new();
        let results = apply(
            &mut users,
            &[
                upsert("alice", Mechanism::Sha256, 4096),
                upsert("bob", Mechanism::Sha512, 100),
                upsert("carol", Mechanism::Sha512, 4096),
                upsert("carol", Mechanism::Sha512, 8192),
            ],
        );
        assert_eq!(results[0], ("alice".into(), Ok(())));
        assert!(matches!(results[1].1, Err(UserError::Unacceptable(_))));
        assert_eq!(results[2], ("carol".into(), Err(UserError::Duplicate)));
        assert_eq!(users.keys().collect::<Vec<_>>(), vec!["alice"]);
        assert!(verify_password(&users, "alice", "pw"));
        assert!(verify_password(&users, "alice", "pw")); // from the cache
        assert!(!verify_password(&users, "alice", "pw2"));
        let delete = |mechanism| UserChange::Delete {
            user: "alice".into(),
            mechanism,
        };
        let results = apply(&mut users, &[delete(Mechanism::Sha512)]);
        assert_eq!(results[0].1, Err(UserError::NotFound));
        let results = apply(&mut users, &[delete(Mechanism::Sha256)]);
        assert_eq!(results[0].1, Ok(()));
        assert!(users.is_empty());
        assert!(!verify_password(&users, "alice", "pw"));
    }
}
