//! What each job kind publishes about its output in the OpenAPI document: the shape of its
//! dry-run result, of its result, and of its progress (the phases it goes through, the unit of
//! each, and its `detail`), so the console and scripts can render a job without guessing.
//! One file per kind. The test harness holds every job the suite runs to its kind's contract.

pub mod backup;
pub mod backup_verify;
pub mod fanout;
pub mod orphan_files;
pub mod orphan_records;
pub mod purge_exports;
pub mod purge_logs;
pub mod restore;
pub mod storage_migrate;
pub mod vacuum;
pub mod vector_migrate;
pub mod vector_rollback;

use std::borrow::Cow;

use serde_json::{Value, json};
use utoipa::openapi::{OpenApi, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::JobKind;

/// One phase a kind's progress goes through, as `progress.phase` spells it. A `{name}` in
/// `phase` stands for a value the job fills in (a table, a prefix).
pub struct Phase {
    pub phase: &'static str,
    /// The unit of `done` and `total` in this phase.
    pub unit: &'static str,
    pub about: &'static str,
}

pub const fn phase(phase: &'static str, unit: &'static str, about: &'static str) -> Phase {
    Phase { phase, unit, about }
}

/// A kind whose progress carries no `detail`.
pub struct NoDetail;

impl PartialSchema for NoDetail {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::default())
    }
}

impl ToSchema for NoDetail {}

/// A kind's contract, gathered from its `JobKind` impl.
pub struct Contract {
    pub kind: &'static str,
    phases: &'static [Phase],
    plan: Cow<'static, str>,
    result: Cow<'static, str>,
    detail: Option<Cow<'static, str>>,
    schemas: Vec<(String, RefOr<Schema>)>,
}

impl Contract {
    pub fn of<K: JobKind>() -> Self {
        let mut schemas = vec![
            (K::Plan::name().into_owned(), K::Plan::schema()),
            (K::Outcome::name().into_owned(), K::Outcome::schema()),
        ];
        K::Plan::schemas(&mut schemas);
        K::Outcome::schemas(&mut schemas);
        let detail = (K::Detail::name() != NoDetail::name()).then(|| {
            schemas.push((K::Detail::name().into_owned(), K::Detail::schema()));
            K::Detail::schemas(&mut schemas);
            K::Detail::name()
        });
        Contract {
            kind: K::KIND,
            phases: K::PHASES,
            plan: K::Plan::name(),
            result: K::Outcome::name(),
            detail,
            schemas,
        }
    }

    fn progress_name(&self) -> String {
        let mut name = String::new();
        for word in self.kind.split('_') {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                name.extend(first.to_uppercase());
                name.push_str(chars.as_str());
            }
        }
        name + "Progress"
    }

    /// `Progress`, narrowed to this kind: its phases, their units and its detail.
    fn progress_schema(&self) -> Value {
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|p| {
                let about = format!("{} (unit: {})", p.about, p.unit);
                if p.phase.contains('{') {
                    json!({"type": "string", "pattern": pattern(p.phase), "title": p.phase, "description": about})
                } else {
                    json!({"type": "string", "enum": [p.phase], "description": about})
                }
            })
            .collect();
        let mut units: Vec<&str> = self.phases.iter().map(|p| p.unit).collect();
        units.sort_unstable();
        units.dedup();
        let phase = if phases.is_empty() {
            json!({"type": "string", "enum": [], "description": "this kind reports no progress"})
        } else {
            json!({"anyOf": phases})
        };
        let mut schema = json!({
            "type": "object",
            "description": format!("The progress of a `{}` job.", self.kind),
            "required": ["phase", "done", "unit"],
            "additionalProperties": false,
            "properties": {
                "phase": phase,
                "done": {"type": "integer", "format": "int64", "minimum": 0},
                "total": {"type": ["integer", "null"], "format": "int64", "minimum": 0},
                "unit": {"type": "string", "enum": units},
                "rate_per_s": {"type": ["number", "null"], "format": "double"},
                "eta_s": {"type": ["number", "null"], "format": "double"},
            }
        });
        // A kind without detail has no `detail` property, so `additionalProperties` refuses one.
        if let Some(name) = &self.detail {
            schema["properties"]["detail"] =
                json!({"$ref": format!("#/components/schemas/{name}")});
        }
        schema
    }
}

