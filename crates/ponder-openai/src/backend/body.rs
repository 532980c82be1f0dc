//! Building request bodies from a [`GenerationRequest`]: the route, the JSON body, and which
//! stop strings the server enforces and which are matched client-side.

use bytes::Bytes;
use serde_json::{Map, Value};

use ponder_core::{
    BackendError, Capability, GenerationRequest, InvalidRequest, Prompt, SamplingParams,
};

use crate::config::{Api, OpenAiConfig};
use crate::wire::{
    ChatCompletionRequest, ChatMessage, CompletionRequest, PromptInput, StopSpec, StreamOptions,
};

/// Which endpoint a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Chat,
    Completions,
}

impl Route {
    /// The path appended to an endpoint's base URL.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Route::Chat => "/chat/completions",
            Route::Completions => "/completions",
        }
    }
}

/// Body fields Ponder always controls: an extra field of the same name is dropped even when
/// Ponder leaves the field unset, because it would change what the stream parser must expect
/// (how many choices, whether it streams, the logprob shape, an echoed prompt).
pub(crate) const RESERVED_FIELDS: &[&str] = &[
    "model",
    "messages",
    "prompt",
    "n",
    "stream",
    "stream_options",
    "logprobs",
    "top_logprobs",
    "echo",
    "best_of",
];

/// What a request needs before any body is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub route: Route,
    /// Stop strings sent to the server.
    pub server_stops: Vec<String>,
    /// Stop strings matched client-side (those beyond `max_stop_strings`).
    pub client_stops: Vec<String>,
    /// The request's `min_tokens` (0 when unset): client-side stops wait for it too.
    pub min_tokens: u32,
}

/// Checks the request against the configuration and splits its stop strings.
pub(crate) fn plan(
    config: &OpenAiConfig,
    backend: &str,
    request: &GenerationRequest,
) -> Result<Plan, BackendError> {
    request.validate()?;
    let route = match &request.prompt {
        Prompt::Text(_) => Route::Completions,
        Prompt::Chat { .. } if config.api == Api::Completions => {
            return Err(InvalidRequest {
                field: "prompt",
                reason: format!(
                    "`{backend}` is configured with `api: completions`, which cannot send a chat; \
                     render the chat template and send text"
                ),
            }
            .into())
        }
        Prompt::Chat { .. } => Route::Chat,
    };
    if request.prompt.needs_prefix_continuation() && !config.prefix_continuation {
        return Err(BackendError::Unsupported {
            backend: backend.to_string(),
            capability: Capability::PrefixContinuation,
        });
    }
    if let Some(k) = request.params.top_logprobs {
        match config.max_top_logprobs {
            None => {
                return Err(BackendError::Unsupported {
                    backend: backend.to_string(),
                    capability: Capability::Logprobs,
                })
            }
            Some(max) if k > max => {
                return Err(InvalidRequest {
                    field: "top_logprobs",
                    reason: format!("`{backend}` returns at most {max} alternatives, asked {k}"),
                }
                .into())
            }
            Some(_) => {}
        }
    }
    let stops = &request.params.stop;
    let keep = config
        .max_stop_strings
        .unwrap_or(usize::MAX)
        .min(stops.len());
    Ok(Plan {
        route,
        server_stops: stops[..keep].to_vec(),
        client_stops: stops[keep..].to_vec(),
        min_tokens: request.params.min_tokens.unwrap_or(0),
    })
}

/// The wire seed of a core seed: vLLM validates seeds as signed 64-bit integers, so the top
/// bit is cleared (a fixed, documented mapping: the same core seed always sends the same value).
pub(crate) fn wire_seed(seed: u64) -> i64 {
    (seed & i64::MAX as u64) as i64
}

