//! SaslHandshake (v0-v1) and SaslAuthenticate (v0-v2): a connection's SASL exchange
//! (`security::sasl`), as Kafka's `SaslServerAuthenticator` runs it.
//!
//! Both take effect in the dispatch phase (see dispatch.rs): the reader has the outcome before
//! it reads the next request, so a request pipelined behind a successful SaslAuthenticate
//! already acts for the user, and nothing behind a failed one is read at all.
//!
//! ```text
//! state            SaslHandshake(m)                 SaslAuthenticate(bytes)
//! fresh            m offered: NONE; else            ILLEGAL_SASL_STATE, close
//!                  UNSUPPORTED_SASL_MECHANISM, close
//! mechanism chosen ILLEGAL_SASL_STATE, close        challenge: NONE; success: NONE, authenticated;
//!                                                   failure: SASL_AUTHENTICATION_FAILED after
//!                                                   connection.failed.authentication.delay.ms, close
//! authenticated    ILLEGAL_SASL_STATE, close (no re-authentication, KIP-368)
//! ```
//! On a listener without SASL both answer ILLEGAL_SASL_STATE (as Kafka's request handler does).
//!
//! After SaslHandshake v0 the client sends the exchange's tokens as bare size-prefixed frames
//! (no request header) and gets bare tokens back; a failure closes the connection without an
//! answer, after the same delay (Kafka's `SaslServerAuthenticator` for pre-1.0 clients).

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::codec::{decode_body, encode_response, CodecError, Request, Response};
use super::dispatch::{Peer, Pending};
use super::error_codes as code;
use crate::security::sasl::{Step, MECHANISMS};
use crate::shard::Shard;

/// An answer ready now, after `delay` (a failed authentication's).
fn answer_after(bytes: Bytes, delay: Option<Duration>) -> Pending {
    Box::pin(async move {
        if let Some(delay) = delay {
            // A timer, not a blocked thread: the shard serves everyone else meanwhile.
            glommio::timer::sleep(delay).await;
        }
        Ok(Some(Response::single(bytes)))
    })
}

pub fn handshake(request: &Request, peer: &Peer<'_>) -> Result<Pending, CodecError> {
    let body: SaslHandshakeRequest = decode_body(request)?;
    let session = peer.session;
    let mut response = SaslHandshakeResponse::default();
    response.mechanisms = MECHANISMS
        .iter()
        .map(|m| StrBytes::from_static_str(m))
        .collect();
    response.error_code = if !peer.sasl {
        code::ILLEGAL_SASL_STATE
    } else if session.mechanism_chosen() || session.is_authenticated() {
        session.fail();
        code::ILLEGAL_SASL_STATE
    } else if session.start_exchange(body.mechanism.as_str()) {
        session.set_unframed(request.version == 0);
        code::NONE
    } else {
        tracing::info!(mechanism = %body.mechanism.as_str(), "SASL mechanism not offered");
        session.fail();
        code::UNSUPPORTED_SASL_MECHANISM
    };
    let bytes = encode_response(
        request.key,
        request.version,
        request.correlation_id,
        &response,
    )?;
    Ok(answer_after(bytes, None))
}

pub fn authenticate(
    shard: &Rc<Shard>,
    request: &Request,
    peer: &Peer<'_>,
) -> Result<Pending, CodecError> {
    let body: SaslAuthenticateRequest = decode_body(request)?;
    let session = peer.session;
    let mut response = SaslAuthenticateResponse::default();
    let mut delay = None;
    let step = if peer.sasl && !session.is_authenticated() {
        session.step_exchange(&body.auth_bytes, &shard.metadata().users)
    } else {
        None
    };
    match step {
        None => {
            if peer.sasl {
                session.fail();
            }
            response.error_code = code::ILLEGAL_SASL_STATE;
            response.error_message = Some(StrBytes::from_static_str(
                "Unexpected SaslAuthenticate: no SASL exchange is under way",
            ));
        }
        Some(Step::Challenge(bytes)) => response.auth_bytes = bytes.into(),
        Some(Step::Success {
            user,
            response: bytes,
        }) => {
            tracing::debug!(%user, client = peer.client_host, "SASL authenticated");
            response.auth_bytes = bytes.into();
        }
        Some(Step::Failure(message)) => {
            tracing::info!(client = peer.client_host, %message, "SASL authentication failed");
            response.error_code = code::SASL_AUTHENTICATION_FAILED;
            response.error_message = Some(StrBytes::from_string(message));
            delay = Some(Duration::from_millis(
                shard.config.security.failed_authentication_delay_ms,
            ));
        }
    }
    let bytes = encode_response(
        request.key,
        request.version,
        request.correlation_id,
        &response,
    )?;
    Ok(answer_after(bytes, delay))
}

/// One bare token of an exchange begun with SaslHandshake v0.
pub fn unframed_token(shard: &Rc<Shard>, token: &[u8], peer: &Peer<'_>) -> Pending {
    let session = peer.session;
    let users = &shard.metadata().users;
    let answer = match session.step_exchange(token, users) {
        Some(Step::Challenge(bytes)) => bytes,
        Some(Step::Success { user, response }) => {
            tracing::debug!(%user, client = peer.client_host, "SASL authenticated (unframed)");
            session.set_unframed(false);
            response
        }
        Some(Step::Failure(message)) => {
            tracing::info!(client = peer.client_host, %message, "SASL authentication failed");
            let delay = shard.config.security.failed_authentication_delay_ms;
            return Box::pin(async move {
                glommio::timer::sleep(Duration::from_millis(delay)).await;
                Ok(None)
            });
        }
        None => {
            session.fail();
            return Box::pin(async { Ok(None) });
        }
    };
    let mut bytes = bytes::BytesMut::with_capacity(4 + answer.len());
    bytes::BufMut::put_u32(&mut bytes, answer.len() as u32);
    bytes.extend_from_slice(&answer);
    answer_after(bytes.freeze(), None)
}
