//! The access path of each lookup on this release's indexes, and the temporary indexes the
//! operator allowed.

use super::*;

/// The access path of every lookup the purge makes: each parent walk by its keyset, each
/// dependent (and the intermediate it hangs off) by its link column.
pub(super) fn access(catalog: &Shape, fit: &Fit, temporary: bool) -> Vec<Choice> {
    let mut out: Vec<Choice> = Vec::new();
    for unit in UNITS {
        if unit.keyset == Keyset::CreatedAtId {
            let exact = access_paths::choose(catalog, unit.table, &["created_at", "id"], temporary);
            let first = access_paths::choose(catalog, unit.table, &["created_at"], false);
            // An index on `created_at` alone serves the walk too (ties sorted per batch).
            out.push(match (&exact.path, &first.path) {
                (Path::Index { .. }, _) => exact,
                (_, Path::Index { .. }) => first,
                (Path::Scan, _) => walk_by_id(catalog, unit.table).unwrap_or(exact),
                _ => exact,
            });
        }
        for d in unit.dependents.iter().filter(|d| d.present(fit)) {
            let mut lookups = vec![(d.table, d.column)];
            if let Some(via) = d.via {
                lookups.push(via);
            }
            for (table, column) in lookups {
                if !out.iter().any(|c| c.table == table && c.by == column) {
                    out.push(access_paths::choose(catalog, table, &[column], temporary));
                }
            }
        }
    }
    out
}

/// Without any index on `created_at` (workflow runs before 1.13) a time-ordered walk would
/// scan the table per batch: walking by primary key reads it once for the whole purge.
pub(super) fn walk_by_id(catalog: &Shape, table: &str) -> Option<Choice> {
    let mut by_id = access_paths::choose(catalog, table, &["id"], false);
    let Path::Index { index } = &by_id.path else {
        return None;
    };
    by_id.why = format!(
        "this Dify has no index on {table} (created_at): walked by {index} instead, one pass \
         over the table for the whole purge. temporary_indexes: true builds one on (created_at, id)"
    );
    Some(by_id)
}

/// How each unit's parents are walked on this release.
pub(super) fn keysets(paths: &[Choice]) -> Vec<Keyset> {
    UNITS
        .iter()
        .map(|u| {
            let by_id = paths.iter().any(|c| c.table == u.table && c.by == "id");
            if by_id { Keyset::Id } else { u.keyset }
        })
        .collect()
}

/// The columns a temporary index of `choice` covers.
pub(super) fn temporary_columns(choice: &Choice) -> Vec<&str> {
    choice.by.split(", ").collect()
}

/// Builds the temporary indexes the paths call for (outside any transaction, so Dify's
/// writes go on). An invalid one left by a killed build is dropped and built again.
pub(super) async fn build_temporary(ctx: &mut JobCtx, paths: &[Choice]) -> Result<(), JobError> {
    for c in paths {
        let index = match &c.path {
            Path::TemporaryIndex { index } => index,
            Path::Scan => {
                ctx.warn(format!("{}: {}", c.table, c.why), Value::Null)
                    .await?;
                continue;
            }
            _ => continue,
        };
        let columns = temporary_columns(c);
        ctx.log(
            format!(
                "building the temporary index {index} on {} ({})",
                c.table, c.by
            ),
            Value::Null,
        )
        .await?;
        for sql in [
            access_paths::temporary_drop(&c.table, &columns),
            access_paths::temporary_create(&c.table, &columns),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&ctx.pool)
                .await?;
        }
    }
    Ok(())
}

/// Drops Upkeep's temporary indexes, whether this attempt or an earlier one built them.
pub(super) async fn drop_temporary(ctx: &mut JobCtx, paths: &[Choice]) -> Result<(), JobError> {
    for c in paths {
        let ours = match &c.path {
            Path::TemporaryIndex { .. } => true,
            Path::Index { index } => index.starts_with("upkeep_tmp_"),
            _ => false,
        };
        if ours {
            let sql = access_paths::temporary_drop(&c.table, &temporary_columns(c));
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&ctx.pool)
                .await?;
        }
    }
    Ok(())
}
