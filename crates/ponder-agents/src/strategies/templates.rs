//! Default prompt templates of the built-in strategies and functions. Each lists its variables;
//! the wording is ours, the variables and output markers are the spec's.

/// Planners. Variables: `context`, `prompt`. Marker: `PLAN:`.
pub const PLANNING: &str = "You are planning work for the agent system described below.

Agent system:
{context}

Task:
{prompt}

Write a detailed, step-by-step plan that this system can follow to complete the task. Number \
the steps, for example:
1. Call the first tool with the key facts of the task.
2. Call the second tool with what the first one returned.
3. Interpret the results.
4. Give the final answer to the user.

Start your reply with the line `PLAN:` and put the numbered steps after it.";

/// Query rewriting. Variables: `task`, `motivation`.
pub const QUERY_GENERATION: &str = "Rewrite the task below as one short search query that \
looks at it from a different angle, so that a similarity search also finds documents the \
original wording would miss.

Task: {task}
Why it is needed: {motivation}

Reply with the query only, nothing else.";

/// Multi-LLM generation. Variable: `prompt`.
pub const GENERATION: &str = "Answer the user's query below as well as you can.

Query:
{prompt}

Answer:";

/// Feedback on a plan. Variables: `context`, `original_prompt`, `plan`, `num_feedback`.
/// Marker: `FEEDBACK:`.
pub const FEEDBACK: &str = "You review plans for the agent system described below.

Agent system:
{context}

Task:
{original_prompt}

Plan under review:
{plan}

Give exactly {num_feedback} numbered points on the plan's strengths and weaknesses: does it \
cover the whole task, are its steps in a sensible order, does it use the tools well, does it \
handle edge cases, is it efficient?

Start your reply with the line `FEEDBACK:` and put the numbered points after it.";

/// Plan editing from feedback. Variables: `context`, `original_prompt`, `plan`, `feedback`.
/// Marker: `EDITED PLAN:`.
pub const EDITOR: &str = "You improve plans for the agent system described below.

Agent system:
{context}

Task:
{original_prompt}

Current plan:
{plan}

Feedback on the plan:
{feedback}

Rewrite the plan so that it addresses the feedback. Keep its numbered structure and add no \
explanations.

Start your reply with the line `EDITED PLAN:` followed by the new plan.";

/// Iterative refinement. Variables: `current_plan`, `context`, `original_prompt`.
/// Marker: `EDITED PLAN:`.
pub const REFINEMENT: &str = "You refine plans for the agent system described below.

Agent system:
{context}

Objective:
{original_prompt}

Current plan:
{current_plan}

Refine the plan so that the system achieves the objective better: fix gaps, wrong order and \
unneeded steps. Keep it numbered.

Start your reply with the line `EDITED PLAN:` followed by the refined plan.";

/// Motivation-aware summarisation. Variables: `task`, `motivation`, `output`.
pub const SUMMARY: &str = "Task: {task}
Why it is needed: {motivation}

Retrieved documents or tool result:
{output}

In at most two sentences, state what in the documents answers the task, in the light of why \
it is needed. Use only the documents. Reply with the summary only.";

/// Plan scoring. Variables: `original_prompt`, `context`, `plan`. Marker: `FINAL SCORE:`.
pub const PLAN_SCORING: &str = "You rate plans for the agent system described below.

Agent system:
{context}

Goal:
{original_prompt}

Plan:
{plan}

Rate the plan's quality and relevance to the goal from 1 (useless) to 10 (excellent). Explain \
briefly, then end your reply with a line `FINAL SCORE: <1-10>`.";

/// Agent-output scoring. Variables: `objective`, `input`, `output`. Marker: `FINAL SCORE:`.
pub const AGENT_SCORING: &str = "You rate the result of an agent.

Agent's objective:
{objective}

Input it was given:
{input}

Its result:
{output}

Rate the result's quality and relevance from 1 (useless) to 10 (excellent). Explain briefly, \
then end your reply with a line `FINAL SCORE: <1-10>`.";

/// Tool-output scoring. Variables: `task`, `motivation`, `output`. Marker: `FINAL SCORE:`.
pub const MOTIVATION_SCORING: &str = "A tool was called for a task.

Task: {task}
Why it was called: {motivation}

Tool output:
{output}

How well does the output fulfil the task, given why it was called? Answering one part of a \
larger question counts as satisfactory. Explain briefly, then end your reply with a line \
`FINAL SCORE: <1-10>` (10 = fully fulfilled).";

/// Plan selection. Variables: `original_prompt`, `context`, `plans`. Marker: `SELECTED PLAN:`.
pub const PLAN_SELECTION: &str = "You choose a plan for the agent system described below.

Agent system:
{context}

Task:
{original_prompt}

Candidate plans (with their feedback and scores where available):

{plans}

Pick the best plan for completeness, efficiency and effectiveness. Explain your choice \
briefly, then end your reply with a line `SELECTED PLAN: <number>`.";

/// Agent-output selection. Variables: `objective`, `input`, `results`. Marker: `SELECTED ITEM:`.
pub const AGENT_OUTPUT_SELECTION: &str = "Several runs of an agent produced the outputs below.

Agent's objective:
{objective}

Input:
{input}

Outputs:

{results}

Pick the output that best accomplishes the objective. Where several outputs reach the same \
answer, prefer that answer; among those, prefer the most complete and clearest output. Always \
choose one. Explain briefly, then end your reply with a line `SELECTED ITEM: <number>`.";

/// Output merging. Variables: `pipeline_type`, `objective`, `input`, `results`.
/// Marker: `MERGED OUTPUT:`.
pub const MERGING: &str = "Below are several {pipeline_type}.

Objective:
{objective}

Input:
{input}

Candidates:

{results}

Merge them into one comprehensive result that keeps their structure and tone and includes \
every useful part.

Start your reply with the line `MERGED OUTPUT:` followed by the merged result.";

/// Judge selection. Variables: `original_prompt`, `results`. Marker: `SELECTED ITEM:`.
pub const JUDGE_SELECTION: &str = "You are an impartial judge.

Query:
{original_prompt}

Candidate responses:

{results}

Pick the single best response for accuracy, helpfulness and clarity. Reply first with a line \
`SELECTED ITEM: <number>`, then give a short justification.";

/// Plan-select-execute agent context. Variables: `description`, `tools`.
pub const AGENT_CONTEXT: &str = "The agent: {description}

{tools}";

/// Plan-select-execute downstream prompt. Variables: `input_text`, `reasoning_output`.
pub const DOWNSTREAM: &str = "Conversation so far:
{input_text}

A plan that may help you answer (use it as guidance, not as an order):
{reasoning_output}

Answer the user's last message directly, following your own output format instructions.";

/// Plan-select-execute downstream prompt when no plan is available. Variable: `input_text`.
pub const DOWNSTREAM_NO_PLAN: &str = "Conversation so far:
{input_text}

Answer the user's last message directly, following your own output format instructions.";

/// Tool wrapper. Variables: `function_description`, `input_schema`, `output_schema`,
/// `task_description`.
pub const TOOL_WRAPPER: &str = "Turn a task description into the input of a function.

Function: {function_description}

Its input must be JSON matching this JSON Schema:
{input_schema}

It returns JSON matching this JSON Schema:
{output_schema}

Task description:
{task_description}

Reply with the JSON input only. If the task description does not contain enough information \
to fill the required fields, reply with exactly NOT ENOUGH INFORMATION.";
