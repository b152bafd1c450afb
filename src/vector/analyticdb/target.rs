//! AnalyticDB as a target: Dify's table, indexes and rows, written as Dify writes them.

use super::*;

impl VectorTarget for AnalyticdbStore {
    async fn ensure(&self, at: &Location, dimension: usize) -> Result<(), VectorError> {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(DATABASE)
                .fetch_one(&self.admin)
                .await
                .map_err(failed(NAME, "ensure"))?;
        if !exists {
            self.create_database().await?;
        }
        let mut tx = self.pool.begin().await.map_err(failed(NAME, "ensure"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('upkeep analyticdb ensure'))")
            .execute(&mut *tx)
            .await
            .map_err(failed(NAME, "ensure"))?;
        let zh_cn: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = 'zh_cn')",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(failed(NAME, "ensure"))?;
        self.zh_cn.store(zh_cn, Ordering::Relaxed);
        if let Some(info) = self.describe(&at.collection).await?
            && info.dimension.is_some_and(|d| d != dimension)
        {
            return Err(VectorError::Layout(format!(
                "table {} holds {}-dimensional vectors, the records have {dimension}",
                self.table(&at.collection)?,
                info.dimension.unwrap_or(0)
            )));
        }
        let name = self.table(&at.collection)?;
        let mut statements = vec![
            format!("CREATE SCHEMA IF NOT EXISTS {}", unquoted(&self.namespace)?),
            format!(
                "CREATE TABLE IF NOT EXISTS {name} (id text PRIMARY KEY, vector real[], \
                 ref_doc_id text, page_content text, metadata_ jsonb, to_tsvector TSVECTOR) \
                 WITH (fillfactor=70){}",
                if self.caps.greenplum {
                    " DISTRIBUTED BY (id)"
                } else {
                    ""
                }
            ),
            format!("ALTER TABLE {name} ALTER COLUMN vector SET STORAGE PLAIN"),
        ];
        let has = |method: &'static str| {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_am m ON m.oid = c.relam \
                 WHERE i.indrelid = to_regclass($1) AND m.amname = $2)",
            )
            .bind(name.clone())
            .bind(method)
        };
        for statement in statements.drain(..) {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if not_allowed(&e) {
                        VectorError::Config(format!(
                            "the account {} may not create {name}: {e}",
                            self.account
                        ))
                    } else {
                        VectorError::store(NAME, "create table", e)
                    }
                })?;
        }
        if self.caps.ann
            && !has("ann")
                .fetch_one(&mut *tx)
                .await
                .map_err(failed(NAME, "ensure"))?
        {
            statements.push(format!(
                "CREATE INDEX {} ON {name} USING ann(vector) WITH(dim='{dimension}', \
                 distancemeasure='cosine', pq_enable=0, external_storage=0)",
                unquoted(&format!("{}_embedding_idx", at.collection.to_lowercase()))?
            ));
        }
        if !has("gin")
            .fetch_one(&mut *tx)
            .await
            .map_err(failed(NAME, "ensure"))?
        {
            statements.push(format!("CREATE INDEX ON {name} USING gin(to_tsvector)"));
        }
        for statement in statements {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(failed(NAME, "create index"))?;
        }
        tx.commit().await.map_err(failed(NAME, "ensure"))?;
        self.ensure_function().await
    }

    async fn write(&self, at: &Location, points: &[Point]) -> Result<(), VectorError> {
        self.insert(at, points, true).await
    }

    async fn write_new(&self, at: &Location, points: &[Point]) -> Result<(), VectorError> {
        self.insert(at, points, false).await
    }

    async fn present(&self, at: &Location, doc_ids: &[String]) -> Result<Vec<String>, VectorError> {
        let found = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT DISTINCT ref_doc_id FROM {} WHERE ref_doc_id = ANY($1)",
            self.table(&at.collection)?
        )))
        .bind(doc_ids)
        .fetch_all(&self.pool)
        .await;
        match found {
            Err(e) if missing_table(&e) => Ok(Vec::new()),
            r => r.map_err(failed(NAME, "present")),
        }
    }

    async fn count(&self, at: &Location) -> Result<u64, VectorError> {
        let n = sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            self.table(&at.collection)?
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
        self.rows(at, "ref_doc_id", doc_ids, "read back").await
    }

    /// Pages by the primary key (Dify makes no index on `ref_doc_id`): a record held twice
    /// shows twice.
    async fn doc_ids(
        &self,
        at: &Location,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), VectorError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, ref_doc_id FROM {} WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
            self.table(&at.collection)?
        )))
        .bind(cursor)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Err(e) if missing_table(&e) => return Ok((Vec::new(), None)),
            r => r.map_err(failed(NAME, "doc ids"))?,
        };
        let mut last = None;
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            last = Some(
                r.try_get::<String, _>("id")
                    .map_err(failed(NAME, "doc ids"))?,
            );
            ids.push(
                r.try_get::<Option<String>, _>("ref_doc_id")
                    .map_err(failed(NAME, "doc ids"))?
                    .unwrap_or_default(),
            );
        }
        Ok((ids, if rows.len() == limit { last } else { None }))
    }

    async fn search(
        &self,
        at: &Location,
        vector: &[f32],
        limit: usize,
        document_ids: &[String],
    ) -> Result<Vec<Hit>, VectorError> {
        // Dify's query, with the space its filter lacks (`1=1AND`, which Postgres 15+ rejects).
        let filter = if document_ids.is_empty() {
            ""
        } else {
            "AND metadata_->>'document_id' = ANY($3)"
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT metadata_->>'doc_id' AS doc_id, vector <=> $1::real[] AS distance FROM {} \
             WHERE 1=1 {filter} ORDER BY distance LIMIT $2",
            self.table(&at.collection)?
        )))
        .bind(vector_literal(vector, '{', '}'))
        .bind(limit as i64)
        .bind(document_ids)
        .fetch_all(&self.pool)
        .await;
        sql::hits(NAME, rows)
    }

    async fn remove(&self, at: &Location, doc_ids: &[String]) -> Result<(), VectorError> {
        let done = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE ref_doc_id = ANY($1)",
            self.table(&at.collection)?
        )))
        .bind(doc_ids)
        .execute(&self.pool)
        .await;
        match done {
            Err(e) if missing_table(&e) => Ok(()),
            r => r.map(|_| ()).map_err(failed(NAME, "delete")),
        }
    }
}

