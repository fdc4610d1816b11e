//! The `liaison` command line, one file per group of subcommands: the
//! arguments of every subcommand are listed here (the one list `--help`
//! shows), and [`run`] sends each to the file that carries it out.

mod backup;
mod check;
mod deliver;
mod import;
mod migrate;
mod oauth;
mod quarantine;
mod render;
mod state;

use anyhow::{Context as _, Result};
use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand, ValueEnum};
use liaison::io::admin::Request;
use liaison_core::config::{Config, SUPPORTED_LOCALES};
use liaison_core::render::templates::TemplateName;
use std::path::PathBuf;

/// Email-driven delegated-admin invitations and relationship lifecycle for
/// cloud resellers.
#[derive(Parser)]
#[command(name = "liaison", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(
        long,
        short,
        env = "LIAISON_CONFIG",
        default_value = "/etc/liaison/liaison.toml"
    )]
    pub config: PathBuf,
    /// Log output format (logs go to stderr; the level is set with LIAISON_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
pub enum QuarantineCmd {
    /// List quarantined messages with the reason.
    List {
        /// Print JSON: [{"key", "at", "reason"}].
        #[arg(long)]
        json: bool,
    },
    /// Show what a quarantined message says (From, Subject,
    /// Authentication-Results, its text, its attachments) before releasing
    /// it.
    Show {
        /// The key shown by `quarantine list`.
        key: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decide a quarantined message again, trusting its sender (e.g. a
    /// partner command that failed the Authentication-Results check). Needs
    /// the running daemon.
    Release {
        /// The key shown by `quarantine list`.
        key: String,
    },
}

#[derive(Subcommand)]
pub enum HeldCmd {
    /// List the mails a cap held back (reply cap, support-request cap),
    /// with the reason.
    List {
        /// Print JSON: [{"id", "at", "reason", "partner", "to", "subject", "kept"}].
        #[arg(long)]
        json: bool,
    },
    /// Show what a held mail says (recipients, subject, its text, its
    /// attachments): what releasing it sends under Liaison's name.
    Show {
        /// The number shown by `held list`.
        id: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a held mail after all. Needs the running daemon.
    Release {
        /// The number shown by `held list`.
        id: u64,
    },
}

#[derive(Subcommand)]
pub enum OAuthCmd {
    /// Sign a `grant = "refresh_token"` client in (OAuth 2.0 device
    /// authorization grant, RFC 8628): prints the page to open and the code
    /// to enter, waits for the sign-in, and stores the refresh token (mode
    /// 0600) in the client's refresh_token_file.
    Login {
        /// The `[[oauth2]]` name.
        name: String,
    },
    /// Each `[[oauth2]]` client's token state and expiry, asked of the
    /// running daemon. Exits non-zero when any client has no fresh token.
    Status {
        /// Print JSON: [{"client", "state", "expires_at", "refresh_failures"}].
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the daemon in the foreground until SIGTERM or Ctrl-C.
    Run,
    /// Show how many relationships each partner has in each state, or the
    /// relationships of one customer.
    ///
    /// Asks the running daemon over its admin socket, or reads the store
    /// directly when no daemon runs. `list` shows every relationship.
    Status {
        /// Customer email address.
        customer: Option<String>,
        /// Print JSON: [{"partner", "state", "count"}], or with a customer
        /// [{"partner", "customer", "state", "since"}].
        #[arg(long)]
        json: bool,
    },
    /// List support tickets (open ones, or all with --all).
    Tickets {
        /// Only this partner's.
        #[arg(long)]
        partner: Option<String>,
        /// Closed tickets too.
        #[arg(long)]
        all: bool,
        /// Print JSON: [{"id", "partner", "customer", "state", "subject", "opened"}].
        #[arg(long)]
        json: bool,
    },
    /// Show one ticket with its whole thread.
    Ticket {
        /// Ticket number, e.g. T-000123.
        id: String,
        /// Print the ticket record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Counts: processed messages by class, outbox pending and sent.
    Stats,
    /// List relationships, optionally of one partner and in one state.
    List {
        /// Only this state (invited, active, declined, expired, permissions_removed, removed).
        state: Option<String>,
        /// Only this partner.
        #[arg(long)]
        partner: Option<String>,
        /// Print JSON: [{"partner", "customer", "state", "since"}].
        #[arg(long)]
        json: bool,
    },
    /// Every transition of a customer's relationships.
    History {
        /// Customer email address.
        customer: String,
        /// Print the relationship records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Invite customers in bulk from a CSV file (email[,name[,locale]]).
    ///
    /// Runs `invite` for every row as the partner would, 50 rows per batch,
    /// with the same checks as a mailed `invite`. The file is RFC 4180 CSV
    /// (quote a cell holding a comma: "Contoso, Ltd"); a first row whose
    /// first cell is `email` is a header naming the columns. Prints one line
    /// per row (ok or FAILED, with its line number and the reason) and a
    /// summary; progress goes to stderr. Exits non-zero when any row failed.
    /// Importing the same file again runs nothing twice. Works while the
    /// daemon runs (through it) and when it does not (the mails are queued
    /// and sent when it next runs).
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Partner id the invitations are sent for.
        #[arg(long)]
        partner: String,
        /// Send each rendered invitation to the partner instead, to forward.
        #[arg(long)]
        draft: bool,
        /// Print the per-row results as JSON: [{"line", "email", "command", "ok", "result"}].
        #[arg(long)]
        json: bool,
    },
    /// Write the whole store as JSON lines (a backup; works while the daemon runs).
    Export {
        /// Output file; standard output when left out.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Load a backup made by `export` into an empty store (daemon stopped).
    Restore {
        /// The JSON-lines file.
        file: PathBuf,
    },
    /// Apply the PostgreSQL store's schema migrations now and print the
    /// versions (from → to).
    ///
    /// The daemon applies them itself when it starts; this does it by hand,
    /// e.g. before a new binary takes over several instances. A binary
    /// older than the schema refuses to run. With sled there is nothing to
    /// migrate (an error).
    Migrate,
    /// Messages set aside (unreadable, oversized, forged partner …).
    Quarantine {
        #[command(subcommand)]
        action: QuarantineCmd,
    },
    /// Mails Liaison decided to send but a cap held back.
    Held {
        #[command(subcommand)]
        action: HeldCmd,
    },
    /// OAuth2 clients (`[[oauth2]]`): sign in, show token states.
    Oauth {
        #[command(subcommand)]
        action: OAuthCmd,
    },
    /// Check the configuration, the templates and every mail server.
    ///
    /// Validates the file, compiles and renders every template, obtains a
    /// token from every `[[oauth2]]` client, then logs in to each IMAP inbox
    /// (and opens its mailbox read-only) and to the SMTP server. Prints one line per check, `ok` or `FAILED: <reason>`, and
    /// exits non-zero when any check fails.
    CheckConfig {
        /// Only check the file and the templates; connect nowhere.
        #[arg(long)]
        offline: bool,
        /// Print JSON: [{"check", "target", "ok", "error"}].
        #[arg(long)]
        json: bool,
    },
    /// Take one message from the MTA on standard input (a Postfix `pipe`
    /// transport, a `.forward` line) as if fetched from inbox NAME.
    ///
    /// Through the running daemon when one runs, else straight into the
    /// store. Exit status (sysexits): 0 processed, quarantined or already
    /// processed; 75 try again later (store or daemon unreachable or busy);
    /// 64 unknown --inbox.
    Deliver {
        /// The configured inbox (`[[inbox]] name`) the message counts as.
        #[arg(long)]
        inbox: String,
    },
    /// Preview a template rendered with its sample data.
    ///
    /// Prints the subject, the plain-text part and the HTML part, or with
    /// `--eml` the whole RFC 5322 message as Liaison would send it.
    Render {
        /// Template name.
        #[arg(value_parser = PossibleValuesParser::new(TemplateName::ALL.map(TemplateName::as_str)))]
        template: String,
        /// Locale.
        #[arg(long, default_value = "en", value_parser = PossibleValuesParser::new(SUPPORTED_LOCALES))]
        locale: String,
        /// Print the complete message (headers, multipart/alternative body).
        #[arg(long, conflicts_with = "json")]
        eml: bool,
        /// Print JSON: {"subject", "text", "html"}.
        #[arg(long)]
        json: bool,
    },
}

pub fn init_logging(format: LogFormat) {
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

/// Carries out one command line.
pub async fn run(cli: Cli) -> Result<()> {
    init_logging(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = &cli.config;
    let load = || liaison::files::load_config(path);
    match cli.command {
        Cmd::Run => {
            let config = load()?;
            liaison::daemon::run(config, shutdown_signal())
                .await
                .context("the daemon stopped with an error")?;
        }
        Cmd::Oauth { action } => {
            let config = load()?;
            match action {
                OAuthCmd::Login { name } => oauth::login(&config, &name).await?,
                OAuthCmd::Status { json } => oauth::status(&config, json).await?,
            }
        }
        Cmd::CheckConfig { offline, json } => check::check_config(path, offline, json).await?,
        Cmd::Deliver { inbox } => deliver::deliver(path, &inbox).await,
        Cmd::Render {
            template,
            locale,
            eml,
            json,
        } => render::render(&load()?, &template, &locale, eml, json)?,
        Cmd::Tickets { partner, all, json } => state::tickets(&load()?, partner, all, json).await?,
        Cmd::Ticket { id, json } => state::ticket(&load()?, id, json).await?,
        Cmd::List {
            state,
            partner,
            json,
        } => state::list(&load()?, state, partner, json).await?,
        Cmd::History { customer, json } => state::history(&load()?, customer, json).await?,
        Cmd::Stats => state::stats(&load()?).await?,
        Cmd::Status {
            customer: Some(customer),
            json,
        } => state::status_of(&load()?, customer, json).await?,
        Cmd::Status {
            customer: None,
            json,
        } => state::counts(&load()?, json).await?,
        Cmd::Import {
            file,
            partner,
            draft,
            json,
        } => import::import(&load()?, &file, &partner, draft, json).await?,
        Cmd::Export { output } => backup::export(&load()?, output).await?,
        Cmd::Restore { file } => backup::restore(&load()?, file)?,
        Cmd::Migrate => migrate::migrate(&load()?).await?,
        Cmd::Quarantine { action } => {
            let config = load()?;
            match action {
                QuarantineCmd::List { json } => quarantine::quarantine_list(&config, json).await?,
                QuarantineCmd::Show { key, json } => {
                    quarantine::quarantine_show(&config, key, json).await?
                }
                QuarantineCmd::Release { key } => {
                    quarantine::quarantine_release(&config, key).await?
                }
            }
        }
        Cmd::Held { action } => {
            let config = load()?;
            match action {
                HeldCmd::List { json } => quarantine::held_list(&config, json).await?,
                HeldCmd::Show { id, json } => quarantine::held_show(&config, id, json).await?,
                HeldCmd::Release { id } => quarantine::held_release(&config, id).await?,
            }
        }
    }
    Ok(())
}

/// Asks the running daemon over its socket, for a request only the engine
/// can answer; `what` says what needs the daemon, for the error when none
/// runs.
pub(crate) async fn ask_daemon(
    config: &Config,
    req: &Request,
    what: &str,
) -> Result<serde_json::Value> {
    anyhow::ensure!(
        config.admin_socket.exists(),
        "the daemon is not running (no {}); start it to {what}",
        config.admin_socket.display()
    );
    Ok(liaison::io::admin::request(&config.admin_socket, req).await?)
}

/// Asks the running daemon over its socket, or reads the store directly
/// when no daemon runs.
pub(crate) async fn query(config: &Config, req: &Request) -> Result<serde_json::Value> {
    if config.admin_socket.exists() {
        match liaison::io::admin::request(&config.admin_socket, req).await {
            Ok(v) => return Ok(v),
            Err(liaison::io::admin::AdminError::Io { .. }) => {} // stale socket: no daemon
            Err(e) => return Err(e.into()),
        }
    }
    let store = liaison::store::open(&config.store, &config.admin_socket)?;
    liaison::io::admin::answer(store.as_ref(), req).map_err(anyhow::Error::msg)
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
