//! Which datasets and apps a `vector_migrate` moves, and for each where its points are now
//! (the store its `index_struct` names, or for annotation replies the one other store in use)
//! and where they go: each store's adapter says where Dify keeps a dataset in it.

use serde_json::Value;
use sqlx::PgPool;

use super::super::{JobError, SpecError};
use super::params::VectorMigrateParams;
use super::unit::Unit;
use crate::config::Settings;
use crate::dify::index_struct;
use crate::dify::vector_records::{self, Dataset};
use crate::vector::StoreConfig;
use crate::vector::store::Location;

pub fn invalid(e: SpecError) -> JobError {
    JobError::failed("invalid_params", e.to_string())
}

pub fn parse(v: &Value, field: &str) -> Result<StoreConfig, SpecError> {
    StoreConfig::from_value(v).map_err(|(path, message)| {
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(".{path}")
        };
        SpecError::invalid(format!("params.{field}{at}"), message)
    })
}

pub fn target_config(
    params: &VectorMigrateParams,
    settings: &Settings,
) -> Result<StoreConfig, SpecError> {
    match &params.target {
        Some(v) => parse(v, "target"),
        None => {
            let env = &settings.vector_store;
            StoreConfig::from_env(&env.kind, env).map_err(|e| {
                SpecError::invalid(
                    "params.target",
                    format!(
                        "not given, and Dify's vector store is not usable: {e} (VECTOR_STORE={}); \
                         set that in Dify's env, or name the target here",
                        env.kind
                    ),
                )
            })
        }
    }
}

/// The source named in params, if any.
pub fn source_config(params: &VectorMigrateParams) -> Result<Option<StoreConfig>, SpecError> {
    params
        .source
        .as_ref()
        .map(|v| parse(v, "source"))
        .transpose()
}

pub async fn apps(
    params: &VectorMigrateParams,
    pool: &PgPool,
) -> Result<Vec<Dataset>, sqlx::Error> {
    vector_records::annotation_apps(
        pool,
        params.app_ids.as_deref(),
        params.tenant_ids.as_deref(),
    )
    .await
}

/// The store annotation replies are read from: `source` when given, else the one store other
/// than the target that datasets name now, named before a switch, or `VECTOR_STORE` names.
pub async fn annotation_source(
    given: Option<&StoreConfig>,
    pool: &PgPool,
    settings: &Settings,
    target: &str,
) -> Result<Result<String, String>, sqlx::Error> {
    if let Some(config) = given {
        return Ok(Ok(config.kind().to_string()));
    }
    let mut kinds = vector_records::stores_named(pool).await?;
    kinds.push(settings.vector_store.kind.clone());
    kinds.retain(|k| k != target);
    kinds.sort();
    kinds.dedup();
    Ok(match kinds.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "annotation replies have no index_struct, and no store other than {target} is in use: \
             name the store they are in"
        )),
        many => Err(format!(
            "annotation replies have no index_struct, and several stores are in use ({}): name \
             the one they are in",
            many.join(", ")
        )),
    })
}

/// Every dataset and app the job moves, with its source and target collection.
pub async fn units(
    params: &VectorMigrateParams,
    pool: &PgPool,
    settings: &Settings,
    target: &StoreConfig,
) -> Result<Vec<Unit>, JobError> {
    let given = source_config(params).map_err(invalid)?;
    let given = given.as_ref();
    let mut units = Vec::new();
    if params.knowledge() {
        let datasets = vector_records::datasets(
            pool,
            target.kind(),
            params.dataset_ids.as_deref(),
            params.tenant_ids.as_deref(),
        )
        .await?;
        for ds in datasets {
            // A dataset with no `index_struct` is where `VECTOR_STORE` says (Dify's factory).
            let fallback = Ok(settings.vector_store.kind.clone());
            units.push(unit(ds, given, settings, target, fallback));
        }
    }
    if params.annotations() {
        let apps = apps(params, pool).await?;
        if !apps.is_empty() {
            let kind = annotation_source(given, pool, settings, target.kind()).await?;
            for app in apps {
                units.push(unit(app, given, settings, target, kind.clone()));
            }
        }
    }
    Ok(units)
}

fn unit(
    ds: Dataset,
    given: Option<&StoreConfig>,
    settings: &Settings,
    target: &StoreConfig,
    fallback_kind: Result<String, String>,
) -> Unit {
    let at = target.locate(&ds, None);
    let source = source_of(&ds, given, settings, target, fallback_kind);
    Unit { ds, source, at }
}

/// Where `ds`'s vectors are now: the store its `index_struct` names, else `fallback_kind`.
fn source_of(
    ds: &Dataset,
    given: Option<&StoreConfig>,
    settings: &Settings,
    target: &StoreConfig,
    fallback_kind: Result<String, String>,
) -> Result<(StoreConfig, Location), String> {
    let (config, at) = locate_source(ds, given, settings, fallback_kind)?;
    if config == *target {
        return Err(format!(
            "its vectors would be read from the target itself ({}): name the source",
            target.describe()
        ));
    }
    Ok((config, at))
}

/// The store `ds`'s vectors are in now (its `index_struct`, else `fallback_kind`) and where.
pub fn locate_source(
    ds: &Dataset,
    given: Option<&StoreConfig>,
    settings: &Settings,
    fallback_kind: Result<String, String>,
) -> Result<(StoreConfig, Location), String> {
    let named = ds.index_struct.as_deref().and_then(index_struct::parse);
    let kind = match (&named, given) {
        (Some((kind, _)), Some(config)) if config.kind() != kind => {
            return Err(format!(
                "its index_struct names {kind}, the source given is {}",
                config.kind()
            ));
        }
        (Some((kind, _)), _) => kind.clone(),
        (None, Some(config)) => config.kind().to_string(),
        (None, None) => fallback_kind?,
    };
    let config = match given {
        Some(config) => config.clone(),
        None => StoreConfig::from_env(&kind, &settings.vector_store)?,
    };
    let at = config.locate(ds, named.as_ref().map(|(_, c)| c.as_str()));
    Ok((config, at))
}
