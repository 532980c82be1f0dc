//! OpenAI-compatible JSON bodies, as they travel on the wire, and their hand-written conversions
//! to and from `ponder_core` types.
//!
//! These types describe the edge, not Ponder's model: every field a server may omit is optional
//! or defaulted, `null` is accepted wherever servers are known to send it (and becomes `None`,
//! never a magic number), and fields Ponder does not know are kept in an `extra` map where a
//! request may carry them. Request bodies serialise only the fields that are set.
//!
//! Streamed chunks are deserialised straight from each SSE `data:` payload with `serde_json`; the
//! per-chunk identifiers (`id`, `object`, `model`) borrow from the payload when they can, and the
//! text and logprob fields are owned because they move into [`ponder_core`] events unchanged.
//!
//! The same types serve the client (`backend`) and, later, Ponder's own OpenAI-compatible server.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use ponder_core::{FinishReason, Message, Role, TokenLogprob, TopLogprob};

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// One chat message of a request (`messages[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool` (or a role Ponder does not know).
    pub role: String,
    /// A string or a list of content parts; `null` for some tool-call messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Other message fields (`tool_calls`, `tool_call_id`, `reasoning_content`, …), kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// A message with plain-text content.
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: Some(MessageContent::Text(content.into())),
            name: None,
            extra: Map::new(),
        }
    }
}

impl From<&Message> for ChatMessage {
    fn from(m: &Message) -> Self {
        ChatMessage::text(m.role.as_str(), m.content.clone())
    }
}

impl ChatMessage {
    /// The core message, when the role is one Ponder knows. Content parts are joined; non-text
    /// parts are skipped.
    pub fn to_core(&self) -> Option<Message> {
        let role = match self.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        };
        let content = self
            .content
            .as_ref()
            .map(|c| c.joined_text().into_owned())
            .unwrap_or_default();
        Some(Message { role, content })
    }
}

/// Message content: a string, or a list of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the content; text parts are concatenated, other parts skipped.
    pub fn joined_text(&self) -> Cow<'_, str> {
        match self {
            MessageContent::Text(t) => Cow::Borrowed(t),
            MessageContent::Parts(parts) => Cow::Owned(
                parts
                    .iter()
                    .filter_map(|p| p.text.as_deref())
                    .collect::<String>(),
            ),
        }
    }
}

/// One part of a multi-part message (`{"type": "text", "text": …}`, images, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

impl StopSpec {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopSpec::One(s) => vec![s],
            StopSpec::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final usage-only chunk (`choices: []`) before `[DONE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// vLLM: usage on every chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous_usage_stats: Option<bool>,
}

/// `POST /v1/chat/completions` body. Fields marked "vLLM" are extensions that vLLM, SGLang and
/// llama.cpp accept; hosted OpenAI rejects them, so they are only sent when set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// vLLM (`-1` disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    /// vLLM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Newer OpenAI models' replacement for `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// vLLM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSpec>,
    /// A signed 64-bit integer on the wire (vLLM validates the int64 range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// 0–20; requires `logprobs: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// vLLM/SGLang: continue the final assistant message (assistant prefill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_final_message: Option<bool>,
    /// vLLM/SGLang: append the template's assistant header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_generation_prompt: Option<bool>,
    /// Any other field, passed through as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `prompt` of a completions request, or `input` of a pooling request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

/// `POST /v1/completions` body (legacy completions: raw prompt continued as is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Number of top alternatives per token (an integer here, unlike chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Any other field, passed through as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Shared response parts
// ---------------------------------------------------------------------------------------------

/// `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from a prefix cache.
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl From<Usage> for ponder_core::Usage {
    fn from(u: Usage) -> Self {
        ponder_core::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
        }
    }
}

impl From<ponder_core::Usage> for Usage {
    fn from(u: ponder_core::Usage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            prompt_tokens_details: u.cached_tokens.map(|c| PromptTokensDetails {
                cached_tokens: Some(c),
            }),
            completion_tokens_details: None,
        }
    }
}

