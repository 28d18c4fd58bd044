//! The OpenAPI 3.1 document. Paths and schemas come from the handlers'
//! `#[utoipa::path]` attributes (collected by `utoipa_axum::routes!` as the
//! router is built), so the document cannot drift from the routes. This
//! module adds what is shared: the reusable problem responses, the error
//! statuses every operation can answer, the bearer scheme when the server
//! has a management token (and only then), and what utoipa's attributes
//! cannot express ([`refine`]).

use std::sync::Arc;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, ToResponse};

use crate::error::{PROBLEM_JSON, Problem};

/// Name of the security scheme in the document.
pub const BEARER: &str = "bearerAuth";

/// Declares problem+json responses as reusable components.
macro_rules! problem_responses {
    ($($name:ident => $description:literal),* $(,)?) => {
        $(
            #[doc = $description]
            pub struct $name;

            impl<'s> ToResponse<'s> for $name {
                fn response() -> (&'s str, RefOr<utoipa::openapi::Response>) {
                    (stringify!($name), problem_response($description).into())
                }
            }
        )*

        /// Registers every problem response in the document's components.
        fn register_problem_responses(openapi: &mut OpenApi) {
            let components = openapi.components.get_or_insert_with(Default::default);
            $(
                let (name, response) = <$name as ToResponse>::response();
                components.responses.insert(name.to_owned(), response);
            )*
        }
    };
}

problem_responses! {
    BadRequest => "The request is malformed: invalid JSON, or a path or query parameter that does not parse.",
    Unauthorized => "The request has no valid `Authorization: Bearer` header with the management token.",
    NotFound => "The channel, member or message does not exist.",
    Conflict => "The request conflicts with the current state (e.g. the sender is not a member of the channel).",
    PayloadTooLarge => "The request body is over the body size limit.",
    UnsupportedMediaType => "The body is not sent as `application/json`.",
    Unprocessable => "A field failed validation (empty or over-long display name or user id, too many initial users, message content empty or over the size limit, ...).",
    Internal => "An unexpected error; details are logged on the server, never returned.",
    MisdirectedRequest => "The `Host` header names a host this management API does not answer to (DNS rebinding protection; see `CLACKS_MANAGEMENT_ALLOWED_HOSTS`).",
    Unavailable => "The database is unreachable; nothing was changed, retry later.",
}

fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Clacks management API",
        description = "Configures channels, members and tokens of a Clacks chat backend. \
            Served on the management port (default 127.0.0.1:7999). The endpoints of the \
            original Clacks keep their paths and JSON shapes; the others are extensions. \
            Every error is `application/problem+json` (RFC 9457). Timestamps are \
            milliseconds since the Unix epoch.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    components(schemas(Problem)),
    modifiers(&Shared),
    tags(
        (name = "health", description = "Liveness of the management API"),
        (name = "channels", description = "Channels (original and extensions)"),
        (name = "members", description = "Channel membership (original)"),
        (name = "messages", description = "A channel's messages (extensions)"),
        (name = "search", description = "Full-text search of messages (extension)"),
        (name = "users", description = "A user's channels and sessions (extensions)"),
        (name = "tokens", description = "Client JWTs"),
        (name = "webhooks", description = "Signed HTTP POSTs of channel events to the application's server (extensions)"),
    )
)]
pub struct ApiDoc;

/// Adds the shared parts of the document (see the module docs).
struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut OpenApi) {
        register_problem_responses(openapi);
    }
}

/// Completes the collected document for the server's configuration:
/// 421 on every operation (the listener's `Host` check), 500 and 503 on
/// those that reach the service (no operation-level `security`
/// override), and, only when a management token is configured (`secured`),
/// the bearer scheme, the requirement, and 401 on the protected
/// operations. Without a token the document declares no security at all,
/// as the server then requires none.
pub fn finish(openapi: &mut OpenApi, secured: bool) {
    for item in openapi.paths.paths.values_mut() {
        let operations: [&mut Option<Operation>; 8] = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            let open = operation.security.is_some();
            let responses = &mut operation.responses.responses;
            responses
                .entry("421".to_owned())
                .or_insert_with(|| Ref::from_response_name("MisdirectedRequest").into());
            if open {
                if !secured {
                    operation.security = None;
                }
                continue;
            }
            if secured {
                responses
                    .entry("401".to_owned())
                    .or_insert_with(|| Ref::from_response_name("Unauthorized").into());
            }
            responses
                .entry("500".to_owned())
                .or_insert_with(|| Ref::from_response_name("Internal").into());
            responses
                .entry("503".to_owned())
                .or_insert_with(|| Ref::from_response_name("Unavailable").into());
        }
    }
    let components = openapi.components.get_or_insert_with(Default::default);
    if secured {
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The value of CLACKS_MANAGEMENT_TOKEN (this server has one configured).",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])]);
    } else {
        components.responses.remove("Unauthorized");
    }
}

