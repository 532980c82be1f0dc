//! Chat templates: the Jinja template stored in a GGUF file, rendered with minijinja.
//!
//! Hugging Face templates call Python string methods (`.strip()`, `.startswith()`, …), so the
//! environment has minijinja-contrib's Python-compatibility callback, HF's `raise_exception`,
//! and HF's `trim_blocks`/`lstrip_blocks` settings.
//!
//! Continuing a final assistant message (assistant prefill) renders the whole chat without a
//! generation prompt and cuts the text right after that message's content, as vLLM does with
//! `continue_final_message`; where the content cannot be found (a template that rewrites it),
//! the chat without it is rendered with a generation prompt and the content appended.

use minijinja::{context, Environment, Error, ErrorKind, Value};
use ponder_core::{Message, Role};

/// Why a chat could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the model's chat template does not compile: {0}")]
    Compile(String),
    #[error("the model's chat template failed on this chat: {0}")]
    Render(String),
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the strings templates may refer to.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TemplateError::Compile(format!("{e:#}")))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    fn render_raw(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        let extra = Value::from_serialize(kwargs);
        let ctx = context! {
            messages => msgs,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            ..extra
        };
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Compile(format!("{e:#}")))?;
        template
            .render(ctx)
            .map_err(|e| TemplateError::Render(format!("{e:#}")))
    }

    /// Renders a chat. With `continue_final_message`, the last (assistant) message is left open
    /// for the model to continue. `kwargs` are extra template variables (`enable_thinking`, …).
    pub fn render(
        &self,
        messages: &[Message],
        continue_final_message: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let last = messages.last();
        if !continue_final_message || last.map(|m| m.role) != Some(Role::Assistant) {
            return self.render_raw(messages, true, kwargs);
        }
        let content = last.map(|m| m.content.as_str()).unwrap_or_default();
        if !content.is_empty() {
            let full = self.render_raw(messages, false, kwargs)?;
            if let Some(at) = full.rfind(content) {
                return Ok(full[..at + content.len()].to_string());
            }
        }
        let head = self.render_raw(&messages[..messages.len() - 1], true, kwargs)?;
        Ok(head + content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny::CHATML_TEMPLATE;

    fn none() -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    #[test]
    fn chatml_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML_TEMPLATE, "", "<|im_end|>").expect("test setup");
        let out = t
            .render(
                &[Message::system("Be brief."), Message::user("2+2?")],
                false,
                &none(),
            )
            .expect("test setup");
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn continue_final_message_leaves_the_turn_open() {
        let t = ChatTemplate::new(CHATML_TEMPLATE, "", "<|im_end|>").expect("test setup");
        let out = t
            .render(
                &[Message::user("q"), Message::assistant("Step 1: add")],
                true,
                &none(),
            )
            .expect("test setup");
        assert_eq!(
            out,
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nStep 1: add"
        );
    }

    #[test]
    fn hf_style_template_with_python_methods_and_kwargs() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}[{{ m['role'].upper() }}] {{ m['content'].strip() }}\n{% endfor %}{% if add_generation_prompt %}[A]{% if enable_thinking is defined and not enable_thinking %} /no_think{% endif %}{% endif %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").expect("test setup");
        let mut kw = none();
        kw.insert("enable_thinking".into(), serde_json::Value::Bool(false));
        let out = t
            .render(&[Message::user("  hi  ")], false, &kw)
            .expect("test setup");
        assert_eq!(out, "<s>[USER] hi\n[A] /no_think");
        let err = t
            .render(&[Message::system("x")], false, &none())
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("no system"), "{err}");
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