/// vLLM's `stop_reason`: the stop string that matched, or the stop token id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopReason {
    Token(i64),
    Text(String),
}

impl StopReason {
    /// The matched stop string, when it was a string.
    pub fn into_text(self) -> Option<String> {
        match self {
            StopReason::Text(s) => Some(s),
            StopReason::Token(_) => None,
        }
    }
}

/// The OpenAI `finish_reason` string of a core finish reason.
pub fn finish_reason_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Aborted => "abort",
        FinishReason::Error => "error",
    }
}

// ---------------------------------------------------------------------------------------------
// Log-probabilities
// ---------------------------------------------------------------------------------------------

/// Chat-style `logprobs`: `{content: [...], refusal: [...]}`. Either list may be `null`.
///
/// `B` holds each token's `bytes`: `Vec<u8>` keeps them; [`SkipBytes`] skips them while
/// parsing (the client does: core token records have no place for them, and skipping makes
/// parsing a top-20 chunk about a third faster).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct ChatLogprobs<B = Vec<u8>> {
    #[serde(default, deserialize_with = "nullable_entries")]
    pub content: Option<Vec<ChatTokenLogprob<B>>>,
    #[serde(default, deserialize_with = "nullable_entries")]
    pub refusal: Option<Vec<ChatTokenLogprob<B>>>,
}

/// A `bytes` field read and dropped (see [`ChatLogprobs`]); written as `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SkipBytes;

impl<'de> Deserialize<'de> for SkipBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(SkipBytes)
    }
}

impl Serialize for SkipBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_none()
    }
}

/// One generated token of chat-style logprobs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct ChatTokenLogprob<B = Vec<u8>> {
    #[serde(default)]
    pub token: String,
    /// `None` when the server sent `null`.
    #[serde(default)]
    pub logprob: Option<f64>,
    #[serde(default)]
    pub bytes: Option<B>,
    /// Alternatives, most likely first; `null` (the list or an entry) reads as absent.
    #[serde(default, deserialize_with = "entries_or_empty")]
    pub top_logprobs: Vec<ChatTopLogprob<B>>,
}

/// One alternative of chat-style `top_logprobs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct ChatTopLogprob<B = Vec<u8>> {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub logprob: Option<f64>,
    #[serde(default)]
    pub bytes: Option<B>,
}

impl<B> From<ChatTokenLogprob<B>> for TokenLogprob {
    /// Alternatives whose logprob is `null` are left out (the core record has no place for an
    /// unknown alternative, and inventing a number would be a lie).
    fn from(t: ChatTokenLogprob<B>) -> Self {
        TokenLogprob {
            token: t.token,
            logprob: t.logprob,
            top: t
                .top_logprobs
                .into_iter()
                .filter_map(|a| {
                    a.logprob.map(|logprob| TopLogprob {
                        token: a.token,
                        logprob,
                    })
                })
                .collect(),
        }
    }
}

impl From<&TokenLogprob> for ChatTokenLogprob {
    fn from(t: &TokenLogprob) -> Self {
        ChatTokenLogprob {
            token: t.token.clone(),
            logprob: t.logprob,
            bytes: Some(t.token.as_bytes().to_vec()),
            top_logprobs: t
                .top
                .iter()
                .map(|a| ChatTopLogprob {
                    token: a.token.clone(),
                    logprob: Some(a.logprob),
                    bytes: Some(a.token.as_bytes().to_vec()),
                })
                .collect(),
        }
    }
}

/// Completions-style `logprobs`: parallel lists, one entry per generated token.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    #[serde(default, deserialize_with = "null_as_default")]
    pub tokens: Vec<String>,
    /// `null` entries (a token outside the reported alternatives, or the first echoed prompt
    /// token) read as `None`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub token_logprobs: Vec<Option<f64>>,
    /// One map `token → logprob` per position, in the server's order; a position may be `null`.
    #[serde(default)]
    pub top_logprobs: Option<Vec<Option<TopLogprobMap>>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub text_offset: Vec<u32>,
}

