//! The OpenAPI document: served as JSON and YAML, declaring the bearer
//! requirement exactly when a management token is configured; with one, it
//! equals the committed `openapi.yml` at the repository root.
//!
//! To regenerate the committed file after an intended API change:
//! `CLACKS_UPDATE_SNAPSHOTS=1 cargo test -p clacks-server --test api management::openapi`

use std::path::PathBuf;

use clacks_testkit::TestBackend;
use serde_json::{Value, json};

use super::read;
use crate::helpers::TestApp;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi.yml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_matches_committed_openapi_yml() {
    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| {
        config.management_token = Some("openapi-test-token".to_owned());
    })
    .await
    else {
        return;
    };
    let yaml = read(app.http.get(format!("{}/openapi.yml", app.management_url))).await;
    assert_eq!(yaml.status, 200);
    assert_eq!(yaml.content_type(), "application/yaml");
    let json = read(app.http.get(format!("{}/openapi.json", app.management_url))).await;
    assert_eq!(json.status, 200);
    assert_eq!(json.content_type(), "application/json");
    assert_eq!(json.json["openapi"], "3.1.0");
    // The two renderings are one document.
    assert_eq!(json.json, clacks_api::openapi(true));

    let path = committed_path();
    if std::env::var("CLACKS_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &yaml.text).expect("write openapi.yml");
        eprintln!("wrote {}", path.display());
    } else {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == yaml.text,
            "{} differs from the document the server serves at /openapi.yml.\n\
             If the API change is intended, regenerate it with:\n  \
             CLACKS_UPDATE_SNAPSHOTS=1 cargo test -p clacks-server --test api management::openapi\n\
             and commit openapi.yml.",
            path.display()
        );
    }
    app.shutdown().await;
}

/// Without a management token the server requires none, and its document
/// declares none: no scheme, no requirement, no 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_document_declares_no_security() {
    let Some(app) = TestApp::spawn(TestBackend::Sqlite).await else {
        return;
    };
    let json = read(app.http.get(format!("{}/openapi.json", app.management_url))).await;
    assert_eq!(json.status, 200);
    let doc = json.json;
    assert_eq!(doc, clacks_api::openapi(false));
    assert_eq!(doc.get("security"), None);
    assert_eq!(doc["components"].get("securitySchemes"), None);
    assert_eq!(doc["components"]["responses"].get("Unauthorized"), None);
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            assert_eq!(operation.get("security"), None, "{method} {path}");
            assert_eq!(operation["responses"].get("401"), None, "{method} {path}");
        }
    }
    // And the server indeed answers without one.
    let listed = read(app.http.get(app.api("/channel"))).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    app.shutdown().await;
}

/// What utoipa's attributes cannot say is in the document too: extra
/// claims are an object without the reserved names (in the body and, as
/// JSON, in `GET /jwt/{uid}`'s query), and a member added links to minting
/// their token, so stateful testing can chain those calls.
#[test]
fn document_states_claims_rules_and_links() {
    let doc = clacks_api::openapi(true);
    let claims = &doc["components"]["schemas"]["Claims"];
    assert_eq!(claims["type"], "object");
    let reserved = claims["propertyNames"]["not"]["enum"]
        .as_array()
        .expect("reserved names");
    for name in clacks_service::auth::RESERVED_CLAIMS {
        assert!(reserved.contains(&json!(name)), "{name}");
    }
    let parameters = doc["paths"]["/api/v1/jwt/{uid}"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    let query = parameters
        .iter()
        .find(|p| p["name"] == "claims")
        .expect("claims parameter");
    assert_eq!(
        query["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Claims"
    );
    let links =
        &doc["paths"]["/api/v1/channel/{channelId}/users"]["put"]["responses"]["200"]["links"];
    assert_eq!(links["mintToken"]["operationId"], "mintToken");
    assert_eq!(
        links["mintToken"]["requestBody"],
        json!({"userId": "$request.body#/uid"})
    );
    assert_eq!(links["getToken"]["parameters"]["uid"], "$request.body#/uid");
}

/// Every operation documents its errors as problem+json and is behind the
/// bearer scheme, except the health check.
#[test]
fn document_describes_errors_and_security() {
    let doc = clacks_api::openapi(true);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        assert!(path.starts_with("/api/v1/"), "{path}");
        for (method, operation) in item.as_object().expect("path item") {
            operations += 1;
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents success"
            );
            if path == "/api/v1/healthz" {
                assert_eq!(operation["security"], serde_json::json!([{}]));
                continue;
            }
            for status in ["401", "500", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} documents {status}"
                );
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let name = response["$ref"]
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/responses/"))
                        .expect("a shared problem response");
                    let shared = &doc["components"]["responses"][name];
                    assert_eq!(
                        shared["content"]["application/problem+json"]["schema"]["$ref"],
                        Value::from("#/components/schemas/Problem"),
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    // 16 of issue 3, 6 of the webhooks (issue 13), the bulk membership
    // change, 2 of presence (issue 13), search.
    assert_eq!(operations, 26, "every endpoint is documented");
}
