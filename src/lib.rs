//! nbgate: a hardened HTTPS gate in front of Jupyter.
//!
//! # Layout
//! - `cli`: the command line (clap); parsing only.
//! - `config`: TOML file -> validated `Config` (`config::raw` the serde structs, `config::load`
//!   file and environment reads, one file per section's type and validation); imports nothing
//!   else of the crate. `Config::load` is the one path for a start and a reload.
//! - `state`: the state directory; private, atomic file writes.
//! - `tls`: rustls server config, certificate resolver, self-signed and file certificates
//!   (re-read when the files change), ACME certificates with their challenges and renewal;
//!   `tls::Maintenance` keeps the certificate current; `tls::client` the HTTPS connector of
//!   nbgate's own outgoing clients (ACME, single sign-on).
//! - `reload`: SIGHUP re-reads the whole configuration (the same validation as a start),
//!   prepares users and certificate, then swaps the request path's configuration
//!   (`proxy::Gateway::reload`) with nothing dropped; owns `tls::Maintenance`.
//! - `auth`: passwords and API tokens (verified off the executor), session cookies, their
//!   revocation, the in-memory list of each user's active sessions for the sessions page
//!   (`auth::active`), CSRF tokens, the `next=` sanitizer; decisions only, no responses.
//!   Passkeys (issue 22 §2): `auth::passkey` the WebAuthn ceremonies and per-user credential
//!   files, `pages::passkey` the button, page and script, `proxy::own_pages::passkey` the routes.
//!   The TOTP second factor: codes and recovery codes (`auth::totp`), each user's state file
//!   (`auth::second_factor`), the sealed pending login between password and code
//!   (`auth::pending`); its pages are `pages::totp` and `pages::account`, its routes
//!   `proxy::own_pages::{totp, account}`.
//!   `auth::sealed`: the one AEAD sealer of cookie values (pending login, SSO flow).
//!   `auth::oidc`: single sign-on with OpenID Connect (discovery, the sealed flow cookie,
//!   ID token checks, allow lists), its HTTP client over `tls::client`.
//! - `policy`: allow/deny lists, client address behind proxies, PROXY protocol, rate limits, lockout.
//! - `proxy`: the request path (`Gateway::handle`), header rules (with the user's name for a
//!   JupyterHub, `upstream.identity_header`), upstream client (`proxy::upstream`
//!   the keep-alive pool, `proxy::h1` one HTTP/1.1 exchange, `proxy::transport` the byte stream),
//!   WebSocket tunnels, the filter every upstream answer passes (`proxy::response`, with the
//!   streaming token scrubber), the signed user header that replaces Jupyter's token under
//!   `nbgate run` (`proxy::upstream_identity`), Jupyter's reachability for health checks
//!   (`proxy::health`).
//! - `pages`: HTML pages and JSON error bodies a client sees.
//! - `server`: listeners, accept loops (each connection served by the least-loaded worker
//!   thread), TLS handshakes under timeouts, graceful shutdown; `server::http2` serves
//!   connections that negotiated h2 on the `h2` crate directly, WebSockets over HTTP/2
//!   (RFC 8441) included (`server::h2_stream` one stream as a byte stream; `server::coalesce` gathers
//!   what one poll of such a connection writes into one TLS write; `server::frame_budget`
//!   closes one that floods frames carrying no requests), hyper's HTTP/1.1 server the
//!   others (HTTP/2 without ALPN is refused); `server::send_deadline` closes a connection
//!   whose client takes nothing for `server.send_timeout`; `server::admin` the admin listener
//!   (`/metrics`, `/health`; plain on loopback, else TLS + bearer token).
//! - `telemetry`: logging setup (its level changes at a reload); access and audit targets.
//! - `audit`: the operation audit (who opened, saved, ran what): HTTP requests classified
//!   (`audit::classify`, JSON bodies read as they stream by `audit::json_scan`), the code of
//!   kernel `execute_request`s and terminal lines read from the frames a client sends
//!   (`audit::kernel_frames`, `audit::tap`), events to the log and to the chained,
//!   rotated audit file (`audit::file`, its writer a thread behind a bounded queue), and
//!   `nbgate audit verify|show` (`audit::verify`). Observes, never changes, what Jupyter
//!   receives; imports `config`, `metrics` and `ws_frame` only.
//! - `metrics`: Prometheus counters (per-thread shards on the request path) and their text
//!   exposition; imports nothing else of the crate, so any module may count.
//! - `jupyter`: Jupyter's own files, read only: runtime files (a running
//!   server's token) and the password hash `jupyter server password` stores;
//!   `jupyter::identity` the signed user header nbgate's identity provider
//!   for Jupyter (`python/nbgate_identity.py`) verifies.
//! - `supervisor`: `nbgate run`: Jupyter as a child on a private Unix socket
//!   with a fresh token and nbgate's identity provider; signals, reaping,
//!   readiness. `main` wires it to
//!   `server::run`; it imports neither.
//! - `nginx_import`: `nbgate import-nginx`: an nginx config written for Jupyter -> nbgate TOML.
//! - `ws_frame`: the WebSocket frame header (RFC 6455 §5.2), read by the tunnel's frame
//!   tracker and the audit's frame reader; imports nothing else of the crate.
//! - `systemd`: the notify protocol (ready, reloading, stopping, status, the watchdog
//!   with its liveness probe of workers and accept loops) and socket activation;
//!   imports nothing else of the crate.
//!
//! Dependencies point one way: `server -> proxy -> pages -> (nothing)`,
//! `proxy -> audit -> config`,
//! `server -> reload -> (proxy, tls, auth, telemetry, systemd)` (the reload
//! tells systemd), `supervisor -> reload` (only its `Source` type),
//! `server -> tls -> state`, `server -> systemd`, `auth -> tls` (the SSO
//! client's HTTPS connector, `tls::client`), everything may call
//! `metrics` and read `config`; inside `proxy`, `upstream -> h1 -> transport`.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod jupyter;
pub mod metrics;
pub mod nginx_import;
pub mod pages;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod state;
pub mod supervisor;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod ws_frame;
