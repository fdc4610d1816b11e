//! The `liaison` command line: runs the daemon and answers questions about
//! its state. Thin on purpose: parse arguments, set up logging, call the
//! library.

mod cli;

use clap::Parser as _;
use liaison::io::admin::printable;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("liaison: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
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
