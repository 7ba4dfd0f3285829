//! The TOTP pages: the login's second step (a code, or a forced enrolment
//! with its QR code), the recovery codes shown once, and the enrolment
//! block the account page shares.
//!
//! Like every page of `pages`: no script, nothing loaded, every value
//! escaped, the shared stylesheet. The QR code is an inline `<svg>` element
//! (drawn by `qrcode`): markup, not a loaded image, so `default-src 'none'`
//! stays. Its colours are presentation attributes, not `style=""` (which
//! the CSP's hash would not cover).

use super::{document, html_escape, notice_p, Lang, Tone};

/// Why the second-step page is shown again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepNotice {
    /// Wrong, replayed or unknown code: one sentence for all (which one it
    /// was is the audit log's).
    WrongCode,
    /// Too many failures: wait this long.
    LockedOut { retry_after_secs: u64 },
    /// Attempts for this user are still being checked.
    Busy,
}

/// A secret offered for enrolment: the QR code of its URI and the text.
#[derive(Clone, Copy, Debug)]
pub struct Offer<'a> {
    /// The `otpauth://` URI.
    pub uri: &'a str,
    /// The base32 secret in groups of four.
    pub secret: &'a str,
}

/// Everything the second-step page shows.
#[derive(Clone, Copy, Debug)]
pub struct SecondStepView<'a> {
    pub lang: Lang,
    /// The form's POST target (`…/_nbgate/login/totp`).
    pub action: &'a str,
    /// Bound to the pending login.
    pub csrf_token: &'a str,
    /// "Start over": the login page.
    pub login_href: &'a str,
    pub notice: Option<StepNotice>,
    /// A forced enrolment: the secret to set up first.
    pub enrol: Option<Offer<'a>>,
}

struct StepText {
    title: &'static str,
    heading: &'static str,
    intro: &'static str,
    enrol_heading: &'static str,
    enrol_intro: &'static str,
    code_label: &'static str,
    enrol_code_label: &'static str,
    submit: &'static str,
    start_over: &'static str,
    wrong: &'static str,
    busy: &'static str,
}

impl StepText {
    fn of(lang: Lang) -> StepText {
        match lang {
            Lang::En => StepText {
                title: "nbgate — Two-step verification",
                heading: "Two-step verification",
                intro: "Enter the 6-digit code from your authenticator app, or one of your \
                        recovery codes.",
                enrol_heading: "Set up two-step verification",
                enrol_intro: "A second factor is required for this account. Scan the QR code \
                              with an authenticator app (or type the key into it), then enter \
                              the 6-digit code it shows.",
                code_label: "Code",
                enrol_code_label: "6-digit code from the app",
                submit: "Verify",
                start_over: "Start over",
                wrong: "That code is not valid. Try the current code from your app.",
                busy: "Please wait a moment and try again.",
            },
            Lang::ZhHans => StepText {
                title: "nbgate — 两步验证",
                heading: "两步验证",
                intro: "请输入身份验证器应用中的 6 位验证码，或一个恢复码。",
                enrol_heading: "设置两步验证",
                enrol_intro:
                    "此帐户必须使用第二重验证。请用身份验证器应用扫描二维码（或输入密钥），\
                              然后输入应用显示的 6 位验证码。",
                code_label: "验证码",
                enrol_code_label: "应用中的 6 位验证码",
                submit: "验证",
                start_over: "重新开始",
                wrong: "验证码无效。请使用应用中当前的验证码。",
                busy: "请稍候再试。",
            },
        }
    }
}

/// The sentence of a step notice.
fn step_notice(notice: StepNotice, lang: Lang) -> String {
    let t = StepText::of(lang);
    let text = match notice {
        StepNotice::WrongCode => t.wrong.to_owned(),
        StepNotice::Busy => t.busy.to_owned(),
        StepNotice::LockedOut { retry_after_secs } => {
            super::too_many_attempts(retry_after_secs, lang)
        }
    };
    notice_p(Tone::Error, &text)
}

