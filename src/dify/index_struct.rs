//! Where Dify looks for a dataset's vectors: `datasets.index_struct` and the collection names
//! Dify generates (dify-reference: vectors.md §1).

use serde_json::Value;
use uuid::Uuid;

/// `Vector_index_<id with _>_Node` (`Dataset.gen_collection_name_by_id`, default prefix).
pub fn generated_name(id: Uuid) -> String {
    format!("Vector_index_{}_Node", id.to_string().replace('-', "_"))
}

/// `index_struct` as Dify writes it (Python `json.dumps` separators).
pub fn render(kind: &str, collection: &str) -> String {
    format!("{{\"type\": \"{kind}\", \"vector_store\": {{\"class_prefix\": \"{collection}\"}}}}")
}

/// The store type and collection an `index_struct` names; None if it names none.
pub fn parse(index_struct: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(index_struct).ok()?;
    Some((
        v["type"].as_str()?.to_string(),
        v["vector_store"]["class_prefix"].as_str()?.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_index_struct_as_dify_writes_them() {
        let id = Uuid::parse_str("3f1c2a4b-0000-4000-8000-00000000009e").expect("uuid");
        assert_eq!(
            generated_name(id),
            "Vector_index_3f1c2a4b_0000_4000_8000_00000000009e_Node"
        );
        let written = render("qdrant", "Vector_index_x_Node");
        assert_eq!(
            written,
            r#"{"type": "qdrant", "vector_store": {"class_prefix": "Vector_index_x_Node"}}"#
        );
        assert_eq!(
            parse(&written),
            Some(("qdrant".into(), "Vector_index_x_Node".into()))
        );
        assert_eq!(parse("{\"type\": \"weaviate\"}"), None);
        assert_eq!(parse("not json"), None);
    }
}
