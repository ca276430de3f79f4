//! The connection class up to `open-ok`: start / start-ok (PLAIN and AMQPLAIN against the user
//! store, `security::users`, which Kafka's SASL shares; guest/guest built in as RabbitMQ's default
//! user until the store has a user `guest`; the users of `weir.amqp.loopback.users` refused from
//! non-loopback addresses, as RabbitMQ's `loopback_users`), tune / tune-ok (frame-max, channel-max and heartbeat negotiated:
//! the lower non-zero value wins, and the peer may not exceed what the broker offered), and open
//! (vhost `/` only). The rest of the connection class (close, close-ok) is in `connection.rs`.

use std::rc::Rc;

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use futures_lite::io::BufReader;

use crate::security::Principal;

use super::connection::{read_frame, AmqpConnectionError, Conn, ReadHalf};
use super::error::AmqpError;
use super::frame::{self, Frame};

const CLASS_CONNECTION: u16 = 10;
/// RabbitMQ's default user, built in: it exists until the user store has a user of this name,
/// whose credentials then apply instead.
const GUEST: &str = "guest";

/// Runs the handshake; on success the connection is open with its tuned limits.
pub async fn handshake(
    conn: &Rc<Conn>,
    reader: &mut BufReader<ReadHalf>,
) -> Result<(), AmqpConnectionError> {
    let start = connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: LongString::from("PLAIN AMQPLAIN"),
        locales: LongString::from("en_US"),
    });
    conn.send_method(0, AMQPClass::Connection(start)).await?;
    let start_ok = match expect(conn, reader).await? {
        connection::AMQPMethod::StartOk(start_ok) => start_ok,
        other => return refuse(conn, unexpected(&other, "start-ok")).await,
    };
    match authenticate(conn, &start_ok) {
        Ok(principal) => conn.session.authenticate(principal),
        Err(error) => return refuse(conn, error).await,
    }
    conn.wants_blocked.set(announces_blocked(&start_ok));
    let tune = connection::AMQPMethod::Tune(connection::Tune {
        channel_max: frame::CHANNEL_MAX,
        frame_max: frame::FRAME_MAX,
        heartbeat: frame::HEARTBEAT_SECONDS,
    });
    conn.send_method(0, AMQPClass::Connection(tune)).await?;
    let tune_ok = match expect(conn, reader).await? {
        connection::AMQPMethod::TuneOk(tune_ok) => tune_ok,
        other => return refuse(conn, unexpected(&other, "tune-ok")).await,
    };
    if let Err(error) = apply_tune(conn, &tune_ok) {
        return refuse(conn, error).await;
    }
    let open = match expect(conn, reader).await? {
        connection::AMQPMethod::Open(open) => open,
        other => return refuse(conn, unexpected(&other, "open")).await,
    };
    if open.virtual_host.as_str() != "/" {
        let error =
            AmqpError::not_allowed(format!("vhost '{}' not found", open.virtual_host.as_str()))
                .at(CLASS_CONNECTION, 40);
        return refuse(conn, error).await;
    }
    let open_ok = connection::AMQPMethod::OpenOk(connection::OpenOk {});
    conn.send_method(0, AMQPClass::Connection(open_ok)).await
}

/// The next frame, which must be a connection-class method on channel 0.
async fn expect(
    conn: &Rc<Conn>,
    reader: &mut BufReader<ReadHalf>,
) -> Result<connection::AMQPMethod, AmqpConnectionError> {
    let frame = read_frame(conn, reader).await?;
    match frame {
        Some(Frame::Method(0, _, method)) => match *method {
            AMQPClass::Connection(method) => Ok(method),
            _ => {
                refuse(
                    conn,
                    AmqpError::command_invalid("expected a connection method"),
                )
                .await
            }
        },
        Some(_) => {
            refuse(
                conn,
                AmqpError::unexpected_frame("expected a connection method on channel 0"),
            )
            .await
        }
        None => Err(AmqpConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed during the handshake",
        ))),
    }
}

fn unexpected(method: &connection::AMQPMethod, wanted: &str) -> AmqpError {
    AmqpError::command_invalid(format!("expected connection.{wanted}, got {method:?}"))
}

/// Sends connection.close for a handshake failure and ends the connection (the peer's close-ok is
/// not awaited: the handshake never completed).
async fn refuse<T>(conn: &Rc<Conn>, error: AmqpError) -> Result<T, AmqpConnectionError> {
    let close = error.connection_close();
    let _ = conn.send_method(0, close).await;
    Err(AmqpConnectionError::Refused(error))
}

