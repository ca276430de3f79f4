//! `weir user create|delete|list`: SCRAM users on a running broker through Kafka's own admin
//! APIs (AlterUserScramCredentials, DescribeUserScramCredentials), authenticating with SASL
//! first when the listener asks for it; or, with `--data-dir`, offline in a stopped broker's
//! data directory, which is how the first user is made for a broker with only SASL listeners
//! (Kafka's `kafka-storage format --add-scram`).
//!
//! Runs in the CLI process, under `cli.rs` (whose blocking admin client it uses).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::cli::AdminClient;
use crate::security::scram::{self, Credential, Mechanism};
use crate::security::users::{self, UserChange};

/// How the CLI reaches the user store.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The broker to talk to.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// Authenticate as this user first (a SASL listener).
    #[arg(long, global = true)]
    pub sasl_user: Option<String>,
    #[arg(long, global = true)]
    pub sasl_password: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, global = true, default_value = "SCRAM-SHA-512")]
    pub sasl_mechanism: String,
    /// Change the store of a stopped broker's data directory instead (no broker is contacted).
    #[arg(long = "data-dir", global = true, value_name = "DIR")]
    pub offline_data_dir: Option<PathBuf>,
}

/// `weir user …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user, or replace its credential for the mechanism.
    Create {
        name: String,
        #[arg(long)]
        password: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN logins check either).
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        #[arg(long, default_value_t = scram::ITERATIONS_MIN)]
        iterations: u32,
    },
    /// Delete a user's credentials (every mechanism's).
    Delete { name: String },
    /// List users and their mechanisms.
    List,
}

pub fn run(target: &Target, command: &UserCommand) -> Result<()> {
    match &target.offline_data_dir {
        Some(dir) => run_offline(dir, command),
        None => run_online(target, command),
    }
}

fn mechanism(name: &str) -> Result<Mechanism> {
    Mechanism::from_name(name)
        .with_context(|| format!("unknown mechanism {name}: SCRAM-SHA-256 or SCRAM-SHA-512"))
}

fn run_online(target: &Target, command: &UserCommand) -> Result<()> {
    let mut client = AdminClient::connect(&target.bootstrap)?;
    if let Some(user) = &target.sasl_user {
        let password = target.sasl_password.as_deref().unwrap_or_default();
        authenticate(&mut client, &target.sasl_mechanism, user, password)?;
    }
    match command {
        UserCommand::Create {
            name,
            password,
            mechanism: name_of_mechanism,
            iterations,
        } => {
            let mechanism = mechanism(name_of_mechanism)?;
            users::check_iterations(*iterations).map_err(anyhow::Error::msg)?;
            let salt = scram::random_bytes(scram::SALT_BYTES);
            let salted = mechanism.salted_password(password.as_bytes(), &salt, *iterations);
            let mut upsertion = ScramCredentialUpsertion::default();
            upsertion.name = StrBytes::from_string(name.clone());
            upsertion.mechanism = mechanism.kafka_type();
            upsertion.iterations = *iterations as i32;
            upsertion.salt = salt.into();
            upsertion.salted_password = salted.into();
            alter(&mut client, vec![upsertion], Vec::new())?;
            println!("created user {name} ({})", mechanism.name());
        }
        UserCommand::Delete { name } => {
            let deletions: Vec<ScramCredentialDeletion> = describe(&mut client, Some(name))?
                .into_iter()
                .flat_map(|(_, mechanisms)| mechanisms)
                .map(|(mechanism, _)| {
                    let mut deletion = ScramCredentialDeletion::default();
                    deletion.name = StrBytes::from_string(name.clone());
                    deletion.mechanism = mechanism;
                    deletion
                })
                .collect();
            alter(&mut client, Vec::new(), deletions)?;
            println!("deleted user {name}");
        }
        UserCommand::List => {
            for (user, mechanisms) in describe(&mut client, None)? {
                let names: Vec<String> = mechanisms
                    .iter()
                    .map(|(m, iterations)| {
                        let name = Mechanism::from_kafka_type(*m).map_or("?", Mechanism::name);
                        format!("{name} (iterations {iterations})")
                    })
                    .collect();
                println!("{user}\t{}", names.join(", "));
            }
        }
    }
    Ok(())
}

