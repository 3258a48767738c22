//! The watch stream: NDJSON lines in, [`WatchEvent`]s out, reconnecting by itself.
//!
//! ```text
//!   GET /v1/watch?after_revision=R ──bytes──▶ LineDecoder ──lines──▶ WatchEvent
//!          ▲                                                          │
//!          └──── connection broke or went silent: resume after the last revision seen
//! ```
//!
//! The server sends events in revision order, each once, plus a progress event every
//! second. The stream remembers the highest revision it has seen (events and progress) and,
//! when the connection breaks, ends, or stays silent for [`WATCH_IDLE_TIMEOUT`], opens a new
//! one with `after_revision` = that revision, on whichever endpoint answers. Events at or
//! below the revision a connection was opened after are dropped, so a faulty server cannot
//! make the caller see one twice.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::StreamExt;
use rand::rngs::StdRng;
use serde::Deserialize;

use crate::backoff::BackoffIter;
use crate::client::Client;
use crate::error::body_excerpt;
use crate::error::Error;
use crate::error::CODE_COMPACTED;
use crate::ndjson::LineDecoder;
use crate::ndjson::WATCH_LINE_BYTES_MAX;
use crate::transport::Answer;
use crate::transport::Body;
use crate::types::WatchEvent;

/// Longest silence on a watch connection before it is taken for dead. The server sends
/// progress every second, so ten silent seconds mean a stopped node or a dead link that
/// TCP has not noticed (it may take minutes to).
pub const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reconnects in a row that bring no line at all before the stream gives up. A node that
/// accepts watches and closes them at once (shutting down, overloaded) would otherwise make
/// the stream spin; ten tries span several back-off windows and usually another endpoint.
pub const WATCH_RECONNECTS_WITHOUT_DATA_MAX: u32 = 10;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A stream of watch events; see the module docs. Ends after yielding an error.
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<WatchEvent, Error>> + Send>>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchStream")
    }
}

