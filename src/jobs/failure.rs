//! Every code a failed job's `error.code` can carry, what it means, and whether `retry` can
//! help: one table, published in the OpenAPI document as the enum of `JobErrorView.code` and
//! in the README. A test holds it to the codes the source actually uses.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, SchemaFormat};

pub struct Failure {
    pub code: &'static str,
    pub meaning: &'static str,
    /// Whether `POST /v1/jobs/{id}/retry` can succeed without changing anything but the
    /// cause (a server back, a full disk emptied).
    pub retry: bool,
}

const fn f(code: &'static str, retry: bool, meaning: &'static str) -> Failure {
    Failure {
        code,
        meaning,
        retry,
    }
}

pub const FAILURES: &[Failure] = &[
    f(
        "bad_checkpoint",
        false,
        "the stored checkpoint is not one this version reads",
    ),
    f(
        "bad_manifest",
        false,
        "a backup set's manifest cannot be read or does not match its files",
    ),
    f(
        "bad_vector_file",
        false,
        "a backup set's vector file is damaged",
    ),
    f(
        "children_failed",
        true,
        "some child jobs of a fanned-out job (`fan_out`) did not succeed; a retry of the parent retries them",
    ),
    f(
        "children_missing",
        false,
        "a fanned-out job's child jobs are gone (deleted), so it cannot finish",
    ),
    f(
        "counts_differ",
        false,
        "after a restore, the rows per table differ from the manifest's",
    ),
    f(
        "database_error",
        true,
        "Upkeep's own database failed mid-job (a lost connection instead requeues the job at its checkpoint, while attempts are left)",
    ),
    f(
        "datasets_failed",
        true,
        "some datasets failed and kept their old store; the others moved",
    ),
    f("dump_failed", true, "pg_dump failed"),
    f(
        "export_failed",
        true,
        "writing the export of rows to delete failed; nothing was deleted for that batch",
    ),
    f("failpoint", true, "a test failure point fired (tests only)"),
    f(
        "internal",
        true,
        "an unexpected error inside Upkeep (a bug: please report it)",
    ),
    f(
        "invalid_params",
        false,
        "the stored params are no longer valid (e.g. a named table or store is gone)",
    ),
    f(
        "lock_timeout",
        true,
        "a table stayed locked by someone else for longer than the job waits",
    ),
    f(
        "objects_failed",
        true,
        "some objects could not be copied or read; the rest are recorded",
    ),
    f(
        "panicked",
        false,
        "the job's code panicked (a bug: please report it)",
    ),
    f(
        "part_not_in_set",
        false,
        "the backup set does not hold the part asked for",
    ),
    f(
        "pg_dump_unusable",
        false,
        "pg_dump is missing or older than the server",
    ),
    f(
        "pg_restore_too_old",
        false,
        "pg_restore is older than the archive",
    ),
    f(
        "references_unreadable",
        true,
        "Dify's tables that reference files could not be read",
    ),
    f("restore_failed", true, "pg_restore failed"),
    f(
        "restore_test_failed",
        true,
        "the scratch restore of a verification failed",
    ),
    f(
        "rows_changing",
        true,
        "rows kept changing under the job beyond its retries",
    ),
    f(
        "secret_key_mismatch",
        false,
        "the job's secrets were encrypted with another key than this daemon's (see `upkeep rekey`)",
    ),
    f(
        "secrets_unreadable",
        false,
        "the job's stored secrets are damaged",
    ),
    f(
        "set_incomplete",
        false,
        "the backup set lacks files its manifest lists",
    ),
    f("source_failed", true, "the source storage failed"),
    f(
        "storage_empty",
        false,
        "the storage holds nothing: refusing to call every reference orphaned",
    ),
    f("storage_failed", true, "the storage failed"),
    f(
        "tables_failed",
        true,
        "some tables could not be vacuumed; the others were",
    ),
    f("tables_missing", false, "tables the job needs are missing"),
    f("target_failed", true, "the target storage failed"),
    f(
        "target_unreachable",
        true,
        "the target vector store did not answer",
    ),
    f("vector_store_failed", true, "the vector store failed"),
    f(
        "vector_store_unusable",
        false,
        "the vector store cannot take these records (layout or configuration)",
    ),
    f(
        "vectors_mismatch",
        false,
        "restored vectors differ from the backup set's",
    ),
    f(
        "vectors_unreadable",
        true,
        "the source vector store could not be read",
    ),
    f(
        "verify_failed",
        true,
        "a read-back did not match what was written",
    ),
];

/// `JobErrorView.code` in the OpenAPI document: the enum of `FAILURES`.
pub struct FailureCode;

impl utoipa::PartialSchema for FailureCode {
    fn schema() -> RefOr<Schema> {
        let mut description = String::from("Why the job failed (README, \"Job failure codes\"):");
        for c in FAILURES {
            description.push_str(&format!(
                "\n- `{}`: {}{}",
                c.code,
                c.meaning,
                if c.retry { " (retry can help)" } else { "" }
            ));
        }
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(None::<SchemaFormat>)
            .enum_values(Some(FAILURES.iter().map(|c| c.code)))
            .description(Some(description))
            .into()
    }
}

impl utoipa::ToSchema for FailureCode {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::FAILURES;

    /// The string literals that follow `needle` in `text`.
    fn literals_after<'a>(text: &'a str, needle: &str, out: &mut BTreeSet<&'a str>) {
        for (at, _) in text.match_indices(needle) {
            let rest = text[at + needle.len()..].trim_start();
            if let Some(lit) = rest.strip_prefix('"')
                && let Some(end) = lit.find('"')
                && lit[..end]
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                out.insert(&lit[..end]);
            }
        }
    }

    fn sources(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("failure.rs") {
                out.push(std::fs::read_to_string(&path).expect("source"));
            }
        }
    }

    #[test]
    fn every_code_the_source_uses_is_in_the_table_and_the_readme() {
        let mut texts = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut texts,
        );
        let mut used = BTreeSet::new();
        for t in &texts {
            literals_after(t, "JobError::failed(", &mut used);
            literals_after(t, "code:", &mut used);
        }
        // Codes built from a variable (listing: source/target; the worker's own).
        used.extend([
            "source_failed",
            "target_failed",
            "database_error",
            "secret_key_mismatch",
            "secrets_unreadable",
        ]);
        let table: BTreeSet<&str> = FAILURES.iter().map(|c| c.code).collect();
        let missing: Vec<&&str> = used.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "codes used but not in FAILURES: {missing:?}"
        );
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .expect("README");
        for c in FAILURES {
            assert!(
                readme.contains(&format!("| `{}` |", c.code)),
                "README lacks {}",
                c.code
            );
        }
    }
}
