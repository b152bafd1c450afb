//! Weaviate over its REST API (no gRPC needed): one class per dataset, metadata flattened into
//! properties beside `text`. Reads all three of Dify's layouts: the legacy unnamed vector
//! (Dify up to 1.9.1), the named `default` vector (1.9.2 on), and either object-id rule
//! (`doc_id`, or `uuid5(text)` in 1.9.2 to 1.17): the id is kept as found, `doc_id` is read
//! from the properties.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::store::{
    Adapter, CollectionInfo, Health, Hit, Location, Page, Point, VectorError, VectorSource,
    VectorStore, VectorTarget,
};
use crate::config::Component;

mod lift;
mod target;

const NAME: &str = "weaviate";

/// `{"type": "weaviate", ...}`: Dify's `WEAVIATE_*` variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeaviateConfig {
    /// `WEAVIATE_ENDPOINT`, e.g. `http://weaviate:8080`.
    pub endpoint: String,
    #[serde(default)]
    pub api_key: Option<String>,
}

pub struct Weaviate {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
    /// As a target: write the legacy unnamed vector, for a Dify before 1.9.2.
    legacy: bool,
}

impl Weaviate {
    /// `endpoint` is Dify's `WEAVIATE_ENDPOINT` (`http://weaviate:8080`).
    pub fn new(endpoint: &str, api_key: Option<&str>) -> Result<Self, VectorError> {
        let base = endpoint.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(VectorError::Config(format!(
                "WEAVIATE_ENDPOINT {base:?} is not an http(s) URL"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| VectorError::Config(e.to_string()))?;
        Ok(Weaviate {
            http,
            base,
            api_key: api_key.filter(|k| !k.is_empty()).map(str::to_string),
            legacy: false,
        })
    }

    /// One request; the status and the raw body.
    async fn send(
        &self,
        call: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, bytes::Bytes), VectorError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| VectorError::store(NAME, call, e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| VectorError::store(NAME, call, e))?;
        Ok((status, bytes))
    }

    async fn call(
        &self,
        call: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), VectorError> {
        let (status, bytes) = self.send(call, method, path, body).await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            parse(call, status, &bytes)?
        };
        Ok((status, value))
    }

    /// A request answered 2xx with a `T` read by `read` (None: 404), else an error with the
    /// answer's text.
    async fn typed<T: Send + 'static>(
        &self,
        call: &'static str,
        path: &str,
        read: fn(&[u8]) -> serde_json::Result<T>,
    ) -> Result<Option<T>, VectorError> {
        let (status, bytes) = self.send(call, Method::GET, path, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            // Off the reactor: a page of vectors is megabytes of decimal floats, and the
            // writes of other datasets must not wait while it is parsed.
            s if s.is_success() => tokio::task::spawn_blocking(move || {
                read(&bytes).map_err(|e| unreadable(call, status, e))
            })
            .await
            .map_err(|e| VectorError::store(NAME, call, e))?
            .map(Some),
            s => {
                let text: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
                Err(VectorError::store(NAME, call, format!("{s} {text}")))
            }
        }
    }

    async fn ok(
        &self,
        call: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, VectorError> {
        let (status, value) = self.call(call, method, path, body).await?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(VectorError::store(NAME, call, format!("{status} {value}")))
        }
    }

    async fn graphql(&self, query: String) -> Result<Value, VectorError> {
        let body = self
            .ok(
                "graphql",
                Method::POST,
                "/v1/graphql",
                Some(&json!({ "query": query })),
            )
            .await?;
        if let Some(errors) = body.get("errors").filter(|e| !e.is_null()) {
            return Err(VectorError::store(NAME, "graphql", errors.to_string()));
        }
        Ok(body["data"].clone())
    }
}

fn parse(call: &'static str, status: StatusCode, bytes: &[u8]) -> Result<Value, VectorError> {
    serde_json::from_slice(bytes).map_err(|e| unreadable(call, status, e))
}

