//! A dataset's records as Parquet, readable by any Parquet reader (DuckDB, pyarrow) and by
//! any store's restore: Dify's `doc_id`, the text, the metadata as JSON, the vector.

use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, FloatType};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::{Field, RowAccessor};
use parquet::schema::parser::parse_message_type;
use serde_json::{Map, Value};

const SCHEMA: &str = "message dify_vectors {
    required binary doc_id (STRING);
    required binary text (STRING);
    required binary metadata (STRING);
    required group vector (LIST) {
        repeated group list {
            required float element;
        }
    }
}";

/// One record as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub doc_id: String,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub vector: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
#[error("vector file: {0}")]
pub struct CodecError(String);

fn err(e: impl std::fmt::Display) -> CodecError {
    CodecError(e.to_string())
}

/// Rows per file for vectors of `dimension`: about 16 MiB of vectors, bounded both ways.
pub fn rows_per_file(dimension: usize) -> usize {
    ((16 << 20) / (4 * dimension.max(1))).clamp(256, 8192)
}

pub fn encode(records: &[Record]) -> Result<Vec<u8>, CodecError> {
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(err)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            .build(),
    );
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, props).map_err(err)?;
    let mut group = writer.next_row_group().map_err(err)?;
    let strings = |f: &dyn Fn(&Record) -> String| -> Vec<ByteArray> {
        records
            .iter()
            .map(|r| ByteArray::from(f(r).into_bytes()))
            .collect()
    };
    let mut column = 0;
    while let Some(mut col) = group.next_column().map_err(err)? {
        match column {
            0..=2 => {
                let values = match column {
                    0 => strings(&|r| r.doc_id.clone()),
                    1 => strings(&|r| r.text.clone()),
                    _ => strings(&|r| Value::Object(r.metadata.clone()).to_string()),
                };
                col.typed::<ByteArrayType>()
                    .write_batch(&values, None, None)
                    .map_err(err)?;
            }
            _ => {
                // A list column: each row's first element starts a record (repetition 0), the
                // rest continue it (1); every element is present (definition 1).
                let mut values = Vec::new();
                let mut reps = Vec::new();
                for r in records {
                    if r.vector.is_empty() {
                        return Err(CodecError(format!("{} has no vector", r.doc_id)));
                    }
                    values.extend_from_slice(&r.vector);
                    reps.push(0i16);
                    reps.extend(std::iter::repeat_n(1i16, r.vector.len() - 1));
                }
                let defs = vec![1i16; values.len()];
                col.typed::<FloatType>()
                    .write_batch(&values, Some(&defs), Some(&reps))
                    .map_err(err)?;
            }
        }
        col.close().map_err(err)?;
        column += 1;
    }
    group.close().map_err(err)?;
    writer.into_inner().map_err(err)
}

pub fn decode(bytes: Bytes) -> Result<Vec<Record>, CodecError> {
    let reader = SerializedFileReader::new(bytes).map_err(err)?;
    let mut out = Vec::new();
    for row in reader.get_row_iter(None).map_err(err)? {
        let row = row.map_err(err)?;
        let metadata = match serde_json::from_str(row.get_string(2).map_err(err)?).map_err(err)? {
            Value::Object(m) => m,
            other => return Err(CodecError(format!("metadata is not an object: {other}"))),
        };
        let vector = row
            .get_list(3)
            .map_err(err)?
            .elements()
            .iter()
            .map(|f| match f {
                Field::Float(v) => Ok(*v),
                other => Err(CodecError(format!("a vector holds {other}"))),
            })
            .collect::<Result<Vec<f32>, _>>()?;
        out.push(Record {
            doc_id: row.get_string(0).map_err(err)?.clone(),
            text: row.get_string(1).map_err(err)?.clone(),
            metadata,
            vector,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_parquet() {
        let records: Vec<Record> = (0..300)
            .map(|i| Record {
                doc_id: format!("doc-{i}"),
                text: format!("text {i} ünïcode"),
                metadata: serde_json::json!({"doc_id": format!("doc-{i}"), "n": i, "nested": {"a": [1, 2]}})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                vector: (0..(1 + i % 7)).map(|j| (i * 10 + j) as f32 / 3.0).collect(),
            })
            .collect();
        let bytes = encode(&records).expect("encodes");
        assert_eq!(&bytes[..4], b"PAR1");
        let back = decode(Bytes::from(bytes)).expect("decodes");
        assert_eq!(back, records);
        assert!(decode(Bytes::from_static(b"not parquet")).is_err());
        assert_eq!(rows_per_file(1536), 2730);
        assert_eq!(rows_per_file(3), 8192);
    }
}
