//! What a purge selects and counts: the cutoff, the protected runs, the batch statements for
//! this release's shape, and one batch's rows read.

use futures_util::TryStreamExt;
use sqlx::Postgres;

use super::*;

pub(super) fn cutoff(days: u32) -> NaiveDateTime {
    (Utc::now() - chrono::Duration::days(i64::from(days))).naive_utc()
}

pub(super) async fn protected_runs(
    pool: &PgPool,
    cutoff: NaiveDateTime,
) -> Result<Vec<Uuid>, JobError> {
    Ok(sqlx::query_scalar(log_tables::PROTECTED_RUNS)
        .bind(cutoff)
        .fetch_all(pool)
        .await?)
}

/// Binds the parameters every unit statement shares (see `log_tables`).
pub(super) fn bind_unit<'q>(
    sql: &'q str,
    tenants: Option<&'q [Uuid]>,
    cutoff: NaiveDateTime,
    cursor: Cursor,
    limit: i64,
    protected: &'q [Uuid],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(tenants)
        .bind(cutoff)
        .bind(cursor.time)
        .bind(cursor.id)
        .bind(limit)
        .bind(protected)
}

/// Rows a purge would remove now, per table, fate and tenant.
pub(super) struct Counts {
    pub(super) per_tenant: BTreeMap<Uuid, BTreeMap<String, u64>>,
    fates: BTreeMap<String, &'static str>,
}

impl Counts {
    pub(super) fn totals(&self) -> Vec<(String, &'static str, u64)> {
        let mut sum: BTreeMap<&str, u64> = BTreeMap::new();
        for tables in self.per_tenant.values() {
            for (table, n) in tables {
                *sum.entry(table).or_default() += n;
            }
        }
        self.fates
            .iter()
            .map(|(table, fate)| {
                (
                    table.clone(),
                    *fate,
                    sum.get(table.as_str()).copied().unwrap_or(0),
                )
            })
            .collect()
    }
}

pub(super) async fn count(
    pool: &PgPool,
    fit: &Fit,
    tenants: Option<&[Uuid]>,
    cutoff: NaiveDateTime,
    protected: &[Uuid],
) -> Result<Counts, JobError> {
    use sqlx::Row as _;
    let mut counts = Counts {
        per_tenant: BTreeMap::new(),
        fates: BTreeMap::new(),
    };
    for unit in UNITS {
        let mut statements = vec![(unit.table, "deleted", unit.count_per_tenant())];
        for d in unit.dependents.iter().filter(|d| d.present(fit)) {
            let fate = match d.fate {
                Fate::Delete => "deleted",
                Fate::Detach(_) => "detached",
            };
            statements.push((d.table, fate, d.count_per_tenant(unit)));
        }
        for (table, fate, sql) in statements {
            counts.fates.insert(table.to_string(), fate);
            let rows = bind_unit(&sql, tenants, cutoff, Cursor::start(), 0, protected)
                .fetch_all(pool)
                .await?;
            for row in rows {
                let tenant: Option<Uuid> = row.try_get(0)?;
                let n: i64 = row.try_get(1)?;
                *counts
                    .per_tenant
                    .entry(tenant.unwrap_or_default())
                    .or_default()
                    .entry(table.to_string())
                    .or_default() += n.max(0) as u64;
            }
        }
    }
    Ok(counts)
}

/// The batch statements; without an export the parents are read without their JSON.
pub(super) async fn statements(
    pool: &PgPool,
    fit: &Fit,
    paths: &[Choice],
    export: bool,
) -> Result<Sql, JobError> {
    // Parents are `p` and dependents `t` in the statements: one expression per table and alias.
    let mut json_of: HashMap<(&str, &str), String> = HashMap::new();
    for table in log_tables::tables().into_iter().filter(|t| fit.has(t)) {
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        for alias in ["p", "t"] {
            json_of.insert((table, alias), log_tables::row_json(alias, &columns));
        }
    }
    let json = |table: &str, alias: &str| json_of.get(&(table, alias)).cloned().unwrap_or_default();
    let dependents: Vec<Vec<Dependent>> = UNITS
        .iter()
        .map(|u| {
            u.dependents
                .iter()
                .filter(|d| d.present(fit))
                .map(|d| {
                    let leading = |table: &str, column: &str| {
                        paths
                            .iter()
                            .find(|c| c.table == table && c.by == column)
                            .and_then(|c| c.leading)
                    };
                    Dependent {
                        path: leading(d.table, d.column),
                        via_path: d.via.and_then(|(via, fk)| leading(via, fk)),
                        ..*d
                    }
                })
                .collect()
        })
        .collect();
    let keysets = keysets(paths);
    Ok(Sql {
        select_parents: UNITS
            .iter()
            .zip(&keysets)
            .map(|(u, k)| {
                let row = if export {
                    json(u.table, "p")
                } else {
                    "NULL::text".to_string()
                };
                u.select_batch_by(*k, &row)
            })
            .collect(),
        keysets,
        select_dependents: dependents
            .iter()
            .map(|deps| {
                deps.iter()
                    .map(|d| d.select_for(&json(d.table, "t")))
                    .collect()
            })
            .collect(),
        dependents,
    })
}

