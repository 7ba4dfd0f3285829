//! `nbgate import-nginx FILE`: reads the nginx configuration people write for Jupyter and
//! returns the equivalent nbgate configuration as TOML, with one comment line for every
//! directive it did not map and why.
//!
//! Owns the meaning of nginx directives for this purpose: which `server` block proxies to
//! Jupyter (and which one only redirects port 80), `upstream` names behind `proxy_pass`,
//! `allow`/`deny` order, `limit_req_zone` rates, nginx time and size syntax, and checking the
//! hashes of an `auth_basic_user_file` against what nbgate accepts. The syntax itself lives in
//! `parser`.
//!
//! Must not: follow `include` lines, rewrite any file (the htpasswd file is only read to warn
//! about users nbgate would refuse), or print a key that `config` does not know. The output is
//! validated with [`Config::from_text`] before it is returned, so a bug here shows as an error,
//! not as a configuration that `check-config` refuses.

mod parser;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::auth::password::StoredHash;
use crate::config::{parse_cidr, parse_upstream, valid_user_name, Config, ConfigError};

pub use parser::{Directive, SyntaxError};

/// Where nginx resolves relative paths (its `--prefix`) on Debian, Ubuntu, RHEL and the
/// official packages; `nginx -V` shows a different one.
const NGINX_PREFIX: &str = "/etc/nginx";

/// nbgate's default WebSocket idle timeout. A `proxy_read_timeout` below it is not copied:
/// it would cut idle kernels (nginx's 60 s default is the usual cause of dropped kernels).
const NBGATE_WEBSOCKET_IDLE: Duration = Duration::from_secs(3600);

/// Errors reading or converting an nginx configuration. Each displays as one line that names
/// the file and, where there is one, the line.
///
/// The syntax and conversion variants carry their message as text rather than a `#[source]`:
/// the binary prints the whole error chain, and the message already holds the cause, so a
/// source would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("{}: cannot read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid nginx syntax (unbalanced braces, unterminated quote, missing `;` ...).
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// No `proxy_pass` anywhere: there is no Jupyter address to forward to.
    #[error(
        "{}:{line}: no proxy_pass found in any server block: nbgate needs Jupyter's address",
        path.display()
    )]
    NoProxyPass { path: PathBuf, line: usize },
    /// A directive nbgate cannot express safely (a `proxy_pass` built from variables, an
    /// address that is not one, access rules that refuse everyone).
    #[error("{}:{line}: {message}", path.display())]
    Unconvertible {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The converted text did not validate: a bug in this module, reported rather than printed.
    #[error("{}: the converted configuration does not validate (a bug in import-nginx)", path.display())]
    InvalidOutput {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
}

/// Reads an nginx configuration and returns the equivalent nbgate TOML.
///
/// # Errors
/// Unreadable file, syntax error, no `proxy_pass`, or a directive that cannot be converted
/// safely; each names the file and line.
pub fn convert_file(path: &Path) -> Result<String, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    convert_text(&text, path)
}

