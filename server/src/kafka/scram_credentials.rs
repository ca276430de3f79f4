//! DescribeUserScramCredentials (50, v0) and AlterUserScramCredentials (51, v0): the user store
//! (`security::users`) through Kafka's admin APIs. Alter goes to the controller, which answers
//! once every shard holds the change; Describe reads the shard's own copy.

use std::rc::Rc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error_codes as code;
use crate::security::acl::{Access, Operation};
use crate::security::scram::{Credential, Mechanism};
use crate::security::users::{UserChange, UserError};
use crate::shard::mesh::{reply_channel, ControlJob};
use crate::shard::Shard;

pub async fn describe(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeUserScramCredentialsRequest,
    access: Access,
) -> DescribeUserScramCredentialsResponse {
    let mut response = DescribeUserScramCredentialsResponse::default();
    // Kafka: Describe on the cluster.
    if !access.allows_cluster(Operation::Describe) {
        response.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        return response;
    }
    let metadata = shard.metadata();
    let users = &metadata.users;
    // Null or empty: every user (as Kafka).
    let names: Vec<String> = match request.users {
        Some(list) if !list.is_empty() => list.iter().map(|u| u.name.to_string()).collect(),
        _ => users.keys().cloned().collect(),
    };
    for (i, name) in names.iter().enumerate() {
        let mut result = DescribeUserScramCredentialsResult::default();
        result.user = StrBytes::from_string(name.clone());
        if names[..i].contains(name) {
            result.error_code = code::DUPLICATE_RESOURCE;
            result.error_message = Some(StrBytes::from_static_str(
                "Cannot describe SCRAM credentials for the same user twice in a single request",
            ));
        } else if let Some(credentials) = users.get(name) {
            result.credential_infos = credentials
                .iter()
                .map(|(mechanism, credential)| {
                    let mut info = CredentialInfo::default();
                    info.mechanism = mechanism.kafka_type();
                    info.iterations = credential.iterations as i32;
                    info
                })
                .collect();
        } else {
            result.error_code = code::RESOURCE_NOT_FOUND;
            result.error_message = Some(StrBytes::from_string(format!(
                "Attempt to describe a user credential that does not exist: {name}"
            )));
        }
        response.results.push(result);
    }
    response
}

pub async fn alter(
    shard: &Rc<Shard>,
    _version: i16,
    request: AlterUserScramCredentialsRequest,
    access: Access,
) -> AlterUserScramCredentialsResponse {
    // Kafka: Alter on the cluster, or every user in the request is refused.
    if !access.allows_cluster(Operation::Alter) {
        return refuse_all(&request);
    }
    let mut refused: Vec<(String, i16, String)> = Vec::new();
    let mut changes = Vec::new();
    let mut refuse = |user: &str, error: i16, message: String| {
        if !refused.iter().any(|(u, _, _)| u == user) {
            refused.push((user.to_string(), error, message));
        }
    };
    for deletion in &request.deletions {
        match Mechanism::from_kafka_type(deletion.mechanism) {
            Some(mechanism) => changes.push(UserChange::Delete {
                user: deletion.name.to_string(),
                mechanism,
            }),
            None => refuse(&deletion.name, code::UNSUPPORTED_SASL_MECHANISM, unknown()),
        }
    }
    for upsertion in &request.upsertions {
        let Some(mechanism) = Mechanism::from_kafka_type(upsertion.mechanism) else {
            refuse(&upsertion.name, code::UNSUPPORTED_SASL_MECHANISM, unknown());
            continue;
        };
        let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
        let credential = Credential::from_salted(
            mechanism,
            &upsertion.salted_password,
            &upsertion.salt,
            iterations,
        );
        changes.push(UserChange::Upsert {
            user: upsertion.name.to_string(),
            mechanism,
            credential,
        });
    }
    // A user with one refused change has none applied.
    changes.retain(|change| !refused.iter().any(|(u, _, _)| u == change.user()));
    let mut response = AlterUserScramCredentialsResponse::default();
    for (user, error_code, message) in refused {
        response
            .results
            .push(result(user, error_code, Some(message)));
    }
    for (user, outcome) in controller_alter(shard, changes).await {
        let (error_code, message) = match outcome {
            Ok(()) => (code::NONE, None),
            Err(error) => (error_code(&error), Some(error.to_string())),
        };
        response.results.push(result(user, error_code, message));
    }
    response
}

fn refuse_all(request: &AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse {
    let deleted = request.deletions.iter().map(|d| d.name.to_string());
    let upserted = request.upsertions.iter().map(|u| u.name.to_string());
    let mut users: Vec<String> = deleted.chain(upserted).collect();
    users.sort();
    users.dedup();
    let mut response = AlterUserScramCredentialsResponse::default();
    for user in users {
        let refused = result(user, code::CLUSTER_AUTHORIZATION_FAILED, None);
        response.results.push(refused);
    }
    response
}

fn unknown() -> String {
    "Unknown SCRAM mechanism".to_string()
}

fn result(
    user: String,
    error_code: i16,
    message: Option<String>,
) -> AlterUserScramCredentialsResult {
    let mut result = AlterUserScramCredentialsResult::default();
    result.user = StrBytes::from_string(user);
    result.error_code = error_code;
    result.error_message = message.map(StrBytes::from_string);
    result
}

fn error_code(error: &UserError) -> i16 {
    match error {
        UserError::NotFound => code::RESOURCE_NOT_FOUND,
        UserError::Unacceptable(_) => code::UNACCEPTABLE_CREDENTIAL,
        UserError::Duplicate => code::DUPLICATE_RESOURCE,
        UserError::Storage => code::KAFKA_STORAGE_ERROR,
    }
}

async fn controller_alter(
    shard: &Shard,
    changes: Vec<UserChange>,
) -> Vec<(String, Result<(), UserError>)> {
    if changes.is_empty() {
        return Vec::new();
    }
    let users: Vec<String> = changes.iter().map(|c| c.user().to_string()).collect();
    let (reply, answer) = reply_channel();
    let job = ControlJob::AlterUsers { changes, reply };
    if shard.mesh.controller.send_async(job).await.is_ok() {
        if let Ok(results) = answer.recv_async().await {
            return results;
        }
    }
    let mut unavailable: Vec<(String, Result<(), UserError>)> = Vec::new();
    for user in users {
        if !unavailable.iter().any(|(u, _)| *u == user) {
            unavailable.push((user, Err(UserError::Storage)));
        }
    }
    unavailable
}
