//! Request bodies: the contract's rules for bytes, content type, size and
//! depth (section 1), and small typed field readers that collect one
//! message per invalid field, so a `VALIDATION_ERROR` names all of them.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::http::{Body, Request};

/// Deepest JSON nesting a body may have (the outermost value is level 1).
pub const MAX_BODY_DEPTH: usize = 64;

/// The body as a JSON object, `None` when the request has no body. In the
/// contract's order: 413, then 415, then 400.
pub fn json_object(request: &Request) -> Result<Option<Map<String, Value>>, ApiError> {
    match json_value(request)? {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(ApiError::field("body", "must be a JSON object")),
    }
}

/// Like `json_object`, for routes whose body is required.
pub fn required_object(request: &Request) -> Result<Map<String, Value>, ApiError> {
    json_object(request)?.ok_or_else(|| ApiError::field("body", "a JSON object is required"))
}

pub fn json_value(request: &Request) -> Result<Option<Value>, ApiError> {
    let bytes = match &request.body {
        Body::TooLarge => {
            return Err(ApiError::PayloadTooLarge(
                "The request body is too large".into(),
            ))
        }
        Body::Truncated => {
            if !request.has_body()
                || request.is_json_content_type()
                || request.content_type.is_none()
            {
                return Err(ApiError::InvalidJson(
                    "The body ended before its Content-Length".into(),
                ));
            }
            return Err(ApiError::UnsupportedMediaType);
        }
        Body::Bytes(bytes) => bytes,
    };
    if bytes.is_empty() && request.content_type.is_none() {
        return Ok(None);
    }
    if !request.is_json_content_type() {
        if bytes.is_empty() {
            // A non-JSON content type with no bytes carries no body.
            return Ok(None);
        }
        return Err(ApiError::UnsupportedMediaType);
    }
    if bytes.is_empty() {
        return Err(ApiError::InvalidJson("The body is empty".into()));
    }
    if nesting_depth(bytes) > MAX_BODY_DEPTH {
        return Err(ApiError::InvalidJson(format!(
            "The body is nested deeper than {MAX_BODY_DEPTH} levels"
        )));
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|error| ApiError::InvalidJson(format!("The body is not valid JSON: {error}")))
}

/// The deepest nesting of arrays and objects in JSON text. Only brackets
/// outside strings count; the text is not otherwise checked (the parser
/// does that after), so this runs before a deep body can exhaust it.
pub fn nesting_depth(bytes: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Collects field errors while reading a body, then fails once with all.
#[derive(Default)]
pub struct Fields {
    errors: Map<String, Value>,
}

impl Fields {
    pub fn new() -> Fields {
        Fields::default()
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors
            .entry(field.to_owned())
            .or_insert_with(|| Value::String(message.into()));
    }

    /// A required string field.
    pub fn string(&mut self, body: &Map<String, Value>, field: &str) -> Option<String> {
        match body.get(field) {
            Some(Value::String(text)) => Some(text.clone()),
            None | Some(Value::Null) => {
                self.error(field, "is required");
                None
            }
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    /// An optional string field (absent or null is `None`).
    pub fn optional_string(&mut self, body: &Map<String, Value>, field: &str) -> Option<String> {
        match body.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    pub fn optional_bool(&mut self, body: &Map<String, Value>, field: &str) -> Option<bool> {
        match body.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(flag)) => Some(*flag),
            Some(_) => {
                self.error(field, "must be true or false");
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::fields(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        let check = |text: &str, expected: usize| {
            assert_eq!(nesting_depth(text.as_bytes()), expected, "{text}")
        };
        check("1", 0);
        check("{}", 1);
        check("[[{}]]", 3);
        check(r#"{"a":"[[[[["}"#, 1);
        check(r#"{"a":"\"[[["}"#, 1);
        check(r#"[{"a":[1]},{"b":2}]"#, 3);
        check(&"[".repeat(65), 65);
    }
}
