//! The HTTP layer: routes, the generation and pooling handlers, fault injection, slots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ponder_core::{stable_hash, SeededRng};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::config::SimConfig;
use crate::error::ApiError;
use crate::generate::{self, ChoicePlan, Limits, PromptView};
use crate::prefix_cache::{self, PrefixCache};
use crate::prm;
use crate::stats::{add, Counters};
use crate::stream::{self, ResponseMeta, SimStream, Usage};
use crate::wire::{self, Endpoint, GenRequest};

/// The `created` timestamp of every response: fixed, so that a response depends only on the
/// seeds and the request (2025-06-15T00:00:00Z).
pub(crate) const CREATED: u64 = 1_749_945_600;

/// State shared by all handlers and streams of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: SimConfig,
    pub counters: Counters,
    pub cache: Mutex<PrefixCache>,
    pub slots: Option<Arc<Semaphore>>,
    /// Generation requests seen so far: the arrival number draws faults and stands in for a
    /// missing request seed.
    pub arrivals: AtomicU64,
}

impl Shared {
    pub fn new(config: SimConfig) -> Self {
        let slots = (config.latency.slots > 0).then(|| {
            Arc::new(Semaphore::new(
                config.latency.slots.min(Semaphore::MAX_PERMITS),
            ))
        });
        Shared {
            cache: Mutex::new(PrefixCache::new(config.prefix_cache_blocks)),
            counters: Counters::default(),
            slots,
            arrivals: AtomicU64::new(0),
            config,
        }
    }
}

/// The routes of the simulator.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/pooling", post(pooling))
        .route("/v1/pooling", post(pooling))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(shared)
}

async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    add(&shared.counters.chat_requests, 1);
    generation(shared, Endpoint::Chat, body).await
}

async fn completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    add(&shared.counters.completion_requests, 1);
    generation(shared, Endpoint::Completions, body).await
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let data: Vec<Value> = shared
        .config
        .model_names
        .iter()
        .map(|name| {
            json!({"id": name, "object": "model", "created": CREATED, "owned_by": "ponder-sim"})
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.counters.snapshot()).into_response()
}

async fn not_found(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    add(&shared.counters.invalid_requests, 1);
    ApiError::not_found(uri.path()).into_response()
}

/// Faults drawn for one generation request from the server seed and its arrival number.
#[derive(Debug, Clone, Copy)]
struct Faults {
    error: Option<(u16, Option<u32>)>,
    stall: bool,
    /// Where to cut or corrupt the response, as a fraction of it.
    cut: Option<f64>,
    malformed: Option<f64>,
}

impl Faults {
    fn draw(config: &SimConfig, arrival: u64) -> Self {
        let f = &config.faults;
        let mut rng = SeededRng::derive(
            config.seed ^ arrival.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            "faults",
        );
        // Every draw happens whatever the rates, so one rate does not shift another's choices.
        let error = rng.chance(f.error_rate);
        let drawn_status = [429, 500, 503][rng.below(3) as usize];
        let retry_after = rng.below(2) as u32;
        let stall = rng.chance(f.stall_rate);
        let cut = rng.chance(f.cut_rate);
        let cut_at = 0.25 + 0.5 * rng.next_f64();
        let malformed = rng.chance(f.malformed_rate);
        let malformed_at = rng.next_f64();
        let status = f.error_status.unwrap_or(drawn_status);
        Faults {
            error: error.then_some((status, (status == 429).then_some(retry_after))),
            stall,
            cut: cut.then_some(cut_at),
            malformed: malformed.then_some(malformed_at),
        }
    }
}

/// The seed of a request's generation: from the server seed and the request's `seed` (its
/// arrival number when it has none). At temperature 0 the model is greedy: one seed whatever
/// the request seed, and every choice the same.
fn generation_seed(config: &SimConfig, request: &GenRequest, arrival: u64) -> (u64, bool) {
    let greedy = request.temperature == 0.0;
    let label = if greedy {
        "greedy".to_string()
    } else {
        format!("request/{}", request.seed.unwrap_or(arrival))
    };
    (SeededRng::derive(config.seed, &label).next_u64(), greedy)
}