impl CompletionLogprobs {
    /// Number of token positions (the longest of the parallel lists).
    pub fn len(&self) -> usize {
        self.tokens
            .len()
            .max(self.token_logprobs.len())
            .max(self.top_logprobs.as_ref().map_or(0, Vec::len))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The per-token records. Missing entries read as absent; alternatives with a `null` logprob
    /// are left out.
    pub fn into_tokens(self) -> Vec<TokenLogprob> {
        let n = self.len();
        let mut tokens = self.tokens.into_iter();
        let mut logprobs = self.token_logprobs.into_iter();
        let mut tops = self.top_logprobs.unwrap_or_default().into_iter();
        (0..n)
            .map(|_| TokenLogprob {
                token: tokens.next().unwrap_or_default(),
                logprob: logprobs.next().flatten(),
                top: tops
                    .next()
                    .flatten()
                    .map(|m| {
                        m.0.into_iter()
                            .filter_map(|(token, lp)| {
                                lp.map(|logprob| TopLogprob { token, logprob })
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }
}

impl From<&[TokenLogprob]> for CompletionLogprobs {
    fn from(tokens: &[TokenLogprob]) -> Self {
        let mut offset = 0u32;
        CompletionLogprobs {
            tokens: tokens.iter().map(|t| t.token.clone()).collect(),
            token_logprobs: tokens.iter().map(|t| t.logprob).collect(),
            top_logprobs: Some(
                tokens
                    .iter()
                    .map(|t| {
                        Some(TopLogprobMap(
                            t.top
                                .iter()
                                .map(|a| (a.token.clone(), Some(a.logprob)))
                                .collect(),
                        ))
                    })
                    .collect(),
            ),
            text_offset: tokens
                .iter()
                .map(|t| {
                    let o = offset;
                    offset += t.token.len() as u32;
                    o
                })
                .collect(),
        }
    }
}

/// A JSON object `{token: logprob}` read in the order the server wrote it (a hash map would lose
/// the "most likely first" order). Values may be `null`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopLogprobMap(pub Vec<(String, Option<f64>)>);

impl Serialize for TopLogprobMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TopLogprobMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLogprobMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from token to logprob")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<String, Option<f64>>()? {
                    entries.push((k, v));
                }
                Ok(TopLogprobMap(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// `null` → `T::default()`.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A list whose entries may be `null`; `null` entries are dropped.
struct SkipNulls<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for SkipNulls<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = SkipNulls<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element::<Option<T>>()? {
                    if let Some(item) = item {
                        out.push(item);
                    }
                }
                Ok(SkipNulls(out))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// `null` or a list with possibly-`null` entries → the non-null entries (empty for `null`).
fn entries_or_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<SkipNulls<T>>::deserialize(d)?.map_or_else(Vec::new, |s| s.0))
}

/// `null` → `None`; a list with possibly-`null` entries → `Some(non-null entries)`.
fn nullable_entries<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<SkipNulls<T>>::deserialize(d)?.map(|s| s.0))
}

// ---------------------------------------------------------------------------------------------
// Chat responses
// ---------------------------------------------------------------------------------------------

/// A streamed chat chunk (`object: "chat.completion.chunk"`). The final usage-only chunk has
/// `choices: []` and `usage` set; other chunks carry `usage: null` (or, with vLLM's
/// `continuous_usage_stats`, running usage).
///
/// `B`: how logprob `bytes` are kept (see [`ChatLogprobs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct ChatCompletionChunk<'a, B = Vec<u8>> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub object: Cow<'a, str>,
    #[serde(default)]
    pub created: u64,
    #[serde(borrow, default)]
    pub model: Cow<'a, str>,
    /// Required: an error payload (`{"error": …}`) must not read as an empty chunk.
    pub choices: Vec<ChatChunkChoice<B>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

/// One choice of a streamed chat chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct ChatChunkChoice<B = Vec<u8>> {
    pub index: u32,
    #[serde(default)]
    pub delta: ChatDelta,
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs<B>>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// vLLM: the matched stop string or stop token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
}

/// The `delta` of a streamed chat choice.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    /// vLLM/SGLang reasoning parsers put thinking text here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
}

/// A non-streamed chat response (`object: "chat.completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct ChatCompletion<'a, B = Vec<u8>> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub object: Cow<'a, str>,
    #[serde(default)]
    pub created: u64,
    #[serde(borrow, default)]
    pub model: Cow<'a, str>,
    pub choices: Vec<ChatChoice<B>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

/// One choice of a non-streamed chat response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct ChatChoice<B = Vec<u8>> {
    pub index: u32,
    pub message: ChatResponseMessage,
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs<B>>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
}

/// The assistant message of a non-streamed chat choice.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatResponseMessage {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
}

