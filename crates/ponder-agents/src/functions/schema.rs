//! JSON in model replies: extraction (whole reply, fenced block, first balanced object) and a
//! small JSON Schema check (`type`, `properties`, `required`, `enum`, `items`) used by the tool
//! wrapper and by output conversion. Never panics on any text.

use serde_json::Value;

/// The first JSON value found in `text`: the whole text, else a fenced code block, else the
/// first balanced `{…}` or `[…]`.
pub fn extract_json(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        return Some(v);
    }
    let mut rest = t;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n').map_or(0, |p| p + 1);
        let Some(end) = after[body_start..].find("```") else {
            break;
        };
        if let Ok(v) = serde_json::from_str::<Value>(after[body_start..body_start + end].trim()) {
            return Some(v);
        }
        rest = &after[body_start + end + 3..];
    }
    for (open, close) in [('{', '}'), ('[', ']')] {
        let mut from = 0;
        while let Some(rel) = t[from..].find(open) {
            let start = from + rel;
            if let Some(end) = balanced_end(&t[start..], open, close) {
                if let Ok(v) = serde_json::from_str::<Value>(&t[start..start + end]) {
                    return Some(v);
                }
            }
            from = start + open.len_utf8();
        }
    }
    None
}

/// The byte length of the balanced bracket group at the start of `s`, respecting strings.
fn balanced_end(s: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            c if c == open => depth += 1,
            c if c == close => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + c.len_utf8());
                }
            }
            _ => {}
        }
    }
    None
}

/// Problems of `value` against `schema` (empty when it conforms). `path` prefixes messages.
pub fn validate(schema: &Value, value: &Value, path: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let here = if path.is_empty() { "input" } else { path };
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
            errors.push(format!(
                "{here}: expected {}, got {}",
                types.join(" or "),
                type_name(value)
            ));
            return errors;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            errors.push(format!(
                "{here}: must be one of {}",
                Value::Array(options.clone())
            ));
        }
    }
    if let Value::Object(obj) = value {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    errors.push(format!("{here}: missing required field `{r}`"));
                }
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, sub) in props {
                if let Some(v) = obj.get(k) {
                    errors.extend(validate(sub, v, &format!("{here}.{k}")));
                }
            }
        }
    }
    if let (Value::Array(items), Some(sub)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            errors.extend(validate(sub, v, &format!("{here}[{i}]")));
        }
    }
    errors
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Field names, types and descriptions of an object schema, one per line (`- city (string,
/// required): the city name`).
pub fn describe_fields(schema: &Value) -> String {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    props
        .iter()
        .map(|(k, s)| {
            let t = s.get("type").and_then(Value::as_str).unwrap_or("any");
            let req = if required.contains(&k.as_str()) {
                ", required"
            } else {
                ""
            };
            let d = s
                .get("description")
                .and_then(Value::as_str)
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            format!("- {k} ({t}{req}){d}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extraction() {
        assert_eq!(extract_json("{\"a\": 1}"), Some(json!({"a": 1})));
        assert_eq!(
            extract_json("Here:\n```json\n{\"a\": 2}\n```\nDone."),
            Some(json!({"a": 2}))
        );
        assert_eq!(
            extract_json("Sure, {\"a\": \"}{\", \"b\": [1]} is it"),
            Some(json!({"a": "}{", "b": [1]}))
        );
        assert_eq!(extract_json("no json {here"), None);
        assert_eq!(extract_json(""), None);
    }

    #[test]
    fn validation() {
        let schema = json!({"type": "object", "required": ["city"], "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"},
            "unit": {"enum": ["c", "f"]}
        }});
        assert!(validate(&schema, &json!({"city": "Oslo", "days": 3}), "").is_empty());
        let e = validate(&schema, &json!({"days": "x", "unit": "k"}), "");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("missing required field `city`"));
        assert_eq!(
            validate(&json!({"type": "string"}), &json!(1), ""),
            vec!["input: expected string, got number"]
        );
        assert_eq!(describe_fields(&schema).lines().count(), 3);
    }
}
