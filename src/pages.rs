//! Every HTML page nbgate shows a person, and the JSON error bodies it sends API clients.
//!
//! Owns: the login page, the logged-out page, the logout form fragment, the sessions page
//! (a user's active sessions with forms to end them), the TOTP second step and the account
//! page (`totp`, `account`), the browser error pages, their one shared inline stylesheet, the Content-Security-Policy that goes with
//! them, Accept-Language negotiation between the two supported languages, and the shape of
//! the JSON error body.
//!
//! Must not: do I/O, choose status codes, read request state beyond the strings it is
//! handed, or judge whether a `next` target is safe (that is `crate::auth::next_path`; this
//! module only escapes it). Pages load nothing from anywhere, so the CSP can start from
//! `default-src 'none'`; keep it that way when editing the markup. The one script is the
//! passkey ceremony's (`passkey`: a constant allowed by its hash, issue 22 §2); every page
//! works without it.

// oidc: the single sign-on parts of the login page and its error pages.
pub mod oidc;

use std::sync::OnceLock;

// totp (issue 22 §1): the second step, recovery codes, the account page.
pub mod account;
pub mod totp;

use base64::Engine as _;
use http::StatusCode;

// passkeys (issue 22 §2): the login page's button, the passkeys page, their script.
pub mod passkey;

/// The languages nbgate's own pages are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhHans,
}

impl Lang {
    /// The BCP 47 tag for `<html lang>`, so screen readers pick the right voice.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhHans => "zh-Hans",
        }
    }
}

/// Language ranges looked at in one Accept-Language header; the rest is ignored so a
/// hostile header cannot make negotiation expensive.
const MAX_LANGUAGE_RANGES: usize = 32;

/// Picks the page language from an Accept-Language header (RFC 9110 §12.5.4).
///
/// q-values are honoured (highest wins, ties go to the earlier range, `q=0` means "not
/// this one", a malformed q-value drops that range). `zh`, `zh-CN`, `zh-SG`, `zh-Hans*` map
/// to [`Lang::ZhHans`]; Traditional Chinese (`zh-Hant*`, `zh-TW`, `zh-HK`, `zh-MO`) is not
/// offered and so falls through to English. `*` and `en*` map to English. Anything else, or
/// no header, gives English.
pub fn negotiate_lang(accept_language: Option<&str>) -> Lang {
    let Some(header) = accept_language else {
        return Lang::En;
    };
    let mut best: Option<(u16, Lang)> = None;
    for item in header.split(',').take(MAX_LANGUAGE_RANGES) {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or_default().trim();
        let mut quality = Some(1000);
        for param in parts {
            let param = param.trim();
            if let Some(value) = param
                .strip_prefix("q=")
                .or_else(|| param.strip_prefix("Q="))
            {
                quality = parse_qvalue(value.trim());
            }
        }
        let Some(quality) = quality.filter(|q| *q > 0) else {
            continue;
        };
        let Some(lang) = lang_for_range(range) else {
            continue;
        };
        match best {
            Some((best_quality, _)) if best_quality >= quality => {}
            _ => best = Some((quality, lang)),
        }
    }
    best.map_or(Lang::En, |(_, lang)| lang)
}

/// Maps one language range to a page language, or `None` when nbgate has no page in it.
fn lang_for_range(range: &str) -> Option<Lang> {
    let range = range.to_ascii_lowercase();
    let mut subtags = range.split('-');
    match subtags.next()? {
        "*" | "en" => Some(Lang::En),
        "zh" => {
            // Script before region in BCP 47, so the first decisive subtag wins:
            // zh-Hans-TW is Simplified, zh-Hant-CN is Traditional.
            for subtag in subtags {
                match subtag {
                    "hans" => return Some(Lang::ZhHans),
                    "hant" | "tw" | "hk" | "mo" => return None,
                    _ => {}
                }
            }
            Some(Lang::ZhHans)
        }
        _ => None,
    }
}

/// Parses an RFC 9110 §12.4.2 qvalue into thousandths (`0.5` -> 500), `None` if malformed.
fn parse_qvalue(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    let mut scale: u16 = 100;
    for digit in fraction.bytes() {
        thousandths += u16::from(digit - b'0') * scale;
        scale /= 10;
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The one stylesheet of every page, inlined in `<style>` and allowed by its hash in
/// [`page_csp`]. Never put `style=""` attributes in the markup: a hash does not cover them.
const STYLESHEET: &str = r#"
:root{color-scheme:light dark;--bg:#f4f5f7;--fg:#1c2026;--muted:#5d6572;--card:#fff;--line:#d4d8df;--field:#fff;--accent:#2d6bd8;--accent-fg:#fff;--focus:#2d6bd8;--err-bg:#fdeceb;--err-fg:#8b1d18;--info-bg:#e9f1fd;--info-fg:#1c4788}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--fg:#e5e7eb;--muted:#9ba3ae;--card:#1d2127;--line:#3a414b;--field:#15181d;--accent:#5c93ef;--accent-fg:#0c1016;--focus:#8db4f5;--err-bg:#3a1c1c;--err-fg:#f4b7b3;--info-bg:#1a2a43;--info-fg:#b8d0f6}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;padding:16px;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","Noto Sans","PingFang SC","Hiragino Sans GB","Microsoft YaHei",sans-serif}
main{width:100%;max-width:380px;background:var(--card);border:1px solid var(--line);border-radius:12px;padding:28px 24px}
.brand{margin:0 0 4px;color:var(--muted);font-size:14px;font-weight:600;letter-spacing:.04em}
h1{margin:0 0 20px;font-size:24px;line-height:1.25;font-weight:600}
p{margin:0 0 16px}
.muted{color:var(--muted);font-size:14px;margin:0}
.notice{padding:12px 14px;border-radius:8px;margin:0 0 20px}
.notice-error{background:var(--err-bg);color:var(--err-fg)}
.notice-info{background:var(--info-bg);color:var(--info-fg)}
label{display:block;margin:0 0 6px;font-weight:500}
input{display:block;width:100%;min-height:48px;margin:0 0 18px;padding:10px 12px;font:inherit;font-size:16px;color:var(--fg);background:var(--field);border:1px solid var(--line);border-radius:8px}
button,.button{display:block;width:100%;min-height:48px;padding:10px 16px;font:inherit;font-weight:600;text-align:center;text-decoration:none;color:var(--accent-fg);background:var(--accent);border:0;border-radius:8px;cursor:pointer}
button:hover,.button:hover{filter:brightness(1.08)}
input:focus-visible,button:focus-visible,.button:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.logout{margin:0}
.check{display:flex;gap:10px;align-items:center;margin:0 0 18px;font-weight:400}
.check input{width:24px;min-height:24px;height:24px;margin:0}
main.wide{max-width:600px}
a{color:var(--accent)}
.sessions{list-style:none;margin:0 0 20px;padding:0}
.sessions li{border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:0 0 12px}
.sessions li p{margin:0 0 8px}
.sessions form{margin:0}
.sessions button{width:auto;min-height:40px;padding:6px 14px}
.tag{display:inline-block;margin:0 0 0 8px;padding:0 8px;border-radius:999px;background:var(--info-bg);color:var(--info-fg);font-size:13px;font-weight:600}
.links{margin:16px 0 0}
.or{margin:16px 0;text-align:center;color:var(--muted)}
.sso{margin:0 0 12px}
"#;

/// The `sha256-...` CSP hash source of [`STYLESHEET`] (CSP Level 3 §2.3.1: base64 with padding).
fn style_hash_source() -> String {
    hash_source(STYLESHEET)
}

/// The `sha256-...` CSP hash source of an inline element's text.
fn hash_source(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

/// The Content-Security-Policy to send with every page this module renders.
///
/// `default-src 'none'` with the stylesheet allowed by hash (not `'unsafe-inline'`) stops
/// injected markup from running script or pulling in styles, and stops exfiltration through
/// loads; `img-src data:` only admits the empty `data:` favicon; `form-action 'self'` stops
/// an injected `<form>` or `formaction` from posting the password elsewhere;
/// `frame-ancestors 'none'` stops clickjacking of the login form; `base-uri 'none'` stops a
/// `<base>` tag from re-pointing the relative form action. The passkey script is allowed by
/// its hash alone (`script-src`, never `'unsafe-inline'`: injected markup still runs nothing),
/// and may `fetch` only nbgate itself (`connect-src 'self'`).
pub fn page_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; style-src '{}'; script-src '{}'; connect-src 'self'; \
             img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            style_hash_source(),
            passkey::script_hash_source()
        )
    })
    .as_str()
}

