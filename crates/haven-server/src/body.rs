//! Request bodies under a limit, refused with a 413 the client can read.
//!
//! A server that stops reading an oversized body and closes the connection makes the
//! kernel reset it while the client is still sending: the client sees "broken pipe" or
//! "connection reset", never the 413 (issue 13, item 9). So an oversized body is read to its
//! end and thrown away (up to [`OVERSIZED_BODY_DRAIN_BYTES_MAX`] and
//! [`OVERSIZED_BODY_DRAIN_TIMEOUT`]) before the 413 goes out, and the connection stays usable.
//! A client that sent `Expect: 100-continue` with a `Content-Length` over the limit gets the
//! 413 at once and never sends the body: the body is not touched, so no `100 Continue` is
//! sent.

use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header;
use http_body_util::BodyExt;

use crate::error::ApiError;

/// Most bytes of an oversized body read and thrown away so the client can read the 413: a
/// client that sends a few MiB by mistake gets a clear answer; anything larger is cut off
/// (its connection dropped) instead of costing the node the whole upload.
pub const OVERSIZED_BODY_DRAIN_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Longest time spent reading an oversized body before answering anyway: a slow or
/// stalled client must not hold the request forever.
pub const OVERSIZED_BODY_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of `request`, at most `limit` bytes; beyond it, `too_large` (a 413), after
/// the rest of the body was drained as the module docs say.
pub async fn read_limited(request: Request, limit: usize, too_large: impl Fn() -> ApiError) -> Result<Bytes, ApiError> {
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("100-continue"));
    let mut body = request.into_body();
    if declared.is_some_and(|declared| declared > limit as u64) {
        if !expects_continue {
            drain(body, 0).await;
        }
        return Err(too_large());
    }
    let mut buffer = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| ApiError::bad_request(format!("cannot read the request body: {error}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if buffer.len() + data.len() > limit {
            drain(body, (buffer.len() + data.len()) as u64).await;
            return Err(too_large());
        }
        buffer.extend_from_slice(&data);
    }
    Ok(Bytes::from(buffer))
}

/// Reads and discards the rest of `body`, `already` bytes having been read, within the
/// drain bounds.
async fn drain(mut body: Body, already: u64) {
    let mut read = already;
    let _ = tokio::time::timeout(OVERSIZED_BODY_DRAIN_TIMEOUT, async {
        while read <= OVERSIZED_BODY_DRAIN_BYTES_MAX {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |data| data.len() as u64),
                _ => return,
            }
        }
    })
    .await;
}