/// [`convert_file`] on text already read; `path` is used in messages and the header comment.
///
/// # Errors
/// As [`convert_file`].
pub fn convert_text(text: &str, path: &Path) -> Result<String, ImportError> {
    let tree = parser::parse(text).map_err(|e| ImportError::Syntax {
        path: path.to_path_buf(),
        line: e.line,
        message: e.message,
    })?;
    let mut conv = Converter::new(path);
    conv.run(&tree)?;
    let out = conv.render(&tree);
    Config::from_text(&out, path).map_err(|source| ImportError::InvalidOutput {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(out)
}

/// One key of the output with the nginx line it came from.
struct Key {
    /// `server`, `tls`, `upstream`, `auth`, `policy` or `policy.rate_limit`.
    section: &'static str,
    name: &'static str,
    value: toml::Value,
    /// `line N: directive`, shown above the key.
    from: String,
}

/// A directive not mapped, with the reason.
struct Note {
    line: usize,
    text: String,
    why: String,
}

/// An address nbgate will listen on, with where it came from.
struct Listener {
    addr: SocketAddr,
    from: String,
}

/// The conversion's state: what has been mapped so far and what was noted.
struct Converter<'a> {
    path: &'a Path,
    keys: Vec<Key>,
    notes: Vec<Note>,
    warnings: Vec<String>,
    /// Directives already mapped or noted (by address): the final sweep notes the rest.
    handled: HashSet<usize>,
    https: Vec<Listener>,
    http: Vec<Listener>,
    upstreams: HashMap<String, &'a Directive>,
    req_zones: HashMap<String, &'a Directive>,
    conn_zones: HashMap<String, &'a Directive>,
    /// Every `proxy_read_timeout` read for Jupyter, with its value: the longest one decides.
    read_timeouts: Vec<(Duration, &'a Directive)>,
}

/// Which part of the file a directive is read in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `http { }` or the top of a sites-enabled file, inherited by the server.
    Http,
    /// Jupyter's `server { }` block.
    Server,
    /// The `location` whose `proxy_pass` is Jupyter and that decides the path prefix.
    MainLocation,
    /// Another `location` that proxies to Jupyter (the WebSocket regex ones).
    OtherLocation,
}

fn id(d: &Directive) -> usize {
    std::ptr::from_ref(d) as usize
}

fn from(d: &Directive) -> String {
    format!("line {}: {}", d.line, d.display())
}

impl<'a> Converter<'a> {
    fn new(path: &'a Path) -> Self {
        Converter {
            path,
            keys: Vec::new(),
            notes: Vec::new(),
            warnings: Vec::new(),
            handled: HashSet::new(),
            https: Vec::new(),
            http: Vec::new(),
            upstreams: HashMap::new(),
            req_zones: HashMap::new(),
            conn_zones: HashMap::new(),
            read_timeouts: Vec::new(),
        }
    }

    fn unconvertible(&self, d: &Directive, message: String) -> ImportError {
        ImportError::Unconvertible {
            path: self.path.to_path_buf(),
            line: d.line,
            message,
        }
    }

    fn key(
        &mut self,
        section: &'static str,
        name: &'static str,
        value: toml::Value,
        origin: String,
    ) {
        self.keys
            .retain(|k| !(k.section == section && k.name == name));
        self.keys.push(Key {
            section,
            name,
            value,
            from: origin,
        });
    }

    fn mapped(&mut self, d: &Directive) {
        self.handled.insert(id(d));
    }

    fn note(&mut self, d: &Directive, why: impl Into<String>) {
        if self.handled.insert(id(d)) {
            self.notes.push(Note {
                line: d.line,
                text: match d.block {
                    Some(_) => format!("{} {{ ... }}", d.display()),
                    None => d.display(),
                },
                why: why.into(),
            });
        }
    }

    /// Notes a whole block once and marks everything inside it handled.
    fn note_block(&mut self, d: &Directive, why: impl Into<String>) {
        self.note(d, why);
        self.mark_tree(d.children());
    }

    fn mark_tree(&mut self, ds: &[Directive]) {
        for d in ds {
            self.handled.insert(id(d));
            self.mark_tree(d.children());
        }
    }

    fn run(&mut self, tree: &'a [Directive]) -> Result<(), ImportError> {
        // The http level: the contents of `http { }`, or the top of a file that nginx
        // includes inside `http` (sites-enabled/*.conf).
        let mut http_level: Vec<&'a Directive> = Vec::new();
        for d in tree {
            match d.name.as_str() {
                "http" => {
                    self.mapped(d);
                    http_level.extend(d.children());
                }
                "events" => self.note_block(
                    d,
                    "nbgate runs one worker thread per core and caps connections with server.max_connections",
                ),
                "stream" | "mail" => self.note_block(d, "not HTTP: nbgate forwards HTTP and WebSockets to Jupyter only"),
                "user" | "worker_processes" | "worker_rlimit_nofile" | "worker_cpu_affinity"
                | "pid" | "daemon" | "master_process" | "load_module" | "env" | "pcre_jit"
                | "thread_pool" | "timer_resolution" | "worker_priority" | "lock_file" => self.note(
                    d,
                    "nginx process setting: nbgate runs as the user that starts it (see the systemd unit), one worker per core",
                ),
                _ => http_level.push(d),
            }
        }
        for &d in &http_level {
            match d.name.as_str() {
                "upstream" => {
                    self.upstreams.insert(d.arg0().to_owned(), d);
                }
                "limit_req_zone" => {
                    if let Some(zone) = zone_name(d) {
                        self.req_zones.insert(zone, d);
                    }
                }
                "limit_conn_zone" => {
                    if let Some(zone) = zone_name(d) {
                        self.conn_zones.insert(zone, d);
                    }
                }
                _ => {}
            }
        }
        let servers: Vec<&'a Directive> = http_level
            .iter()
            .copied()
            .filter(|d| d.name == "server" && d.block.is_some())
            .collect();
        let jupyter = servers
            .iter()
            .copied()
            .filter(|s| proxy_pass_in(s.children()).is_some())
            .max_by_key(|s| (is_tls_server(s), std::cmp::Reverse(s.line)))
            .ok_or_else(|| ImportError::NoProxyPass {
                path: self.path.to_path_buf(),
                line: servers.first().map_or(1, |s| s.line),
            })?;
        let jupyter_names: Vec<&str> = server_names(jupyter);

        for &d in &http_level {
            match d.name.as_str() {
                "server" if std::ptr::eq(d, jupyter) => {}
                "server" => self.other_server(d, &jupyter_names),
                "map" if d.args.iter().any(|a| a == "$http_upgrade") => self.note_block(
                    d,
                    "nbgate forwards WebSockets itself; no Upgrade/Connection map is needed",
                ),
                _ => {}
            }
        }

        // Directives at the http level are inherited by the server; read them first so that
        // the server's own settings replace them, as in nginx.
        let inherited: Vec<&'a Directive> = http_level
            .iter()
            .copied()
            .filter(|d| {
                !matches!(
                    d.name.as_str(),
                    "server" | "upstream" | "map" | "limit_req_zone" | "limit_conn_zone"
                )
            })
            .collect();
        let mut access: Vec<&'a Directive> = Vec::new();
        for d in inherited {
            self.directive(d, Scope::Http, &mut access);
        }
        self.jupyter_server(jupyter, &mut access)?;
        self.access_rules(&access)?;

        for (name, d) in self.upstreams.clone() {
            if !self.handled.contains(&id(d)) {
                self.note_block(
                    d,
                    format!("upstream {name} is not the one Jupyter's proxy_pass uses"),
                );
            }
        }
        // `note` skips the zones that a limit_req or limit_conn already mapped.
        for d in self.req_zones.clone().into_values() {
            self.note(d, "no limit_req in Jupyter's server uses this zone");
        }
        for d in self.conn_zones.clone().into_values() {
            self.note(d, "no limit_conn in Jupyter's server uses this zone");
        }
        Ok(())
    }

    /// A `server` block that is not Jupyter's: a port-80 redirect becomes `server.http_listen`;
    /// anything else is noted once.
    fn other_server(&mut self, d: &'a Directive, jupyter_names: &[&str]) {
        if proxy_pass_in(d.children()).is_some() {
            let names = server_names(d).join(" ");
            self.note_block(
                d,
                format!(
                    "another server block that proxies elsewhere ({}): nbgate fronts one Jupyter; run another nbgate for it",
                    if names.is_empty() { "no server_name" } else { &names }
                ),
            );
            return;
        }
        if !is_https_redirect(d) {
            self.note_block(
                d,
                "serves no Jupyter (files, other sites): nbgate only fronts Jupyter",
            );
            return;
        }
        let names = server_names(d);
        if !names.is_empty()
            && !jupyter_names.is_empty()
            && !names.iter().any(|n| jupyter_names.contains(n))
        {
            self.note_block(d, "redirects to HTTPS for other host names than Jupyter's");
            return;
        }
        self.mapped(d);
        for c in d.children() {
            match c.name.as_str() {
                "listen" => match parse_listen(&c.args) {
                    Ok(l) if !l.tls => {
                        self.mapped(c);
                        self.http.push(Listener {
                            addr: l.addr,
                            from: from(c),
                        });
                    }
                    Ok(_) => self.note(c, "a TLS listener in the redirect block: nbgate's HTTPS listeners are in server.listen"),
                    Err(why) => self.note(c, why),
                },
                "return" | "rewrite" => self.note(
                    c,
                    "nbgate's plain-HTTP listeners (server.http_listen) answer every request with a redirect to https:// (308)",
                ),
                "server_name" => self.note(c, "the redirect keeps the host name the client asked for, as $host did"),
                "location" if is_acme_location(c) => self.note_block(
                    c,
                    "ACME HTTP-01: with tls.mode = \"acme\" nbgate answers challenges on http_listen itself",
                ),
                _ => self.generic(c),
            }
        }
    }

    fn jupyter_server(
        &mut self,
        server: &'a Directive,
        access: &mut Vec<&'a Directive>,
    ) -> Result<(), ImportError> {
        self.mapped(server);
        let has_ssl_on = server
            .children()
            .iter()
            .any(|d| d.name == "ssl" && d.arg0() == "on");
        let mut listens = 0;
        let mut plain: Vec<(SocketAddr, String)> = Vec::new();
        for d in server.children() {
            if d.name == "listen" {
                listens += 1;
                match parse_listen(&d.args) {
                    Ok(l) => {
                        self.mapped(d);
                        if let Some(why) = l.note {
                            self.warnings.push(format!("{}: {why}", from(d)));
                        }
                        if l.tls || has_ssl_on {
                            self.https.push(Listener {
                                addr: l.addr,
                                from: from(d),
                            });
                        } else {
                            plain.push((l.addr, from(d)));
                        }
                    }
                    Err(why) => self.note(d, why),
                }
            }
        }
        if listens == 0 {
            plain.push((
                SocketAddr::from(([0, 0, 0, 0], 80)),
                format!(
                    "line {}: server without listen (nginx's default *:80)",
                    server.line
                ),
            ));
        }
        let had_tls = !self.https.is_empty();
        for (addr, origin) in plain {
            if had_tls || addr.port() == 80 {
                if !had_tls {
                    self.https.push(Listener {
                        addr: SocketAddr::new(addr.ip(), 443),
                        from: format!("{origin} (nbgate serves HTTPS on 443 instead)"),
                    });
                }
                self.http.push(Listener {
                    addr,
                    from: format!("{origin} (plain HTTP now only redirects to HTTPS)"),
                });
            } else {
                self.https.push(Listener {
                    addr,
                    from: format!("{origin} (plain HTTP in nginx; nbgate serves HTTPS here)"),
                });
            }
        }

        // The location that decides Jupyter's address and path prefix: `/` if it proxies,
        // else the first prefix location that does.
        let locations = all_locations(server.children());
        let main = locations
            .iter()
            .copied()
            .filter(|l| proxy_pass_here(l).is_some())
            .min_by_key(|l| {
                (
                    location_prefix(l).map_or(2, |p| usize::from(p != "/")),
                    l.line,
                )
            });
        let Some(main) = main else {
            return match proxy_pass_here(server) {
                Some(pp) => {
                    self.proxy_pass(pp, None)?;
                    self.server_directives(server, access);
                    Ok(())
                }
                None => Err(ImportError::NoProxyPass {
                    path: self.path.to_path_buf(),
                    line: server.line,
                }),
            };
        };
        let main_pp = proxy_pass_here(main).ok_or_else(|| ImportError::NoProxyPass {
            path: self.path.to_path_buf(),
            line: main.line,
        })?;
        let target = self.proxy_pass(main_pp, Some(main))?;
        self.server_directives(server, access);

        for loc in locations {
            if std::ptr::eq(loc, main) {
                self.mapped(loc);
                self.location_directives(loc, Scope::MainLocation, access);
                continue;
            }
            match proxy_pass_here(loc) {
                Some(pp) => {
                    if self.resolve(pp)?.0 == target {
                        self.note(
                            loc,
                            "nbgate forwards every path, WebSockets included, to Jupyter; no separate location is needed",
                        );
                        self.mapped(pp);
                        self.location_directives(loc, Scope::OtherLocation, access);
                    } else {
                        self.note_block(
                            loc,
                            format!("proxies to {}, not to Jupyter: nbgate forwards everything to one Jupyter", pp.arg0()),
                        );
                    }
                }
                None if proxy_pass_in(loc.children()).is_some() => self.note(
                    loc,
                    "holds the nested locations that proxy to Jupyter, converted on their own",
                ),
                None if is_acme_location(loc) => self.note_block(
                    loc,
                    "ACME challenges: with tls.mode = \"acme\" nbgate answers them itself",
                ),
                None => self.note_block(
                    loc,
                    "serves no Jupyter path (files, redirects): nbgate forwards every path to Jupyter",
                ),
            }
        }
        Ok(())
    }

    fn server_directives(&mut self, server: &'a Directive, access: &mut Vec<&'a Directive>) {
        let own_access = server
            .children()
            .iter()
            .any(|d| matches!(d.name.as_str(), "allow" | "deny"));
        if own_access {
            self.replace_access(
                access,
                "the server block's own allow/deny replace these, in nginx too",
            );
        }
        for d in server.children() {
            if d.name == "location" || d.name == "listen" {
                continue;
            }
            self.directive(d, Scope::Server, access);
        }
    }

    fn location_directives(
        &mut self,
        loc: &'a Directive,
        scope: Scope,
        access: &mut Vec<&'a Directive>,
    ) {
        if scope == Scope::MainLocation
            && loc
                .children()
                .iter()
                .any(|d| matches!(d.name.as_str(), "allow" | "deny"))
        {
            self.replace_access(
                access,
                "Jupyter's location has its own allow/deny, which replace these in nginx too",
            );
        }
        for d in loc.children() {
            if d.name == "location" {
                continue;
            }
            self.directive(d, scope, access);
        }
    }

    fn replace_access(&mut self, access: &mut Vec<&'a Directive>, why: &str) {
        for d in access.drain(..) {
            self.note(d, why);
        }
    }

    /// Maps (or notes) one directive read in `scope`.
    fn directive(&mut self, d: &'a Directive, scope: Scope, access: &mut Vec<&'a Directive>) {
        let jupyter_wide = scope != Scope::OtherLocation;
        match d.name.as_str() {
            "server_name" if scope == Scope::Server => self.server_name(d),
            "ssl_certificate" | "ssl_certificate_key" if jupyter_wide => self.certificate(d),
            "ssl" => self.note(d, "every nbgate HTTPS listener is TLS"),
            "ssl_protocols" | "ssl_ciphers" | "ssl_prefer_server_ciphers" | "ssl_ecdh_curve"
            | "ssl_conf_command" | "ssl_early_data" => self.note(
                d,
                "nbgate's TLS is fixed: TLS 1.2 and 1.3, AEAD suites with forward secrecy only",
            ),
            "ssl_dhparam" => self.note(d, "nbgate offers no finite-field DHE suites (ECDHE only)"),
            "ssl_session_cache" | "ssl_session_timeout" | "ssl_session_tickets"
            | "ssl_buffer_size" => self.note(d, "TLS session handling is built into nbgate (rustls)"),
            "ssl_stapling" | "ssl_stapling_verify" | "ssl_trusted_certificate" => self.note(
                d,
                "OCSP stapling is not done: Let's Encrypt ended OCSP in 2025 (short-lived certificates and CRLs instead)",
            ),
            "ssl_client_certificate" | "ssl_verify_client" | "ssl_verify_depth" => self.note(
                d,
                "client certificates are not supported: nbgate's login page and API tokens authenticate users",
            ),
            "resolver" | "resolver_timeout" => {
                self.note(d, "nbgate resolves no names at run time: Jupyter's address is fixed")
            }
            "add_header" if jupyter_wide => self.add_header(d),
            "add_header" => self.note(d, "per-path response headers are not mapped"),
            "allow" | "deny" => {
                if scope == Scope::OtherLocation {
                    self.note(
                        d,
                        "per-path access rules are not mapped: nbgate's policy.allow/deny apply to every path",
                    );
                } else {
                    access.push(d);
                }
            }
            "limit_req" if jupyter_wide => self.limit_req(d),
            "limit_conn" if jupyter_wide => self.limit_conn(d),
            "limit_req" | "limit_conn" => self.note(
                d,
                "per-path limits are not mapped: nbgate's limits apply per client to every path",
            ),
            "limit_req_status" | "limit_conn_status" | "limit_req_log_level"
            | "limit_conn_log_level" | "limit_req_dry_run" => self.note(
                d,
                "nbgate answers 429 with Retry-After and logs refusals to target nbgate::audit",
            ),
            "proxy_pass" => self.mapped(d),
            "proxy_read_timeout" => self.read_timeout(d),
            "proxy_connect_timeout" if jupyter_wide => match nginx_duration(d.arg0()) {
                Some(t) if !t.is_zero() => {
                    self.mapped(d);
                    self.key("upstream", "connect_timeout", duration_value(t), from(d));
                }
                _ => self.note(d, "not an nginx time"),
            },
            "send_timeout" if jupyter_wide => match nginx_duration(d.arg0()) {
                Some(t) if t >= Duration::from_secs(1) => {
                    self.mapped(d);
                    self.key("server", "send_timeout", duration_value(t), from(d));
                }
                _ => self.note(d, "not an nginx time of 1s or more"),
            },
            "proxy_send_timeout" | "send_timeout" | "client_body_timeout" => self.note(
                d,
                "nbgate streams bodies with backpressure; its own limits are server.header_read_timeout, server.send_timeout and upstream.websocket_idle_timeout",
            ),
            "client_header_timeout" if jupyter_wide => match nginx_duration(d.arg0()) {
                Some(t) if !t.is_zero() => {
                    self.mapped(d);
                    self.key("server", "header_read_timeout", duration_value(t), from(d));
                }
                _ => self.note(d, "not an nginx time"),
            },
            "keepalive_timeout" => self.note(
                d,
                "server.header_read_timeout also bounds how long an idle keep-alive connection stays",
            ),
            "large_client_header_buffers" | "client_header_buffer_size" => {
                self.note(d, "server.max_header_bytes caps request heads (default 32KiB)")
            }
            "proxy_set_header" => self.proxy_set_header(d),
            "proxy_http_version" => {
                self.note(d, "nbgate speaks HTTP/1.1 to Jupyter, keep-alive and WebSockets included")
            }
            "proxy_buffering" | "proxy_request_buffering" | "proxy_buffers" | "proxy_buffer_size"
            | "proxy_busy_buffers_size" | "proxy_max_temp_file_size" | "proxy_temp_path"
            | "chunked_transfer_encoding" | "client_body_buffer_size" | "tcp_nodelay" => self.note(
                d,
                "not needed: nbgate streams requests and responses as they arrive, with backpressure",
            ),
            "client_max_body_size" => self.note(
                d,
                "nbgate has no body size limit of its own: bodies stream to Jupyter, which caps them (ServerApp.max_body_size)",
            ),
            "proxy_redirect" => self.note(
                d,
                "nbgate rewrites absolute Location headers that point at Jupyter to the public origin itself",
            ),
            "proxy_next_upstream" | "proxy_next_upstream_tries" | "proxy_next_upstream_timeout"
            | "proxy_intercept_errors" => {
                self.note(d, "one Jupyter: there is no next upstream to try")
            }
            "proxy_hide_header" | "proxy_pass_header" | "proxy_ignore_headers"
            | "proxy_cookie_path" | "proxy_cookie_domain" | "proxy_cookie_flags" => self.note(
                d,
                "nbgate's header rules are fixed: hop-by-hop headers removed, Server banner dropped, Jupyter's cookies passed",
            ),
            "proxy_cache" | "proxy_cache_path" | "proxy_cache_valid" | "proxy_cache_bypass"
            | "proxy_no_cache" | "expires" | "etag" => {
                self.note(d, "nbgate caches nothing; Jupyter sets its own cache headers")
            }
            "auth_basic" => {
                if d.arg0() == "off" {
                    self.note(d, "nothing behind nbgate is reachable without a login")
                } else {
                    self.note(
                        d,
                        "nbgate's login page (session cookie) replaces the browser's Basic-auth prompt; scripts use API tokens",
                    )
                }
            }
            "auth_basic_user_file" if jupyter_wide => self.users_file(d),
            "auth_request" | "auth_request_set" | "satisfy" => self.note(
                d,
                "nbgate authenticates itself (login page, API tokens); external auth subrequests are not supported",
            ),
            "error_log" => self.note(
                d,
                "nbgate logs to stderr (the journal under systemd); RUST_LOG filters, log.format picks text or JSON",
            ),
            "access_log" | "log_format" | "log_not_found" | "open_log_file_cache" => {
                self.note(
                    d,
                    "nbgate logs each request to target nbgate::access (log.access_log, log.format, RUST_LOG)",
                )
            }
            "server_tokens" => {
                self.note(d, "nbgate sends no version banner and drops Jupyter's Server header")
            }
            "http2" => self.note(d, "nbgate offers HTTP/2 and HTTP/1.1 by ALPN on every listener"),
            "include" => self.note(
                d,
                "include is not followed: convert that file too if it holds part of Jupyter's server",
            ),
            "root" | "index" | "try_files" | "alias" | "autoindex" | "sendfile" | "tcp_nopush"
            | "types" | "default_type" | "charset" | "error_page" | "types_hash_max_size"
            | "server_names_hash_bucket_size" => {
                self.note(d, "nbgate serves no files of its own: every path goes to Jupyter")
            }
            name if name.starts_with("gzip") => {
                self.note(d, "nbgate does not compress: responses pass as Jupyter sends them")
            }
            "return" | "rewrite" => self.note(
                d,
                "nbgate forwards paths unchanged and redirects only plain HTTP to HTTPS",
            ),
            "if" | "location" => {
                self.note_block(d, "conditional and nested request rules are not mapped")
            }
            _ => self.generic(d),
        }
    }

    /// The note for a directive nothing above knows.
    fn generic(&mut self, d: &Directive) {
        if d.block.is_some() {
            self.note_block(d, "no nbgate equivalent");
        } else {
            self.note(d, "no nbgate equivalent");
        }
    }

    fn server_name(&mut self, d: &Directive) {
        let mut names = Vec::new();
        let mut skipped = Vec::new();
        for name in &d.args {
            let plain = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && !name.starts_with(['.', '-']);
            if plain {
                names.push(toml::Value::from(name.to_ascii_lowercase()));
            } else if name != "_" && !name.is_empty() {
                skipped.push(name.as_str());
            }
        }
        if !skipped.is_empty() {
            self.warnings.push(format!(
                "{}: {} not copied to server.server_names (wildcards, regexes and variables are not host names)",
                from(d),
                skipped.join(" ")
            ));
        }
        if names.is_empty() {
            self.note(
                d,
                "no plain host name (\"_\" is nginx's catch-all); nbgate answers on every name",
            );
        } else {
            self.mapped(d);
            self.key("server", "server_names", toml::Value::Array(names), from(d));
        }
    }

    fn certificate(&mut self, d: &Directive) {
        let arg = d.arg0();
        if arg.contains('$') || arg.starts_with("data:") || arg.starts_with("engine:") {
            self.note(d, "a certificate path built from variables, data: or engine: cannot be read by nbgate");
            return;
        }
        let path = nginx_path(arg);
        self.mapped(d);
        let name = if d.name == "ssl_certificate" {
            "cert_file"
        } else {
            "key_file"
        };
        let mut origin = from(d);
        if !Path::new(arg).is_absolute() {
            origin.push_str(&format!(" (relative to nginx's prefix {NGINX_PREFIX})"));
        }
        self.key("tls", name, path_value(&path), origin);
    }

    fn add_header(&mut self, d: &Directive) {
        let name = d.arg0().to_ascii_lowercase();
        let value = d.args.get(1).map_or("", String::as_str);
        match name.as_str() {
            "strict-transport-security" => {
                let max_age = value.split(';').find_map(|part| {
                    part.trim()
                        .strip_prefix("max-age=")
                        .and_then(|n| n.trim_matches('"').parse::<u64>().ok())
                });
                match max_age {
                    Some(secs) if secs > 0 => {
                        self.mapped(d);
                        self.key("tls", "hsts", toml::Value::Boolean(true), from(d));
                        self.key(
                            "tls",
                            "hsts_max_age",
                            duration_value(Duration::from_secs(secs)),
                            from(d),
                        );
                        if value.to_ascii_lowercase().contains("includesubdomains")
                            || value.to_ascii_lowercase().contains("preload")
                        {
                            self.warnings.push(format!(
                                "{}: nbgate's Strict-Transport-Security carries max-age only (no includeSubDomains or preload)",
                                from(d)
                            ));
                        }
                    }
                    _ => self.note(d, "no max-age in this Strict-Transport-Security"),
                }
            }
            "x-content-type-options" => self.note(d, "nbgate sets X-Content-Type-Options: nosniff on every response"),
            "referrer-policy" => self.note(d, "nbgate sets Referrer-Policy: same-origin unless Jupyter sends one"),
            _ => self.note(
                d,
                "nbgate adds no custom response headers; Jupyter sets its own (ServerApp.tornado_settings)",
            ),
        }
    }

    fn proxy_set_header(&mut self, d: &Directive) {
        let header = d.arg0().to_ascii_lowercase();
        let why = match header.as_str() {
            "upgrade" | "connection" => "nbgate forwards WebSockets itself",
            "host" => "nbgate presents Jupyter's own host as Host, so Jupyter's check_host passes without allow_remote_access",
            "x-real-ip" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
            | "x-forwarded-port" | "x-scheme" | "forwarded" | "remote-host" | "x-real-scheme" => {
                "nbgate sets X-Forwarded-For/Proto/Host and Forwarded itself (client copies replaced)"
            }
            "origin" => "nbgate checks Origin itself and rewrites a same-origin one to Jupyter's origin",
            "x-nginx-proxy" => "not needed",
            "authorization" => "nbgate injects Jupyter's token itself (upstream.token_file)",
            _ => "nbgate adds no custom request headers",
        };
        self.note(d, why);
    }

    fn read_timeout(&mut self, d: &'a Directive) {
        match nginx_duration(d.arg0()) {
            Some(t) => {
                self.mapped(d);
                self.read_timeouts.push((t, d));
            }
            None => self.note(d, "not an nginx time"),
        }
    }

    fn limit_req(&mut self, d: &Directive) {
        let zone = d
            .args
            .iter()
            .find_map(|a| a.strip_prefix("zone="))
            .unwrap_or_default()
            .to_owned();
        let Some(zone_d) = self.req_zones.get(&zone).copied() else {
            self.note(d, format!("no limit_req_zone named {zone:?} in this file"));
            return;
        };
        let key = zone_d.arg0();
        if !matches!(key, "$binary_remote_addr" | "$remote_addr") {
            self.note(
                d,
                format!("limits per {key}; nbgate limits per client address"),
            );
            self.note(zone_d, "see its limit_req");
            return;
        }
        let Some((per_second, per_minute)) = zone_d
            .args
            .iter()
            .find_map(|a| a.strip_prefix("rate="))
            .and_then(parse_rate)
        else {
            self.note(d, "the zone's rate is not N r/s or N r/m");
            self.note(zone_d, "see its limit_req");
            return;
        };
        let burst: u32 = d
            .args
            .iter()
            .find_map(|a| a.strip_prefix("burst="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        self.mapped(d);
        self.mapped(zone_d);
        let origin = format!("{} and {}", from(zone_d), from(d));
        self.key(
            "policy.rate_limit",
            "requests_per_second",
            toml::Value::Integer(i64::from(per_second)),
            origin.clone(),
        );
        self.key(
            "policy.rate_limit",
            "burst",
            toml::Value::Integer(i64::from(burst.max(1))),
            origin,
        );
        if per_minute {
            self.warnings.push(format!(
                "{}: nginx's rate was per minute; nbgate's is per second, rounded up to {per_second}",
                from(zone_d)
            ));
        }
        self.warnings.push(format!(
            "{}: in nbgate this budget is for clients without a session (login page, refused requests); logged-in users get policy.rate_limit.logged_in_* (200/s, burst 1000), and excess gets 429 at once rather than nginx's queueing",
            from(d)
        ));
    }

    fn limit_conn(&mut self, d: &Directive) {
        let zone = d.arg0().to_owned();
        let Some(zone_d) = self.conn_zones.get(&zone).copied() else {
            self.note(d, format!("no limit_conn_zone named {zone:?} in this file"));
            return;
        };
        let n = d.args.get(1).and_then(|n| n.parse::<u32>().ok());
        match n {
            Some(n) if n > 0 && matches!(zone_d.arg0(), "$binary_remote_addr" | "$remote_addr") => {
                self.mapped(d);
                self.mapped(zone_d);
                self.key(
                    "policy",
                    "max_connections_per_client",
                    toml::Value::Integer(i64::from(n)),
                    format!("{} and {}", from(zone_d), from(d)),
                );
            }
            _ => {
                self.note(d, "not a per-address connection limit nbgate can express");
                self.note(zone_d, "see its limit_conn");
            }
        }
    }

    fn users_file(&mut self, d: &Directive) {
        let arg = d.arg0();
        if arg.contains('$') {
            self.note(
                d,
                "a users file path built from variables cannot be read by nbgate",
            );
            return;
        }
        let path = nginx_path(arg);
        self.mapped(d);
        self.key("auth", "users_file", path_value(&path), from(d));
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.warnings.push(format!(
                    "{shown}: cannot read it here ({e}): its hashes were not checked; nbgate reads it at start and refuses weak ones"
                ));
                return;
            }
        };
        let mut refused = 0;
        let mut accepted = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{shown}:{}", i + 1);
            let Some((user, hash)) = line.split_once(':') else {
                refused += 1;
                self.warnings.push(format!("{at}: not NAME:HASH"));
                continue;
            };
            let user = user.trim();
            if !valid_user_name(user) {
                refused += 1;
                self.warnings
                    .push(format!("{at}: {user:?} is not a user name nbgate accepts"));
                continue;
            }
            match hash.trim().parse::<StoredHash>() {
                Ok(_) => accepted += 1,
                Err(e) => {
                    refused += 1;
                    self.warnings.push(format!("{at}: user {user:?}: {e}"));
                }
            }
        }
        if refused > 0 {
            self.warnings.push(format!(
                "{shown}: nbgate refuses to start while the {refused} line(s) above are in the file ({accepted} accepted); the file was not changed"
            ));
        }
    }

    /// `allow`/`deny` in nginx's first-match order, as nbgate's allow and deny lists (deny wins).
    fn access_rules(&mut self, rules: &[&'a Directive]) -> Result<(), ImportError> {
        let mut allow: Vec<(IpNet, &Directive)> = Vec::new();
        let mut deny: Vec<(IpNet, &Directive)> = Vec::new();
        let mut default: Option<(bool, &Directive)> = None;
        for &d in rules {
            let allows = d.name == "allow";
            if let Some((_, decided)) = default {
                self.note(
                    d,
                    format!(
                        "never reached in nginx: line {} decides for every address first",
                        decided.line
                    ),
                );
                continue;
            }
            let arg = d.arg0();
            if arg == "all" {
                default = Some((allows, d));
                continue;
            }
            if arg.starts_with("unix:") {
                self.note(d, "nbgate listens on TCP only");
                continue;
            }
            let Ok(net) = parse_cidr(arg) else {
                self.note(d, "not an address or network");
                continue;
            };
            if allows {
                allow.push((net, d));
            } else if let Some((_, earlier)) = allow.iter().find(|(a, _)| a.contains(&net)) {
                let line = earlier.line;
                self.note(
                    d,
                    format!("never applies in nginx: line {line} admits these addresses first (nbgate's deny would win)"),
                );
            } else {
                deny.push((net, d));
            }
        }
        let default_allows = default.is_none_or(|(allows, _)| allows);
        if let Some((_, d)) = default {
            self.mapped(d);
        }
        if let (Some((false, d)), true) = (default, allow.is_empty()) {
            return Err(self.unconvertible(
                d,
                "deny all without any allow refuses every client: nbgate cannot express that (an empty policy.allow admits everyone)".into(),
            ));
        }
        if default_allows {
            for (_, d) in &allow {
                self.note(
                    d,
                    "redundant: nginx admits every address not denied here, as nbgate does with an empty policy.allow",
                );
            }
        } else {
            let deny_all = default.map_or(String::new(), |(_, d)| format!(", {}", from(d)));
            self.net_list("allow", &allow, &deny_all);
        }
        if !deny.is_empty() {
            self.net_list("deny", &deny, "");
        }
        Ok(())
    }

    /// `policy.allow` or `policy.deny` from the rules that made it, naming their lines.
    fn net_list(&mut self, name: &'static str, nets: &[(IpNet, &Directive)], extra: &str) {
        let lines: Vec<String> = nets.iter().map(|(_, d)| d.line.to_string()).collect();
        let list = nets
            .iter()
            .map(|(n, _)| toml::Value::from(n.to_string()))
            .collect();
        for (_, d) in nets {
            self.mapped(d);
        }
        self.key(
            "policy",
            name,
            toml::Value::Array(list),
            format!("{name} on line(s) {}{extra}", lines.join(", ")),
        );
    }

    /// Resolves a `proxy_pass` to nbgate's `upstream.url` form, and the upstream block it named.
    fn resolve(&self, d: &'a Directive) -> Result<(String, Option<&'a Directive>), ImportError> {
        let arg = d.arg0();
        if arg.contains('$') {
            return Err(self.unconvertible(
                d,
                "proxy_pass built from variables: nbgate needs Jupyter's fixed address".into(),
            ));
        }
        let rest = arg
            .strip_prefix("http://")
            .or_else(|| arg.strip_prefix("https://"))
            .ok_or_else(|| {
                self.unconvertible(
                    d,
                    format!("proxy_pass {arg:?}: expected http:// or https://"),
                )
            })?;
        if let Some(sock) = rest.strip_prefix("unix:") {
            let sock = sock.split(':').next().unwrap_or_default();
            return Ok((format!("unix:{sock}"), None));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some(up) = self.upstreams.get(authority).copied() {
            let server = up
                .children()
                .iter()
                .find(|s| s.name == "server")
                .ok_or_else(|| {
                    self.unconvertible(up, format!("upstream {authority} has no server"))
                })?;
            let addr = server.arg0();
            let url = match addr.strip_prefix("unix:") {
                Some(sock) => format!("unix:{sock}"),
                None => format!("http://{addr}"),
            };
            return Ok((url, Some(up)));
        }
        Ok((format!("http://{authority}"), None))
    }

    /// Maps Jupyter's `proxy_pass` (and its upstream block) to `upstream.url`; returns the url.
    fn proxy_pass(
        &mut self,
        d: &'a Directive,
        location: Option<&'a Directive>,
    ) -> Result<String, ImportError> {
        let (url, upstream) = self.resolve(d)?;
        parse_upstream(&url).map_err(|m| self.unconvertible(d, m))?;
        self.mapped(d);
        let mut origin = from(d);
        if d.arg0().starts_with("https://") {
            self.warnings.push(format!(
                "{}: nbgate talks plain HTTP to Jupyter on loopback or a Unix socket: turn off Jupyter's own TLS (certfile/keyfile)",
                from(d)
            ));
        }
        if let Some(up) = upstream {
            self.mapped(up);
            origin = format!("{origin}, upstream {} on line {}", up.arg0(), up.line);
            let mut first = true;
            for s in up.children() {
                match s.name.as_str() {
                    "server" if first => {
                        first = false;
                        self.mapped(s);
                    }
                    "server" => self.note(s, "nbgate forwards to one Jupyter"),
                    "keepalive" => match s.arg0().parse::<i64>() {
                        Ok(n) if n > 0 => {
                            self.mapped(s);
                            self.key(
                                "upstream",
                                "pool_max_idle",
                                toml::Value::Integer(n),
                                from(s),
                            );
                        }
                        _ => self.note(s, "not a count"),
                    },
                    _ => self.note(s, "one Jupyter: no balancing or failover settings"),
                }
            }
        }
        if let Some(host) = url.strip_prefix("http://") {
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                self.warnings.push(format!(
                    "{}: Jupyter is reached over the network at {host}: whoever reaches it there with its token bypasses nbgate; keep it on loopback or a Unix socket",
                    from(d)
                ));
            }
        }
        self.key("upstream", "url", toml::Value::from(url.clone()), origin);

        // Jupyter's base_url: the prefix of the location that proxies to it.
        if let Some(loc) = location {
            if let Some(prefix) = location_prefix(loc) {
                let base = format!("{}/", prefix.trim_end_matches('/'));
                if base != "/" {
                    let valid = base
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
                    if valid {
                        self.key(
                            "auth",
                            "base_url",
                            toml::Value::from(base.clone()),
                            from(loc),
                        );
                    } else {
                        self.warnings.push(format!(
                            "{}: not copied to auth.base_url (unusual characters)",
                            from(loc)
                        ));
                    }
                }
                let uri = d
                    .arg0()
                    .split_once("://")
                    .and_then(|(_, r)| r.find('/').map(|i| &r[i..]))
                    .filter(|_| !d.arg0().contains("unix:"))
                    .unwrap_or("");
                if !uri.is_empty() && uri.trim_end_matches('/') != base.trim_end_matches('/') {
                    self.warnings.push(format!(
                        "{}: nginx replaced the path prefix {base:?} with {uri:?}; nbgate forwards paths unchanged, so set Jupyter's base_url to {base:?}",
                        from(d)
                    ));
                }
            }
        }
        Ok(url)
    }

    /// The output: header, warnings, keys by section, then every note.
    fn render(&mut self, tree: &[Directive]) -> String {
        self.sweep(tree);
        self.listeners();
        let timeouts = std::mem::take(&mut self.read_timeouts);
        let longest = timeouts.iter().copied().max_by_key(|(t, _)| *t);
        match longest {
            Some((t, d)) if t > NBGATE_WEBSOCKET_IDLE => {
                self.key(
                    "upstream",
                    "websocket_idle_timeout",
                    duration_value(t),
                    from(d),
                );
            }
            _ => {
                for (t, d) in timeouts {
                    self.handled.remove(&id(d));
                    self.note(
                        d,
                        format!(
                            "kept nbgate's 1h WebSocket idle timeout: {} would cut idle kernels (Jupyter pings every 30 s)",
                            humantime::format_duration(t)
                        ),
                    );
                }
            }
        }
        let has_cert = self.keys.iter().any(|k| k.name == "cert_file");
        let has_key = self.keys.iter().any(|k| k.name == "key_file");
        if has_cert && has_key {
            self.key(
                "tls",
                "mode",
                toml::Value::from("files"),
                "ssl_certificate and ssl_certificate_key (re-read when they change, e.g. after certbot renews)".into(),
            );
        } else {
            if has_cert != has_key {
                self.warnings.push(
                    "ssl_certificate and ssl_certificate_key must both be set: using a self-signed certificate".into(),
                );
            }
            self.keys
                .retain(|k| !matches!(k.name, "cert_file" | "key_file" | "hsts" | "hsts_max_age"));
        }

        let mut out = String::new();
        let _ = writeln!(
            out,
            "# nbgate configuration converted by `nbgate import-nginx` from {}",
            comment_safe(&self.path.display().to_string())
        );
        out.push_str("# Check it with: nbgate check-config --config THIS_FILE\n");
        out.push_str(
            "# nbgate adds what this nginx config did not do: its own login page, lockout after wrong\n\
             # passwords, Origin checks on WebSockets and unsafe requests, and no 60 s WebSocket cut.\n",
        );
        if !self.warnings.is_empty() {
            out.push('\n');
            for w in &self.warnings {
                let _ = writeln!(out, "# WARNING: {}", comment_safe(w));
            }
        }
        for section in [
            "server",
            "tls",
            "upstream",
            "auth",
            "policy",
            "policy.rate_limit",
        ] {
            let keys: Vec<&Key> = self.keys.iter().filter(|k| k.section == section).collect();
            if keys.is_empty() && section != "upstream" {
                continue;
            }
            let _ = write!(out, "\n[{section}]\n");
            for k in keys {
                let _ = writeln!(out, "# from {}", comment_safe(&k.from));
                let _ = writeln!(out, "{} = {}", k.name, k.value);
            }
            if section == "upstream" {
                out.push_str(
                    "# Give nbgate Jupyter's token so Jupyter keeps token auth on (README, \"Jupyter-side settings\"):\n\
                     # token_file = \"/etc/nbgate/jupyter-token\"\n",
                );
            }
        }
        if !self.keys.iter().any(|k| k.name == "users_file") {
            out.push_str(
                "\n# No auth_basic_user_file: on first start nbgate generates a password and prints it once;\n\
                 # or add [[users]] with hashes from `nbgate hash-password`.\n",
            );
        }
        if !self.notes.is_empty() {
            out.push_str("\n# Not mapped:\n");
            self.notes.sort_by_key(|n| n.line);
            for n in &self.notes {
                let _ = writeln!(
                    out,
                    "# line {}: {} -- {}",
                    n.line,
                    comment_safe(&n.text),
                    comment_safe(&n.why)
                );
            }
        }
        out
    }

    /// Notes every directive that nothing above mapped or noted.
    fn sweep(&mut self, ds: &[Directive]) {
        for d in ds {
            if self.handled.contains(&id(d)) {
                self.sweep(d.children());
            } else {
                self.generic(d);
            }
        }
    }

    /// `server.listen` and `server.http_listen`, deduplicated; `0.0.0.0:P` is dropped where
    /// `[::]:P` is also there, because nbgate's IPv6 wildcard is dual-stack on Linux and the
    /// two would collide.
    fn listeners(&mut self) {
        for (name, list) in [
            ("listen", std::mem::take(&mut self.https)),
            ("http_listen", std::mem::take(&mut self.http)),
        ] {
            let mut kept: Vec<Listener> = Vec::new();
            for l in list {
                if !kept.iter().any(|k| k.addr == l.addr) {
                    kept.push(l);
                }
            }
            let v6_ports: Vec<u16> = kept
                .iter()
                .filter(|l| l.addr.ip() == IpAddr::from([0u16; 8]))
                .map(|l| l.addr.port())
                .collect();
            kept.retain(|l| {
                !(l.addr.ip() == IpAddr::from([0u8; 4]) && v6_ports.contains(&l.addr.port()))
            });
            if kept.is_empty() {
                continue;
            }
            let origin = kept
                .iter()
                .map(|l| l.from.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let values = kept
                .iter()
                .map(|l| toml::Value::from(l.addr.to_string()))
                .collect();
            let name: &'static str = name;
            self.key("server", name, toml::Value::Array(values), origin);
        }
    }
}

/// A parsed `listen`.
struct ListenSpec {
    addr: SocketAddr,
    tls: bool,
    /// Something about it the user should know.
    note: Option<String>,
}

/// `443 ssl`, `[::]:443 ssl http2`, `127.0.0.1:8080`, `*:80 default_server` ...
fn parse_listen(args: &[String]) -> Result<ListenSpec, String> {
    let spec = args.first().map_or("", String::as_str);
    if spec.starts_with("unix:") {
        return Err("nbgate listens on TCP only".into());
    }
    let addr: SocketAddr = if let Ok(port) = spec.parse::<u16>() {
        SocketAddr::from(([0, 0, 0, 0], port))
    } else if let Some(port) = spec.strip_prefix("*:").and_then(|p| p.parse::<u16>().ok()) {
        SocketAddr::from(([0, 0, 0, 0], port))
    } else if let Ok(a) = spec.parse::<SocketAddr>() {
        a
    } else if let Some(port) = spec
        .strip_prefix("localhost:")
        .and_then(|p| p.parse::<u16>().ok())
    {
        SocketAddr::from(([127, 0, 0, 1], port))
    } else if let Ok(ip) = spec
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        SocketAddr::new(ip, 80)
    } else {
        return Err(format!("{spec:?} is not an IP:PORT nbgate can listen on"));
    };
    let tls = args.iter().skip(1).any(|a| a == "ssl");
    let note = if args.iter().any(|a| a == "proxy_protocol") {
        Some("nginx expected a PROXY protocol header here: set policy.proxy_protocol = true with policy.trusted_proxies".into())
    } else if args.iter().any(|a| a == "quic" || a == "http3") {
        Some("nbgate has no HTTP/3 (QUIC); clients use HTTP/2 or HTTP/1.1 over TLS".into())
    } else {
        None
    };
    Ok(ListenSpec { addr, tls, note })
}

/// nginx time: `60`, `60s`, `5m`, `1h`, `1d`, `1h 30m`, `500ms`, `1w`, `1M`, `1y`.
fn nginx_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == ' ')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            "w" => Duration::from_secs(n.checked_mul(7 * 86_400)?),
            "M" => Duration::from_secs(n.checked_mul(30 * 86_400)?),
            "y" => Duration::from_secs(n.checked_mul(365 * 86_400)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
    }
    Some(total)
}

