//! Turning SSE payloads into [`StreamEvent`]s: per-choice state, client-side stop strings, the
//! usage chunk and in-stream error payloads. No I/O: recorded streams replay straight into it.

use std::collections::VecDeque;

use ponder_core::{FinishReason, StopMatcher, StreamEvent, TokenLogprob};

use super::body::Route;
use crate::sse::SseEvent;
use crate::wire::{
    parse_error_body, ChatCompletion, ChatCompletionChunk, CompletionChunk, CompletionResponse,
    SkipBytes, StopReason,
};

/// What the caller should do after a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep reading.
    Continue,
    /// `[DONE]`: the server is finished.
    Done,
    /// Every choice has ended and at least one was stopped client-side, so the server is still
    /// generating: drop the connection.
    Close,
}

/// A payload that is not a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not valid JSON, or not a chunk.
    Malformed(String),
    /// An error payload (`data: {"error": …}`); `status` is the code the server named, else 500.
    Upstream { status: u16, message: String },
}

#[derive(Debug)]
struct ChoiceState {
    finished: bool,
    /// Client-side stop strings of this choice (`None` when there are none).
    matcher: Option<StopMatcher>,
    /// Completion tokens seen so far (from the logprob records, else one per non-empty delta:
    /// servers stream a delta per decoding step).
    tokens: u32,
}

/// Decodes the payloads of one upstream response.
#[derive(Debug)]
pub(crate) struct ChunkDecoder {
    route: Route,
    /// Added to the upstream's choice index (a split `n` sends each choice as its own request).
    index_base: u32,
    choices: Vec<ChoiceState>,
    stopped_client_side: bool,
    /// The request's `min_tokens`: as the server does for its own stop strings (vLLM checks
    /// them once the output has `min_tokens` tokens), no client-side stop ends a choice earlier.
    min_tokens: u32,
}

impl ChunkDecoder {
    pub(crate) fn new(
        route: Route,
        n: u32,
        client_stops: &[String],
        min_tokens: u32,
        index_base: u32,
    ) -> Self {
        let choices = (0..n)
            .map(|_| ChoiceState {
                finished: false,
                matcher: (!client_stops.is_empty())
                    .then(|| StopMatcher::new(client_stops.to_vec())),
                tokens: 0,
            })
            .collect();
        ChunkDecoder {
            route,
            index_base,
            choices,
            stopped_client_side: false,
            min_tokens,
        }
    }

    /// Whether every choice has its `Finished` event.
    pub(crate) fn all_finished(&self) -> bool {
        self.choices.iter().all(|c| c.finished)
    }

    /// Decodes one SSE event, appending what it means to `out`.
    pub(crate) fn feed(
        &mut self,
        event: SseEvent<'_>,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Flow, DecodeError> {
        if event.is_done() {
            return Ok(Flow::Done);
        }
        if event.event == "error" {
            return Err(
                upstream_error(event.data).unwrap_or_else(|| DecodeError::Upstream {
                    status: 500,
                    message: String::from_utf8_lossy(event.data)
                        .chars()
                        .take(500)
                        .collect(),
                }),
            );
        }
        match self.route {
            Route::Chat => {
                let chunk: ChatCompletionChunk<'_, SkipBytes> =
                    serde_json::from_slice(event.data).map_err(|e| bad_payload(event.data, e))?;
                for choice in chunk.choices {
                    let Some(i) = self.slot(choice.index)? else {
                        continue;
                    };
                    let tokens: Vec<TokenLogprob> = choice
                        .logprobs
                        .and_then(|l| l.content)
                        .map(|c| c.into_iter().map(TokenLogprob::from).collect())
                        .unwrap_or_default();
                    self.text(i, choice.delta.content.unwrap_or_default(), tokens, out);
                    if let Some(reason) = choice.finish_reason {
                        self.finish(i, &reason, choice.stop_reason, out);
                    }
                }
                if let Some(u) = chunk.usage {
                    out.push_back(StreamEvent::Usage(u.into()));
                }
            }
            Route::Completions => {
                let chunk: CompletionChunk<'_> =
                    serde_json::from_slice(event.data).map_err(|e| bad_payload(event.data, e))?;
                for choice in chunk.choices {
                    let Some(i) = self.slot(choice.index)? else {
                        continue;
                    };
                    let tokens = choice.logprobs.map(|l| l.into_tokens()).unwrap_or_default();
                    self.text(i, choice.text, tokens, out);
                    if let Some(reason) = choice.finish_reason {
                        self.finish(i, &reason, choice.stop_reason, out);
                    }
                }
                if let Some(u) = chunk.usage {
                    out.push_back(StreamEvent::Usage(u.into()));
                }
            }
        }
        Ok(if self.stopped_client_side && self.all_finished() {
            Flow::Close
        } else {
            Flow::Continue
        })
    }

