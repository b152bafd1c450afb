//! Holds every job the suite looks at to what the committed OpenAPI document publishes for its
//! kind (`JobContracts`): a finished job's result, a dry run's plan, and every progress the
//! suite sees, field by field. A job that adds, drops or retypes a field without its contract
//! fails the test that ran it.

use std::sync::LazyLock;

use serde_json::Value;

static DOC: LazyLock<Value> = LazyLock::new(|| {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let text = std::fs::read_to_string(path).expect("openapi/openapi.json is readable");
    serde_json::from_str(&text).expect("openapi/openapi.json is JSON")
});

fn schemas() -> &'static Value {
    &DOC["components"]["schemas"]
}

fn contract<'a>(kind: &str, part: &str) -> &'a Value {
    let c = &schemas()["JobContracts"]["properties"][kind]["properties"][part];
    assert!(c.is_object(), "no {part} contract for job kind {kind:?}");
    c
}

/// Checks a job view's `result` and `progress` against its kind's contract. The result of a
/// job that failed or was cancelled is what it kept, so its fields may be missing.
pub fn check_job(job: &Value) {
    let Some(kind) = job["kind"].as_str() else {
        return;
    };
    if !job["result"].is_null() {
        let part = if job["dry_run"] == Value::Bool(true) {
            "plan"
        } else {
            "result"
        };
        let partial = job["state"] != "succeeded";
        let errors = validate(contract(kind, part), &job["result"], partial);
        assert!(
            errors.is_empty(),
            "the {part} of {kind} job {} ({}) breaks its published contract:\n  {}\n{}",
            job["id"],
            job["state"],
            errors.join("\n  "),
            job["result"]
        );
    }
    if !job["progress"].is_null() {
        check_progress(kind, &job["progress"]);
    }
}

pub fn check_progress(kind: &str, progress: &Value) {
    let errors = validate(contract(kind, "progress"), progress, false);
    assert!(
        errors.is_empty(),
        "a progress of a {kind} job breaks its published contract:\n  {}\n{progress}",
        errors.join("\n  ")
    );
}

fn validate(schema: &Value, value: &Value, partial: bool) -> Vec<String> {
    let mut errors = vec![];
    check(schema, value, "$", partial, &mut errors);
    errors
}

fn resolve(schema: &Value) -> &Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            let s = &schemas()[name];
            assert!(s.is_object(), "dangling $ref {r}");
            resolve(s)
        }
        None => schema,
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

fn check(schema: &Value, v: &Value, at: &str, partial: bool, errors: &mut Vec<String>) {
    let schema = resolve(schema);
    if let Some(alts) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let fits = alts
            .iter()
            .filter(|s| validate(s, v, partial).is_empty())
            .count();
        let one_of = schema["oneOf"].is_array();
        if fits == 0 || (one_of && fits > 1 && !partial) {
            let why: Vec<String> = alts
                .iter()
                .map(|s| validate(s, v, partial).join("; "))
                .collect();
            errors.push(format!(
                "{at}: fits {fits} of the {} alternatives ({})",
                alts.len(),
                why.join(" | ")
            ));
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check(s, v, at, partial, errors);
        }
    }
    if schema.get("not").is_some() {
        errors.push(format!("{at}: not allowed here"));
        return;
    }
    match &schema["type"] {
        Value::String(t) if !type_ok(t, v) => {
            errors.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
        Value::Array(ts) if !ts.iter().any(|t| type_ok(t.as_str().unwrap_or(""), v)) => {
            errors.push(format!("{at}: {v} is not of type {ts:?}"));
            return;
        }
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        errors.push(format!("{at}: {v} is not one of {allowed:?}"));
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        errors.push(format!("{at}: {v} is not {c}"));
    }
    if let (Some(p), Some(s)) = (schema["pattern"].as_str(), v.as_str()) {
        let re = regex::Regex::new(p).expect("the published pattern compiles");
        if !re.is_match(s) {
            errors.push(format!("{at}: {s:?} does not match {p}"));
        }
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), v.as_f64())
        && n < min
    {
        errors.push(format!("{at}: {n} is below {min}"));
    }
    if let Some(items) = schema.get("items")
        && let Some(list) = v.as_array()
    {
        for (i, item) in list.iter().enumerate() {
            check(items, item, &format!("{at}[{i}]"), partial, errors);
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema["properties"].as_object();
        if !partial && let Some(required) = schema["required"].as_array() {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    errors.push(format!("{at}: {r} is missing"));
                }
            }
        }
        for (k, x) in obj {
            let at = format!("{at}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                &schema["additionalProperties"],
            ) {
                (Some(s), _) => check(s, x, &at, partial, errors),
                (None, Value::Bool(false)) => errors.push(format!("{at}: not in the contract")),
                (None, extra) if extra.is_object() => check(extra, x, &at, partial, errors),
                _ => {}
            }
        }
    }
}
