//! The `tollgate` binary: `serve` (default), `migrate`, `create-admin NAME`.

use anyhow::Context;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};
use tollgate::config::{DatabaseArgs, ServeArgs};
use tollgate::{open_database, state_of, Config, Tollgate};
use tollgate_api::app::ensure_admin;
use tollgate_domain::api_key::ApiKeyName;
use tollgate_domain::user::Role;

/// Tollgate: plans, permissions, users, API keys and metered access checks.
///
/// Every setting can be given as an environment variable or as the flag of
/// the same name; the flag wins. The bootstrap admin key has no flag.
#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "The bootstrap admin key (at least 32 characters; it authenticates as the \
                  admin user `admin`) is read from the environment only, never from a flag: \
                  TOLLGATE_ADMIN_KEY=KEY, or TOLLGATE_ADMIN_KEY_FILE=PATH naming a file \
                  that holds it (one trailing newline is dropped). Setting both is an error."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Create an admin user NAME (or reuse that admin) and print a new key for it, once.
    CreateAdmin {
        /// Username of the admin (1-64 characters of A-Z a-z 0-9 _ . -).
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        // A setting's bad value stops the start like every other bad
        // setting: one line naming it (its variable first: settings mostly
        // come from the environment), exit status 1. Help, version and
        // unknown arguments keep clap's own answer.
        if let Some(line) = bad_value_line(&e) {
            eprintln!("tollgate: {line}");
            std::process::exit(1);
        }
        e.exit()
    });
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = run(cli) {
        eprintln!("tollgate: {e:#}");
        std::process::exit(1);
    }
}

/// `VARIABLE (--flag) "value": why`, for a value clap refused; `None` for
/// any other parse error. A value whose variable hides its values (the
/// database URL may hold a password) is not echoed.
fn bad_value_line(e: &clap::Error) -> Option<String> {
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split_whitespace().next()?;
    let long = flag.strip_prefix("--")?;
    let command = Cli::command();
    let found = command
        .get_arguments()
        .chain(command.get_subcommands().flat_map(|c| c.get_arguments()))
        .find(|a| a.get_long() == Some(long))?;
    let name = found.get_env().and_then(|v| v.to_str()).unwrap_or(flag);
    let why = std::error::Error::source(e)
        .map(ToString::to_string)
        .unwrap_or_else(|| "not a valid value".to_owned());
    match e.get(ContextKind::InvalidValue) {
        // A flag given without its value: clap's "a value is required"
        // says it better.
        Some(ContextValue::String(value)) if value.is_empty() => None,
        Some(ContextValue::String(value)) if !found.is_hide_env_values_set() => {
            Some(format!("{name} ({flag}) {value:?}: {why}"))
        }
        _ => Some(format!("{name} ({flag}): {why}")),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(Config::try_from(args)?),
        Command::Migrate(db) => {
            open_database(&db.database_url, &db.pool_options())?;
            println!("database is up to date");
            Ok(())
        }
        Command::CreateAdmin { name, db } => create_admin(&name, &db),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let Tollgate { app, db } = Tollgate::build(config)?;
        log::info!(
            "tollgate listening on http://{} ({} database)",
            app.local_addr(),
            db.backend().name()
        );
        app.run().await.context("server failed")?;
        log::info!("tollgate stopped");
        Ok(())
    })
}

fn create_admin(name: &str, db: &DatabaseArgs) -> anyhow::Result<()> {
    let state = state_of(&open_database(&db.database_url, &db.pool_options())?);
    let admin = ensure_admin(&state, name).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    if admin.role != Role::Admin {
        anyhow::bail!("user {name} exists and is not an admin");
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let label = ApiKeyName::parse("create-admin").map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_, secret) = state
        .keys
        .issue(admin.id, label, None, random)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", secret.expose());
    eprintln!("admin key for {name} (shown once; store it now)");
    Ok(())
}
