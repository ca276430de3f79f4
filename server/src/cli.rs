//! `weir exchange …` and `weir binding …`: a small blocking Kafka admin client that declares
//! exchanges and bindings on a running broker with the same requests any Kafka admin client
//! would send (CreateTopics, DeleteTopics, IncrementalAlterConfigs, DescribeConfigs, Metadata).
//!
//! Runs in the CLI process, not on a shard: plain blocking `std::net` sockets, one connection,
//! one request at a time. Not core: it speaks the Kafka wire protocol (`kafka_protocol::messages`)
//! as a client, so it sits beside the protocol layers. It is the binary's front end kept in the
//! library so that `main.rs` stays thin, hence `anyhow` errors with context rather than a
//! `thiserror` enum.

pub mod user;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    delete_topics_request::DeleteTopicState,
    describe_configs_request::DescribeConfigsResource,
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
    ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, MetadataRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};

use crate::routing::config::{self, EXCHANGE_ALTERNATE, EXCHANGE_BINDINGS, EXCHANGE_TYPE};

/// Kafka's resource type for topics in the config APIs.
const RESOURCE_TOPIC: i8 = 2;
/// Largest response the CLI accepts; a listing of every topic's configs fits easily.
const RESPONSE_BYTES_MAX: usize = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// The admin subcommands of `weir` (without one, `weir` runs the broker).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Declare, delete and list exchanges on a running broker.
    Exchange {
        /// The broker to talk to.
        #[arg(
            long,
            global = true,
            default_value = "127.0.0.1:9092",
            value_name = "HOST:PORT"
        )]
        bootstrap: String,
        #[command(subcommand)]
        command: ExchangeCommand,
    },
    /// Add, remove and list bindings on a running broker.
    Binding {
        /// The broker to talk to.
        #[arg(
            long,
            global = true,
            default_value = "127.0.0.1:9092",
            value_name = "HOST:PORT"
        )]
        bootstrap: String,
        #[command(subcommand)]
        command: BindingCommand,
    },
    /// Create, delete and list SCRAM users (on a running broker, or offline with --data-dir).
    User {
        #[command(flatten)]
        target: user::Target,
        #[command(subcommand)]
        command: user::UserCommand,
    },
}

/// Runs an admin subcommand to completion.
pub fn run(command: &Command) -> Result<()> {
    match command {
        Command::Exchange { bootstrap, command } => run_exchange(bootstrap, command),
        Command::Binding { bootstrap, command } => run_binding(bootstrap, command),
        Command::User { target, command } => user::run(target, command),
    }
}

/// `weir exchange …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ExchangeCommand {
    /// Declare an exchange (CreateTopics with weir.exchange.type).
    Declare {
        name: String,
        /// direct, fanout, topic or headers.
        #[arg(long = "type", short = 't')]
        kind: String,
        /// Alternate exchange for records this exchange's bindings match nothing for.
        #[arg(long)]
        alternate: Option<String>,
    },
    /// Delete an exchange and every binding from and to it (DeleteTopics).
    Delete { name: String },
    /// List exchanges (Metadata, then DescribeConfigs).
    List,
}

/// `weir binding …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BindingCommand {
    /// Bind a topic (or, with --to-exchange, an exchange) to an exchange.
    Add(BindingArguments),
    /// Remove a binding.
    Remove(BindingArguments),
    /// List the bindings of one exchange, or of every exchange.
    List { exchange: Option<String> },
}

#[derive(Debug, Clone, clap::Args)]
pub struct BindingArguments {
    /// The source exchange.
    pub exchange: String,
    /// The destination topic (or exchange with --to-exchange).
    pub destination: String,
    /// Binding key (direct and topic exchanges).
    #[arg(long, short = 'k', default_value = "")]
    pub key: String,
    /// Headers-exchange argument `name=value`, repeatable; `x-match=any` picks the mode.
    #[arg(long = "arg", short = 'a')]
    pub arguments: Vec<String>,
    /// The destination is an exchange, not a topic.
    #[arg(long)]
    pub to_exchange: bool,
}