    /// Decodes a whole non-streamed response, from a server that ignored `stream: true`.
    /// Choices without a `finish_reason` end with `Error`.
    pub(crate) fn feed_whole(
        &mut self,
        body: &[u8],
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), DecodeError> {
        let usage = match self.route {
            Route::Chat => {
                let reply: ChatCompletion<'_, SkipBytes> =
                    serde_json::from_slice(body).map_err(|e| bad_payload(body, e))?;
                for choice in reply.choices {
                    let Some(i) = self.slot(choice.index)? else {
                        continue;
                    };
                    let tokens: Vec<TokenLogprob> = choice
                        .logprobs
                        .and_then(|l| l.content)
                        .map(|c| c.into_iter().map(TokenLogprob::from).collect())
                        .unwrap_or_default();
                    self.text(i, choice.message.content.unwrap_or_default(), tokens, out);
                    if let Some(reason) = choice.finish_reason {
                        self.finish(i, &reason, choice.stop_reason, out);
                    }
                }
                reply.usage
            }
            Route::Completions => {
                let reply: CompletionResponse<'_> =
                    serde_json::from_slice(body).map_err(|e| bad_payload(body, e))?;
                for choice in reply.choices {
                    let Some(i) = self.slot(choice.index)? else {
                        continue;
                    };
                    let tokens = choice.logprobs.map(|l| l.into_tokens()).unwrap_or_default();
                    self.text(i, choice.text, tokens, out);
                    if let Some(reason) = choice.finish_reason {
                        self.finish(i, &reason, choice.stop_reason, out);
                    }
                }
                reply.usage
            }
        };
        self.finish_unfinished(FinishReason::Error, out);
        if let Some(u) = usage {
            // One choice: the whole message is one delta, and usage knows its tokens.
            if self.choices.len() == 1 {
                for event in out.iter_mut() {
                    if let StreamEvent::Delta {
                        token_count,
                        tokens,
                        ..
                    } = event
                    {
                        if tokens.is_empty() && *token_count == 1 {
                            *token_count = u32::try_from(u.completion_tokens).unwrap_or(u32::MAX);
                        }
                    }
                }
            }
            out.push_back(StreamEvent::Usage(u.into()));
        }
        Ok(())
    }

    /// Ends every unfinished choice with `reason` (text held back for stop matching is released
    /// first).
    pub(crate) fn finish_unfinished(
        &mut self,
        reason: FinishReason,
        out: &mut VecDeque<StreamEvent>,
    ) {
        for i in 0..self.choices.len() {
            if !self.choices[i].finished {
                self.end(i, reason, None, out);
            }
        }
    }

    /// The position of choice `index`, or `None` when it already ended (late tokens after a
    /// client-side stop are dropped).
    fn slot(&self, index: u32) -> Result<Option<usize>, DecodeError> {
        let i = index as usize;
        match self.choices.get(i) {
            None => Err(DecodeError::Malformed(format!(
                "choice index {index} but the request asked for {} choices",
                self.choices.len()
            ))),
            Some(c) if c.finished => Ok(None),
            Some(_) => Ok(Some(i)),
        }
    }

