//! A share group's membership on its coordinator shard (KIP-932's ShareGroupHeartbeat in domain
//! terms). A member joins with epoch 0 and the topics it subscribes to, heartbeats with the
//! epoch it was given, leaves with -1, and is dropped after its group's session timeout of silence
//! (`share.session.timeout.ms` where the group has it, else the broker's, 45 s by default).
//!
//! Assignment: every member gets every partition of the topics it subscribes to that exist.
//! Share groups need no exclusive assignment (records, not partitions, are the unit of work),
//! and this is KIP-932's simple assignor when members outnumber partitions; Kafka 4.2 spreads
//! partitions when they outnumber members, which saves fetches but changes no record's fate.
//! A member's epoch moves to the group's next epoch whenever its assignment changes.
//!
//! A group whose last member is gone stays, Empty (Kafka keeps it until DeleteGroups):
//! ShareGroupDescribe and ListGroups show it, its offsets can be altered. Membership is not
//! persisted, but a group's share-partition state is: at start every shard tells each group's
//! coordinator of the groups it keeps state for (`adopt`), so after a restart such a group is
//! known again, Empty, with epoch 0 (Kafka persists the epoch; Weir's members start over).
//!
//! One group id is one group, as in Kafka: the coordinator shard holds both this module's share
//! groups and `groups`' classic ones, and each side refuses an id the other holds
//! (`is_share_group`, and `groups::GroupCoordinator::has_group` in ShareGroupHeartbeat).
//!
//! A member that leaves gives its records back when its share sessions close (a closing client
//! sends its last acknowledgements there, after or beside its leave heartbeat). A member that
//! times out is gone for good: every shard releases what it holds and drops its sessions
//! (`member_gone`, over the mesh), so its records come back without waiting for their locks.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::metadata::Metadata;
use crate::shard::mesh::{on_shard, Job};
use crate::shard::{Shard, ShardId};

/// One heartbeat, as the coordinator takes it.
pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
    /// 0 to join, -1 to leave, else the epoch the member was last given.
    pub member_epoch: i32,
    /// The subscribed topics when they changed (always on a join); `None`: unchanged.
    pub subscribed: Option<Vec<String>>,
    /// Who sent it (the request header's client id, the peer's address), for ShareGroupDescribe.
    pub client: ClientInfo,
}

/// A member's client as ShareGroupDescribe shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    /// As Kafka shows it: `/127.0.0.1`.
    pub client_host: String,
}

/// A share group's state as Kafka 4.2 names them: Empty (no members), Stable (members); a group
/// the coordinator does not know is Dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareGroupState {
    Empty,
    Stable,
}

impl ShareGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ShareGroupState::Empty => "Empty",
            ShareGroupState::Stable => "Stable",
        }
    }
}

/// One member, as ShareGroupDescribe shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub member_epoch: i32,
    pub client: ClientInfo,
    pub subscribed: Vec<String>,
    /// (topic, partition count): the member has every partition of the topic.
    pub assignment: Vec<(String, i32)>,
}

/// A share group as ShareGroupDescribe shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGroupDescription {
    pub group_id: String,
    pub state: ShareGroupState,
    pub group_epoch: i32,
    /// The epoch of the assignment the members hold. Weir assigns within the heartbeat that
    /// changes the group, so it is always the group epoch.
    pub assignment_epoch: i32,
    pub members: Vec<DescribedMember>,
}

/// One share group, as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGroupListing {
    pub group_id: String,
    pub state: ShareGroupState,
}

/// The coordinator's answer: the member's epoch and its whole assignment (topic, partitions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_epoch: i32,
    pub assignment: Vec<(String, i32)>,
}

