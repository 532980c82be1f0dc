//! Turning a request body into a validated job before any work: the pass-through generation
//! request, or the strategy, its parameters, its input and its seed.
//!
//! The strategy comes from (highest first) the path (`/v1/{strategy}/chat/completions`), the
//! body's `ponder.strategy`, or the model alias. Parameters come from the alias, then the body's
//! `ponder` object; the OpenAI fields `temperature`, `top_p`, `max_tokens` and `stop` fill the
//! strategy parameters of the same name that neither sets.

use std::sync::Arc;
use std::time::Duration;

use ponder_core::{
    GenerationRequest, Message, Params, Prompt, SamplingParams, Strategy, StrategyFactory,
    StrategyInput,
};
use ponder_openai::wire::{ChatCompletionRequest, CompletionRequest, PromptInput, StopSpec};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Which OpenAI endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// A validated request.
pub struct Job {
    pub endpoint: Endpoint,
    /// The model name as asked (echoed in responses).
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub deadline: Duration,
    pub work: Work,
}

/// What the request asks of the upstream.
pub enum Work {
    /// No strategy: one upstream call, passed through.
    Passthrough {
        request: GenerationRequest,
        logprobs: bool,
    },
    /// A strategy run.
    Strategy(StrategyJob),
}

/// A strategy, built and checked, with its input.
pub struct StrategyJob {
    pub name: String,
    pub strategy: Arc<dyn Strategy>,
    pub input: StrategyInput,
    pub details: bool,
}

/// The body's `ponder` object, split into Ponder's own keys and strategy parameters.
#[derive(Debug, Default)]
struct PonderOptions {
    strategy: Option<String>,
    seed: Option<u64>,
    details: bool,
    deadline_ms: Option<u64>,
    params: Params,
}

impl PonderOptions {
    fn parse(value: Option<Value>) -> Result<Self, ApiError> {
        let object = match value {
            None | Some(Value::Null) => return Ok(PonderOptions::default()),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(ApiError::invalid("ponder", "`ponder` must be an object")),
        };
        let mut out = PonderOptions::default();
        for (key, value) in object {
            match key.as_str() {
                "strategy" => match value {
                    Value::String(s) => out.strategy = Some(s),
                    _ => {
                        return Err(ApiError::invalid(
                            "ponder.strategy",
                            "`ponder.strategy` must be a string",
                        ))
                    }
                },
                "seed" => {
                    out.seed = Some(value.as_u64().ok_or_else(|| {
                        ApiError::invalid("ponder.seed", "`ponder.seed` must be an integer ≥ 0")
                    })?)
                }
                "details" => {
                    out.details = value.as_bool().ok_or_else(|| {
                        ApiError::invalid("ponder.details", "`ponder.details` must be a boolean")
                    })?
                }
                "deadline_ms" => {
                    out.deadline_ms = Some(value.as_u64().filter(|v| *v > 0).ok_or_else(|| {
                        ApiError::invalid(
                            "ponder.deadline_ms",
                            "`ponder.deadline_ms` must be an integer ≥ 1",
                        )
                    })?)
                }
                _ => {
                    out.params.insert(key, value);
                }
            }
        }
        Ok(out)
    }
}

/// Parses a JSON body into `T`, naming the offending field on error.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<(T, Option<Value>), ApiError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let ponder = object.remove("ponder");
    let parsed = serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        let mut path = e.path().to_string();
        if path == "." {
            // A missing field is reported at the parent: take its name from the message.
            match inner
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                Some(field) => path = field.to_string(),
                None => return ApiError::bad_request(format!("invalid body: {inner}")),
            }
        }
        ApiError::invalid(path.clone(), format!("invalid field `{path}`: {inner}"))
    })?;
    Ok((parsed, ponder))
}

/// Converts the optional wire seed (a signed integer) to a core seed.
fn wire_seed(seed: Option<i64>) -> Result<Option<u64>, ApiError> {
    match seed {
        None => Ok(None),
        Some(s) => u64::try_from(s)
            .map(Some)
            .map_err(|_| ApiError::invalid("seed", format!("`seed` must be ≥ 0, got {s}"))),
    }
}

