//! Dify keeps `vector_indexing_<collection>` in Redis for an hour after it made sure a
//! collection exists, and skips its own check while the key is there. After writing a
//! collection, the key is cleared so Dify looks again instead of trusting a stale answer.

use crate::config::Component;

pub struct RedisFlags {
    client: redis::Client,
    prefix: String,
}

impl RedisFlags {
    /// Dify's `REDIS_*` variables (host `localhost`, port 6379, db 0 when unset).
    pub fn from_env(env: &Component) -> Result<Self, String> {
        if env
            .get("REDIS_USE_SENTINEL")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env
                .get("REDIS_USE_CLUSTERS")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err("REDIS_USE_SENTINEL / REDIS_USE_CLUSTERS are not supported".into());
        }
        if env
            .get("REDIS_USE_SSL")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err("REDIS_USE_SSL=true is not supported".into());
        }
        let host = env.get("REDIS_HOST").unwrap_or("localhost");
        let port: u16 = env
            .get("REDIS_PORT")
            .unwrap_or("6379")
            .parse()
            .map_err(|_| "REDIS_PORT is not a port".to_string())?;
        let db: i64 = env
            .get("REDIS_DB")
            .unwrap_or("0")
            .parse()
            .map_err(|_| "REDIS_DB is not a number".to_string())?;
        let username = env.get("REDIS_USERNAME").map(str::to_string);
        let password = env.get("REDIS_PASSWORD").map(str::to_string);
        let mut settings = redis::RedisConnectionInfo::default().set_db(db);
        if let Some(u) = username {
            settings = settings.set_username(u);
        }
        if let Some(p) = password {
            settings = settings.set_password(p);
        }
        let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
            host.to_string(),
            port,
        ))
        .map_err(|e| format!("Redis at {host}:{port}: {e}"))?
        .set_redis_settings(settings);
        let client =
            redis::Client::open(info).map_err(|e| format!("Redis at {host}:{port}: {e}"))?;
        let prefix = env
            .get("REDIS_KEY_PREFIX")
            .map(|p| format!("{p}:"))
            .unwrap_or_default();
        Ok(RedisFlags { client, prefix })
    }

    pub fn key(&self, collection: &str) -> String {
        format!("{}vector_indexing_{collection}", self.prefix)
    }

    /// Deletes the flag; true if it was set.
    pub async fn clear(&self, collection: &str) -> Result<bool, String> {
        let mut con = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let removed: i64 = redis::cmd("DEL")
            .arg(self.key(collection))
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        Ok(removed > 0)
    }
}
