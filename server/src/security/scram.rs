//! SCRAM credentials and the server side of a SCRAM exchange (RFC 5802, with RFC 7677's
//! SHA-256 and Kafka's SHA-512), and PLAIN checked against the same credentials.
//!
//! Core module, no protocol: Kafka's SaslAuthenticate and AMQP's start-ok both hand their bytes
//! here. The maths is the RustCrypto crates' (hmac, sha2, pbkdf2); this file only arranges it:
//!
//! ```text
//! SaltedPassword = PBKDF2-HMAC(password, salt, iterations)     -- the client's work
//! ClientKey      = HMAC(SaltedPassword, "Client Key")
//! StoredKey      = H(ClientKey)                                -- stored
//! ServerKey      = HMAC(SaltedPassword, "Server Key")          -- stored
//! AuthMessage    = client-first-bare "," server-first "," client-final-without-proof
//! ClientProof    = ClientKey XOR HMAC(StoredKey, AuthMessage)  -- checked: H(proof ^ sig) == StoredKey
//! ServerSignature= HMAC(ServerKey, AuthMessage)                -- sent back as v=
//! ```
//!
//! Runs on whichever shard holds the connection; all state is the connection's own.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// Kafka's bounds on SCRAM iterations (`ScramMechanism.minIterations()` is 4096; the broker
/// refuses more than 16384 in AlterUserScramCredentials).
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;

/// Length of the server's part of the nonce and of generated salts, in random bytes.
const NONCE_BYTES: usize = 24;
pub const SALT_BYTES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's `ScramMechanism` type number (AlterUserScramCredentials, DescribeUser...).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(value: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_type() == value)
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => hmac_of::<Hmac<Sha256>>(key, data),
            Mechanism::Sha512 => hmac_of::<Hmac<Sha512>>(key, data),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// PBKDF2 of `password`: the client's half of SCRAM, done here for PLAIN and the CLI.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            Mechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

fn hmac_of<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// What the broker keeps of a password, as Kafka keeps it: never the password itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl Credential {
    /// From a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted(mechanism: Mechanism, salted: &[u8], salt: &[u8], iterations: u32) -> Self {
        let client_key = mechanism.hmac(salted, b"Client Key");
        Credential {
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted, b"Server Key"),
        }
    }

    /// From a password, with a fresh random salt.
    pub fn from_password(mechanism: Mechanism, password: &str, iterations: u32) -> Self {
        let salt = random_bytes(SALT_BYTES);
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        Credential::from_salted(mechanism, &salted, &salt, iterations)
    }

    /// Whether `password` is the one this credential was made from (PLAIN). Costs a PBKDF2.
    pub fn matches_password(&self, mechanism: Mechanism, password: &str) -> bool {
        let salted = mechanism.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        constant_time_eq(&mechanism.hash(&client_key), &self.stored_key)
    }
}

/// Random bytes from the OS. A broker without a working random source cannot make salts or
/// nonces safely, so this is one of the few places that may panic.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    getrandom::getrandom(&mut bytes).expect("the OS random source failed");
    bytes
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("invalid nonce")]
    Nonce,
    /// Unknown user or wrong proof: one answer for both, so that names cannot be probed.
    #[error("invalid credentials")]
    Credentials,
}

/// The server's state between its first and final messages.
pub struct ScramFirst {
    mechanism: Mechanism,
    user: String,
    credential: Credential,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    /// The client's nonce (client-first's `r=`), a prefix of `nonce`.
    client_nonce: String,
    /// The combined nonce: the client's, then the server's.
    nonce: String,
}

impl ScramFirst {
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn server_first(&self) -> &[u8] {
        self.server_first.as_bytes()
    }
}

/// Reads client-first (`n,,n=user,r=nonce`) and answers server-first. `lookup` finds the user's
/// credential for this mechanism.
pub fn server_first(
    mechanism: Mechanism,
    client_first: &[u8],
    lookup: impl FnOnce(&str) -> Option<Credential>,
) -> Result<ScramFirst, ScramError> {
    let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (gs2_header, bare) = split_gs2(text)?;
    let mut user = None;
    let mut client_nonce = None;
    for attribute in bare.split(',') {
        match attribute.split_once('=') {
            Some(("n", name)) => user = Some(decode_saslname(name)?),
            Some(("r", nonce)) => client_nonce = Some(nonce),
            Some(("m", _)) => return Err(ScramError::Malformed("mandatory extension")),
            _ => {} // Kafka's extensions (e.g. tokenauth) are not used here
        }
    }
    let user = user.ok_or(ScramError::Malformed("no user name"))?;
    let client_nonce = client_nonce
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b','))
        .ok_or(ScramError::Malformed("no nonce"))?;
    let credential = lookup(&user).ok_or(ScramError::Credentials)?;
    let nonce = format!("{client_nonce}{}", self::random_nonce());
    let server_first = format!(
        "r={nonce},s={},i={}",
        BASE64.encode(&credential.salt),
        credential.iterations
    );
    Ok(ScramFirst {
        mechanism,
        user,
        credential,
        gs2_header: gs2_header.to_string(),
        client_first_bare: bare.to_string(),
        server_first,
        client_nonce: client_nonce.to_string(),
        nonce,
    })
}