fn unreadable(call: &'static str, status: StatusCode, e: serde_json::Error) -> VectorError {
    VectorError::store(NAME, call, format!("{status}: unreadable answer: {e}"))
}

/// An object as `GET /v1/objects` answers it.
#[derive(Deserialize)]
struct Object {
    id: String,
    #[serde(default)]
    properties: Map<String, Value>,
    /// The legacy unnamed vector.
    #[serde(default)]
    vector: Option<Values>,
    #[serde(default)]
    vectors: Option<NamedVectors>,
}

/// Named vectors: Dify's classes have one, `default`; any other is skipped unread.
#[derive(Deserialize)]
struct NamedVectors {
    #[serde(default)]
    default: Option<Values>,
}

/// A vector's numbers, or in an answer `lift` rewrote, the index of the numbers it read.
enum Values {
    Read(Vec<f32>),
    Lifted(u64),
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Expect;
        impl<'de> Visitor<'de> for Expect {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of numbers")
            }
            fn visit_u64<E: de::Error>(self, index: u64) -> Result<Values, E> {
                Ok(Values::Lifted(index))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(x) = seq.next_element::<f32>()? {
                    values.push(x);
                }
                Ok(Values::Read(values))
            }
        }
        deserializer.deserialize_any(Expect)
    }
}

#[derive(Deserialize)]
struct ObjectList {
    #[serde(default)]
    objects: Vec<Object>,
}

/// A page of objects: the vectors read by `lift`, the rest by serde; by serde alone when a
/// lifted array was not a vector field (a property named `vector`, say).
fn read_objects(bytes: &[u8]) -> serde_json::Result<ObjectList> {
    if let Some(lifted) = lift::lift(bytes)
        && let Ok(mut list) = serde_json::from_slice::<ObjectList>(&lifted.text)
        && place(&mut list, lifted.vectors)
    {
        return Ok(list);
    }
    serde_json::from_slice(bytes)
}

/// Puts each lifted vector into the field that named it; false unless each went to exactly
/// one vector field.
fn place(list: &mut ObjectList, vectors: Vec<Vec<f32>>) -> bool {
    let mut vectors: Vec<Option<Vec<f32>>> = vectors.into_iter().map(Some).collect();
    let mut placed = 0;
    for object in &mut list.objects {
        let named = object.vectors.as_mut().and_then(|v| v.default.as_mut());
        for slot in [object.vector.as_mut(), named].into_iter().flatten() {
            if let Values::Lifted(index) = *slot {
                let taken = usize::try_from(index)
                    .ok()
                    .and_then(|i| vectors.get_mut(i))
                    .and_then(Option::take);
                let Some(values) = taken else {
                    return false;
                };
                *slot = Values::Read(values);
                placed += 1;
            }
        }
    }
    placed == vectors.len()
}

