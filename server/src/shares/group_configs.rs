//! Share groups' own configs (Kafka 4.2's group configs, `GroupConfig.java`, set and described
//! with IncrementalAlterConfigs / DescribeConfigs on resource type GROUP): a group's value of a
//! setting where it has one, else the broker's (`config::SharesConfig`). Core: no wire types.
//!
//! The configs live in the metadata (`Metadata::group_configs`), changed only by the controller
//! after `validate`, made durable by the metadata journal and on every shard (the partition owners
//! included) before the change is answered. Readers take the shard's current metadata, so a change
//! reaches the next acquisition, heartbeat or session sweep without a restart; what it changes
//! applies from then on (a record already acquired keeps the lock it was given, as in Kafka).
//!
//! Kafka 4.2's share-group names: `share.session.timeout.ms`, `share.heartbeat.interval.ms`,
//! `share.record.lock.duration.ms`, `share.auto.offset.reset`, `share.isolation.level`; plus
//! `share.renew.acknowledge.enable` (KIP-1240, after 4.2), stored and validated for the Renew
//! acknowledgement (`renew_enabled`). Kafka's `consumer.*` and `streams.*` group configs belong to
//! group types Weir does not have and are refused as unknown names.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::SharesConfig;
use crate::queues::QueueLimits;
use crate::shard::Shard;

pub const SESSION_TIMEOUT_MS: &str = "share.session.timeout.ms";
pub const HEARTBEAT_INTERVAL_MS: &str = "share.heartbeat.interval.ms";
pub const RECORD_LOCK_DURATION_MS: &str = "share.record.lock.duration.ms";
pub const AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
pub const ISOLATION_LEVEL: &str = "share.isolation.level";
pub const RENEW_ACKNOWLEDGE_ENABLE: &str = "share.renew.acknowledge.enable";

/// Every group config Weir takes, in the order DescribeConfigs lists them (Kafka's: by name).
pub const NAMES: [&str; 6] = [
    AUTO_OFFSET_RESET,
    HEARTBEAT_INTERVAL_MS,
    ISOLATION_LEVEL,
    RECORD_LOCK_DURATION_MS,
    RENEW_ACKNOWLEDGE_ENABLE,
    SESSION_TIMEOUT_MS,
];

/// A config's type, as DescribeConfigs names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    String,
    Int,
}

pub fn kind(name: &str) -> Option<Kind> {
    match name {
        SESSION_TIMEOUT_MS | HEARTBEAT_INTERVAL_MS | RECORD_LOCK_DURATION_MS => Some(Kind::Int),
        AUTO_OFFSET_RESET | ISOLATION_LEVEL => Some(Kind::String),
        RENEW_ACKNOWLEDGE_ENABLE => Some(Kind::Boolean),
        _ => None,
    }
}

/// What a group without a value of `name` gets: the broker's setting (`Some(true)`: set on the
/// broker with `--set`, `Some(false)`: the default), or `None` for a name that is no group
/// config.
pub fn broker_value(config: &SharesConfig, name: &str) -> Option<(String, bool)> {
    let (value, broker_key) = match name {
        SESSION_TIMEOUT_MS => (
            config.session_timeout_ms.to_string(),
            "group.share.session.timeout.ms",
        ),
        HEARTBEAT_INTERVAL_MS => (
            config.heartbeat_interval_ms.to_string(),
            "group.share.heartbeat.interval.ms",
        ),
        RECORD_LOCK_DURATION_MS => (
            config.lock_duration_ms().to_string(),
            "group.share.record.lock.duration.ms",
        ),
        AUTO_OFFSET_RESET => {
            let value = if config.from_earliest {
                "earliest"
            } else {
                "latest"
            };
            (value.to_string(), "share.auto.offset.reset")
        }
        ISOLATION_LEVEL => ("read_uncommitted".to_string(), ""),
        RENEW_ACKNOWLEDGE_ENABLE => ("true".to_string(), ""),
        _ => return None,
    };
    Some((value, config.explicit.contains(broker_key)))
}

