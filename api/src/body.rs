//! JSON request bodies, parsed with serde so that every failure names its field.
//!
//! [`JsonBody<Doc>`] only reads the bytes (handlers authenticate before they parse); `Doc` is
//! the poem-openapi type that documents the body. Parsing goes through serde
//! ([`JsonBody::parse`], [`deserialize`]) so `deny_unknown_fields` and the kinds' own types
//! apply, and errors come out as problems naming the field (`to[0]`, `payload.subject`).

use std::marker::PhantomData;

use poem::{Request, RequestBody, error::ReadBodyError, http::StatusCode};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    payload::Payload,
    registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry},
    types::Type,
};
use serde::de::DeserializeOwned;
use wharf_jobs::kinds::FieldError;

use crate::problem::Problem;

/// Largest accepted request body (an email may carry 1 MiB of text and 1 MiB of HTML).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How many bytes a route reads at most.
pub trait BodyLimit {
    fn max_bytes() -> usize;
}

/// [`MAX_BODY_BYTES`]: every route but those with their own limit.
pub struct StandardLimit;

impl BodyLimit for StandardLimit {
    fn max_bytes() -> usize {
        MAX_BODY_BYTES
    }
}

/// A JSON request body documented as `Doc`, at most `L::max_bytes()` long; `REQUIRED = false`
/// accepts an empty body.
pub struct JsonBody<Doc, L: BodyLimit = StandardLimit, const REQUIRED: bool = true> {
    bytes: Vec<u8>,
    _doc: PhantomData<fn() -> (Doc, L)>,
}

pub type OptionalJsonBody<Doc> = JsonBody<Doc, StandardLimit, false>;

impl<Doc, L: BodyLimit, const REQUIRED: bool> JsonBody<Doc, L, REQUIRED> {
    /// The body as a JSON value; `None` if it is empty.
    pub fn value(&self) -> Result<Option<serde_json::Value>, Problem> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return if REQUIRED { Err(Problem::bad_request("a JSON request body is required")) } else { Ok(None) };
        }
        serde_json::from_slice(&self.bytes)
            .map(Some)
            .map_err(|e| Problem::bad_request(format!("the request body is not valid JSON: {e}")))
    }

    /// Parses the body as `T`; `None` if it is empty (only possible when not `REQUIRED`).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<Option<T>, Problem> {
        match self.value()? {
            None => Ok(None),
            Some(v) if !v.is_object() => Err(Problem::bad_request("the request body must be a JSON object")),
            Some(v) => deserialize(v, "").map(Some),
        }
    }
}

/// Deserializes `value` as `T`; a failure is a 422 naming the field, under `prefix`.
pub fn deserialize<T: DeserializeOwned>(value: serde_json::Value, prefix: &str) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        Problem::validation(vec![field_error(prefix, &path, &message)])
    })
}

/// Names the field a serde error is about. serde reports unknown and missing fields in the
/// message, relative to the object at `path`.
fn field_error(prefix: &str, path: &str, message: &str) -> FieldError {
    let named = |marker: &str| {
        let rest = message.strip_prefix(marker)?;
        Some(rest[..rest.find('`')?].to_string())
    };
    let (leaf, msg) = if let Some(name) = named("unknown field `") {
        (Some(name), "unknown field".to_string())
    } else if let Some(name) = named("missing field `") {
        (Some(name), "is required".to_string())
    } else {
        (None, message.to_string())
    };
    let path = path.trim_end_matches('?').trim_end_matches('.');
    // serde_path_to_error puts an unknown field's own name at the end of the path already.
    let leaf = leaf.filter(|l| path.rsplit(['.', '[']).next() != Some(l.as_str()));
    let mut field = prefix.to_string();
    for part in [path, leaf.as_deref().unwrap_or("")] {
        if part.is_empty() || part == "." {
            continue;
        }
        if !field.is_empty() && !part.starts_with('[') {
            field.push('.');
        }
        field.push_str(part);
    }
    if field.is_empty() {
        field.push_str("body");
    }
    FieldError::new(field, msg)
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<Doc: Type, L: BodyLimit, const REQUIRED: bool> Payload for JsonBody<Doc, L, REQUIRED> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        is_json(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        Doc::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Doc::register(registry);
    }
}

impl<'a, Doc: Type, L: BodyLimit, const REQUIRED: bool> ApiExtractor<'a> for JsonBody<Doc, L, REQUIRED> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        Doc::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType { content_type: "application/json", schema: Doc::schema_ref() }],
            required: REQUIRED,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        if let Some(ct) = request.content_type()
            && !is_json(ct)
        {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!("`Content-Type: {ct}` is not supported; send `application/json`"),
            )
            .into());
        }
        let limit = L::max_bytes();
        let bytes = match body.take() {
            Ok(b) => b.into_bytes_limit(limit).await.map(Vec::from),
            Err(e) => Err(e),
        };
        let bytes = bytes.map_err(|e| match e {
            ReadBodyError::PayloadTooLarge => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                format!("the request body is larger than {limit} bytes"),
            ),
            other => Problem::bad_request(format!("the request body could not be read: {other}")),
        })?;
        Ok(JsonBody { bytes, _doc: PhantomData })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
        tags: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }

    fn field_of(v: serde_json::Value, prefix: &str) -> (String, String) {
        let p = deserialize::<Outer>(v, prefix).unwrap_err();
        assert_eq!(p.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let e = &p.body().errors.as_ref().unwrap()[0];
        (e.field.clone(), e.message.clone())
    }

    #[test]
    fn serde_errors_name_the_field() {
        use serde_json::json;
        assert_eq!(field_of(json!({"inner": {"name": "a", "tags": ["x", 3]}}), "").0, "inner.tags[1]");
        assert_eq!(field_of(json!({"inner": {"name": "a", "tags": [], "bogus": 1}}), "").0, "inner.bogus");
        assert_eq!(field_of(json!({"bogus": 1, "inner": {"name": "a", "tags": []}}), "").0, "bogus");
        let (f, m) = field_of(json!({"inner": {"tags": []}}), "payload");
        assert_eq!((f.as_str(), m.as_str()), ("payload.inner.name", "is required"));
        assert_eq!(field_of(json!({"inner": 5}), "").0, "inner");
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