/// Whether the client's properties carry `capabilities` with `connection.blocked` true: only
/// such clients are sent connection.blocked / unblocked, as RabbitMQ does.
fn announces_blocked(start_ok: &connection::StartOk) -> bool {
    let capabilities = start_ok
        .client_properties
        .inner()
        .get(&ShortString::from("capabilities"));
    let Some(AMQPValue::FieldTable(capabilities)) = capabilities else {
        return false;
    };
    matches!(
        capabilities
            .inner()
            .get(&ShortString::from("connection.blocked")),
        Some(AMQPValue::Boolean(true))
    )
}

/// PLAIN (`\0user\0password`) or AMQPLAIN (a field table with LOGIN and PASSWORD).
fn authenticate(conn: &Conn, start_ok: &connection::StartOk) -> Result<Principal, AmqpError> {
    let response = start_ok.response.as_bytes();
    let (user, password) = match start_ok.mechanism.as_str() {
        "PLAIN" => {
            let mut parts = response.split(|byte| *byte == 0);
            let _authzid = parts.next();
            (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            )
        }
        "AMQPLAIN" => amqplain(response).unwrap_or_default(),
        other => {
            return Err(AmqpError::access_refused(format!(
                "unsupported authentication mechanism {other}"
            ))
            .at(CLASS_CONNECTION, 11)
            .hard())
        }
    };
    let refused = |message: String| {
        Err(AmqpError::access_refused(message)
            .at(CLASS_CONNECTION, 11)
            .hard())
    };
    let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(password))
    else {
        return refused(login_refused(start_ok));
    };
    if !password_matches(conn, user, password) {
        tracing::info!(%user, mechanism = start_ok.mechanism.as_str(), "AMQP login refused");
        return refused(login_refused(start_ok));
    }
    let security = &conn.shard.config.security;
    if !conn.loopback && security.amqp_loopback_users.iter().any(|u| u == user) {
        return refused(format!("User '{user}' can only connect via localhost"));
    }
    Ok(Principal::user(user))
}

/// RabbitMQ's words for a refused login (the reason stays in the broker's log).
fn login_refused(start_ok: &connection::StartOk) -> String {
    format!(
        "Login was refused using authentication mechanism {}. For details see the broker \
         logfile.",
        start_ok.mechanism.as_str()
    )
}

/// The store's verdict; the built-in guest while the store has no user of that name.
fn password_matches(conn: &Conn, user: &str, password: &str) -> bool {
    let metadata = conn.shard.metadata();
    if user == GUEST && !metadata.users.contains_key(GUEST) {
        return password == GUEST;
    }
    crate::security::users::verify_password(&metadata.users, user, password)
}

/// AMQPLAIN's response is a field table without its length prefix: entries of
/// `name (short string) | type 'S' | long string`.
fn amqplain(response: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut login = None;
    let mut password = None;
    let mut at = 0;
    while at < response.len() {
        let name_len = usize::from(*response.get(at)?);
        let name = response.get(at + 1..at + 1 + name_len)?;
        at += 1 + name_len;
        if *response.get(at)? != b'S' {
            return None;
        }
        let len_bytes = response.get(at + 1..at + 5)?;
        let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let value = response.get(at + 5..at + 5 + len as usize)?;
        at += 5 + len as usize;
        match name {
            b"LOGIN" => login = Some(value),
            b"PASSWORD" => password = Some(value),
            _ => {}
        }
    }
    Some((login?, password?))
}

/// Takes the peer's tune-ok: it may lower the broker's limits, not raise them.
fn apply_tune(conn: &Conn, tune_ok: &connection::TuneOk) -> Result<(), AmqpError> {
    let frame_max = match tune_ok.frame_max {
        0 => frame::FRAME_MAX,
        asked => asked,
    };
    if !(frame::FRAME_MIN_SIZE..=frame::FRAME_MAX).contains(&frame_max) {
        return Err(AmqpError::not_allowed(format!(
            "frame_max {frame_max} outside {}..={}",
            frame::FRAME_MIN_SIZE,
            frame::FRAME_MAX
        ))
        .at(CLASS_CONNECTION, 31));
    }
    let channel_max = match tune_ok.channel_max {
        0 => frame::CHANNEL_MAX,
        asked => asked.min(frame::CHANNEL_MAX),
    };
    conn.frame_max.set(frame_max);
    conn.channel_max.set(channel_max);
    conn.heartbeat.set(tune_ok.heartbeat);
    Ok(())
}

/// What connection.start tells clients about the broker, RabbitMQ's capabilities included.
fn server_properties() -> FieldTable {
    let mut capabilities = FieldTable::default();
    for name in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        capabilities.insert(ShortString::from(name), AMQPValue::Boolean(true));
    }
    let mut properties = FieldTable::default();
    let text = |value: &str| AMQPValue::LongString(LongString::from(value));
    properties.insert("product".into(), text("Weir"));
    properties.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
    properties.insert("platform".into(), text("Rust"));
    properties.insert(
        "information".into(),
        text("Weir: AMQP 0-9-1 queues on a log"),
    );
    properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    properties
}
