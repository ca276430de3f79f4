//! The `weir.*` topic configs that declare exchanges and bindings through standard Kafka admin
//! requests (CreateTopics, IncrementalAlterConfigs, DescribeConfigs), parsed into table
//! [`Change`]s and rendered back. `docs/routing.md` is the user-facing description.
//!
//! Pure: runs on whichever shard receives the admin request, against that shard's read-only table
//! copy; the resulting changes go to the controller shard, whose `apply` re-validates them against
//! the authoritative table (all or nothing).
//!
//! | config                   | on          | value                                             |
//! |--------------------------|-------------|---------------------------------------------------|
//! | `weir.exchange.type`     | exchange    | `direct`, `fanout`, `topic` or `headers`; makes a CreateTopics entry an exchange; fixed after |
//! | `weir.exchange.alternate`| exchange    | alternate exchange name; empty = none             |
//! | `weir.exchange.bindings` | exchange    | list of outgoing bindings: `[topic:│exchange:]dest[=binding]` |
//! | `weir.bindings`          | topic or exchange | list of incoming bindings: `source[=binding]`  |
//!
//! Lists are comma-separated; whitespace around elements is ignored. `binding` is the binding
//! key for direct and topic exchanges, nothing for fanout, and `&`-separated `name=value`
//! arguments (including `x-match`) for headers. In keys, names and values, `%`, `,`, `&`, `=`
//! and whitespace are written `%XX` (percent-encoding); rendering always encodes them.
//!
//! IncrementalAlterConfigs operations on the binding lists: SET replaces the whole list (bindings
//! not in it are removed), DELETE removes them all, APPEND adds elements, SUBTRACT removes them.

use super::exchange::{Binding, Destination, Exchange, ExchangeType, RoutingError};
use super::table::{Change, RoutingTable};

pub const EXCHANGE_TYPE: &str = "weir.exchange.type";
pub const EXCHANGE_ALTERNATE: &str = "weir.exchange.alternate";
pub const EXCHANGE_BINDINGS: &str = "weir.exchange.bindings";
pub const BINDINGS: &str = "weir.bindings";

/// Every config this module owns, in DescribeConfigs order.
pub const ROUTING_CONFIGS: [&str; 4] = [
    EXCHANGE_TYPE,
    EXCHANGE_ALTERNATE,
    EXCHANGE_BINDINGS,
    BINDINGS,
];

/// True for names this module owns or reserves: the broker passes those here and treats
/// any other config itself. A misspelt `weir.exchange.*`/`weir.binding*` name is refused
/// rather than silently ignored.
pub fn is_routing_config(name: &str) -> bool {
    name.starts_with("weir.exchange.") || name.starts_with("weir.binding")
}

/// One IncrementalAlterConfigs operation (its `config_operation` 0..=3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOperation {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

impl ConfigOperation {
    /// From the wire: operation code and value.
    pub fn from_wire(operation: i8, value: Option<&str>) -> Result<ConfigOperation, RoutingError> {
        let value = value.unwrap_or_default().to_string();
        match operation {
            0 => Ok(ConfigOperation::Set(value)),
            1 => Ok(ConfigOperation::Delete),
            2 => Ok(ConfigOperation::Append(value)),
            3 => Ok(ConfigOperation::Subtract(value)),
            other => Err(RoutingError::InvalidRequest {
                reason: format!("unknown config operation {other}"),
            }),
        }
    }
}