async fn generation(shared: Arc<Shared>, endpoint: Endpoint, body: Bytes) -> Response {
    let counters = &shared.counters;
    add(&counters.requests, 1);
    let arrival = shared.arrivals.fetch_add(1, Ordering::Relaxed);
    let faults = Faults::draw(&shared.config, arrival);
    if let Some((status, retry_after)) = faults.error {
        add(&counters.errors_injected, 1);
        return ApiError::injected(status, retry_after).into_response();
    }
    let request = match wire::parse_object(&body)
        .and_then(|obj| wire::parse_generation(endpoint, &obj, &shared.config))
    {
        Ok(r) => r,
        Err(e) => {
            add(&counters.invalid_requests, 1);
            return e.into_response();
        }
    };

    let view = PromptView::new(&request.prompt);
    let (hashes, prompt_tokens) = prefix_cache::block_hashes(&view.rendered);
    let cached_tokens = match shared.cache.lock() {
        Ok(mut cache) => cache.lookup_and_insert(&hashes, prompt_tokens),
        Err(poisoned) => poisoned
            .into_inner()
            .lookup_and_insert(&hashes, prompt_tokens),
    };
    add(&counters.prompt_tokens, prompt_tokens as u64);
    add(&counters.cached_tokens, cached_tokens as u64);

    let (seed, greedy) = generation_seed(&shared.config, &request, arrival);
    let prompt_hash = generate::prompt_hash(&view.rendered);
    let plans = plan_choices(&shared.config, &request, &view, seed, prompt_hash, greedy);
    let usage = Usage {
        prompt_tokens,
        completion_tokens: plans.iter().map(|p| p.total_tokens).sum(),
        cached_tokens,
    };
    let id_prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completions => "cmpl",
    };
    let meta = ResponseMeta {
        id: format!("{id_prefix}-{:016x}", seed ^ prompt_hash),
        model: request.model.clone(),
        endpoint,
        logprobs: request.logprobs,
        include_usage: request.include_usage,
    };

    if faults.stall {
        add(&counters.stalls_injected, 1);
        tokio::time::sleep(Duration::from_millis(shared.config.faults.stall_ms)).await;
    }
    if request.stream {
        if faults.cut.is_some() {
            add(&counters.cuts_injected, 1);
        }
        if faults.malformed.is_some() {
            add(&counters.malformed_injected, 1);
        }
        add(&counters.streams_started, 1);
        let body = SimStream::new(
            shared.clone(),
            plans,
            meta,
            usage,
            faults.cut,
            faults.malformed,
        );
        let mut response = Body::from_stream(body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return response;
    }

    // Non-streaming: hold a slot for as long as the stream would take.
    {
        let _slot = stream::acquire_slot(shared.clone()).await;
        let longest = plans.iter().map(|p| p.total_tokens).max().unwrap_or(0);
        let latency = &shared.config.latency;
        let wait = latency.ttft_ms + latency.tpot_ms * (longest.saturating_sub(1) as u64);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
    add(&counters.tokens_generated, usage.completion_tokens as u64);
    add(&counters.completions, plans.len() as u64);
    let json = stream::full_response(&meta, &plans, &usage).to_string();
    if let Some(at) = faults.malformed {
        add(&counters.malformed_injected, 1);
        let cut = char_boundary(&json, (json.len() as f64 * at.clamp(0.1, 0.9)) as usize);
        return json_body(json[..cut].to_string());
    }
    if let Some(at) = faults.cut {
        add(&counters.cuts_injected, 1);
        let cut = char_boundary(&json, (json.len() as f64 * at) as usize);
        let first = Bytes::copy_from_slice(&json.as_bytes()[..cut]);
        let mut response = Body::from_stream(stream::CutBody::new(first)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }
    json_body(json)
}

fn json_body(json: String) -> Response {
    let mut response = (StatusCode::OK, json).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The largest char boundary of `s` at or before `at`.
fn char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn plan_choices(
    config: &SimConfig,
    request: &GenRequest,
    view: &PromptView,
    seed: u64,
    prompt_hash: u64,
    greedy: bool,
) -> Vec<ChoicePlan> {
    let analysis = generate::analyse(view);
    let limits = Limits {
        max_tokens: request.max_tokens,
        min_tokens: request.min_tokens,
        stop: &request.stop,
        include_stop: request.include_stop,
        logprobs: request.logprobs.is_some(),
    };
    let mut plans: Vec<ChoicePlan> = Vec::with_capacity(request.n);
    for index in 0..request.n {
        if greedy && index > 0 {
            plans.push(plans[0].clone());
            continue;
        }
        let choice_seed = generate::choice_seed(seed, prompt_hash, index);
        let mut rng = SeededRng::derive(choice_seed, "draft");
        let draft = generate::draft(view, &analysis, &config.step_accuracy, &mut rng);
        plans.push(generate::plan(draft, &limits, choice_seed));
    }
    plans
}

async fn pooling(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let counters = &shared.counters;
    add(&counters.requests, 1);
    add(&counters.pooling_requests, 1);
    match pooling_response(&shared, &body) {
        Ok(value) => Json(value).into_response(),
        Err(e) => {
            add(&counters.invalid_requests, 1);
            e.into_response()
        }
    }
}

fn pooling_response(shared: &Shared, body: &[u8]) -> Result<Value, ApiError> {
    let obj = wire::parse_object(body)?;
    let texts: Vec<String> = match (obj.get("input"), obj.get("messages")) {
        (Some(Value::String(s)), _) => vec![s.clone()],
        (Some(Value::Array(items)), _) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid(
                    "`input` must be a string or a list of strings (token ids are not supported)",
                    Some("input"),
                )
            })?,
        (Some(_), _) => {
            return Err(ApiError::invalid(
                "`input` must be a string or a non-empty list of strings",
                Some("input"),
            ))
        }
        (None, Some(Value::Array(items))) => {
            let messages = wire::parse_messages(items)?;
            vec![generate::render_chat(&messages, false, false)]
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "`messages` must be a list of messages",
                Some("messages"),
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "a pooling request needs `input` or `messages`",
                Some("input"),
            ))
        }
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) => m.clone(),
        _ => shared
            .config
            .model_names
            .get(1)
            .unwrap_or(&shared.config.model_names[0])
            .clone(),
    };
    let mut prompt_tokens = 0;
    let mut rows_total = 0;
    let mut hash = shared.config.seed;
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            prompt_tokens += crate::tokenizer::count_tokens(text);
            hash ^= stable_hash(text.as_bytes()).rotate_left(index as u32 % 64);
            let rows = prm::score_text(text, shared.config.seed);
            rows_total += rows.len();
            json!({"index": index, "object": "pooling", "data": rows})
        })
        .collect();
    add(&shared.counters.pooling_rows, rows_total as u64);
    Ok(json!({
        "id": format!("pool-{hash:016x}"),
        "object": "list",
        "created": CREATED,
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
}
