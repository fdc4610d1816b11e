//! `liaison deliver`: MTA pipe delivery (see [`liaison::deliver`]).

use std::path::Path;

/// Runs `liaison deliver --inbox INBOX` and exits with its sysexits status:
/// the MTA reads nothing else. An unreadable configuration is an
/// operator's fix away, so the MTA keeps the mail and retries (75).
pub async fn deliver(path: &Path, inbox: &str) -> ! {
    let status = match liaison::files::load_config(path) {
        Ok(config) => liaison::deliver::run(&config, inbox).await as i32,
        Err(e) => {
            println!("liaison deliver: {e}");
            liaison::deliver::ExitStatus::TempFail as i32
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(status);
}