/// Why the login page is shown again, rendered as an announced message above the form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    WrongCredentials,
    RateLimited { retry_after_secs: u64 },
    LockedOut { retry_after_secs: u64 },
    LoggedOut,
    SessionExpired,
    CsrfFailed,
}

/// Everything the login page shows. All string fields are escaped on output; `next` must
/// already have passed `crate::auth::next_path::sanitize_next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginView<'a> {
    pub lang: Lang,
    /// The form's POST target, e.g. `/_nbgate/login`.
    pub action: &'a str,
    pub csrf_token: &'a str,
    pub next: &'a str,
    /// Prefilled after a failed attempt so only the password has to be typed again.
    pub username: &'a str,
    pub notice: Option<Notice>,
    /// oidc: the "Sign in with …" buttons, and whether the password form shows.
    pub sso: Option<oidc::SsoLogin<'a>>,
    /// passkeys (issue 22 §2): the "Sign in with a passkey" button; `None` when off.
    pub passkey: Option<passkey::PasskeyLogin<'a>>,
}

/// Renders the login page: one document, inline CSS, no script, no external resources.
///
/// Form fields: `username`, `password`, and the hidden `csrf` and `next`.
pub fn render_login(view: &LoginView<'_>) -> String {
    let (title, heading, user_label, password_label, submit) = match view.lang {
        Lang::En => (
            "nbgate — Log in",
            "Log in",
            "User name",
            "Password",
            "Log in",
        ),
        Lang::ZhHans => ("nbgate — 登录", "登录", "用户名", "密码", "登录"),
    };
    let (user_focus, password_focus) = if view.username.is_empty() {
        (" autofocus", "")
    } else {
        ("", " autofocus")
    };
    let mut main = String::with_capacity(1536);
    main.push_str("<main>\n<p class=\"brand\">nbgate</p>\n");
    main.push_str(&format!("<h1>{}</h1>\n", html_escape(heading)));
    if let Some(notice) = view.notice {
        main.push_str(&notice_html(notice, view.lang));
    }
    // oidc: the provider notice, then the password form only when it is on.
    let sso = view.sso.as_ref();
    if let Some(sso) = sso {
        main.push_str(&oidc::notice_html(sso, view.lang));
    }
    if sso.is_none_or(|s| s.password) {
        main.push_str(&format!(
            "<form method=\"post\" action=\"{action}\" accept-charset=\"utf-8\">\n\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
             <input type=\"hidden\" name=\"next\" value=\"{next}\">\n\
             <label for=\"username\">{user_label}</label>\n\
             <input id=\"username\" name=\"username\" type=\"text\" value=\"{username}\" \
             autocomplete=\"username\" autocapitalize=\"none\" autocorrect=\"off\" \
             spellcheck=\"false\" required{user_focus}>\n\
             <label for=\"password\">{password_label}</label>\n\
             <input id=\"password\" name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required{password_focus}>\n\
             <button type=\"submit\">{submit}</button>\n\
             </form>\n",
            action = html_escape(view.action),
            csrf = html_escape(view.csrf_token),
            next = html_escape(view.next),
            user_label = html_escape(user_label),
            username = html_escape(view.username),
            password_label = html_escape(password_label),
            submit = html_escape(submit),
        ));
    }
    if let Some(pk) = &view.passkey {
        main.push_str(&passkey::login_piece(
            view.lang,
            pk,
            view.csrf_token,
            view.next,
        ));
    }
    if let Some(sso) = sso {
        main.push_str(&oidc::buttons_html(sso, view.lang));
    }
    main.push_str("</main>\n");
    document(view.lang, title, &main)
}

/// The login page's notice paragraph, before the form.
fn notice_html(notice: Notice, lang: Lang) -> String {
    let tone = match notice {
        Notice::LoggedOut => Tone::Info,
        _ => Tone::Error,
    };
    notice_p(tone, &notice_text(notice, lang))
}

/// What a notice says: news (`notice-info`, `role="status"`: read out when the reader is
/// idle) or a refusal (`notice-error`, `role="alert"`: read out at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    Info,
    Error,
}

