//! One object into the repository, content-addressed: written unless those bytes are there
//! already (from this set or an earlier one).

use super::*;

/// Puts one object's bytes in the repository unless they are there already.
pub(super) async fn store_object(
    src: Operator,
    repo_op: Operator,
    key: String,
    prev: Option<PrevRow>,
    known: Known,
    budget: MemoryBudget,
) -> Result<Stored, TransferError> {
    let object = transfer::stat_source(&src, &key).await?;
    let stored = |size: u64, sha256: Sha256Sum, written: bool, read: bool| Stored {
        key: key.clone(),
        size,
        sha256,
        written,
        read,
        mtime: object.last_modified,
        etag: object.etag.clone(),
    };
    if let Some(p) = prev.filter(|p| p.unchanged(&object))
        && let Some(sha) = <Sha256Sum>::try_from(p.sha256.as_slice()).ok()
        && in_repository(&repo_op, &known, &sha, object.size).await?
    {
        return Ok(stored(object.size, sha, false, false));
    }
    if object.size > IN_MEMORY_MAX {
        let (len, sha) =
            transfer::hash_object(&src, Side::Source, &key, object.size, &budget).await?;
        if already_there(&repo_op, &known, &sha, len).await? {
            return Ok(stored(len, sha, false, true));
        }
        let path = repo::object_path(&sha);
        let written = match transfer::copy_to(&src, &repo_op, &object, &path, &budget).await {
            Ok(w) => w,
            Err(e) => {
                forget(&known, &sha);
                return Err(e);
            }
        };
        if written.sha256 != sha {
            forget(&known, &sha);
            return Err(TransferError::new(
                Side::Source,
                "reading",
                &key,
                "the object changed while it was read",
            ));
        }
        if !written.server_verified {
            transfer::verify(&repo_op, &path, len, Some(&sha), &budget).await?;
        }
        return Ok(stored(len, sha, true, true));
    }
    let _memory = budget.reserve(object.size).await;
    let bytes = src
        .read(&key)
        .await
        .map_err(|e| TransferError::from_opendal(Side::Source, "reading", &key, e))?
        .to_bytes();
    let size = bytes.len() as u64;
    let sha: Sha256Sum = Sha256::digest(&bytes).into();
    if already_there(&repo_op, &known, &sha, size).await? {
        return Ok(stored(size, sha, false, true));
    }
    let path = repo::object_path(&sha);
    let md5 = transfer::hex(&Md5::digest(&bytes));
    let meta = match repo_op
        .write_with(&path, bytes)
        .content_type("application/octet-stream")
        .await
    {
        Ok(meta) => meta,
        Err(e) => {
            forget(&known, &sha);
            return Err(TransferError::from_opendal(
                Side::Target,
                "writing",
                &path,
                e,
            ));
        }
    };
    // A single PUT's ETag is the MD5 of what the server stored: proof enough, without
    // asking again. Elsewhere (local disk, Azure) the size is checked.
    let proven = meta
        .etag()
        .is_some_and(|t| t.trim_matches('"').eq_ignore_ascii_case(&md5));
    if !proven {
        transfer::verify(&repo_op, &path, size, None, &budget).await?;
    }
    Ok(stored(size, sha, true, true))
}

/// Whether the repository holds `sha` with `size`, without claiming it.
pub(super) async fn in_repository(
    repo_op: &Operator,
    known: &Known,
    sha: &Sha256Sum,
    size: u64,
) -> Result<bool, TransferError> {
    let listed = known
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(sha)
        .copied();
    match listed {
        None => Ok(false),
        Some(s) if s == size => Ok(true),
        Some(_) => Ok(transfer::target_size(repo_op, &repo::object_path(sha)).await? == Some(size)),
    }
}

/// Claims `sha` for writing, or says the repository holds it. A listed object of another size
/// is a partial write of an interrupted attempt: it is written again.
pub(super) async fn already_there(
    repo_op: &Operator,
    known: &Known,
    sha: &Sha256Sum,
    size: u64,
) -> Result<bool, TransferError> {
    let listed = {
        let mut k = known.lock().unwrap_or_else(|p| p.into_inner());
        match k.get(sha).copied() {
            None => {
                // Claimed: a second object with these bytes in this run is deduplicated.
                k.insert(*sha, size);
                return Ok(false);
            }
            Some(listed) => listed,
        }
    };
    if listed == size {
        return Ok(true);
    }
    let path = repo::object_path(sha);
    Ok(transfer::target_size(repo_op, &path).await? == Some(size))
}

pub(super) fn forget(known: &Known, sha: &Sha256Sum) {
    known.lock().unwrap_or_else(|p| p.into_inner()).remove(sha);
}
