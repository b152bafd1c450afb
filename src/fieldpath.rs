//! Names the request field at fault from a serde error, for both the API's extractors and a
//! job's typed params, so every 4xx says which field to fix.

/// A field path and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// serde rejected a field it does not know (`deny_unknown_fields`).
    pub unknown: bool,
}

/// Maps serde's `message` at `path` (serde_path_to_error's, `.` for the top) to the field,
/// under `root` when the value sits inside a larger request (`params` of a job).
pub fn locate(root: Option<&str>, path: &str, message: &str) -> FieldError {
    let full = |p: &str| match (root, p) {
        (Some(r), "." | "") => r.to_string(),
        (Some(r), p) => format!("{r}.{p}"),
        (None, "." | "") => "body".to_string(),
        (None, p) => p.to_string(),
    };
    // The path already ends at an unknown field, but stops at the container of a missing one.
    let named = |name: &str| {
        if path == name || path.ends_with(&format!(".{name}")) {
            full(path)
        } else if path == "." || path.is_empty() {
            full(name)
        } else {
            full(&format!("{path}.{name}"))
        }
    };
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
    };
    if let Some(name) = quoted("unknown field `") {
        let accepted = message
            .split_once("expected one of ")
            .or_else(|| message.split_once("expected "))
            .map(|(_, list)| backticked(list))
            .unwrap_or_default();
        let message = if accepted.is_empty() {
            format!("unknown field {name:?}")
        } else {
            format!("unknown field {name:?}; accepted: {}", accepted.join(", "))
        };
        return FieldError {
            field: named(name),
            message,
            unknown: true,
        };
    }
    if let Some(name) = quoted("missing field `") {
        return FieldError {
            field: named(name),
            message: "is required".into(),
            unknown: false,
        };
    }
    // A data error names its field; a byte position would only add noise.
    let message = message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head);
    FieldError {
        field: full(path),
        message: plain(message),
        unknown: false,
    }
}

/// The names inside backticks of serde's lists (`` `a`, `b` ``).
fn backticked(list: &str) -> Vec<String> {
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// serde's and the parsers' wording in the API's terms: what is allowed, then what was sent.
fn plain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((got, list)) = rest.split_once("`, expected ")
    {
        let allowed = backticked(list.trim_start_matches("one of "));
        return format!("must be one of {}, not {got:?}", allowed.join(", "));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((got, expected)) = rest.rsplit_once(", expected ")
        {
            return format!("must be {}, not {}", expected_as(expected), sent_as(got));
        }
    }
    if message.starts_with("UUID parsing failed") {
        return "is not a UUID (like 0192a000-0000-7000-8000-000000000000)".into();
    }
    match message {
        "invalid digit found in string" | "cannot parse integer from empty string" => {
            "must be a whole number".into()
        }
        "number too large to fit in target type" => "is too large".into(),
        "number too small to fit in target type" => "is too small".into(),
        other => other.to_string(),
    }
}

fn expected_as(expected: &str) -> String {
    let whole = |max: &str| format!("a whole number from 0 to {max}");
    match expected {
        "u8" => whole("255"),
        "u16" => whole("65535"),
        "u32" => whole("4294967295"),
        "u64" | "usize" => whole("18446744073709551615"),
        "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list".into(),
        "a map" => "an object".into(),
        "a UUID" | "UUID" => "a UUID".into(),
        e if e.starts_with("struct ") || e.starts_with("a map") => "an object".into(),
        e if e.starts_with("internally tagged enum") => "an object with a \"type\"".into(),
        e => e.to_string(),
    }
}

fn sent_as(got: &str) -> String {
    let inner = |p: &str| got.strip_prefix(p).map(|v| v.trim_matches('`').to_string());
    if let Some(v) = inner("integer ").or_else(|| inner("floating point ")) {
        return v;
    }
    if let Some(v) = inner("boolean ") {
        return v;
    }
    if let Some(v) = got.strip_prefix("string ") {
        return v.to_string();
    }
    match got {
        "sequence" => "a list".into(),
        "map" => "an object".into(),
        "unit value" | "null" => "null".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fields_under_a_root_or_at_the_top() {
        let e = locate(
            Some("params"),
            "tabels",
            "unknown field `tabels`, expected one of `a`",
        );
        assert_eq!((e.field.as_str(), e.unknown), ("params.tabels", true));
        let e = locate(None, ".", "missing field `kind`");
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("kind", "is required")
        );
        let e = locate(
            None,
            "kind",
            "invalid type: integer `7`, expected a string at line 1 column 9",
        );
        assert_eq!(e.message, "must be a string, not 7");
        let e = locate(
            Some("params"),
            "days",
            "invalid value: integer `-5`, expected u32",
        );
        assert_eq!(
            e.message,
            "must be a whole number from 0 to 4294967295, not -5"
        );
        let e = locate(
            Some("params"),
            "mode",
            "unknown variant `fast`, expected one of `plain`, `analyze`, `full`",
        );
        assert_eq!(
            e.message,
            "must be one of plain, analyze, full, not \"fast\""
        );
        let e = locate(
            None,
            "x",
            "invalid type: string \"yes\", expected a boolean",
        );
        assert_eq!(e.message, "must be true or false, not \"yes\"");
        let e = locate(
            None,
            "cursor",
            "UUID parsing failed: invalid character: found `m` at 2",
        );
        assert_eq!(
            e.message,
            "is not a UUID (like 0192a000-0000-7000-8000-000000000000)"
        );
        let e = locate(
            Some("params.target"),
            "pathh",
            "unknown field `pathh`, expected one of `root`, `path`",
        );
        assert_eq!(e.message, "unknown field \"pathh\"; accepted: root, path");
        assert_eq!(locate(Some("params"), ".", "bad").field, "params");
        assert_eq!(locate(None, ".", "bad").field, "body");
    }
}