/// The OpenAI fields a strategy parameter of the same name takes over.
struct OpenAiFields {
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u32>,
    stop: Option<StopSpec>,
    seed: Option<u64>,
    n: Option<u32>,
    logprobs: bool,
}

/// `/v1/chat/completions`: validates the body and resolves the strategy, if any.
pub fn parse_chat(
    state: &AppState,
    body: &[u8],
    path_strategy: Option<&str>,
) -> Result<Job, ApiError> {
    let (req, ponder): (ChatCompletionRequest, _) = parse_body(body)?;
    let ponder = PonderOptions::parse(ponder)?;
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        messages.push(m.to_core().ok_or_else(|| {
            ApiError::invalid(
                format!("messages[{i}].role"),
                format!("unknown role `{}`", m.role),
            )
        })?);
    }
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must hold at least one message",
        ));
    }
    let max_tokens = req.max_tokens.or(req.max_completion_tokens);
    let fields = OpenAiFields {
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens,
        stop: req.stop.clone(),
        seed: wire_seed(req.seed)?,
        n: req.n,
        logprobs: req.logprobs == Some(true) || req.top_logprobs.is_some(),
    };
    let stream = req.stream == Some(true);
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let deadline = deadline(state, &ponder);
    let model = req.model.clone();
    let work = match select(state, &model, path_strategy, &ponder)? {
        Some((factory, name, params, alias_seed)) => Work::Strategy(strategy_job(
            state, factory, name, params, alias_seed, &ponder, &fields, messages,
        )?),
        None => {
            let top_logprobs = match (req.logprobs, req.top_logprobs) {
                (Some(true), k) | (None, k @ Some(_)) => Some(k.unwrap_or(0)),
                _ => None,
            };
            let top_logprobs = match top_logprobs {
                None => None,
                Some(k) => Some(u8::try_from(k).map_err(|_| {
                    ApiError::invalid("top_logprobs", format!("must be in 0..=20, got {k}"))
                })?),
            };
            let mut extra = req.extra.clone();
            put(&mut extra, "presence_penalty", req.presence_penalty);
            put(&mut extra, "frequency_penalty", req.frequency_penalty);
            put(
                &mut extra,
                "add_generation_prompt",
                req.add_generation_prompt,
            );
            let params = SamplingParams {
                temperature: req.temperature,
                top_p: req.top_p,
                top_k: req
                    .top_k
                    .and_then(|k| u32::try_from(k).ok())
                    .filter(|k| *k > 0),
                min_p: req.min_p,
                max_tokens,
                min_tokens: req.min_tokens,
                stop: req.stop.clone().map(StopSpec::into_vec).unwrap_or_default(),
                seed: fields.seed,
                n: req.n.unwrap_or(1),
                top_logprobs,
            };
            let prompt = Prompt::Chat {
                messages,
                continue_final_message: req.continue_final_message == Some(true),
            };
            Work::Passthrough {
                request: passthrough_request(state, prompt, params, extra)?,
                logprobs: top_logprobs.is_some(),
            }
        }
    };
    Ok(Job {
        endpoint: Endpoint::Chat,
        model,
        stream,
        include_usage,
        deadline,
        work,
    })
}

