//! DescribeAcls (29), CreateAcls (30), DeleteAcls (31), v1-v3: Kafka's ACL APIs over the core's
//! `security::acl` model. Changes go through the controller (journaled, broadcast to every
//! shard before the answer). With the authorizer off every answer is SECURITY_DISABLED, as Kafka's
//! is without an authorizer; creating and deleting need Alter on the cluster, describing needs
//! Describe on it (CLUSTER_AUTHORIZATION_FAILED otherwise).

use std::rc::Rc;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error_codes as code;
use crate::security::acl::{
    Access, AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
    ANY_CODE, MATCH_CODE,
};
use crate::shard::mesh::{reply_channel, ControlJob};
use crate::shard::Shard;

/// The error code for a whole ACL request, if it is refused before its items are looked at.
fn refused(access: &Access, operation: Operation) -> Option<(i16, &'static str)> {
    if !access.enabled() {
        Some((
            code::SECURITY_DISABLED,
            "no authorizer is configured (authorizer.class.name)",
        ))
    } else if !access.allows_cluster(operation) {
        Some((
            code::CLUSTER_AUTHORIZATION_FAILED,
            "cluster authorization failed",
        ))
    } else {
        None
    }
}

pub async fn describe(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeAclsRequest,
    access: Access,
) -> DescribeAclsResponse {
    let mut response = DescribeAclsResponse::default();
    if let Some((error, message)) = refused(&access, Operation::Describe) {
        response.error_code = error;
        response.error_message = Some(StrBytes::from_static_str(message));
        return response;
    }
    let filter = filter_of(
        request.resource_type_filter,
        request.resource_name_filter.as_deref(),
        request.pattern_type_filter,
        request.principal_filter.as_deref(),
        request.host_filter.as_deref(),
        request.operation,
        request.permission_type,
    );
    let Ok(filter) = filter else {
        response.error_code = code::INVALID_REQUEST;
        response.error_message = filter.err().map(StrBytes::from_string);
        return response;
    };
    let metadata = shard.metadata();
    // Bindings are ordered by resource first, so each resource's entries are adjacent.
    for binding in metadata.acls.iter().filter(|b| filter.matches(b)) {
        let same_resource = response
            .resources
            .last()
            .is_some_and(|r: &DescribeAclsResource| {
                r.resource_type == binding.resource_type.code()
                    && r.resource_name.as_str() == binding.resource_name
                    && r.pattern_type == binding.pattern_type.code()
            });
        if !same_resource {
            let mut resource = DescribeAclsResource::default();
            resource.resource_type = binding.resource_type.code();
            resource.resource_name = StrBytes::from_string(binding.resource_name.clone());
            resource.pattern_type = binding.pattern_type.code();
            response.resources.push(resource);
        }
        let mut acl = AclDescription::default();
        acl.principal = StrBytes::from_string(binding.principal.clone());
        acl.host = StrBytes::from_string(binding.host.clone());
        acl.operation = binding.operation.code();
        acl.permission_type = binding.permission.code();
        if let Some(resource) = response.resources.last_mut() {
            resource.acls.push(acl);
        }
    }
    response
}

pub async fn create(
    shard: &Rc<Shard>,
    _version: i16,
    request: CreateAclsRequest,
    access: Access,
) -> CreateAclsResponse {
    let mut response = CreateAclsResponse::default();
    let refusal = refused(&access, Operation::Alter);
    let mut valid = Vec::new();
    for creation in &request.creations {
        let mut result = AclCreationResult::default();
        match (refusal, binding_of(creation)) {
            (Some((error, message)), _) => {
                result.error_code = error;
                result.error_message = Some(StrBytes::from_static_str(message));
            }
            (None, Err(message)) => {
                result.error_code = code::INVALID_REQUEST;
                result.error_message = Some(StrBytes::from_string(message));
            }
            (None, Ok(binding)) => valid.push(binding),
        }
        response.results.push(result);
    }
    if !valid.is_empty() && alter(shard, valid, Vec::new()).await.is_none() {
        for result in &mut response.results {
            result.error_code = code::UNKNOWN_SERVER_ERROR;
        }
    }
    response
}