fn invalid(name: &str, reason: impl Into<String>) -> RoutingError {
    RoutingError::InvalidConfig {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// What a CreateTopics entry with routing configs becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePlan {
    /// The entry declares an exchange, not a topic.
    pub exchange: bool,
    pub changes: Vec<Change>,
}

/// Reads the routing configs of a CreateTopics entry `name`. Configs this module does not own are
/// ignored (the broker handles them); a repeated routing config is refused. `table` tells the
/// types of source exchanges named in `weir.bindings`.
pub fn plan_create(
    name: &str,
    configs: &[(&str, Option<&str>)],
    table: &RoutingTable,
) -> Result<CreatePlan, RoutingError> {
    let mut kind = None;
    let mut alternate = None;
    let mut outgoing = None;
    let mut incoming = None;
    for (config, value) in configs {
        if !is_routing_config(config) {
            continue;
        }
        let value = value.unwrap_or_default();
        let slot = match *config {
            EXCHANGE_TYPE => &mut kind,
            EXCHANGE_ALTERNATE => &mut alternate,
            EXCHANGE_BINDINGS => &mut outgoing,
            BINDINGS => &mut incoming,
            unknown => return Err(unknown_config(unknown)),
        };
        if slot.replace(value).is_some() {
            return Err(RoutingError::InvalidRequest {
                reason: format!("config {config:?} given twice"),
            });
        }
    }
    let mut changes = Vec::new();
    let exchange = kind.is_some();
    let kind = kind.map(ExchangeType::parse).transpose()?;
    match kind {
        Some(kind) => {
            let mut declared = Exchange::new(name, kind);
            declared.alternate = alternate
                .filter(|name| !name.is_empty())
                .map(str::to_string);
            changes.push(Change::DeclareExchange(declared));
            if let Some(list) = outgoing {
                changes.extend(
                    parse_outgoing(name, kind, list)?
                        .into_iter()
                        .map(Change::AddBinding),
                );
            }
        }
        None => {
            for (config, given) in [
                (EXCHANGE_ALTERNATE, alternate),
                (EXCHANGE_BINDINGS, outgoing),
            ] {
                if given.is_some() {
                    return Err(invalid(
                        config,
                        format!("only exchanges take it: set {EXCHANGE_TYPE} to declare one"),
                    ));
                }
            }
        }
    }
    if let Some(list) = incoming {
        let destination = destination_named(name, exchange);
        // A new exchange may bind to itself; every other source must already be declared.
        let kind_of = |source: &str| match kind {
            Some(kind) if source == name => Some(kind),
            _ => table.exchange(source).map(|exchange| exchange.kind),
        };
        changes.extend(
            parse_incoming(&destination, list, kind_of)?
                .into_iter()
                .map(Change::AddBinding),
        );
    }
    Ok(CreatePlan { exchange, changes })
}

fn unknown_config(name: &str) -> RoutingError {
    invalid(
        name,
        format!(
            "unknown routing config; known: {}",
            ROUTING_CONFIGS.join(", ")
        ),
    )
}

fn destination_named(name: &str, exchange: bool) -> Destination {
    if exchange {
        Destination::Exchange(name.to_string())
    } else {
        Destination::Topic(name.to_string())
    }
}

/// Turns IncrementalAlterConfigs operations on resource `name` (a topic or an exchange) into
/// changes, against the current `table`. Configs this module does not own are ignored.
pub fn plan_alter(
    name: &str,
    operations: &[(&str, ConfigOperation)],
    table: &RoutingTable,
) -> Result<Vec<Change>, RoutingError> {
    let exchange = table.exchange(name);
    let kind_of = |source: &str| table.exchange(source).map(|exchange| exchange.kind);
    let mut seen: Vec<&str> = Vec::new();
    let mut changes = Vec::new();
    for (config, operation) in operations {
        if !is_routing_config(config) {
            continue;
        }
        if seen.contains(config) {
            return Err(RoutingError::InvalidRequest {
                reason: format!("config {config:?} altered twice in one request"),
            });
        }
        seen.push(config);
        match *config {
            EXCHANGE_TYPE => {
                let unchanged = matches!(
                    (operation, exchange),
                    (ConfigOperation::Set(value), Some(exchange)) if value == exchange.kind.as_str()
                );
                if !unchanged {
                    return Err(invalid(
                        config,
                        "an exchange's type is fixed at creation: delete and re-create it",
                    ));
                }
            }
            EXCHANGE_ALTERNATE => {
                if exchange.is_none() {
                    return Err(invalid(config, "only exchanges take it"));
                }
                let alternate = match operation {
                    ConfigOperation::Set(value) if !value.is_empty() => Some(value.clone()),
                    ConfigOperation::Set(_) | ConfigOperation::Delete => None,
                    ConfigOperation::Append(_) | ConfigOperation::Subtract(_) => {
                        return Err(invalid(config, "not a list: use SET or DELETE"))
                    }
                };
                changes.push(Change::SetAlternate {
                    exchange: name.to_string(),
                    alternate,
                });
            }
            EXCHANGE_BINDINGS => {
                let Some(exchange) = exchange else {
                    return Err(invalid(config, "only exchanges take it"));
                };
                let current: Vec<Binding> = table.bindings_from(name).cloned().collect();
                let parse = |list: &str| parse_outgoing(name, exchange.kind, list);
                list_changes(operation, &current, parse, table, &mut changes)?;
            }
            BINDINGS => {
                let destination = destination_named(name, exchange.is_some());
                let current: Vec<Binding> = table.bindings_to(&destination).cloned().collect();
                let parse = |list: &str| parse_incoming(&destination, list, kind_of);
                list_changes(operation, &current, parse, table, &mut changes)?;
            }
            unknown => return Err(unknown_config(unknown)),
        }
    }
    Ok(changes)
}

/// The add/remove changes one list operation means, given the bindings the list holds now.
fn list_changes(
    operation: &ConfigOperation,
    current: &[Binding],
    parse: impl Fn(&str) -> Result<Vec<Binding>, RoutingError>,
    table: &RoutingTable,
    changes: &mut Vec<Change>,
) -> Result<(), RoutingError> {
    match operation {
        ConfigOperation::Append(list) => {
            changes.extend(parse(list)?.into_iter().map(Change::AddBinding));
        }
        ConfigOperation::Subtract(list) => {
            changes.extend(parse(list)?.into_iter().map(Change::RemoveBinding));
        }
        ConfigOperation::Delete => {
            changes.extend(current.iter().cloned().map(Change::RemoveBinding));
        }
        ConfigOperation::Set(list) => {
            // Compare in the table's normal form, so that re-setting the rendered list is a no-op.
            let mut wanted = Vec::new();
            for binding in parse(list)? {
                wanted.push(table.normalise(&binding)?);
            }
            changes.extend(
                current
                    .iter()
                    .filter(|binding| !wanted.contains(binding))
                    .cloned()
                    .map(Change::RemoveBinding),
            );
            changes.extend(
                wanted
                    .into_iter()
                    .filter(|binding| !current.contains(binding))
                    .map(Change::AddBinding),
            );
        }
    }
    Ok(())
}

/// The routing configs DescribeConfigs shows for `name`: all four for an exchange, only
/// `weir.bindings` for anything else (a topic, existing or not: the broker decides that).
pub fn describe(name: &str, table: &RoutingTable) -> Vec<(&'static str, String)> {
    match table.exchange(name) {
        Some(exchange) => {
            let destination = Destination::Exchange(name.to_string());
            vec![
                (EXCHANGE_TYPE, exchange.kind.as_str().to_string()),
                (
                    EXCHANGE_ALTERNATE,
                    exchange.alternate.clone().unwrap_or_default(),
                ),
                (
                    EXCHANGE_BINDINGS,
                    render_outgoing(exchange.kind, table.bindings_from(name)),
                ),
                (
                    BINDINGS,
                    render_incoming(table, table.bindings_to(&destination)),
                ),
            ]
        }
        None => {
            let destination = Destination::Topic(name.to_string());
            vec![(
                BINDINGS,
                render_incoming(table, table.bindings_to(&destination)),
            )]
        }
    }
}

/// Parses a `weir.exchange.bindings` list of exchange `source` of type `kind`.
pub fn parse_outgoing(
    source: &str,
    kind: ExchangeType,
    list: &str,
) -> Result<Vec<Binding>, RoutingError> {
    list_elements(list)
        .map(|element| {
            let (target, binding) = split_once_or_all(element, '=');
            let target = decode(target, EXCHANGE_BINDINGS)?;
            let destination = match target.split_once(':') {
                Some(("topic", name)) => Destination::Topic(name.to_string()),
                Some(("exchange", name)) => Destination::Exchange(name.to_string()),
                Some((kind, _)) => {
                    return Err(invalid(
                        EXCHANGE_BINDINGS,
                        format!("destination kind {kind:?}: expected topic: or exchange:"),
                    ))
                }
                None => Destination::Topic(target),
            };
            binding_with(source, Some(kind), destination, binding, EXCHANGE_BINDINGS)
        })
        .collect()
}

/// Parses a `weir.bindings` list of the destination `destination`; `kind_of` gives the type of
/// a source exchange, if it is declared.
pub fn parse_incoming(
    destination: &Destination,
    list: &str,
    kind_of: impl Fn(&str) -> Option<ExchangeType>,
) -> Result<Vec<Binding>, RoutingError> {
    list_elements(list)
        .map(|element| {
            let (source, binding) = split_once_or_all(element, '=');
            let source = decode(source, BINDINGS)?;
            let kind = kind_of(&source);
            binding_with(&source, kind, destination.clone(), binding, BINDINGS)
        })
        .collect()
}

/// A binding from its `binding` part (everything after the first `=`): the key for direct and
/// topic sources, `name=value&...` arguments for headers sources. When the source's type is not
/// known (it does not exist: the table will refuse the binding) both readings are kept and the
/// table's normal form drops the one that does not apply.
fn binding_with(
    source: &str,
    kind: Option<ExchangeType>,
    destination: Destination,
    binding: Option<&str>,
    config: &str,
) -> Result<Binding, RoutingError> {
    let raw = binding.unwrap_or_default();
    let headers = kind.is_none_or(|kind| kind == ExchangeType::Headers);
    let key = if kind == Some(ExchangeType::Headers) {
        String::new()
    } else {
        decode(raw, config)?
    };
    let mut parsed = Binding::new(source, destination, &key);
    if headers && !raw.is_empty() {
        for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = split_once_or_all(pair, '=');
            let name = decode(name, config)?;
            if name.is_empty() {
                return Err(invalid(config, "empty header argument name"));
            }
            parsed
                .arguments
                .insert(name, decode(value.unwrap_or_default(), config)?);
        }
    }
    Ok(parsed)
}