/// One notice paragraph: every page writes its notices here. Placed before a page's forms,
/// a screen reader announces it as soon as the page loads.
pub(crate) fn notice_p(tone: Tone, text: &str) -> String {
    let (class, role) = match tone {
        Tone::Info => ("notice-info", "status"),
        Tone::Error => ("notice-error", "alert"),
    };
    format!(
        "<p class=\"notice {class}\" role=\"{role}\">{}</p>\n",
        html_escape(text)
    )
}

/// The head every page of a logged-in user shares (sessions, passkeys, account): the wide
/// `<main>`, the brand, the heading, an optional notice and who is logged in. The caller
/// appends its content and closes `<main>`.
pub(crate) fn signed_in_head(
    heading: &str,
    notice: Option<(Tone, &str)>,
    who: &str,
    user: &str,
) -> String {
    let mut main = String::with_capacity(4096);
    main.push_str("<main class=\"wide\">\n<p class=\"brand\">nbgate</p>\n");
    main.push_str(&format!("<h1>{}</h1>\n", html_escape(heading)));
    if let Some((tone, text)) = notice {
        main.push_str(&notice_p(tone, text));
    }
    main.push_str(&format!(
        "<p>{} <strong>{}</strong></p>\n",
        html_escape(who),
        html_escape(user)
    ));
    main
}

/// The sentence for a notice.
///
/// Wrong user name and wrong password share one sentence, and a per-account lockout reads
/// the same as a per-address rate limit: either difference would let an attacker enumerate
/// user names.
fn notice_text(notice: Notice, lang: Lang) -> String {
    match (notice, lang) {
        (Notice::WrongCredentials, Lang::En) => "Wrong user name or password.".to_owned(),
        (Notice::WrongCredentials, Lang::ZhHans) => "用户名或密码错误。".to_owned(),
        (Notice::RateLimited { retry_after_secs } | Notice::LockedOut { retry_after_secs }, _) => {
            too_many_attempts(retry_after_secs, lang)
        }
        (Notice::LoggedOut, Lang::En) => "You have been logged out.".to_owned(),
        (Notice::LoggedOut, Lang::ZhHans) => "您已退出登录。".to_owned(),
        (Notice::SessionExpired, Lang::En) => {
            "Your session has expired. Please log in again.".to_owned()
        }
        (Notice::SessionExpired, Lang::ZhHans) => "会话已过期，请重新登录。".to_owned(),
        (Notice::CsrfFailed, Lang::En) => "This form has expired. Please try again.".to_owned(),
        (Notice::CsrfFailed, Lang::ZhHans) => "表单已过期，请重试。".to_owned(),
    }
}

fn too_many_attempts(retry_after_secs: u64, lang: Lang) -> String {
    let wait = humanize_wait(retry_after_secs, lang);
    match lang {
        Lang::En => format!("Too many attempts. Try again in {wait}."),
        Lang::ZhHans => format!("尝试次数过多。请在 {wait}后重试。"),
    }
}

