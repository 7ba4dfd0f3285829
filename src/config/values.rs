//! Value parsers shared by the section validators and by other modules
//! (`nginx_import`, `policy`): sizes, durations, addresses, networks, names.
//! Pure functions of their text; they return the message, the caller adds
//! the file and key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::UpstreamAddr;

/// Whether `token` can be Jupyter's token: URL-unreserved characters only
/// (RFC 3986 §2.3). Pages carry the token as HTML, JSON or URL text; a
/// character any of those escapes (`"`, `<`, `&`, `+`, `/`, …) would appear
/// escaped and slip past the byte-exact scrubber that keeps it out of
/// browsers. Jupyter's generated tokens are hex; `nbgate run`'s base64url.
pub fn valid_upstream_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

pub(super) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

pub(super) fn ser_opt_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

pub(super) fn ser_size<S: serde::Serializer>(n: &usize, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_size(*n))
}

/// Parses a human size: `"512"`, `"16KiB"`, `"10MiB"`, `"1GiB"`, `"64kB"`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {text:?} (expected e.g. \"16KiB\" or \"10MiB\")"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {text:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

fn format_size(n: usize) -> String {
    for (unit, m) in [("GiB", 1usize << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= m && n.is_multiple_of(m) {
            return format!("{}{unit}", n / m);
        }
    }
    format!("{n}B")
}

/// Parses a human duration: `"30s"`, `"5m"`, `"1h 30m"`, `"365days"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?}: {e} (expected e.g. \"30s\", \"5m\", \"1h\")")
    })
}

/// Parses an upstream: `http://127.0.0.1:8888`, `http://localhost:8888/`,
/// `unix:/run/jupyter.sock`. HTTPS upstreams are refused: Jupyter sits on
/// loopback or a socket, and TLS there only hides misconfiguration.
pub fn parse_upstream(text: &str) -> Result<UpstreamAddr, String> {
    let t = text.trim();
    if let Some(path) = t.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if !path.starts_with('/') {
            return Err(format!(
                "{text:?}: a unix socket path must be absolute (unix:/path/to/jupyter.sock)"
            ));
        }
        return Ok(UpstreamAddr::Unix {
            path: PathBuf::from(path),
        });
    }
    let rest = t
        .strip_prefix("http://")
        .ok_or_else(|| format!("{text:?}: expected http://HOST:PORT or unix:/path/to/socket"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{text:?}: give only scheme, host and port (Jupyter's base_url is forwarded unchanged)"
        ));
    }
    let uri: http::uri::Authority = authority
        .parse()
        .map_err(|e| format!("{text:?}: invalid host:port: {e}"))?;
    let authority = if uri.port().is_some() {
        uri.as_str().to_owned()
    } else {
        format!("{}:80", uri.as_str())
    };
    Ok(UpstreamAddr::Tcp { authority })
}

pub(super) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected IP:PORT, e.g. \"0.0.0.0:8443\" or \"[::]:8443\""))
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host). Host bits
/// are masked off (`10.1.2.3/8` means `10.0.0.0/8`), as nginx does.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    let net = if t.contains('/') {
        t.parse::<IpNet>().map_err(|_| {
            format!("{text:?} is not a network (expected e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")")
        })?
    } else {
        let ip: std::net::IpAddr = t
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network"))?;
        IpNet::from(ip)
    };
    Ok(net.trunc())
}

/// User names: 1-64 characters of letters, digits, `.`, `_`, `-`, `@`,
/// not starting with `.`. Kept narrow so a name is safe in logs and
/// cookies, and as a file name in the state directory (`totp/<name>.json`:
/// no hidden file, no `..`, no clash with `totp/.lock`).
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_safe_file_names() {
        for good in ["alice", "a.b", "bob@example.org", "x-y_z", "a.."] {
            assert!(valid_user_name(good), "{good}");
        }
        for bad in ["", ".hidden", "..", ".lock", "a/b", "a b", &"a".repeat(65)] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }

    #[test]
    fn sizes_and_durations_parse_in_human_form() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("10 parsecs").is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn upstream_forms_are_parsed_and_https_refused() {
        assert_eq!(
            parse_upstream("http://127.0.0.1:8888/"),
            Ok(UpstreamAddr::Tcp {
                authority: "127.0.0.1:8888".into()
            })
        );
        assert_eq!(
            parse_upstream("unix:/run/j.sock"),
            Ok(UpstreamAddr::Unix {
                path: "/run/j.sock".into()
            })
        );
        assert!(parse_upstream("https://127.0.0.1:8888").is_err());
        assert!(parse_upstream("unix:relative.sock").is_err());
        assert!(parse_upstream("http://127.0.0.1:8888/lab").is_err());
    }
}
