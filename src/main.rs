//! The `liaison` command line: runs the daemon and answers questions about
//! its state. Thin on purpose: parse arguments, set up logging, call the
//! library.

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use liaison::admin::{Request, StatusRow};
use liaison::config::Config;
use std::path::PathBuf;

/// Email-driven delegated-admin invitations and relationship lifecycle for
/// cloud resellers.
#[derive(Parser)]
#[command(name = "liaison", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(
        long,
        short,
        env = "LIAISON_CONFIG",
        default_value = "/etc/liaison/liaison.toml"
    )]
    config: PathBuf,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground until SIGTERM or Ctrl-C.
    Run,
    /// Show relationships (all, or those of one customer).
    Status {
        /// Customer email address.
        customer: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and templates without connecting.
    CheckConfig,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIAISON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a journal or log file gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("liaison: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Our errors already name their cause in their message; print a
            // cause from the chain only when it adds something, and never
            // the backtrace anyhow would add under RUST_BACKTRACE.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg = format!("{msg}: {c}");
                }
            }
            eprintln!("liaison: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> Result<()> {
    init_logging(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::load(&cli.config)?;
    match cli.command {
        Cmd::Run => {
            liaison::daemon::run(config, shutdown_signal())
                .await
                .context("the daemon stopped with an error")?;
        }
        Cmd::CheckConfig => {
            liaison::templates::Templates::load(&config.templates_dir)?;
            println!(
                "config OK: {} inbox(es), {} partner(s), templates in {}",
                config.inboxes.len(),
                config.partners.len(),
                config.templates_dir.display()
            );
        }
        Cmd::Status { customer, json } => {
            let req = Request::Status { customer };
            let value = query(&config, &req).await?;
            let rows: Vec<StatusRow> = serde_json::from_value(value)?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else if rows.is_empty() {
                println!("no relationships");
            } else {
                for r in rows {
                    println!(
                        "{:<12} {:<32} {:<20} since {}",
                        r.partner, r.customer, r.state, r.since
                    );
                }
            }
        }
    }
    Ok(())
}

/// Asks the running daemon over its socket, or reads the store directly
/// when no daemon runs.
async fn query(config: &Config, req: &Request) -> Result<serde_json::Value> {
    if config.admin_socket.exists() {
        match liaison::admin::request(&config.admin_socket, req).await {
            Ok(v) => return Ok(v),
            Err(liaison::admin::AdminError::Io { .. }) => {} // stale socket: no daemon
            Err(e) => return Err(e.into()),
        }
    }
    let store = liaison::store::SledStore::open(
        &config.store.path,
        config.store.cache_capacity_bytes,
        &config.admin_socket,
    )?;
    liaison::admin::answer(&store, req).map_err(anyhow::Error::msg)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
