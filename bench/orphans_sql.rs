//! The hand-written ceiling `bench/orphans.sh` measures `orphan_records` against: a psql script
//! that gathers the reference sources into a temporary table, indexes and analyzes it, anti-joins
//! `upload_files` (older than the grace period) and counts. The sources are the ones Upkeep
//! reads on this database, from the same code (`dify::file_refs::gather`), so the two cannot
//! drift apart.
//!
//! `orphans_sql --url URL [--min-age-hours H]` prints the timed script (its last line:
//! `seconds orphans sources`); with `--check JOB` it prints an untimed script whose last line
//! is how many upload_files rows only one side found: the ceiling, or the plan of `JOB`.

use sqlx::postgres::PgPoolOptions;
use upkeep::dify::file_refs;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut url = String::new();
    let mut hours = 24u32;
    let mut check: Option<uuid::Uuid> = None;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--url" => url = value,
            "--min-age-hours" => hours = value.parse().expect("--min-age-hours N"),
            "--check" => check = Some(value.parse().expect("--check JOB_ID")),
            other => panic!("unknown argument {other}"),
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("bench database answers");
    let gather = file_refs::gather(&pool).await.expect("reference sources");
    pool.close().await;
    let orphans = format!(
        "FROM public.upload_files u \
         WHERE u.created_at <= (now() AT TIME ZONE 'UTC') - make_interval(hours => {hours}) \
         AND NOT EXISTS (SELECT 1 FROM refs r WHERE r.id = u.id)"
    );
    println!("\\set ON_ERROR_STOP 1");
    println!("SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset");
    println!("CREATE TEMP TABLE refs AS {};", gather.select);
    println!("CREATE INDEX ON refs (id);");
    // Without statistics on the new table the planner may walk both indexes in a merge join,
    // reading upload_files in random order: several times slower than the hash anti-join.
    println!("ANALYZE refs;");
    match check {
        None => {
            println!("SELECT count(*) AS orphans {orphans} \\gset");
            println!(
                "SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 2) || ' ' || :orphans || ' {}';",
                gather.read.len()
            );
        }
        Some(job) => println!(
            "SELECT count(*) FROM (SELECT 'upload_files:' || u.id AS item {orphans}) s \
             FULL JOIN (SELECT item FROM upkeep.orphan_plan WHERE job_id = '{job}' \
                        AND item LIKE 'upload\\_files:%') p USING (item) \
             WHERE s.item IS NULL OR p.item IS NULL;"
        ),
    }
}
