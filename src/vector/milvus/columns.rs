//! Dify's records as Milvus columns and back, and the boolean expressions Upkeep sends.

use serde_json::{Map, Value};

use super::proto::{
    DataType, FieldData, FloatArray, JsonArray, ScalarField, StringArray, VectorField, field_data,
    scalar_field, vector_field,
};
use crate::vector::store::{Point, VectorError};

/// Dify's `page_content` is `VARCHAR(65535)`: a longer text fails the insert.
pub const MAX_TEXT_BYTES: usize = 65_535;

/// The columns Dify inserts (`id` is generated, `sparse_vector` by the BM25 function).
pub fn insert_columns(points: &[Point], dim: usize) -> Result<Vec<FieldData>, VectorError> {
    let mut metadata = Vec::with_capacity(points.len());
    let mut texts = Vec::with_capacity(points.len());
    let mut vectors = Vec::with_capacity(points.len() * dim);
    for p in points {
        if p.text.len() > MAX_TEXT_BYTES {
            return Err(VectorError::Layout(format!(
                "record {} has {} bytes of text; Milvus' page_content holds at most {MAX_TEXT_BYTES} \
                 (Dify's VARCHAR(65535)): shorten that segment in Dify, or keep this dataset on its store",
                p.id,
                p.text.len()
            )));
        }
        if p.vector.len() != dim {
            return Err(VectorError::Layout(format!(
                "record {} has a {}-dimensional vector, the collection holds {dim}",
                p.id,
                p.vector.len()
            )));
        }
        let json = serde_json::to_vec(&p.metadata)
            .map_err(|e| VectorError::Layout(format!("record {}: {e}", p.id)))?;
        metadata.push(json);
        texts.push(p.text.clone());
        vectors.extend_from_slice(&p.vector);
    }
    Ok(vec![
        FieldData {
            r#type: DataType::Json as i32,
            field_name: "metadata".into(),
            field: Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::JsonData(JsonArray { data: metadata })),
                ..Default::default()
            })),
            ..Default::default()
        },
        FieldData {
            r#type: DataType::VarChar as i32,
            field_name: "page_content".into(),
            field: Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::StringData(StringArray { data: texts })),
                ..Default::default()
            })),
            ..Default::default()
        },
        FieldData {
            r#type: DataType::FloatVector as i32,
            field_name: "vector".into(),
            field: Some(field_data::Field::Vectors(VectorField {
                dim: dim as i64,
                data: Some(vector_field::Data::FloatVector(FloatArray {
                    data: vectors,
                })),
                ..Default::default()
            })),
            ..Default::default()
        },
    ])
}

/// One row of a query answer.
#[derive(Debug, Default)]
pub struct Row {
    pub pk: i64,
    pub metadata: Map<String, Value>,
    pub text: String,
    pub vector: Vec<f32>,
}

impl Row {
    pub fn doc_id(&self) -> Option<&str> {
        self.metadata.get("doc_id").and_then(Value::as_str)
    }

    /// As a source point (id: the primary key) or, `by_doc_id`, as a target's (id: doc_id).
    pub fn into_point(self, by_doc_id: bool) -> Point {
        let id = match (by_doc_id, self.doc_id()) {
            (true, Some(d)) => d.to_string(),
            _ => self.pk.to_string(),
        };
        Point {
            id,
            vector: self.vector,
            text: self.text,
            metadata: self.metadata,
        }
    }
}

