//! The OpenAPI document describes every route the app serves: each
//! `web::resource` registered in the source is a documented path, each
//! documented operation is served, and each method a documented path does
//! not list answers 405.

use std::collections::BTreeSet;

use crate::common::{TestApp, ADMIN_KEY};
use actix_web::http::{Method, StatusCode};
use tollgate_persistence::Backend;

/// The api crate's source, where the routes are registered.
const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/src");

/// Paths registered with `web::resource("...")`, with the `/v1` scope prefix
/// for the modules mounted under it (and the prefix of a module's own
/// `web::scope("...")` for the resources after it), and `{name:regex}`
/// written `{name}`.
/// A file's unit tests (from its `#[cfg(test)]` on) register test apps of
/// their own, not served routes.
fn registered_paths() -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for dir in [SRC.to_owned(), format!("{SRC}/routes")] {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            let module = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let under_v1 = dir.ends_with("routes") && !matches!(module, "health" | "mod");
            let code: String = text
                .lines()
                .take_while(|l| l.trim() != "#[cfg(test)]")
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let parts: Vec<&str> = code.split("web::resource(\"").collect();
            let mut scope = String::new();
            for pair in parts.windows(2) {
                let (before, part) = (pair[0], pair[1]);
                // A scope opened in the text before this resource.
                if let Some((_, opened)) = before.rsplit_once("web::scope(\"") {
                    scope = opened.split('"').next().unwrap_or("").to_owned();
                }
                let raw = part.split('"').next().unwrap_or("");
                let mut normalized = scope.clone();
                let mut rest = raw;
                while let Some(open) = rest.find('{') {
                    normalized.push_str(&rest[..open]);
                    let close = rest[open..]
                        .find('}')
                        .map(|c| open + c)
                        .expect("closing brace");
                    let name = rest[open + 1..close].split(':').next().unwrap_or("");
                    normalized.push_str(&format!("{{{name}}}"));
                    rest = &rest[close + 1..];
                }
                normalized.push_str(rest);
                paths.insert(if under_v1 {
                    format!("/v1{normalized}")
                } else {
                    normalized
                });
            }
        }
    }
    paths
}

fn concrete(path: &str) -> String {
    path.replace("{original_path}", "orders/1")
        .replace("{key_id}", "999999")
        .replace("{id}", "1")
}

#[actix_web::test]
async fn every_served_route_is_documented() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app
        .raw(Method::GET, "/openapi.json", None, None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.body;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{doc}"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();

    // The document itself and its viewer are the only undocumented routes.
    let mut served = registered_paths();
    served.remove("/docs");
    assert!(
        served.len() > 20,
        "the source scan found too little: {served:?}"
    );
    assert_eq!(
        served, documented,
        "served paths and documented paths differ"
    );

    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let url = concrete(path);
        for method in &methods {
            let documented = item.get(method.as_str().to_lowercase()).is_some();
            let body =
                matches!(*method, Method::POST | Method::PUT | Method::PATCH).then_some("{}");
            let ct = body.map(|_| "application/json");
            let r = app
                .raw(method.clone(), &url, Some(ADMIN_KEY), body, ct)
                .await;
            if documented {
                assert_ne!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but not served"
                );
                let no_route = r.status == StatusCode::NOT_FOUND
                    && r.body["error"]["message"] == "no such route";
                assert!(!no_route, "{method} {path} is documented but not served");
                let documented_status = item[method.as_str().to_lowercase()]["responses"]
                    .get(r.status.as_str())
                    .is_some();
                assert!(
                    documented_status,
                    "{method} {path} answered {} which is not documented",
                    r.status
                );
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
            }
        }
    }

    // The interactive page works offline: its assets come from the binary.
    let page = app.client.get(format!("{}/docs/", app.base)).send().await;
    let mut page = page.expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.body().await.expect("body");
    assert!(
        String::from_utf8_lossy(&html).contains("swagger"),
        "not the Swagger UI page"
    );
    let redirect = app
        .client
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .expect("sent");
    // awc follows the redirect to /docs/.
    assert!(redirect.status().is_redirection() || redirect.status() == StatusCode::OK);
    app.stop().await;
}
