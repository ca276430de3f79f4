//! The metrics endpoint: a minimal HTTP/1.1 responder on shard 0 (`--metrics-listen`). One
//! request per connection: `GET /metrics` (a query string is ignored) gathers every shard's
//! snapshot and answers the text format; any other path is 404, another method 405, a request
//! that is not HTTP 400, a head over `HEAD_BYTES_MAX` 431; then the connection closes.
//!
//! A scraper cannot hurt the shard or other clients: each connection is its own task, its head
//! must arrive within `READ_TIMEOUT` and its answer be taken within `WRITE_TIMEOUT`, at most
//! `CONNECTIONS_MAX` are served at once (more are closed at once), and nothing here panics on
//! what a client sends.

use std::cell::Cell;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::Protocols;
use crate::shard::listener::accept_or_shutdown;
use crate::shard::Shard;

/// The request line and headers may take this many bytes.
const HEAD_BYTES_MAX: usize = 8 << 10;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrape connections served at once.
const CONNECTIONS_MAX: usize = 16;
/// After an error answer, what the client still sends is read (and dropped) for this long at
/// most, so that closing does not reset the connection before it read the answer.
const LINGER: Duration = Duration::from_millis(200);

/// Binds the metrics listener on shard 0 when it is enabled and starts its accept loop, which
/// ends at shutdown; every shard starts its stall watcher (`stall.rs`). The composition root runs it as a start hook on every shard.
pub fn start(shard: &Rc<Shard>, protocols: &'static Protocols) -> anyhow::Result<()> {
    let Some(address) = shard.config.metrics_listen else {
        return Ok(());
    };
    super::stall::watch(shard);
    if shard.id.index() != 0 {
        return Ok(());
    }
    let listener = TcpListener::bind(address)
        .map_err(std::io::Error::from)
        .with_context(|| format!("binding metrics {address}"))?;
    glommio::spawn_local(accept_loop(shard.clone(), listener, protocols)).detach();
    Ok(())
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, protocols: &'static Protocols) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        match accept_or_shutdown(&shard, &listener).await {
            None => return,
            Some(Ok(stream)) => {
                if open.get() >= CONNECTIONS_MAX {
                    tracing::debug!("metrics: too many scrapes at once; closing one");
                    continue;
                }
                open.set(open.get() + 1);
                let (shard, open) = (shard.clone(), open.clone());
                glommio::spawn_local(async move {
                    serve(&shard, stream, protocols).await;
                    open.set(open.get() - 1);
                })
                .detach();
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "metrics: accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // HTTP's own names for the answers.
enum Request {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
    TooLarge,
}

async fn serve(shard: &Rc<Shard>, mut stream: TcpStream, protocols: &'static Protocols) {
    let head = futures_lite::future::or(read_head(&mut stream), async {
        glommio::timer::sleep(READ_TIMEOUT).await;
        None
    })
    .await;
    // The client went away, or sent too little in time: close without an answer.
    let Some(request) = head else {
        return;
    };
    let (status, content_type, body) = match request {
        Request::Metrics => {
            let snapshots = super::gather::everywhere(shard, protocols).await;
            let objects_max = shard.config.metrics_objects_max;
            let body = super::render::text(snapshots, objects_max, protocols);
            ("200 OK", super::render::CONTENT_TYPE, body)
        }
        Request::NotFound => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".into(),
        ),
        Request::MethodNotAllowed => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
        Request::BadRequest => ("400 Bad Request", "text/plain", "bad request\n".into()),
        Request::TooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large\n".into(),
        ),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let written = futures_lite::future::or(
        async { stream.write_all(answer.as_bytes()).await.is_ok() },
        async {
            glommio::timer::sleep(WRITE_TIMEOUT).await;
            false
        },
    )
    .await;
    if !written {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write).await;
    if request != Request::Metrics {
        // Unread bytes at close would reset the connection, possibly before the client read
        // the answer: take (and drop) what it still sends, briefly.
        let _ = futures_lite::future::or(drain(&mut stream), async {
            glommio::timer::sleep(LINGER).await;
        })
        .await;
    }
}

/// Reads up to the end of the request head; `None` if the client closed first.
async fn read_head(stream: &mut TcpStream) -> Option<Request> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        let searched_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = find(&head[searched_from..], b"\r\n\r\n") {
            return Some(parse(&head[..searched_from + end]));
        }
        if head.len() > HEAD_BYTES_MAX {
            return Some(Request::TooLarge);
        }
    }
}

async fn drain(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let mut left = 1usize << 20;
    while left > 0 {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(read) => left = left.saturating_sub(read),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The request line of `head` (headers are not needed): `METHOD TARGET HTTP/1.x`.
fn parse(head: &[u8]) -> Request {
    let line_end = find(head, b"\r\n").unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::BadRequest;
    }
    if method != "GET" {
        return Request::MethodNotAllowed;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path == "/metrics" {
        Request::Metrics
    } else {
        Request::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x"), Request::Metrics);
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0"), Request::Metrics);
        assert_eq!(parse(b"GET / HTTP/1.1"), Request::NotFound);
        assert_eq!(parse(b"POST /metrics HTTP/1.1"), Request::MethodNotAllowed);
        assert_eq!(parse(b"GET /metrics"), Request::BadRequest);
        assert_eq!(parse(b"\xff\xfe garbage"), Request::BadRequest);
        assert_eq!(parse(b""), Request::BadRequest);
        assert_eq!(parse(b"GET  /metrics HTTP/1.1"), Request::BadRequest);
    }
}