/// `10r/s` -> (10, false); `30r/m` -> (1, true): nbgate counts per second, rounded up.
fn parse_rate(text: &str) -> Option<(u32, bool)> {
    let (n, unit) = text.split_once("r/")?;
    let n: u32 = n.parse().ok()?;
    match unit {
        "s" if n > 0 => Some((n, false)),
        "m" if n > 0 => Some((n.div_ceil(60), true)),
        _ => None,
    }
}

/// The zone name in `limit_req_zone KEY zone=NAME:SIZE ...` / `limit_conn_zone KEY zone=NAME:SIZE`.
fn zone_name(d: &Directive) -> Option<String> {
    d.args
        .iter()
        .find_map(|a| a.strip_prefix("zone="))
        .map(|z| z.split(':').next().unwrap_or(z).to_owned())
}

/// A relative nginx path resolved against nginx's prefix, as nginx does.
fn nginx_path(arg: &str) -> PathBuf {
    let p = Path::new(arg);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(NGINX_PREFIX).join(p)
    }
}

fn path_value(p: &Path) -> toml::Value {
    toml::Value::from(p.display().to_string())
}

/// A duration in the largest whole unit nbgate's parser reads back exactly.
fn duration_value(d: Duration) -> toml::Value {
    let secs = d.as_secs();
    let text = if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if secs != 0 && secs.is_multiple_of(86_400) {
        format!("{}days", secs / 86_400)
    } else if secs != 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs != 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    };
    toml::Value::from(text)
}