impl BindingArguments {
    /// The `weir.exchange.bindings` list element for this binding.
    pub fn element(&self) -> Result<String> {
        let kind = if self.to_exchange {
            "exchange"
        } else {
            "topic"
        };
        let head = format!("{kind}:{}", self.destination);
        if self.arguments.is_empty() {
            return Ok(format!("{head}={}", config::encode(&self.key)));
        }
        let mut pairs = Vec::new();
        for argument in &self.arguments {
            let Some((name, value)) = argument.split_once('=') else {
                bail!("--arg {argument:?} is not name=value");
            };
            pairs.push(format!(
                "{}={}",
                config::encode(name),
                config::encode(value)
            ));
        }
        Ok(format!("{head}={}", pairs.join("&")))
    }
}

/// Runs an exchange command against the broker at `bootstrap` (`host:port`).
pub fn run_exchange(bootstrap: &str, command: &ExchangeCommand) -> Result<()> {
    let mut client = AdminClient::connect(bootstrap)?;
    match command {
        ExchangeCommand::Declare {
            name,
            kind,
            alternate,
        } => {
            let mut configs = vec![(EXCHANGE_TYPE, kind.clone())];
            if let Some(alternate) = alternate {
                configs.push((EXCHANGE_ALTERNATE, alternate.clone()));
            }
            client.create_topic(name, &configs)?;
            println!("declared {kind} exchange {name}");
        }
        ExchangeCommand::Delete { name } => {
            client.delete_topic(name)?;
            println!("deleted exchange {name}");
        }
        ExchangeCommand::List => {
            for (name, configs) in client.exchanges()? {
                let value = |wanted: &str| {
                    configs
                        .iter()
                        .find(|(config, _)| config == wanted)
                        .map(|(_, value)| value.as_str())
                        .unwrap_or_default()
                };
                let alternate = value(EXCHANGE_ALTERNATE);
                let alternate = if alternate.is_empty() { "-" } else { alternate };
                println!("{name}\t{}\talternate={alternate}", value(EXCHANGE_TYPE));
            }
        }
    }
    Ok(())
}

/// Runs a binding command against the broker at `bootstrap`.
pub fn run_binding(bootstrap: &str, command: &BindingCommand) -> Result<()> {
    let mut client = AdminClient::connect(bootstrap)?;
    match command {
        BindingCommand::Add(arguments) | BindingCommand::Remove(arguments) => {
            let (operation, verb) = match command {
                BindingCommand::Add(_) => (2, "added"),
                _ => (3, "removed"),
            };
            let element = arguments.element()?;
            client.alter_config(&arguments.exchange, EXCHANGE_BINDINGS, operation, &element)?;
            println!("{verb} binding {}: {element}", arguments.exchange);
        }
        BindingCommand::List { exchange } => {
            let exchanges = match exchange {
                Some(name) => {
                    let configs = client.describe(&[name.as_str()])?;
                    configs.into_iter().collect()
                }
                None => client.exchanges()?,
            };
            for (name, configs) in exchanges {
                for (config, value) in configs {
                    if config != EXCHANGE_BINDINGS {
                        continue;
                    }
                    for element in value.split(',').filter(|element| !element.is_empty()) {
                        println!("{name}\t{element}");
                    }
                }
            }
        }
    }
    Ok(())
}

type Configs = Vec<(String, String)>;

/// One connection to a broker, speaking versions both sides support.
pub(crate) struct AdminClient {
    stream: TcpStream,
    correlation_id: i32,
    /// (api key, max version the broker supports)
    broker_versions: Vec<(i16, i16)>,
}

impl AdminClient {
    pub(crate) fn connect(bootstrap: &str) -> Result<AdminClient> {
        let stream = TcpStream::connect(bootstrap)
            .with_context(|| format!("connecting to the broker at {bootstrap}"))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .context("setting a read timeout")?;
        stream
            .set_write_timeout(Some(TIMEOUT))
            .context("setting a write timeout")?;
        let mut client = AdminClient {
            stream,
            correlation_id: 0,
            broker_versions: Vec::new(),
        };
        // ApiVersions v0 is understood by every broker and needs no negotiation itself.
        let response = client
            .call(&ApiVersionsRequest::default(), 0)
            .context("ApiVersions")?;
        if response.error_code != 0 {
            bail!("ApiVersions failed with error {}", response.error_code);
        }
        client.broker_versions = response
            .api_keys
            .iter()
            .map(|api| (api.api_key, api.max_version))
            .collect();
        Ok(client)
    }