/// "45 seconds", "5 minutes", "3 hours" (rounded up, so the user never retries too early).
/// Seconds below 2 minutes, minutes below 2 hours, then hours.
fn humanize_wait(secs: u64, lang: Lang) -> String {
    let secs = secs.max(1);
    let (count, unit) = if secs < 120 {
        (secs, Unit::Second)
    } else if secs < 2 * 60 * 60 {
        (secs.div_ceil(60), Unit::Minute)
    } else {
        (secs.div_ceil(60 * 60), Unit::Hour)
    };
    match (lang, unit) {
        (Lang::En, unit) => {
            let word = match unit {
                Unit::Second => "second",
                Unit::Minute => "minute",
                Unit::Hour => "hour",
            };
            let plural = if count == 1 { "" } else { "s" };
            format!("{count} {word}{plural}")
        }
        (Lang::ZhHans, Unit::Second) => format!("{count} 秒"),
        (Lang::ZhHans, Unit::Minute) => format!("{count} 分钟"),
        (Lang::ZhHans, Unit::Hour) => format!("{count} 小时"),
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Second,
    Minute,
    Hour,
}

/// A small page for an error a browser sees: localized title, one sentence, the code.
///
/// `retry_after_secs` is shown for 429 and 503 when `Some`. `code` (the JSON error code) picks
/// a more specific text where one exists (`upstream_auth`: what the administrator must fix).
/// Statuses without their own text get a generic sentence. The sentences never carry details
/// of the cause: those go to logs.
pub fn render_error_page(
    status: StatusCode,
    code: &str,
    lang: Lang,
    retry_after_secs: Option<u64>,
) -> String {
    let (heading, sentence) =
        code_text(code, lang).unwrap_or_else(|| error_text(status, lang, retry_after_secs));
    let (title, code_line) = match lang {
        Lang::En => (
            format!("nbgate — {heading}"),
            format!("Error {}", status.as_u16()),
        ),
        Lang::ZhHans => (
            format!("nbgate — {heading}"),
            format!("错误代码 {}", status.as_u16()),
        ),
    };
    let main = format!(
        "<main>\n<p class=\"brand\">nbgate</p>\n<h1>{}</h1>\n<p>{}</p>\n<p class=\"muted\">{}</p>\n</main>\n",
        html_escape(&heading),
        html_escape(&sentence),
        html_escape(&code_line),
    );
    document(lang, &title, &main)
}

/// (heading, sentence) for an error code that needs more than its status's text.
fn code_text(code: &str, lang: Lang) -> Option<(String, String)> {
    let (heading, sentence) = match (code, lang) {
        ("upstream_auth", Lang::En) => (
            "Jupyter refused nbgate",
            "nbgate has no token that Jupyter accepts, so it cannot open Jupyter for you. The \
             administrator can set upstream.token_file in nbgate's configuration to Jupyter's \
             token, or start Jupyter with `nbgate run -- jupyter lab`. nbgate's log says more.",
        ),
        ("upstream_auth", Lang::ZhHans) => (
            "Jupyter 拒绝了 nbgate",
            "nbgate 没有 Jupyter 接受的令牌，因此无法为您打开 Jupyter。管理员可以在 nbgate 的配置中\
             将 upstream.token_file 设为 Jupyter 的令牌，或用 `nbgate run -- jupyter lab` 启动 \
             Jupyter。详情见 nbgate 的日志。",
        ),
        ("session_not_found", Lang::En) => (
            "No such session",
            "That session is not one of your active sessions: it may have ended already. \
             Reload the sessions page to see the current list.",
        ),
        ("session_not_found", Lang::ZhHans) => (
            "没有这个会话",
            "该会话不是您当前活动的会话之一，可能已经结束。请重新加载会话页面查看最新列表。",
        ),
        ("login_session_required", Lang::En) => (
            "Log in with a browser",
            "The sessions page lists browser login sessions and needs one: an API token \
             cannot open it.",
        ),
        ("login_session_required", Lang::ZhHans) => (
            "请用浏览器登录",
            "会话页面列出浏览器登录会话，需要登录会话才能打开：API 令牌无法打开它。",
        ),
        // oidc: the refused sign-in pages.
        _ => oidc::code_text(code, lang)?,
    };
    Some((heading.to_owned(), sentence.to_owned()))
}

/// (heading, sentence) for an error status.
fn error_text(status: StatusCode, lang: Lang, retry_after_secs: Option<u64>) -> (String, String) {
    let wait = retry_after_secs.map(|secs| humanize_wait(secs, lang));
    let (heading, sentence): (&str, String) = match (status.as_u16(), lang) {
        (400, Lang::En) => ("Bad request", "The request could not be understood.".into()),
        (400, Lang::ZhHans) => ("请求无效", "无法理解该请求。".into()),
        (403, Lang::En) => ("Forbidden", "You do not have access to this page.".into()),
        (403, Lang::ZhHans) => ("禁止访问", "您无权访问此页面。".into()),
        (404, Lang::En) => ("Not found", "There is nothing at this address.".into()),
        (404, Lang::ZhHans) => ("未找到", "此地址没有内容。".into()),
        (421, Lang::En) => (
            "Misdirected request",
            "This server does not serve this host name.".into(),
        ),
        (421, Lang::ZhHans) => ("请求被误导", "此服务器不提供该主机名的服务。".into()),
        (429, Lang::En) => (
            "Too many requests",
            match wait {
                Some(wait) => format!("Too many requests. Try again in {wait}."),
                None => "Too many requests. Please wait a moment and try again.".into(),
            },
        ),
        (429, Lang::ZhHans) => (
            "请求过多",
            match wait {
                Some(wait) => format!("请求过多。请在 {wait}后重试。"),
                None => "请求过多，请稍后重试。".into(),
            },
        ),
        (431, Lang::En) => (
            "Request headers too large",
            "The request headers are too large. Clearing this site's cookies may help.".into(),
        ),
        (431, Lang::ZhHans) => (
            "请求头过大",
            "请求头过大。清除此网站的 Cookie 可能会有帮助。".into(),
        ),
        (500, Lang::En) => (
            "Internal server error",
            "Something went wrong on our side.".into(),
        ),
        (500, Lang::ZhHans) => ("服务器内部错误", "服务器出现了问题。".into()),
        (502, Lang::En) => (
            "Bad gateway",
            "The notebook server did not answer properly.".into(),
        ),
        (502, Lang::ZhHans) => ("网关错误", "笔记本服务器未能正确响应。".into()),
        (503, Lang::En) => (
            "Service unavailable",
            match wait {
                Some(wait) => {
                    format!("The service is temporarily unavailable. Try again in {wait}.")
                }
                None => "The service is temporarily unavailable. Please try again later.".into(),
            },
        ),
        (503, Lang::ZhHans) => (
            "服务不可用",
            match wait {
                Some(wait) => format!("服务暂时不可用。请在 {wait}后重试。"),
                None => "服务暂时不可用，请稍后重试。".into(),
            },
        ),
        (504, Lang::En) => (
            "Gateway timeout",
            "The notebook server took too long to answer.".into(),
        ),
        (504, Lang::ZhHans) => ("网关超时", "笔记本服务器响应超时。".into()),
        (_, Lang::En) => ("Error", "The request could not be completed.".into()),
        (_, Lang::ZhHans) => ("错误", "无法完成该请求。".into()),
    };
    (heading.to_owned(), sentence)
}

/// The page shown after logging out, with a link to log in again.
///
/// `login_href` is the login page's path (e.g. `/_nbgate/login`); it is escaped, not checked.
pub fn render_logged_out(lang: Lang, login_href: &str) -> String {
    let (title, heading, sentence, link) = match lang {
        Lang::En => (
            "nbgate — Logged out",
            "Logged out",
            "You have been logged out.",
            "Log in again",
        ),
        Lang::ZhHans => (
            "nbgate — 已退出登录",
            "已退出登录",
            "您已退出登录。",
            "重新登录",
        ),
    };
    let main = format!(
        "<main>\n<p class=\"brand\">nbgate</p>\n<h1>{}</h1>\n<p>{}</p>\n<a class=\"button\" href=\"{}\">{}</a>\n</main>\n",
        html_escape(heading),
        html_escape(sentence),
        html_escape(login_href),
        html_escape(link),
    );
    document(lang, title, &main)
}

/// An HTML fragment: a POST form with the hidden `csrf` field, an "on every device" checkbox
/// and a "Log out" button.
///
/// Logging out is a POST with a CSRF token so that a cross-site link or image cannot log the
/// user out. The checkbox asks for logout everywhere: every cookie the user holds, on any
/// device, stops working (for a lost laptop or a shared machine).
pub fn logout_form(action: &str, csrf_token: &str, lang: Lang) -> String {
    let (everywhere, label) = match lang {
        Lang::En => ("Also log out on every other device", "Log out"),
        Lang::ZhHans => ("同时在所有其他设备上退出", "退出登录"),
    };
    format!(
        "<form class=\"logout\" method=\"post\" action=\"{}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label class=\"check\"><input type=\"checkbox\" name=\"everywhere\" value=\"1\">{}</label>\
         <button type=\"submit\">{}</button></form>",
        html_escape(action),
        html_escape(csrf_token),
        html_escape(everywhere),
        html_escape(label),
    )
}

/// The logout page: who is logged in, the logout form, and a link to the sessions page
/// (`sessions_href`, escaped, not checked).
pub fn render_logout(
    lang: Lang,
    user: &str,
    action: &str,
    csrf_token: &str,
    sessions_href: &str,
    account_href: &str,
) -> String {
    let (title, heading, who, sessions, account) = match lang {
        Lang::En => (
            "nbgate — Log out",
            "Log out",
            "Logged in as",
            "See and end your other sessions",
            "Account: two-factor login and passkeys",
        ),
        Lang::ZhHans => (
            "nbgate — 退出登录",
            "退出登录",
            "当前用户",
            "查看并结束您的其他会话",
            "账户：两步验证与通行密钥",
        ),
    };
    let main = format!(
        "<main>\n<p class=\"brand\">nbgate</p>\n<h1>{}</h1>\n<p>{} <strong>{}</strong></p>\n{}\n\
         <p class=\"links\"><a href=\"{}\">{}</a></p>\n\
         <p class=\"links\"><a href=\"{}\">{}</a></p>\n</main>\n",
        html_escape(heading),
        html_escape(who),
        html_escape(user),
        logout_form(action, csrf_token, lang),
        html_escape(sessions_href),
        html_escape(sessions),
        html_escape(account_href),
        html_escape(account),
    );
    document(lang, title, &main)
}

/// One row of the sessions page. Every string is escaped on output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// The value the row's form posts as `end` (a short session id).
    pub handle: String,
    /// Browser and version (`Chrome 131`); `None`: not recognised.
    pub browser: Option<String>,
    pub os: Option<&'static str>,
    /// The client address of its latest connection.
    pub client: String,
    /// Unix seconds.
    pub started: u64,
    pub last_seen: u64,
    /// The session showing the page: marked, and without an end button.
    pub current: bool,
}

