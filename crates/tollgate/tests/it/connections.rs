//! The connection timeouts bound what a slow client holds: a head never
//! finished is answered 408 and its connection closed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tollgate_api::config::ConnectionTimeouts;
use tollgate_persistence::testing::TestDatabase;
use tollgate_persistence::Backend;

use crate::common::TestApp;

#[actix_web::test]
async fn a_request_head_never_finished_is_dropped_after_the_client_request_timeout() {
    let timeouts = ConnectionTimeouts {
        client_request: Duration::from_millis(300),
        ..ConnectionTimeouts::default()
    };
    let app = TestApp::spawn_config(
        TestDatabase::new(Backend::Sqlite),
        TestDatabase::pool_options(),
        timeouts,
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    let (answer, waited) = actix_web::rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let opened = Instant::now();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .expect("write");
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .expect("closed by the server");
        (
            String::from_utf8_lossy(&answer).into_owned(),
            opened.elapsed(),
        )
    })
    .await
    .expect("client thread");

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    app.stop().await;
}