/// Comment text on one line: a newline in a quoted nginx argument must not end the comment and
/// start a TOML key.
fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn is_tls_server(s: &Directive) -> bool {
    s.children().iter().any(|d| {
        (d.name == "listen" && d.args.iter().skip(1).any(|a| a == "ssl"))
            || (d.name == "ssl" && d.arg0() == "on")
            || d.name == "ssl_certificate"
    })
}

fn server_names(s: &Directive) -> Vec<&str> {
    s.children()
        .iter()
        .filter(|d| d.name == "server_name")
        .flat_map(|d| d.args.iter().map(String::as_str))
        .filter(|n| *n != "_")
        .collect()
}

/// The `proxy_pass` directly in a block.
fn proxy_pass_here(d: &Directive) -> Option<&Directive> {
    d.children().iter().find(|c| c.name == "proxy_pass")
}

/// The first `proxy_pass` anywhere in these directives.
fn proxy_pass_in(ds: &[Directive]) -> Option<&Directive> {
    ds.iter().find_map(|d| {
        if d.name == "proxy_pass" {
            Some(d)
        } else {
            proxy_pass_in(d.children())
        }
    })
}

/// Every `location` in a server, nested ones included, in file order.
fn all_locations(ds: &[Directive]) -> Vec<&Directive> {
    let mut out = Vec::new();
    for d in ds {
        if d.name == "location" {
            out.push(d);
            out.extend(all_locations(d.children()));
        }
    }
    out
}

