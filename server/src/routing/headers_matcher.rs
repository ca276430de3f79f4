//! Headers-exchange matching: one binding's arguments against one record's headers.
//!
//! Pure and immutable: built on the controller shard when a binding is declared and cloned into
//! every shard's routing table.
//!
//! Semantics are RabbitMQ's (`rabbit_exchange_type_headers`), with Kafka record headers standing
//! in for AMQP message headers and binding argument values compared to header values byte for
//! byte (a header with a null value matches no argument value):
//!
//! | `x-match`    | criteria considered          | matches when                  | no criteria   |
//! |--------------|------------------------------|-------------------------------|---------------|
//! | `all` (default) | arguments not starting `x-` | every criterion has a header | everything    |
//! | `any`        | arguments not starting `x-`  | at least one criterion does   | nothing       |
//! | `all-with-x` | all arguments but `x-match`  | every criterion has a header  | everything    |
//! | `any-with-x` | all arguments but `x-match`  | at least one criterion does   | nothing       |
//!
//! A criterion "has a header" when the record carries a header with that exact (case-sensitive)
//! name and an equal value; if a record repeats a header name, any of its values may match.
//!
//! Typed values, as RabbitMQ 3.10 compares them (`rabbit_exchange_type_headers`: same type
//! class and equal value; a void argument asks only that the header be present). Text is
//! carried as its bytes; every other AMQP type as a *typed text*: byte 0x01, its class, `:`,
//! its value written canonically ([`typed`]). Byte equality is then RabbitMQ's typed equality:
//!
//! | AMQP types                         | class       | so                                   |
//! |------------------------------------|-------------|--------------------------------------|
//! | long and short strings             | text (raw)  | `"42"` ≠ integer 42                  |
//! | every integer type (b B s u I i l) | `int`       | short 42 = long 42 = unsigned 42     |
//! | float, double                      | `float`     | float 1.5 = double 1.5; 1.5 ≠ int 1  |
//! | boolean                            | `bool`      | true ≠ `"true"`                      |
//! | timestamp, decimal                 | their own   |                                      |
//! | void (in a binding)                | presence    | any value of that header matches     |
//!
//! Kafka clients and admin write text: their binding arguments and record headers are text, so
//! they match each other and AMQP string values as before.

use std::collections::BTreeMap;

/// The first byte of a typed text (a value that is not a string).
pub const TYPED_MARK: char = '\u{1}';
/// A void binding argument: the header must be present, with any value.
pub const TYPED_VOID: &str = "\u{1}void";

/// The typed text of a value of class `class` written `value`.
pub fn typed(class: &str, value: impl std::fmt::Display) -> String {
    format!("{TYPED_MARK}{class}:{value}")
}

/// The binding argument that selects the match mode.
pub const X_MATCH: &str = "x-match";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchMode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl MatchMode {
    pub fn parse(text: &str) -> Option<MatchMode> {
        match text {
            "all" => Some(MatchMode::All),
            "any" => Some(MatchMode::Any),
            "all-with-x" => Some(MatchMode::AllWithX),
            "any-with-x" => Some(MatchMode::AnyWithX),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MatchMode::All => "all",
            MatchMode::Any => "any",
            MatchMode::AllWithX => "all-with-x",
            MatchMode::AnyWithX => "any-with-x",
        }
    }

    fn considers_x_arguments(self) -> bool {
        matches!(self, MatchMode::AllWithX | MatchMode::AnyWithX)
    }
}

/// The `x-match` argument held a value that is not one of the four modes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("x-match must be all, any, all-with-x or any-with-x, not {value:?}")]
pub struct InvalidMatchMode {
    pub value: String,
}

/// One headers binding, compiled from its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadersMatcher {
    mode: MatchMode,
    /// Name and value; `None`: presence only (a void argument).
    criteria: Vec<(String, Option<Vec<u8>>)>,
}

impl HeadersMatcher {
    /// Compiles binding arguments; `x-match` picks the mode and is never itself a criterion.
    pub fn new(arguments: &BTreeMap<String, String>) -> Result<HeadersMatcher, InvalidMatchMode> {
        let mode = match arguments.get(X_MATCH) {
            None => MatchMode::All,
            Some(value) => MatchMode::parse(value).ok_or_else(|| InvalidMatchMode {
                value: value.clone(),
            })?,
        };
        let criteria = arguments
            .iter()
            .filter(|(name, _)| name.as_str() != X_MATCH)
            .filter(|(name, _)| mode.considers_x_arguments() || !name.starts_with("x-"))
            .map(|(name, value)| {
                let value = (value != TYPED_VOID).then(|| value.as_bytes().to_vec());
                (name.clone(), value)
            })
            .collect();
        Ok(HeadersMatcher { mode, criteria })
    }

    pub fn mode(&self) -> MatchMode {
        self.mode
    }

    /// True when the result does not depend on the headers: `all` with no criteria matches
    /// everything, `any` with none matches nothing.
    pub fn is_header_independent(&self) -> bool {
        self.criteria.is_empty()
    }