/// The schemas built here are fixed by the code, so one that utoipa cannot read is a bug that
/// every test of the document shows at once.
fn schema_of(value: Value) -> RefOr<Schema> {
    match serde_json::from_value(value.clone()) {
        Ok(schema) => schema,
        Err(e) => panic!("a job contract schema utoipa cannot read ({e}): {value}"),
    }
}

/// `{table}` and the like become `.+`; the rest is matched literally.
fn pattern(phase: &str) -> String {
    let mut out = String::from("^");
    let mut rest = phase;
    while let Some(open) = rest.find('{') {
        out.push_str(&regex_escape(&rest[..open]));
        out.push_str(".+");
        rest = rest[open..]
            .find('}')
            .map_or("", |close| &rest[open + close + 1..]);
    }
    out.push_str(&regex_escape(rest));
    out.push('$');
    out
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Adds every kind's contract to the document: the schemas, one `<Kind>Progress` each, the
/// `JobContracts` index (kind → plan, result, progress), and points `JobView.result` and
/// `JobView.progress` at the union of them.
pub fn publish(doc: &mut OpenApi, contracts: Vec<Contract>) {
    let components = doc.components.get_or_insert_with(Default::default);
    let reference = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let mut index = serde_json::Map::new();
    let mut results = vec![];
    let mut progresses = vec![];
    for c in contracts {
        let progress = c.progress_name();
        index.insert(
            c.kind.to_string(),
            json!({
                "type": "object",
                "properties": {
                    "plan": reference(&c.plan),
                    "result": reference(&c.result),
                    "progress": reference(&progress),
                }
            }),
        );
        for name in [&c.plan, &c.result] {
            if !results.contains(&reference(name)) {
                results.push(reference(name));
            }
        }
        progresses.push(reference(&progress));
        components
            .schemas
            .insert(progress, schema_of(c.progress_schema()));
        for (name, schema) in c.schemas {
            match components.schemas.get(&name) {
                Some(known) if *known != schema => {
                    panic!("two different schemas are named {name}: rename one")
                }
                _ => {
                    components.schemas.insert(name, schema);
                }
            }
        }
    }
    let index = json!({
        "type": "object",
        "description": "Per job kind: the schema of its dry run's result (`plan`), of its \
            result (`result`, also what a failed or cancelled job kept of it, where some fields \
            may be missing) and of its progress.",
        "properties": index,
    });
    components
        .schemas
        .insert("JobContracts".into(), schema_of(index));
    let result = json!({"oneOf": [{"type": "null"}, {"anyOf": results}],
        "description": "The job's result (for a dry run, its plan), shaped as `JobContracts` \
            gives for its kind. Kept when a job fails part way."});
    let progress = json!({"oneOf": [{"type": "null"}, {"anyOf": progresses}],
        "description": "Progress, shaped as `JobContracts` gives for the job's kind."});
    if let Some(RefOr::T(Schema::Object(view))) = components.schemas.get_mut("JobView") {
        for (field, schema) in [("result", result), ("progress", progress)] {
            view.properties.insert(field.into(), schema_of(schema));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_publishes_its_plan_result_and_progress() {
        let doc = serde_json::to_value(crate::api::openapi()).expect("openapi serialises");
        let schemas = &doc["components"]["schemas"];
        let index = schemas["JobContracts"]["properties"]
            .as_object()
            .expect("JobContracts lists the kinds");
        let kinds: Vec<&str> = index.keys().map(String::as_str).collect();
        let mut expected = crate::jobs::KINDS.to_vec();
        expected.sort_unstable();
        assert_eq!(kinds, expected);
        for (kind, parts) in index {
            for part in ["plan", "result", "progress"] {
                let reference = parts["properties"][part]["$ref"].as_str().unwrap_or("");
                let name = reference.trim_start_matches("#/components/schemas/");
                assert!(
                    schemas[name].is_object(),
                    "{kind}.{part} points at {reference:?}, which is not in the document"
                );
            }
        }
    }

    #[test]
    fn placeholders_become_wildcards_and_the_rest_is_literal() {
        assert_eq!(pattern("purge {table}"), "^purge .+$");
        assert_eq!(pattern("list {prefix}/"), "^list .+/$");
        assert_eq!(
            pattern("update upload_files.storage_type"),
            "^update upload_files\\.storage_type$"
        );
    }
}
