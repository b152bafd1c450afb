//! pgvector as a target: Dify's table and index, rows written as Dify writes them.

use super::*;

impl VectorTarget for PgvectorStore {
    async fn ensure(&self, at: &Location, dimension: usize) -> Result<(), VectorError> {
        let name = table(&at.collection)?;
        let hash = index_hash(&at.collection);
        let mut tx = self.pool.begin().await.map_err(failed(NAME, "ensure"))?;
        // One creator at a time: concurrent CREATE ... IF NOT EXISTS can still collide.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('upkeep pgvector ensure'))")
            .execute(&mut *tx)
            .await
            .map_err(failed(NAME, "ensure"))?;
        self.ensure_extension(&mut tx).await?;
        if let Some(info) = self.describe(&at.collection).await?
            && info.dimension != Some(dimension)
        {
            return Err(VectorError::Layout(format!(
                "table {name} holds {}-dimensional vectors, the records have {dimension}",
                info.dimension.unwrap_or(0)
            )));
        }
        let mut statements = vec![format!(
            "CREATE TABLE IF NOT EXISTS {name} (id UUID PRIMARY KEY, text TEXT NOT NULL, \
             meta JSONB NOT NULL, embedding vector({dimension}) NOT NULL) USING heap"
        )];
        if dimension <= HNSW_MAX_DIMENSION {
            statements.push(format!(
                "CREATE INDEX IF NOT EXISTS embedding_cosine_v1_idx_{hash} ON {name} \
                 USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            ));
        }
        if self.bigm {
            statements.push(format!(
                "CREATE INDEX IF NOT EXISTS bigm_idx_{hash} ON {name} USING gin (text gin_bigm_ops)"
            ));
        }
        for statement in statements {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if self.bigm && sql::missing_object(&e) {
                        VectorError::Config(format!(
                            "PGVECTOR_PG_BIGM is on, but database {} has no pg_bigm: install it \
                             (CREATE EXTENSION pg_bigm) or turn PGVECTOR_PG_BIGM off",
                            self.database
                        ))
                    } else {
                        VectorError::store(NAME, "create table", e)
                    }
                })?;
        }
        tx.commit().await.map_err(failed(NAME, "ensure"))
    }

    async fn write(&self, at: &Location, points: &[Point]) -> Result<(), VectorError> {
        let points = last_per_doc_id(points);
        if points.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(points.len());
        let mut texts = Vec::with_capacity(points.len());
        let mut metas = Vec::with_capacity(points.len());
        let mut vectors = Vec::with_capacity(points.len());
        for p in points.iter() {
            ids.push(uuid_of(&p.id)?);
            texts.push(p.text.as_str());
            metas.push(serde_json::Value::Object(p.metadata.clone()).to_string());
            vectors.push(vector_literal(&p.vector, '[', ']'));
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (id, text, meta, embedding) \
             SELECT u.id, u.text, u.meta::jsonb, u.embedding::vector \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS u(id, text, meta, embedding) \
             ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, meta = EXCLUDED.meta, \
             embedding = EXCLUDED.embedding",
            table(&at.collection)?
        )))
        .bind(&ids)
        .bind(&texts)
        .bind(&metas)
        .bind(&vectors)
        .execute(&self.pool)
        .await
        .map_err(failed(NAME, "insert"))?;
        Ok(())
    }

    async fn present(&self, at: &Location, doc_ids: &[String]) -> Result<Vec<String>, VectorError> {
        let wanted = by_uuid(doc_ids);
        let keys: Vec<Uuid> = wanted.keys().copied().collect();
        let found = sqlx::query_scalar::<_, Uuid>(AssertSqlSafe(format!(
            "SELECT id FROM {} WHERE id = ANY($1)",
            table(&at.collection)?
        )))
        .bind(&keys)
        .fetch_all(&self.pool)
        .await;
        let found = match found {
            Err(e) if missing_table(&e) => return Ok(Vec::new()),
            r => r.map_err(failed(NAME, "present"))?,
        };
        Ok(found
            .iter()
            .filter_map(|u| wanted.get(u).map(|d| (*d).clone()))
            .collect())
    }

    async fn count(&self, at: &Location) -> Result<u64, VectorError> {
        let n = sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            table(&at.collection)?
        )))
        .fetch_one(&self.pool)
        .await;
        match n {
            Err(e) if missing_table(&e) => Ok(0),
            r => r.map(|n| n.max(0) as u64).map_err(failed(NAME, "count")),
        }
    }

    async fn read_back(
        &self,
        at: &Location,
        doc_ids: &[String],
    ) -> Result<Vec<Point>, VectorError> {
        self.rows_by_id(at, doc_ids, "read back").await
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
        // Dify's query: cosine distance, `meta->>'document_id'` in the list when there is one.
        let filter = if document_ids.is_empty() {
            ""
        } else {
            "WHERE meta->>'document_id' = ANY($3)"
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT meta->>'doc_id' AS doc_id, embedding <=> $1::vector AS distance FROM {} {filter} \
             ORDER BY distance LIMIT $2",
            table(&at.collection)?
        )))
        .bind(vector_literal(vector, '[', ']'))
        .bind(limit as i64)
        .bind(document_ids)
        .fetch_all(&self.pool)
        .await;
        sql::hits(NAME, rows)
    }

    async fn remove(&self, at: &Location, doc_ids: &[String]) -> Result<(), VectorError> {
        let keys: Vec<Uuid> = by_uuid(doc_ids).into_keys().collect();
        let done = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE id = ANY($1)",
            table(&at.collection)?
        )))
        .bind(&keys)
        .execute(&self.pool)
        .await;
        match done {
            Err(e) if missing_table(&e) => Ok(()),
            r => r.map(|_| ()).map_err(failed(NAME, "delete")),
        }
    }
}
