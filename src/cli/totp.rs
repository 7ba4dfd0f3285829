//! `nbgate totp …`: enrol a user's TOTP second factor from the command line,
//! remove it, or make new recovery codes. Parsing only, as the rest of
//! `cli`; `main` runs it with `auth::second_factor`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Where the state directory is: `--state-dir`, else the configuration's
/// `server.state_dir`, else the default.
#[derive(Debug, Args)]
pub struct TotpTarget {
    /// The user (a `[[users]]` name, or the single-password user).
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Configuration file (TOML): its `server.state_dir` and users.
    #[arg(short, long, env = "NBGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// State directory, replacing the configuration's.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TotpCommand {
    /// Make a TOTP secret for a user: prints the otpauth:// URI, a QR code
    /// for an authenticator app and ten recovery codes (shown once, stored
    /// hashed), and keeps the secret in the state directory (mode 0600).
    /// The running server asks for a code from the user's next login on.
    Enroll {
        #[command(flatten)]
        target: TotpTarget,
        /// Print only the base32 secret on stdout (the URI, QR code and
        /// recovery codes go to stderr), for a `totp_secret_file` the
        /// configuration names; the state directory then keeps only the
        /// recovery codes and the last step used.
        #[arg(long)]
        print_secret: bool,
        /// Replace an existing enrolment (the old authenticator entry and
        /// recovery codes stop working).
        #[arg(long)]
        force: bool,
    },
    /// Remove a user's TOTP enrolment (a `required` user enrols again at
    /// the next login).
    Disable {
        #[command(flatten)]
        target: TotpTarget,
    },
    /// Make ten new recovery codes for an enrolled user (the old ones stop
    /// working) and print them.
    RecoveryCodes {
        #[command(flatten)]
        target: TotpTarget,
    },
}