impl WatchStream {
    pub(crate) fn new(client: Client, prefix: String, after_revision: u64, answer: Answer) -> Self {
        let sleeps = client.backoff_iter();
        let mut state = State {
            client,
            prefix,
            last_revision: after_revision,
            connection: None,
            decoder: LineDecoder::new(WATCH_LINE_BYTES_MAX),
            pending: VecDeque::new(),
            finished: false,
            reconnects_without_data: 0,
            sleeps,
            last_endpoint: answer.endpoint.clone(),
        };
        state.attach(answer, after_revision);
        WatchStream { inner: Box::pin(futures::stream::unfold(state, State::next)) }
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// A line the server sends instead of an event when it must end the stream, e.g.
/// `{"type":"error","error":"compacted","compact_revision":N}` when history the watcher
/// still needed was compacted under it.
#[derive(Deserialize)]
struct StreamError {
    #[serde(rename = "type")]
    kind: String,
    error: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    compact_revision: Option<u64>,
}

/// One line: an event, the server's reason to end the stream, or garbage.
fn parse_line(endpoint: &str, line: &[u8]) -> Result<WatchEvent, Error> {
    let event_error = match serde_json::from_slice::<WatchEvent>(line) {
        Ok(event) => return Ok(event),
        Err(error) => error,
    };
    match serde_json::from_slice::<StreamError>(line) {
        Ok(stream_error) if stream_error.kind == "error" => {
            Err(match (stream_error.error.as_str(), stream_error.compact_revision) {
                (CODE_COMPACTED, Some(compact_revision)) => Error::Compacted { compact_revision },
                // The token was revoked or expired while watching: an authorization error,
                // said as what happened to the watch (not "nothing was changed": a watch
                // changes nothing anyway).
                ("unauthorized", _) => Error::Api {
                    status: 401,
                    code: stream_error.error,
                    message: "the watch ended: its token was revoked or has expired".into(),
                },
                (_, _) => Error::Api {
                    status: 200,
                    code: stream_error.error,
                    message: stream_error.message.unwrap_or_else(|| "the server ended the watch".into()),
                },
            })
        }
        _ => Err(Error::InvalidResponse {
            endpoint: endpoint.to_string(),
            reason: format!("a watch line is not an event ({event_error}): {}", body_excerpt(line)),
        }),
    }
}

struct Connection {
    endpoint: String,
    body: ByteStream,
    /// The `after_revision` this connection was opened with: it sends nothing at or below.
    opened_after: u64,
}

struct State {
    client: Client,
    prefix: String,
    /// Highest revision seen: the resume point.
    last_revision: u64,
    connection: Option<Connection>,
    decoder: LineDecoder,
    /// Parsed but not yet yielded; an error here ends the stream once reached.
    pending: VecDeque<Result<WatchEvent, Error>>,
    finished: bool,
    reconnects_without_data: u32,
    /// Sleeps before reconnects; restarted whenever data arrives.
    sleeps: BackoffIter<StdRng>,
    /// Where the last connection went, for messages.
    last_endpoint: String,
}

impl State {
    fn attach(&mut self, answer: Answer, opened_after: u64) {
        self.decoder.reset();
        match answer.body {
            Body::Streaming(response) => {
                self.last_endpoint = answer.endpoint.clone();
                self.connection = Some(Connection {
                    endpoint: answer.endpoint,
                    body: Box::pin(response.bytes_stream()),
                    opened_after,
                });
            }
            // `execute` returns streaming bodies for streaming requests; a buffered one
            // here would be a bug, reported rather than panicked on.
            Body::Buffered(_) => self.fail(Error::InvalidResponse {
                endpoint: answer.endpoint,
                reason: "the watch answer was not a stream".into(),
            }),
        }
    }

    fn fail(&mut self, error: Error) {
        self.pending.push_back(Err(error));
        self.finished = true;
        self.connection = None;
    }

    async fn next(mut self) -> Option<(Result<WatchEvent, Error>, State)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some((item, self));
            }
            if self.finished {
                return None;
            }
            let Some(connection) = self.connection.as_mut() else {
                self.reconnect().await;
                continue;
            };
            match tokio::time::timeout(WATCH_IDLE_TIMEOUT, connection.body.next()).await {
                Ok(Some(Ok(chunk))) => self.take_chunk(&chunk),
                Ok(Some(Err(error))) => self.lose_connection(&format!("{error}")),
                Ok(None) => self.lose_connection("the server closed the stream"),
                Err(_elapsed) => self.lose_connection("no data within the idle timeout"),
            }
        }
    }

    fn take_chunk(&mut self, chunk: &[u8]) {
        let Some(connection) = &self.connection else { return };
        let endpoint = connection.endpoint.clone();
        let opened_after = connection.opened_after;
        let lines = match self.decoder.push(chunk) {
            Ok(lines) => lines,
            Err(too_long) => {
                return self.fail(Error::InvalidResponse {
                    endpoint,
                    reason: format!("a watch line is longer than {} bytes", too_long.limit),
                })
            }
        };
        if !lines.is_empty() {
            self.reconnects_without_data = 0;
            self.sleeps = self.client.backoff_iter();
        }
        for line in lines {
            match parse_line(&endpoint, &line) {
                Ok(event) => self.accept(event, opened_after),
                Err(error) => return self.fail(error),
            }
        }
    }

    /// Yields `event` unless it repeats one already seen; advances the resume point.
    fn accept(&mut self, event: WatchEvent, opened_after: u64) {
        let revision = event.revision();
        match event {
            WatchEvent::Progress { .. } => {
                // A lagging node may report progress behind what we saw elsewhere.
                if revision < self.last_revision {
                    return;
                }
            }
            WatchEvent::Put { .. } | WatchEvent::Delete { .. } => {
                if revision <= opened_after || revision < self.last_revision {
                    tracing::debug!(revision, last = self.last_revision, "dropping a repeated watch event");
                    return;
                }
            }
        }
        self.last_revision = self.last_revision.max(revision);
        self.pending.push_back(Ok(event));
    }

    fn lose_connection(&mut self, reason: &str) {
        if let Some(connection) = self.connection.take() {
            tracing::info!(
                endpoint = %connection.endpoint,
                reason,
                after_revision = self.last_revision,
                "watch connection lost; resuming"
            );
            if self.decoder.pending_bytes() > 0 {
                tracing::debug!(bytes = self.decoder.pending_bytes(), "dropping a partial watch line");
            }
            self.client.demote(&connection.endpoint);
        }
    }

    async fn reconnect(&mut self) {
        self.reconnects_without_data += 1;
        if self.reconnects_without_data > WATCH_RECONNECTS_WITHOUT_DATA_MAX {
            let endpoints = self.client.config().endpoints.clone();
            let endpoint = self.last_endpoint.clone();
            return self.fail(Error::Unavailable {
                tried: endpoints,
                last_error: Box::new(Error::Transport {
                    endpoint,
                    reason: format!(
                        "{WATCH_RECONNECTS_WITHOUT_DATA_MAX} watch connections in a row closed without sending anything"
                    ),
                }),
            });
        }
        tokio::time::sleep(self.sleeps.next().unwrap_or_default()).await;
        let after = self.last_revision;
        match self.client.open_watch(&self.prefix, after).await {
            Ok(answer) => self.attach(answer, after),
            Err(error) => self.fail(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_to_events_stream_errors_or_invalid_responses() {
        assert_eq!(
            parse_line("e", br#"{"type":"progress","revision":3}"#).unwrap(),
            WatchEvent::Progress { revision: 3 }
        );
        let compacted = parse_line("e", br#"{"type":"error","error":"compacted","compact_revision":90}"#);
        assert!(matches!(compacted, Err(Error::Compacted { compact_revision: 90 })), "{compacted:?}");
        let other = parse_line("e", br#"{"type":"error","error":"shutting_down","message":"bye"}"#);
        assert!(matches!(&other, Err(Error::Api { code, .. }) if code == "shutting_down"), "{other:?}");
        for garbage in [&b"nope"[..], br#"{"type":"error"}"#, br#"{"type":"put","key":"a"}"#, b"\xff\xfe"] {
            assert!(matches!(parse_line("e", garbage), Err(Error::InvalidResponse { .. })), "{garbage:?}");
        }
    }
}
