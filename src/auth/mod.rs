//! Authentication: password hashes, sessions, the login flow.

pub mod next_path;
