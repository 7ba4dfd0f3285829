//! Sanitizes the `next=` value that says where to send the browser after login.
//!
//! Owns: the decision whether a requested post-login target is a same-origin path under the
//! Jupyter base URL, and its re-encoding into a value safe for a `Location` header and an
//! HTML attribute (after `crate::pages::html_escape`).
//!
//! Must not: do I/O, build absolute URLs, or trust anything about its input. It returns
//! either a relative path it has checked or the fallback, never an error, so a caller cannot
//! forget to handle the bad case. The attack it stops is the open redirect: a link to the
//! real login page that, after a genuine login, lands the user on a look-alike site.

/// Longest `next` accepted, in bytes. Longer values are refused: no Jupyter URL needs more,
/// and a bound keeps the repeated decoding below cheap.
pub const MAX_NEXT_LEN: usize = 2048;

/// How many layers of percent-encoding are peeled off and re-checked. A value still changing
/// after this many decodings is refused rather than trusted.
const MAX_DECODE_ROUNDS: usize = 4;

/// Returns the path to redirect to after login, or `base_url` when `raw` is missing or
/// unsafe.
///
/// `raw` is the already percent-decoded query value. `base_url` is the trusted, configured
/// Jupyter base URL with leading and trailing slash (`"/"`, `"/jupyter/"`); the result is
/// always `base_url` itself or a path equal to or under it, with its query and fragment kept.
///
/// Accepted: a path starting with exactly one `/`, under `base_url`, at most
/// [`MAX_NEXT_LEN`] bytes, with no control character and no backslash anywhere, and whose
/// path part keeps those properties (plus: no `//` or `/\` start, no `.`/`..` segment)
/// through every round of percent-decoding. The output has spaces, non-ASCII and
/// `" < > \` { }` percent-encoded, so it is a valid header value.
///
/// `/@evil.com` is accepted on purpose: with a single leading slash the `@` is part of the
/// path (`https://gate/@evil.com`), not userinfo; the `//user@evil.com` form that would make
/// it an authority is refused by the double-slash rule.
pub fn sanitize_next(raw: Option<&str>, base_url: &str) -> String {
    match raw {
        Some(raw) if is_safe(raw, base_url) => encode_for_location(raw),
        _ => base_url.to_owned(),
    }
}

fn is_safe(raw: &str, base_url: &str) -> bool {
    // Length bound: stops work amplification by huge values and log flooding.
    if raw.is_empty() || raw.len() > MAX_NEXT_LEN {
        return false;
    }
    // Control characters: CR/LF would split the Location header (response splitting), and
    // browsers silently delete tab/CR/LF inside URLs, so "/\t/evil.com" navigates to
    // "//evil.com". NUL and C1 controls have no place in a path either.
    if raw.chars().any(char::is_control) {
        return false;
    }
    // Backslash anywhere: browsers treat "\" as "/" in http(s) URLs, so "/\evil.com" is the
    // protocol-relative "//evil.com". No Jupyter path needs one, so refusing it everywhere
    // (query included) removes any doubt about where a parser splits path from query.
    if raw.contains('\\') {
        return false;
    }
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    // Base URL confinement, on the path as the browser sees it: stops a login link for
    // "/jupyter/" from forwarding the fresh session to another app on the same origin.
    if !is_under_base(path, base_url) {
        return false;
    }
    // Re-check each decoded layer: a component further on (a proxy, a framework, the
    // browser for "%2e%2e") may decode again, turning "/%2f%2fevil.com" into "//evil.com"
    // or "/jupyter/%2e%2e/other" into "/other".
    let mut current = path.as_bytes().to_vec();
    for _ in 0..=MAX_DECODE_ROUNDS {
        if !path_shape_is_safe(&current) {
            return false;
        }
        let decoded = percent_decode(&current);
        if decoded == current {
            return true;
        }
        current = decoded;
    }
    false
}

