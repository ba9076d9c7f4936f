//! RFC 9457 problem details: the one error shape of the API. Handlers return [`Problem`];
//! [`ensure`] turns everything else (poem-openapi's parse errors, unknown routes, wrong methods,
//! stray plain-text error responses) into `application/problem+json` too.

use std::{fmt, sync::Arc};

use poem::{
    Endpoint, IntoResponse, Request, Response,
    error::{MethodNotAllowedError, NotFoundError, ResponseError},
    http::{HeaderValue, StatusCode, header},
};
use poem_openapi::{
    ApiResponse, Object, OperationId,
    error::{AuthorizationError, ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError},
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::{ToJSON, Type},
};
use wharf_jobs::{StoreError, kinds::FieldError};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// The JSON body of a problem (RFC 9457).
#[derive(Debug, Clone, Object)]
#[oai(rename = "Problem")]
pub struct ProblemBody {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[oai(rename = "type")]
    pub type_: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// One entry per bad field, parameter or header.
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<FieldErrorBody>>,
}

/// A problem with one field of the request.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename = "FieldError")]
pub struct FieldErrorBody {
    /// The field (`to[1]`, `payload.subject`), query parameter or header.
    pub field: String,
    pub message: String,
}

impl From<FieldError> for FieldErrorBody {
    fn from(e: FieldError) -> Self {
        FieldErrorBody { field: e.field, message: e.message }
    }
}

/// An error response.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    body: Box<ProblemBody>,
    /// `WWW-Authenticate` value, for 401 and 403.
    challenge: Option<String>,
}

const URN: &str = "urn:wharf:problem:";

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            body: Box::new(ProblemBody {
                type_: format!("{URN}{kind}"),
                title: title.to_string(),
                status: status.as_u16(),
                detail: detail.into(),
                errors: None,
            }),
            challenge: None,
        }
    }

    /// A problem fully described by its status (`type` is `about:blank`).
    pub fn from_status(status: StatusCode, detail: impl Into<String>) -> Self {
        let mut p = Problem::new(status, "", status.canonical_reason().unwrap_or("Error"), detail);
        p.body.type_ = "about:blank".into();
        p
    }

    pub fn with_errors(mut self, errors: impl IntoIterator<Item = FieldError>) -> Self {
        let errors: Vec<FieldErrorBody> = errors.into_iter().map(Into::into).collect();
        self.body.errors = if errors.is_empty() { None } else { Some(errors) };
        self
    }

    /// 400: the request cannot be understood.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", detail)
    }

    /// 400 naming one field, parameter or header.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Problem::bad_request(format!("`{field}`: {message}")).with_errors([FieldError::new(field, message)])
    }

    /// 422: the request is well-formed JSON but some fields are wrong.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let names: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        let detail = match names.as_slice() {
            [one] => format!("the field `{one}` is invalid"),
            many => format!("{} fields are invalid: {}", many.len(), many.join(", ")),
        };
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", "Validation failed", detail).with_errors(errors)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut p = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail);
        p.challenge = Some(r#"Bearer realm="wharf""#.into());
        p
    }

    pub fn invalid_key() -> Self {
        let mut p = Problem::unauthorized("the API key is not valid");
        p.challenge = Some(r#"Bearer realm="wharf", error="invalid_token""#.into());
        p
    }

    pub fn forbidden(scope: &str) -> Self {
        let mut p = Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!("this API key lacks the scope `{scope}`"),
        );
        p.challenge = Some(format!(r#"Bearer realm="wharf", error="insufficient_scope", scope="{scope}""#));
        p
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    pub fn idempotency_mismatch(key: &str) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            format!("Idempotency-Key `{key}` was used with a different request"),
        )
        .with_errors([FieldError::new("Idempotency-Key", "was used with a different request")])
    }

    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed to handle the request; it has been logged",
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> &ProblemBody {
        &self.body
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.body.status, self.body.title, self.body.detail)
    }
}

impl std::error::Error for Problem {}

impl From<StoreError> for Problem {
    /// A store failure is logged and answered without internals.
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        Problem::internal()
    }
}

impl ResponseError for Problem {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        self.clone().into_response()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body.to_json_string();
        let mut resp = Response::builder().status(self.status).content_type(CONTENT_TYPE).body(body);
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        resp
    }
}

impl ApiResponse for Problem {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "An RFC 9457 problem: bad request (400), missing or invalid API key (401), \
                              missing scope (403), not found (404), conflict (409), validation failed \
                              or Idempotency-Key reused (422), server error (500)",
                status: None,
                status_range: None,
                content: vec![MetaMediaType { content_type: CONTENT_TYPE, schema: ProblemBody::schema_ref() }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        ProblemBody::register(registry);
    }
}

