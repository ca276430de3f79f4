//! AMQP's two kinds of error, with RabbitMQ's reply codes: a channel error closes one channel
//! (`channel.close`), a connection error closes the connection (`connection.close`). Every domain
//! refusal the AMQP layer meets becomes one of these here or where it is met; no panic, no hang.

/// Channel errors (soft): the channel is closed, the connection lives on.
pub const NOT_FOUND: u16 = 404;
pub const ACCESS_REFUSED: u16 = 403;
pub const RESOURCE_LOCKED: u16 = 405;
pub const PRECONDITION_FAILED: u16 = 406;
/// Connection errors (hard).
pub const CONNECTION_FORCED: u16 = 320;
pub const FRAME_ERROR: u16 = 501;
pub const SYNTAX_ERROR: u16 = 502;
pub const COMMAND_INVALID: u16 = 503;
pub const CHANNEL_ERROR: u16 = 504;
pub const UNEXPECTED_FRAME: u16 = 505;
pub const NOT_ALLOWED: u16 = 530;
pub const NOT_IMPLEMENTED: u16 = 540;
pub const INTERNAL_ERROR: u16 = 541;
/// basic.return's code for a mandatory message no queue took.
pub const NO_ROUTE: u16 = 312;

/// Whether the error closes a channel or the whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Channel,
    Connection,
}

/// A refusal with its reply code, text and the method that caused it (class, method ids).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {text}")]
pub struct AmqpError {
    pub scope: Scope,
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    fn new(scope: Scope, code: u16, text: impl Into<String>) -> AmqpError {
        AmqpError {
            scope,
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// The same refusal as a connection error (e.g. 403 during the handshake).
    #[must_use]
    pub fn hard(mut self) -> AmqpError {
        self.scope = Scope::Connection;
        self
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    /// The method that caused it, for the close method's class-id and method-id.
    #[must_use]
    pub fn at(mut self, class_id: u16, method_id: u16) -> AmqpError {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// The reply text as AMQP carries it: RabbitMQ's `CODE_NAME - text`, at most 255 bytes.
    /// This error as the `connection.close` that reports it.
    pub fn connection_close(&self) -> amq_protocol::protocol::AMQPClass {
        use amq_protocol::protocol::connection;
        amq_protocol::protocol::AMQPClass::Connection(connection::AMQPMethod::Close(
            connection::Close {
                reply_code: self.code,
                reply_text: self.reply_text().into(),
                class_id: self.class_id,
                method_id: self.method_id,
            },
        ))
    }

    pub fn reply_text(&self) -> String {
        let name = match self.code {
            NOT_FOUND => "NOT_FOUND",
            ACCESS_REFUSED => "ACCESS_REFUSED",
            RESOURCE_LOCKED => "RESOURCE_LOCKED",
            PRECONDITION_FAILED => "PRECONDITION_FAILED",
            CONNECTION_FORCED => "CONNECTION_FORCED",
            FRAME_ERROR => "FRAME_ERROR",
            SYNTAX_ERROR => "SYNTAX_ERROR",
            COMMAND_INVALID => "COMMAND_INVALID",
            CHANNEL_ERROR => "CHANNEL_ERROR",
            UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            NOT_ALLOWED => "NOT_ALLOWED",
            NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            _ => "INTERNAL_ERROR",
        };
        truncate(format!("{name} - {}", self.text))
    }

    pub fn not_found(text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Channel, NOT_FOUND, text)
    }
    pub fn access_refused(text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Channel, ACCESS_REFUSED, text)
    }
    pub fn resource_locked(text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Channel, RESOURCE_LOCKED, text)
    }
    pub fn precondition(text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Channel, PRECONDITION_FAILED, text)
    }
    pub fn frame(text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Connection, FRAME_ERROR, text)
    }
    pub fn syntax(class_id: u16, method_id: u16, text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Connection, SYNTAX_ERROR, text).at(class_id, method_id)
    }
    pub fn command_invalid(text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Connection, COMMAND_INVALID, text)
    }
    pub fn channel_error(text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Connection, CHANNEL_ERROR, text)
    }
    pub fn unexpected_frame(text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Connection, UNEXPECTED_FRAME, text)
    }
    pub fn not_allowed(text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Connection, NOT_ALLOWED, text)
    }
    pub fn not_implemented(class_id: u16, method_id: u16, text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Connection, NOT_IMPLEMENTED, text).at(class_id, method_id)
    }
    pub fn internal(text: impl Into<String>) -> AmqpError {
        AmqpError::new(Scope::Connection, INTERNAL_ERROR, text)
    }
}

/// AMQP short strings hold at most 255 bytes; cut at a character boundary.
pub fn truncate(mut text: String) -> String {
    if text.len() > 255 {
        let mut end = 255;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