/// What the sessions page says after a form was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionsNotice {
    EndedOne,
    EndedOthers,
}

/// Everything the sessions page shows.
#[derive(Clone, Copy, Debug)]
pub struct SessionsView<'a> {
    pub lang: Lang,
    pub user: &'a str,
    pub rows: &'a [SessionRow],
    /// The forms' POST target, e.g. `/_nbgate/sessions`.
    pub action: &'a str,
    pub csrf_token: &'a str,
    pub logout_href: &'a str,
    pub notice: Option<SessionsNotice>,
}

/// The sessions page: the user's active sessions (this one marked), a POST form per other
/// session to end it (field `end` = its handle) and one to end all others (field
/// `end_others=1`), each with the hidden `csrf` field. Works without script, like every page.
pub fn render_sessions(view: &SessionsView<'_>) -> String {
    let t = SessionsText::of(view.lang);
    let notice = view.notice.map(|notice| match notice {
        SessionsNotice::EndedOne => (Tone::Info, t.ended_one),
        SessionsNotice::EndedOthers => (Tone::Info, t.ended_others),
    });
    let mut main = signed_in_head(t.heading, notice, t.who, view.user);
    main.push_str("<ul class=\"sessions\">\n");
    for row in view.rows {
        let what = browser_summary(row.browser.as_deref(), row.os, view.lang);
        let tag = if row.current {
            format!(
                " <span class=\"tag\">{}</span>",
                html_escape(t.this_session)
            )
        } else {
            String::new()
        };
        main.push_str(&format!(
            "<li{}>\n<p><strong>{}</strong>{tag}</p>\n\
             <p class=\"muted\">{} {} · {} {} · {} {}</p>\n",
            if row.current {
                " class=\"current\""
            } else {
                ""
            },
            html_escape(&what),
            html_escape(t.address),
            html_escape(&row.client),
            html_escape(t.started),
            utc_minute(row.started),
            html_escape(t.last_seen),
            utc_minute(row.last_seen),
        ));
        if !row.current {
            let label = format!("{}: {what}, {}", t.end_one, row.client);
            main.push_str(&format!(
                "<form method=\"post\" action=\"{}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <input type=\"hidden\" name=\"end\" value=\"{}\">\
                 <button type=\"submit\" aria-label=\"{}\">{}</button></form>\n",
                html_escape(view.action),
                html_escape(view.csrf_token),
                html_escape(&row.handle),
                html_escape(&label),
                html_escape(t.end_one),
            ));
        }
        main.push_str("</li>\n");
    }
    main.push_str("</ul>\n");
    if view.rows.iter().any(|r| !r.current) {
        main.push_str(&format!(
            "<form method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"end_others\" value=\"1\">\
             <button type=\"submit\">{}</button></form>\n",
            html_escape(view.action),
            html_escape(view.csrf_token),
            html_escape(t.end_others),
        ));
    } else {
        main.push_str(&format!(
            "<p class=\"muted\">{}</p>\n",
            html_escape(t.no_others)
        ));
    }
    main.push_str(&format!(
        "<p class=\"links\"><a href=\"{}\">{}</a></p>\n</main>\n",
        html_escape(view.logout_href),
        html_escape(t.logout),
    ));
    document(view.lang, t.title, &main)
}

/// The sessions page's words in one language.
struct SessionsText {
    title: &'static str,
    heading: &'static str,
    who: &'static str,
    this_session: &'static str,
    address: &'static str,
    started: &'static str,
    last_seen: &'static str,
    end_one: &'static str,
    end_others: &'static str,
    no_others: &'static str,
    ended_one: &'static str,
    ended_others: &'static str,
    logout: &'static str,
}

impl SessionsText {
    fn of(lang: Lang) -> Self {
        match lang {
            Lang::En => SessionsText {
                title: "nbgate — Sessions",
                heading: "Your sessions",
                who: "Logged in as",
                this_session: "This session",
                address: "Address",
                started: "Started",
                last_seen: "Last seen",
                end_one: "End session",
                end_others: "End all other sessions",
                no_others: "No other sessions are active.",
                ended_one: "The session was ended.",
                ended_others: "All other sessions were ended.",
                logout: "Log out",
            },
            Lang::ZhHans => SessionsText {
                title: "nbgate — 会话",
                heading: "您的会话",
                who: "当前用户",
                this_session: "当前会话",
                address: "地址",
                started: "开始于",
                last_seen: "最近活动",
                end_one: "结束会话",
                end_others: "结束所有其他会话",
                no_others: "没有其他活动的会话。",
                ended_one: "该会话已结束。",
                ended_others: "所有其他会话均已结束。",
                logout: "退出登录",
            },
        }
    }
}

/// "Chrome 131 on Linux" / "Linux 上的 Chrome 131", from a summary's parts.
fn browser_summary(browser: Option<&str>, os: Option<&str>, lang: Lang) -> String {
    let browser = browser.unwrap_or(match lang {
        Lang::En => "Unknown browser",
        Lang::ZhHans => "未知浏览器",
    });
    match (os, lang) {
        (None, _) => browser.to_owned(),
        (Some(os), Lang::En) => format!("{browser} on {os}"),
        (Some(os), Lang::ZhHans) => format!("{os} 上的 {browser}"),
    }
}