    pub fn matches(&self, headers: &[(&str, Option<&[u8]>)]) -> bool {
        let satisfied = |(name, value): &(String, Option<Vec<u8>>)| {
            headers.iter().any(|(header, header_value)| {
                header == name
                    && match value {
                        None => true,
                        Some(value) => *header_value == Some(value.as_slice()),
                    }
            })
        };
        match self.mode {
            MatchMode::All | MatchMode::AllWithX => self.criteria.iter().all(satisfied),
            MatchMode::Any | MatchMode::AnyWithX => self.criteria.iter().any(satisfied),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    type Headers<'a> = &'a [(&'a str, Option<&'a [u8]>)];
    type Case<'a> = (&'a [(&'a str, &'a str)], Headers<'a>, bool);

    fn check(binding: &[(&str, &str)], headers: Headers<'_>, expected: bool) {
        let matcher = HeadersMatcher::new(&arguments(binding)).expect("valid x-match");
        assert_eq!(
            matcher.matches(headers),
            expected,
            "binding {binding:?} headers {headers:?}"
        );
    }

    #[test]
    fn match_modes() {
        let pdf_report: &[(&str, Option<&[u8]>)] =
            &[("format", Some(b"pdf")), ("type", Some(b"report"))];
        let pdf_only: &[(&str, Option<&[u8]>)] = &[("format", Some(b"pdf"))];
        let with_x: &[(&str, Option<&[u8]>)] =
            &[("format", Some(b"pdf")), ("x-tenant", Some(b"7"))];
        let none: &[(&str, Option<&[u8]>)] = &[];
        let cases: &[Case<'_>] = &[
            // all (explicit and default)
            (&[("format", "pdf"), ("type", "report")], pdf_report, true),
            (&[("format", "pdf"), ("type", "report")], pdf_only, false),
            (&[("x-match", "all"), ("format", "pdf")], pdf_report, true),
            (&[("x-match", "all"), ("format", "zip")], pdf_report, false),
            // all with no criteria matches everything, any with none matches nothing
            (&[], none, true),
            (&[("x-match", "all")], pdf_report, true),
            (&[("x-match", "any")], pdf_report, false),
            (&[("x-match", "any")], none, false),
            // any
            (
                &[("x-match", "any"), ("format", "pdf"), ("type", "log")],
                pdf_only,
                true,
            ),
            (
                &[("x-match", "any"), ("format", "zip"), ("type", "log")],
                pdf_report,
                false,
            ),
            // all/any ignore x- arguments
            (
                &[("x-match", "all"), ("format", "pdf"), ("x-tenant", "9")],
                pdf_only,
                true,
            ),
            (&[("x-match", "any"), ("x-tenant", "7")], with_x, false),
            // ... the -with-x modes do not
            (
                &[
                    ("x-match", "all-with-x"),
                    ("format", "pdf"),
                    ("x-tenant", "9"),
                ],
                with_x,
                false,
            ),
            (
                &[
                    ("x-match", "all-with-x"),
                    ("format", "pdf"),
                    ("x-tenant", "7"),
                ],
                with_x,
                true,
            ),
            (
                &[("x-match", "any-with-x"), ("x-tenant", "7")],
                with_x,
                true,
            ),
            (&[("x-match", "any-with-x")], with_x, false),
            (&[("x-match", "all-with-x")], none, true),
            // names and values are case-sensitive, values byte-exact
            (&[("Format", "pdf")], pdf_only, false),
            (&[("format", "PDF")], pdf_only, false),
        ];
        for (binding, headers, expected) in cases {
            check(binding, headers, *expected);
        }
    }

    #[test]
    fn null_and_repeated_headers() {
        let null: &[(&str, Option<&[u8]>)] = &[("format", None)];
        check(&[("format", "")], null, false);
        check(&[("format", "")], &[("format", Some(b""))], true);
        let repeated: &[(&str, Option<&[u8]>)] = &[("tag", Some(b"a")), ("tag", Some(b"b"))];
        check(&[("tag", "b")], repeated, true);
    }

    #[test]
    fn typed_values_match_by_class_and_value() {
        let int42 = typed("int", 42);
        let float15 = typed("float", 1.5);
        let headers: &[(&str, Option<&[u8]>)] = &[
            ("size", Some(int42.as_bytes())),
            ("ratio", Some(float15.as_bytes())),
            ("label", Some(b"42")),
        ];
        check(&[("size", &typed("int", 42))], headers, true);
        check(&[("size", "42")], headers, false);
        check(&[("label", &typed("int", 42))], headers, false);
        check(&[("label", "42")], headers, true);
        check(&[("ratio", &typed("float", 1.5))], headers, true);
        check(&[("ratio", &typed("int", 1))], headers, false);
        // Void: presence, whatever the value; absent still fails.
        check(&[("label", TYPED_VOID)], headers, true);
        check(&[("missing", TYPED_VOID)], headers, false);
        check(&[("label", TYPED_VOID)], &[("label", None)], true);
    }

    #[test]
    fn bad_x_match_is_rejected() {
        for value in ["", "ALL", "some", "all-with-X"] {
            let error = HeadersMatcher::new(&arguments(&[("x-match", value)])).unwrap_err();
            assert_eq!(error.value, value);
        }
    }
}