pub(super) async fn start(
    params: &PurgeLogsParams,
    ctx: &mut JobCtx,
    fit: &Fit,
) -> Result<Checkpoint, JobError> {
    ctx.progress(
        Progress {
            phase: "count".into(),
            unit: "rows".into(),
            ..Default::default()
        },
        true,
    )
    .await?;
    let cutoff = cutoff(params.days);
    let protected = protected_runs(&ctx.pool, cutoff).await?;
    let counts = count(
        &ctx.pool,
        fit,
        params.tenant_ids.as_deref(),
        cutoff,
        &protected,
    )
    .await?;
    let cp = Checkpoint {
        cutoff,
        unit: 0,
        cursor: Cursor::start(),
        protected_runs: None,
        pending: Vec::new(),
        last_stamp_us: 0,
        totals: counts
            .totals()
            .into_iter()
            .map(|(table, _, n)| (table, n))
            .collect(),
        tables: BTreeMap::new(),
        batches: 0,
        files: 0,
        bytes: 0,
        retried_batches: 0,
        longest_tx_ms: 0,
        cursor_by_id: None,
    };
    ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
    Ok(cp)
}

/// What a batch's reads share: the unit's statements and the job's selection.
pub(super) struct Walk<'a> {
    pub(super) pool: &'a PgPool,
    pub(super) sql: &'a Sql,
    pub(super) unit: usize,
    pub(super) tenants: Option<&'a [Uuid]>,
    pub(super) cutoff: NaiveDateTime,
    pub(super) batch: i64,
    pub(super) protected: &'a [Uuid],
    pub(super) export: bool,
}

/// The next batch after `after`, or `None` when the unit has no rows left. Without an export
/// only the parents' ids are read: the deletes find the dependents themselves.
pub(super) async fn read_batch(w: &Walk<'_>, after: Cursor) -> Result<Option<Batch>, JobError> {
    use sqlx::Row as _;
    let unit = &UNITS[w.unit];
    // Streamed: each parent's JSON goes into the files as it arrives, so a batch of large rows
    // is held once, as the bytes to write, not also as the rows read.
    let mut rows = bind_unit(
        &w.sql.select_parents[w.unit],
        w.tenants,
        w.cutoff,
        after,
        w.batch,
        w.protected,
    )
    .fetch(w.pool);
    let capacity = usize::try_from(w.batch).unwrap_or_default();
    let mut ids = Vec::with_capacity(capacity);
    let mut tenant_of: HashMap<Uuid, Uuid> = HashMap::with_capacity(capacity);
    let mut files = Files::default();
    let mut last_time = after.time;
    while let Some(row) = rows.try_next().await? {
        let id: Uuid = row.try_get(0)?;
        let tenant: Option<Uuid> = row.try_get(1)?;
        let tenant = tenant.unwrap_or_default();
        if w.sql.keysets[w.unit] == Keyset::CreatedAtId {
            last_time = row.try_get(2)?;
        }
        if w.export {
            let json: &str = row.try_get(3)?;
            files.push(tenant, unit.table, json);
            tenant_of.insert(id, tenant);
        }
        ids.push(id);
    }
    drop(rows);
    let Some(&last_id) = ids.last() else {
        return Ok(None);
    };
    let last = Cursor {
        time: last_time,
        id: last_id,
    };
    if !w.export {
        return Ok(Some(Batch {
            ids,
            last,
            export: None,
        }));
    }
    // Each dependent table on its own connection, at once: the reads are independent. Rows
    // are streamed into the files, so a batch is held once, as the bytes to write.
    let reads = w.sql.dependents[w.unit]
        .iter()
        .zip(&w.sql.select_dependents[w.unit])
        .map(|(d, select)| {
            let (ids, tenant_of) = (&ids, &tenant_of);
            async move {
                let mut rows = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                    .bind(ids)
                    .fetch(w.pool);
                let (mut copied, mut files) = (HashSet::new(), Files::default());
                while let Some(row) = rows.try_next().await? {
                    let parent: Uuid = row.try_get(1)?;
                    let json: &str = row.try_get(2)?;
                    let tenant = tenant_of.get(&parent).copied().unwrap_or_default();
                    files.push(tenant, d.table, json);
                    copied.insert(row.try_get(0)?);
                }
                Ok::<_, JobError>((copied, files))
            }
        });
    let mut copied = Vec::with_capacity(w.sql.dependents[w.unit].len());
    for (ids, more) in futures_util::future::try_join_all(reads).await? {
        copied.push(ids);
        files.merge(more);
    }
    Ok(Some(Batch {
        ids,
        last,
        export: Some(Exported { files, copied }),
    }))
}