/// The path of a prefix location (`location /x/`, `location ^~ /x/`); `None` for regex,
/// exact-match and named ones.
fn location_prefix(loc: &Directive) -> Option<&str> {
    match loc.args.as_slice() {
        [p] if p.starts_with('/') => Some(p),
        [m, p] if m == "^~" && p.starts_with('/') => Some(p),
        _ => None,
    }
}

fn is_acme_location(loc: &Directive) -> bool {
    loc.args.iter().any(|a| a.contains(".well-known"))
}

/// A server block whose job is sending clients to `https://`.
fn is_https_redirect(s: &Directive) -> bool {
    fn redirects(ds: &[Directive]) -> bool {
        ds.iter().any(|d| match d.name.as_str() {
            "return" => d.args.iter().any(|a| a.starts_with("https://")),
            "rewrite" => d.args.get(1).is_some_and(|a| a.starts_with("https://")),
            "location" => redirects(d.children()),
            _ => false,
        })
    }
    redirects(s.children())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(text: &str) -> String {
        convert_text(text, Path::new("/etc/nginx/sites-enabled/jupyter"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn config(out: &str) -> Config {
        Config::from_text(out, Path::new("out.toml")).expect("output validates")
    }

    const MINIMAL: &str = "server { listen 443 ssl; proxy_pass http://127.0.0.1:8888; }";

    #[test]
    fn a_tls_server_with_a_proxy_pass_becomes_listen_and_upstream() {
        let text = "server {\n listen 443 ssl;\n server_name nb.example.com;\n location / { proxy_pass http://127.0.0.1:8888; }\n}\n";
        let c = config(&convert(text));
        assert_eq!(c.server.listen, [SocketAddr::from(([0, 0, 0, 0], 443))]);
        assert_eq!(c.server.server_names, ["nb.example.com"]);
        assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:8888");
    }

    #[test]
    fn an_upstream_name_is_resolved_to_its_first_server_and_keepalive_sizes_the_pool() {
        let text = "upstream jupyter { server 127.0.0.1:8889 fail_timeout=0; keepalive 32; }\n\
                    server { listen 443 ssl; location / { proxy_pass http://jupyter; } }";
        let out = convert(text);
        let c = config(&out);
        assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:8889");
        assert_eq!(c.upstream.pool_max_idle, 32);
    }

    #[test]
    fn a_unix_socket_proxy_pass_becomes_a_unix_upstream() {
        for pp in [
            "http://unix:/run/jupyter/j.sock:",
            "http://unix:/run/jupyter/j.sock:/",
        ] {
            let text = format!("server {{ listen 443 ssl; location / {{ proxy_pass {pp}; }} }}");
            let c = config(&convert(&text));
            assert_eq!(
                c.upstream.url.to_string(),
                "unix:/run/jupyter/j.sock",
                "{pp}"
            );
        }
        let text = "upstream j { server unix:/run/j.sock; }\nserver { listen 443 ssl; location / { proxy_pass http://j; } }";
        assert_eq!(
            config(&convert(text)).upstream.url.to_string(),
            "unix:/run/j.sock"
        );
    }

    #[test]
    fn the_port_80_redirect_block_becomes_http_listen() {
        let text = "server { listen 80; listen [::]:80; server_name nb.example.com; return 301 https://$host$request_uri; }\n\
                    server { listen 443 ssl; listen [::]:443 ssl; server_name nb.example.com; location / { proxy_pass http://127.0.0.1:8888; } }";
        let out = convert(text);
        let c = config(&out);
        assert_eq!(
            c.server.http_listen,
            ["[::]:80".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.server.listen, ["[::]:443".parse::<SocketAddr>().unwrap()]);
        assert!(
            out.contains("return 301 https://$host$request_uri -- nbgate's plain-HTTP"),
            "{out}"
        );
    }

    #[test]
    fn a_plain_port_80_jupyter_server_becomes_https_on_443_with_a_redirect() {
        let text = "server { listen 80; location / { proxy_pass http://localhost:8888; } }";
        let c = config(&convert(text));
        assert_eq!(c.server.listen, [SocketAddr::from(([0, 0, 0, 0], 443))]);
        assert_eq!(c.server.http_listen, [SocketAddr::from(([0, 0, 0, 0], 80))]);
    }

    #[test]
    fn certificates_become_files_mode_and_hsts_its_max_age() {
        let text =
            "server { listen 443 ssl; ssl_certificate /etc/letsencrypt/live/x/fullchain.pem;\n\
                    ssl_certificate_key /etc/letsencrypt/live/x/privkey.pem;\n\
                    add_header Strict-Transport-Security \"max-age=15768000; includeSubDomains\";\n\
                    location / { proxy_pass http://127.0.0.1:8888; } }";
        let out = convert(text);
        let c = config(&out);
        assert_eq!(c.tls.mode, crate::config::TlsMode::Files);
        assert_eq!(
            c.tls.cert_file.as_deref(),
            Some(Path::new("/etc/letsencrypt/live/x/fullchain.pem"))
        );
        assert!(c.tls.hsts);
        assert_eq!(c.tls.hsts_max_age, Duration::from_secs(15_768_000));
        assert!(
            out.contains("WARNING") && out.contains("max-age only"),
            "{out}"
        );
    }

    #[test]
    fn a_certificate_without_its_key_falls_back_to_self_signed_with_a_warning() {
        let text =
            "server { listen 443 ssl; ssl_certificate /c.pem; proxy_pass http://127.0.0.1:8888; }";
        let out = convert(text);
        assert_eq!(config(&out).tls.mode, crate::config::TlsMode::SelfSigned);
        assert!(out.contains("must both be set"), "{out}");
    }

    #[test]
    fn send_timeout_becomes_server_send_timeout_and_one_under_a_second_is_noted() {
        let text = "server { listen 443 ssl; send_timeout 2m; location / { proxy_pass http://127.0.0.1:8888; } }";
        let c = config(&convert(text));
        assert_eq!(c.server.send_timeout, Duration::from_secs(120));
        let text = "server { listen 443 ssl; send_timeout 0; location / { proxy_pass http://127.0.0.1:8888; } }";
        let out = convert(text);
        assert_eq!(config(&out).server.send_timeout, Duration::from_secs(60));
        assert!(out.contains("not an nginx time of 1s or more"), "{out}");
    }

    #[test]
    fn allow_then_deny_all_becomes_an_allow_list() {
        let text = "server { listen 443 ssl; allow 10.0.0.0/8; allow 2001:db8::/32; deny all;\n\
                    location / { proxy_pass http://127.0.0.1:8888; } }";
        let c = config(&convert(text));
        assert_eq!(c.policy.allow.len(), 2);
        assert!(c.policy.deny.is_empty());
    }

    #[test]
    fn a_deny_before_a_wider_allow_is_kept_and_one_after_it_is_noted() {
        let text = "server { listen 443 ssl; deny 10.1.0.0/16; allow 10.0.0.0/8; deny 10.2.0.0/16; deny all;\n\
                    location / { proxy_pass http://127.0.0.1:8888; } }";
        let out = convert(text);
        let c = config(&out);
        assert_eq!(c.policy.deny, ["10.1.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(c.policy.allow, ["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert!(
            out.contains("deny 10.2.0.0/16 -- never applies in nginx"),
            "{out}"
        );
    }

    #[test]
    fn allows_without_a_final_deny_all_are_redundant_and_denies_are_kept() {
        let text = "server { listen 443 ssl; deny 192.0.2.1; allow 10.0.0.0/8;\n\
                    location / { proxy_pass http://127.0.0.1:8888; } }";
        let out = convert(text);
        let c = config(&out);
        assert!(c.policy.allow.is_empty());
        assert_eq!(c.policy.deny.len(), 1);
        assert!(out.contains("allow 10.0.0.0/8 -- redundant"), "{out}");
    }

    #[test]
    fn deny_all_alone_is_refused_naming_its_line() {
        let text = "server {\n listen 443 ssl;\n deny all;\n proxy_pass http://127.0.0.1:8888;\n}";
        let err = convert_text(text, Path::new("j.conf")).unwrap_err();
        assert!(err.to_string().starts_with("j.conf:3: deny all"), "{err}");
    }

    #[test]
    fn limit_req_zone_and_limit_req_become_the_rate_limit() {
        let text = "limit_req_zone $binary_remote_addr zone=jup:10m rate=5r/s;\n\
                    server { listen 443 ssl; location / { limit_req zone=jup burst=20 nodelay; proxy_pass http://127.0.0.1:8888; } }";
        let c = config(&convert(text));
        assert_eq!(c.policy.rate_limit.requests_per_second, 5);
        assert_eq!(c.policy.rate_limit.burst, 20);
    }

    #[test]
    fn a_per_minute_rate_rounds_up_to_one_per_second() {
        assert_eq!(parse_rate("30r/m"), Some((1, true)));
        assert_eq!(parse_rate("120r/m"), Some((2, true)));
        assert_eq!(parse_rate("10r/s"), Some((10, false)));
        assert_eq!(parse_rate("0r/s"), None);
        assert_eq!(parse_rate("fast"), None);
    }

    #[test]
    fn a_long_proxy_read_timeout_raises_the_websocket_idle_timeout_and_a_short_one_is_noted() {
        let long = "server { listen 443 ssl; location / { proxy_pass http://127.0.0.1:8888; }\n\
                    location ~ /api/kernels/ { proxy_pass http://127.0.0.1:8888; proxy_read_timeout 86400; } }";
        let out = convert(long);
        assert_eq!(
            config(&out).upstream.websocket_idle_timeout,
            Duration::from_secs(86_400)
        );
        assert!(
            out.contains("location ~ /api/kernels/ { ... } -- nbgate forwards every path"),
            "{out}"
        );
        let short = "server { listen 443 ssl; location / { proxy_pass http://127.0.0.1:8888; proxy_read_timeout 300s; } }";
        let out = convert(short);
        assert_eq!(
            config(&out).upstream.websocket_idle_timeout,
            NBGATE_WEBSOCKET_IDLE
        );
        assert!(out.contains("would cut idle kernels"), "{out}");
    }

    #[test]
    fn nginx_times_parse_in_all_their_units() {
        assert_eq!(nginx_duration("60"), Some(Duration::from_secs(60)));
        assert_eq!(nginx_duration("300s"), Some(Duration::from_secs(300)));
        assert_eq!(nginx_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(nginx_duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(nginx_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(nginx_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(nginx_duration("x"), None);
        assert_eq!(nginx_duration(""), None);
    }

    #[test]
    fn websocket_headers_and_buffering_are_noted_with_their_reason() {
        let text = "map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n\
                    server { listen 443 ssl; location / { proxy_pass http://127.0.0.1:8888;\n\
                    proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade;\n\
                    proxy_set_header Connection $connection_upgrade; proxy_buffering off; } }";
        let out = convert(text);
        assert!(
            out.contains(
                "proxy_set_header Upgrade $http_upgrade -- nbgate forwards WebSockets itself"
            ),
            "{out}"
        );
        assert!(out.contains("proxy_set_header Connection $connection_upgrade -- nbgate forwards WebSockets itself"), "{out}");
        assert!(out.contains("proxy_buffering off -- not needed"), "{out}");
        assert!(out.contains("map $http_upgrade $connection_upgrade { ... } -- nbgate forwards WebSockets itself"), "{out}");
    }

    #[test]
    fn every_directive_not_mapped_gets_one_comment_line() {
        let text =
            "user nginx;\nevents { worker_connections 1024; }\nhttp {\n include mime.types;\n\
                    sendfile on;\n server { listen 443 ssl; frobnicate 1;\n\
                    location / { proxy_pass http://127.0.0.1:8888; } } }";
        let out = convert(text);
        for needle in [
            "line 1: user nginx --",
            "line 2: events { ... } --",
            "line 4: include mime.types -- include is not followed",
            "line 5: sendfile on --",
            "frobnicate 1 -- no nbgate equivalent",
        ] {
            assert!(out.contains(needle), "{needle}\n{out}");
        }
        assert!(
            !out.contains("worker_connections"),
            "inside a noted block: {out}"
        );
    }

    #[test]
    fn a_location_with_a_prefix_sets_the_base_url() {
        let text =
            "server { listen 443 ssl; location /jupyter/ { proxy_pass http://127.0.0.1:8888; } }";
        assert_eq!(config(&convert(text)).auth.base_url, "/jupyter/");
        let text = "server { listen 443 ssl; location /jupyter { proxy_pass http://127.0.0.1:8888/lab/; } }";
        let out = convert(text);
        assert_eq!(config(&out).auth.base_url, "/jupyter/");
        assert!(out.contains("nbgate forwards paths unchanged"), "{out}");
    }

    #[test]
    fn another_server_proxying_elsewhere_is_noted_once() {
        let text = "server { listen 443 ssl; location / { proxy_pass http://127.0.0.1:8888; } }\n\
                    server { listen 8443 ssl; server_name other; location / { proxy_pass http://127.0.0.1:3000; } }";
        let out = convert(text);
        assert_eq!(out.matches("another server block").count(), 1, "{out}");
        assert!(!out.contains("3000 --"), "{out}");
    }

    #[test]
    fn no_proxy_pass_is_an_error_naming_file_and_line() {
        let err =
            convert_text("\nserver { listen 80; root /srv; }", Path::new("site.conf")).unwrap_err();
        assert!(
            matches!(err, ImportError::NoProxyPass { line: 2, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("site.conf:2: no proxy_pass"),
            "{err}"
        );
    }

    #[test]
    fn a_syntax_error_is_one_line_naming_file_and_line() {
        let err = convert_text("server {\n listen 80;\n", Path::new("bad.conf")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("bad.conf:1: unbalanced braces"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn a_variable_proxy_pass_is_refused() {
        let err = convert_text(
            "server { listen 443 ssl; location / { proxy_pass http://$backend; } }",
            Path::new("v.conf"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("variables"), "{err}");
    }

    #[test]
    fn a_newline_in_a_quoted_argument_cannot_inject_a_key() {
        let text = "server { listen 443 ssl; add_header X \"a\n[auth]\nusers_file = \\\"/x\\\"\"; proxy_pass http://127.0.0.1:8888; }";
        let out = convert(text);
        assert!(config(&out).auth.users_file.is_none(), "{out}");
    }

    #[test]
    fn the_users_file_is_checked_and_weak_hashes_warned_about_per_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("htpasswd");
        std::fs::write(
            &file,
            "alice:$2y$05$N4iJx/eSyTdUFhsZ/ZO7/u2OiQSv.F6lv699t/WoZvKJFrlwBEaTO\n\
             bob:$apr1$owjFTuIq$PaOYiiKDtFuTEpM.7RQ4o.\ncarol:{SHA}eiYb9tpumeAToEHU+QSPK08CN5Y=\n",
        )
        .expect("write");
        let text = format!(
            "server {{ listen 443 ssl; auth_basic \"Jupyter\"; auth_basic_user_file {};\n\
             location / {{ proxy_pass http://127.0.0.1:8888; }} }}",
            file.display()
        );
        let out = convert(&text);
        assert_eq!(
            config(&out).auth.users_file.as_deref(),
            Some(file.as_path())
        );
        assert!(out.contains("user \"bob\": apr1-md5"), "{out}");
        assert!(out.contains("user \"carol\": {SHA}"), "{out}");
        assert!(!out.contains("\"alice\""), "bcrypt is accepted: {out}");
        assert!(out.contains("nbgate hash-password"), "{out}");
        assert!(out.contains("the 2 line(s) above"), "{out}");
        assert_eq!(
            std::fs::read_to_string(&file)
                .expect("read")
                .lines()
                .count(),
            3,
            "the file is not rewritten"
        );
    }

    #[test]
    fn a_nested_location_that_proxies_is_converted_and_its_parent_noted() {
        let text = "server { listen 443 ssl;\n location / {\n  location /lab/ { proxy_pass http://127.0.0.1:8888; }\n } }";
        let out = convert(text);
        assert_eq!(config(&out).auth.base_url, "/lab/");
        assert!(
            out.contains("line 2: location / { ... } -- holds the nested locations"),
            "{out}"
        );
    }

    #[test]
    fn an_unreadable_file_names_it_once() {
        let err = convert_file(Path::new("/nonexistent/nginx.conf")).unwrap_err();
        assert_eq!(err.to_string(), "/nonexistent/nginx.conf: cannot read");
        assert!(
            std::error::Error::source(&err).is_some(),
            "the io error is kept"
        );
    }

    #[test]
    fn a_minimal_server_validates() {
        config(&convert(MINIMAL));
    }
}
