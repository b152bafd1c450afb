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
        return FieldError {
            field: named(name),
            message: format!("unknown field {name:?}"),
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
        message: message.to_string(),
        unknown: false,
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
        assert_eq!(e.message, "invalid type: integer `7`, expected a string");
        assert_eq!(locate(Some("params"), ".", "bad").field, "params");
        assert_eq!(locate(None, ".", "bad").field, "body");
    }
}
