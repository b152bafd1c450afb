//! The collection Dify's Milvus code creates (`milvus_vector.py`, pymilvus' encodings):
//! fields `metadata` JSON, `page_content` VARCHAR(65535), `id` INT64 auto-id primary key,
//! `vector` FLOAT_VECTOR(dim), and with hybrid search `sparse_vector` filled by the BM25
//! function `text_bm25_emb`; HNSW/IP `M=8, efConstruction=64` on `vector`, AUTOINDEX/BM25 on
//! `sparse_vector`; consistency `Session`.

use super::proto::{
    CollectionSchema, DataType, FieldSchema, FunctionSchema, FunctionType, KeyValuePair,
};

pub const METADATA: &str = "metadata";
pub const CONTENT: &str = "page_content";
pub const PK: &str = "id";
pub const VECTOR: &str = "vector";
pub const SPARSE: &str = "sparse_vector";
pub const BM25_FUNCTION: &str = "text_bm25_emb";
/// A whole record, as read back.
pub const RECORD: [&str; 4] = [PK, METADATA, CONTENT, VECTOR];

/// Hybrid (full-text) search as Dify decides it when it creates a collection:
/// `MILVUS_ENABLE_HYBRID_SEARCH`, and a server of 2.5.0 or newer.
pub struct Hybrid<'a> {
    pub enabled: bool,
    /// `MILVUS_ANALYZER_PARAMS`, passed through as Dify passes it.
    pub analyzer_params: Option<&'a str>,
}

fn param(key: &str, value: impl Into<String>) -> KeyValuePair {
    KeyValuePair::new(key, value)
}

fn field(name: &str, data_type: DataType, type_params: Vec<KeyValuePair>) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        data_type: data_type as i32,
        type_params,
        ..Default::default()
    }
}

/// The schema, fields in Dify's order.
pub fn collection(name: &str, dim: usize, hybrid: &Hybrid) -> CollectionSchema {
    // pymilvus drops `max_length` on a JSON field and sends type params JSON-encoded.
    let mut content = vec![
        param("max_length", "65535"),
        param(
            "enable_analyzer",
            if hybrid.enabled { "true" } else { "false" },
        ),
    ];
    if hybrid.enabled
        && let Some(p) = hybrid.analyzer_params.filter(|p| !p.trim().is_empty())
    {
        content.push(param("analyzer_params", p));
    }
    let mut fields = vec![
        field(METADATA, DataType::Json, Vec::new()),
        field(CONTENT, DataType::VarChar, content),
        FieldSchema {
            is_primary_key: true,
            auto_id: true,
            ..field(PK, DataType::Int64, Vec::new())
        },
        field(
            VECTOR,
            DataType::FloatVector,
            vec![param("dim", dim.to_string())],
        ),
    ];
    let mut functions = Vec::new();
    if hybrid.enabled {
        fields.push(FieldSchema {
            is_function_output: true,
            ..field(SPARSE, DataType::SparseFloatVector, Vec::new())
        });
        functions.push(FunctionSchema {
            name: BM25_FUNCTION.into(),
            r#type: FunctionType::Bm25 as i32,
            input_field_names: vec![CONTENT.into()],
            output_field_names: vec![SPARSE.into()],
            ..Default::default()
        });
    }
    CollectionSchema {
        name: name.into(),
        auto_id: true,
        fields,
        functions,
        ..Default::default()
    }
}

/// `vector`'s index as Dify asks for it (pymilvus sends each of `params` as its own pair).
pub fn vector_index() -> Vec<KeyValuePair> {
    vec![
        param("index_type", "HNSW"),
        param("metric_type", "IP"),
        param("M", "8"),
        param("efConstruction", "64"),
    ]
}

/// `sparse_vector`'s index, with hybrid search.
pub fn sparse_index() -> Vec<KeyValuePair> {
    vec![
        param("index_type", "AUTOINDEX"),
        param("metric_type", "BM25"),
    ]
}

/// What a collection must have for Upkeep to write Dify's records into it: the dimension
/// of its `vector` field, or what is missing.
pub fn dimension_of(schema: &CollectionSchema) -> Result<usize, String> {
    let has = |name: &str, t: DataType| {
        schema
            .fields
            .iter()
            .find(|f| f.name == name && f.data_type == t as i32)
    };
    for (name, t) in [
        (METADATA, DataType::Json),
        (CONTENT, DataType::VarChar),
        (PK, DataType::Int64),
    ] {
        if has(name, t).is_none() {
            return Err(format!(
                "has no {name} field of type {t:?} as Dify makes it"
            ));
        }
    }
    let vector = has(VECTOR, DataType::FloatVector)
        .ok_or_else(|| format!("has no {VECTOR} field of type FloatVector as Dify makes it"))?;
    vector
        .type_params
        .iter()
        .find(|p| p.key == "dim")
        .and_then(|p| p.value.parse().ok())
        .ok_or_else(|| format!("its {VECTOR} field has no dim"))
}

/// Whether the collection was made with hybrid search (its `sparse_vector` field).
pub fn is_hybrid(schema: &CollectionSchema) -> bool {
    schema.fields.iter().any(|f| f.name == SPARSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difys_fields_in_difys_order() {
        let plain = collection(
            "C",
            4,
            &Hybrid {
                enabled: false,
                analyzer_params: None,
            },
        );
        let names: Vec<&str> = plain.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, [METADATA, CONTENT, PK, VECTOR]);
        assert!(plain.functions.is_empty());
        assert_eq!(dimension_of(&plain), Ok(4));
        let hybrid = collection(
            "C",
            4,
            &Hybrid {
                enabled: true,
                analyzer_params: Some(r#"{"type": "chinese"}"#),
            },
        );
        assert!(is_hybrid(&hybrid));
        assert_eq!(hybrid.functions[0].name, BM25_FUNCTION);
        let content = &hybrid.fields[1].type_params;
        assert!(content.contains(&param("enable_analyzer", "true")));
        assert!(content.iter().any(|p| p.key == "analyzer_params"));
    }
}
