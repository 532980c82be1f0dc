//! A small HTTP/1.1 server on 127.0.0.1 for the backend's integration tests: each connection
//! carries one request, answered by a scripted [`Reply`]. It counts requests and records writes
//! that failed because the client went away.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Most connections one test server accepts before it stops by itself.
const MAX_CONNECTIONS: usize = 500;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete JSON response.
    Json {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// A chunked `text/event-stream` response: the first payload at once, each later one
    /// `delay` after the previous; with `cut`, the connection is closed without the final
    /// chunk.
    Sse {
        payloads: Vec<String>,
        delay: Duration,
        cut: bool,
    },
    /// Read the request, then send nothing for this long.
    StallBeforeHeaders(Duration),
    /// Send the SSE headers, then nothing for this long.
    StallAfterHeaders(Duration),
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Self {
        Reply::Json {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    pub fn sse(payloads: Vec<String>) -> Self {
        Reply::Sse {
            payloads,
            delay: Duration::ZERO,
            cut: false,
        }
    }
}

type Handler = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

/// A running test server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    write_failures: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Starts a server whose `handler` gets each request and its number (0-based).
    pub async fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let write_failures = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let task = {
            let seen = seen.clone();
            let write_failures = write_failures.clone();
            tokio::spawn(async move {
                for _ in 0..MAX_CONNECTIONS {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    let seen = seen.clone();
                    let write_failures = write_failures.clone();
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        serve(sock, handler, seen, write_failures).await;
                    });
                }
            })
        };
        TestServer {
            addr,
            seen,
            write_failures,
            task,
        }
    }

    /// The base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn requests(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    pub fn write_failures(&self) -> usize {
        self.write_failures.load(Ordering::SeqCst)
    }

    /// Waits until a write to a client failed (the client closed the connection), polling
    /// every 10 ms for at most `limit`.
    pub async fn wait_for_write_failure(&self, limit: Duration) -> bool {
        let polls = (limit.as_millis() / 10).max(1);
        for _ in 0..polls {
            if self.write_failures() > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.write_failures() > 0
    }
}

async fn serve(
    mut sock: TcpStream,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
    write_failures: Arc<AtomicUsize>,
) {
    let Some(request) = read_request(&mut sock).await else {
        return;
    };
    let number = {
        let mut seen = seen.lock().expect("lock");
        seen.push(request.clone());
        seen.len() - 1
    };
    let reply = handler(&request, number);
    let ok = match reply {
        Reply::Json {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Status\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            head.push_str(&body);
            sock.write_all(head.as_bytes()).await.is_ok()
        }
        Reply::Sse {
            payloads,
            delay,
            cut,
        } => {
            let mut ok = sock.write_all(SSE_HEAD.as_bytes()).await.is_ok();
            for (i, payload) in payloads.into_iter().enumerate() {
                if !ok {
                    break;
                }
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let frame = format!("{:x}\r\n{payload}\r\n", payload.len());
                ok = sock.write_all(frame.as_bytes()).await.is_ok() && sock.flush().await.is_ok();
            }
            if ok && !cut {
                ok = sock.write_all(b"0\r\n\r\n").await.is_ok();
            }
            ok
        }
        Reply::StallBeforeHeaders(d) => {
            tokio::time::sleep(d).await;
            true
        }
        Reply::StallAfterHeaders(d) => {
            let ok = sock.write_all(SSE_HEAD.as_bytes()).await.is_ok();
            tokio::time::sleep(d).await;
            ok
        }
    };
    if !ok {
        write_failures.fetch_add(1, Ordering::SeqCst);
    }
    let _ = sock.shutdown().await;
}

const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
    transfer-encoding: chunked\r\nconnection: close\r\n\r\n";

async fn read_request(sock: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut tmp))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut tmp))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
    Some(Seen {
        path,
        headers,
        body,
    })
}

/// `data: {chat chunk}\n\n` for one choice.
pub fn chat_chunk(index: u32, content: &str, finish: Option<&str>) -> String {
    let chunk = serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{
            "index": index,
            "delta": {"content": content},
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": null,
    });
    format!("data: {chunk}\n\n")
}

/// `data: {usage-only chunk}\n\n`.
pub fn usage_chunk(prompt: u64, completion: u64) -> String {
    let chunk = serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    });
    format!("data: {chunk}\n\n")
}

pub const DONE: &str = "data: [DONE]\n\n";

/// A complete one-choice chat stream of `text`.
pub fn chat_stream(text: &str) -> Reply {
    Reply::sse(vec![
        chat_chunk(0, text, None),
        chat_chunk(0, "", Some("stop")),
        usage_chunk(10, 1),
        DONE.to_string(),
    ])
}