/// An object of `GET /v1/objects` as a point: `text` is the content, every other property
/// metadata; the vector is `vectors.default` (named layout) or `vector` (legacy), and empty
/// when the listing did not ask for vectors.
fn point_of(object: Object, with_vector: bool) -> Result<Point, VectorError> {
    let Object {
        id,
        mut properties,
        vector,
        vectors,
    } = object;
    let vector = match (with_vector, vectors.and_then(|v| v.default).or(vector)) {
        (false, _) => Vec::new(),
        (true, Some(Values::Read(v))) => v,
        (true, Some(Values::Lifted(_))) => {
            return Err(VectorError::Layout(format!(
                "object {id} has a number where its vector should be"
            )));
        }
        (true, None) => {
            return Err(VectorError::Layout(format!(
                "object {id} has neither a `default` named vector nor a legacy vector"
            )));
        }
    };
    let text = match properties.remove("text") {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    Ok(Point {
        id,
        vector,
        text,
        metadata: properties,
    })
}

impl Adapter for Weaviate {
    const KIND: &'static str = NAME;
    type Config = WeaviateConfig;

    fn from_env(env: &Component) -> Result<WeaviateConfig, String> {
        Ok(WeaviateConfig {
            endpoint: env
                .get("WEAVIATE_ENDPOINT")
                .ok_or("WEAVIATE_ENDPOINT is not set")?
                .to_string(),
            api_key: env.get("WEAVIATE_API_KEY").map(str::to_string),
        })
    }

    fn location(config: &WeaviateConfig) -> String {
        format!("weaviate at {}", config.endpoint)
    }

    async fn open(config: &WeaviateConfig) -> Result<Self, VectorError> {
        Weaviate::new(&config.endpoint, config.api_key.as_deref())
    }
}

impl VectorStore for Weaviate {
    fn kind(&self) -> &'static str {
        NAME
    }

    async fn health(&self) -> Result<Health, VectorError> {
        let meta = self.ok("meta", Method::GET, "/v1/meta", None).await?;
        Ok(Health {
            version: meta["version"].as_str().unwrap_or("unknown").to_string(),
            detail: None,
        })
    }

    async fn describe(&self, collection: &str) -> Result<Option<CollectionInfo>, VectorError> {
        let (status, class) = self
            .call(
                "schema",
                Method::GET,
                &format!("/v1/schema/{collection}"),
                None,
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(VectorError::store(
                NAME,
                "schema",
                format!("{status} {class}"),
            ));
        }
        let named = class["vectorConfig"]["default"].is_object();
        let distance = if named {
            &class["vectorConfig"]["default"]["vectorIndexConfig"]["distance"]
        } else {
            &class["vectorIndexConfig"]["distance"]
        };
        let at = Location {
            collection: collection.to_string(),
            group: String::new(),
        };
        let first = self.read_page(&at, None, 1, true).await?;
        Ok(Some(CollectionInfo {
            dimension: first.points.first().map(|p| p.vector.len()),
            distance: distance.as_str().unwrap_or("cosine").to_string(),
            layout: if named { "named" } else { "legacy" }.to_string(),
        }))
    }

    fn notes(&self) -> Vec<String> {
        if self.legacy {
            vec!["classes are written in Weaviate's legacy layout (one unnamed vector): this Dify is older than 1.9.2 and searches only that".into()]
        } else {
            Vec::new()
        }
    }
}

impl Weaviate {
    /// Objects of `class` by id, vectors included; absent ones are left out.
    async fn objects(&self, class: &str, ids: &[String]) -> Result<Vec<Point>, VectorError> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let path = format!("/v1/objects/{class}/{id}?include=vector");
            let Some(object) = self
                .typed("get object", &path, |b| serde_json::from_slice::<Object>(b))
                .await?
            else {
                continue;
            };
            found.push(point_of(object, true)?);
        }
        Ok(found)
    }
}

impl VectorSource for Weaviate {
    async fn read_page(
        &self,
        at: &Location,
        cursor: Option<&str>,
        limit: usize,
        vectors: bool,
    ) -> Result<Page, VectorError> {
        // The cursor API: UUID order, the `after` object excluded, `limit` always sent.
        let include = if vectors { "&include=vector" } else { "" };
        let collection = &at.collection;
        let mut path = format!("/v1/objects?class={collection}{include}&limit={limit}");
        if let Some(after) = cursor {
            path.push_str("&after=");
            path.push_str(after);
        }
        let Some(list) = self.typed("list objects", &path, read_objects).await? else {
            return Err(VectorError::Layout(format!(
                "Weaviate has no class {collection}"
            )));
        };
        let points = list
            .objects
            .into_iter()
            .map(|o| point_of(o, vectors))
            .collect::<Result<Vec<Point>, VectorError>>()?;
        let next = (points.len() == limit)
            .then(|| points.last().map(|p| p.id.clone()))
            .flatten();
        Ok(Page { points, next })
    }

