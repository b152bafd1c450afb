//! Weaviate as a target: classes in the layout the Dify release reads, objects under their `doc_id`.

use super::*;

/// As a target, objects are written under their `doc_id` (Dify's rule up to 1.9.1 and again
/// after #41714), so `doc_id`s address them; classes in the layout the Dify release reads.
impl VectorTarget for Weaviate {
    fn for_release(&mut self, revision: Option<&str>) {
        self.legacy = revision
            .and_then(|r| crate::dify::at_least(r, crate::dify::WEAVIATE_NAMED_VECTOR_FROM))
            == Some(false);
    }

    async fn ensure(&self, at: &Location, _dimension: usize) -> Result<(), VectorError> {
        let collection = &at.collection;
        let wanted = if self.legacy { "legacy" } else { "named" };
        if let Some(found) = self.describe(collection).await? {
            if found.layout == wanted {
                return Ok(());
            }
            return Err(VectorError::Layout(format!(
                "class {collection} has Weaviate's {} vector layout, but this Dify release reads only the {wanted} one (legacy up to 1.9.1, named from 1.9.2)",
                found.layout
            )));
        }
        let text = |name: &str| json!({"name": name, "dataType": ["text"]});
        let class = if self.legacy {
            // Dify's v3 class: `text` only, the rest made by auto-schema on insert, and the
            // legacy unnamed vector, self-provided.
            json!({
                "class": collection,
                "properties": [text("text")],
                "vectorizer": "none",
            })
        } else {
            // Dify's v4 class: declared properties, a self-provided named vector `default`.
            json!({
                "class": collection,
                "properties": [
                    {"name": "text", "dataType": ["text"], "tokenization": "word"},
                    text("document_id"), text("doc_id"), text("doc_type"),
                    {"name": "chunk_index", "dataType": ["int"]},
                    {"name": "is_summary", "dataType": ["boolean"]},
                    text("original_chunk_id"),
                ],
                "vectorConfig": {"default": {"vectorizer": {"none": {}}, "vectorIndexType": "hnsw"}},
            })
        };
        self.ok("create class", Method::POST, "/v1/schema", Some(&class))
            .await
            .map(|_| ())
    }

    async fn write(&self, at: &Location, points: &[Point]) -> Result<(), VectorError> {
        let collection = &at.collection;
        let objects: Vec<Value> = points
            .iter()
            .map(|p| {
                let mut properties = p.metadata.clone();
                properties.insert("text".into(), Value::String(p.text.clone()));
                if self.legacy {
                    json!({"class": collection, "id": p.id, "properties": properties,
                           "vector": p.vector})
                } else {
                    json!({"class": collection, "id": p.id, "properties": properties,
                           "vectors": {"default": p.vector}})
                }
            })
            .collect();
        let answer = self
            .ok(
                "batch objects",
                Method::POST,
                "/v1/batch/objects",
                Some(&json!({ "objects": objects })),
            )
            .await?;
        let failed: Vec<&Value> = answer
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["result"]["errors"].is_object())
            .collect();
        match failed.first() {
            None => Ok(()),
            Some(first) => Err(VectorError::store(
                NAME,
                "batch objects",
                format!(
                    "{} of {} objects failed, e.g. {}",
                    failed.len(),
                    points.len(),
                    first["result"]["errors"]
                ),
            )),
        }
    }

    async fn count(&self, at: &Location) -> Result<u64, VectorError> {
        let collection = &at.collection;
        let data = self
            .graphql(format!(
                "{{ Aggregate {{ {collection} {{ meta {{ count }} }} }} }}"
            ))
            .await?;
        data["Aggregate"][collection][0]["meta"]["count"]
            .as_u64()
            .ok_or_else(|| VectorError::store(NAME, "aggregate", format!("no count in {data}")))
    }

    async fn read_back(
        &self,
        at: &Location,
        doc_ids: &[String],
    ) -> Result<Vec<Point>, VectorError> {
        self.objects(&at.collection, doc_ids).await
    }

    async fn present(&self, at: &Location, ids: &[String]) -> Result<Vec<String>, VectorError> {
        let collection = &at.collection;
        let mut found = Vec::new();
        for id in ids {
            let (status, body) = self
                .call(
                    "head object",
                    Method::HEAD,
                    &format!("/v1/objects/{collection}/{id}"),
                    None,
                )
                .await?;
            match status {
                s if s.is_success() => found.push(id.clone()),
                StatusCode::NOT_FOUND => {}
                s => {
                    return Err(VectorError::store(
                        NAME,
                        "head object",
                        format!("{s} {body}"),
                    ));
                }
            }
        }
        Ok(found)
    }

    async fn doc_ids(
        &self,
        at: &Location,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), VectorError> {
        let page = self.read_page(at, cursor, limit, false).await?;
        Ok((page.points.into_iter().map(|p| p.id).collect(), page.next))
    }

    async fn search(
        &self,
        at: &Location,
        vector: &[f32],
        limit: usize,
        document_ids: &[String],
    ) -> Result<Vec<Hit>, VectorError> {
        let collection = &at.collection;
        // Dify's filter: `document_id` contains any of the documents asked for.
        let filter = if document_ids.is_empty() {
            String::new()
        } else {
            format!(
                ", where: {{path: [\"document_id\"], operator: ContainsAny, valueText: {}}}",
                Value::from(document_ids.to_vec())
            )
        };
        let vector: Vec<String> = vector.iter().map(|x| x.to_string()).collect();
        let data = self
            .graphql(format!(
                "{{ Get {{ {collection}(nearVector: {{vector: [{}]}}, limit: {limit}{filter}) {{ _additional {{ id distance }} }} }} }}",
                vector.join(",")
            ))
            .await?;
        Ok(data["Get"][collection]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| {
                let id = o["_additional"]["id"].as_str()?.to_string();
                let distance = o["_additional"]["distance"].as_f64()?;
                Some(Hit {
                    id,
                    score: (1.0 - distance) as f32,
                })
            })
            .collect())
    }

    async fn remove(&self, at: &Location, ids: &[String]) -> Result<(), VectorError> {
        let collection = &at.collection;
        for id in ids {
            let (status, body) = self
                .call(
                    "delete object",
                    Method::DELETE,
                    &format!("/v1/objects/{collection}/{id}"),
                    None,
                )
                .await?;
            if !(status.is_success() || status == StatusCode::NOT_FOUND) {
                return Err(VectorError::store(
                    NAME,
                    "delete object",
                    format!("{status} {body}"),
                ));
            }
        }
        Ok(())
    }
}