/// The document as JSON, with utoipa 5.5's serialization of Link objects
/// fixed: it writes `operation_id`, `operation_ref` and `request_body`
/// where OpenAPI says `operationId`, `operationRef` and `requestBody`.
pub fn to_value(openapi: &OpenApi) -> serde_json::Value {
    let mut value = serde_json::to_value(openapi).unwrap_or_default();
    fix_links(&mut value);
    refine(&mut value);
    value
}

/// What utoipa's attributes cannot say: extra claims are an object
/// without the reserved names, and `GET /jwt/{uid}`'s `claims` query
/// parameter is that object serialized as JSON (a `content` parameter).
fn refine(document: &mut serde_json::Value) {
    use serde_json::json;
    let claims = json!({
        "type": "object",
        "description": "Extra claims, shown on GraphQL `me`. `sub`, `exp`, `nbf`, `iat`, \
            `iss`, `aud` and `jti` are set by Clacks and refused here.",
        "propertyNames": {"not": {"enum": clacks_service::auth::RESERVED_CLAIMS}},
    });
    let schemas = &mut document["components"]["schemas"];
    if let Some(schemas) = schemas.as_object_mut() {
        schemas.insert("Claims".to_owned(), claims);
    }
    let reference = json!({"$ref": "#/components/schemas/Claims"});
    if let Some(property) =
        document.pointer_mut("/components/schemas/TokenRequestBody/properties/claims")
    {
        *property = json!({"oneOf": [{"type": "null"}, reference.clone()]});
    }
    if let Some(parameters) = document
        .pointer_mut("/paths/~1api~1v1~1jwt~1{uid}/get/parameters")
        .and_then(serde_json::Value::as_array_mut)
    {
        for parameter in parameters.iter_mut().filter(|p| p["name"] == "claims") {
            if let Some(parameter) = parameter.as_object_mut() {
                parameter.remove("schema");
                parameter.insert(
                    "content".to_owned(),
                    json!({"application/json": {"schema": reference.clone()}}),
                );
            }
        }
    }
}

fn fix_links(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(links)) = map.get_mut("links") {
                for link in links.values_mut() {
                    if let serde_json::Value::Object(link) = link {
                        for (from, to) in [
                            ("operation_id", "operationId"),
                            ("operation_ref", "operationRef"),
                            ("request_body", "requestBody"),
                        ] {
                            if let Some(v) = link.remove(from) {
                                link.insert(to.to_owned(), v);
                            }
                        }
                    }
                }
            }
            map.values_mut().for_each(fix_links);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fix_links),
        _ => {}
    }
}

/// The document, rendered once, as served at `/openapi.json` and
/// `/openapi.yml`.
#[derive(Clone)]
pub struct Documents {
    json: Arc<str>,
    yaml: Arc<str>,
}

impl Documents {
    pub fn render(openapi: &OpenApi) -> Self {
        let value = to_value(openapi);
        let json = serde_json::to_string_pretty(&value)
            .unwrap_or_else(|e| format!(r#"{{"error": "rendering failed: {e}"}}"#));
        let yaml = serde_norway::to_string(&value)
            .unwrap_or_else(|e| format!("error: rendering failed: {e}\n"));
        Documents {
            json: json.into(),
            yaml: yaml.into(),
        }
    }

    pub fn json_response(&self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.json.to_string(),
        )
            .into_response()
    }

    pub fn yaml_response(&self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            )],
            self.yaml.to_string(),
        )
            .into_response()
    }
}
