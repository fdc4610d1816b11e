//! The `liaison` command line: runs the daemon and answers questions about
//! its state. Thin on purpose: parse arguments, set up logging, call the
//! library.

use anyhow::{Context as _, Result};
use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand, ValueEnum};
use liaison::admin::{printable, CountRow, Request, StatusRow};
use liaison::config::{Config, InboxConfig, SmtpConfig, SUPPORTED_LOCALES};
use liaison::templates::{TemplateName, Templates};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Log output format (logs go to stderr; the level is set with LIAISON_LOG).
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
enum QuarantineCmd {
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
enum HeldCmd {
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
enum Cmd {
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
    /// Check the configuration, the templates and every mail server.
    ///
    /// Validates the file, compiles and renders every template, then logs in
    /// to each IMAP inbox (and opens its mailbox read-only) and to the SMTP
    /// server. Prints one line per check, `ok` or `FAILED: <reason>`, and
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
            // A refusal may quote what a mail said (a summary, a reason).
            let msg: Vec<_> = msg.split('\n').map(printable).collect();
            eprintln!("liaison: {}", msg.join("\n"));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> Result<()> {
    init_logging(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Cmd::Run => {
            let config = Config::load(&cli.config)?;
            liaison::daemon::run(config, shutdown_signal())
                .await
                .context("the daemon stopped with an error")?;
        }
        Cmd::CheckConfig { offline, json } => check_config(&cli.config, offline, json).await?,
        Cmd::Deliver { inbox } => {
            // The MTA reads only the exit status: an unreadable config is
            // an operator's fix away, so the MTA keeps the mail (75).
            let status = match Config::load(&cli.config) {
                Ok(config) => liaison::deliver::run(&config, &inbox).await as i32,
                Err(e) => {
                    println!("liaison deliver: {e}");
                    liaison::deliver::ExitStatus::TempFail as i32
                }
            };
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::process::exit(status);
        }
        Cmd::Render {
            template,
            locale,
            eml,
            json,
        } => {
            let config = Config::load(&cli.config)?;
            render(&config, &template, &locale, eml, json)?;
        }
        Cmd::Tickets { partner, all, json } => {
            let config = Config::load(&cli.config)?;
            let value = query(&config, &Request::Tickets { partner, all }).await?;
            let rows: Vec<liaison::admin::TicketRow> = serde_json::from_value(value)?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else if rows.is_empty() {
                println!("no tickets");
            } else {
                for r in rows {
                    println!(
                        "{}  {:<19}  {:<12} {:<28} opened {}  {}",
                        r.id,
                        r.state,
                        r.partner,
                        r.customer,
                        r.opened,
                        printable(&r.subject)
                    );
                }
            }
        }
        Cmd::Ticket { id, json } => {
            let config = Config::load(&cli.config)?;
            let value = query(&config, &Request::Ticket { id }).await?;
            if json {
                println!("{value}");
            } else {
                let t: liaison::ticket::Ticket = serde_json::from_value(value)?;
                println!(
                    "{}  {}  partner {}  customer {}\nsubject: {}",
                    liaison::ticket::format_id(t.id),
                    t.state,
                    t.partner,
                    t.customer,
                    printable(&t.subject)
                );
                for e in t.entries {
                    println!(
                        "\n{}  {:?} {}",
                        liaison::workflow::rfc3339(e.at),
                        e.author,
                        e.from
                    );
                    for line in e.text.lines() {
                        println!("  {}", printable(line));
                    }
                }
            }
        }
        Cmd::List {
            state,
            partner,
            json,
        } => {
            let config = Config::load(&cli.config)?;
            if let Some(st) = &state {
                anyhow::ensure!(
                    liaison::relationship::RelationshipState::parse(st).is_some(),
                    "`{st}` is not a relationship state"
                );
            }
            let value = query(&config, &Request::List { partner, state }).await?;
            let rows: Vec<StatusRow> = serde_json::from_value::<Vec<StatusRow>>(value)?;
            print_status_rows(&rows, json)?;
        }
        Cmd::History { customer, json } => {
            let config = Config::load(&cli.config)?;
            let value = query(&config, &Request::History { customer }).await?;
            if json {
                println!("{value}");
            } else {
                let rels: Vec<liaison::relationship::Relationship> = serde_json::from_value(value)?;
                if rels.is_empty() {
                    println!("no relationships");
                }
                for r in rels {
                    println!("{} with {} ({})", r.customer, r.partner, r.state);
                    for h in r.history {
                        println!(
                            "  {}  {} -> {}  by {}{}",
                            liaison::workflow::rfc3339(h.at),
                            h.from.map(|s| s.as_str()).unwrap_or("(new)"),
                            h.to,
                            h.actor,
                            h.message_id
                                .map(|m| format!("  <{}>", printable(&m)))
                                .unwrap_or_default()
                        );
                    }
                }
            }
        }
        Cmd::Import {
            file,
            partner,
            draft,
            json,
        } => {
            let config = Config::load(&cli.config)?;
            import(&config, &file, &partner, draft, json).await?;
        }
        Cmd::Export { output } => {
            let config = Config::load(&cli.config)?;
            let value = query(&config, &Request::Export).await?;
            let rows: Vec<liaison::store::ExportRecord> = serde_json::from_value(value)?;
            let mut out = String::new();
            for r in &rows {
                out.push_str(&serde_json::to_string(r)?);
                out.push('\n');
            }
            match output {
                Some(path) => {
                    std::fs::write(&path, out)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("exported {} records to {}", rows.len(), path.display());
                }
                None => print!("{out}"),
            }
        }
        Cmd::Restore { file } => {
            let config = Config::load(&cli.config)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut rows = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                rows.push(
                    serde_json::from_str::<liaison::store::ExportRecord>(line).with_context(
                        || format!("{} line {}: not an export record", file.display(), i + 1),
                    )?,
                );
            }
            use liaison::store::Store as _;
            let store = liaison::store::SledStore::open(
                &config.store.path,
                config.store.cache_capacity_bytes,
                &config.admin_socket,
            )?;
            anyhow::ensure!(
                store.is_empty()?,
                "the store at {} is not empty; restore only into a new store",
                config.store.path.display()
            );
            store.import(&rows)?;
            println!(
                "restored {} records into {}",
                rows.len(),
                config.store.path.display()
            );
        }
        Cmd::Quarantine {
            action: QuarantineCmd::Release { key },
        } => {
            let config = Config::load(&cli.config)?;
            let v = ask_daemon(&config, &Request::Release { key }, "release messages").await?;
            println!(
                "released {}: {} ({})",
                printable(v["key"].as_str().unwrap_or("")),
                printable(v["summary"].as_str().unwrap_or("")),
                v["class"].as_str().unwrap_or("")
            );
        }
        Cmd::Stats => {
            let config = Config::load(&cli.config)?;
            let value = query(&config, &Request::Stats).await?;
            println!("{value}");
        }
        Cmd::Held {
            action: HeldCmd::List { json },
        } => {
            let config = Config::load(&cli.config)?;
            let value = query(&config, &Request::Held).await?;
            print_list(&value, json, "nothing held", |r| {
                let to: Vec<&str> = r["to"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str())
                    .collect();
                format!(
                    "{}  {}  to {}  \"{}\"  {}",
                    r["id"],
                    r["at"].as_str().unwrap_or(""),
                    printable(&to.join(", ")),
                    printable(r["subject"].as_str().unwrap_or("")),
                    printable(r["reason"].as_str().unwrap_or(""))
                )
            });
        }
        Cmd::Held {
            action: HeldCmd::Show { id, json },
        } => {
            let config = Config::load(&cli.config)?;
            let value = query(&config, &Request::HeldShow { id }).await?;
            print_mail_content(&value, json);
        }
        Cmd::Quarantine {
            action: QuarantineCmd::Show { key, json },
        } => {
            let config = Config::load(&cli.config)?;
            let value = query(&config, &Request::QuarantineShow { key }).await?;
            print_mail_content(&value, json);
        }
        Cmd::Held {
            action: HeldCmd::Release { id },
        } => {
            let config = Config::load(&cli.config)?;
            let v = ask_daemon(&config, &Request::HeldRelease { id }, "release held mail").await?;
            println!(
                "released {}: \"{}\" queued for sending",
                v["id"],
                printable(v["subject"].as_str().unwrap_or(""))
            );
        }
        Cmd::Quarantine {
            action: QuarantineCmd::List { json },
        } => {
            let config = Config::load(&cli.config)?;
            let value = query(&config, &Request::Quarantine).await?;
            print_list(&value, json, "nothing quarantined", |r| {
                format!(
                    "{}  {}  {}",
                    r["at"].as_str().unwrap_or(""),
                    printable(r["key"].as_str().unwrap_or("")),
                    printable(r["reason"].as_str().unwrap_or(""))
                )
            });
        }
        Cmd::Status {
            customer: Some(customer),
            json,
        } => {
            let config = Config::load(&cli.config)?;
            let req = Request::Status { customer };
            let value = query(&config, &req).await?;
            let rows: Vec<StatusRow> = serde_json::from_value(value)?;
            print_status_rows(&rows, json)?;
        }
        Cmd::Status {
            customer: None,
            json,
        } => {
            let config = Config::load(&cli.config)?;
            let value = query(&config, &Request::Counts).await?;
            let rows: Vec<CountRow> = serde_json::from_value(value)?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else if rows.is_empty() {
                println!("no relationships");
            } else {
                let total: u64 = rows.iter().map(|r| r.count).sum();
                for r in &rows {
                    println!("{:<12} {:<20} {:>8}", r.partner, r.state, r.count);
                }
                println!("{:<12} {:<20} {:>8}", "", "total", total);
            }
        }
    }
    Ok(())
}

/// One line of `check-config`.
#[derive(serde::Serialize)]
struct Check {
    /// `config`, `templates`, `imap` or `smtp`.
    check: &'static str,
    /// What was checked: a file, or an account and its server.
    target: String,
    ok: bool,
    /// Why it failed.
    error: Option<String>,
    /// What the operator should know although it passed (a server quirk
    /// Liaison works around).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl Check {
    fn new(check: &'static str, target: String, result: Result<(), String>) -> Check {
        Check {
            check,
            target,
            ok: result.is_ok(),
            error: result.err(),
            note: None,
        }
    }
}

async fn check_config(path: &Path, offline: bool, json: bool) -> Result<()> {
    let mut checks = Vec::new();
    let config = Config::load(path);
    let target = path.display().to_string();
    match config {
        Err(e) => checks.push(Check::new("config", target, Err(e.to_string()))),
        Ok(config) => {
            // On stderr: a valid config still passes, and stdout stays
            // one line per check.
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            checks.push(Check::new(
                "config",
                format!(
                    "{target} ({} inbox(es), {} partner(s))",
                    config.inboxes.len(),
                    config.partners.len()
                ),
                Ok(()),
            ));
            checks.push(Check::new(
                "templates",
                format!(
                    "{} ({} templates in {})",
                    config.templates_dir.display(),
                    TemplateName::ALL.len(),
                    SUPPORTED_LOCALES.join(", ")
                ),
                Templates::load(&config.templates_dir)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ));
            if !offline {
                // All at once: an unreachable server costs its timeout once.
                let imap = futures::future::join_all(config.inboxes.iter().map(check_imap));
                let (imap, smtp) = tokio::join!(imap, check_smtp(&config.smtp));
                for (inbox, result) in config.inboxes.iter().zip(imap) {
                    let (result, note) = match result {
                        Ok(note) => (Ok(()), note),
                        Err(e) => (Err(e), None),
                    };
                    checks.push(Check {
                        note,
                        ..Check::new(
                            "imap",
                            format!(
                                "{} ({} at {}:{}, mailbox {})",
                                inbox.name, inbox.username, inbox.host, inbox.port, inbox.mailbox
                            ),
                            result,
                        )
                    });
                }
                checks.push(Check::new(
                    "smtp",
                    format!("{}:{}", config.smtp.host, config.smtp.port),
                    smtp,
                ));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string(&checks)?);
    } else {
        for c in &checks {
            match &c.error {
                None => match &c.note {
                    None => println!("{} {}: ok", c.check, c.target),
                    Some(note) => println!("{} {}: ok ({note})", c.check, c.target),
                },
                Some(e) => println!("{} {}: FAILED: {e}", c.check, c.target),
            }
        }
        if offline {
            println!("(--offline: no connection to the mail servers was tried)");
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

/// Logs in, opens the mailbox, logs out; says how processed mail will be
/// marked when the server needs the fallback to moves (no custom
/// keywords), which needs a read-write SELECT to see.
async fn check_imap(cfg: &InboxConfig) -> Result<Option<String>, String> {
    if let liaison::config::ProcessedMark::Keyword(_) = cfg.processed {
        return liaison::imap::check_mailbox(cfg)
            .await
            .map_err(|e| e.to_string());
    }
    check_imap_read_only(cfg).await.map(|()| None)
}

/// Logs in, opens the mailbox read-only, logs out.
async fn check_imap_read_only(cfg: &InboxConfig) -> Result<(), String> {
    let mut session = liaison::imap::connect(cfg)
        .await
        .map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(cfg.timeout_secs);
    let opened = match tokio::time::timeout(limit, session.examine(&cfg.mailbox)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot open mailbox {}: {e}", cfg.mailbox)),
        Err(_) => Err(format!(
            "opening mailbox {} took longer than {} s",
            cfg.mailbox, cfg.timeout_secs
        )),
    };
    let _ = tokio::time::timeout(limit, session.logout()).await;
    opened
}

/// Connects (EHLO, STARTTLS or TLS, AUTH when configured) and sends NOOP.
async fn check_smtp(cfg: &SmtpConfig) -> Result<(), String> {
    let reason = |e: liaison::smtp::SmtpError| match e {
        liaison::smtp::SmtpError::Setup { reason, .. } => reason,
        other => other.to_string(),
    };
    let mailer = liaison::smtp::Mailer::new(cfg).map_err(reason)?;
    match mailer.check().await {
        Ok(true) => Ok(()),
        Ok(false) => Err("the server did not answer NOOP".into()),
        Err(e) => Err(reason(e)),
    }
}

fn render(config: &Config, template: &str, locale: &str, eml: bool, json: bool) -> Result<()> {
    let name = TemplateName::parse(template)
        .with_context(|| format!("`{template}` is not a template name"))?;
    let templates = Templates::load(&config.templates_dir)?;
    let vars = name.sample_vars();
    if eml {
        let plan = sample_plan(config, name, locale, vars);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The envelope sender (keyed) is not part of what is printed.
        let ids = liaison::token::IdKey::new(config.security.token_secret.expose().as_bytes());
        let mail = liaison::compose::compose(config, &templates, &ids, &plan, now)?;
        print!("{}", mail.raw);
        return Ok(());
    }
    let r = templates.render(name, locale, &vars)?;
    if json {
        let v = serde_json::json!({"subject": r.subject, "text": r.text, "html": r.html});
        println!("{v}");
    } else {
        println!("Subject: {}\n", r.subject);
        println!("----- text/plain -----\n{}", r.text.trim_end());
        match &r.html {
            Some(html) => println!("----- text/html -----\n{}", html.trim_end()),
            None => println!("----- text/html -----\n(this template has no HTML part)"),
        }
    }
    Ok(())
}

/// A mail plan as the workflow would make it, filled with sample values.
fn sample_plan(
    config: &Config,
    name: TemplateName,
    locale: &str,
    vars: serde_json::Value,
) -> liaison::workflow::MailPlan {
    use liaison::workflow::Sender;
    // The recipient follows the naming: `*_desk` to the support desk,
    // `*_partner` and the transcript to the partner, the rest to the customer.
    let stem = name.as_str();
    let (to, from) = if stem.ends_with("_desk") {
        (config.addresses.support_desk.clone(), Sender::Commands)
    } else if stem.ends_with("_partner") || name == TemplateName::Transcript {
        (config.partners[0].emails[0].clone(), Sender::Commands)
    } else {
        let customer = vars["customer_email"]
            .as_str()
            .unwrap_or("customer@example.com");
        (customer.to_string(), Sender::Invitations)
    };
    let reply_to = matches!(name, TemplateName::Invitation | TemplateName::Restore)
        .then(|| vars["reply_address"].as_str().map(str::to_string))
        .flatten();
    liaison::workflow::MailPlan {
        template: name,
        locale: locale.to_string(),
        to: vec![to],
        from,
        reply_to,
        message_id: format!(
            "preview.{}@{}",
            name.as_str(),
            config.addresses.message_id_domain()
        ),
        in_reply_to: None,
        references: vec![],
        vars,
        invitation: None,
        ticket: None,
        attachments: vec![],
    }
}

/// Prints a list the daemon or the store answered: as JSON with `json`,
/// else one `line` per row, or `empty` when there is none.
fn print_list(
    value: &serde_json::Value,
    json: bool,
    empty: &str,
    line: impl Fn(&serde_json::Value) -> String,
) {
    if json {
        println!("{value}");
        return;
    }
    let rows = value.as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() {
        println!("{empty}");
    }
    for r in rows {
        println!("{}", line(r));
    }
}

/// Asks the running daemon over its socket, for a request only the engine
/// can answer; `what` says what needs the daemon, for the error when none
/// runs.
async fn ask_daemon(config: &Config, req: &Request, what: &str) -> Result<serde_json::Value> {
    anyhow::ensure!(
        config.admin_socket.exists(),
        "the daemon is not running (no {}); start it to {what}",
        config.admin_socket.display()
    );
    Ok(liaison::admin::request(&config.admin_socket, req).await?)
}

/// Asks the running daemon over its socket, or reads the store directly
/// when no daemon runs.
/// Prints what `held show` or `quarantine show` answered: the record, the
/// mail's headers, its text and its attachments, every line of it through
/// [`printable`] (it is what someone else wrote).
fn print_mail_content(v: &serde_json::Value, json: bool) {
    if json {
        println!("{v}");
        return;
    }
    let field = |name: &str, value: &serde_json::Value| {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
            serde_json::Value::Null => return,
            other => other.to_string(),
        };
        println!("{name}: {}", printable(&text));
    };
    for (label, key) in [
        ("id", "id"),
        ("key", "key"),
        ("at", "at"),
        ("reason", "reason"),
        ("kept", "kept"),
        ("to", "to"),
        ("subject", "subject"),
        ("from", "from"),
        ("from name", "from_name"),
        ("other from", "other_from"),
        ("recipients", "recipients"),
        ("mail subject", "mail_subject"),
        ("message-id", "message_id"),
        ("authentication-results", "authentication_results"),
        ("unreadable", "unreadable"),
    ] {
        if let Some(value) = v.get(key) {
            field(label, value);
        }
    }
    for a in v["attachments"].as_array().into_iter().flatten() {
        println!(
            "attachment: {} ({}, {} bytes)",
            printable(a["name"].as_str().unwrap_or("")),
            printable(a["content_type"].as_str().unwrap_or("")),
            a["bytes"]
        );
    }
    if let Some(text) = v["text"].as_str() {
        println!();
        for line in text.lines() {
            println!("  {}", printable(line));
        }
    } else if v["kept"] == false {
        println!("\n(the mail itself was not kept in the store)");
    }
}

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

/// What became of one data row of an import, as printed.
#[derive(serde::Serialize)]
struct RowReport {
    /// Line of the file where the row starts.
    line: usize,
    /// The row's `email` cell as written.
    email: String,
    /// The command the row became (or would have).
    command: String,
    /// Whether the customer was invited.
    ok: bool,
    /// What happened, or why not.
    result: String,
}

/// `liaison import`: invitations in bulk, through the running daemon or, when
/// none runs, straight into the store (the mails go out at the next start).
/// Every data row gets a report; the exit status is non-zero when any failed.
async fn import(
    config: &Config,
    file: &std::path::Path,
    partner: &str,
    draft: bool,
    json: bool,
) -> Result<()> {
    anyhow::ensure!(
        config.partner(partner).is_some(),
        "no partner `{partner}` in the configuration"
    );
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let rows = liaison::import::parse(&bytes)
        .with_context(|| format!("cannot import {}", file.display()))?;
    let total = rows.len();
    let mut reports: Vec<Option<RowReport>> = Vec::with_capacity(total);
    // Rows the daemon checks and runs, with their index in `reports`.
    let mut runnable = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        match row.cells {
            Ok(cells) => {
                runnable.push((i, row.line, cells));
                reports.push(None);
            }
            Err(problem) => reports.push(Some(RowReport {
                line: row.line,
                command: format!("invite {}", row.email),
                email: row.email,
                ok: false,
                result: problem.to_string(),
            })),
        }
    }
    let mut done = total - runnable.len();
    let keys = liaison::import::BatchKeys::new(
        config.security.token_secret.expose().as_bytes(),
        partner,
        draft,
        &bytes,
    );
    let mut local: Option<(
        std::sync::Arc<liaison::engine::Engine>,
        tokio::sync::watch::Sender<u64>,
    )> = None;
    for (n, chunk) in runnable.chunks(liaison::command::MAX_COMMANDS).enumerate() {
        let key = keys.key(n);
        let cells: Vec<liaison::import::InviteRow> =
            chunk.iter().map(|(_, _, c)| c.clone()).collect();
        let req = Request::Import {
            partner: partner.to_string(),
            rows: cells,
            draft,
            key: key.clone(),
        };
        let value = if config.admin_socket.exists() {
            match liaison::admin::request(&config.admin_socket, &req).await {
                Ok(v) => Some(v),
                Err(liaison::admin::AdminError::Io { .. }) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let value = match value {
            Some(v) => v,
            None => {
                if local.is_none() {
                    let store: std::sync::Arc<dyn liaison::store::Store> =
                        std::sync::Arc::new(liaison::store::SledStore::open(
                            &config.store.path,
                            config.store.cache_capacity_bytes,
                            &config.admin_socket,
                        )?);
                    let templates = liaison::templates::Templates::load(&config.templates_dir)?;
                    let engine = liaison::engine::Engine::new(
                        std::sync::Arc::new(config.clone()),
                        store,
                        templates,
                        std::sync::Arc::new(liaison::clock::SystemClock),
                    );
                    local = Some((
                        std::sync::Arc::new(engine),
                        tokio::sync::watch::channel(0).0,
                    ));
                }
                let (engine, durable) = local.as_ref().expect("set above");
                let Request::Import {
                    partner,
                    rows,
                    draft,
                    key,
                } = &req
                else {
                    unreachable!("built above")
                };
                liaison::admin::import_batch(engine, durable, partner, rows, *draft, key)
                    .map_err(anyhow::Error::msg)?
            }
        };
        let results: Vec<liaison::engine::CommandResult> = serde_json::from_value(value)?;
        anyhow::ensure!(
            results.len() == chunk.len(),
            "batch {key}: {} results for {} rows",
            results.len(),
            chunk.len()
        );
        for ((i, line, cells), r) in chunk.iter().zip(results) {
            reports[*i] = Some(RowReport {
                line: *line,
                email: cells.email.clone(),
                command: r.command,
                ok: r.ok,
                result: r.result,
            });
        }
        done += chunk.len();
        if !json {
            eprint!("\rimporting: {done}/{total} rows");
        }
    }
    let reports: Vec<RowReport> = reports
        .into_iter()
        .map(|r| r.expect("every row is reported: malformed ones above, the rest per batch"))
        .collect();
    let ok = reports.iter().filter(|r| r.ok).count();
    let failed = total - ok;
    if json {
        println!("{}", serde_json::to_string(&reports)?);
    } else {
        eprintln!();
        for r in &reports {
            let status = if r.ok { "ok" } else { "FAILED" };
            println!("{status:<7} {} (line {}): {}", r.command, r.line, r.result);
        }
        println!("{ok} of {total} rows invited, {failed} failed");
    }
    anyhow::ensure!(failed == 0, "{failed} of {total} row(s) failed");
    Ok(())
}

/// Prints relationships as a table, or as JSON.
fn print_status_rows(rows: &[StatusRow], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(rows)?);
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
    Ok(())
}
