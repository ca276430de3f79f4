//! Kafka's AclBindingFilter: which bindings DescribeAcls shows and DeleteAcls removes. Every
//! field may be "any" (`None`); the pattern filter is Kafka's:
//!
//! | pattern filter | name given: a binding matches when                                   |
//! |----------------|----------------------------------------------------------------------|
//! | Any            | its name is the name, whatever its pattern type                      |
//! | Match          | it would cover the name: Literal name, Literal `*`, or a Prefixed    |
//! |                | pattern the name starts with                                         |
//! | Literal        | it is Literal and its name is the name                               |
//! | Prefixed       | it is Prefixed and its name is the name                              |
//!
//! With no name, Any and Match take every binding and Literal/Prefixed those of their type.

use super::{AclBinding, Operation, PatternType, Permission, ResourceType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    Any,
    Match,
    Exactly(PatternType),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let same = |wanted: &Option<String>, got: &str| wanted.as_deref().is_none_or(|w| w == got);
        self.resource_type
            .is_none_or(|t| t == binding.resource_type)
            && self.operation.is_none_or(|o| o == binding.operation)
            && self.permission.is_none_or(|p| p == binding.permission)
            && same(&self.principal, &binding.principal)
            && same(&self.host, &binding.host)
            && self.pattern_matches(binding)
    }

    fn pattern_matches(&self, binding: &AclBinding) -> bool {
        let name = self.resource_name.as_deref();
        match self.pattern {
            PatternFilter::Any => name.is_none_or(|n| n == binding.resource_name),
            PatternFilter::Match => name.is_none_or(|n| binding.covers(binding.resource_type, n)),
            PatternFilter::Exactly(kind) => {
                binding.pattern_type == kind && name.is_none_or(|n| n == binding.resource_name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, pattern_type: PatternType) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    fn check(pattern: PatternFilter, name: Option<&str>, expected: &[&str]) {
        let bindings = [
            binding("orders", PatternType::Literal),
            binding("*", PatternType::Literal),
            binding("ord", PatternType::Prefixed),
            binding("orders", PatternType::Prefixed),
            binding("x", PatternType::Literal),
        ];
        let filter = AclFilter {
            resource_type: Some(ResourceType::Topic),
            resource_name: name.map(str::to_string),
            pattern,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        };
        let got: Vec<String> = bindings
            .iter()
            .filter(|b| filter.matches(b))
            .map(|b| format!("{:?}:{}", b.pattern_type, b.resource_name))
            .collect();
        assert_eq!(got, expected, "{pattern:?} {name:?}");
    }

    #[test]
    fn pattern_filters() {
        use PatternType::*;
        check(
            PatternFilter::Match,
            Some("orders"),
            &[
                "Literal:orders",
                "Literal:*",
                "Prefixed:ord",
                "Prefixed:orders",
            ],
        );
        check(
            PatternFilter::Any,
            Some("orders"),
            &["Literal:orders", "Prefixed:orders"],
        );
        check(
            PatternFilter::Exactly(Prefixed),
            Some("orders"),
            &["Prefixed:orders"],
        );
        check(
            PatternFilter::Exactly(Literal),
            None,
            &["Literal:orders", "Literal:*", "Literal:x"],
        );
        check(
            PatternFilter::Any,
            None,
            &[
                "Literal:orders",
                "Literal:*",
                "Prefixed:ord",
                "Prefixed:orders",
                "Literal:x",
            ],
        );
    }
}
