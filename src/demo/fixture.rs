//! The project's own copy of Dify's schema (only the tables Upkeep touches) and its loader.

use sqlx::PgPool;

/// Dify's tables as Upkeep reads and writes them; `tests/it/fixture_conformance.rs` proves they
/// match Dify's real schema.
pub const DIFY_SCHEMA_SQL: &str = include_str!("../../tests/fixtures/dify_schema.sql");

/// The Alembic head of the Dify revision the fixture mirrors (Dify 1.15.0).
pub const DIFY_REVISION: &str = "c3d4e5f6a7b8";

/// Creates the fixture's tables in an empty database and stamps it with [`DIFY_REVISION`], as
/// Dify's own migrations would have left it.
pub async fn load_dify_fixture(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(DIFY_SCHEMA_SQL).execute(pool).await?;
    // Alembic keeps exactly one row; preflight reads it to recognise the schema.
    sqlx::query(
        "INSERT INTO public.alembic_version (version_num) \
         SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM public.alembic_version)",
    )
    .bind(DIFY_REVISION)
    .execute(pool)
    .await?;
    Ok(())
}