/// Splits `gs2-header client-first-bare`. Only `n` (no channel binding) and `y` (client could
/// but thinks the server cannot) are accepted; an authzid must name the user itself or nothing.
fn split_gs2(text: &str) -> Result<(&str, &str), ScramError> {
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
    let authzid = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
    let bare = parts
        .next()
        .ok_or(ScramError::Malformed("no client-first-bare"))?;
    match flag {
        "n" | "y" => {}
        flag if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad GS2 flag")),
    }
    if !authzid.is_empty() && !authzid.starts_with("a=") {
        return Err(ScramError::Malformed("bad authzid"));
    }
    let header_len = flag.len() + authzid.len() + 2;
    Ok((&text[..header_len], bare))
}

/// RFC 5802's saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn decode_saslname(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad user name escape")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads client-final (`c=…,r=…,p=…`), checks the nonce, the channel binding and the proof, and
/// answers server-final (`v=…`). On success the user has authenticated.
pub fn server_final(first: &ScramFirst, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
    let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or(ScramError::Malformed("no proof"))?;
    let mut binding = None;
    let mut nonce = None;
    for attribute in without_proof.split(',') {
        match attribute.split_once('=') {
            Some(("c", value)) => binding = Some(value),
            Some(("r", value)) => nonce = Some(value),
            _ => {}
        }
    }
    let expected_binding = BASE64.encode(first.gs2_header.as_bytes());
    if binding != Some(expected_binding.as_str()) {
        return Err(ScramError::ChannelBinding);
    }
    if !nonce.is_some_and(|nonce| nonce_echoed(first, nonce)) {
        return Err(ScramError::Nonce);
    }
    let proof = BASE64
        .decode(proof)
        .map_err(|_| ScramError::Malformed("proof is not base64"))?;
    let auth_message = format!(
        "{},{},{}",
        first.client_first_bare, first.server_first, without_proof
    );
    let mechanism = first.mechanism;
    let credential = &first.credential;
    let signature = mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
    if proof.len() != signature.len() {
        return Err(ScramError::Credentials);
    }
    let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
    if !constant_time_eq(&mechanism.hash(&client_key), &credential.stored_key) {
        return Err(ScramError::Credentials);
    }
    let server_signature = mechanism.hmac(&credential.server_key, auth_message.as_bytes());
    Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
}

/// Whether client-final's nonce is the combined nonce server-first sent. RFC 5802 wants it
/// exactly; librdkafka before 2.6.1 (confluentinc/librdkafka#4895; kcat 1.7's 2.0.2 among them)
/// sends its own nonce once more in front (`c-nonce` + the whole combined nonce). Kafka 3.8.1-3.9
/// accepted that (`endsWith`), Kafka 4 refuses it. Weir accepts exactly that one extra form, not
/// any prefix: the proof signs the text the client sent, so it still decides, and the nonce
/// still binds the answer to this exchange.
fn nonce_echoed(first: &ScramFirst, nonce: &str) -> bool {
    nonce == first.nonce
        || nonce
            .strip_prefix(first.client_nonce.as_str())
            .is_some_and(|rest| rest == first.nonce)
}

/// The client's side of SCRAM (for `weir user`'s own authentication and for tests): the
/// client-final message answering `server_first`, and the server-final the server must send.
pub fn client_final(
    mechanism: Mechanism,
    password: &str,
    client_first_bare: &str,
    server_first: &[u8],
) -> Result<(String, Vec<u8>), ScramError> {
    let text = std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (mut nonce, mut salt, mut iterations) = (None, None, None);
    for attribute in text.split(',') {
        match attribute.split_once('=') {
            Some(("r", value)) => nonce = Some(value),
            Some(("s", value)) => salt = BASE64.decode(value).ok(),
            Some(("i", value)) => iterations = value.parse::<u32>().ok(),
            _ => {}
        }
    }
    let client_nonce = client_first_bare
        .rsplit_once("r=")
        .map(|(_, nonce)| nonce)
        .ok_or(ScramError::Malformed("no client nonce"))?;
    let nonce = nonce
        .filter(|n| n.starts_with(client_nonce) && n.len() > client_nonce.len())
        .ok_or(ScramError::Nonce)?;
    let salt = salt.ok_or(ScramError::Malformed("no salt"))?;
    let iterations = iterations
        .filter(|i| (ITERATIONS_MIN..=ITERATIONS_MAX).contains(i))
        .ok_or(ScramError::Malformed("iterations out of bounds"))?;
    let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
    let client_key = mechanism.hmac(&salted, b"Client Key");
    let stored_key = mechanism.hash(&client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{text},{without_proof}");
    let signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let server_key = mechanism.hmac(&salted, b"Server Key");
    let server_signature = mechanism.hmac(&server_key, auth_message.as_bytes());
    Ok((
        format!("{without_proof},p={}", BASE64.encode(proof)),
        format!("v={}", BASE64.encode(server_signature)).into_bytes(),
    ))
}

/// A client nonce: random, printable, without commas.
pub fn client_nonce() -> String {
    random_nonce()
}

/// A nonce: random, letters, digits, `-` and `_` only, like Kafka's alphanumeric ones (no `=`
/// or `+`, which some clients' attribute parsers trip over).
fn random_nonce() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(NONCE_BYTES))
}