    fn text(
        &mut self,
        i: usize,
        text: String,
        tokens: Vec<TokenLogprob>,
        out: &mut VecDeque<StreamEvent>,
    ) {
        let token_count = if !tokens.is_empty() {
            tokens.len() as u32
        } else {
            u32::from(!text.is_empty())
        };
        let index = self.index_base + i as u32;
        let state = &mut self.choices[i];
        state.tokens = state.tokens.saturating_add(token_count);
        let (text, matched) = match &mut state.matcher {
            None => (text, None),
            // Before `min_tokens` the text passes unscanned, as the server treats its stops
            // (unlike vLLM, a stop string that straddles that boundary is not found).
            Some(_) if state.tokens < self.min_tokens => (text, None),
            Some(m) => {
                let scan = m.push(&text);
                (scan.emit, scan.matched)
            }
        };
        if token_count > 0 || !text.is_empty() {
            out.push_back(StreamEvent::Delta {
                index,
                text,
                token_count,
                tokens,
            });
        }
        if let Some(stop) = matched {
            state.finished = true;
            self.stopped_client_side = true;
            out.push_back(StreamEvent::Finished {
                index,
                reason: FinishReason::Stop,
                stop: Some(stop),
            });
        }
    }

    fn finish(
        &mut self,
        i: usize,
        reason: &str,
        stop_reason: Option<StopReason>,
        out: &mut VecDeque<StreamEvent>,
    ) {
        let reason = FinishReason::from_openai(reason);
        let stop = match reason {
            FinishReason::Stop => stop_reason.and_then(StopReason::into_text),
            _ => None,
        };
        self.end(i, reason, stop, out);
    }

    fn end(
        &mut self,
        i: usize,
        reason: FinishReason,
        stop: Option<String>,
        out: &mut VecDeque<StreamEvent>,
    ) {
        let index = self.index_base + i as u32;
        let state = &mut self.choices[i];
        if let Some(m) = &mut state.matcher {
            let held = m.flush();
            if !held.is_empty() {
                out.push_back(StreamEvent::Delta {
                    index,
                    text: held,
                    token_count: 0,
                    tokens: Vec::new(),
                });
            }
        }
        state.finished = true;
        out.push_back(StreamEvent::Finished {
            index,
            reason,
            stop,
        });
    }
}

fn upstream_error(data: &[u8]) -> Option<DecodeError> {
    parse_error_body(data).map(|e| DecodeError::Upstream {
        status: e
            .status_code()
            .filter(|c| (400..600).contains(c))
            .unwrap_or(500),
        message: e.message,
    })
}