/// The QR code of `uri` as an inline `<svg>` (no XML declaration), about
/// 230 px wide: it fits a phone's screen and scans from another screen.
pub fn qr_svg(uri: &str, label: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(uri.as_bytes()) else {
        // An otpauth URI is far below a QR code's capacity.
        return String::new();
    };
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .max_dimensions(240, 240)
        .build();
    let start = svg.find("<svg").unwrap_or(0);
    svg[start..].replacen(
        "<svg ",
        &format!(
            "<svg class=\"qr\" role=\"img\" aria-label=\"{}\" ",
            html_escape(label)
        ),
        1,
    )
}

/// The enrolment block: QR code, the key as text, how to use them.
pub fn offer_html(offer: &Offer<'_>, lang: Lang) -> String {
    let (qr_label, key_label) = match lang {
        Lang::En => ("QR code to scan with an authenticator app", "Key"),
        Lang::ZhHans => ("用身份验证器应用扫描的二维码", "密钥"),
    };
    format!(
        "<p>{}</p>\n<p>{}: <code>{}</code></p>\n",
        qr_svg(offer.uri, qr_label),
        html_escape(key_label),
        html_escape(offer.secret),
    )
}

/// The `code` field with element id `id`: one-time-code autofill, no
/// capitalization or correction (recovery codes are typed here too).
pub fn code_input(id: &str, label: &str, autofocus: bool) -> String {
    format!(
        "<label for=\"{id}\">{}</label>\n\
         <input id=\"{id}\" name=\"code\" type=\"text\" autocomplete=\"one-time-code\" \
         autocapitalize=\"none\" autocorrect=\"off\" spellcheck=\"false\" maxlength=\"32\" \
         required{}>\n",
        html_escape(label),
        if autofocus { " autofocus" } else { "" },
    )
}

/// The second step: a code form, or a forced enrolment (QR code, key,
/// first code). Form fields: `code` and the hidden `csrf`.
pub fn render_second_step(view: &SecondStepView<'_>) -> String {
    let t = StepText::of(view.lang);
    let (heading, intro, label) = match view.enrol {
        Some(_) => (t.enrol_heading, t.enrol_intro, t.enrol_code_label),
        None => (t.heading, t.intro, t.code_label),
    };
    let mut main = String::with_capacity(4096);
    main.push_str("<main>\n<p class=\"brand\">nbgate</p>\n");
    main.push_str(&format!("<h1>{}</h1>\n", html_escape(heading)));
    if let Some(n) = view.notice {
        main.push_str(&step_notice(n, view.lang));
    }
    main.push_str(&format!("<p>{}</p>\n", html_escape(intro)));
    if let Some(offer) = &view.enrol {
        main.push_str(&offer_html(offer, view.lang));
    }
    main.push_str(&format!(
        "<form method=\"post\" action=\"{}\" accept-charset=\"utf-8\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\n{}\
         <button type=\"submit\">{}</button>\n</form>\n\
         <p class=\"links\"><a href=\"{}\">{}</a></p>\n</main>\n",
        html_escape(view.action),
        html_escape(view.csrf_token),
        code_input("code", label, true),
        html_escape(t.submit),
        html_escape(view.login_href),
        html_escape(t.start_over),
    ));
    document(view.lang, t.title, &main)
}

/// What a page of recovery codes follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodesReason {
    /// Just enrolled (login or account page).
    Enrolled,
    /// The account page made new ones.
    Regenerated,
}

/// The recovery codes, shown this once, and a link on (`continue_href`).
pub fn render_recovery_codes(
    lang: Lang,
    codes: &[String],
    reason: CodesReason,
    continue_href: &str,
) -> String {
    let (title, heading, done, keep, go) = match lang {
        Lang::En => (
            "nbgate — Recovery codes",
            "Save your recovery codes",
            match reason {
                CodesReason::Enrolled => "Two-step verification is on.",
                CodesReason::Regenerated => {
                    "New recovery codes were made; the old ones no longer work."
                }
            },
            "If you lose your phone, each of these codes logs you in once instead of a 6-digit \
             code. Keep them somewhere safe: they are not shown again.",
            "Continue",
        ),
        Lang::ZhHans => (
            "nbgate — 恢复码",
            "保存您的恢复码",
            match reason {
                CodesReason::Enrolled => "两步验证已开启。",
                CodesReason::Regenerated => "已生成新的恢复码，旧的恢复码不再有效。",
            },
            "如果手机丢失，每个恢复码可代替 6 位验证码登录一次。请妥善保存：它们不会再次显示。",
            "继续",
        ),
    };
    let items: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>\n", html_escape(c)))
        .collect();
    let main = format!(
        "<main>\n<p class=\"brand\">nbgate</p>\n<h1>{}</h1>\n{}<p>{}</p>\n\
         <ul class=\"recovery-codes\">\n{items}</ul>\n\
         <a class=\"button\" href=\"{}\">{}</a>\n</main>\n",
        html_escape(heading),
        notice_p(Tone::Info, done),
        html_escape(keep),
        html_escape(continue_href),
        html_escape(go),
    );
    document(lang, title, &main)
}