    /// The highest version of `R` both this library and the broker speak.
    pub(crate) fn version<R: Request + Message>(&self) -> Result<i16> {
        let broker_max = self
            .broker_versions
            .iter()
            .find(|(key, _)| *key == R::KEY)
            .map(|(_, max)| *max)
            .with_context(|| format!("the broker does not support API key {}", R::KEY))?;
        let version = broker_max.min(R::VERSIONS.max);
        if version < R::VERSIONS.min {
            bail!("the broker's API key {} versions are too old", R::KEY);
        }
        Ok(version)
    }

    pub(crate) fn call<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("weir-cli")));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header
            .encode(&mut frame, R::header_version(version))
            .context("encoding the request header")?;
        request
            .encode(&mut frame, version)
            .context("encoding the request")?;
        let size = u32::try_from(frame.len() - 4).context("request too large")?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        self.stream
            .write_all(&frame)
            .context("sending the request")?;

        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .context("reading the response size")?;
        let size = u32::from_be_bytes(size) as usize;
        if size > RESPONSE_BYTES_MAX {
            bail!("response of {size} bytes is larger than {RESPONSE_BYTES_MAX}");
        }
        let mut body = vec![0u8; size];
        self.stream
            .read_exact(&mut body)
            .context("reading the response")?;
        let mut body = bytes::Bytes::from(body);
        let response_header =
            ResponseHeader::decode(&mut body, R::Response::header_version(version))
                .context("decoding the response header")?;
        if response_header.correlation_id != self.correlation_id {
            bail!(
                "response correlation id {} for request {}",
                response_header.correlation_id,
                self.correlation_id
            );
        }
        let response = R::Response::decode(&mut body, version).context("decoding the response")?;
        if body.has_remaining() {
            bail!("{} unread bytes after the response", body.remaining());
        }
        Ok(response)
    }

    fn create_topic(&mut self, name: &str, configs: &[(&str, String)]) -> Result<()> {
        let version = self.version::<CreateTopicsRequest>()?;
        let topic = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            // Exchanges take their partitions from the broker (one per shard); -1 is "default"
            // from v4 on, older versions need a number.
            .with_num_partitions(if version >= 4 { -1 } else { 1 })
            .with_replication_factor(if version >= 4 { -1 } else { 1 })
            .with_configs(
                configs
                    .iter()
                    .map(|(config, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(config.to_string()))
                            .with_value(Some(StrBytes::from_string(value.clone())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000);
        let response = self.call(&request, version).context("CreateTopics")?;
        for result in response.topics {
            check(result.error_code, result.error_message.as_deref(), name)?;
        }
        Ok(())
    }

    fn delete_topic(&mut self, name: &str) -> Result<()> {
        let version = self.version::<DeleteTopicsRequest>()?;
        let topic_name = TopicName(StrBytes::from_string(name.to_string()));
        let request = if version >= 6 {
            DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_name(Some(topic_name))])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![topic_name])
        }
        .with_timeout_ms(30_000);
        let response = self.call(&request, version).context("DeleteTopics")?;
        for result in response.responses {
            check(result.error_code, result.error_message.as_deref(), name)?;
        }
        Ok(())
    }

    fn alter_config(&mut self, name: &str, config: &str, operation: i8, value: &str) -> Result<()> {
        let version = self.version::<IncrementalAlterConfigsRequest>()?;
        let resource = AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_string(config.to_string()))
                .with_config_operation(operation)
                .with_value(Some(StrBytes::from_string(value.to_string())))]);
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
        let response = self
            .call(&request, version)
            .context("IncrementalAlterConfigs")?;
        for result in response.responses {
            check(result.error_code, result.error_message.as_deref(), name)?;
        }
        Ok(())
    }

    /// The routing configs of each named topic or exchange.
    fn describe(&mut self, names: &[&str]) -> Result<Vec<(String, Configs)>> {
        let version = self.version::<DescribeConfigsRequest>()?;
        let keys: Vec<StrBytes> = config::ROUTING_CONFIGS
            .iter()
            .map(|config| StrBytes::from_static_str(config))
            .collect();
        let resources = names
            .iter()
            .map(|name| {
                DescribeConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(StrBytes::from_string(name.to_string()))
                    .with_configuration_keys(Some(keys.clone()))
            })
            .collect();
        let request = DescribeConfigsRequest::default().with_resources(resources);
        let response = self.call(&request, version).context("DescribeConfigs")?;
        let mut described = Vec::new();
        for result in response.results {
            let name = result.resource_name.to_string();
            check(result.error_code, result.error_message.as_deref(), &name)?;
            let configs = result
                .configs
                .into_iter()
                .map(|config| {
                    let value = config.value.map(|value| value.to_string());
                    (config.name.to_string(), value.unwrap_or_default())
                })
                .collect();
            described.push((name, configs));
        }
        Ok(described)
    }

    /// Every exchange with its routing configs: topics from Metadata whose
    /// `weir.exchange.type` is set.
    fn exchanges(&mut self) -> Result<Vec<(String, Configs)>> {
        let version = self.version::<MetadataRequest>()?;
        // A null topic list asks for every topic (from v1 on).
        let request = MetadataRequest::default().with_topics(None);
        let response = self.call(&request, version.max(1)).context("Metadata")?;
        let mut names: Vec<String> = response
            .topics
            .iter()
            .filter_map(|topic| topic.name.as_ref().map(|name| name.0.to_string()))
            .collect();
        names.sort();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let described = self.describe(&names)?;
        Ok(described
            .into_iter()
            .filter(|(_, configs)| {
                configs
                    .iter()
                    .any(|(config, value)| config == EXCHANGE_TYPE && !value.is_empty())
            })
            .collect())
    }
}