/// `/v1/completions`: a raw prompt. With a strategy the prompt is the user message.
pub fn parse_completion(
    state: &AppState,
    body: &[u8],
    path_strategy: Option<&str>,
) -> Result<Job, ApiError> {
    let (req, ponder): (CompletionRequest, _) = parse_body(body)?;
    let ponder = PonderOptions::parse(ponder)?;
    let prompt = match &req.prompt {
        PromptInput::Text(t) => t.clone(),
        PromptInput::Texts(list) if list.len() == 1 => list[0].clone(),
        PromptInput::Texts(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "send one prompt per request (a list of prompts is not supported)",
            ))
        }
        PromptInput::Tokens(_) | PromptInput::TokenBatches(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "token-id prompts are not supported; send text",
            ))
        }
    };
    if req.echo == Some(true) {
        return Err(ApiError::invalid("echo", "`echo` is not supported"));
    }
    if req.best_of.is_some_and(|b| b > 1) {
        return Err(ApiError::invalid(
            "best_of",
            "`best_of` is not supported; choose the best-of-n strategy through `ponder`",
        ));
    }
    let fields = OpenAiFields {
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: req.max_tokens,
        stop: req.stop.clone(),
        seed: wire_seed(req.seed)?,
        n: req.n,
        logprobs: req.logprobs.is_some(),
    };
    let stream = req.stream == Some(true);
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let deadline = deadline(state, &ponder);
    let model = req.model.clone();
    let work = match select(state, &model, path_strategy, &ponder)? {
        Some((factory, name, params, alias_seed)) => Work::Strategy(strategy_job(
            state,
            factory,
            name,
            params,
            alias_seed,
            &ponder,
            &fields,
            vec![Message::user(prompt)],
        )?),
        None => {
            let top_logprobs = match req.logprobs {
                None => None,
                Some(k) => Some(u8::try_from(k).map_err(|_| {
                    ApiError::invalid("logprobs", format!("must be in 0..=20, got {k}"))
                })?),
            };
            let mut extra = req.extra.clone();
            put(&mut extra, "presence_penalty", req.presence_penalty);
            put(&mut extra, "frequency_penalty", req.frequency_penalty);
            let params = SamplingParams {
                temperature: req.temperature,
                top_p: req.top_p,
                top_k: req
                    .top_k
                    .and_then(|k| u32::try_from(k).ok())
                    .filter(|k| *k > 0),
                min_p: req.min_p,
                max_tokens: req.max_tokens,
                min_tokens: req.min_tokens,
                stop: req.stop.clone().map(StopSpec::into_vec).unwrap_or_default(),
                seed: fields.seed,
                n: req.n.unwrap_or(1),
                top_logprobs,
            };
            Work::Passthrough {
                request: passthrough_request(state, Prompt::Text(prompt), params, extra)?,
                logprobs: top_logprobs.is_some(),
            }
        }
    };
    Ok(Job {
        endpoint: Endpoint::Completions,
        model,
        stream,
        include_usage,
        deadline,
        work,
    })
}

fn put<T: serde::Serialize>(extra: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(v) = value.and_then(|v| serde_json::to_value(v).ok()) {
        extra.insert(key.to_string(), v);
    }
}

fn deadline(state: &AppState, ponder: &PonderOptions) -> Duration {
    let most = state.limits.deadline;
    match ponder.deadline_ms {
        Some(ms) => Duration::from_millis(ms).min(most),
        None => most,
    }
}

/// Checks a pass-through request against the limits and the core's ranges.
fn passthrough_request(
    state: &AppState,
    prompt: Prompt,
    mut params: SamplingParams,
    extra: Map<String, Value>,
) -> Result<GenerationRequest, ApiError> {
    let limits = &state.limits;
    if u64::from(params.n) > limits.max_n {
        return Err(ApiError::invalid(
            "n",
            format!(
                "`n` is {}; this server allows at most {}",
                params.n, limits.max_n
            ),
        ));
    }
    match params.max_tokens {
        Some(t) if u64::from(t) > limits.max_tokens => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "`max_tokens` is {t}; this server allows at most {}",
                    limits.max_tokens
                ),
            ))
        }
        Some(_) => {}
        None => params.max_tokens = u32::try_from(limits.max_tokens).ok(),
    }
    let request = GenerationRequest {
        prompt,
        params,
        extra,
    };
    request
        .validate()
        .map_err(|e| ApiError::invalid(e.field, e.to_string()))?;
    Ok(request)
}

/// The strategy a request selects: its factory, name, merged parameters and the alias's seed.
type Selection = (Arc<dyn StrategyFactory>, String, Params, Option<u64>);