/// Members a share group takes (Kafka's `group.share.max.size` default).
pub const MEMBERS_MAX: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShareGroupError {
    #[error("the share group has reached its maximum size")]
    GroupFull,
    #[error("unknown member")]
    UnknownMember,
    #[error("the member epoch is not the member's")]
    FencedEpoch,
    #[error("{0}")]
    InvalidRequest(&'static str),
}

struct Member {
    epoch: i32,
    /// The epoch before the last change: a member whose answer was lost may still send it.
    previous_epoch: i32,
    subscribed: Vec<String>,
    assignment: Vec<(String, i32)>,
    last_seen: Instant,
    client: ClientInfo,
}

/// A group stays, Empty, once its last member is gone (as Kafka keeps a share group until
/// DeleteGroups): admins describe it and alter its offsets then. It is not persisted itself:
/// after a restart a group is known again from the share-partition state some shard keeps for
/// it (`adopt`), or from its first heartbeat.
#[derive(Default)]
struct ShareGroup {
    epoch: i32,
    members: BTreeMap<String, Member>,
}

impl ShareGroup {
    fn state(&self) -> ShareGroupState {
        if self.members.is_empty() {
            ShareGroupState::Empty
        } else {
            ShareGroupState::Stable
        }
    }
}

thread_local! {
    static GROUPS: RefCell<HashMap<String, ShareGroup>> = RefCell::new(HashMap::new());
}

/// How many share groups this shard coordinates (the metrics).
pub fn group_count() -> usize {
    GROUPS.with(|groups| groups.borrow().len())
}

/// Serves one heartbeat on the group's coordinator shard. `Ok(None)` for a member that left.
pub fn heartbeat(
    metadata: &Metadata,
    request: Heartbeat,
    now: Instant,
) -> Result<Option<HeartbeatAnswer>, ShareGroupError> {
    if request.member_id.is_empty() {
        return Err(ShareGroupError::InvalidRequest("MemberId can't be empty."));
    }
    GROUPS.with(|groups| {
        let mut groups = groups.borrow_mut();
        if request.member_epoch == -1 {
            if let Some(group) = groups.get_mut(&request.group_id) {
                group.members.remove(&request.member_id);
            }
            return Ok(None);
        }
        let existed = groups.contains_key(&request.group_id);
        let group = groups.entry(request.group_id.clone()).or_default();
        let admitted = if request.member_epoch == 0 {
            join(group, &request, now)
        } else {
            check_epoch(group, &request)
        };
        if let Err(error) = admitted {
            // A refused first heartbeat creates no group: the id stays free for a classic one.
            if !existed {
                groups.remove(&request.group_id);
            }
            return Err(error);
        }
        let group = groups.get_mut(&request.group_id).expect("admitted above");
        let member = group
            .members
            .get_mut(&request.member_id)
            .expect("joined or checked");
        member.last_seen = now;
        member.client = request.client;
        if let Some(topics) = request.subscribed {
            member.subscribed = topics;
        }
        let assignment = assign(metadata, &member.subscribed);
        if assignment != member.assignment || member.epoch == 0 {
            group.epoch += 1;
            member.previous_epoch = member.epoch;
            member.epoch = group.epoch;
            member.assignment = assignment;
        }
        Ok(Some(HeartbeatAnswer {
            member_epoch: member.epoch,
            assignment: member.assignment.clone(),
        }))
    })
}

/// A join (epoch 0): a new member, or one that restarted with its id.
fn join(group: &mut ShareGroup, request: &Heartbeat, now: Instant) -> Result<(), ShareGroupError> {
    if request.subscribed.as_ref().is_none_or(Vec::is_empty) {
        return Err(ShareGroupError::InvalidRequest(
            "SubscribedTopicNames must be set in first request.",
        ));
    }
    if !group.members.contains_key(&request.member_id) && group.members.len() >= MEMBERS_MAX {
        return Err(ShareGroupError::GroupFull);
    }
    let member = Member {
        epoch: 0,
        previous_epoch: 0,
        subscribed: Vec::new(),
        assignment: Vec::new(),
        last_seen: now,
        client: ClientInfo::default(),
    };
    group.members.insert(request.member_id.clone(), member);
    Ok(())
}

/// A heartbeat of a member in the group: its epoch must be the current one or the one before.
fn check_epoch(group: &ShareGroup, request: &Heartbeat) -> Result<(), ShareGroupError> {
    let member = group
        .members
        .get(&request.member_id)
        .ok_or(ShareGroupError::UnknownMember)?;
    let epoch = request.member_epoch;
    if epoch != member.epoch && epoch != member.previous_epoch {
        return Err(ShareGroupError::FencedEpoch);
    }
    Ok(())
}

/// Every partition of every subscribed topic that exists (exchanges keep no records).
fn assign(metadata: &Metadata, subscribed: &[String]) -> Vec<(String, i32)> {
    let mut topics: Vec<&String> = subscribed.iter().collect();
    topics.sort();
    topics.dedup();
    topics
        .into_iter()
        .filter_map(|name| {
            let topic = metadata.topics.get(name)?;
            Some((name.clone(), topic.partitions.len() as i32))
        })
        .collect()
}

/// Drops the members silent for longer than their group's session timeout; answers (group,
/// member).
fn sweep(now: Instant, session_timeout: impl Fn(&str) -> Duration) -> Vec<(String, String)> {
    GROUPS.with(|groups| {
        let mut gone = Vec::new();
        for (name, group) in groups.borrow_mut().iter_mut() {
            let timeout = session_timeout(name);
            group.members.retain(|id, member| {
                let alive = now.duration_since(member.last_seen) < timeout;
                if !alive {
                    gone.push((name.clone(), id.clone()));
                }
                alive
            });
        }
        gone
    })
}

/// Tells every shard that `member` of `group` timed out, so they release what it holds.
async fn member_gone(shard: &Shard, group: &str, member: &str) {
    for index in 0..shard.count {
        let (group, member) = (group.to_string(), member.to_string());
        let job = Job::Run(Box::new(move |_| {
            super::partitions::release_member(&group, &member);
            super::sessions::drop_member(&group, &member);
        }));
        let _ = shard.mesh.inbox(ShardId(index)).send_async(job).await;
    }
}

/// Once a second, drops timed-out members and has their records released.
pub fn spawn_sweeper(shard: Rc<Shard>) {
    glommio::spawn_local(async move {
        loop {
            futures_lite::future::or(
                glommio::timer::sleep(Duration::from_secs(1)),
                shard.shutdown.wait(),
            )
            .await;
            if shard.shutdown.is_fired() {
                return;
            }
            let timeout = |group: &str| super::group_configs::of(&shard, group).session_timeout;
            for (group, member) in sweep(Instant::now(), timeout) {
                tracing::info!(group, member, "share group member timed out");
                member_gone(&shard, &group, &member).await;
            }
        }
    })
    .detach();
}

/// The share groups this shard coordinates, for ListGroups.
pub fn listing() -> Vec<ShareGroupListing> {
    GROUPS.with(|groups| {
        groups
            .borrow()
            .iter()
            .map(|(name, group)| ShareGroupListing {
                group_id: name.clone(),
                state: group.state(),
            })
            .collect()
    })
}

/// Makes the named groups known on this (their coordinator) shard, Empty unless they are
/// known already: groups with share-partition state after a restart (`announce`), or a group an
/// admin sets offsets for before it had members.
pub fn adopt(names: impl IntoIterator<Item = String>) {
    GROUPS.with(|groups| {
        let mut groups = groups.borrow_mut();
        for name in names {
            groups.entry(name).or_default();
        }
    })
}

/// Whether this (the coordinator) shard holds `group_id` as a share group: then the classic
/// group APIs refuse it, as Kafka's do.
pub fn is_share_group(group_id: &str) -> bool {
    GROUPS.with(|groups| groups.borrow().contains_key(group_id))
}

/// At start, before any listener accepts: tells the coordinator of every share group this
/// shard keeps partition state for that the group exists (`adopt`), so that ShareGroupDescribe,
/// ListGroups and the classic APIs' refusals know it before its first member returns.
pub async fn announce(shard: &Rc<Shard>) {
    let mut by_owner: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for name in super::partitions::known_groups() {
        let owner = crate::groups::owner_shard(&name, shard.count);
        by_owner.entry(owner).or_default().push(name);
    }
    for (owner, names) in by_owner {
        // None: the owner is stopping, and so is the broker.
        let _ = on_shard(shard, ShardId(owner), move |_| adopt(names)).await;
    }
}

/// `group` as this (its coordinator) shard knows it; `None` for a group it does not know.
pub fn describe(group_id: &str) -> Option<ShareGroupDescription> {
    GROUPS.with(|groups| {
        let groups = groups.borrow();
        let group = groups.get(group_id)?;
        let members = group
            .members
            .iter()
            .map(|(id, member)| DescribedMember {
                member_id: id.clone(),
                member_epoch: member.epoch,
                client: member.client.clone(),
                subscribed: member.subscribed.clone(),
                assignment: member.assignment.clone(),
            })
            .collect();
        Some(ShareGroupDescription {
            group_id: group_id.to_string(),
            state: group.state(),
            group_epoch: group.epoch,
            assignment_epoch: group.epoch,
            members,
        })
    })
}

/// Whether `group` has members on this (its coordinator) shard: its offsets can be altered or
/// deleted only when it has none.
pub fn has_members(group_id: &str) -> bool {
    GROUPS.with(|groups| {
        groups
            .borrow()
            .get(group_id)
            .is_some_and(|group| !group.members.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::super::SESSION_TIMEOUT;
    use super::*;

    fn beat(member: &str, epoch: i32, topics: Option<&[&str]>) -> Heartbeat {
        Heartbeat {
            group_id: format!("g-{}", std::process::id()),
            member_id: member.to_string(),
            member_epoch: epoch,
            subscribed: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
            client: ClientInfo::default(),
        }
    }

    #[test]
    fn an_adopted_group_is_empty_until_a_member_joins_and_adopting_keeps_a_known_group() {
        let group = format!("adopted-{}", std::process::id());
        assert!(!is_share_group(&group));
        adopt([group.clone()]);
        assert!(is_share_group(&group));
        let described = describe(&group).unwrap();
        assert_eq!(described.state, ShareGroupState::Empty);
        assert_eq!((described.group_epoch, described.members.len()), (0, 0));
        let mut join = beat("m0", 0, Some(&["t"]));
        join.group_id = group.clone();
        heartbeat(&Metadata::default(), join, Instant::now()).unwrap();
        adopt([group.clone()]);
        let described = describe(&group).unwrap();
        assert_eq!(described.state, ShareGroupState::Stable, "not reset");
        assert_eq!(described.group_epoch, 1);
    }

    #[test]
    fn epochs_fence_stale_members_and_a_group_stops_at_its_size() {
        let metadata = Metadata::default();
        let now = Instant::now();
        let joined = heartbeat(&metadata, beat("m0", 0, Some(&["t"])), now).unwrap();
        let epoch = joined.unwrap().member_epoch;
        assert!(epoch > 0);
        let again = heartbeat(&metadata, beat("m0", epoch, None), now).unwrap();
        assert_eq!(again.unwrap().member_epoch, epoch, "no change, same epoch");
        let stale = heartbeat(&metadata, beat("m0", epoch + 5, None), now);
        assert_eq!(stale, Err(ShareGroupError::FencedEpoch));
        let unknown = heartbeat(&metadata, beat("nobody", 3, None), now);
        assert_eq!(unknown, Err(ShareGroupError::UnknownMember));
        let no_topics = heartbeat(&metadata, beat("m1", 0, None), now);
        assert!(matches!(no_topics, Err(ShareGroupError::InvalidRequest(_))));
        for index in 1..MEMBERS_MAX {
            let member = format!("m{index}");
            heartbeat(&metadata, beat(&member, 0, Some(&["t"])), now).unwrap();
        }
        let full = heartbeat(&metadata, beat("one-too-many", 0, Some(&["t"])), now);
        assert_eq!(full, Err(ShareGroupError::GroupFull));
        assert_eq!(heartbeat(&metadata, beat("m0", -1, None), now), Ok(None));
        let room = heartbeat(&metadata, beat("one-too-many", 0, Some(&["t"])), now);
        assert!(room.is_ok(), "a member left: room for one");
        let later = now + SESSION_TIMEOUT + Duration::from_secs(1);
        assert!(
            sweep(later, |_| 2 * SESSION_TIMEOUT).is_empty(),
            "a longer timeout"
        );
        assert_eq!(
            sweep(later, |_| SESSION_TIMEOUT).len(),
            MEMBERS_MAX,
            "silent members time out"
        );
    }
}
