//! A short summary of a `User-Agent` header ("Chrome 131 on Linux") for
//! the sessions page, so a user can tell their sessions apart.
//!
//! Owns: recognising a few browser families and operating systems by
//! well-known tokens. Must not: keep or return any part of the header
//! itself. The summary is built from fixed names and a major version of
//! digits only, so whatever a client puts in its `User-Agent` (markup, a
//! megabyte of text, a fake session label) never reaches a page or the
//! session registry; only a bounded prefix of the header is looked at.

/// Bytes of a `User-Agent` looked at: real ones are a few hundred bytes;
/// the rest of a hostile one costs nothing.
const MAX_SCANNED: usize = 512;

/// What a session's client is, as far as its `User-Agent` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Browser or client family (`None`: not recognised, or no header).
    pub browser: Option<&'static str>,
    /// Its major version, when the header gives one.
    pub major: Option<u32>,
    /// Operating system (`None`: not recognised).
    pub os: Option<&'static str>,
}

impl Summary {
    /// The browser and version, e.g. `Chrome 131`; `None` when unknown.
    pub fn browser_label(&self) -> Option<String> {
        let name = self.browser?;
        Some(match self.major {
            Some(v) => format!("{name} {v}"),
            None => name.to_owned(),
        })
    }
}

/// Browser families by the product token that identifies them, most
/// specific first: Edge and Opera also say `Chrome/`, Chrome also says
/// `Safari/`, so the first token found decides.
const BROWSERS: &[(&str, &str)] = &[
    ("Edg/", "Edge"),
    ("EdgA/", "Edge"),
    ("EdgiOS/", "Edge"),
    ("OPR/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("Vivaldi/", "Vivaldi"),
    ("YaBrowser/", "Yandex Browser"),
    ("HeadlessChrome/", "Headless Chrome"),
    ("Chromium/", "Chromium"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("FxiOS/", "Firefox"),
    ("Firefox/", "Firefox"),
    ("curl/", "curl"),
    ("Wget/", "Wget"),
    ("python-requests/", "Python requests"),
    ("Python-urllib/", "Python urllib"),
    ("aiohttp/", "Python aiohttp"),
    ("python-httpx/", "Python httpx"),
    ("Go-http-client/", "Go"),
    ("okhttp/", "OkHttp"),
];

/// Operating systems by a token of theirs, most specific first (Android
/// says `Linux`, iOS says `like Mac OS X`).
const SYSTEMS: &[(&str, &str)] = &[
    ("Windows", "Windows"),
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("CrOS", "ChromeOS"),
    ("Mac OS X", "macOS"),
    ("Macintosh", "macOS"),
    ("Linux", "Linux"),
    ("FreeBSD", "FreeBSD"),
    ("OpenBSD", "OpenBSD"),
];

/// Summarises a `User-Agent` value (`None`: no header, or not text).
pub fn summarize(user_agent: Option<&str>) -> Summary {
    let Some(ua) = user_agent else {
        return Summary::default();
    };
    let end = (0..=ua.len().min(MAX_SCANNED))
        .rev()
        .find(|&i| ua.is_char_boundary(i))
        .unwrap_or(0);
    let ua = &ua[..end];
    let os = SYSTEMS
        .iter()
        .find(|(token, _)| ua.contains(token))
        .map(|(_, name)| *name);
    if let Some((token, name)) = BROWSERS.iter().find(|(token, _)| ua.contains(token)) {
        let at = ua.find(token).expect("found above") + token.len();
        return Summary {
            browser: Some(name),
            major: major_version(&ua[at..]),
            os,
        };
    }
    // Safari names its version in `Version/`, after which `Safari/` holds
    // the WebKit build; any other WebKit browser was matched above.
    if ua.contains("Safari/") && ua.contains("AppleWebKit/") {
        let major = ua
            .find("Version/")
            .and_then(|at| major_version(&ua[at + "Version/".len()..]));
        return Summary {
            browser: Some("Safari"),
            major,
            os,
        };
    }
    Summary {
        browser: None,
        major: None,
        os,
    }
}

/// The leading digits of `s` as a number (at most 6 digits: no browser
/// has a longer major version, and more would be someone's joke).
fn major_version(s: &str) -> Option<u32> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 6 {
        return None;
    }
    s[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(ua: &str) -> (Option<String>, Option<&'static str>) {
        let s = summarize(Some(ua));
        (s.browser_label(), s.os)
    }

    #[test]
    fn common_browsers_are_named_with_their_major_version_and_system() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome 131",
                "Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
                "Edge 131",
                "Windows",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.7; rv:133.0) Gecko/20100101 Firefox/133.0",
                "Firefox 133",
                "macOS",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
                "Safari 18",
                "macOS",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
                "Safari 18",
                "iOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
                "Chrome 131",
                "Android",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
                "Opera 115",
                "Linux",
            ),
        ];
        for (ua, browser, os) in cases {
            assert_eq!(label(ua), (Some(browser.to_owned()), Some(os)), "{ua}");
        }
        assert_eq!(label("curl/8.5.0"), (Some("curl 8".to_owned()), None));
        assert_eq!(
            label("python-requests/2.32.3"),
            (Some("Python requests 2".to_owned()), None)
        );
    }

    #[test]
    fn unknown_or_missing_agents_give_no_browser_and_nothing_of_the_header() {
        assert_eq!(summarize(None), Summary::default());
        assert_eq!(summarize(Some("")), Summary::default());
        let hostile = "<script>alert(1)</script> Evil/1";
        let s = summarize(Some(hostile));
        assert_eq!(s.browser, None);
        assert_eq!(s.browser_label(), None);
        // A recognised family with a hostile "version" keeps only digits.
        let s = summarize(Some("Firefox/<b>bold</b>"));
        assert_eq!(s.browser_label().as_deref(), Some("Firefox"));
        let s = summarize(Some("Chrome/99999999999999999999"));
        assert_eq!(s.browser_label().as_deref(), Some("Chrome"));
    }

    #[test]
    fn only_a_bounded_prefix_is_read_and_multibyte_text_is_cut_safely() {
        let long = format!("{}Firefox/1", "é".repeat(MAX_SCANNED));
        assert_eq!(summarize(Some(&long)).browser, None);
        let s = summarize(Some(&format!("Chrome/7 {}", "x".repeat(100_000))));
        assert_eq!(s.browser_label().as_deref(), Some("Chrome 7"));
    }
}
