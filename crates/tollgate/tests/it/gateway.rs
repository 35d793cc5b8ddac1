//! Forward-auth through a real nginx (`auth_request` -> `/v1/authorize`) in
//! front of a tiny upstream, configured as `docs/gateways.md` shows. Between
//! nginx and Tollgate sits a recorder that notes the permission header each
//! check carries, so the test sees what Tollgate sees.
//!
//! Needs the `nginx` binary, so it is `#[ignore]`d in a plain `cargo test`;
//! `.ci/run` installs nginx and runs it with `--ignored`, where a missing
//! nginx fails the test.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::TestApp;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tollgate_persistence::Backend;

/// The nginx configuration of docs/gateways.md, with test ports and paths.
fn nginx_conf(dir: &str, listen: u16, tollgate: &str, upstream: &str) -> String {
    format!(
        r#"
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream tollgate {{ server {tollgate}; }}
    upstream app {{ server {upstream}; }}

    server {{
        listen 127.0.0.1:{listen};

        location /reports/ {{
            auth_request /_tollgate/reports;
            include {dir}/tollgate_common.conf;
            proxy_pass http://app;
        }}
        location /admin/ {{
            auth_request /_tollgate/admin;
            include {dir}/tollgate_common.conf;
            proxy_pass http://app;
        }}

        # One check location per permission, named here and nowhere else:
        # proxy_set_header replaces any X-Tollgate-Permission of the client.
        location = /_tollgate/reports {{
            internal;
            proxy_set_header X-Tollgate-Permission reports:read;
            include {dir}/tollgate_check.conf;
        }}
        location = /_tollgate/admin {{
            internal;
            proxy_set_header X-Tollgate-Permission admin:all;
            include {dir}/tollgate_check.conf;
        }}

        # auth_request passes only 2xx, 401 and 403; any other status of the
        # check (429) becomes a 500, mapped back here.
        location @tollgate_refused {{
            default_type application/json;
            if ($tollgate_status = 429) {{
                add_header Retry-After $tollgate_retry_after always;
                add_header RateLimit-Limit $tollgate_limit always;
                add_header RateLimit-Remaining $tollgate_remaining always;
                add_header RateLimit-Reset $tollgate_reset always;
                return 429 '{{"error":{{"code":"quota_exhausted","message":"quota_exhausted: the plan\'s usage limit for this period is reached"}}}}';
            }}
            return 503;
        }}
    }}
}}
"#
    )
}

const COMMON_CONF: &str = r#"
auth_request_set $tollgate_status $upstream_status;
auth_request_set $tollgate_user $upstream_http_x_tollgate_user_id;
auth_request_set $tollgate_limit $upstream_http_ratelimit_limit;
auth_request_set $tollgate_remaining $upstream_http_ratelimit_remaining;
auth_request_set $tollgate_reset $upstream_http_ratelimit_reset;
auth_request_set $tollgate_retry_after $upstream_http_retry_after;
proxy_set_header X-Tollgate-User-Id $tollgate_user;
add_header RateLimit-Limit $tollgate_limit always;
add_header RateLimit-Remaining $tollgate_remaining always;
error_page 500 = @tollgate_refused;
"#;

const CHECK_CONF: &str = r#"
proxy_pass http://tollgate/v1/authorize;
proxy_pass_request_body off;
proxy_set_header Content-Length "";
proxy_set_header X-Original-URI $request_uri;
"#;

