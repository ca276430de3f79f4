//! One AMQP connection on the shard that accepted it.

use std::rc::Rc;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::shard::listener::ConnectionError;
use crate::shard::Shard;

/// The protocol header of AMQP 0-9-1, which a client sends first and a server answers a wrong
/// one with.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Serves one connection until it closes.
pub async fn serve(_shard: Rc<Shard>, mut stream: TcpStream) -> Result<(), ConnectionError> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    if &header != PROTOCOL_HEADER {
        stream.write_all(PROTOCOL_HEADER).await?;
        return Err(format!("wrong protocol header {header:?}").into());
    }
    Err("AMQP methods are not served yet".into())
}
