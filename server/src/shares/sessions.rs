//! Share sessions (KIP-932): the partitions a member fetches from this shard, kept between its
//! ShareFetch requests so that later ones need only name what changed. Keyed by (group,
//! member) on each shard, as Kafka keys them per broker. Epoch 0 opens (or replaces) a session,
//! -1 closes it, anything else must be the epoch the session expects next; a session that is
//! replaced, closed or out of step gives back what the member held in its partitions.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use super::partitions;

/// Share sessions a shard keeps at once (Kafka's `group.share.max.share.sessions` default):
/// bounds what members, hostile or not, can make a shard hold.
pub const SESSIONS_MAX: usize = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the share session limit has been reached")]
    LimitReached,
    #[error("share session not found")]
    NotFound,
    #[error("share session epoch is not the expected one")]
    InvalidEpoch,
}

#[derive(Default)]
struct Session {
    /// The epoch the next request must carry.
    next_epoch: i32,
    partitions: BTreeSet<(String, i32)>,
}

type Key = (String, String);

thread_local! {
    static SESSIONS: RefCell<HashMap<Key, Session>> = RefCell::new(HashMap::new());
}

/// A request's session step: checks `epoch`, then adds `added` and drops `forgotten`
/// partitions (giving back what the member held in those). Answers the session's partitions
/// (for -1: the partitions of the session being closed, which is gone afterwards).
pub fn step(
    group: &str,
    member: &str,
    epoch: i32,
    added: &[(String, i32)],
    forgotten: &[(String, i32)],
) -> Result<Vec<(String, i32)>, SessionError> {
    let key = (group.to_string(), member.to_string());
    SESSIONS.with(|sessions| {
        let mut sessions = sessions.borrow_mut();
        if epoch == 0 {
            if let Some(old) = sessions.remove(&key) {
                give_back(group, member, &old);
            }
            if sessions.len() >= SESSIONS_MAX {
                return Err(SessionError::LimitReached);
            }
            sessions.insert(key.clone(), Session::default());
        }
        let Some(session) = sessions.get_mut(&key) else {
            return Err(SessionError::NotFound);
        };
        if epoch > 0 && epoch != session.next_epoch {
            let old = sessions.remove(&key).expect("just found");
            give_back(group, member, &old);
            return Err(SessionError::InvalidEpoch);
        }
        session.partitions.extend(added.iter().cloned());
        for gone in forgotten {
            session.partitions.remove(gone);
        }
        partitions::release_in(group, member, forgotten);
        let current: Vec<(String, i32)> = session.partitions.iter().cloned().collect();
        if epoch == -1 {
            sessions.remove(&key);
        } else {
            session.next_epoch = session.next_epoch.wrapping_add(1).max(1);
        }
        Ok(current)
    })
}

/// Closes the member's session on this shard (after `step` with epoch -1 answered): what it
/// still holds in the session's partitions comes back.
pub fn closed(group: &str, member: &str, partitions: &[(String, i32)]) {
    partitions::release_in(group, member, partitions);
}

/// The member timed out of its group: its session here goes too, and what it held there.
pub fn drop_member(group: &str, member: &str) {
    let key = (group.to_string(), member.to_string());
    let session = SESSIONS.with(|sessions| sessions.borrow_mut().remove(&key));
    if let Some(session) = session {
        give_back(group, member, &session);
    }
}

fn give_back(group: &str, member: &str, session: &Session) {
    let held: Vec<(String, i32)> = session.partitions.iter().cloned().collect();
    partitions::release_in(group, member, &held);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_follow_one_another_and_sessions_are_bounded() {
        let parts = [("t".to_string(), 0)];
        assert_eq!(step("g", "m", 1, &[], &[]), Err(SessionError::NotFound));
        assert_eq!(step("g", "m", 0, &parts, &[]).unwrap(), parts.to_vec());
        assert!(step("g", "m", 1, &[], &[]).is_ok());
        assert_eq!(step("g", "m", 1, &[], &[]), Err(SessionError::InvalidEpoch));
        assert_eq!(
            step("g", "m", 2, &[], &[]),
            Err(SessionError::NotFound),
            "an out-of-step session is dropped"
        );
        assert!(step("g", "m", 0, &parts, &[]).is_ok());
        assert_eq!(step("g", "m", -1, &[], &[]).unwrap(), parts.to_vec());
        assert_eq!(step("g", "m", -1, &[], &[]), Err(SessionError::NotFound));
        for index in 0..SESSIONS_MAX {
            step("g", &format!("m{index}"), 0, &parts, &[]).unwrap();
        }
        assert_eq!(
            step("g", "one-too-many", 0, &parts, &[]),
            Err(SessionError::LimitReached)
        );
        assert!(
            step("g", "m0", 0, &parts, &[]).is_ok(),
            "replacing one is not a new one"
        );
    }
}