    async fn fetch(&self, at: &Location, ids: &[String]) -> Result<Vec<Point>, VectorError> {
        self.objects(&at.collection, ids).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer read with `lift` gives the points serde alone gives, fallbacks included.
    #[test]
    fn pages_read_as_serde_alone_reads_them() {
        let page =
            |objects: Value| serde_json::to_vec(&json!({ "objects": objects })).expect("json");
        let points = |bytes: &[u8], lifted: bool| -> Vec<Point> {
            let list = if lifted {
                read_objects(bytes)
            } else {
                serde_json::from_slice::<ObjectList>(bytes)
            };
            let list = list.expect("a page");
            list.objects
                .into_iter()
                .map(|o| point_of(o, true).expect("a point"))
                .collect()
        };
        let mut rng = fastrand::Rng::with_seed(3);
        let mut vector = || (0..64).map(|_| rng.f32() - 0.5).collect::<Vec<f32>>();
        let pages = [
            page(json!([
                {"id": "a", "properties": {"text": "x \"vector\":[1]", "doc_id": "a"}, "vector": vector()},
                {"id": "b", "properties": {"text": "y"}, "vector": vector()},
            ])),
            page(json!([
                {"id": "c", "properties": {"text": "z"}, "vectors": {"default": vector(), "other": [[1.0]]}},
            ])),
            // Properties that look like vectors: read by serde alone, unchanged.
            page(json!([
                {"id": "d", "properties": {"vector": [1, 2], "default": [3.5]}, "vector": vector()},
            ])),
        ];
        for bytes in &pages {
            let (lifted, plain) = (points(bytes, true), points(bytes, false));
            assert_eq!(lifted.len(), plain.len());
            for (l, p) in lifted.iter().zip(&plain) {
                assert_eq!((&l.id, &l.text, &l.metadata), (&p.id, &p.text, &p.metadata));
                assert_eq!(l.vector, p.vector);
                assert_eq!(l.vector.len(), 64);
            }
        }
        // The first two are read through `lift`, the third is not.
        let lifted = |bytes: &[u8]| {
            lift::lift(bytes).is_some_and(|l| {
                serde_json::from_slice::<ObjectList>(&l.text)
                    .is_ok_and(|mut list| place(&mut list, l.vectors))
            })
        };
        assert_eq!(pages.each_ref().map(|p| lifted(p)), [true, true, false]);
        assert_eq!(points(&pages[2], true)[0].metadata["vector"], json!([1, 2]));
        // A number where a vector should be is refused, not taken for a lifted one.
        let odd = page(json!([{"id": "e", "vector": 0}, {"id": "f", "vector": [1.0]}]));
        let list = read_objects(&odd).expect("valid JSON");
        assert!(list.objects.into_iter().any(|o| point_of(o, true).is_err()));
        assert!(read_objects(br#"{"objects":[{"id":"g","vector":[1e400]}]}"#).is_err());
    }

    #[test]
    fn reads_both_vector_shapes() {
        let object = |v: Value| serde_json::from_value::<Object>(v).expect("an object");
        let legacy = object(
            json!({"id": "a", "properties": {"text": "t", "doc_id": "d"}, "vector": [0.5, 1.0]}),
        );
        let named = object(
            json!({"id": "b", "properties": {"text": "t"}, "vectors": {"default": [0.25], "other": [[1.0]]}}),
        );
        let p = point_of(legacy, true).expect("legacy");
        assert_eq!((p.vector.clone(), p.doc_id()), (vec![0.5, 1.0], Some("d")));
        assert_eq!(p.text, "t");
        assert_eq!(point_of(named, true).expect("named").vector, vec![0.25]);
        let bare = || object(json!({"id": "c", "properties": {"text": "t"}}));
        assert!(point_of(bare(), true).is_err());
        assert_eq!(
            point_of(bare(), false).expect("no vector asked").vector,
            Vec::<f32>::new()
        );
    }
}