/// The structural rules every decoding layer of the path must keep.
fn path_shape_is_safe(path: &[u8]) -> bool {
    // Exactly one leading slash: "//host" and "/\host" are protocol-relative URLs to
    // another origin, and anything not starting with "/" may be a scheme ("https:",
    // "javascript:", "data:") or resolve relative to the login page.
    match path {
        [b'/'] => {}
        [b'/', second, ..] if *second != b'/' && *second != b'\\' => {}
        _ => return false,
    }
    if path.contains(&b'\\') {
        return false;
    }
    if String::from_utf8_lossy(path).chars().any(char::is_control) {
        return false;
    }
    // Dot segments: browsers resolve "/jupyter/../other" to "/other", escaping the base.
    !path
        .split(|b| *b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
}

/// True when `path` is the base itself (with or without trailing slash) or below it.
fn is_under_base(path: &str, base_url: &str) -> bool {
    let base_dir = base_url.trim_end_matches('/');
    if base_dir.is_empty() {
        return path.starts_with('/');
    }
    // Stops prefix confusion: "/jupyterevil" is not under "/jupyter/".
    path == base_dir
        || path
            .strip_prefix(base_dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// One round of percent-decoding; malformed escapes stay as they are.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while let Some((&first, tail)) = rest.split_first() {
        if let [b'%', high, low, after @ ..] = rest {
            if let (Some(high), Some(low)) = (hex_value(*high), hex_value(*low)) {
                out.push((high << 4) | low);
                rest = after;
                continue;
            }
        }
        out.push(first);
        rest = tail;
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes bytes that may not appear raw in a `Location` header or that a browser
/// would encode anyway (space, non-ASCII, `" < > \` { }`). `%`, `?` and `#` stay, so
/// existing escapes, the query and the fragment keep their meaning.
fn encode_for_location(raw: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(raw.len());
    for &b in raw.as_bytes() {
        let keep =
            (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b'<' | b'>' | b'`' | b'{' | b'}');
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/";
    const JUPYTER: &str = "/jupyter/";

    /// (raw, base_url, expected). Good cases first; each evil case names the attack it
    /// models.
    const CASES: &[(Option<&str>, &str, &str)] = &[
        // Good: the plain targets Jupyter sends.
        (Some("/"), ROOT, "/"),
        (Some("/lab"), ROOT, "/lab"),
        (
            Some("/lab/tree/work/analysis.ipynb?reset=1"),
            ROOT,
            "/lab/tree/work/analysis.ipynb?reset=1",
        ),
        (
            Some("/jupyter/lab?x=1#cell-3"),
            JUPYTER,
            "/jupyter/lab?x=1#cell-3",
        ),
        (Some("/jupyter"), JUPYTER, "/jupyter"),
        (Some("/jupyter/"), JUPYTER, "/jupyter/"),
        // Good: a file name Jupyter had encoded once more ("a%20b.ipynb" on disk).
        (
            Some("/lab/tree/a%2520b.ipynb"),
            ROOT,
            "/lab/tree/a%2520b.ipynb",
        ),
        // Good: space and non-ASCII are re-encoded for the Location header.
        (
            Some("/lab/tree/my notebook.ipynb"),
            ROOT,
            "/lab/tree/my%20notebook.ipynb",
        ),
        (
            Some("/lab/tree/数据.ipynb"),
            ROOT,
            "/lab/tree/%E6%95%B0%E6%8D%AE.ipynb",
        ),
        // Good: with one leading slash "@" is a path character, not userinfo.
        (Some("/@evil.com"), ROOT, "/@evil.com"),
        // Good: "//" inside the path stays on this origin.
        (Some("/lab//tree"), ROOT, "/lab//tree"),
        // Good: an encoded "//" in the query is the query's business, not a redirect.
        (
            Some("/lab?next=%2F%2Fevil.com"),
            ROOT,
            "/lab?next=%2F%2Fevil.com",
        ),
        // Missing or empty parameter.
        (None, ROOT, "/"),
        (Some(""), JUPYTER, "/jupyter/"),
        // Protocol-relative URL to another origin.
        (Some("//evil.com"), ROOT, "/"),
        (Some("///evil.com"), ROOT, "/"),
        (Some("//user@evil.com/"), ROOT, "/"),
        // Backslash read as slash by browsers: "/\evil.com" == "//evil.com".
        (Some("/\\evil.com"), ROOT, "/"),
        (Some("\\\\evil.com"), ROOT, "/"),
        (Some("/lab\\..\\..\\x"), ROOT, "/"),
        // Encoded slash/backslash that a later decoder turns into "//" or "/\".
        (Some("/%2fevil.com"), ROOT, "/"),
        (Some("/%2F%2Fevil.com"), ROOT, "/"),
        (Some("/%5cevil.com"), ROOT, "/"),
        (Some("/%5C%5Cevil.com"), ROOT, "/"),
        // Double and excessive encoding to slip past a single decode.
        (Some("/%252f%252fevil.com"), ROOT, "/"),
        (Some("/%252525252Fevil.com"), ROOT, "/"),
        // More encoding layers than any client produces (decoder-bomb): refused even though
        // the innermost value ("/lab/A") is harmless.
        (Some("/lab/%252525252541"), ROOT, "/"),
        // Absolute URL and script schemes.
        (Some("https://evil.com/"), ROOT, "/"),
        (Some("http:evil.com"), ROOT, "/"),
        (Some("javascript:alert(1)"), ROOT, "/"),
        (Some("JaVaScRiPt:alert(1)"), ROOT, "/"),
        (Some("data:text/html,<script>alert(1)</script>"), ROOT, "/"),
        // Relative reference resolved against the login page, and a leading space that
        // browsers strip (" //evil.com" -> "//evil.com").
        (Some("evil.com/lab"), ROOT, "/"),
        (Some(" //evil.com"), ROOT, "/"),
        (Some("%2F%2Fevil.com"), ROOT, "/"),
        // Tab/newline deleted by browsers: "/\t/evil.com" -> "//evil.com".
        (Some("/\t/evil.com"), ROOT, "/"),
        (Some("/\n/evil.com"), ROOT, "/"),
        // Header injection / response splitting through CRLF, raw and encoded.
        (Some("/lab\r\nSet-Cookie: a=b"), ROOT, "/"),
        (Some("/lab%0d%0aSet-Cookie:a=b"), ROOT, "/"),
        // NUL and C1 control characters (truncation, parser confusion).
        (Some("/lab\0"), ROOT, "/"),
        (Some("/lab%00.ipynb"), ROOT, "/"),
        (Some("/lab\u{85}x"), ROOT, "/"),
        // Backslash in the query: refused everywhere, see is_safe.
        (Some("/lab?x=\\y"), ROOT, "/"),
        // Leaving the base URL: another app on the same origin.
        (Some("/other"), JUPYTER, "/jupyter/"),
        (Some("/"), JUPYTER, "/jupyter/"),
        // Prefix confusion: "/jupyterevil" shares a string prefix but not a path prefix.
        (Some("/jupyterevil/lab"), JUPYTER, "/jupyter/"),
        // Dot segments resolved by the browser to leave the base, plain and encoded.
        (Some("/jupyter/../other"), JUPYTER, "/jupyter/"),
        (Some("/jupyter/%2e%2e/other"), JUPYTER, "/jupyter/"),
        (Some("/jupyter/.%2E/other"), JUPYTER, "/jupyter/"),
        (Some("/jupyter/%252e%252e/other"), JUPYTER, "/jupyter/"),
        (Some("/jupyter/./lab"), JUPYTER, "/jupyter/"),
    ];

    #[test]
    fn sanitize_next_accepts_local_paths_and_refuses_every_modelled_attack() {
        assert!(CASES.len() >= 25);
        for (raw, base, expected) in CASES {
            assert_eq!(
                sanitize_next(*raw, base),
                *expected,
                "raw={raw:?} base={base:?}"
            );
        }
    }

    #[test]
    fn sanitize_next_enforces_the_length_limit() {
        // Work amplification and log flooding through a huge parameter.
        let at_limit = format!("/{}", "a".repeat(MAX_NEXT_LEN - 1));
        assert_eq!(sanitize_next(Some(&at_limit), ROOT), at_limit);
        let over_limit = format!("/{}", "a".repeat(MAX_NEXT_LEN));
        assert_eq!(sanitize_next(Some(&over_limit), ROOT), ROOT);
    }

    #[test]
    fn sanitized_output_is_always_a_valid_header_value() {
        for (raw, base, _) in CASES {
            let out = sanitize_next(*raw, base);
            assert!(
                http::HeaderValue::from_str(&out).is_ok(),
                "{out:?} from {raw:?}"
            );
            assert!(out.starts_with('/'));
            assert!(!out.starts_with("//"));
        }
    }

    #[test]
    fn percent_decode_leaves_malformed_escapes_alone() {
        assert_eq!(percent_decode(b"%2f%2F%zz%2"), b"//%zz%2".to_vec());
        assert_eq!(percent_decode(b"100%"), b"100%".to_vec());
        assert_eq!(percent_decode(b"%41%4a"), b"AJ".to_vec());
    }
}
