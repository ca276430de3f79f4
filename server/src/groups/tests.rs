//! The coordinator against its domain API, on a real glommio executor and a real offset log:
//! membership, rebalances, fencing, committed offsets, describe/list, and random request storms.
//! (How each Kafka version shapes these answers is tested in `kafka/group_apis.rs`.)

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_lite::future::zip;
use glommio::{LocalExecutorBuilder, Placement};

use super::*;
use GroupError as E;

const OK: Result<(), GroupError> = Ok(());

/// A directory under the system temp dir, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("weir-groups-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::from_millis(30),
        session_timeout_min: Duration::from_millis(10),
        sweep_interval: Duration::from_millis(10),
        ..GroupConfig::default()
    }
}

/// Runs `body` on a real glommio executor with a fresh groups dir.
fn run<F, Fut>(name: &str, body: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dir = TestDir::new(name);
    let data_dir = dir.0.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(512 << 10)
        .spawn(move || async move {
            weir_engine::io::prepare_data_dir(&data_dir).await.unwrap();
            body(data_dir.join("groups")).await
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn open(groups_dir: &Path) -> Rc<GroupCoordinator> {
    GroupCoordinator::open_with_config(groups_dir, 0, test_config())
        .await
        .unwrap()
}

/// A join as a modern client sends it (ids handed out first, KIP-394).
fn join_request(group: &str, member_id: &str, session_ms: i32, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: group.to_string(),
        member_id: member_id.to_string(),
        instance_id: None,
        session_timeout_ms: session_ms,
        rebalance_timeout_ms: Some(2_000),
        protocol_type: "consumer".to_string(),
        protocols: protocols
            .iter()
            .map(|name| (name.to_string(), Bytes::from(format!("meta-{name}"))))
            .collect(),
        member_id_required: true,
        client: ClientInfo::default(),
    }
}

/// Joins like a modern client: an empty member id gets `MemberIdRequired`, then joins with it.
async fn join(
    coordinator: &GroupCoordinator,
    group: &str,
    member_id: &str,
    session_ms: i32,
) -> JoinOutcome {
    let protocols = ["range", "roundrobin"];
    let outcome = coordinator
        .join_group(join_request(group, member_id, session_ms, &protocols))
        .await;
    if outcome.error != Some(E::MemberIdRequired) {
        return outcome;
    }
    assert!(!outcome.member_id.is_empty());
    coordinator
        .join_group(join_request(
            group,
            &outcome.member_id,
            session_ms,
            &protocols,
        ))
        .await
}

fn member(group: &str, generation_id: i32, member_id: &str) -> MemberGeneration {
    MemberGeneration {
        group_id: group.to_string(),
        member_id: member_id.to_string(),
        generation_id,
        instance_id: None,
    }
}

async fn sync(
    coordinator: &GroupCoordinator,
    group: &str,
    generation_id: i32,
    member_id: &str,
    assignments: &[(&str, &str)],
) -> Result<Synced, GroupError> {
    let request = SyncRequest {
        member: member(group, generation_id, member_id),
        protocol_type: Some("consumer".to_string()),
        protocol_name: Some("range".to_string()),
        assignments: assignments
            .iter()
            .map(|(member, assignment)| (member.to_string(), Bytes::from(assignment.to_string())))
            .collect(),
    };
    coordinator.sync_group(request).await
}

fn assignment(synced: Result<Synced, GroupError>) -> Bytes {
    synced.expect("synced").assignment
}

fn heartbeat(
    coordinator: &GroupCoordinator,
    group: &str,
    generation_id: i32,
    member_id: &str,
) -> Result<(), GroupError> {
    coordinator.heartbeat(&member(group, generation_id, member_id))
}

fn leave(coordinator: &GroupCoordinator, group: &str, member_id: &str) -> Result<(), GroupError> {
    let leaving = [LeavingMember {
        member_id: member_id.to_string(),
        instance_id: None,
    }];
    coordinator.leave_group(group, &leaving).unwrap()[0]
}

/// A commit of (topic, partition, offset)s with leader epoch 3 and metadata `m<offset>`.
fn commit_request(
    group: &str,
    generation_id: i32,
    member_id: &str,
    offsets: &[(&str, i32, i64)],
) -> OffsetCommit {
    let mut request = OffsetCommit {
        member: member(group, generation_id, member_id),
        topics: Vec::new(),
    };
    for (topic, partition, offset) in offsets {
        let commit = PartitionCommit {
            offset: *offset,
            leader_epoch: 3,
            metadata: Some(format!("m{offset}")),
        };
        match request.topics.iter_mut().find(|t| t.name == *topic) {
            Some(existing) => existing.partitions.push((*partition, commit)),
            None => request.topics.push(TopicPartitions {
                name: topic.to_string(),
                partitions: vec![(*partition, commit)],
            }),
        }
    }
    request
}

async fn commit(coordinator: &GroupCoordinator, request: OffsetCommit) -> Vec<Result<(), E>> {
    coordinator
        .commit_offsets(request)
        .await
        .into_iter()
        .flat_map(|topic| topic.partitions.into_iter().map(|(_, result)| result))
        .collect()
}

/// (topic, partition, offset, leader epoch, metadata); -1, -1, "" when nothing is committed.
fn fetch(
    coordinator: &GroupCoordinator,
    group: &str,
    topics: Option<&[(&str, &[i32])]>,
) -> Vec<(String, i32, i64, i32, String)> {
    let wanted = topics.map(|topics| {
        topics
            .iter()
            .map(|(name, partitions)| (name.to_string(), partitions.to_vec()))
            .collect()
    });
    coordinator
        .fetch_offsets(group, wanted)
        .unwrap()
        .into_iter()
        .flat_map(|topic| {
            topic.partitions.into_iter().map(move |(partition, value)| {
                let value = value.unwrap_or(CommittedOffset {
                    offset: -1,
                    leader_epoch: -1,
                    metadata: None,
                    commit_timestamp_ms: 0,
                });
                (
                    topic.name.clone(),
                    partition,
                    value.offset,
                    value.leader_epoch,
                    value.metadata.unwrap_or_default(),
                )
            })
        })
        .collect()
}

/// The leader and the follower of two joins of one generation.
fn leader_first(a: JoinOutcome, b: JoinOutcome) -> (JoinOutcome, JoinOutcome) {
    if a.member_id == a.leader {
        (a, b)
    } else {
        (b, a)
    }
}

/// Two members joined and synced: (coordinator, generation, leader id, follower id).
async fn stable_pair(
    groups_dir: &Path,
    session_ms: i32,
) -> (Rc<GroupCoordinator>, i32, String, String) {
    let coordinator = open(groups_dir).await;
    let (a, b) = zip(
        join(&coordinator, "g", "", session_ms),
        join(&coordinator, "g", "", session_ms),
    )
    .await;
    let (leader, follower) = leader_first(a, b);
    let generation = leader.generation_id;
    let assignments = [
        (leader.member_id.as_str(), "to-leader"),
        (follower.member_id.as_str(), "to-follower"),
    ];
    let (leader_sync, follower_sync) = zip(
        sync(
            &coordinator,
            "g",
            generation,
            &leader.member_id,
            &assignments,
        ),
        sync(&coordinator, "g", generation, &follower.member_id, &[]),
    )
    .await;
    assert_eq!(assignment(leader_sync), "to-leader");
    assert_eq!(assignment(follower_sync), "to-follower");
    (
        coordinator,
        generation,
        leader.member_id,
        follower.member_id,
    )
}

#[test]
fn two_members_join_the_same_generation_with_one_leader() {
    run("join", |dir| async move {
        let coordinator = open(&dir).await;
        let (a, b) = zip(
            join(&coordinator, "g", "", 5_000),
            join(&coordinator, "g", "", 5_000),
        )
        .await;
        assert_eq!((a.error, b.error), (None, None));
        assert_eq!(a.generation_id, 1);
        assert_eq!(b.generation_id, 1);
        assert_ne!(a.member_id, b.member_id);
        assert_eq!(a.leader, b.leader);
        assert_eq!(a.protocol_name.as_deref(), Some("range"));
        assert_eq!(a.protocol_type.as_deref(), Some("consumer"));
        assert!(a.member_id.starts_with("member-"), "{:?}", a.member_id);
        let (leader, follower) = leader_first(a, b);
        assert_eq!(leader.members.len(), 2);
        assert!(leader.members.iter().all(|m| m.metadata == "meta-range"));
        assert!(follower.members.is_empty());
        coordinator.close().await;
    });
}

#[test]
fn sync_distributes_the_leaders_assignments() {
    run("sync", |dir| async move {
        let coordinator = open(&dir).await;
        let (a, b) = zip(
            join(&coordinator, "g", "", 5_000),
            join(&coordinator, "g", "", 5_000),
        )
        .await;
        let (leader, follower) = leader_first(a, b);
        let generation = leader.generation_id;
        let (leader_id, follower_id) = (leader.member_id, follower.member_id);
        // The follower syncs first and waits for the leader.
        let assignments = [(leader_id.as_str(), "p0"), (follower_id.as_str(), "p1")];
        let (follower_sync, leader_sync) = zip(
            sync(&coordinator, "g", generation, &follower_id, &[]),
            async {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                sync(&coordinator, "g", generation, &leader_id, &assignments).await
            },
        )
        .await;
        assert_eq!(assignment(follower_sync), "p1");
        let leader_sync = leader_sync.unwrap();
        assert_eq!(leader_sync.assignment, "p0");
        assert_eq!(leader_sync.protocol_name.as_deref(), Some("range"));
        assert_eq!(leader_sync.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(heartbeat(&coordinator, "g", generation, &follower_id), OK);
        // A late sync in Stable gets the same assignment again.
        let again = sync(&coordinator, "g", generation, &follower_id, &[]).await;
        assert_eq!(assignment(again), "p1");
        let described = coordinator.describe_group("g").unwrap();
        assert_eq!(described.state, GroupState::Stable);
        assert_eq!(described.protocol_type, "consumer");
        assert_eq!(described.protocol.as_deref(), Some("range"));
        assert_eq!(described.members.len(), 2);
        assert!(described.members.iter().any(|m| m.assignment == "p1"));
        assert!(described.members.iter().all(|m| m.metadata == "meta-range"));
        let listed = coordinator.list_groups(&["stable".to_string()]);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, GroupState::Stable);
        assert_eq!(listed[0].protocol_type, "consumer");
        assert!(coordinator.list_groups(&["Empty".to_string()]).is_empty());
        coordinator.close().await;
    });
}

#[test]
fn an_expired_session_starts_a_rebalance() {
    run("expiry", |dir| async move {
        let (coordinator, generation, leader_id, follower_id) = stable_pair(&dir, 500).await;
        // Only the leader keeps heartbeating; the follower goes silent.
        let mut result = OK;
        for _ in 0..100 {
            glommio::timer::sleep(Duration::from_millis(20)).await;
            result = heartbeat(&coordinator, "g", generation, &leader_id);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(E::RebalanceInProgress));
        assert_eq!(
            heartbeat(&coordinator, "g", generation, &follower_id),
            Err(E::UnknownMember)
        );
        let rejoined = join(&coordinator, "g", &leader_id, 500).await;
        assert_eq!(rejoined.error, None);
        assert_eq!(rejoined.generation_id, generation + 1);
        assert_eq!(rejoined.leader, rejoined.member_id);
        assert_eq!(rejoined.members.len(), 1);
        coordinator.close().await;
    });
}

#[test]
fn leaving_starts_a_rebalance_and_the_last_leave_empties_the_group() {
    run("leave", |dir| async move {
        let (coordinator, generation, leader_id, follower_id) = stable_pair(&dir, 5_000).await;
        assert_eq!(leave(&coordinator, "g", &leader_id), OK);
        assert_eq!(
            heartbeat(&coordinator, "g", generation, &follower_id),
            Err(E::RebalanceInProgress)
        );
        let rejoined = join(&coordinator, "g", &follower_id, 5_000).await;
        assert_eq!(rejoined.generation_id, generation + 1);
        assert_eq!(
            rejoined.leader, rejoined.member_id,
            "the follower becomes leader"
        );
        // The last member leaves: the group empties with a new generation.
        assert_eq!(leave(&coordinator, "g", &follower_id), OK);
        assert_eq!(
            leave(&coordinator, "g", &follower_id),
            Err(E::UnknownMember)
        );
        assert_eq!(leave(&coordinator, "nope", "x"), Err(E::UnknownMember));
        let described = coordinator.describe_group("g").unwrap();
        assert_eq!(described.state, GroupState::Empty);
        assert!(described.members.is_empty());
        assert_eq!(described.protocol, None);
        coordinator.close().await;
        assert_eq!(
            coordinator.leave_group("g", &[]),
            Err(E::CoordinatorNotAvailable)
        );
    });
}

#[test]
fn committed_offsets_survive_reopening_the_coordinator() {
    run("durable", |dir| async move {
        let coordinator = open(&dir).await;
        let offsets = [("t", 0, 10), ("t", 1, 20), ("u", 0, 5)];
        let results = commit(&coordinator, commit_request("simple", -1, "", &offsets)).await;
        assert_eq!(results, vec![OK; 3]);
        // A later commit overwrites one partition.
        let results = commit(
            &coordinator,
            commit_request("simple", -1, "", &[("t", 1, 25)]),
        )
        .await;
        assert_eq!(results, vec![OK]);
        coordinator.close().await;
        drop(coordinator);

        let coordinator = open(&dir).await;
        assert_eq!(
            fetch(&coordinator, "simple", None),
            vec![
                ("t".to_string(), 0, 10, 3, "m10".to_string()),
                ("t".to_string(), 1, 25, 3, "m25".to_string()),
                ("u".to_string(), 0, 5, 3, "m5".to_string()),
            ]
        );
        assert_eq!(
            fetch(&coordinator, "simple", Some(&[("t", &[1, 7])])),
            vec![
                ("t".to_string(), 1, 25, 3, "m25".to_string()),
                ("t".to_string(), 7, -1, -1, String::new())
            ]
        );
        assert!(fetch(&coordinator, "nobody", None).is_empty());
        assert_eq!(coordinator.fetch_offsets("", None), Err(E::InvalidGroupId));
        // An offsets-only group is listed and described as Empty.
        let listed = coordinator.list_groups(&[]);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, GroupState::Empty);
        assert_eq!(listed[0].protocol_type, "");
        let described = coordinator.describe_group("simple").unwrap();
        assert_eq!(described.state, GroupState::Empty);
        assert_eq!(
            coordinator.describe_group("nobody"),
            Err(E::GroupIdNotFound)
        );
        assert_eq!(coordinator.describe_group(""), Err(E::InvalidGroupId));
        coordinator.close().await;
        assert_eq!(
            coordinator.fetch_offsets("simple", None),
            Err(E::CoordinatorNotAvailable)
        );
        assert_eq!(
            coordinator.describe_group("simple"),
            Err(E::CoordinatorNotAvailable)
        );
        assert!(coordinator.list_groups(&[]).is_empty());
    });
}

#[test]
fn commits_are_fenced_by_generation_and_membership() {
    run("fencing", |dir| async move {
        let (coordinator, generation, leader_id, _) = stable_pair(&dir, 5_000).await;
        let cases = [
            (
                commit_request("g", generation, &leader_id, &[("t", 0, 1)]),
                OK,
            ),
            (
                commit_request("g", generation + 1, &leader_id, &[("t", 0, 2)]),
                Err(E::IllegalGeneration),
            ),
            (
                commit_request("g", generation, "stranger", &[("t", 0, 3)]),
                Err(E::UnknownMember),
            ),
            // A simple commit is refused while the group has members.
            (
                commit_request("g", -1, "", &[("t", 0, 4)]),
                Err(E::UnknownMember),
            ),
            (
                commit_request("", -1, "", &[("t", 0, 5)]),
                Err(E::InvalidGroupId),
            ),
            (
                commit_request("other", 3, "m", &[("t", 0, 6)]),
                Err(E::IllegalGeneration),
            ),
            (
                commit_request("g", generation, &leader_id, &[("", 0, 6)]),
                Err(E::UnknownTopicOrPartition),
            ),
            (
                commit_request("g", generation, &leader_id, &[("t", -1, 6)]),
                Err(E::UnknownTopicOrPartition),
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(commit(&coordinator, request).await, vec![expected]);
        }
        let mut big = commit_request("g", generation, &leader_id, &[("t", 1, 7)]);
        big.topics[0].partitions[0].1.metadata = Some("x".repeat(5000));
        assert_eq!(
            commit(&coordinator, big).await,
            vec![Err(E::OffsetMetadataTooLarge)]
        );
        assert_eq!(
            fetch(&coordinator, "g", None),
            vec![("t".to_string(), 0, 1, 3, "m1".to_string())]
        );
        coordinator.close().await;
        let closed = commit_request("g", generation, &leader_id, &[("t", 0, 9)]);
        assert_eq!(
            commit(&coordinator, closed).await,
            vec![Err(E::CoordinatorNotAvailable)]
        );
    });
}

#[test]
fn a_rebalance_fences_sync_heartbeat_and_commits() {
    run("rebalance-fencing", |dir| async move {
        let (coordinator, generation, leader_id, follower_id) = stable_pair(&dir, 5_000).await;
        let sync_error = |generation: i32, member_id: &str| {
            let coordinator = coordinator.clone();
            let member_id = member_id.to_string();
            async move {
                sync(&coordinator, "g", generation, &member_id, &[])
                    .await
                    .err()
            }
        };
        assert_eq!(
            sync_error(generation + 5, &follower_id).await,
            Some(E::IllegalGeneration)
        );
        assert_eq!(
            sync_error(generation, "stranger").await,
            Some(E::UnknownMember)
        );
        assert_eq!(
            heartbeat(&coordinator, "g", generation - 1, &follower_id),
            Err(E::IllegalGeneration)
        );
        assert_eq!(
            heartbeat(&coordinator, "nope", generation, &follower_id),
            Err(E::UnknownMember)
        );
        // The leader rejoins: a rebalance starts, sync and commits see it.
        let rejoin = {
            let coordinator = coordinator.clone();
            let leader_id = leader_id.clone();
            glommio::spawn_local(async move { join(&coordinator, "g", &leader_id, 5_000).await })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            sync_error(generation, &follower_id).await,
            Some(E::RebalanceInProgress)
        );
        assert_eq!(
            heartbeat(&coordinator, "g", generation, &follower_id),
            Err(E::RebalanceInProgress)
        );
        // Commits during PreparingRebalance are still accepted for the current generation.
        let during = commit_request("g", generation, &follower_id, &[("t", 0, 8)]);
        assert_eq!(commit(&coordinator, during).await, vec![OK]);
        let follower_join = join(&coordinator, "g", &follower_id, 5_000).await;
        let leader_join = rejoin.await;
        assert_eq!(follower_join.generation_id, generation + 1);
        assert_eq!(leader_join.generation_id, generation + 1);
        // CompletingRebalance: commits wait for the assignment.
        let completing = commit_request("g", generation + 1, &follower_id, &[("t", 0, 9)]);
        assert_eq!(
            commit(&coordinator, completing).await,
            vec![Err(E::RebalanceInProgress)]
        );
        // A SyncGroup naming another protocol than the group's is refused.
        let mut other = SyncRequest {
            member: member("g", generation + 1, &follower_id),
            protocol_name: Some("roundrobin".to_string()),
            ..SyncRequest::default()
        };
        assert_eq!(
            coordinator.sync_group(other.clone()).await,
            Err(E::InconsistentProtocol)
        );
        other.protocol_name = None;
        other.protocol_type = Some("connect".to_string());
        assert_eq!(
            coordinator.sync_group(other).await,
            Err(E::InconsistentProtocol)
        );
        coordinator.close().await;
    });
}

#[test]
fn bad_joins_get_errors_not_panics() {
    run("bad-join", |dir| async move {
        let coordinator = open(&dir).await;
        let mut no_type = join_request("g", "", 5_000, &["range"]);
        no_type.protocol_type = String::new();
        let cases = [
            (join_request("", "", 5_000, &["range"]), E::InvalidGroupId),
            (join_request("g", "", 5_000, &[]), E::InconsistentProtocol),
            (no_type, E::InconsistentProtocol),
            (
                join_request("g", "", -1, &["range"]),
                E::InvalidSessionTimeout,
            ),
            (
                join_request("g", "", 1, &["range"]),
                E::InvalidSessionTimeout,
            ),
            (
                join_request("g", "", i32::MAX, &["range"]),
                E::InvalidSessionTimeout,
            ),
            (
                join_request("g", "ghost", 5_000, &["range"]),
                E::UnknownMember,
            ),
        ];
        for (request, expected) in cases {
            let outcome = coordinator.join_group(request.clone()).await;
            assert_eq!(outcome.error, Some(expected), "{request:?}");
            assert_eq!(outcome.member_id, request.member_id);
            assert_eq!(outcome.generation_id, -1);
        }
        // Old clients (no KIP-394, no rebalance timeout) get their id directly.
        let mut old = join_request("old", "", 5_000, &["range"]);
        old.member_id_required = false;
        old.rebalance_timeout_ms = None;
        let first = coordinator.join_group(old.clone()).await;
        assert_eq!(first.error, None);
        assert_eq!(first.generation_id, 1);
        // A member with no protocol in common is refused.
        old.protocols = vec![("sticky".to_string(), Bytes::new())];
        assert_eq!(
            coordinator.join_group(old).await.error,
            Some(E::InconsistentProtocol)
        );
        coordinator.close().await;
        let closed = coordinator
            .join_group(join_request("g", "", 5_000, &["range"]))
            .await;
        assert_eq!(closed.error, Some(E::CoordinatorNotAvailable));
    });
}

#[test]
fn a_newcomer_rebalances_a_stable_group_and_the_leader_stays() {
    run("newcomer", |dir| async move {
        let (coordinator, generation, leader_id, follower_id) = stable_pair(&dir, 5_000).await;
        let newcomer = {
            let coordinator = coordinator.clone();
            glommio::spawn_local(async move { join(&coordinator, "g", "", 5_000).await })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            heartbeat(&coordinator, "g", generation, &leader_id),
            Err(E::RebalanceInProgress)
        );
        let (leader, follower) = zip(
            join(&coordinator, "g", &leader_id, 5_000),
            join(&coordinator, "g", &follower_id, 5_000),
        )
        .await;
        let newcomer = newcomer.await;
        for outcome in [&leader, &follower, &newcomer] {
            assert_eq!(outcome.error, None);
            assert_eq!(outcome.generation_id, generation + 1);
            assert_eq!(outcome.leader, leader_id);
        }
        assert_eq!(leader.members.len(), 3);

        // A follower parked in SyncGroup is released when another rebalance starts.
        let parked = {
            let coordinator = coordinator.clone();
            let follower_id = follower_id.clone();
            glommio::spawn_local(async move {
                sync(&coordinator, "g", generation + 1, &follower_id, &[]).await
            })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(leave(&coordinator, "g", &newcomer.member_id), OK);
        assert_eq!(parked.await, Err(E::RebalanceInProgress));
        coordinator.close().await;
    });
}

#[test]
fn a_full_group_refuses_new_members() {
    run("full", |dir| async move {
        let config = GroupConfig {
            group_members_max: 2,
            ..test_config()
        };
        let coordinator = GroupCoordinator::open_with_config(&dir, 0, config)
            .await
            .unwrap();
        let request = || join_request("g", "", 5_000, &["range"]);
        let first = coordinator.join_group(request()).await;
        let second = coordinator.join_group(request()).await;
        assert_eq!(first.error, Some(E::MemberIdRequired));
        assert_eq!(second.error, Some(E::MemberIdRequired));
        assert_eq!(
            coordinator.join_group(request()).await.error,
            Some(E::GroupMaxSizeReached)
        );
        // Ids already handed out still get in.
        let (a, b) = zip(
            join(&coordinator, "g", &first.member_id, 5_000),
            join(&coordinator, "g", &second.member_id, 5_000),
        )
        .await;
        assert_eq!((a.error, b.error), (None, None));
        coordinator.close().await;
    });
}

#[test]
fn static_members_fence_their_old_id() {
    run("static", |dir| async move {
        let coordinator = open(&dir).await;
        let mut request = join_request("s", "", 5_000, &["range"]);
        request.instance_id = Some("instance-1".to_string());
        let first = coordinator.join_group(request.clone()).await;
        assert_eq!(first.error, None, "static members skip MemberIdRequired");
        let second = coordinator.join_group(request.clone()).await;
        assert_eq!(second.error, None);
        assert_ne!(first.member_id, second.member_id);
        let mut fenced = member("s", second.generation_id, &first.member_id);
        fenced.instance_id = Some("instance-1".to_string());
        assert_eq!(coordinator.heartbeat(&fenced), Err(E::FencedInstanceId));
        // Once Stable, a restart with the same protocols keeps the assignment, no rebalance.
        let generation = second.generation_id;
        let second_id = second.member_id;
        let synced = sync(
            &coordinator,
            "s",
            generation,
            &second_id,
            &[(second_id.as_str(), "mine")],
        )
        .await;
        assert_eq!(assignment(synced), "mine");
        let third = coordinator.join_group(request).await;
        assert_eq!(third.error, None);
        assert_eq!(third.generation_id, generation);
        assert_eq!(third.leader, third.member_id);
        let synced = sync(&coordinator, "s", generation, &third.member_id, &[]).await;
        assert_eq!(assignment(synced), "mine");
        assert_eq!(
            heartbeat(&coordinator, "s", generation, &second_id),
            Err(E::UnknownMember)
        );
        // Leaving by instance id with a stale member id is fenced; with the current one it works.
        let by_instance = |member_id: &str| LeavingMember {
            member_id: member_id.to_string(),
            instance_id: Some("instance-1".to_string()),
        };
        assert_eq!(
            coordinator.leave_group("s", &[by_instance(&second_id)]),
            Ok(vec![Err(E::FencedInstanceId)])
        );
        assert_eq!(
            coordinator.describe_group("s").unwrap().state,
            GroupState::Stable
        );
        assert_eq!(
            coordinator.leave_group("s", &[by_instance("")]),
            Ok(vec![OK])
        );
        coordinator.close().await;
    });
}

fn check_invariants(coordinator: &GroupCoordinator) {
    for (group_id, group) in coordinator.groups.borrow().iter() {
        let ids: BTreeSet<&str> = group.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            ids.len(),
            group.members.len(),
            "{group_id}: duplicate member ids"
        );
        match group.state {
            GroupState::Empty => assert!(group.members.is_empty(), "{group_id}"),
            GroupState::CompletingRebalance | GroupState::Stable => {
                let leader = group.leader.as_deref().expect("a leader");
                assert!(ids.contains(leader), "{group_id}: leader is a member");
                assert!(group.protocol_name.is_some());
                assert!(group.members.iter().all(|m| m.join_waiter.is_none()));
            }
            GroupState::PreparingRebalance => {
                assert!(group.rebalance_deadline.is_some())
            }
            GroupState::Dead => panic!("no group is kept Dead"),
        }
        if group.state == GroupState::Stable {
            assert!(group.members.iter().all(|m| m.sync_waiter.is_none()));
        }
        for member_id in group.static_members.values() {
            assert!(
                ids.contains(member_id.as_str()),
                "{group_id}: static map is current"
            );
        }
    }
}

/// A random request storm's state: the coordinator, the ids it has seen, and the requests
/// still parked.
struct Storm {
    coordinator: Rc<GroupCoordinator>,
    seed: u64,
    known_ids: Vec<String>,
    /// Spawned (possibly parked) requests report the member ids they were given here.
    given_ids: Rc<RefCell<Vec<String>>>,
    parked: Rc<Cell<usize>>,
}

impl Storm {
    fn next(&mut self, bound: u64) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % bound
    }

    fn spawn(&self, request: std::pin::Pin<Box<dyn Future<Output = String>>>) {
        let given_ids = self.given_ids.clone();
        let parked = self.parked.clone();
        parked.set(parked.get() + 1);
        glommio::spawn_local(async move {
            let id = request.await;
            given_ids.borrow_mut().push(id);
            parked.set(parked.get() - 1);
        })
        .detach();
    }

    /// A group, member and generation: garbage, stale, or (half the time) what a well-behaved
    /// member, often the leader, would send.
    fn pick(&mut self) -> (&'static str, String, i32) {
        let group = ["a", "b", ""][self.next(3) as usize];
        let index = self.next(self.known_ids.len() as u64) as usize;
        let mut member = self.known_ids[index].clone();
        let mut generation = self.next(6) as i32 - 1;
        if self.next(2) == 0 {
            let coordinator = self.coordinator.clone();
            let groups = coordinator.groups.borrow();
            if let Some(current) = groups.get(group) {
                generation = current.generation_id;
                let pick = self.next(current.members.len() as u64 + 1) as usize;
                member = match (pick, current.members.get(pick)) {
                    (_, Some(m)) if self.next(2) == 0 => m.id.clone(),
                    _ => current.leader.clone().unwrap_or(member),
                };
            }
        }
        (group, member, generation)
    }

    fn join(&mut self, group: &str, member: &str) {
        let protocols: &[&str] =
            [&["range"][..], &["range", "roundrobin"], &["sticky"], &[]][self.next(4) as usize];
        let mut request = join_request(group, member, 1_000, protocols);
        request.rebalance_timeout_ms = Some(100 + self.next(200) as i32);
        request.member_id_required = self.next(2) == 0;
        if self.next(4) == 0 {
            request.instance_id = Some(format!("i{}", self.next(3)));
        }
        let coordinator = self.coordinator.clone();
        self.spawn(Box::pin(async move {
            coordinator.join_group(request).await.member_id
        }));
    }

    fn sync(&mut self, group: &str, member: &str, generation: i32) {
        let request = SyncRequest {
            member: self::member(group, generation, member),
            protocol_name: (self.next(2) == 0).then(|| "range".to_string()),
            assignments: vec![(member.to_string(), Bytes::from_static(b"x"))],
            ..SyncRequest::default()
        };
        let coordinator = self.coordinator.clone();
        self.spawn(Box::pin(async move {
            let _ = coordinator.sync_group(request).await;
            String::new()
        }));
    }

    async fn step(&mut self, step: i64) {
        let (group, member, generation) = self.pick();
        let coordinator = self.coordinator.clone();
        match self.next(20) {
            0..=6 => self.join(group, &member),
            7..=10 => self.sync(group, &member, generation),
            11..=13 => {
                let _ = heartbeat(&coordinator, group, generation, &member);
            }
            14 => {
                let _ = coordinator.leave_group(
                    group,
                    &[LeavingMember {
                        member_id: member,
                        instance_id: None,
                    }],
                );
            }
            15 | 16 => {
                let partition = self.next(3) as i32;
                let request = commit_request(group, generation, &member, &[("t", partition, step)]);
                assert_eq!(commit(&coordinator, request).await.len(), 1);
            }
            17 => {
                let _ = coordinator.describe_group(group);
                let _ = coordinator.list_groups(&[]);
            }
            _ => glommio::timer::sleep(Duration::from_millis(self.next(40))).await,
        }
        // Let spawned requests run, then learn the ids they were given.
        glommio::timer::sleep(Duration::from_millis(1)).await;
        let given: Vec<String> = self.given_ids.borrow_mut().drain(..).collect();
        for id in given {
            if !id.is_empty() && !self.known_ids.contains(&id) {
                // Keep "" and "garbage", and the most recent ids.
                if self.known_ids.len() >= 10 {
                    self.known_ids.remove(2);
                }
                self.known_ids.push(id);
            }
        }
    }
}

/// Random interleavings of every request, with stale, foreign and garbage ids, generations and
/// options: nothing panics, invariants hold after every step, and every parked request is
/// answered by the end.
#[test]
fn random_request_storms_keep_the_invariants() {
    run("storm", |dir| async move {
        let mut storm = Storm {
            coordinator: open(&dir).await,
            seed: 0x2545_f491_4f6c_dd1d,
            known_ids: vec![String::new(), "garbage".to_string()],
            given_ids: Rc::new(RefCell::new(Vec::new())),
            parked: Rc::new(Cell::new(0)),
        };
        for step in 0..600 {
            storm.step(step).await;
            check_invariants(&storm.coordinator);
        }
        storm.coordinator.close().await;
        for _ in 0..1000 {
            if storm.parked.get() == 0 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(storm.parked.get(), 0, "close answers every parked request");
    });
}