// ---------------------------------------------------------------------------------------------
// Completions responses
// ---------------------------------------------------------------------------------------------

/// A completions response (`object: "text_completion"`); streamed chunks have the same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse<'a> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub object: Cow<'a, str>,
    #[serde(default)]
    pub created: u64,
    #[serde(borrow, default)]
    pub model: Cow<'a, str>,
    /// Required, as for chat chunks.
    pub choices: Vec<CompletionChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

/// A streamed completions chunk: the same shape as the full response.
pub type CompletionChunk<'a> = CompletionResponse<'a>;

/// One choice of a completions response or chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub text: String,
    #[serde(default)]
    pub logprobs: Option<CompletionLogprobs>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The OpenAI error body: `{"error": {"message": …, "type": …, "param": …, "code": …}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorObject,
}

/// The object inside an error body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// A string (`"invalid_api_key"`) or a number (`400`), depending on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Value>,
}

impl ErrorObject {
    /// The numeric `code`, when the server put an HTTP status there (vLLM, llama.cpp).
    pub fn status_code(&self) -> Option<u16> {
        match &self.code {
            Some(Value::Number(n)) => n.as_u64().and_then(|c| u16::try_from(c).ok()),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
    }
}

/// Error bodies as servers really send them.
#[derive(Deserialize)]
#[serde(untagged)]
enum AnyErrorBody {
    /// OpenAI, llama.cpp, newer vLLM: `{"error": {…}}`.
    Nested { error: ErrorObject },
    /// Some proxies: `{"error": "message"}`.
    NestedText { error: String },
    /// Older vLLM: `{"object": "error", "message": …, "type": …, "code": …}`.
    Flat {
        message: String,
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(default)]
        param: Option<String>,
        #[serde(default)]
        code: Option<Value>,
    },
    /// FastAPI validation errors: `{"detail": "…"}` or `{"detail": [{"msg": …, "loc": …}]}`.
    Detail { detail: Value },
}

/// Reads an error body in any of the shapes servers use; `None` when it is not one.
pub fn parse_error_body(body: &[u8]) -> Option<ErrorObject> {
    let parsed: AnyErrorBody = serde_json::from_slice(body).ok()?;
    Some(match parsed {
        AnyErrorBody::Nested { error } => error,
        AnyErrorBody::NestedText { error } => ErrorObject {
            message: error,
            ..Default::default()
        },
        AnyErrorBody::Flat {
            message,
            kind,
            param,
            code,
        } => ErrorObject {
            message,
            kind,
            param,
            code,
        },
        AnyErrorBody::Detail { detail } => ErrorObject {
            message: match detail {
                Value::String(s) => s,
                Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        let msg = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                        match item.get("loc") {
                            Some(loc) => format!("{loc}: {msg}"),
                            None => msg.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            },
            kind: Some("invalid_request_error".into()),
            ..Default::default()
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/// `GET /v1/models` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// `"list"`.
    #[serde(default)]
    pub object: String,
    pub data: Vec<ModelCard>,
}

/// One model of a [`ModelList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    /// `"model"`.
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub owned_by: String,
    /// Other fields (vLLM's `max_model_len`, `root`, …), kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Pooling (process reward models)
