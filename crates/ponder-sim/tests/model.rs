//! The simulated model's behaviour in aggregate: accuracy per difficulty, logprobs and process
//! rewards that track step correctness, marker replies.

mod common;

use common::*;
use ponder_sim::SimConfig;
use ponder_task::{check_solution, generate, Difficulty, Problem};
use serde_json::{json, Value};

/// Solves `problems` through the chat endpoint (concurrently, bounded) with logprobs.
async fn solve_all(c: &reqwest::Client, base: &str, problems: &[Problem]) -> Vec<Value> {
    let url = format!("{base}/chat/completions");
    let mut out = Vec::with_capacity(problems.len());
    for batch in problems.chunks(50) {
        let requests = batch.iter().enumerate().map(|(i, p)| {
            let body = json!({
                "messages": [{"role": "user", "content": p.prompt()}],
                "seed": i, "logprobs": true, "top_logprobs": 1,
            });
            let (c, url) = (c.clone(), url.clone());
            async move { post(&c, &url, &body).await.1 }
        });
        out.extend(futures_util::future::join_all(requests).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_per_difficulty_is_about_p_to_the_steps() {
    let sim = start(SimConfig {
        seed: 1,
        ..Default::default()
    })
    .await;
    let c = client();
    let accuracy = sim.config().step_accuracy;
    for (difficulty, p) in [
        (Difficulty::Easy, accuracy.easy),
        (Difficulty::Medium, accuracy.medium),
        (Difficulty::Hard, accuracy.hard),
    ] {
        let problems = generate(77, difficulty, 200);
        let replies = solve_all(&c, &sim.base_url(), &problems).await;
        let mut right = 0;
        let mut expected = 0.0;
        for (problem, reply) in problems.iter().zip(&replies) {
            let check = check_solution(problem, &message(reply, 0));
            // A wrong step carries on: right answer iff every step is right.
            if check.correct {
                right += 1;
                assert!(check.all_steps_valid, "{}", message(reply, 0));
            }
            expected += p.powi(problem.steps.len() as i32);
        }
        let measured = f64::from(right) / problems.len() as f64;
        let expected = expected / problems.len() as f64;
        assert!(
            (measured - expected).abs() < 0.08,
            "{difficulty}: measured {measured}, expected {expected}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_steps_have_lower_logprobs_and_carry_their_error() {
    let sim = start(SimConfig {
        seed: 2,
        ..Default::default()
    })
    .await;
    let c = client();
    let problems = generate(5, Difficulty::Hard, 60);
    let replies = solve_all(&c, &sim.base_url(), &problems).await;
    let (mut right_sum, mut right_n, mut wrong_sum, mut wrong_n) = (0.0, 0, 0.0, 0);
    let mut wrong_answers = 0;
    for (problem, reply) in problems.iter().zip(&replies) {
        let text = message(reply, 0);
        let check = check_solution(problem, &text);
        // Per line: the mean sampled logprob of its tokens.
        let content = reply["choices"][0]["logprobs"]["content"]
            .as_array()
            .expect("logprobs");
        let mut line_lps: Vec<Vec<f64>> = vec![Vec::new()];
        for entry in content {
            let token = entry["token"].as_str().expect("token");
            if token == "\n" {
                line_lps.push(Vec::new());
            } else {
                line_lps
                    .last_mut()
                    .expect("a line")
                    .push(entry["logprob"].as_f64().expect("lp"));
            }
        }
        for (step, lps) in check.steps.iter().zip(&line_lps) {
            let mean = lps.iter().sum::<f64>() / lps.len() as f64;
            if step.arithmetic_ok && step.consistent {
                right_sum += mean;
                right_n += 1;
            } else {
                wrong_sum += mean;
                wrong_n += 1;
                // The error propagates: the final answer is the wrong chain's result.
                assert!(!check.correct);
            }
        }
        if let Some(first) = check.first_error() {
            wrong_answers += 1;
            // Later steps carry the wrong value on: consistent with what was written.
            assert!(
                check.steps[first + 1..].iter().all(|s| s.consistent),
                "{text}"
            );
            let last = check.steps.last().expect("steps").parsed.result;
            assert_eq!(check.final_answer, Some(last), "{text}");
        }
    }
    assert!(
        right_n > 50 && wrong_n > 10 && wrong_answers > 10,
        "{right_n} {wrong_n}"
    );
    let (right_mean, wrong_mean) = (right_sum / right_n as f64, wrong_sum / wrong_n as f64);
    assert!(
        right_mean > wrong_mean + 0.2,
        "right {right_mean}, wrong {wrong_mean}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_rewards_are_higher_for_right_steps() {
    let sim = start(SimConfig {
        seed: 3,
        ..Default::default()
    })
    .await;
    let c = client();
    let problems = generate(6, Difficulty::Hard, 40);
    let replies = solve_all(&c, &sim.base_url(), &problems).await;
    let (mut right, mut wrong) = (Vec::new(), Vec::new());
    for (i, (problem, reply)) in problems.iter().zip(&replies).enumerate() {
        let text = message(reply, 0);
        let check = check_solution(problem, &text);
        let steps: Vec<&str> = text.lines().filter(|l| l.starts_with("Step")).collect();
        // Alternate the two PRM forms.
        let (url, input, reward_col) = if i % 2 == 0 {
            let mut input = format!("{} ", problem.question);
            for s in &steps {
                input.push_str(s);
                input.push_str(" ки\n");
            }
            (format!("http://{}/pooling", sim.addr()), input, 0)
        } else {
            let joined: String = steps.iter().map(|s| format!("{s}<extra_0>")).collect();
            let input = format!(
                "<|im_start|>system\nReason step by step.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n{joined}<|im_end|>",
                problem.question
            );
            (format!("{}/pooling", sim.base_url()), input, 1)
        };
        let (status, v) = post(&c, &url, &json!({"model": "prm", "input": [input]})).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["object"], "list");
        assert!(v["id"].as_str().expect("id").starts_with("pool-"));
        assert!(v["usage"]["prompt_tokens"].as_u64().expect("tokens") > 0);
        let item = &v["data"][0];
        assert_eq!(item["object"], "pooling");
        let rows = item["data"].as_array().expect("rows");
        assert_eq!(rows.len(), steps.len());
        let first_error = check.first_error().unwrap_or(usize::MAX);
        for (k, row) in rows.iter().enumerate() {
            let row: Vec<f64> = row
                .as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("p"))
                .collect();
            assert_eq!(row.len(), 2);
            assert!((row[0] + row[1] - 1.0).abs() < 1e-3);
            let reward = row[reward_col];
            if k < first_error {
                right.push(reward);
            } else {
                wrong.push(reward);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        right.len() > 40 && wrong.len() > 10,
        "{} {}",
        right.len(),
        wrong.len()
    );
    assert!(right.iter().all(|r| *r >= 0.7), "{right:?}");
    assert!(wrong.iter().all(|r| *r <= 0.45), "{wrong:?}");
    assert!(mean(&right) > mean(&wrong) + 0.4);

    // Generic text: about a half; `messages` input works too.
    let (_, v) = post(
        &c,
        &format!("http://{}/pooling", sim.addr()),
        &json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a<extra_0>b<extra_0>"}]}),
    )
    .await;
    let rows = v["data"][0]["data"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    for row in rows {
        let p = row[1].as_f64().expect("p");
        assert!((0.3..=0.7).contains(&p), "{p}");
    }
    let (status, v) = post(
        &c,
        &format!("http://{}/pooling", sim.addr()),
        &json!({"model": "prm"}),
    )
    .await;
    assert_eq!((status, &v["error"]["param"]), (400, &json!("input")));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marker_replies_end_with_the_asked_marker() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let url = format!("{}/chat/completions", sim.base_url());
    let ask = |system: &str, user: String, seed: u64| json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}], "seed": seed});
    let last_line = |v: &Value| message(v, 0).lines().last().unwrap_or_default().to_string();

    // Scores: a number 1–10.
    for seed in 0..10 {
        let (_, v) = post(
            &c,
            &url,
            &ask(
                "You are a strict grader.",
                "Rate this essay. End your reply with FINAL SCORE: <1-10>.".into(),
                seed,
            ),
        )
        .await;
        let line = last_line(&v);
        let score: u32 = line
            .strip_prefix("FINAL SCORE: ")
            .expect("marker")
            .parse()
            .expect("number");
        assert!((1..=10).contains(&score), "{line}");
    }
    // Selection among 3 numbered items.
    for seed in 0..10 {
        let user =
            "Which answer is best?\n1. red\n2. green\n3. blue\nReply with SELECTED ITEM: <number>."
                .to_string();
        let (_, v) = post(&c, &url, &ask("Pick one.", user, seed)).await;
        let line = last_line(&v);
        let item: usize = line
            .strip_prefix("SELECTED ITEM: ")
            .expect("marker")
            .parse()
            .expect("number");
        assert!((1..=3).contains(&item), "{line}");
    }
    // Another marker: a short word.
    let (_, v) = post(
        &c,
        &url,
        &ask(
            "Be brief.",
            "Is the sky blue? Output VERDICT: followed by your verdict.".into(),
            1,
        ),
    )
    .await;
    let line = last_line(&v);
    let word = line.strip_prefix("VERDICT: ").expect("marker");
    assert!(!word.is_empty() && !word.contains(' '), "{line}");

    // A judge shown a task solution scores right solutions higher than wrong ones.
    let problem = &generate(8, Difficulty::Medium, 1)[0];
    let right = problem.reference_solution();
    let s = problem.steps[0];
    let wrong = right.replacen(
        &ponder_task::render_step(1, s.op, s.lhs, s.rhs, s.result),
        &ponder_task::render_step(1, s.op, s.lhs, s.rhs, s.result + 3),
        1,
    );
    let judge = |solution: &str| {
        format!("Problem: {}\n\nProposed solution:\n{solution}\n\nJudge it and end with FINAL SCORE: <1-10>.", problem.question)
    };
    for seed in 0..5 {
        let (_, good) = post(&c, &url, &ask("Judge.", judge(&right), seed)).await;
        let (_, bad) = post(&c, &url, &ask("Judge.", judge(&wrong), seed)).await;
        let score = |v: &Value| -> u32 {
            last_line(v)
                .rsplit(' ')
                .next()
                .expect("n")
                .parse()
                .expect("number")
        };
        assert!(
            score(&good) >= 7 && score(&bad) <= 4,
            "{} / {}",
            score(&good),
            score(&bad)
        );
    }
    // A task question asking for an answer marker gets the solution and the marker.
    let (_, v) = post(
        &c,
        &url,
        &ask(
            "Solve.",
            format!("{}\nEnd with FINAL ANSWER: <number>.", problem.question),
            4,
        ),
    )
    .await;
    let text = message(&v, 0);
    assert!(
        text.contains("Step 1:") && text.contains("\\boxed{"),
        "{text}"
    );
    let answer = ponder_task::final_answer(&text).expect("boxed");
    assert_eq!(last_line(&v), format!("FINAL ANSWER: {answer}"));
    // No marker and no task: generic prose.
    let (_, v) = post(
        &c,
        &url,
        &ask("Be helpful.", "Tell me about the weather.".into(), 1),
    )
    .await;
    let text = message(&v, 0);
    assert!(text.len() > 40 && !text.contains(':'), "{text}");
    sim.shutdown().await;
}