/// A payload that does not parse as a chunk: an error payload, or malformed.
fn bad_payload(data: &[u8], e: serde_json::Error) -> DecodeError {
    upstream_error(data).unwrap_or_else(|| {
        let preview: String = String::from_utf8_lossy(data).chars().take(200).collect();
        DecodeError::Malformed(format!("{e} in payload `{preview}`"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;
    use ponder_core::{TopLogprob, Usage};

    /// Replays a recorded SSE stream (split into `pieces`) and returns the events and the final
    /// flow, ending unfinished choices with `Error` when the stream ends without `[DONE]`.
    fn replay(
        route: Route,
        n: u32,
        stops: &[&str],
        pieces: &[&str],
    ) -> (Vec<StreamEvent>, Result<Flow, DecodeError>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut decoder = ChunkDecoder::new(route, n, &stops, 0, 0);
        let mut sse = SseParser::new();
        let mut out = VecDeque::new();
        let mut flow = Ok(Flow::Continue);
        'outer: for piece in pieces {
            sse.feed(piece.as_bytes());
            while let Some(ev) = sse.next_event() {
                flow = decoder.feed(ev, &mut out);
                if !matches!(flow, Ok(Flow::Continue)) {
                    break 'outer;
                }
            }
        }
        if flow.is_ok() {
            decoder.finish_unfinished(FinishReason::Error, &mut out);
        }
        (out.into_iter().collect(), flow)
    }

    fn delta(index: u32, text: &str) -> StreamEvent {
        StreamEvent::Delta {
            index,
            text: text.into(),
            token_count: 1,
            tokens: vec![],
        }
    }

    fn finished(index: u32, reason: FinishReason, stop: Option<&str>) -> StreamEvent {
        StreamEvent::Finished {
            index,
            reason,
            stop: stop.map(String::from),
        }
    }

    fn chat(index: u32, content: &str, finish: Option<&str>) -> String {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        format!(
            "data: {{\"id\":\"chatcmpl-x\",\"object\":\"chat.completion.chunk\",\"created\":1,\
             \"model\":\"m\",\"choices\":[{{\"index\":{index},\"delta\":{{\"content\":{}}},\
             \"logprobs\":null,\"finish_reason\":{finish}}}],\"usage\":null}}\n\n",
            serde_json::to_string(content).expect("string")
        )
    }

    const USAGE_CHUNK: &str = "data: {\"id\":\"chatcmpl-x\",\"object\":\"chat.completion.chunk\",\
        \"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\
        \"completion_tokens\":5,\"total_tokens\":17,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n";

    #[test]
    fn client_stops_wait_for_min_tokens() {
        // One token per delta: "a", "\n", "b", "\n", "c". With min_tokens 3 the first newline
        // (token 2) is text; the second (token 4) ends the choice, as the server's own stops would.
        let stream = |min_tokens: u32| {
            let mut decoder = ChunkDecoder::new(Route::Chat, 1, &["\n".to_string()], min_tokens, 0);
            let mut sse = SseParser::new();
            let mut out = VecDeque::new();
            for piece in ["a", "\n", "b", "\n", "c"] {
                sse.feed(chat(0, piece, None).as_bytes());
                while let Some(ev) = sse.next_event() {
                    decoder.feed(ev, &mut out).expect("decodes");
                }
            }
            decoder.finish_unfinished(FinishReason::Error, &mut out);
            let text: String = out
                .iter()
                .filter_map(|e| match e {
                    StreamEvent::Delta { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            let reason = out.iter().find_map(|e| match e {
                StreamEvent::Finished { reason, stop, .. } => Some((*reason, stop.clone())),
                _ => None,
            });
            (text, reason)
        };
        assert_eq!(
            stream(0),
            (
                "a".to_string(),
                Some((FinishReason::Stop, Some("\n".to_string())))
            )
        );
        assert_eq!(
            stream(3),
            (
                "a\nb".to_string(),
                Some((FinishReason::Stop, Some("\n".to_string())))
            )
        );
        // The boundary is vLLM's: a stop in token number `min_tokens` counts.
        assert_eq!(
            stream(2),
            (
                "a".to_string(),
                Some((FinishReason::Stop, Some("\n".to_string())))
            )
        );
        assert_eq!(stream(9).0, "a\nb\nc");
    }

    #[test]
    fn chat_n3_interleaved_with_usage_only_final_chunk() {
        let role = "data: {\"id\":\"chatcmpl-x\",\"object\":\"chat.completion.chunk\",\"created\":1,\
            \"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\
            \"logprobs\":null,\"finish_reason\":null},{\"index\":1,\"delta\":{\"role\":\"assistant\",\
            \"content\":\"\"},\"logprobs\":null,\"finish_reason\":null},{\"index\":2,\"delta\":\
            {\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\
            \"usage\":null}\n\n";
        let stream = [
            role.to_string(),
            chat(1, "B", None),
            chat(0, "A", None),
            chat(2, "C", None),
            chat(0, "a", None),
            chat(2, "", Some("length")),
            chat(0, "", Some("stop")),
            chat(1, "b", Some("stop")),
            USAGE_CHUNK.to_string(),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let (events, flow) = replay(Route::Chat, 3, &[], &[&stream]);
        assert_eq!(flow, Ok(Flow::Done));
        assert_eq!(
            events,
            vec![
                delta(1, "B"),
                delta(0, "A"),
                delta(2, "C"),
                delta(0, "a"),
                finished(2, FinishReason::Length, None),
                finished(0, FinishReason::Stop, None),
                delta(1, "b"),
                finished(1, FinishReason::Stop, None),
                StreamEvent::Usage(Usage {
                    prompt_tokens: 12,
                    completion_tokens: 5,
                    cached_tokens: Some(8),
                }),
            ]
        );
    }

    #[test]
    fn first_chunk_with_empty_logprob_content_then_token_logprobs() {
        let first = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\
            \"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\
            \"logprobs\":{\"content\":[],\"refusal\":null},\"finish_reason\":null}],\"usage\":null}\n\n";
        let token = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\
            \"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"logprobs\":{\"content\":[{\"token\":\"Hi\",\
            \"logprob\":-0.01,\"bytes\":[72,105],\"top_logprobs\":[{\"token\":\"Hi\",\"logprob\":-0.01,\
            \"bytes\":[72,105]},{\"token\":\"Hello\",\"logprob\":-4.6,\"bytes\":[72,101,108,108,111]}]}],\
            \"refusal\":null},\"finish_reason\":null}],\"usage\":null}\n\n";
        let end = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\
            \"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
        let stream = [first, token, end, USAGE_CHUNK, "data: [DONE]\n\n"].concat();
        let (events, flow) = replay(Route::Chat, 1, &[], &[&stream]);
        assert_eq!(flow, Ok(Flow::Done));
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(
            events[0],
            StreamEvent::Delta {
                index: 0,
                text: "Hi".into(),
                token_count: 1,
                tokens: vec![TokenLogprob {
                    token: "Hi".into(),
                    logprob: Some(-0.01),
                    top: vec![
                        TopLogprob {
                            token: "Hi".into(),
                            logprob: -0.01
                        },
                        TopLogprob {
                            token: "Hello".into(),
                            logprob: -4.6
                        },
                    ],
                }],
            }
        );
        assert_eq!(events[1], finished(0, FinishReason::Stop, None));
    }

    #[test]
    fn completions_logprobs_with_null_entries() {
        let chunk = "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\
            \"choices\":[{\"index\":0,\"text\":\" 4.\",\"logprobs\":{\"text_offset\":[0,2],\
            \"token_logprobs\":[null,-0.2],\"tokens\":[\" 4\",\".\"],\
            \"top_logprobs\":[null,{\".\":-0.2,\"!\":-1.8}]},\"finish_reason\":null,\"stop_reason\":null}],\
            \"usage\":null}\n\n";
        let end = "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\
            \"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"stop\",\
            \"stop_reason\":\"\\n\\n\"}],\"usage\":null}\n\n";
        let (events, _) = replay(
            Route::Completions,
            1,
            &[],
            &[chunk, end, "data: [DONE]\n\n"],
        );
        let StreamEvent::Delta {
            text,
            token_count,
            tokens,
            ..
        } = &events[0]
        else {
            panic!("{events:?}");
        };
        assert_eq!(text, " 4.");
        assert_eq!(*token_count, 2);
        assert_eq!(tokens[0].logprob, None);
        assert!(tokens[0].top.is_empty());
        assert_eq!(tokens[1].logprob, Some(-0.2));
        assert_eq!(tokens[1].top.len(), 2);
        assert_eq!(events[1], finished(0, FinishReason::Stop, Some("\n\n")));
    }

    #[test]
    fn client_side_stop_split_across_chunks() {
        let stream = [
            chat(0, "x = 1\n", None),
            chat(0, "\nSt", None),
            chat(0, "ep 2: more", None),
            chat(0, " text", None),
        ]
        .concat();
        // Split the byte stream in the middle of a chunk, too.
        let (a, b) = stream.split_at(stream.len() / 2 + 3);
        let (events, flow) = replay(Route::Chat, 1, &["\n\nStep"], &[a, b]);
        assert_eq!(flow, Ok(Flow::Close), "all choices stopped client-side");
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "x = 1");
        let tokens: u32 = events
            .iter()
            .map(|e| match e {
                StreamEvent::Delta { token_count, .. } => *token_count,
                _ => 0,
            })
            .sum();
        assert_eq!(tokens, 3, "the stop string's tokens still count");
        assert_eq!(
            events.last(),
            Some(&finished(0, FinishReason::Stop, Some("\n\nStep")))
        );
    }

    #[test]
    fn client_stop_on_one_choice_keeps_the_others_going() {
        let stream = [
            chat(0, "a<stop>ignored", None),
            chat(0, "late", None),
            chat(1, "b<st", None),
            chat(1, "ill>", Some("length")),
            USAGE_CHUNK.to_string(),
            "data: [DONE]\n\n".into(),
        ]
        .concat();
        let (events, flow) = replay(Route::Chat, 2, &["<stop>"], &[&stream]);
        // Choice 0 is still generating on the server when choice 1 ends: close at once,
        // without waiting for the usage chunk.
        assert_eq!(flow, Ok(Flow::Close));
        assert_eq!(events[0], delta(0, "a"));
        assert_eq!(events[1], finished(0, FinishReason::Stop, Some("<stop>")));
        // "<st" is held back until it is known not to be a stop, then released.
        assert_eq!(
            events[2],
            StreamEvent::Delta {
                index: 1,
                text: "b".into(),
                token_count: 1,
                tokens: vec![]
            }
        );
        assert_eq!(events[3], delta(1, "<still>"));
        assert_eq!(events[4], finished(1, FinishReason::Length, None));
        assert_eq!(events.len(), 5);
    }

    #[test]
    fn held_text_is_released_when_the_server_stops() {
        let stream = [chat(0, "ab<", Some("stop")), "data: [DONE]\n\n".into()].concat();
        let (events, _) = replay(Route::Chat, 1, &["<x>"], &[&stream]);
        assert_eq!(
            events,
            vec![
                StreamEvent::Delta {
                    index: 0,
                    text: "ab".into(),
                    token_count: 1,
                    tokens: vec![]
                },
                StreamEvent::Delta {
                    index: 0,
                    text: "<".into(),
                    token_count: 0,
                    tokens: vec![]
                },
                finished(0, FinishReason::Stop, None),
            ]
        );
    }

    #[test]
    fn a_cut_stream_ends_unfinished_choices_in_error() {
        let stream = [chat(0, "A", None), chat(1, "B", Some("stop"))].concat();
        let (events, flow) = replay(Route::Chat, 2, &[], &[&stream]);
        assert_eq!(flow, Ok(Flow::Continue));
        assert_eq!(events[3], finished(0, FinishReason::Error, None));
    }

    #[test]
    fn error_payloads_and_malformed_json() {
        let (_, flow) = replay(
            Route::Chat,
            1,
            &[],
            &["data: {\"error\":{\"message\":\"boom\",\"code\":503}}\n\n"],
        );
        assert_eq!(
            flow,
            Err(DecodeError::Upstream {
                status: 503,
                message: "boom".into()
            })
        );
        let (_, flow) = replay(
            Route::Chat,
            1,
            &[],
            &["data: {\"object\":\"error\",\"message\":\"bad\",\"type\":\"BadRequestError\",\"code\":400}\n\n"],
        );
        assert!(matches!(
            flow,
            Err(DecodeError::Upstream { status: 400, .. })
        ));
        let (_, flow) = replay(
            Route::Chat,
            1,
            &[],
            &["data: {\"choices\":[{\"index\":0,\n\n"],
        );
        assert!(matches!(flow, Err(DecodeError::Malformed(_))), "{flow:?}");
        let (_, flow) = replay(Route::Chat, 1, &[], &[&chat(3, "x", None)]);
        assert!(matches!(flow, Err(DecodeError::Malformed(m)) if m.contains("index 3")));
    }

    #[test]
    fn a_whole_json_reply_becomes_events() {
        let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0,"message":{"role":"assistant","content":"four"},
            "logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let mut decoder = ChunkDecoder::new(Route::Chat, 1, &[], 0, 0);
        let mut out = VecDeque::new();
        decoder.feed_whole(body, &mut out).expect("decodes");
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            vec![
                StreamEvent::Delta {
                    index: 0,
                    text: "four".into(),
                    token_count: 2,
                    tokens: vec![]
                },
                finished(0, FinishReason::Stop, None),
                StreamEvent::Usage(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2,
                    cached_tokens: None
                }),
            ]
        );
    }

    #[test]
    fn split_choices_are_renumbered() {
        let mut decoder = ChunkDecoder::new(Route::Chat, 1, &[], 0, 5);
        let mut sse = SseParser::new();
        let mut out = VecDeque::new();
        sse.feed(chat(0, "x", Some("stop")).as_bytes());
        let ev = sse.next_event().expect("event");
        assert_eq!(decoder.feed(ev, &mut out), Ok(Flow::Continue));
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            vec![delta(5, "x"), finished(5, FinishReason::Stop, None)]
        );
    }
}