pub async fn delete(
    shard: &Rc<Shard>,
    _version: i16,
    request: DeleteAclsRequest,
    access: Access,
) -> DeleteAclsResponse {
    let mut response = DeleteAclsResponse::default();
    let refusal = refused(&access, Operation::Alter);
    let parsed: Vec<Result<AclFilter, String>> =
        request.filters.iter().map(delete_filter).collect();
    let filters: Vec<AclFilter> = parsed.iter().filter_map(|f| f.clone().ok()).collect();
    let mut deleted = match refusal {
        None if !filters.is_empty() => alter(shard, Vec::new(), filters).await.unwrap_or_default(),
        _ => Vec::new(),
    }
    .into_iter();
    for filter in parsed {
        let mut result = DeleteAclsFilterResult::default();
        match (refusal, filter) {
            (Some((error, message)), _) => {
                result.error_code = error;
                result.error_message = Some(StrBytes::from_static_str(message));
            }
            (None, Err(message)) => {
                result.error_code = code::INVALID_REQUEST;
                result.error_message = Some(StrBytes::from_string(message));
            }
            (None, Ok(_)) => {
                result.matching_acls = deleted
                    .next()
                    .unwrap_or_default()
                    .iter()
                    .map(matching)
                    .collect();
            }
        }
        response.filter_results.push(result);
    }
    response
}

/// Sends the change to the controller; the bindings each filter removed (`None`: no answer).
async fn alter(
    shard: &Rc<Shard>,
    create: Vec<AclBinding>,
    delete: Vec<AclFilter>,
) -> Option<Vec<Vec<AclBinding>>> {
    let (reply, answer) = reply_channel();
    let job = ControlJob::AlterAcls {
        create,
        delete,
        reply,
    };
    shard.mesh.controller.send_async(job).await.ok()?;
    answer.recv_async().await.ok()
}

fn matching(binding: &AclBinding) -> DeleteAclsMatchingAcl {
    let mut acl = DeleteAclsMatchingAcl::default();
    acl.resource_type = binding.resource_type.code();
    acl.resource_name = StrBytes::from_string(binding.resource_name.clone());
    acl.pattern_type = binding.pattern_type.code();
    acl.principal = StrBytes::from_string(binding.principal.clone());
    acl.host = StrBytes::from_string(binding.host.clone());
    acl.operation = binding.operation.code();
    acl.permission_type = binding.permission.code();
    acl
}

/// A CreateAcls entry as a binding; a message saying why when Kafka would refuse it.
fn binding_of(creation: &AclCreation) -> Result<AclBinding, String> {
    let binding = AclBinding {
        resource_type: ResourceType::from_code(creation.resource_type)
            .ok_or_else(|| format!("unsupported resource type {}", creation.resource_type))?,
        resource_name: creation.resource_name.to_string(),
        pattern_type: PatternType::from_code(creation.resource_pattern_type).ok_or_else(|| {
            format!(
                "pattern type {} is not LITERAL or PREFIXED",
                creation.resource_pattern_type
            )
        })?,
        principal: creation.principal.to_string(),
        host: creation.host.to_string(),
        operation: Operation::from_code(creation.operation)
            .ok_or_else(|| format!("unsupported operation {}", creation.operation))?,
        permission: Permission::from_code(creation.permission_type).ok_or_else(|| {
            format!(
                "permission {} is not ALLOW or DENY",
                creation.permission_type
            )
        })?,
    };
    match binding.invalid() {
        Some(message) => Err(message),
        None => Ok(binding),
    }
}

fn delete_filter(filter: &DeleteAclsFilter) -> Result<AclFilter, String> {
    filter_of(
        filter.resource_type_filter,
        filter.resource_name_filter.as_deref(),
        filter.pattern_type_filter,
        filter.principal_filter.as_deref(),
        filter.host_filter.as_deref(),
        filter.operation,
        filter.permission_type,
    )
}

/// Kafka's AclBindingFilter from its wire fields: code 1 is ANY everywhere, 2 is MATCH for the
/// pattern type; a null string is "any".
fn filter_of(
    resource_type: i8,
    resource_name: Option<&str>,
    pattern_type: i8,
    principal: Option<&str>,
    host: Option<&str>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    fn any<T>(code: i8, what: &str, parse: fn(i8) -> Option<T>) -> Result<Option<T>, String> {
        if code == ANY_CODE {
            return Ok(None);
        }
        parse(code)
            .map(Some)
            .ok_or_else(|| format!("unsupported {what} {code}"))
    }
    let pattern = match pattern_type {
        ANY_CODE => PatternFilter::Any,
        MATCH_CODE => PatternFilter::Match,
        other => PatternFilter::Exactly(
            PatternType::from_code(other)
                .ok_or_else(|| format!("unsupported pattern type {other}"))?,
        ),
    };
    Ok(AclFilter {
        resource_type: any(resource_type, "resource type", ResourceType::from_code)?,
        resource_name: resource_name.map(str::to_string),
        pattern,
        principal: principal.map(str::to_string),
        host: host.map(str::to_string),
        operation: any(operation, "operation", Operation::from_code)?,
        permission: any(permission, "permission", Permission::from_code)?,
    })
}