fn select(
    state: &AppState,
    model: &str,
    path_strategy: Option<&str>,
    ponder: &PonderOptions,
) -> Result<Option<Selection>, ApiError> {
    let alias = if model == state.model {
        None
    } else if let Some(a) = state.config.aliases.get(model) {
        Some(a)
    } else {
        return Err(ApiError::unknown_model(model, &state.model_names()));
    };
    if let (Some(path), Some(body)) = (path_strategy, ponder.strategy.as_deref()) {
        if path != body {
            return Err(ApiError::invalid(
                "ponder.strategy",
                format!("the path names strategy `{path}` but `ponder.strategy` is `{body}`"),
            ));
        }
    }
    let name = path_strategy
        .map(str::to_string)
        .or_else(|| ponder.strategy.clone())
        .or_else(|| alias.map(|a| a.strategy.clone()));
    let Some(name) = name else {
        if !ponder.params.is_empty() {
            let key = ponder.params.keys().next().cloned().unwrap_or_default();
            return Err(ApiError::invalid(
                format!("ponder.{key}"),
                "strategy parameters were given but no strategy: set `ponder.strategy`, use a \
                 model alias, or the path /v1/{strategy}/chat/completions",
            ));
        }
        return Ok(None);
    };
    let factory = match state.registry.get(&name) {
        Ok(f) => f.clone(),
        Err(e) if path_strategy.is_some() => return Err(ApiError::unknown_strategy_path(&e)),
        Err(e) => return Err(e.into()),
    };
    // Alias parameters apply only to the alias's own strategy.
    let mut params = match alias {
        Some(a) if a.strategy == name => a.params.clone(),
        _ => Params::new(),
    };
    params.extend(ponder.params.clone());
    let alias_seed = alias.filter(|a| a.strategy == name).and_then(|a| a.seed);
    Ok(Some((factory, name, params, alias_seed)))
}

#[allow(clippy::too_many_arguments)]
fn strategy_job(
    state: &AppState,
    factory: Arc<dyn StrategyFactory>,
    name: String,
    mut params: Params,
    alias_seed: Option<u64>,
    ponder: &PonderOptions,
    fields: &OpenAiFields,
    messages: Vec<Message>,
) -> Result<StrategyJob, ApiError> {
    if fields.n.is_some_and(|n| n > 1) {
        return Err(ApiError::invalid(
            "n",
            "a strategy returns one choice; set the number of samples with `ponder.n`",
        ));
    }
    if fields.logprobs {
        return Err(ApiError::invalid(
            "logprobs",
            "log-probabilities are not returned with a strategy",
        ));
    }
    let info = factory.info();
    let knows = |p: &str| info.params.iter().any(|s| s.name == p);
    let mut fill = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            if knows(key) && !params.contains_key(key) {
                params.insert(key.to_string(), v);
            }
        }
    };
    fill("temperature", fields.temperature.map(Value::from));
    fill("top_p", fields.top_p.map(Value::from));
    fill("max_tokens", fields.max_tokens.map(Value::from));
    fill(
        "stop",
        fields.stop.clone().map(|s| Value::from(s.into_vec())),
    );
    // Limits on the strategy's `n` and `max_tokens`: an explicit value over the limit is an
    // error; a default over it is lowered to it.
    let limits = &state.limits;
    for (key, most) in [("n", limits.max_n), ("max_tokens", limits.max_tokens)] {
        let Some(spec) = info.params.iter().find(|s| s.name == key) else {
            continue;
        };
        match params.get(key) {
            Some(v) => {
                if let Some(asked) = v.as_u64() {
                    if asked > most {
                        return Err(ApiError::invalid(
                            format!("ponder.{key}"),
                            format!("`{key}` is {asked}; this server allows at most {most}"),
                        ));
                    }
                }
            }
            None => {
                if spec.default.parse::<u64>().is_ok_and(|d| d > most) {
                    params.insert(key.to_string(), Value::from(most));
                }
            }
        }
    }
    let backend = state.backend.clone();
    let strategy = factory.build(&params, backend.name(), &backend.capabilities())?;
    let seed = ponder
        .seed
        .or(alias_seed)
        .or(fields.seed)
        .unwrap_or_else(|| state.fresh_seed());
    Ok(StrategyJob {
        name,
        strategy,
        input: StrategyInput { messages, seed },
        details: ponder.details,
    })
}