/// A SASL exchange on the admin connection (SaslHandshake v1, then SaslAuthenticate).
fn authenticate(
    client: &mut AdminClient,
    mechanism: &str,
    user: &str,
    password: &str,
) -> Result<()> {
    let mut handshake = SaslHandshakeRequest::default();
    handshake.mechanism = StrBytes::from_string(mechanism.to_string());
    let response = client.call(&handshake, 1).context("SaslHandshake")?;
    if response.error_code != 0 {
        bail!("SaslHandshake {mechanism}: error {}", response.error_code);
    }
    let version = client.version::<SaslAuthenticateRequest>()?;
    let mut step = |bytes: Vec<u8>| -> Result<Vec<u8>> {
        let mut request = SaslAuthenticateRequest::default();
        request.auth_bytes = bytes.into();
        let response = client.call(&request, version).context("SaslAuthenticate")?;
        if response.error_code != 0 {
            bail!(
                "authentication as {user} failed: {}",
                response.error_message.as_deref().unwrap_or("(no message)")
            );
        }
        Ok(response.auth_bytes.to_vec())
    };
    if mechanism == "PLAIN" {
        step(format!("\0{user}\0{password}").into_bytes())?;
        return Ok(());
    }
    let scram = self::mechanism(mechanism)?;
    let escaped = user.replace('=', "=3D").replace(',', "=2C");
    let bare = format!("n={escaped},r={}", scram::client_nonce());
    let server_first = step(format!("n,,{bare}").into_bytes())?;
    let (client_final, expected) = scram::client_final(scram, password, &bare, &server_first)
        .map_err(|error| anyhow::anyhow!("SCRAM: {error}"))?;
    if step(client_final.into_bytes())? != expected {
        bail!("the broker's SCRAM signature is wrong: not the broker that holds the user");
    }
    Ok(())
}

fn alter(
    client: &mut AdminClient,
    upsertions: Vec<ScramCredentialUpsertion>,
    deletions: Vec<ScramCredentialDeletion>,
) -> Result<()> {
    let mut request = AlterUserScramCredentialsRequest::default();
    request.upsertions = upsertions;
    request.deletions = deletions;
    let version = client.version::<AlterUserScramCredentialsRequest>()?;
    let response = client
        .call(&request, version)
        .context("AlterUserScramCredentials")?;
    for result in response.results {
        if result.error_code != 0 {
            bail!(
                "user {}: error {}: {}",
                result.user.as_str(),
                result.error_code,
                result.error_message.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// (user, [(mechanism type, iterations)]) for one user or all.
type Described = Vec<(String, Vec<(i8, i32)>)>;

fn describe(client: &mut AdminClient, user: Option<&str>) -> Result<Described> {
    let mut request = DescribeUserScramCredentialsRequest::default();
    request.users = user.map(|name| {
        let mut entry = UserName::default();
        entry.name = StrBytes::from_string(name.to_string());
        vec![entry]
    });
    let version = client.version::<DescribeUserScramCredentialsRequest>()?;
    let response = client
        .call(&request, version)
        .context("DescribeUserScramCredentials")?;
    let mut out = Vec::new();
    for result in response.results {
        if result.error_code != 0 {
            bail!(
                "user {}: {}",
                result.user.as_str(),
                result.error_message.as_deref().unwrap_or("error")
            );
        }
        let mechanisms = result
            .credential_infos
            .iter()
            .map(|info| (info.mechanism, info.iterations))
            .collect();
        out.push((result.user.to_string(), mechanisms));
    }
    Ok(out)
}

/// Changes the store in a stopped broker's data directory: the same metadata journal line the
/// controller would write (the data directory's lock keeps a running broker out).
fn run_offline(dir: &Path, command: &UserCommand) -> Result<()> {
    crate::create_data_dir(dir)?;
    let _lock = crate::lock_data_dir(dir)?;
    let persisted = crate::metadata::load(dir)
        .with_context(|| format!("loading the metadata of {}", dir.display()))?;
    let mut metadata = persisted.clone();
    let changes: Vec<UserChange> = match command {
        UserCommand::Create {
            name,
            password,
            mechanism: name_of_mechanism,
            iterations,
        } => {
            let mechanism = mechanism(name_of_mechanism)?;
            users::check_iterations(*iterations).map_err(anyhow::Error::msg)?;
            vec![UserChange::Upsert {
                user: name.clone(),
                mechanism,
                credential: Credential::from_password(mechanism, password, *iterations),
            }]
        }
        UserCommand::Delete { name } => {
            let Some(credentials) = metadata.users.get(name) else {
                bail!("no user {name}");
            };
            credentials
                .keys()
                .map(|mechanism| UserChange::Delete {
                    user: name.clone(),
                    mechanism: *mechanism,
                })
                .collect()
        }
        UserCommand::List => {
            for (user, credentials) in &metadata.users {
                let names: Vec<&str> = credentials.keys().map(|m| m.name()).collect();
                println!("{user}\t{}", names.join(", "));
            }
            return Ok(());
        }
    };
    for (user, result) in users::apply(&mut metadata.users, &changes) {
        result.map_err(|error| anyhow::anyhow!("user {user}: {error}"))?;
    }
    metadata.version += 1;
    let mut journal = crate::metadata::Journal::open(dir, &persisted)
        .with_context(|| format!("opening the metadata journal of {}", dir.display()))?;
    journal
        .persist(&metadata)
        .with_context(|| format!("writing the metadata journal of {}", dir.display()))?;
    println!("done (offline, {})", dir.display());
    Ok(())
}