impl AnalyticdbStore {
    /// Inserts rows as Dify does (ids `<uuid4>_<i>`); with `replace`, what the `doc_id`s had
    /// goes in the same transaction.
    async fn insert(
        &self,
        at: &Location,
        points: &[Point],
        replace: bool,
    ) -> Result<(), VectorError> {
        let points = last_per_doc_id(points);
        if points.is_empty() {
            return Ok(());
        }
        let name = self.table(&at.collection)?;
        let refs: Vec<&str> = points.iter().map(|p| p.id.as_str()).collect();
        let vectors: Vec<String> = points
            .iter()
            .map(|p| vector_literal(&p.vector, '{', '}'))
            .collect();
        let texts: Vec<&str> = points.iter().map(|p| p.text.as_str()).collect();
        let metas: Vec<String> = points
            .iter()
            .map(|p| serde_json::Value::Object(p.metadata.clone()).to_string())
            .collect();
        let tsvector = if self.zh_cn.load(Ordering::Relaxed) {
            "to_tsvector('zh_cn', u.page_content)"
        } else {
            "NULL"
        };
        let mut tx = self.pool.begin().await.map_err(failed(NAME, "insert"))?;
        if replace {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {name} WHERE ref_doc_id = ANY($1)"
            )))
            .bind(&refs)
            .execute(&mut *tx)
            .await
            .map_err(failed(NAME, "insert"))?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {name} (id, ref_doc_id, vector, page_content, metadata_, to_tsvector) \
             SELECT $1 || '_' || (u.i - 1), u.ref_doc_id, u.vector::real[], u.page_content, \
             u.metadata_::jsonb, {tsvector} \
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY \
             AS u(ref_doc_id, vector, page_content, metadata_, i)"
        )))
        .bind(Uuid::new_v4().to_string())
        .bind(&refs)
        .bind(&vectors)
        .bind(&texts)
        .bind(&metas)
        .execute(&mut *tx)
        .await
        .map_err(failed(NAME, "insert"))?;
        tx.commit().await.map_err(failed(NAME, "insert"))
    }
}
