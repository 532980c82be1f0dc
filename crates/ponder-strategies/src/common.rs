//! Small pieces every strategy uses: the messages sent, extraction settings, parameter errors.

use ponder_answer::ExtractOptions;
use ponder_core::{BuildError, Message, Role};

/// `messages` with `system_prompt` put first when they have no system message of their own and
/// the prompt is not empty.
pub(crate) fn with_system_prompt(messages: &[Message], system_prompt: &str) -> Vec<Message> {
    let has_system = messages.iter().any(|m| m.role == Role::System);
    let mut out = Vec::with_capacity(messages.len() + 1);
    if !has_system && !system_prompt.is_empty() {
        out.push(Message::system(system_prompt));
    }
    out.extend(messages.iter().cloned());
    out
}

/// The default extraction settings with the last-number fall-back set.
pub(crate) fn extract_options(last_number_fallback: bool) -> ExtractOptions {
    let mut options = ExtractOptions::default();
    set_fallback(&mut options, last_number_fallback);
    options
}

fn set_fallback(options: &mut ExtractOptions, fallback: bool) {
    options.last_number_fallback = fallback;
}

/// A parameter error of `strategy`.
pub(crate) fn invalid(strategy: &str, param: &str, reason: impl Into<String>) -> BuildError {
    BuildError::InvalidParam {
        strategy: strategy.into(),
        param: param.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_prompt_is_added_only_when_missing() {
        let user = [Message::user("q")];
        let with = with_system_prompt(&user, "be brief");
        assert_eq!(with.len(), 2);
        assert_eq!(with[0].role, Role::System);
        assert_eq!(with_system_prompt(&user, "").len(), 1);
        let own = [Message::system("mine"), Message::user("q")];
        let kept = with_system_prompt(&own, "be brief");
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].content, "mine");
        assert!(!extract_options(false).last_number_fallback);
    }
}
