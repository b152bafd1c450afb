//! `upload_files` and `tool_files`: the rows behind every object in Dify's storage.
//!
//! Uploads come from four places, each referenced the way Dify references it: user uploads
//! (message files, avatars, icons, images in chunks; the ones nothing picked are the orphans),
//! the source file of every document, offloaded node outputs and offloaded draft variables.

use sqlx::PgPool;
use uuid::Uuid;

use super::copy::CopyWriter;
use super::ids::{self, Kind, uuid4};
use super::text;
use super::workflows::{draft_upload_file, offload_file, offloaded_nodes, workflow_apps};
use super::world::{Mode, World};

type Rows = Result<u64, sqlx::Error>;

struct Upload<'a> {
    id: Uuid,
    tenant: Uuid,
    key_id: Uuid,
    name: &'a str,
    size: i64,
    ext: &'a str,
    mime: &'a str,
    created_by: Uuid,
    created_by_role: &'a str,
    created: i64,
    used_by: Option<Uuid>,
    hash: Option<String>,
}

async fn write(out: &mut CopyWriter, u: Upload<'_>) -> Result<(), sqlx::Error> {
    let key = format!("upload_files/{}/{}.{}", u.tenant, u.key_id, u.ext);
    out.uuid(u.id)
        .uuid(u.tenant)
        .text("opendal")
        .text(&key)
        .text(u.name)
        .int(u.size)
        .text(u.ext)
        .text(u.mime)
        .uuid(u.created_by)
        .ts(u.created, 0)
        .boolean(u.used_by.is_some())
        .opt_uuid(u.used_by)
        .opt_ts(u.used_by.map(|_| (u.created, 0)))
        .opt_text(u.hash.as_deref())
        .text(u.created_by_role)
        .text("");
    out.end_row().await
}

pub(super) async fn upload_files(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "upload_files",
        "id, tenant_id, storage_type, key, name, size, extension, mime_type, \
         created_by, created_at, used, used_by, used_at, hash, created_by_role, \
         source_url",
    )
    .await?;
    let per_tenant = w.spec.upload_files_per_tenant;
    for t in &w.tenants {
        for r in 0..per_tenant {
            let mut rng = ids::rng(w.seed, Kind::UploadFile, (t.index * per_tenant + r) as u64);
            let id = uuid4(&mut rng);
            let (ext, mime, stem) = *text::pick(&mut rng, text::USER_FILES);
            let name = format!("{stem}-{r}.{ext}");
            let created = w.start + rng.i64(0..(w.now - w.start).max(1));
            write(
                &mut out,
                Upload {
                    id,
                    tenant: t.id,
                    key_id: uuid4(&mut rng),
                    name: &name,
                    size: rng.i64(1_000..8_000_000),
                    ext,
                    mime,
                    created_by: t.accounts[r % t.accounts.len()],
                    created_by_role: "account",
                    created,
                    used_by: None,
                    hash: Some(ids::hex(&mut rng, 32)),
                },
            )
            .await?;
        }
    }
    for dataset in &w.datasets {
        let tenant = &w.tenants[dataset.tenant];
        for i in 0..w.spec.documents_per_dataset {
            let doc = w.doc(dataset, i);
            let mut rng = ids::rng(w.seed, Kind::DocumentFile, doc.index);
            let _ = uuid4(&mut rng);
            write(
                &mut out,
                Upload {
                    id: doc.file,
                    tenant: tenant.id,
                    key_id: uuid4(&mut rng),
                    name: &doc.name,
                    size: doc.file_size,
                    ext: doc.ext,
                    mime: doc.mime,
                    created_by: tenant.owner(),
                    created_by_role: "account",
                    created: doc.created - 30,
                    used_by: Some(tenant.owner()),
                    hash: Some(ids::hex(&mut rng, 32)),
                },
            )
            .await?;
        }
    }
    for (run, node) in offloaded_nodes(w) {
        let app = &w.apps[run.app];
        let tenant = &w.tenants[app.tenant];
        let id = offload_file(w, &node);
        let mut rng = ids::rng(w.seed, Kind::OffloadFile, node.key);
        let _ = uuid4(&mut rng);
        let name = format!("{}-outputs.json", node.id);
        write(
            &mut out,
            Upload {
                id,
                tenant: tenant.id,
                key_id: uuid4(&mut rng),
                name: &name,
                size: rng.i64(1_100_000..4_000_000),
                ext: "json",
                mime: "application/json",
                created_by: run.actor.id(),
                created_by_role: run.actor.role(),
                created: node.created,
                used_by: None,
                hash: Some(ids::hex(&mut rng, 32)),
            },
        )
        .await?;
    }
    for app in workflow_apps(w) {
        let tenant = &w.tenants[app.tenant];
        let mut rng = ids::rng(w.seed, Kind::DraftFile, app.index as u64);
        let id = uuid4(&mut rng);
        debug_assert_eq!(id, draft_upload_file(w, app.index));
        write(
            &mut out,
            Upload {
                id,
                tenant: tenant.id,
                key_id: uuid4(&mut rng),
                name: "llm.text.txt",
                size: 250_000,
                ext: "txt",
                mime: "text/plain",
                created_by: tenant.owner(),
                created_by_role: "account",
                created: app.workflow_created,
                used_by: None,
                hash: Some(ids::hex(&mut rng, 32)),
            },
        )
        .await?;
    }
    out.finish().await
}

pub(super) async fn tool_files(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "tool_files",
        "id, user_id, tenant_id, conversation_id, file_key, mimetype, \
         original_url, name, size",
    )
    .await?;
    for (app, c, m) in w.messages_in(Mode::AgentChat) {
        let Some(id) = m.tool_file else { continue };
        let mut rng = ids::rng(w.seed, Kind::ToolFile, m.index);
        let _ = uuid4(&mut rng);
        let tenant = w.tenants[app.tenant].id;
        let hex = ids::hex(&mut rng, 16);
        out.uuid(id)
            .uuid(c.actor.id())
            .uuid(tenant)
            .uuid(c.id)
            .text(&format!("tools/{tenant}/{hex}.png"))
            .text("image/png")
            .null()
            .text(&format!("{hex}.png"))
            .int(rng.i64(50_000..2_000_000));
        out.end_row().await?;
    }
    out.finish().await
}