/// Builds the JSON body of one upstream request with `n` choices and `seed`.
pub(crate) fn build_body(
    config: &OpenAiConfig,
    request: &GenerationRequest,
    plan: &Plan,
    n: u32,
    seed: Option<u64>,
) -> Result<Bytes, BackendError> {
    let p: &SamplingParams = &request.params;
    let stop = (!plan.server_stops.is_empty()).then(|| StopSpec::Many(plan.server_stops.clone()));
    let n = (n != 1).then_some(n);
    let seed = seed.map(wire_seed);
    let stream_options = Some(StreamOptions {
        include_usage: Some(true),
        continuous_usage_stats: None,
    });
    let value = match &request.prompt {
        Prompt::Chat {
            messages,
            continue_final_message,
        } => {
            let prefill = *continue_final_message;
            serde_json::to_value(ChatCompletionRequest {
                model: config.model.clone(),
                messages: messages.iter().map(ChatMessage::from).collect(),
                temperature: p.temperature,
                top_p: p.top_p,
                top_k: p.top_k.map(i64::from),
                min_p: p.min_p,
                max_tokens: p.max_tokens,
                max_completion_tokens: None,
                min_tokens: p.min_tokens,
                stop,
                seed,
                n,
                logprobs: p.top_logprobs.map(|_| true),
                top_logprobs: p.top_logprobs.map(u32::from),
                presence_penalty: None,
                frequency_penalty: None,
                stream: Some(true),
                stream_options,
                continue_final_message: prefill.then_some(true),
                add_generation_prompt: prefill.then_some(false),
                extra: Map::new(),
            })
        }
        Prompt::Text(text) => serde_json::to_value(CompletionRequest {
            model: config.model.clone(),
            prompt: PromptInput::Text(text.clone()),
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k.map(i64::from),
            min_p: p.min_p,
            max_tokens: p.max_tokens,
            min_tokens: p.min_tokens,
            stop,
            seed,
            n,
            logprobs: p.top_logprobs.map(u32::from),
            echo: None,
            best_of: None,
            presence_penalty: None,
            frequency_penalty: None,
            stream: Some(true),
            stream_options,
            extra: Map::new(),
        }),
    };
    let mut map = match value {
        Ok(Value::Object(map)) => map,
        Ok(_) | Err(_) => {
            return Err(InvalidRequest {
                field: "params",
                reason: "the request cannot be written as JSON".into(),
            }
            .into())
        }
    };
    merge_extra(&mut map, &request.extra);
    serde_json::to_vec(&map).map(Bytes::from).map_err(|e| {
        InvalidRequest {
            field: "extra",
            reason: format!("cannot be written as JSON: {e}"),
        }
        .into()
    })
}

