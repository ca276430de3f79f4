//! The Kafka protocol layer: framing and codecs (`codec`), connections, dispatch, and one handler
//! file per API. Runs on every shard; handlers touch only their shard's state and reach other
//! shards through the mesh.

pub mod acls;
pub mod admin_topics;
pub mod alter_share_group_offsets;
pub mod api_versions;
pub mod codec;
pub mod configs;
pub mod connection;
pub mod connection_budget;
pub mod delete_share_group_offsets;
pub mod describe_cluster;
pub mod describe_groups;
pub mod describe_share_group_offsets;
pub mod dispatch;
pub mod error_codes;
pub mod fetch;
pub mod find_coordinator;
pub mod group_apis;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl;
pub mod scram_credentials;
pub mod share_acknowledge;
pub mod share_fetch;
pub mod share_group_describe;
pub mod share_group_heartbeat;
pub mod share_reads;
pub mod sync_group;

/// An API key's name as Redpanda names its request handlers, Kafka's name in snake case
/// (`produce`, `api_versions`; `api_N` for a key kafka-protocol does not know). For the metrics.
pub fn api_name(key: i16) -> String {
    let Ok(api) = kafka_protocol::messages::ApiKey::try_from(key) else {
        return format!("api_{key}");
    };
    let camel = format!("{api:?}");
    let mut snake = String::with_capacity(camel.len() + 4);
    for (index, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if index > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

#[cfg(test)]
mod api_name_tests {
    #[test]
    fn api_names_are_snake_case() {
        assert_eq!(super::api_name(0), "produce");
        assert_eq!(super::api_name(18), "api_versions");
        assert_eq!(super::api_name(-3), "api_-3");
    }
}
