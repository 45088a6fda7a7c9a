//! The bodies the gateway answers with: an instance's body streamed through, or a local
//! one (problem+json, the index). Request bodies on their way to instances are
//! [`hotel_upstream::ProxyBody`].

use bytes::Bytes;
use hotel_upstream::AnswerBody;
use http_body_util::Full;

/// What the gateway answers with: an instance's body streamed through, or a local body
/// (problem+json, the index).
pub type GatewayBody = http_body_util::Either<AnswerBody, Full<Bytes>>;

/// Wraps a local body.
pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    http_body_util::Either::Right(Full::new(bytes.into()))
}
