//! A blocking raw Kafka connection for the suites that send requests no client library sends
//! (one request at a time, answers checked in order). Included with `#[path]` by the suites
//! that use it: `tests/tests/` subdirectories are not test targets of their own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// One connection speaking raw requests, answered in order.
pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
    client_id: &'static str,
}

impl Client {
    /// Connects to 127.0.0.1:`port`, naming itself `client_id` in every request.
    pub fn connect(port: u16, client_id: &'static str) -> Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Client {
            stream,
            correlation_id: 0,
            client_id,
        })
    }

    pub fn call<R: Request>(&mut self, version: i16, request: &R) -> Result<R::Response> {
        self.correlation_id += 1;
        let key = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("api key"))?;
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = self.correlation_id;
        header.client_id = Some(text(self.client_id));
        let mut out = BytesMut::new();
        out.put_i32(0);
        header.encode(&mut out, key.request_header_version(version))?;
        request.encode(&mut out, version)?;
        let size = (out.len() - 4) as i32;
        out[0..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&out)?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .context("the broker closed the connection instead of answering")?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body)?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
        ensure!(
            header.correlation_id == self.correlation_id,
            "answer out of order"
        );
        R::Response::decode(&mut body, version)
    }
}

pub fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}