/// Checks a group's whole config set after a change, as Kafka 4.2's `GroupConfig.validate`:
/// known names, values of the config's type and range, the time settings within the broker's
/// `group.share.{min,max}.*` bounds, and the session timeout above the heartbeat interval (each
/// unset one taken at the broker's value). The message says why, as Kafka's does.
pub fn validate(config: &SharesConfig, configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in configs {
        match kind(name) {
            None => return Err(format!("Unknown group config name: {name}")),
            Some(Kind::Int) => {
                let number = int(name, value)?;
                let (low, high, bound): (i64, (u64, u64), &str) = match name.as_str() {
                    SESSION_TIMEOUT_MS => (1, config.session_timeout_bounds, "session.timeout.ms"),
                    HEARTBEAT_INTERVAL_MS => {
                        (1, config.heartbeat_interval_bounds, "heartbeat.interval.ms")
                    }
                    _ => (
                        1000,
                        config.record_lock_duration_bounds,
                        "record.lock.duration.ms",
                    ),
                };
                if number < low {
                    return Err(format!(
                        "Invalid value {value} for configuration {name}: Value must be at least {low}"
                    ));
                }
                if (number as u64) < high.0 {
                    return Err(format!(
                        "{name} must be greater than or equal to group.share.min.{bound}"
                    ));
                }
                if (number as u64) > high.1 {
                    return Err(format!(
                        "{name} must be less than or equal to group.share.max.{bound}"
                    ));
                }
            }
            Some(Kind::Boolean) => {
                boolean(value).ok_or_else(|| {
                    format!("Invalid value {value} for configuration {name}: Expected value to be either true or false")
                })?;
            }
            Some(Kind::String) if name == AUTO_OFFSET_RESET => {
                auto_offset_reset(value).map_err(|reason| {
                    format!("Invalid value {value} for configuration {name}: {reason}")
                })?;
            }
            Some(Kind::String) => {
                if value != "read_committed" && value != "read_uncommitted" {
                    return Err(format!(
                        "Invalid value {value} for configuration {name}: String must be one of: read_committed, read_uncommitted"
                    ));
                }
            }
        }
    }
    let settings = settings(config, Some(configs));
    if settings.session_timeout <= settings.heartbeat_interval {
        return Err(format!(
            "{SESSION_TIMEOUT_MS} must be greater than {HEARTBEAT_INTERVAL_MS}"
        ));
    }
    Ok(())
}

fn int(name: &str, value: &str) -> Result<i64, String> {
    value.trim().parse::<i32>().map(i64::from).map_err(|_| {
        format!("Invalid value {value} for configuration {name}: Not a number of type INT")
    })
}

/// Kafka's BOOLEAN parse: `true` or `false`, in any case.
fn boolean(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// `true` for earliest, `false` for latest (any case, as Kafka's strategy parser). Kafka's third
/// strategy, `by_duration:<ISO 8601 duration>`, is refused: Weir does not start a share partition
/// at a time.
fn auto_offset_reset(value: &str) -> Result<bool, &'static str> {
    let lower = value.trim().to_ascii_lowercase();
    match lower.as_str() {
        "earliest" => Ok(true),
        "latest" => Ok(false),
        _ if lower.starts_with("by_duration:") => {
            Err("by_duration is not supported by Weir (earliest or latest)")
        }
        _ => Err("Invalid value for share.auto.offset.reset (earliest or latest)"),
    }
}

/// A group's effective share settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupSettings {
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// The acquisition lock given to the records the group acquires from now on.
    pub lock_duration: Duration,
    /// Where the group starts a partition it has never fetched: the log's start (earliest) or
    /// end (latest).
    pub from_earliest: bool,
    /// `share.isolation.level=read_committed`. Weir has no transactions (every record is
    /// committed), so both levels deliver the same records.
    pub read_committed: bool,
    pub renew_enabled: bool,
}

/// The settings of a group with `configs` (validated; a value that does not parse falls back to
/// the broker's).
pub fn settings(
    config: &SharesConfig,
    configs: Option<&BTreeMap<String, String>>,
) -> GroupSettings {
    let get = |name: &str| configs.and_then(|c| c.get(name)).map(String::as_str);
    let ms = |name: &str, broker: u64| {
        let value = get(name).and_then(|v| v.trim().parse::<u64>().ok());
        Duration::from_millis(value.unwrap_or(broker))
    };
    GroupSettings {
        session_timeout: ms(SESSION_TIMEOUT_MS, config.session_timeout_ms),
        heartbeat_interval: ms(HEARTBEAT_INTERVAL_MS, config.heartbeat_interval_ms),
        lock_duration: ms(RECORD_LOCK_DURATION_MS, config.lock_duration_ms()),
        from_earliest: get(AUTO_OFFSET_RESET)
            .and_then(|v| auto_offset_reset(v).ok())
            .unwrap_or(config.from_earliest),
        read_committed: get(ISOLATION_LEVEL) == Some("read_committed"),
        renew_enabled: get(RENEW_ACKNOWLEDGE_ENABLE)
            .and_then(boolean)
            .unwrap_or(true),
    }
}

/// `group`'s settings as this shard's metadata has them.
pub fn of(shard: &Shard, group: &str) -> GroupSettings {
    let metadata = shard.metadata();
    settings(&shard.config.shares, metadata.group_configs.get(group))
}

/// The limits of `group`'s share partitions: the broker's, with the group's lock duration.
pub fn limits(shard: &Shard, group: &str) -> QueueLimits {
    let broker = shard.config.shares.limits;
    let metadata = shard.metadata();
    match metadata.group_configs.get(group) {
        None => broker,
        Some(configs) => QueueLimits {
            lock_duration: Some(settings(&shard.config.shares, Some(configs)).lock_duration),
            ..broker
        },
    }
}

/// The lock a record `group` acquires or renews now gets, in ms, as ShareFetch and
/// ShareAcknowledge v2 answer it (`acquisition_lock_timeout_ms`): the group's own
/// `share.record.lock.duration.ms` where it has one, else the broker's.
pub fn lock_timeout_ms(shard: &Shard, group: &str) -> i32 {
    i32::try_from(of(shard, group).lock_duration.as_millis()).unwrap_or(i32::MAX)
}