/// After a login with a recovery code: how many remain, and a link on.
pub fn render_recovery_used(
    lang: Lang,
    left: usize,
    continue_href: &str,
    account_href: &str,
) -> String {
    let (title, heading, sentence, advice, go, account) = match lang {
        Lang::En => (
            "nbgate — Recovery code used",
            "Recovery code used",
            format!(
                "You logged in with a recovery code. It cannot be used again: {left} {} left.",
                if left == 1 { "code is" } else { "codes are" }
            ),
            "Make new codes on your account page before you run out.",
            "Continue",
            "Account",
        ),
        Lang::ZhHans => (
            "nbgate — 已使用恢复码",
            "已使用恢复码",
            format!("您已使用恢复码登录。该恢复码不能再次使用：还剩 {left} 个。"),
            "请在用完之前到帐户页面生成新的恢复码。",
            "继续",
            "帐户",
        ),
    };
    let main = format!(
        "<main>\n<p class=\"brand\">nbgate</p>\n<h1>{}</h1>\n{}<p>{}</p>\n\
         <a class=\"button\" href=\"{}\">{}</a>\n\
         <p class=\"links\"><a href=\"{}\">{}</a></p>\n</main>\n",
        html_escape(heading),
        notice_p(Tone::Info, &sentence),
        html_escape(advice),
        html_escape(continue_href),
        html_escape(go),
        html_escape(account_href),
        html_escape(account),
    );
    document(lang, title, &main)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "\"><script>alert(1)</script>";

    #[test]
    fn the_second_step_escapes_its_values_and_loads_nothing() {
        let page = render_second_step(&SecondStepView {
            lang: Lang::En,
            action: HOSTILE,
            csrf_token: HOSTILE,
            login_href: HOSTILE,
            notice: Some(StepNotice::WrongCode),
            enrol: None,
        });
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("autocomplete=\"one-time-code\""));
        assert!(page.contains("role=\"alert\""));
        assert!(!page.contains(" src="), "nothing is loaded");
    }

    #[test]
    fn a_forced_enrolment_shows_an_inline_svg_qr_code_and_the_key() {
        let page = render_second_step(&SecondStepView {
            lang: Lang::ZhHans,
            action: "/_nbgate/login/totp",
            csrf_token: "t",
            login_href: "/_nbgate/login",
            notice: None,
            enrol: Some(Offer {
                uri: "otpauth://totp/nbgate:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=nbgate",
                secret: "GEZD GNBV",
            }),
        });
        assert!(page.contains("<svg class=\"qr\" role=\"img\""), "{page}");
        assert!(!page.contains("<?xml"));
        assert!(
            !page.contains("style="),
            "no style attribute: the CSP hash does not cover one"
        );
        assert!(page.contains("GEZD GNBV"));
        assert!(page.contains("设置两步验证"));
    }

    #[test]
    fn recovery_codes_are_listed_and_the_count_left_is_said() {
        let codes = vec!["abcde-fghjk".to_owned(), "<b>".to_owned()];
        let page = render_recovery_codes(Lang::En, &codes, CodesReason::Enrolled, "/lab");
        assert!(page.contains("<code>abcde-fghjk</code>"));
        assert!(page.contains("&lt;b&gt;"));
        let used = render_recovery_used(Lang::En, 1, "/lab", "/_nbgate/account");
        assert!(used.contains("1 code is left"), "{used}");
        let used = render_recovery_used(Lang::ZhHans, 9, "/lab", "/_nbgate/account");
        assert!(used.contains("还剩 9 个"), "{used}");
    }
}