// ---------------------------------------------------------------------------------------------

/// `POST /pooling` body (vLLM's pooling runner; see `reasoning-strategies.md` §2.5.2). Either
/// `input` (completion-like) or `messages` (chat-like) is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PoolingRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<PromptInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// Newer vLLM: `"token_classify"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Newer vLLM: apply the model's activation (softmax) to the pooled rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_activation: Option<bool>,
    /// Older vLLM's name for `use_activation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softmax: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_prompt_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /pooling` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolingResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    pub data: Vec<PoolingItem>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One pooled input of a pooling response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolingItem {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub object: String,
    pub data: PoolingData,
}

/// Pooled output: one row per step tag for a STEP-pooled PRM, a flat vector for sequence
/// pooling, or a base64 string with `encoding_format: "base64"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PoolingData {
    Matrix(Vec<Vec<f64>>),
    Vector(Vec<f64>),
    Encoded(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_chunk_with_empty_logprobs_and_null_refusal() {
        let raw = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{"role":"assistant","content":""},
            "logprobs":{"content":[],"refusal":null},"finish_reason":null}],"usage":null}"#;
        let c: ChatCompletionChunk<'_> = serde_json::from_str(raw).expect("parses");
        assert!(matches!(c.id, Cow::Borrowed("chatcmpl-1")));
        let lp = c.choices[0].logprobs.as_ref().expect("logprobs");
        assert_eq!(lp.content.as_deref(), Some(&[][..]));
        assert_eq!(lp.refusal, None);
        assert_eq!(c.usage, None);
    }

    #[test]
    fn chat_logprobs_with_nulls_anywhere() {
        let raw = r#"{"content":[{"token":"a","logprob":null,"bytes":[97],
            "top_logprobs":[null,{"token":"b","logprob":-1.5,"bytes":null},{"token":"c","logprob":null}]},
            null,
            {"token":"d","logprob":-0.25,"top_logprobs":null}]}"#;
        let lp: ChatLogprobs = serde_json::from_str(raw).expect("parses");
        let tokens: Vec<TokenLogprob> = lp
            .content
            .expect("content")
            .into_iter()
            .map(TokenLogprob::from)
            .collect();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].logprob, None);
        assert_eq!(
            tokens[0].top,
            vec![TopLogprob {
                token: "b".into(),
                logprob: -1.5
            }]
        );
        assert_eq!(tokens[1].logprob, Some(-0.25));
        assert!(tokens[1].top.is_empty());
    }

    #[test]
    fn completion_logprobs_keep_order_and_nulls() {
        let raw = r#"{"tokens":["x","y"],"token_logprobs":[null,-0.5],
            "top_logprobs":[null,{"z":-0.1,"y":-0.5,"w":null}],"text_offset":[0,1]}"#;
        let lp: CompletionLogprobs = serde_json::from_str(raw).expect("parses");
        let t = lp.into_tokens();
        assert_eq!(t[0].logprob, None);
        assert!(t[0].top.is_empty());
        assert_eq!(t[1].logprob, Some(-0.5));
        let names: Vec<&str> = t[1].top.iter().map(|a| a.token.as_str()).collect();
        assert_eq!(names, ["z", "y"]);
    }

    #[test]
    fn completion_logprobs_round_trip_in_order() {
        let tokens = vec![TokenLogprob {
            token: "a".into(),
            logprob: Some(-0.1),
            top: vec![
                TopLogprob {
                    token: "q".into(),
                    logprob: -0.05,
                },
                TopLogprob {
                    token: "a".into(),
                    logprob: -0.1,
                },
            ],
        }];
        let wire = CompletionLogprobs::from(&tokens[..]);
        let json = serde_json::to_string(&wire).expect("serialises");
        assert!(json.contains(r#"{"q":-0.05,"a":-0.1}"#), "{json}");
        let back: CompletionLogprobs = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.into_tokens(), tokens);
    }

    #[test]
    fn usage_with_cached_tokens() {
        let raw = r#"{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,
            "prompt_tokens_details":{"cached_tokens":8}}"#;
        let u: Usage = serde_json::from_str(raw).expect("parses");
        let core = ponder_core::Usage::from(u);
        assert_eq!(core.cached_tokens, Some(8));
        let u: Usage = serde_json::from_str(r#"{"prompt_tokens":1,"prompt_tokens_details":null}"#)
            .expect("parses");
        assert_eq!(ponder_core::Usage::from(u).cached_tokens, None);
    }

    #[test]
    fn error_bodies_of_every_shape() {
        fn check(body: &str, message: &str, status: Option<u16>) {
            let e = parse_error_body(body.as_bytes()).expect(body);
            assert_eq!(e.message, message, "{body}");
            assert_eq!(e.status_code(), status, "{body}");
        }
        check(
            r#"{"error":{"message":"bad n","type":"invalid_request_error","param":"n","code":null}}"#,
            "bad n",
            None,
        );
        check(
            r#"{"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400}"#,
            "too long",
            Some(400),
        );
        check(
            r#"{"error":{"code":400,"message":"Only one completion choice is allowed","type":"invalid_request_error"}}"#,
            "Only one completion choice is allowed",
            Some(400),
        );
        check(r#"{"error":"upstream down"}"#, "upstream down", None);
        check(r#"{"detail":"Not Found"}"#, "Not Found", None);
        check(
            r#"{"detail":[{"loc":["body","n"],"msg":"must be 1"}]}"#,
            r#"["body","n"]: must be 1"#,
            None,
        );
        assert!(parse_error_body(b"<html>").is_none());
    }

    #[test]
    fn requests_send_only_set_fields() {
        let r = ChatCompletionRequest {
            model: "m".into(),
            messages: vec![ChatMessage::text("user", "hi")],
            temperature: Some(0.5),
            ..Default::default()
        };
        let json = serde_json::to_string(&r).expect("serialises");
        assert_eq!(
            json,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#
        );
        let back: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[],"stop":"x","chat_template_kwargs":{"a":1}}"#,
        )
        .expect("parses");
        assert_eq!(back.stop, Some(StopSpec::One("x".into())));
        assert!(back.extra.contains_key("chat_template_kwargs"));
    }

    #[test]
    fn model_list_keeps_server_fields() {
        let raw = r#"{"object":"list","data":[{"id":"Qwen/Qwen3-8B","object":"model",
            "created":1,"owned_by":"vllm","max_model_len":32768}]}"#;
        let list: ModelList = serde_json::from_str(raw).expect("parses");
        assert_eq!(list.data[0].id, "Qwen/Qwen3-8B");
        assert_eq!(list.data[0].extra["max_model_len"], 32768);
    }

    #[test]
    fn pooling_shapes() {
        let raw = r#"{"id":"pool-1","object":"list","created":1,"model":"prm",
            "data":[{"index":0,"object":"pooling","data":[[0.1,0.9],[0.8,0.2]]},
                    {"index":1,"object":"pooling","data":[0.3,0.7]}],
            "usage":{"prompt_tokens":12,"total_tokens":12}}"#;
        let r: PoolingResponse = serde_json::from_str(raw).expect("parses");
        assert_eq!(
            r.data[0].data,
            PoolingData::Matrix(vec![vec![0.1, 0.9], vec![0.8, 0.2]])
        );
        assert_eq!(r.data[1].data, PoolingData::Vector(vec![0.3, 0.7]));
        let req = PoolingRequest {
            model: "prm".into(),
            input: Some(PromptInput::Texts(vec!["a".into()])),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&req).expect("serialises"),
            r#"{"model":"prm","input":["a"]}"#
        );
    }
}