fn list_elements(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .filter(|element| !element.is_empty())
}

fn split_once_or_all(text: &str, separator: char) -> (&str, Option<&str>) {
    match text.split_once(separator) {
        Some((head, tail)) => (head, Some(tail)),
        None => (text, None),
    }
}

/// Renders the outgoing bindings of an exchange of type `kind`.
pub fn render_outgoing<'a>(
    kind: ExchangeType,
    bindings: impl Iterator<Item = &'a Binding>,
) -> String {
    let elements: Vec<String> = bindings
        .map(|binding| {
            let target = match &binding.destination {
                Destination::Topic(name) => format!("topic:{name}"),
                Destination::Exchange(name) => format!("exchange:{name}"),
            };
            with_binding_part(target, kind, binding)
        })
        .collect();
    elements.join(",")
}

/// Renders the incoming bindings of a destination; each source's type picks the binding part.
pub fn render_incoming<'a>(
    table: &RoutingTable,
    bindings: impl Iterator<Item = &'a Binding>,
) -> String {
    let elements: Vec<String> = bindings
        .map(|binding| {
            let kind = table
                .exchange(&binding.source)
                .map_or(ExchangeType::Direct, |exchange| exchange.kind);
            with_binding_part(binding.source.clone(), kind, binding)
        })
        .collect();
    elements.join(",")
}

