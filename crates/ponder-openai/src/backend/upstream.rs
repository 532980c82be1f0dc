//! One upstream HTTP exchange: sending a request, mapping HTTP failures to [`BackendError`], and
//! reading a streamed response with per-read timeouts.
//!
//! What a failure means depends on whether an event was already handed to the consumer: before
//! that, it is an error of the attempt (the caller may retry it); after, the stream is not
//! retried, every unfinished choice ends with [`FinishReason::Error`] and the stream ends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::OwnedSemaphorePermit;

use ponder_core::{BackendError, FinishReason, StreamEvent};

use super::decode::{ChunkDecoder, DecodeError, Flow};
use super::replicas::Lease;
use super::retry::parse_retry_after;
use crate::sse::SseParser;
use crate::wire::parse_error_body;

/// Largest SSE event, or error body, Ponder reads.
const MAX_EVENT_BYTES: usize = 64 << 20;
/// Most bytes of an error body read for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// The overall deadline of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub at: Instant,
    /// The configured length, for the error message.
    pub total: Duration,
}

impl Deadline {
    pub(crate) fn after(total: Duration) -> Self {
        Deadline {
            at: Instant::now() + total,
            total,
        }
    }

    pub(crate) fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub(crate) fn tokio(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.at)
    }
}

/// The wait allowed for one read: the per-read timeout, or less when the deadline is closer.
/// The flag says the deadline is the binding limit.
fn read_limit(timeout: Duration, deadline: Option<Deadline>) -> (Duration, bool) {
    match deadline {
        Some(d) if d.left() < timeout => (d.left(), true),
        _ => (timeout, false),
    }
}