/// Adds the extra fields Ponder did not set itself and does not reserve.
fn merge_extra(body: &mut Map<String, Value>, extra: &Map<String, Value>) {
    for (key, value) in extra {
        if RESERVED_FIELDS.contains(&key.as_str()) || body.contains_key(key) {
            continue;
        }
        body.insert(key.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponder_core::Message;
    use serde_json::json;

    fn config() -> OpenAiConfig {
        OpenAiConfig::new(vec!["http://127.0.0.1:1/v1".into()], "m")
    }

    fn body(config: &OpenAiConfig, request: &GenerationRequest) -> (Plan, Value) {
        let plan = plan(config, "b", request).expect("valid");
        let bytes = build_body(
            config,
            request,
            &plan,
            request.params.n,
            request.params.seed,
        )
        .expect("builds");
        (plan, serde_json::from_slice(&bytes).expect("json"))
    }

    #[test]
    fn chat_body_sends_only_set_fields() {
        let req = GenerationRequest::new(Prompt::user("2+2?"), SamplingParams::default());
        let (plan, v) = body(&config(), &req);
        assert_eq!(plan.route, Route::Chat);
        assert_eq!(
            v,
            json!({
                "model": "m",
                "messages": [{"role": "user", "content": "2+2?"}],
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
    }

    #[test]
    fn chat_body_with_everything_set() {
        let params = SamplingParams {
            temperature: Some(0.7),
            top_p: Some(0.9),
            top_k: Some(20),
            min_p: Some(0.05),
            max_tokens: Some(100),
            min_tokens: Some(2),
            stop: vec!["\n\n".into()],
            seed: Some(u64::MAX),
            n: 4,
            top_logprobs: Some(20),
        };
        let req =
            GenerationRequest::new(Prompt::prefill(vec![Message::user("q")], "Step 1:"), params);
        let (_, v) = body(&config(), &req);
        assert_eq!(
            v,
            json!({
                "model": "m",
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "Step 1:"},
                ],
                "temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.05,
                "max_tokens": 100, "min_tokens": 2, "stop": ["\n\n"],
                "seed": i64::MAX, "n": 4, "logprobs": true, "top_logprobs": 20,
                "stream": true, "stream_options": {"include_usage": true},
                "continue_final_message": true, "add_generation_prompt": false,
            })
        );
    }

    #[test]
    fn text_prompts_use_completions_with_integer_logprobs() {
        let params = SamplingParams {
            top_logprobs: Some(5),
            ..Default::default()
        };
        let req = GenerationRequest::new(Prompt::Text("<|im_start|>".into()), params);
        let (plan, v) = body(&config(), &req);
        assert_eq!(plan.route, Route::Completions);
        assert_eq!(v["prompt"], "<|im_start|>");
        assert_eq!(v["logprobs"], 5);
        assert!(v.get("top_logprobs").is_none());
        assert!(v.get("messages").is_none());
        // Even with `api: completions`, text is fine; a chat is refused.
        let mut c = config();
        c.api = Api::Completions;
        assert_eq!(body(&c, &req).0.route, Route::Completions);
        let chat = GenerationRequest::new(Prompt::user("q"), SamplingParams::default());
        assert!(matches!(
            plan_err(&c, &chat),
            BackendError::InvalidRequest(InvalidRequest {
                field: "prompt",
                ..
            })
        ));
    }

    fn plan_err(c: &OpenAiConfig, r: &GenerationRequest) -> BackendError {
        plan(c, "b", r).expect_err("refused")
    }

    #[test]
    fn extras_pass_through_and_ponder_fields_win() {
        let params = SamplingParams {
            temperature: Some(0.2),
            ..Default::default()
        };
        let mut req = GenerationRequest::new(Prompt::user("q"), params);
        for (k, v) in [
            ("temperature", json!(1.5)),
            ("include_stop_str_in_output", json!(true)),
            ("chat_template_kwargs", json!({"enable_thinking": false})),
            ("top_k", json!(50)),
            ("stream", json!(false)),
            ("n", json!(8)),
            ("logprobs", json!(true)),
            ("model", json!("other")),
        ] {
            req.extra.insert(k.into(), v);
        }
        let (_, v) = body(&config(), &req);
        assert_eq!(v["temperature"], 0.2, "Ponder's value wins");
        assert_eq!(v["include_stop_str_in_output"], true);
        assert_eq!(v["chat_template_kwargs"]["enable_thinking"], false);
        assert_eq!(v["top_k"], 50, "an unset Ponder field may come from extra");
        assert_eq!(v["stream"], true);
        assert!(v.get("n").is_none(), "n is reserved even when 1");
        assert!(v.get("logprobs").is_none(), "logprobs are reserved");
        assert_eq!(v["model"], "m");
    }

    #[test]
    fn stop_strings_beyond_the_limit_are_matched_client_side() {
        let params = SamplingParams {
            stop: (0..6).map(|i| format!("<{i}>")).collect(),
            ..Default::default()
        };
        let req = GenerationRequest::new(Prompt::user("q"), params);
        let mut c = config();
        c.max_stop_strings = Some(4);
        let (plan, v) = body(&c, &req);
        assert_eq!(v["stop"], json!(["<0>", "<1>", "<2>", "<3>"]));
        assert_eq!(plan.client_stops, ["<4>", "<5>"]);
        c.max_stop_strings = Some(0);
        let (plan, v) = body(&c, &req);
        assert!(v.get("stop").is_none());
        assert_eq!(plan.client_stops.len(), 6);
        c.max_stop_strings = None;
        let (plan, v) = body(&c, &req);
        assert_eq!(v["stop"].as_array().map(Vec::len), Some(6));
        assert!(plan.client_stops.is_empty());
    }

    #[test]
    fn split_bodies_carry_their_own_n_and_seed() {
        let params = SamplingParams {
            n: 3,
            seed: Some(7),
            ..Default::default()
        };
        let req = GenerationRequest::new(Prompt::user("q"), params);
        let c = config();
        let plan = plan(&c, "b", &req).expect("valid");
        let one: Value =
            serde_json::from_slice(&build_body(&c, &req, &plan, 1, Some(9)).expect("builds"))
                .expect("json");
        assert!(one.get("n").is_none());
        assert_eq!(one["seed"], 9);
    }

    #[test]
    fn capability_checks() {
        let mut c = config();
        c.prefix_continuation = false;
        let prefill = GenerationRequest::new(
            Prompt::prefill(vec![Message::user("q")], "a"),
            SamplingParams::default(),
        );
        assert!(matches!(
            plan_err(&c, &prefill),
            BackendError::Unsupported {
                capability: Capability::PrefixContinuation,
                ..
            }
        ));
        let mut c = config();
        c.max_top_logprobs = Some(5);
        let lp = GenerationRequest::new(
            Prompt::user("q"),
            SamplingParams {
                top_logprobs: Some(6),
                ..Default::default()
            },
        );
        assert!(matches!(
            plan_err(&c, &lp),
            BackendError::InvalidRequest(InvalidRequest {
                field: "top_logprobs",
                ..
            })
        ));
        c.max_top_logprobs = None;
        assert!(matches!(
            plan_err(&c, &lp),
            BackendError::Unsupported {
                capability: Capability::Logprobs,
                ..
            }
        ));
        let bad = GenerationRequest::new(
            Prompt::user("q"),
            SamplingParams {
                n: 0,
                ..Default::default()
            },
        );
        assert!(matches!(
            plan_err(&config(), &bad),
            BackendError::InvalidRequest(_)
        ));
    }
}