/// Middleware: every error, from a handler or from routing and parsing, leaves as a problem.
pub async fn ensure<E: Endpoint>(ep: Arc<E>, req: Request) -> poem::Result<Response> {
    match ep.call(req).await {
        Ok(resp) => Ok(ensure_response(resp.into_response()).await),
        Err(err) => Ok(error_response(err)),
    }
}

fn error_response(err: poem::Error) -> Response {
    let op = err.data::<OperationId>().copied();
    let mut resp = if err.is::<Problem>() { err.into_response() } else { problem_for(&err).into_response() };
    if let Some(op) = op {
        resp.set_data(op);
    }
    resp
}

/// Maps errors raised outside the handlers.
fn problem_for(err: &poem::Error) -> Problem {
    if let Some(e) = err.downcast_ref::<ParseParamError>() {
        return Problem::invalid_field(e.name, param_reason(&e.reason));
    }
    if let Some(e) = err.downcast_ref::<ParsePathError>() {
        return Problem::not_found(format!("no such resource (bad `{}`)", e.name));
    }
    if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        return Problem::bad_request(format!("the request body is not valid: {}", e.reason));
    }
    if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("{e}; send `Content-Type: application/json`"),
        );
    }
    if err.is::<AuthorizationError>() {
        return Problem::unauthorized("send the header `Authorization: Bearer <api key>`");
    }
    if err.is::<NotFoundError>() {
        return Problem::from_status(StatusCode::NOT_FOUND, "no such route");
    }
    if err.is::<MethodNotAllowedError>() {
        return Problem::from_status(StatusCode::METHOD_NOT_ALLOWED, "this route does not accept this method");
    }
    let status = err.status();
    if status.is_server_error() {
        tracing::error!(error = %err, %status, "request failed");
        return if status == StatusCode::INTERNAL_SERVER_ERROR {
            Problem::internal()
        } else {
            Problem::from_status(status, status.canonical_reason().unwrap_or("server error"))
        };
    }
    Problem::from_status(status, err.to_string())
}

/// Rewords poem-openapi's parameter errors (`verification failed. maximum(500, exclusive:
/// false)`, `failed to parse "integer(uint32)": … (occurred while parsing …)`) for people.
fn param_reason(reason: &str) -> String {
    let reason = reason.split(" (occurred while parsing").next().unwrap_or(reason);
    if let Some(rule) = reason.strip_prefix("verification failed. ") {
        let bound = |name: &str| {
            let rest = rule.strip_prefix(name)?.strip_prefix('(')?;
            let (value, rest) = rest.split_once(", exclusive: ")?;
            Some((value.to_string(), rest.starts_with("true")))
        };
        return match (bound("maximum"), bound("minimum")) {
            (Some((v, false)), _) => format!("must be at most {v}"),
            (Some((v, true)), _) => format!("must be less than {v}"),
            (_, Some((v, false))) => format!("must be at least {v}"),
            (_, Some((v, true))) => format!("must be greater than {v}"),
            _ => format!("is not valid: {rule}"),
        };
    }
    if let Some(rest) = reason.strip_prefix("failed to parse \"")
        && let Some((ty, why)) = rest.split_once("\": ")
    {
        return format!("is not a valid {ty}: {why}");
    }
    reason.to_string()
}

/// A response with an error status that is not already a problem becomes one.
async fn ensure_response(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&resp) {
        return resp;
    }
    let op = resp.data::<OperationId>().copied();
    let is_text = resp.content_type().is_some_and(|c| c.starts_with("text/plain"));
    let text = if is_text { resp.into_body().into_string().await.ok() } else { None };
    let detail = text
        .filter(|t| !t.trim().is_empty() && t.len() <= 512)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let mut out = Problem::from_status(status, detail).into_response();
    if let Some(op) = op {
        out.set_data(op);
    }
    out
}

fn is_problem(resp: &Response) -> bool {
    resp.content_type().is_some_and(|c| c.starts_with(CONTENT_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_errors_are_reworded() {
        assert_eq!(param_reason("verification failed. maximum(500, exclusive: false)"), "must be at most 500");
        assert_eq!(param_reason("verification failed. minimum(1, exclusive: false)"), "must be at least 1");
        assert_eq!(
            param_reason(
                "failed to parse \"integer(uint32)\": invalid digit found in string \
                 (occurred while parsing \"optional_integer(uint32)\")"
            ),
            "is not a valid integer(uint32): invalid digit found in string"
        );
        assert_eq!(param_reason("something else"), "something else");
    }

    #[test]
    fn problems_render_as_rfc9457() {
        let resp = Problem::validation(vec![FieldError::new("to[0]", "bad")]).into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(resp.content_type(), Some(CONTENT_TYPE));
        let resp = Problem::forbidden("dlq:write").into_response();
        let challenge = resp.headers().get(header::WWW_AUTHENTICATE).unwrap().to_str().unwrap();
        assert!(challenge.contains(r#"error="insufficient_scope""#) && challenge.contains("dlq:write"));
    }
}