/// What the recorder saw of one check: its method and permission headers.
type Seen = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// Notes the check's method and `X-Tollgate-Permission` headers, then hands
/// it to Tollgate and its answer back, headers and all.
async fn recorder(
    req: HttpRequest,
    seen: web::Data<Seen>,
    tollgate: web::Data<String>,
) -> HttpResponse {
    let permissions = req
        .headers()
        .get_all("x-tollgate-permission")
        .map(|v| v.to_str().unwrap_or("<not ASCII>").to_owned())
        .collect();
    seen.lock()
        .expect("lock")
        .push((req.method().to_string(), permissions));
    let target = format!("{}{}", tollgate.as_str(), req.uri());
    let mut forwarded = awc::Client::default().request(req.method().clone(), target);
    for (name, value) in req.headers() {
        if name != "host" && name != "connection" {
            forwarded = forwarded.append_header((name.clone(), value.clone()));
        }
    }
    let mut answer = forwarded.send().await.expect("tollgate answers");
    let body = answer.body().await.expect("body");
    let mut response = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "connection" && name != "transfer-encoding" {
            response.append_header((name.clone(), value.clone()));
        }
    }
    response.body(body)
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn upstream(req: HttpRequest) -> HttpResponse {
    let user = req
        .headers()
        .get("x-tollgate-user-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    HttpResponse::Ok().body(format!("upstream: user {user}"))
}

#[actix_web::test]
#[ignore = "needs nginx; .ci/run runs it with --ignored"]
async fn nginx_auth_request_guards_an_upstream() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let c = app
        .customer(
            "gw",
            "Gateway",
            &["reports:read", "exports:run"],
            Some(3),
            "month",
        )
        .await;

    let upstream_server = HttpServer::new(|| App::new().default_service(web::to(upstream)))
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("upstream binds");
    let upstream_addr = upstream_server.addrs()[0];
    actix_web::rt::spawn(upstream_server.run());

    let seen: Seen = Arc::default();
    let (recorded, tollgate_base) = (seen.clone(), app.base.clone());
    let recorder_server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(recorded.clone()))
            .app_data(web::Data::new(tollgate_base.clone()))
            .default_service(web::to(recorder))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("recorder binds");
    let recorder_addr = recorder_server.addrs()[0];
    actix_web::rt::spawn(recorder_server.run());

    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().display().to_string();
    let listen = free_port();
    std::fs::write(
        dir.path().join("nginx.conf"),
        nginx_conf(
            &d,
            listen,
            &recorder_addr.to_string(),
            &upstream_addr.to_string(),
        ),
    )
    .expect("conf written");
    std::fs::write(dir.path().join("tollgate_common.conf"), COMMON_CONF).expect("conf written");
    std::fs::write(dir.path().join("tollgate_check.conf"), CHECK_CONF).expect("conf written");
    let child = Command::new("nginx")
        .args([
            "-p",
            &d,
            "-e",
            &format!("{d}/error.log"),
            "-c",
            &format!("{d}/nginx.conf"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx must be installed (apt-get install -y nginx)");
    let _nginx = Nginx(child);

    let client = awc::Client::default();
    let base = format!("http://127.0.0.1:{listen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/reports/")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let get = |path: &str, key: Option<&str>| {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(key) = key {
            req = req.insert_header(("Authorization", format!("Bearer {key}")));
        }
        req.send()
    };
    // As a client that names a permission itself, in the header or the query.
    let steer = |path: &str, permission: &str| {
        client
            .get(format!("{base}{path}"))
            .insert_header(("Authorization", format!("Bearer {}", c.key)))
            .insert_header(("X-Tollgate-Permission", permission.to_owned()))
            .send()
    };
    seen.lock().expect("lock").clear();

    // Allowed calls reach the upstream, which learns the user.
    let mut res = get("/reports/q1", Some(&c.key)).await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get("ratelimit-remaining")
            .map(|v| v.as_bytes()),
        Some(&b"2"[..])
    );
    let body = res.body().await.expect("body");
    assert_eq!(body, format!("upstream: user {}", c.user_id).as_bytes());

    // No key: 401; no permission: 403; neither reaches the upstream nor counts.
    assert_eq!(
        get("/reports/q1", None).await.expect("sent").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/reports/q1", Some("tg_not_a_key"))
            .await
            .expect("sent")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/admin/x", Some(&c.key)).await.expect("sent").status(),
        StatusCode::FORBIDDEN
    );

    // A client naming a permission it has cannot pick it over the route's:
    // not with the header, not with a query.
    for permission in ["reports:read", "exports:run"] {
        assert_eq!(
            steer("/admin/x", permission).await.expect("sent").status(),
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        get("/admin/x?permission=reports:read", Some(&c.key))
            .await
            .expect("sent")
            .status(),
        StatusCode::FORBIDDEN
    );
    // Every check Tollgate saw so far carried exactly the gateway's header.
    {
        let seen = seen.lock().expect("lock");
        let expected = [
            "reports:read",
            "reports:read",
            "reports:read",
            "admin:all",
            "admin:all",
            "admin:all",
            "admin:all",
        ];
        assert_eq!(seen.len(), expected.len(), "{seen:?}");
        for ((method, headers), wanted) in seen.iter().zip(expected) {
            assert_eq!(method, "GET");
            assert_eq!(headers, &[wanted.to_owned()], "{seen:?}");
        }
    }

    // On a route it may use, the call counts against the route's permission.
    let steered = steer("/reports/q2", "exports:run").await.expect("sent");
    assert_eq!(steered.status(), StatusCode::OK);
    assert_eq!(
        seen.lock().expect("lock").last().map(|(_, h)| h.clone()),
        Some(vec!["reports:read".to_owned()])
    );

    // Over quota: the documented mapping turns the check's 429 into a 429.
    assert_eq!(
        get("/reports/q3", Some(&c.key))
            .await
            .expect("sent")
            .status(),
        StatusCode::OK
    );
    let mut refused = get("/reports/q4", Some(&c.key)).await.expect("sent");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().get("retry-after").is_some());
    assert_eq!(
        refused
            .headers()
            .get("ratelimit-remaining")
            .map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "quota_exhausted");

    // auth_request checks with GET whatever the client's method.
    let head = client
        .head(format!("{base}/reports/q5"))
        .insert_header(("Authorization", format!("Bearer {}", c.key)))
        .send()
        .await
        .expect("sent");
    assert_eq!(head.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        seen.lock().expect("lock").last().map(|(m, _)| m.clone()),
        Some("GET".to_owned())
    );

    let events = app.events(c.user_id).await;
    assert_eq!(events.len(), 3);
    assert!(
        events.iter().all(|e| e["permission"] == "reports:read"),
        "{events:?}"
    );
    app.stop().await;
}
