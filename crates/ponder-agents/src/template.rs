//! Prompt templates: `{name}` placeholders, `{{` and `}}` for literal braces, parsed and checked
//! against a strategy's variable set when the workflow is built (never first at run time).

use std::collections::BTreeSet;

/// A template problem found at build time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unbalanced `{brace}` at byte {at} (write `{brace}{brace}` for a literal brace)")]
    Unbalanced { brace: char, at: usize },
    #[error("empty or invalid placeholder `{{{name}}}` at byte {at}")]
    BadName { name: String, at: usize },
    #[error("unknown variable `{name}` (allowed: {allowed})")]
    Unknown { name: String, allowed: String },
    #[error("variable `{name}` is never used (the template must use: {required})")]
    Missing { name: String, required: String },
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Var(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(TemplateError::Unbalanced { brace: '{', at });
                    }
                    let valid = !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !name.starts_with(|c: char| c.is_ascii_digit());
                    if !valid {
                        return Err(TemplateError::BadName { name, at });
                    }
                    if !lit.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut lit)));
                    }
                    segments.push(Segment::Var(name));
                }
                '}' => return Err(TemplateError::Unbalanced { brace: '}', at }),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            segments.push(Segment::Text(lit));
        }
        Ok(Template { segments })
    }

    /// Parses `text` and checks that it uses exactly the variables `vars` (each at least once,
    /// no other).
    pub fn checked(text: &str, vars: &[&str]) -> Result<Template, TemplateError> {
        let t = Template::parse(text)?;
        let used = t.variables();
        let allowed = vars.join(", ");
        if let Some(unknown) = used.iter().find(|u| !vars.contains(&u.as_str())) {
            return Err(TemplateError::Unknown {
                name: unknown.clone(),
                allowed,
            });
        }
        if let Some(missing) = vars.iter().find(|v| !used.contains(**v)) {
            return Err(TemplateError::Missing {
                name: (*missing).to_string(),
                required: allowed,
            });
        }
        Ok(t)
    }

    /// The variables the template uses.
    pub fn variables(&self) -> BTreeSet<String> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Var(v) => Some(v.clone()),
                Segment::Text(_) => None,
            })
            .collect()
    }

    /// Renders with `values`; a variable without a value renders as an empty string (the
    /// variable set was checked at build time, so this only happens for optional values).
    pub fn render(&self, values: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(v) => {
                    if let Some((_, value)) = values.iter().find(|(k, _)| k == v) {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

/// Renders candidates as numbered, delimited blocks separated by a blank line, so numbered lists
/// inside a candidate cannot be confused with candidate numbers:
///
/// ```text
/// --- candidate 1 ---
/// text
/// --- end of candidate 1 ---
/// ```
pub fn render_candidates<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let n = i + 1;
            format!(
                "--- candidate {n} ---\n{}\n--- end of candidate {n} ---",
                t.trim()
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_placeholders_and_literal_braces() {
        let t = Template::parse("a {x} {{lit}} {y}").expect("parses");
        assert_eq!(t.render(&[("x", "1"), ("y", "2")]), "a 1 {lit} 2");
        assert_eq!(t.render(&[("x", "1")]), "a 1 {lit} ");
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Template::parse("a {x"),
            Err(TemplateError::Unbalanced { brace: '{', .. })
        ));
        assert!(matches!(
            Template::parse("a }"),
            Err(TemplateError::Unbalanced { brace: '}', .. })
        ));
        assert!(matches!(
            Template::parse("{a b}"),
            Err(TemplateError::BadName { .. })
        ));
        assert!(matches!(
            Template::parse("{}"),
            Err(TemplateError::BadName { .. })
        ));
        assert!(matches!(
            Template::checked("{x} {z}", &["x"]),
            Err(TemplateError::Unknown { name, .. }) if name == "z"
        ));
        assert!(matches!(
            Template::checked("{x}", &["x", "y"]),
            Err(TemplateError::Missing { name, .. }) if name == "y"
        ));
        assert!(Template::checked("{y}{x}{x}", &["x", "y"]).is_ok());
    }

    #[test]
    fn candidates_are_delimited() {
        let r = render_candidates(["1. a\n2. b", "c"]);
        assert_eq!(
            r,
            "--- candidate 1 ---\n1. a\n2. b\n--- end of candidate 1 ---\n\n--- candidate 2 ---\nc\n--- end of candidate 2 ---"
        );
    }
}