fn check(error_code: i16, message: Option<&str>, name: &str) -> Result<()> {
    if error_code == 0 {
        return Ok(());
    }
    let kafka = kafka_protocol::error::ResponseError::try_from_code(error_code).map_or_else(
        || format!("error {error_code}"),
        |error| format!("{error:?} ({error_code})"),
    );
    match message {
        Some(message) if !message.is_empty() => bail!("{name}: {kafka}: {message}"),
        _ => bail!("{name}: {kafka}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::exchange::{Destination, ExchangeType};
    use crate::routing::table::RoutingTable;

    fn arguments(
        destination: &str,
        key: &str,
        pairs: &[&str],
        to_exchange: bool,
    ) -> BindingArguments {
        BindingArguments {
            exchange: "x".into(),
            destination: destination.into(),
            key: key.into(),
            arguments: pairs.iter().map(|pair| pair.to_string()).collect(),
            to_exchange,
        }
    }

    #[test]
    fn elements_parse_back_to_the_intended_binding() {
        let key = arguments("email_queue", "user.*", &[], false);
        assert_eq!(key.element().unwrap(), "topic:email_queue=user.*");
        let parsed =
            config::parse_outgoing("x", ExchangeType::Topic, &key.element().unwrap()).unwrap();
        assert_eq!(parsed[0].key, "user.*");
        assert_eq!(
            parsed[0].destination,
            Destination::Topic("email_queue".into())
        );

        let odd = arguments("t", "a,b=c", &[], true);
        let parsed =
            config::parse_outgoing("x", ExchangeType::Direct, &odd.element().unwrap()).unwrap();
        assert_eq!(parsed[0].key, "a,b=c");
        assert_eq!(parsed[0].destination, Destination::Exchange("t".into()));

        let headers = arguments("r", "", &["x-match=any", "format=a&b"], false);
        let mut table = RoutingTable::new();
        let plan = config::plan_create(
            "x",
            &[
                (EXCHANGE_TYPE, Some("headers")),
                (EXCHANGE_BINDINGS, Some(&headers.element().unwrap())),
            ],
            &table,
        )
        .unwrap();
        table.apply(&plan.changes).unwrap();
        let header: &[(&str, Option<&[u8]>)] = &[("format", Some(b"a&b"))];
        assert_eq!(table.route("x", None, header).unwrap(), ["r"]);

        assert!(arguments("r", "", &["no-equals"], false).element().is_err());
    }

    #[test]
    fn bootstrap_goes_anywhere_on_the_command_line() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Command,
        }
        for line in [
            "weir binding --bootstrap h:1 add app q --key a.*",
            "weir binding add app q --key a.* --bootstrap h:1",
        ] {
            let parsed = Cli::try_parse_from(line.split(' ')).unwrap();
            let Command::Binding { bootstrap, command } = parsed.command else {
                panic!("{line}: not a binding command");
            };
            assert_eq!(bootstrap, "h:1", "{line}");
            let BindingCommand::Add(arguments) = command else {
                panic!("{line}: not add");
            };
            assert_eq!(arguments.element().unwrap(), "topic:q=a.*");
        }
    }
}
