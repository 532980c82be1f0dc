//! A scripted [`Backend`] for tests of strategies and functions: replies come from a closure
//! over the request, and every request is recorded. No network.

use std::sync::{Arc, Mutex};

use ponder_core::{
    Backend, BackendError, BoxFuture, Capabilities, CompletionStream, FinishReason,
    GenerationRequest, Prompt, StreamEvent, Usage,
};

type Reply = dyn Fn(&GenerationRequest, usize) -> Result<String, BackendError> + Send + Sync;

/// A backend whose replies come from a closure `(request, call number) → text or error`.
pub struct ScriptedBackend {
    name: String,
    reply: Box<Reply>,
    requests: Mutex<Vec<GenerationRequest>>,
}

impl std::fmt::Debug for ScriptedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedBackend")
            .field("name", &self.name)
            .finish()
    }
}

impl ScriptedBackend {
    /// A backend answering with `reply`.
    pub fn new(
        name: impl Into<String>,
        reply: impl Fn(&GenerationRequest, usize) -> Result<String, BackendError>
            + Send
            + Sync
            + 'static,
    ) -> Arc<Self> {
        Arc::new(ScriptedBackend {
            name: name.into(),
            reply: Box::new(reply),
            requests: Mutex::new(Vec::new()),
        })
    }

    /// A backend that answers the replies in `script` in turn (the last one repeats).
    pub fn sequence(name: impl Into<String>, script: Vec<&str>) -> Arc<Self> {
        let script: Vec<String> = script.into_iter().map(str::to_string).collect();
        Self::new(name, move |_, i| {
            Ok(script.get(i).or(script.last()).cloned().unwrap_or_default())
        })
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<GenerationRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The text of every message of every request, joined (for "the variable reached the
    /// prompt" checks).
    pub fn prompts(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| match &r.prompt {
                Prompt::Chat { messages, .. } => messages
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                Prompt::Text(t) => t.clone(),
            })
            .collect()
    }
}

impl Backend for ScriptedBackend {
    fn name(&self) -> &str {
        &self.name
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_top_logprobs: None,
            multiple_samples: false,
            prefix_continuation: false,
            process_rewards: false,
            streaming: true,
            max_stop_strings: None,
        }
    }
    fn stream(
        &self,
        request: GenerationRequest,
    ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
        let n = match self.requests.lock() {
            Ok(mut r) => {
                r.push(request.clone());
                r.len() - 1
            }
            Err(_) => 0,
        };
        let reply = (self.reply)(&request, n);
        Box::pin(async move {
            let text = reply?;
            let words: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
            let count = words.len() as u64;
            let mut events: Vec<Result<StreamEvent, BackendError>> = words
                .into_iter()
                .map(|w| {
                    Ok(StreamEvent::Delta {
                        index: 0,
                        text: w,
                        token_count: 1,
                        tokens: Vec::new(),
                    })
                })
                .collect();
            events.push(Ok(StreamEvent::Finished {
                index: 0,
                reason: FinishReason::Stop,
                stop: None,
            }));
            events.push(Ok(StreamEvent::Usage(Usage {
                prompt_tokens: 10,
                completion_tokens: count,
                cached_tokens: None,
            })));
            Ok(CompletionStream::new(1, futures_util::stream::iter(events))
                .with_request_counts(1, 0))
        })
    }
}