/// Whether `group` may renew acquisition locks (KIP-1222's Renew acknowledgement).
pub fn renew_enabled(shard: &Shard, group: &str) -> bool {
    of(shard, group).renew_enabled
}

/// Applies one change to `current` (a group's configs): AlterConfigs replaces the whole set,
/// IncrementalAlterConfigs sets (`Some`) and deletes (`None`) single names.
pub fn edited(
    current: Option<&BTreeMap<String, String>>,
    replace_all: bool,
    edits: &[(String, Option<String>)],
) -> BTreeMap<String, String> {
    let mut configs = match (replace_all, current) {
        (false, Some(current)) => current.clone(),
        _ => BTreeMap::new(),
    };
    for (name, value) in edits {
        match value {
            Some(value) => configs.insert(name.clone(), value.clone()),
            None => configs.remove(name),
        };
    }
    configs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn validation_follows_kafka_4_2() {
        let broker = SharesConfig::default();
        let ok = |pairs: &[(&str, &str)]| validate(&broker, &set(pairs));
        assert_eq!(ok(&[]), Ok(()));
        assert_eq!(ok(&[(RECORD_LOCK_DURATION_MS, "15000")]), Ok(()));
        assert_eq!(ok(&[(AUTO_OFFSET_RESET, "EARLIEST")]), Ok(()));
        assert_eq!(ok(&[(ISOLATION_LEVEL, "read_committed")]), Ok(()));
        assert_eq!(ok(&[(RENEW_ACKNOWLEDGE_ENABLE, "False")]), Ok(()));
        assert_eq!(
            ok(&[
                (SESSION_TIMEOUT_MS, "60000"),
                (HEARTBEAT_INTERVAL_MS, "15000")
            ]),
            Ok(())
        );
        let refused = [
            (vec![("share.nope", "1")], "Unknown group config name"),
            (
                vec![("consumer.session.timeout.ms", "45000")],
                "Unknown group config name",
            ),
            (
                vec![(RECORD_LOCK_DURATION_MS, "abc")],
                "Not a number of type INT",
            ),
            (vec![(RECORD_LOCK_DURATION_MS, "999")], "at least 1000"),
            (
                vec![(RECORD_LOCK_DURATION_MS, "1000")],
                "group.share.min.record.lock",
            ),
            (
                vec![(RECORD_LOCK_DURATION_MS, "60001")],
                "group.share.max.record.lock",
            ),
            (
                vec![(SESSION_TIMEOUT_MS, "44999")],
                "group.share.min.session",
            ),
            (
                vec![(HEARTBEAT_INTERVAL_MS, "16000")],
                "group.share.max.heartbeat",
            ),
            (
                vec![(AUTO_OFFSET_RESET, "middle")],
                "share.auto.offset.reset",
            ),
            (vec![(AUTO_OFFSET_RESET, "by_duration:PT1H")], "by_duration"),
            (
                vec![(ISOLATION_LEVEL, "READ_COMMITTED")],
                "read_committed, read_uncommitted",
            ),
            (vec![(RENEW_ACKNOWLEDGE_ENABLE, "1")], "true or false"),
        ];
        for (pairs, want) in refused {
            let error = ok(&pairs).unwrap_err();
            assert!(error.contains(want), "{pairs:?}: {error}");
        }
        // The session timeout must stay above the heartbeat interval, the broker's counting.
        let broker = SharesConfig {
            heartbeat_interval_bounds: (5_000, 100_000),
            ..SharesConfig::default()
        };
        let error = validate(&broker, &set(&[(HEARTBEAT_INTERVAL_MS, "50000")])).unwrap_err();
        assert!(error.contains("must be greater than"), "{error}");
    }

    #[test]
    fn a_group_value_overrides_the_broker_value() {
        let broker = SharesConfig::default();
        let plain = settings(&broker, None);
        assert_eq!(plain.lock_duration, Duration::from_secs(30));
        assert!(!plain.from_earliest);
        assert!(plain.renew_enabled);
        let configs = set(&[
            (RECORD_LOCK_DURATION_MS, "15000"),
            (AUTO_OFFSET_RESET, "earliest"),
        ]);
        let own = settings(&broker, Some(&configs));
        assert_eq!(own.lock_duration, Duration::from_secs(15));
        assert!(own.from_earliest);
        assert_eq!(own.session_timeout, plain.session_timeout);
        let edits = [
            (RECORD_LOCK_DURATION_MS.to_string(), None),
            (
                ISOLATION_LEVEL.to_string(),
                Some("read_committed".to_string()),
            ),
        ];
        let after = edited(Some(&configs), false, &edits);
        assert_eq!(
            after,
            set(&[
                (AUTO_OFFSET_RESET, "earliest"),
                (ISOLATION_LEVEL, "read_committed")
            ])
        );
        assert_eq!(
            edited(Some(&configs), true, &edits),
            set(&[(ISOLATION_LEVEL, "read_committed")])
        );
    }
}