fn with_binding_part(head: String, kind: ExchangeType, binding: &Binding) -> String {
    match kind.routing() {
        ExchangeType::Fanout => head,
        ExchangeType::Direct | ExchangeType::Topic => format!("{head}={}", encode(&binding.key)),
        _ => {
            let arguments: Vec<String> = binding
                .arguments
                .iter()
                .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
                .collect();
            format!("{head}={}", arguments.join("&"))
        }
    }
}

/// Percent-encodes the characters the list syntax uses, `%` itself, and whitespace.
pub fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '%' | ',' | '&' | '=') || character.is_ascii_whitespace() {
            encoded.push_str(&format!("%{:02X}", character as u32));
        } else {
            encoded.push(character);
        }
    }
    encoded
}

/// Reverses [`encode`] (and any other `%XX`); a `%` not followed by two hex digits, or an
/// encoding that is not UTF-8, is refused.
pub fn decode(text: &str, config: &str) -> Result<String, RoutingError> {
    if !text.contains('%') {
        return Ok(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| invalid(config, format!("bad %-escape in {text:?}")))?;
            decoded.push(hex);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded)
        .map_err(|_| invalid(config, format!("{text:?} decodes to non-UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::exchange::RoutingErrorKind;

    fn apply(table: &mut RoutingTable, changes: Vec<Change>) {
        table.apply(&changes).expect("valid changes");
    }

    fn create(table: &mut RoutingTable, name: &str, configs: &[(&str, &str)]) -> CreatePlan {
        let configs: Vec<(&str, Option<&str>)> = configs
            .iter()
            .map(|(name, value)| (*name, Some(*value)))
            .collect();
        let plan = plan_create(name, &configs, table).expect("valid configs");
        apply(table, plan.changes.clone());
        plan
    }

    fn described(table: &RoutingTable, name: &str, config: &str) -> String {
        describe(name, table)
            .into_iter()
            .find(|(name, _)| *name == config)
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("{config} not described"))
    }

    #[test]
    fn the_issue_example_through_configs() {
        let mut table = RoutingTable::new();
        let plan = create(
            &mut table,
            "app",
            &[
                (EXCHANGE_TYPE, "topic"),
                (EXCHANGE_BINDINGS, "email_queue=user.*"),
                ("retention.ms", "1000"),
            ],
        );
        assert!(plan.exchange);
        let plan = create(&mut table, "audit", &[(BINDINGS, "app=#")]);
        assert!(!plan.exchange);
        assert_eq!(
            table.route("app", Some(b"user.registered"), &[]).unwrap(),
            ["audit", "email_queue"]
        );
        assert_eq!(
            described(&table, "app", EXCHANGE_BINDINGS),
            "topic:audit=#,topic:email_queue=user.*"
        );
        assert_eq!(described(&table, "audit", BINDINGS), "app=#");
        assert_eq!(described(&table, "app", EXCHANGE_TYPE), "topic");
        assert_eq!(described(&table, "app", EXCHANGE_ALTERNATE), "");
    }

    #[test]
    fn alter_operations_on_lists() {
        let mut table = RoutingTable::new();
        create(&mut table, "jobs", &[(EXCHANGE_TYPE, "direct")]);
        let alter = |table: &mut RoutingTable, name: &str, config: &str, operation| {
            let changes = plan_alter(name, &[(config, operation)], table).expect("valid alter");
            table.apply(&changes).expect("applies");
        };
        use ConfigOperation::*;
        alter(
            &mut table,
            "jobs",
            EXCHANGE_BINDINGS,
            Append("pdf=pdf, images=png".into()),
        );
        alter(
            &mut table,
            "jobs",
            EXCHANGE_BINDINGS,
            Append("pdf=report".into()),
        );
        assert_eq!(
            described(&table, "jobs", EXCHANGE_BINDINGS),
            "topic:images=png,topic:pdf=pdf,topic:pdf=report"
        );
        alter(
            &mut table,
            "jobs",
            EXCHANGE_BINDINGS,
            Subtract("topic:pdf=pdf".into()),
        );
        assert_eq!(
            described(&table, "jobs", EXCHANGE_BINDINGS),
            "topic:images=png,topic:pdf=report"
        );
        // SET replaces; setting what DescribeConfigs shows is a no-op.
        let shown = described(&table, "jobs", EXCHANGE_BINDINGS);
        let version = table.version();
        alter(&mut table, "jobs", EXCHANGE_BINDINGS, Set(shown));
        assert_eq!(table.version(), version);
        alter(&mut table, "jobs", EXCHANGE_BINDINGS, Set("zip=zip".into()));
        assert_eq!(
            described(&table, "jobs", EXCHANGE_BINDINGS),
            "topic:zip=zip"
        );
        // The destination side sees and edits the same bindings.
        assert_eq!(described(&table, "zip", BINDINGS), "jobs=zip");
        alter(&mut table, "zip", BINDINGS, Append("jobs=gz".into()));
        assert_eq!(
            described(&table, "jobs", EXCHANGE_BINDINGS),
            "topic:zip=gz,topic:zip=zip"
        );
        alter(&mut table, "zip", BINDINGS, Delete);
        assert_eq!(described(&table, "jobs", EXCHANGE_BINDINGS), "");
        // Alternate exchange.
        create(&mut table, "fallback", &[(EXCHANGE_TYPE, "fanout")]);
        alter(
            &mut table,
            "jobs",
            EXCHANGE_ALTERNATE,
            Set("fallback".into()),
        );
        assert_eq!(described(&table, "jobs", EXCHANGE_ALTERNATE), "fallback");
        alter(&mut table, "jobs", EXCHANGE_ALTERNATE, Delete);
        assert_eq!(described(&table, "jobs", EXCHANGE_ALTERNATE), "");
    }

    #[test]
    fn headers_and_exchange_destinations_round_trip() {
        let mut table = RoutingTable::new();
        create(&mut table, "docs", &[(EXCHANGE_TYPE, "headers")]);
        create(
            &mut table,
            "front",
            &[
                (EXCHANGE_TYPE, "fanout"),
                (EXCHANGE_BINDINGS, "exchange:docs, topic:everything"),
            ],
        );
        let changes = plan_alter(
            "docs",
            &[(
                EXCHANGE_BINDINGS,
                ConfigOperation::Append("reports=x-match=any&format=pdf&kind=a%26b%2Cc".into()),
            )],
            &table,
        )
        .unwrap();
        table.apply(&changes).unwrap();
        let headers: &[(&str, Option<&[u8]>)] = &[("kind", Some(b"a&b,c"))];
        assert_eq!(
            table.route("front", None, headers).unwrap(),
            ["everything", "reports"]
        );
        let shown = described(&table, "docs", EXCHANGE_BINDINGS);
        assert_eq!(shown, "topic:reports=format=pdf&kind=a%26b%2Cc&x-match=any");
        assert_eq!(described(&table, "docs", BINDINGS), "front");
        // What DescribeConfigs shows parses back to the same bindings.
        let reparsed = parse_outgoing("docs", ExchangeType::Headers, &shown).unwrap();
        let current: Vec<Binding> = table.bindings_from("docs").cloned().collect();
        let normalised: Vec<Binding> = reparsed
            .iter()
            .map(|b| table.normalise(b).unwrap())
            .collect();
        assert_eq!(normalised, current);
    }

    #[test]
    fn keys_with_special_characters_round_trip() {
        for key in ["a,b", "x=y", "100%", "two words", "", "日本.*", "&"] {
            assert_eq!(decode(&encode(key), BINDINGS).unwrap(), key);
            let mut table = RoutingTable::new();
            create(&mut table, "x", &[(EXCHANGE_TYPE, "direct")]);
            let list = format!("x={}", encode(key));
            table
                .apply(
                    &plan_create("t", &[(BINDINGS, Some(&list))], &table)
                        .unwrap()
                        .changes,
                )
                .unwrap();
            assert_eq!(
                table.route("x", Some(key.as_bytes()), &[]).unwrap(),
                ["t"],
                "{key:?}"
            );
            assert_eq!(
                described(&table, "t", BINDINGS),
                format!("x={}", encode(key))
            );
        }
    }

    #[test]
    fn invalid_configs_are_refused_with_codes() {
        let mut table = RoutingTable::new();
        create(&mut table, "app", &[(EXCHANGE_TYPE, "topic")]);
        let create_cases: &[(&[(&str, &str)], RoutingErrorKind)] = &[
            (&[(EXCHANGE_TYPE, "queue")], RoutingErrorKind::InvalidConfig),
            (
                &[("weir.exchange.kind", "topic")],
                RoutingErrorKind::InvalidConfig,
            ),
            (
                &[("weir.binding", "app=#")],
                RoutingErrorKind::InvalidConfig,
            ),
            (
                &[(EXCHANGE_ALTERNATE, "app")],
                RoutingErrorKind::InvalidConfig,
            ),
            (
                &[(EXCHANGE_TYPE, "topic"), (EXCHANGE_BINDINGS, "queue:x=a")],
                RoutingErrorKind::InvalidConfig,
            ),
            (&[(BINDINGS, "app=a%zz")], RoutingErrorKind::InvalidConfig),
            (
                &[(BINDINGS, "app=#"), (BINDINGS, "app=*")],
                RoutingErrorKind::InvalidRequest,
            ),
        ];
        for (configs, code) in create_cases {
            let configs: Vec<(&str, Option<&str>)> = configs
                .iter()
                .map(|(name, value)| (*name, Some(*value)))
                .collect();
            let error = plan_create("new", &configs, &table).unwrap_err();
            assert_eq!(error.kind(), *code, "{configs:?}: {error}");
        }
        // Errors only the table can see: a missing source, too many `#`, a bad x-match.
        let table_cases: &[(&str, RoutingErrorKind)] = &[
            ("missing=a", RoutingErrorKind::NotFound),
            ("app=#.#.#.#.#.#.#.#.#", RoutingErrorKind::InvalidConfig),
        ];
        for (list, code) in table_cases {
            let plan = plan_create("t", &[(BINDINGS, Some(list))], &table).unwrap();
            let error = table.apply(&plan.changes).unwrap_err();
            assert_eq!(error.error.kind(), *code, "{list}: {error}");
        }
    }

    #[test]
    fn invalid_alters_are_refused_with_codes() {
        let mut table = RoutingTable::new();
        create(&mut table, "app", &[(EXCHANGE_TYPE, "topic")]);
        use ConfigOperation::*;
        let alter_cases: Vec<(&str, &str, ConfigOperation, RoutingErrorKind)> = vec![
            (
                "app",
                EXCHANGE_TYPE,
                Set("direct".into()),
                RoutingErrorKind::InvalidConfig,
            ),
            (
                "app",
                EXCHANGE_ALTERNATE,
                Append("x".into()),
                RoutingErrorKind::InvalidConfig,
            ),
            (
                "plain-topic",
                EXCHANGE_BINDINGS,
                Set("x=y".into()),
                RoutingErrorKind::InvalidConfig,
            ),
            (
                "plain-topic",
                EXCHANGE_TYPE,
                Set("topic".into()),
                RoutingErrorKind::InvalidConfig,
            ),
        ];
        for (name, config, operation, code) in alter_cases {
            let error = plan_alter(name, &[(config, operation.clone())], &table).unwrap_err();
            assert_eq!(error.kind(), code, "{name} {config} {operation:?}: {error}");
        }
        assert!(
            plan_alter("app", &[(EXCHANGE_TYPE, Set("topic".into()))], &table)
                .unwrap()
                .is_empty()
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            // The characters the syntax uses, plus ordinary and non-ASCII ones.
            prop::collection::vec(
                prop::sample::select(vec![
                    'a', 'b', '.', '*', '#', ',', '=', '&', '%', ' ', ':', 'é',
                ]),
                0..8,
            )
            .prop_map(|characters| characters.into_iter().collect())
        }

        proptest! {
            #[test]
            fn rendered_lists_parse_back(
                kind in prop::sample::select(vec![
                    ExchangeType::Direct, ExchangeType::Fanout, ExchangeType::Topic, ExchangeType::Headers,
                ]),
                entries in prop::collection::vec((text(), text(), text(), 0..3usize), 0..6),
            ) {
                let mut table = RoutingTable::new();
                table.apply(&[
                    Change::DeclareExchange(Exchange::new("src", kind)),
                    Change::DeclareExchange(Exchange::new("other", ExchangeType::Fanout)),
                ]).unwrap();
                let mut changes = Vec::new();
                for (key, name, value, destination) in entries {
                    let destination = match destination {
                        0 => Destination::Topic("t0".into()),
                        1 => Destination::Topic("t1".into()),
                        _ => Destination::Exchange("other".into()),
                    };
                    let mut binding = Binding::new("src", destination, &key);
                    if !name.is_empty() {
                        binding.arguments.insert(name, value);
                    }
                    changes.push(Change::AddBinding(binding));
                }
                // Some random bindings are invalid (e.g. too long or with many `#`): skip those.
                if table.apply(&changes).is_err() {
                    return Ok(());
                }
                let current: Vec<Binding> = table.bindings_from("src").cloned().collect();
                let rendered = render_outgoing(kind, current.iter());
                let parsed = parse_outgoing("src", kind, &rendered).unwrap();
                let normalised: Vec<Binding> =
                    parsed.iter().map(|binding| table.normalise(binding).unwrap()).collect();
                prop_assert_eq!(&normalised, &current, "rendered {:?}", rendered);
                for destination in ["t0", "t1"] {
                    let destination = Destination::Topic(destination.into());
                    let incoming: Vec<Binding> = table.bindings_to(&destination).cloned().collect();
                    let rendered = render_incoming(&table, incoming.iter());
                    let kind_of = |source: &str| table.exchange(source).map(|exchange| exchange.kind);
                    let parsed = parse_incoming(&destination, &rendered, kind_of).unwrap();
                    let normalised: Vec<Binding> =
                        parsed.iter().map(|binding| table.normalise(binding).unwrap()).collect();
                    prop_assert_eq!(&normalised, &incoming, "rendered {:?}", rendered);
                }
            }

            #[test]
            fn any_config_text_is_handled_without_panics(list in text(), name in text()) {
                let table = RoutingTable::new();
                for config in ROUTING_CONFIGS {
                    let _ = plan_create("x", &[(config, Some(&list))], &table);
                    let _ = plan_alter("x", &[(config, ConfigOperation::Set(list.clone()))], &table);
                }
                let _ = plan_create(&name, &[(EXCHANGE_TYPE, Some("topic")), (BINDINGS, Some(&list))], &table);
            }
        }
    }
}
