//! Runs the reports service: `REPORTS_DATABASE` (default `reports.db`, an
//! SQLite file of this service's own) and `REPORTS_BIND` (default
//! `127.0.0.1:8090`). On a fresh database it prints the demo customer's key.

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tollgate_example_reports::{routes, seed, DAILY_UNITS};
use tollgate_persistence::PoolOptions;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let database = std::env::var("REPORTS_DATABASE").unwrap_or_else(|_| "reports.db".into());
    let bind = std::env::var("REPORTS_BIND").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let state = tollgate::open_state(&database, &PoolOptions::default())
        .with_context(|| format!("cannot open {database}"))?;
    if let Some(key) = seed(&state)? {
        println!(
            "demo customer's key (shown once; {DAILY_UNITS} units a day):\n{}",
            key.expose()
        );
    }
    let state = web::Data::new(state);
    log::info!("reports service on http://{bind}");
    HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
        .bind(&bind)
        .with_context(|| format!("cannot listen on {bind}"))?
        .run()
        .await
        .context("server failed")
}
