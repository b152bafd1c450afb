//! The dry run of `storage_migrate`: each source object looked up on the target, the
//! database's references looked up on the source, and with `fan_out` how the copy would split.

use super::*;

pub(super) async fn plan(
    params: StorageMigrateParams,
    ctx: &mut JobCtx,
) -> Result<Value, JobError> {
    let (ends, src, dst) = open(&params, ctx)?;
    let prefixes = prefix_paths(&params).map_err(invalid)?;
    ctx.progress(phase_progress("scan source and target"), true)
        .await?;
    #[derive(Default, Serialize)]
    struct Tally {
        objects: u64,
        bytes: u64,
        absent_on_target: u64,
        same_size_on_target: u64,
        different_on_target: u64,
    }
    let mut per_prefix: BTreeMap<String, Tally> = BTreeMap::new();
    let mut listing = Listing::new(&src, Side::Source, prefixes.clone());
    let mut scanned = 0u64;
    while let Some(batch) = listing.next_batch(256).await? {
        ctx.check_stop()?;
        let checks = futures_util::stream::iter(batch)
            .map(|(key, _)| {
                let (src, dst) = (&src, &dst);
                async move {
                    let object = transfer::stat_source(src, &key).await;
                    let there = transfer::target_size(dst, &key).await;
                    (key, object, there)
                }
            })
            .buffer_unordered(params.concurrency as usize)
            .collect::<Vec<_>>()
            .await;
        for (key, object, there) in checks {
            let object = match object {
                Ok(o) => o,
                Err(e) if e.not_found => continue,
                Err(e) => return Err(source_failed(e)),
            };
            let there = there.map_err(target_failed)?;
            let tally = per_prefix.entry(top_prefix(&key)).or_default();
            tally.objects += 1;
            tally.bytes += object.size;
            match there {
                None => tally.absent_on_target += 1,
                Some(size) if size == object.size => tally.same_size_on_target += 1,
                Some(_) => tally.different_on_target += 1,
            }
            scanned += 1;
        }
        ctx.progress(
            Progress {
                done: scanned,
                ..phase_progress("scan source and target")
            },
            false,
        )
        .await?;
    }
    let refs = collect_refs(ctx).await?;
    let (missing_on_source, missing_sample) = refs_missing_on_source(ctx, &src).await?;
    clear_refs(ctx).await?;
    let split = if params.fan_out > 1 {
        let units = crate::storage::listing::units(&src, &prefixes, UNIT_DEPTH).await?;
        let children = fanout::shares(&units, params.fan_out as usize).len();
        Some(json!({"children": children, "prefixes": units.len()}))
    } else {
        None
    };
    let objects: u64 = per_prefix.values().map(|t| t.objects).sum();
    let bytes: u64 = per_prefix.values().map(|t| t.bytes).sum();
    let same: u64 = per_prefix.values().map(|t| t.same_size_on_target).sum();
    let mut plan = json!({
        "source": ends.source.describe(),
        "target": ends.target.describe(),
        "objects": objects,
        "bytes": bytes,
        "prefixes": per_prefix,
        "would_skip_if_identical": same,
        "note": "objects of the same size on the target are skipped only if their SHA-256 matches; the run checks that",
        "db_references": {
            "total": refs,
            "missing_on_source": missing_on_source,
            "missing_sample": missing_sample,
        },
        "update_db": params.update_db.then(|| ends.target.dify_type()),
    });
    if let Some(split) = split {
        plan["fan_out"] = split;
    }
    Ok(plan)
}