/// PLAIN's message (RFC 4616): `authzid NUL authcid NUL password`. `(authcid, password)`; an
/// authzid other than empty or the user itself is refused (no impersonation).
pub fn parse_plain(message: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut parts = text.split('\0');
    let (authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || user.is_empty() || (!authzid.is_empty() && authzid != user) {
        return None;
    }
    Some((user, password))
}

mod base64_bytes {
    use super::{Engine, BASE64};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3's example exchange (SCRAM-SHA-256, user "user", password "pencil").
    #[test]
    fn rfc7677_example() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = Mechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        let credential = Credential::from_salted(Mechanism::Sha256, &salted, &salt, 4096);
        let mut first = server_first(
            Mechanism::Sha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |user| (user == "user").then(|| credential.clone()),
        )
        .unwrap();
        // The RFC's server nonce, so that its client-final and server-final apply unchanged.
        first.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        first.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", first.nonce);
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let answer = server_final(&first, client_final.as_bytes()).unwrap();
        assert_eq!(answer, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert!(credential.matches_password(Mechanism::Sha256, "pencil"));
        assert!(!credential.matches_password(Mechanism::Sha256, "pencil2"));
        let wrong = client_final.replace("p=dH", "p=dX");
        assert_eq!(
            server_final(&first, wrong.as_bytes()),
            Err(ScramError::Credentials)
        );
    }

    #[test]
    fn client_first_checks() {
        let none = |_: &str| None;
        let check = |message: &str, expected: ScramError| {
            let found = server_first(Mechanism::Sha512, message.as_bytes(), |_| {
                Some(Credential::from_salted(Mechanism::Sha512, b"x", b"s", 4096))
            });
            assert_eq!(found.err(), Some(expected), "{message}");
        };
        check("p=tls-unique,,n=u,r=abc", ScramError::ChannelBinding);
        check("n,,n=u", ScramError::Malformed("no nonce"));
        check("n,,r=abc", ScramError::Malformed("no user name"));
        check(
            "n,,n=a=2x,r=abc",
            ScramError::Malformed("bad user name escape"),
        );
        check("x", ScramError::Malformed("no GS2 header"));
        assert_eq!(
            server_first(Mechanism::Sha512, b"n,,n=u,r=abc", none).err(),
            Some(ScramError::Credentials)
        );
        assert_eq!(decode_saslname("a=2Cb=3D").unwrap(), "a,b=");
    }

    #[test]
    fn client_and_server_agree() {
        for mechanism in Mechanism::ALL {
            let credential = Credential::from_password(mechanism, "s3cret", 4096);
            let bare = format!("n=al=2Cice,r={}", client_nonce());
            let first = server_first(mechanism, format!("n,,{bare}").as_bytes(), |user| {
                (user == "al,ice").then(|| credential.clone())
            })
            .unwrap();
            let (message, expected) =
                client_final(mechanism, "s3cret", &bare, first.server_first()).unwrap();
            assert_eq!(server_final(&first, message.as_bytes()).unwrap(), expected);
            let (wrong, _) = client_final(mechanism, "other", &bare, first.server_first()).unwrap();
            assert_eq!(
                server_final(&first, wrong.as_bytes()),
                Err(ScramError::Credentials)
            );
        }
    }

    /// librdkafka before 2.6.1 repeats its nonce in front of the combined one; nothing else passes.
    #[test]
    fn nonce_echo_forms() {
        let credential = Credential::from_password(Mechanism::Sha256, "pw", 4096);
        let first = server_first(Mechanism::Sha256, b"n,,n=u,r=cnonce", |_| {
            Some(credential.clone())
        })
        .unwrap();
        let combined = first.nonce.clone();
        assert!(nonce_echoed(&first, &combined));
        assert!(nonce_echoed(&first, &format!("cnonce{combined}")));
        assert!(!nonce_echoed(&first, &format!("x{combined}")));
        assert!(!nonce_echoed(&first, &format!("cnoncecnonce{combined}")));
        assert!(!nonce_echoed(&first, "cnonce"));
        assert!(!nonce_echoed(&first, &combined[..combined.len() - 1]));
    }

    #[test]
    fn plain_messages() {
        assert_eq!(parse_plain(b"\0alice\0secret"), Some(("alice", "secret")));
        assert_eq!(
            parse_plain(b"alice\0alice\0secret"),
            Some(("alice", "secret"))
        );
        assert_eq!(parse_plain(b"bob\0alice\0secret"), None);
        assert_eq!(parse_plain(b"\0alice"), None);
        assert_eq!(parse_plain(b"\0\0secret"), None);
    }
}
