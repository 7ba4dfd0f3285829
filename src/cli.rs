//! The command line: what each subcommand takes. Parsing only; `main`
//! decides what to run.
//!
//! No option takes a secret: passwords, tokens and keys come from files,
//! the environment or the terminal, because argv is visible to every user
//! of the machine (`ps`, `/proc/PID/cmdline`) and lands in shell history.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// totp (issue 22 §1)
mod totp;
pub use totp::{TotpCommand, TotpTarget};

#[derive(Debug, Parser)]
#[command(name = "nbgate", version, about = "A hardened HTTPS gate in front of Jupyter", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (TOML). Without one, embedded defaults apply.
        #[arg(short, long, env = "NBGATE_CONFIG")]
        config: Option<PathBuf>,
        /// HTTPS listen address, replacing server.listen (e.g. 0.0.0.0:8443).
        #[arg(long)]
        listen: Option<String>,
        /// Jupyter's address: http://127.0.0.1:8888 or unix:/path/to/jupyter.sock.
        #[arg(long)]
        upstream: Option<String>,
        /// Where generated certificates and keys are kept.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// A trusted certificate for this public IP address from Let's
        /// Encrypt (ACME, `shortlived` profile): sets tls.mode = "acme" and
        /// tls.acme.domains = [ADDR]. The CA validates on port 443
        /// (tls-alpn-01) or 80 (http-01) of that address.
        #[arg(long, value_name = "ADDR")]
        acme_ip: Option<String>,
    },
    /// Start Jupyter as a child on a private Unix socket with a fresh token
    /// nbgate injects, and serve it: `nbgate run [OPTIONS] -- jupyter lab [ARGS…]`.
    Run {
        /// Configuration file (TOML). Without one, embedded defaults apply.
        #[arg(short, long, env = "NBGATE_CONFIG")]
        config: Option<PathBuf>,
        /// HTTPS listen address, replacing server.listen (e.g. 0.0.0.0:8443).
        #[arg(long)]
        listen: Option<String>,
        /// Where generated certificates and keys are kept.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// A trusted certificate for this public IP address from Let's
        /// Encrypt (ACME, `shortlived` profile): sets tls.mode = "acme" and
        /// tls.acme.domains = [ADDR]. The CA validates on port 443
        /// (tls-alpn-01) or 80 (http-01) of that address.
        #[arg(long, value_name = "ADDR")]
        acme_ip: Option<String>,
        /// Run Jupyter as this user (nbgate keeps its own privileges).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Run Jupyter as root when nbgate runs as root and no --user is given.
        #[arg(long)]
        allow_root: bool,
        /// The Jupyter command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<std::ffi::OsString>,
    },
    /// Print the nbgate configuration equivalent to an nginx server block
    /// written for Jupyter, with a comment for every directive not mapped.
    ImportNginx {
        /// The nginx configuration file.
        file: PathBuf,
    },
    /// Print a PBKDF2 hash (PHC string) of a password or API token for the
    /// config. Reads it twice from the terminal with echo off, or once from
    /// stdin when stdin is not a terminal; never from the command line.
    HashPassword,
    /// Make a new session-cookie key; the previous key stays valid for
    /// verification, so nobody is logged out. Restart nbgate afterwards.
    RotateSessionKey {
        /// State directory (default: the documented default).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Validate a configuration and print the effective settings (secrets redacted).
    CheckConfig {
        /// Configuration file (TOML). Without one, embedded defaults are shown.
        #[arg(short, long, env = "NBGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Read audit files (`[audit] file`): verify their chain, show their events.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A user's TOTP second factor: enroll, disable, new recovery codes.
    Totp {
        #[command(subcommand)]
        command: TotpCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that audit files form one unbroken chain (the current file and
    /// rotated ones, named in any order: `audit.jsonl*`); exits 1 naming the
    /// first line that was changed, removed or moved.
    Verify {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the events of audit files as a table (does not verify).
    Show {
        /// Only this user's events.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only events at or after this time: 2025-01-31, 2025-01-31T10:00:00Z,
        /// or a duration back from now (2h, 1d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only events of this kind (file_save, code_execute, …).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}