/// `2026-12-02 10:29 UTC`: UTC, not the browser's zone (a page without script cannot know
/// it), to the minute (the registry's last-seen time is no more precise).
fn utc_minute(unix: u64) -> String {
    let t = i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// Wraps a `<main>` in the shared document: viewport, favicon, stylesheet.
///
/// The empty `data:` favicon stops the browser from asking the gate for `/favicon.ico`;
/// `no-referrer` keeps the login URL (with its `next`) out of Referer headers.
fn document(lang: Lang, title: &str, main: &str) -> String {
    format!(
        "<!DOCTYPE html>\n\
         <html lang=\"{lang}\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <meta name=\"robots\" content=\"noindex, nofollow\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{title}</title>\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <style>{STYLESHEET}</style>\n\
         </head>\n\
         <body>\n{main}</body>\n\
         </html>\n",
        lang = lang.tag(),
        title = html_escape(title),
    )
}

/// JSON error body for API clients:
/// `{"error": code, "message": message, "status": n}` plus `"retry_after": secs` when `Some`.
///
/// `code` is a stable snake_case identifier clients can match on; `message` is one English
/// sentence for humans reading logs. Neither may carry internal details.
pub fn error_json(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after_secs: Option<u64>,
) -> String {
    let mut body = serde_json::Map::new();
    body.insert("error".to_owned(), code.into());
    body.insert("message".to_owned(), message.into());
    body.insert("status".to_owned(), status.as_u16().into());
    if let Some(secs) = retry_after_secs {
        body.insert("retry_after".to_owned(), secs.into());
    }
    serde_json::Value::Object(body).to_string()
}

/// Escapes `& < > " '` so `s` is inert in HTML text and in quoted attribute values.
/// Every interpolated value goes through here: it is what stops reflected XSS through a
/// user name, a `next` value or a token.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "\"><script>alert('x')</script>";

    fn view(lang: Lang, notice: Option<Notice>) -> LoginView<'static> {
        LoginView {
            lang,
            action: "/_nbgate/login",
            csrf_token: "tok123",
            next: "/lab",
            username: "",
            notice,
            sso: None,
            passkey: None,
        }
    }

    fn all_pages() -> Vec<String> {
        let mut pages = vec![
            render_login(&view(Lang::En, None)),
            render_login(&view(Lang::ZhHans, Some(Notice::WrongCredentials))),
            render_logged_out(Lang::En, "/_nbgate/login"),
            render_logged_out(Lang::ZhHans, "/_nbgate/login"),
            render_logout(Lang::En, "a", "/l", "t", "/s", "/a"),
            render_logout(Lang::ZhHans, "a", "/l", "t", "/s", "/a"),
        ];
        for lang in [Lang::En, Lang::ZhHans] {
            pages.push(render_sessions(&sessions_view(lang, &rows())));
            pages.push(render_sessions(&sessions_view(lang, &rows()[..1])));
        }
        for code in [400, 403, 404, 421, 429, 431, 500, 502, 503, 504, 418] {
            let status = StatusCode::from_u16(code).expect("valid status code");
            for lang in [Lang::En, Lang::ZhHans] {
                pages.push(render_error_page(status, "", lang, Some(30)));
                pages.push(render_error_page(status, "", lang, None));
            }
        }
        for lang in [Lang::En, Lang::ZhHans] {
            pages.push(render_error_page(
                StatusCode::BAD_GATEWAY,
                "upstream_auth",
                lang,
                None,
            ));
        }
        // oidc: the login page with "Sign in with" buttons, with and without the
        // password form, and the refused sign-in pages.
        let buttons = [oidc::SsoButton {
            display_name: "Corp".into(),
            href: "/_nbgate/oidc/corp?next=%2Flab".into(),
        }];
        for (lang, password) in [(Lang::En, true), (Lang::ZhHans, false)] {
            pages.push(render_login(&LoginView {
                sso: Some(oidc::SsoLogin {
                    buttons: &buttons,
                    password,
                    notice: Some(oidc::SsoNotice::Unavailable {
                        display_name: "Corp",
                    }),
                }),
                ..view(lang, None)
            }));
            for code in ["oidc_state", "oidc_not_allowed", "oidc_failed"] {
                pages.push(render_error_page(StatusCode::FORBIDDEN, code, lang, None));
            }
        }
        pages
    }

    fn rows() -> Vec<SessionRow> {
        vec![
            SessionRow {
                handle: "AAAAaaaa".into(),
                browser: Some("Chrome 131".into()),
                os: Some("Linux"),
                client: "127.0.0.1".into(),
                started: 1_764_671_355,
                last_seen: 1_764_671_415,
                current: true,
            },
            SessionRow {
                handle: "BBBBbbbb".into(),
                browser: None,
                os: None,
                client: "2001:db8::1".into(),
                started: 0,
                last_seen: 60,
                current: false,
            },
        ]
    }

    fn sessions_view(lang: Lang, rows: &[SessionRow]) -> SessionsView<'_> {
        SessionsView {
            lang,
            user: "alice",
            rows,
            action: "/_nbgate/sessions",
            csrf_token: "tok",
            logout_href: "/_nbgate/logout",
            notice: Some(SessionsNotice::EndedOne),
        }
    }

    fn inline_style(page: &str) -> &str {
        let start = page.find("<style>").expect("page has a <style>") + "<style>".len();
        let end = page.find("</style>").expect("page closes its <style>");
        &page[start..end]
    }

    #[test]
    fn html_escape_escapes_all_five_special_characters() {
        assert_eq!(
            html_escape(r#"a&b<c>d"e'f"#),
            "a&amp;b&lt;c&gt;d&quot;e&#39;f"
        );
        assert_eq!(html_escape("用户 plain"), "用户 plain");
    }

    #[test]
    fn login_page_escapes_hostile_username_next_csrf_and_action() {
        let page = render_login(&LoginView {
            lang: Lang::En,
            action: HOSTILE,
            csrf_token: HOSTILE,
            next: HOSTILE,
            username: HOSTILE,
            notice: Some(Notice::WrongCredentials),
            sso: None,
            passkey: None,
        });
        assert!(!page.contains("<script"));
        assert!(!page.contains(HOSTILE));
        assert!(
            page.contains("value=\"&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;\"")
        );
    }

    #[test]
    fn logged_out_page_and_logout_form_escape_their_inputs() {
        assert!(!render_logged_out(Lang::En, HOSTILE).contains("<script"));
        let form = logout_form(HOSTILE, HOSTILE, Lang::En);
        assert!(!form.contains("<script"));
        assert!(form.contains("method=\"post\""));
        assert!(form.contains("name=\"csrf\""));
        assert!(form.contains(">Log out</button>"));
        assert!(logout_form("/_nbgate/logout", "t", Lang::ZhHans).contains(">退出登录</button>"));
        assert!(form.contains("name=\"everywhere\""));
        let page = render_logout(Lang::En, HOSTILE, HOSTILE, HOSTILE, HOSTILE, HOSTILE);
        assert!(!page.contains("<script"));
        assert!(page.contains("Logged in as"));
        let page = render_logout(
            Lang::En,
            "a",
            "/_nbgate/logout",
            "t",
            "/_nbgate/sessions",
            "/_nbgate/account",
        );
        assert!(page.contains("<a href=\"/_nbgate/sessions\">See and end your other sessions</a>"));
        assert!(page
            .contains("<a href=\"/_nbgate/account\">Account: two-factor login and passkeys</a>"));
    }

    #[test]
    fn sessions_page_marks_this_session_and_offers_forms_only_for_the_others() {
        let page = render_sessions(&sessions_view(Lang::En, &rows()));
        assert!(page.contains("<title>nbgate — Sessions</title>"));
        assert!(page.contains(
            "<strong>Chrome 131 on Linux</strong> <span class=\"tag\">This session</span>"
        ));
        assert!(page.contains(
            "Address 127.0.0.1 · Started 2025-12-02 10:29 UTC · Last seen 2025-12-02 10:30 UTC"
        ));
        assert!(page.contains("<strong>Unknown browser</strong></p>"));
        assert!(page.contains("Started 1970-01-01 00:00 UTC · Last seen 1970-01-01 00:01 UTC"));
        // One end form (the other session's), one end-all-others form, both with the token.
        assert_eq!(
            page.matches("<form method=\"post\" action=\"/_nbgate/sessions\">")
                .count(),
            2
        );
        assert_eq!(page.matches("name=\"csrf\" value=\"tok\"").count(), 2);
        assert!(page.contains("name=\"end\" value=\"BBBBbbbb\""));
        assert!(
            !page.contains("value=\"AAAAaaaa\""),
            "no form ends this session"
        );
        assert!(page.contains("aria-label=\"End session: Unknown browser, 2001:db8::1\""));
        assert!(page.contains("name=\"end_others\" value=\"1\""));
        assert!(page.contains("role=\"status\">The session was ended.</p>"));
        let alone = render_sessions(&sessions_view(Lang::En, &rows()[..1]));
        assert!(!alone.contains("<form"));
        assert!(alone.contains("No other sessions are active."));
    }

    #[test]
    fn sessions_page_in_chinese_and_escaped() {
        let page = render_sessions(&sessions_view(Lang::ZhHans, &rows()));
        assert!(page.contains("<html lang=\"zh-Hans\">"));
        assert!(page.contains("<h1>您的会话</h1>"));
        assert!(page.contains("Linux 上的 Chrome 131"));
        assert!(page.contains("当前会话"));
        assert!(page.contains(">结束所有其他会话</button>"));
        let hostile = vec![SessionRow {
            handle: HOSTILE.into(),
            browser: Some(HOSTILE.into()),
            client: HOSTILE.into(),
            ..rows()[1].clone()
        }];
        let page = render_sessions(&SessionsView {
            user: HOSTILE,
            action: HOSTILE,
            csrf_token: HOSTILE,
            logout_href: HOSTILE,
            ..sessions_view(Lang::En, &hostile)
        });
        assert!(!page.contains("<script"));
        assert!(!page.contains(HOSTILE));
    }

    #[test]
    fn zh_cn_accept_language_renders_simplified_chinese_login() {
        let lang = negotiate_lang(Some("zh-CN,zh;q=0.9,en;q=0.8"));
        assert_eq!(lang, Lang::ZhHans);
        let page = render_login(&view(lang, None));
        assert!(page.contains("<html lang=\"zh-Hans\">"));
        assert!(page.contains("<title>nbgate — 登录</title>"));
        assert!(page.contains("<button type=\"submit\">登录</button>"));
        assert!(page.contains("<label for=\"username\">用户名</label>"));
    }

    #[test]
    fn english_login_has_title_button_and_lang() {
        let page = render_login(&view(Lang::En, None));
        assert!(page.contains("<html lang=\"en\">"));
        assert!(page.contains("<title>nbgate — Log in</title>"));
        assert!(page.contains("<button type=\"submit\">Log in</button>"));
    }

    #[test]
    fn negotiation_honours_q_values_over_order() {
        assert_eq!(negotiate_lang(Some("en;q=0.5, zh;q=0.9")), Lang::ZhHans);
        assert_eq!(negotiate_lang(Some("zh;q=0.4, en;q=0.9")), Lang::En);
        assert_eq!(negotiate_lang(Some("zh;q=0, en;q=0.1")), Lang::En);
        assert_eq!(negotiate_lang(Some("zh;q=1.000, en")), Lang::ZhHans);
    }

    #[test]
    fn negotiation_breaks_ties_by_order_and_ignores_malformed_q() {
        assert_eq!(negotiate_lang(Some("en, zh")), Lang::En);
        assert_eq!(negotiate_lang(Some("zh, en")), Lang::ZhHans);
        assert_eq!(negotiate_lang(Some("zh;q=2, en;q=0.1")), Lang::En);
        assert_eq!(negotiate_lang(Some("zh;q=abc")), Lang::En);
    }

    #[test]
    fn negotiation_maps_chinese_variants() {
        for simplified in ["zh", "zh-CN", "ZH-cn", "zh-Hans", "zh-SG", "zh-Hans-TW"] {
            assert_eq!(
                negotiate_lang(Some(simplified)),
                Lang::ZhHans,
                "{simplified}"
            );
        }
        for traditional in ["zh-TW", "zh-Hant", "zh-HK", "zh-Hant-CN", "zh-MO"] {
            assert_eq!(negotiate_lang(Some(traditional)), Lang::En, "{traditional}");
        }
        assert_eq!(negotiate_lang(Some("zh-TW, zh-CN;q=0.5")), Lang::ZhHans);
    }

    #[test]
    fn negotiation_defaults_to_english() {
        assert_eq!(negotiate_lang(None), Lang::En);
        assert_eq!(negotiate_lang(Some("")), Lang::En);
        assert_eq!(negotiate_lang(Some("fr-FR, de;q=0.8")), Lang::En);
        assert_eq!(negotiate_lang(Some("*")), Lang::En);
        assert_eq!(negotiate_lang(Some(";;;,,,q=")), Lang::En);
    }

    #[test]
    fn no_page_contains_a_script_or_an_absolute_url() {
        for page in all_pages() {
            let lower = page.to_ascii_lowercase();
            assert!(!lower.contains("<script"), "{page}");
            assert!(!lower.contains("http://"), "{page}");
            assert!(!lower.contains("https://"), "{page}");
            assert!(!lower.contains(" style="), "{page}");
        }
    }

    #[test]
    fn csp_style_hash_matches_the_inline_style_of_every_page() {
        let csp = page_csp();
        for page in all_pages() {
            let digest =
                ring::digest::digest(&ring::digest::SHA256, inline_style(&page).as_bytes());
            let expected = format!(
                "style-src 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
            );
            assert!(csp.contains(&expected), "{csp} lacks {expected}");
        }
    }

    #[test]
    fn csp_forbids_everything_it_does_not_need() {
        let csp = page_csp();
        for directive in [
            "default-src 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "img-src data:",
        ] {
            assert!(csp.contains(directive), "{csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe"));
    }

    #[test]
    fn sha256_base64_matches_known_answer() {
        // FIPS 180-2 test vector "abc", base64 of
        // ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.
        let digest = ring::digest::digest(&ring::digest::SHA256, b"abc");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref()),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn role_alert_appears_only_with_a_notice_and_before_the_form() {
        assert!(!render_login(&view(Lang::En, None)).contains("role=\"alert\""));
        let page = render_login(&view(Lang::En, Some(Notice::WrongCredentials)));
        let alert = page.find("role=\"alert\"").expect("notice is rendered");
        let form = page.find("<form").expect("form is rendered");
        assert!(alert < form);
        assert!(page.contains(">Wrong user name or password.</p>"));
        let zh = render_login(&view(Lang::ZhHans, Some(Notice::WrongCredentials)));
        assert!(zh.contains(">用户名或密码错误。</p>"));
    }

    #[test]
    fn rate_limit_and_lockout_read_the_same_and_humanize_long_waits() {
        let text = |notice| notice_text(notice, Lang::En);
        assert_eq!(
            text(Notice::RateLimited {
                retry_after_secs: 30
            }),
            "Too many attempts. Try again in 30 seconds."
        );
        assert_eq!(
            text(Notice::LockedOut {
                retry_after_secs: 30
            }),
            text(Notice::RateLimited {
                retry_after_secs: 30
            })
        );
        assert_eq!(
            text(Notice::LockedOut {
                retry_after_secs: 1
            }),
            "Too many attempts. Try again in 1 second."
        );
        assert_eq!(
            text(Notice::RateLimited {
                retry_after_secs: 119
            }),
            "Too many attempts. Try again in 119 seconds."
        );
        assert_eq!(
            text(Notice::LockedOut {
                retry_after_secs: 300
            }),
            "Too many attempts. Try again in 5 minutes."
        );
        assert_eq!(
            text(Notice::LockedOut {
                retry_after_secs: 241
            }),
            "Too many attempts. Try again in 5 minutes."
        );
        assert_eq!(
            text(Notice::LockedOut {
                retry_after_secs: 3 * 3600
            }),
            "Too many attempts. Try again in 3 hours."
        );
        assert_eq!(
            notice_text(
                Notice::RateLimited {
                    retry_after_secs: 300
                },
                Lang::ZhHans
            ),
            "尝试次数过多。请在 5 分钟后重试。"
        );
        assert_eq!(
            notice_text(
                Notice::LockedOut {
                    retry_after_secs: 45
                },
                Lang::ZhHans
            ),
            "尝试次数过多。请在 45 秒后重试。"
        );
    }

    #[test]
    fn login_form_is_accessible_and_autofocuses_the_first_empty_field() {
        let empty = render_login(&view(Lang::En, None));
        for needle in [
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            "<label for=\"username\">",
            "<label for=\"password\">",
            "autocomplete=\"username\"",
            "autocomplete=\"current-password\"",
            "<input type=\"hidden\" name=\"csrf\" value=\"tok123\">",
            "<input type=\"hidden\" name=\"next\" value=\"/lab\">",
            "method=\"post\" action=\"/_nbgate/login\"",
        ] {
            assert!(empty.contains(needle), "missing {needle}");
        }
        assert!(empty.contains("required autofocus>\n<label for=\"password\">"));
        let prefilled = render_login(&LoginView {
            username: "alice",
            ..view(Lang::En, Some(Notice::WrongCredentials))
        });
        assert!(prefilled.contains("value=\"alice\""));
        assert!(prefilled.contains("autocomplete=\"current-password\" required autofocus>"));
        assert_eq!(prefilled.matches("autofocus").count(), 1);
    }

    #[test]
    fn error_pages_show_localized_title_and_retry_time() {
        let page = render_error_page(StatusCode::TOO_MANY_REQUESTS, "", Lang::En, Some(30));
        assert!(page.contains("<title>nbgate — Too many requests</title>"));
        assert!(page.contains("Try again in 30 seconds."));
        assert!(page.contains("Error 429"));
        let page = render_error_page(StatusCode::SERVICE_UNAVAILABLE, "", Lang::ZhHans, Some(600));
        assert!(page.contains("<html lang=\"zh-Hans\">"));
        assert!(page.contains("请在 10 分钟后重试。"));
        let page = render_error_page(StatusCode::NOT_FOUND, "", Lang::En, Some(30));
        assert!(!page.contains("Try again"));
        let page = render_error_page(StatusCode::IM_A_TEAPOT, "", Lang::En, None);
        assert!(page.contains("The request could not be completed."));
    }

    #[test]
    fn error_json_is_valid_and_has_the_fields() {
        let body = error_json(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many \"requests\".",
            Some(42),
        );
        let value: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(value["error"], "rate_limited");
        assert_eq!(value["message"], "Too many \"requests\".");
        assert_eq!(value["status"], 429);
        assert_eq!(value["retry_after"], 42);

        let body = error_json(StatusCode::FORBIDDEN, "forbidden", "Not allowed.", None);
        let value: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(value["error"], "forbidden");
        assert!(value.get("retry_after").is_none());
    }
}
