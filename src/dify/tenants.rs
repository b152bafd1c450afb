//! Tenants (workspaces): the list operators need to pick `tenant_ids` for a purge.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    /// Informational on self-hosted Dify (always `basic` there).
    pub plan: String,
    /// `normal` or `archive`.
    pub status: String,
    /// Dify stores UTC without a zone; given here with it, like every other time.
    pub created_at: DateTime<Utc>,
    pub apps: i64,
    pub members: i64,
}

/// One page in creation order; `after` is the last id of the previous page.
pub async fn list(
    pool: &sqlx::PgPool,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Tenant>, sqlx::Error> {
    sqlx::query_as::<_, Tenant>(
        "SELECT t.id, t.name, t.plan, t.status, t.created_at AT TIME ZONE 'UTC' AS created_at, \
            (SELECT count(*) FROM public.apps a WHERE a.tenant_id = t.id) AS apps, \
            (SELECT count(*) FROM public.tenant_account_joins j WHERE j.tenant_id = t.id) AS members \
         FROM public.tenants t \
         WHERE $1::uuid IS NULL OR (t.created_at, t.id) > \
            (SELECT created_at, id FROM public.tenants WHERE id = $1) \
         ORDER BY t.created_at, t.id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}