/// The rows of a query answer's columns (whichever of `id`, `metadata`, `page_content`,
/// `vector` were asked for).
pub fn rows(fields: Vec<FieldData>) -> Result<Vec<Row>, VectorError> {
    let bad = |what: &str| VectorError::Layout(format!("Milvus answered {what}"));
    let mut rows: Vec<Row> = Vec::new();
    let sized = |n: usize, rows: &mut Vec<Row>| {
        if rows.is_empty() {
            rows.resize_with(n, Row::default);
        }
        rows.len() == n
    };
    for f in fields {
        match (f.field_name.as_str(), f.field) {
            ("id", Some(field_data::Field::Scalars(s))) => {
                let Some(scalar_field::Data::LongData(ids)) = s.data else {
                    return Err(bad("a non-integer id column"));
                };
                if !sized(ids.data.len(), &mut rows) {
                    return Err(bad("columns of different lengths"));
                }
                for (row, pk) in rows.iter_mut().zip(ids.data) {
                    row.pk = pk;
                }
            }
            ("metadata", Some(field_data::Field::Scalars(s))) => {
                let Some(scalar_field::Data::JsonData(json)) = s.data else {
                    return Err(bad("a non-JSON metadata column"));
                };
                if !sized(json.data.len(), &mut rows) {
                    return Err(bad("columns of different lengths"));
                }
                for (row, bytes) in rows.iter_mut().zip(json.data) {
                    row.metadata = serde_json::from_slice(&bytes)
                        .map_err(|e| bad(&format!("metadata that is not a JSON object: {e}")))?;
                }
            }
            ("page_content", Some(field_data::Field::Scalars(s))) => {
                let Some(scalar_field::Data::StringData(texts)) = s.data else {
                    return Err(bad("a non-text page_content column"));
                };
                if !sized(texts.data.len(), &mut rows) {
                    return Err(bad("columns of different lengths"));
                }
                for (row, text) in rows.iter_mut().zip(texts.data) {
                    row.text = text;
                }
            }
            ("vector", Some(field_data::Field::Vectors(v))) => {
                let Some(vector_field::Data::FloatVector(floats)) = v.data else {
                    return Err(bad("a vector column that is not FLOAT_VECTOR"));
                };
                let dim = usize::try_from(v.dim).unwrap_or(0);
                if dim == 0 || floats.data.len() % dim != 0 {
                    return Err(bad("a vector column whose length is not a multiple of dim"));
                }
                if !sized(floats.data.len() / dim, &mut rows) {
                    return Err(bad("columns of different lengths"));
                }
                for (row, chunk) in rows.iter_mut().zip(floats.data.chunks(dim)) {
                    row.vector = chunk.to_vec();
                }
            }
            _ => {}
        }
    }
    Ok(rows)
}

/// A string literal in a Milvus expression (JSON string escaping is what Milvus parses).
pub fn literal(s: &str) -> String {
    Value::from(s).to_string()
}

/// `metadata["<key>"] in ["a", "b"]`: Dify's own filters (`delete_by_ids`, `text_exists`,
/// the `document_id` search filter).
pub fn metadata_in(key: &str, values: &[String]) -> String {
    let list: Vec<String> = values.iter().map(|v| literal(v)).collect();
    format!("metadata[{}] in [{}]", literal(key), list.join(", "))
}

/// `id in [1, 2]`.
pub fn pks_in(pks: &[i64]) -> String {
    let list: Vec<String> = pks.iter().map(i64::to_string).collect();
    format!("id in [{}]", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_quote_like_json() {
        assert_eq!(
            metadata_in("doc_id", &["a".into(), "b\"c".into()]),
            r#"metadata["doc_id"] in ["a", "b\"c"]"#
        );
        assert_eq!(pks_in(&[1, 22]), "id in [1, 22]");
    }

    #[test]
    fn rows_round_trip_and_text_is_capped() {
        let point = |id: &str, text: String| Point {
            id: id.into(),
            vector: vec![0.5, -0.5],
            text,
            metadata: serde_json::json!({"doc_id": id})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        let cols =
            insert_columns(&[point("a", "x".into()), point("b", "y".into())], 2).expect("columns");
        let rows = rows(cols).expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].doc_id(), Some("b"));
        assert_eq!(rows[1].vector, vec![0.5, -0.5]);
        let long = point("c", "é".repeat(MAX_TEXT_BYTES / 2 + 1));
        let err = insert_columns(&[long], 2).expect_err("too long");
        assert!(err.to_string().contains("record c"), "{err}");
    }
}
