//! Re-embedding, for records neither the source store nor Dify's `embeddings` cache holds:
//! an OpenAI-compatible `POST {url}/embeddings` endpoint (OpenAI, Azure-style gateways,
//! vLLM, Ollama, LiteLLM ...). Vectors come back L2-normalised, as Dify's `CacheEmbedding`
//! stores them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::store::VectorError;

/// Texts per request: OpenAI accepts up to 2048 inputs, gateways often far fewer.
pub const TEXTS_PER_REQUEST: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingEndpoint {
    /// Base URL of the API, e.g. `https://api.openai.com/v1`; `/embeddings` is appended.
    pub url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// Model name to send; default: the dataset's `embedding_model`. It must be the model
    /// the dataset was embedded with, or searches mix vector spaces.
    #[serde(default)]
    pub model: Option<String>,
}

impl EmbeddingEndpoint {
    /// The problem with the URL, if any (for a 400 naming `url`).
    pub fn check(&self) -> Result<(), String> {
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
            Ok(u) => Err(format!("scheme {} is not http or https", u.scheme())),
            Err(e) => Err(format!("not a URL: {e}")),
        }
    }
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f64>,
}

pub struct Embedder {
    http: reqwest::Client,
    endpoint: EmbeddingEndpoint,
}

impl Embedder {
    pub fn new(endpoint: EmbeddingEndpoint) -> Result<Self, VectorError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| VectorError::Config(format!("HTTP client: {e}")))?;
        Ok(Embedder { http, endpoint })
    }

    /// One vector per text, in order, each of unit length.
    pub async fn embed(
        &self,
        default_model: &str,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, VectorError> {
        let fail = |m: String| VectorError::store("embeddings", "embed", m);
        let model = self.endpoint.model.as_deref().unwrap_or(default_model);
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(TEXTS_PER_REQUEST) {
            let url = format!("{}/embeddings", self.endpoint.url.trim_end_matches('/'));
            let mut req = self.http.post(url).json(&json!({
                "model": model,
                "input": chunk,
                "encoding_format": "float",
            }));
            if let Some(key) = &self.endpoint.api_key {
                req = req.bearer_auth(key);
            }
            let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                let body: String = body.chars().take(300).collect();
                return Err(fail(format!("HTTP {status}: {body}")));
            }
            let mut body: Response = resp
                .json()
                .await
                .map_err(|e| fail(format!("unreadable answer: {e}")))?;
            body.data.sort_by_key(|i| i.index);
            if body.data.len() != chunk.len()
                || body.data.iter().enumerate().any(|(n, i)| n != i.index)
            {
                return Err(fail(format!(
                    "asked for {} embeddings, got {}",
                    chunk.len(),
                    body.data.len()
                )));
            }
            for item in body.data {
                out.push(
                    normalised(&item.embedding).ok_or_else(|| {
                        fail("a zero or non-finite embedding came back".to_string())
                    })?,
                );
            }
        }
        Ok(out)
    }
}

/// Dify's `CacheEmbedding`: `vector / np.linalg.norm(vector)` in float64, then the store's f32.
fn normalised(v: &[f64]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    Some(v.iter().map(|x| (x / norm) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_in_f64_and_refuses_zero() {
        assert_eq!(normalised(&[3.0, 4.0]), Some(vec![0.6, 0.8]));
        assert_eq!(normalised(&[0.0, 0.0]), None);
        assert_eq!(normalised(&[f64::NAN, 1.0]), None);
    }

    #[test]
    fn only_http_urls() {
        let ep = |url: &str| EmbeddingEndpoint {
            url: url.into(),
            api_key: None,
            model: None,
        };
        assert!(ep("https://api.openai.com/v1").check().is_ok());
        assert!(ep("ftp://x").check().is_err());
        assert!(ep("not a url").check().is_err());
    }
}
