//! Qdrant as a target: collections in Dify's layout, points upserted under their `doc_id`.

use super::*;

/// Point ids are `doc_id`s: Dify's own rule for Qdrant.
impl VectorTarget for QdrantStore {
    // `hnsw_config.on_disk` is deprecated in current Qdrant; Dify sends it, so do we.
    #[allow(deprecated)]
    async fn ensure(&self, at: &Location, dimension: usize) -> Result<(), VectorError> {
        let collection = at.collection.as_str();
        if self.info(collection).await?.is_none() {
            let created = self
                .client
                .create_collection(CreateCollection {
                    collection_name: collection.to_string(),
                    vectors_config: Some(VectorsConfig {
                        config: Some(Config::Params(VectorParams {
                            size: dimension as u64,
                            distance: Distance::Cosine as i32,
                            ..Default::default()
                        })),
                    }),
                    hnsw_config: Some(HnswConfigDiff {
                        m: Some(0),
                        payload_m: Some(16),
                        ef_construct: Some(100),
                        full_scan_threshold: Some(10_000),
                        max_indexing_threads: Some(0),
                        on_disk: Some(false),
                        ..Default::default()
                    }),
                    replication_factor: Some(self.replication_factor),
                    write_consistency_factor: Some(1),
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => {}
                // Dify (or another writer) made it meanwhile: checked below like any other.
                Err(QdrantError::ResponseError { status })
                    if status.code() == tonic::Code::AlreadyExists => {}
                Err(e) => return Err(failed("create collection", e)),
            }
        }
        let Some((info, indexed)) = self.info(collection).await? else {
            return Err(VectorError::Layout(format!(
                "Qdrant collection {collection} is gone right after it was created"
            )));
        };
        if info.dimension != Some(dimension) || info.distance != "cosine" {
            return Err(VectorError::Layout(format!(
                "Qdrant collection {collection} exists with {:?} dimensions and {} distance; \
                 the source has {dimension} and cosine",
                info.dimension, info.distance
            )));
        }
        // Dify creates its indexes right after the collection; one missing (a writer stopped
        // in between, or a collection from before Dify added it) is made as Dify makes it.
        for field in ["group_id", "metadata.doc_id", "metadata.document_id"] {
            if !indexed.contains(field) {
                self.create_index(collection, field, FieldType::Keyword, None)
                    .await?;
            }
        }
        if !indexed.contains("page_content") {
            let text = TextIndexParams {
                tokenizer: TokenizerType::Multilingual as i32,
                lowercase: Some(true),
                min_token_len: Some(2),
                max_token_len: Some(20),
                ..Default::default()
            };
            self.create_index(
                collection,
                "page_content",
                FieldType::Text,
                Some(IndexParams::TextIndexParams(text)),
            )
            .await?;
        }
        Ok(())
    }

    async fn write(&self, at: &Location, points: &[Point]) -> Result<(), VectorError> {
        let group = at.group.as_str();
        let mut structs = Vec::with_capacity(points.len());
        for p in points {
            let payload = serde_json::json!({
                "page_content": p.text,
                "metadata": p.metadata,
                "group_id": group,
            });
            let payload = Payload::try_from(payload)
                .map_err(|e| VectorError::Layout(format!("point {}: {e}", p.id)))?;
            structs.push(PointStruct {
                id: Some(uuid_id(&p.id)),
                payload: payload.into(),
                vectors: Some(self.vector(p.vector.clone())),
            });
        }
        // `wait`: before 1.19 a rejected point in an unawaited write is lost silently.
        self.client
            .upsert_points(UpsertPoints {
                collection_name: at.collection.clone(),
                wait: Some(true),
                points: structs,
                ..Default::default()
            })
            .await
            .map_err(|e| failed("upsert", e))?;
        Ok(())
    }

    async fn count(&self, at: &Location) -> Result<u64, VectorError> {
        let counted = self
            .client
            .count(CountPoints {
                collection_name: at.collection.clone(),
                filter: Some(group_filter(&at.group)),
                exact: Some(true),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("count", e))?;
        Ok(counted.result.map_or(0, |r| r.count))
    }

    async fn read_back(
        &self,
        at: &Location,
        doc_ids: &[String],
    ) -> Result<Vec<Point>, VectorError> {
        self.points(&at.collection, doc_ids).await
    }

    async fn present(&self, at: &Location, ids: &[String]) -> Result<Vec<String>, VectorError> {
        let got = self
            .client
            .get_points(GetPoints {
                collection_name: at.collection.clone(),
                ids: ids.iter().map(|i| uuid_id(i)).collect(),
                with_payload: Some(false.into()),
                with_vectors: Some(false.into()),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("get points", e))?;
        Ok(got
            .result
            .iter()
            .map(|p| id_string(p.id.as_ref()))
            .collect())
    }

    async fn doc_ids(
        &self,
        at: &Location,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), VectorError> {
        let page = self.scroll_group(at, cursor, limit, false, false).await?;
        let ids = page
            .result
            .iter()
            .map(|p| id_string(p.id.as_ref()))
            .collect();
        Ok((
            ids,
            page.next_page_offset.as_ref().map(|id| id_string(Some(id))),
        ))
    }

    async fn search(
        &self,
        at: &Location,
        vector: &[f32],
        limit: usize,
        document_ids: &[String],
    ) -> Result<Vec<Hit>, VectorError> {
        // Dify's filter: the group, and `metadata.document_id` any of those asked for.
        let mut filter = group_filter(&at.group);
        if !document_ids.is_empty() {
            filter.must.push(Condition::matches(
                "metadata.document_id",
                document_ids.to_vec(),
            ));
        }
        let found = self
            .client
            .search_points(SearchPoints {
                collection_name: at.collection.clone(),
                vector: vector.to_vec(),
                filter: Some(filter),
                limit: limit as u64,
                with_payload: Some(false.into()),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("search", e))?;
        Ok(found
            .result
            .into_iter()
            .map(|p| Hit {
                id: id_string(p.id.as_ref()),
                score: p.score,
            })
            .collect())
    }

    async fn remove(&self, at: &Location, ids: &[String]) -> Result<(), VectorError> {
        let ids: Vec<PointId> = ids.iter().map(|i| uuid_id(i)).collect();
        self.client
            .delete_points(DeletePoints {
                collection_name: at.collection.clone(),
                wait: Some(true),
                points: Some(ids.into()),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("delete points", e))?;
        Ok(())
    }
}