/// The API key: sent as a sensitive header, never printed.
#[derive(Clone)]
pub(crate) struct ApiKey {
    header: HeaderValue,
    secret: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl ApiKey {
    /// `None` when the key cannot be a header value (the key itself is not reported).
    pub(crate) fn new(secret: String) -> Option<Self> {
        let mut header = HeaderValue::from_str(&format!("Bearer {secret}")).ok()?;
        header.set_sensitive(true);
        Some(ApiKey { header, secret })
    }

    /// Removes the key from text that came back from a server.
    pub(crate) fn scrub(&self, text: String) -> String {
        if self.secret.len() >= 4 && text.contains(&self.secret) {
            text.replace(&self.secret, "<redacted>")
        } else {
            text
        }
    }
}

/// What every request needs from the backend.
#[derive(Debug)]
pub(crate) struct Sender {
    pub client: reqwest::Client,
    pub api_key: Option<ApiKey>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Sender {
    /// POSTs `body` to `url` and waits for the response headers; a non-2xx status becomes
    /// [`BackendError::Status`] with the server's message.
    pub(crate) async fn post(
        &self,
        url: &str,
        endpoint: &Arc<str>,
        body: Bytes,
        sse: bool,
        deadline: Option<Deadline>,
    ) -> Result<reqwest::Response, BackendError> {
        let mut req = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if sse {
            req = req.header(ACCEPT, "text/event-stream");
        }
        if let Some(key) = &self.api_key {
            req = req.header(AUTHORIZATION, key.header.clone());
        }
        let (limit, by_deadline) = read_limit(self.request_timeout, deadline);
        let resp = match tokio::time::timeout(limit, req.send()).await {
            Err(_) => return Err(self.timeout_error(endpoint, by_deadline, deadline)),
            Ok(Err(e)) => return Err(self.reqwest_error(endpoint, e)),
            Ok(Ok(resp)) => resp,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.status_error(endpoint, resp, deadline).await)
    }

    fn timeout_error(
        &self,
        endpoint: &Arc<str>,
        by_deadline: bool,
        deadline: Option<Deadline>,
    ) -> BackendError {
        match deadline {
            Some(d) if by_deadline => BackendError::Deadline(d.total),
            _ => BackendError::Timeout {
                endpoint: endpoint.to_string(),
                after: self.request_timeout,
            },
        }
    }

    fn reqwest_error(&self, endpoint: &Arc<str>, e: reqwest::Error) -> BackendError {
        let e = e.without_url();
        if e.is_timeout() {
            return BackendError::Timeout {
                endpoint: endpoint.to_string(),
                after: self.connect_timeout,
            };
        }
        BackendError::Connect {
            endpoint: endpoint.to_string(),
            message: self.scrub(error_chain(&e)),
        }
    }

    fn scrub(&self, text: String) -> String {
        match &self.api_key {
            Some(k) => k.scrub(text),
            None => text,
        }
    }

    async fn status_error(
        &self,
        endpoint: &Arc<str>,
        resp: reqwest::Response,
        deadline: Option<Deadline>,
    ) -> BackendError {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let (limit, _) = read_limit(self.request_timeout, deadline);
        let body = read_body(resp, MAX_ERROR_BODY_BYTES, limit).await;
        let message = match parse_error_body(&body) {
            Some(e) => match e.param.filter(|p| !p.is_empty()) {
                Some(param) => format!("{} (param `{param}`)", e.message),
                None => e.message,
            },
            None => {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                if text.is_empty() {
                    status
                        .canonical_reason()
                        .unwrap_or("no message")
                        .to_string()
                } else {
                    text.chars().take(500).collect()
                }
            }
        };
        BackendError::Status {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            message: self.scrub(message),
            retry_after,
        }
    }

    /// Reads a whole (non-streamed) response body within the per-read timeout and deadline.
    pub(crate) async fn read_all(
        &self,
        endpoint: &Arc<str>,
        resp: reqwest::Response,
        deadline: Option<Deadline>,
    ) -> Result<Vec<u8>, BackendError> {
        let mut out = Vec::new();
        let mut body = resp.bytes_stream();
        loop {
            let (limit, by_deadline) = read_limit(self.request_timeout, deadline);
            match tokio::time::timeout(limit, body.next()).await {
                Err(_) => return Err(self.timeout_error(endpoint, by_deadline, deadline)),
                Ok(None) => return Ok(out),
                Ok(Some(Err(e))) => {
                    return Err(BackendError::Protocol {
                        endpoint: endpoint.to_string(),
                        message: format!(
                            "the connection broke mid-reply: {}",
                            self.scrub(error_chain(&e.without_url()))
                        ),
                    })
                }
                Ok(Some(Ok(chunk))) => {
                    if out.len() + chunk.len() > MAX_EVENT_BYTES {
                        return Err(BackendError::Protocol {
                            endpoint: endpoint.to_string(),
                            message: format!("the reply is larger than {MAX_EVENT_BYTES} bytes"),
                        });
                    }
                    out.extend_from_slice(&chunk);
                }
            }
        }
    }
}

/// Reads at most `max` bytes of a body within `limit` in all; on a failure, what was read so
/// far (it only serves to explain an error).
async fn read_body(resp: reqwest::Response, max: usize, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    let read = async {
        while let Some(Ok(chunk)) = body.next().await {
            let take = chunk.len().min(max - out.len());
            out.extend_from_slice(&chunk[..take]);
            if out.len() >= max {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(limit, read).await;
    out
}

/// An error and its causes, `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A streamed response being read. Dropping it drops the HTTP response, which closes the
/// connection (HTTP/1.1) or resets the stream (HTTP/2), so the server stops generating.
pub(crate) struct Upstream {
    body: Option<ByteStream>,
    sse: SseParser,
    decoder: ChunkDecoder,
    queue: VecDeque<StreamEvent>,
    endpoint: Arc<str>,
    read_timeout: Duration,
    deadline: Option<Deadline>,
    /// The server ignored `stream: true` and sent one JSON reply.
    whole: bool,
    /// An event was handed out: failures no longer fail the call.
    delivered: bool,
    ended: bool,
    lease: Option<Lease>,
    permit: Option<OwnedSemaphorePermit>,
    /// To scrub server messages.
    api_key: Option<ApiKey>,
}

impl Upstream {
    pub(crate) fn new(
        resp: reqwest::Response,
        decoder: ChunkDecoder,
        lease: Lease,
        sender: &Sender,
        deadline: Option<Deadline>,
    ) -> Self {
        let whole = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        Upstream {
            whole,
            body: Some(Box::pin(resp.bytes_stream())),
            sse: SseParser::new(),
            decoder,
            queue: VecDeque::new(),
            endpoint: lease.name().clone(),
            read_timeout: sender.request_timeout,
            deadline,
            delivered: false,
            ended: false,
            lease: Some(lease),
            permit: None,
            api_key: sender.api_key.clone(),
        }
    }

    /// Keeps a concurrency permit until the stream ends.
    pub(crate) fn hold(&mut self, permit: OwnedSemaphorePermit) {
        if !self.ended {
            self.permit = Some(permit);
        }
    }

    /// The next event. Before the first event, a failure is returned as `Err` (the attempt
    /// failed); after it, failures end the unfinished choices with `Error` and are not returned.
    pub(crate) async fn next(&mut self) -> Option<Result<StreamEvent, BackendError>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                self.delivered = true;
                return Some(Ok(ev));
            }
            if self.ended {
                return None;
            }
            if let Err(e) = self.step().await {
                if let Some(e) = self.fail(e) {
                    return Some(Err(e));
                }
            }
        }
    }

    /// Decodes the complete events buffered; when none is complete, reads more bytes.
    async fn step(&mut self) -> Result<(), BackendError> {
        if self.whole {
            let mut body = Vec::new();
            while let Some(bytes) = self.read().await? {
                body.extend_from_slice(&bytes);
                if body.len() > MAX_EVENT_BYTES {
                    return Err(self.too_large());
                }
            }
            self.decoder
                .feed_whole(&body, &mut self.queue)
                .map_err(|e| decode_error(&self.endpoint, self.api_key.as_ref(), e))?;
            self.end();
            return Ok(());
        }
        let mut flow = Flow::Continue;
        while let Some(ev) = self.sse.next_event() {
            flow = self
                .decoder
                .feed(ev, &mut self.queue)
                .map_err(|e| decode_error(&self.endpoint, self.api_key.as_ref(), e))?;
            if flow != Flow::Continue || !self.queue.is_empty() {
                break;
            }
        }
        if flow != Flow::Continue {
            // `[DONE]` with choices still open, or every choice stopped client-side.
            self.decoder
                .finish_unfinished(FinishReason::Error, &mut self.queue);
            self.end();
            return Ok(());
        }
        if !self.queue.is_empty() {
            return Ok(());
        }
        match self.read().await? {
            Some(bytes) => {
                self.sse.feed(&bytes);
                if self.sse.buffered() > MAX_EVENT_BYTES {
                    return Err(self.too_large());
                }
            }
            None if !self.delivered => {
                return Err(BackendError::Protocol {
                    endpoint: self.endpoint.to_string(),
                    message: "the stream ended before any event".into(),
                })
            }
            None => {
                // Cut without `[DONE]`: choices without their end failed.
                self.decoder
                    .finish_unfinished(FinishReason::Error, &mut self.queue);
                self.end();
            }
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<Option<Bytes>, BackendError> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        let (limit, by_deadline) = read_limit(self.read_timeout, self.deadline);
        match tokio::time::timeout(limit, body.next()).await {
            Err(_) => Err(match self.deadline {
                Some(d) if by_deadline => BackendError::Deadline(d.total),
                _ => BackendError::Timeout {
                    endpoint: self.endpoint.to_string(),
                    after: self.read_timeout,
                },
            }),
            Ok(None) => Ok(None),
            Ok(Some(Ok(bytes))) => Ok(Some(bytes)),
            Ok(Some(Err(e))) => Err(BackendError::Protocol {
                endpoint: self.endpoint.to_string(),
                message: format!(
                    "the connection broke mid-reply: {}",
                    error_chain(&e.without_url())
                ),
            }),
        }
    }

    fn too_large(&self) -> BackendError {
        BackendError::Protocol {
            endpoint: self.endpoint.to_string(),
            message: format!("an event is larger than {MAX_EVENT_BYTES} bytes"),
        }
    }

    /// Handles a failure: returned when nothing was delivered yet, else turned into `Error`
    /// ends of the unfinished choices.
    fn fail(&mut self, e: BackendError) -> Option<BackendError> {
        if !self.delivered {
            self.queue.clear();
            self.end();
            return Some(e);
        }
        if e.is_retryable() {
            if let Some(lease) = &self.lease {
                lease.record_failure();
            }
        }
        self.decoder
            .finish_unfinished(FinishReason::Error, &mut self.queue);
        self.end();
        None
    }

    /// Drops the connection and releases the endpoint and the concurrency permit.
    fn end(&mut self) {
        self.ended = true;
        self.body = None;
        self.lease = None;
        self.permit = None;
    }
}

fn decode_error(endpoint: &Arc<str>, key: Option<&ApiKey>, e: DecodeError) -> BackendError {
    let scrub = |text: String| match key {
        Some(k) => k.scrub(text),
        None => text,
    };
    match e {
        DecodeError::Malformed(message) => BackendError::Protocol {
            endpoint: endpoint.to_string(),
            message: scrub(message),
        },
        DecodeError::Upstream { status, message } => BackendError::Status {
            endpoint: endpoint.to_string(),
            status,
            message: scrub(message),
            retry_after: None,
        },
    }
}
