//! The account page: who is logged in, links to the sessions and passkeys
//! pages, and the TOTP section (enrol with a QR code and a first code, make
//! new recovery codes, remove). No script; every form posts back to the
//! page with the hidden `csrf` field (bound to the session) and an `action`.

use super::totp::{code_input, offer_html, Offer};
use super::{document, html_escape, too_many_attempts, utc_minute, Lang};

/// The TOTP state the page shows.
#[derive(Clone, Copy, Debug)]
pub enum TotpSection<'a> {
    /// Enrolled: since when, and recovery codes left.
    On {
        enrolled_at: u64,
        recovery_left: usize,
    },
    /// Not enrolled: the offer to enrol with, sealed for the form
    /// (`sealed` goes back as the hidden `offer` field).
    Off {
        offer: Offer<'a>,
        sealed: &'a str,
        required: bool,
    },
}

/// What the account page says after a form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountNotice {
    /// TOTP was removed.
    Removed,
    /// The code typed was not valid (the action was not done).
    WrongCode,
    /// Too many failed codes: wait.
    LockedOut { retry_after_secs: u64 },
    /// The enrolment offer expired (the page was open too long).
    OfferExpired,
}

/// Everything the account page shows.
#[derive(Clone, Copy, Debug)]
pub struct AccountView<'a> {
    pub lang: Lang,
    pub user: &'a str,
    /// The forms' POST target (`…/_nbgate/account`).
    pub action: &'a str,
    pub csrf_token: &'a str,
    pub sessions_href: &'a str,
    pub passkeys_href: &'a str,
    pub logout_href: &'a str,
    pub totp: TotpSection<'a>,
    pub notice: Option<AccountNotice>,
}

struct AccountText {
    title: &'static str,
    heading: &'static str,
    who: &'static str,
    sessions: &'static str,
    passkeys: &'static str,
    logout: &'static str,
    totp_heading: &'static str,
    on: &'static str,
    since: &'static str,
    left: &'static str,
    off: &'static str,
    required: &'static str,
    enrol_intro: &'static str,
    enrol_label: &'static str,
    enrol: &'static str,
    regenerate_intro: &'static str,
    regenerate: &'static str,
    remove_intro: &'static str,
    remove: &'static str,
    code_label: &'static str,
    removed: &'static str,
    wrong: &'static str,
    expired: &'static str,
}

impl AccountText {
    fn of(lang: Lang) -> AccountText {
        match lang {
            Lang::En => AccountText {
                title: "nbgate — Account",
                heading: "Your account",
                who: "Logged in as",
                sessions: "Your sessions",
                passkeys: "Passkeys",
                logout: "Log out",
                totp_heading: "Two-step verification (TOTP)",
                on: "On",
                since: "since",
                left: "Recovery codes left:",
                off: "Off: your password alone logs you in.",
                required: "Your administrator requires it: your next login will ask you to set it up if you do not now.",
                enrol_intro: "Scan the QR code with an authenticator app (or type the key into it), then enter the 6-digit code it shows.",
                enrol_label: "6-digit code from the app",
                enrol: "Turn on",
                regenerate_intro: "Make ten new recovery codes (the old ones stop working). Enter a current code to confirm.",
                regenerate: "Make new recovery codes",
                remove_intro: "Turn two-step verification off. Enter a current code to confirm.",
                remove: "Turn off",
                code_label: "Current 6-digit code",
                removed: "Two-step verification is off.",
                wrong: "That code is not valid: nothing was changed.",
                expired: "This form has expired. Please try again.",
            },
            Lang::ZhHans => AccountText {
                title: "nbgate — 帐户",
                heading: "您的帐户",
                who: "当前用户",
                sessions: "您的会话",
                passkeys: "通行密钥",
                logout: "退出登录",
                totp_heading: "两步验证（TOTP）",
                on: "已开启",
                since: "开启于",
                left: "剩余恢复码：",
                off: "未开启：仅凭密码即可登录。",
                required: "管理员要求开启：如果您现在不设置，下次登录时将要求您设置。",
                enrol_intro: "请用身份验证器应用扫描二维码（或输入密钥），然后输入应用显示的 6 位验证码。",
                enrol_label: "应用中的 6 位验证码",
                enrol: "开启",
                regenerate_intro: "生成十个新的恢复码（旧的将失效）。请输入当前验证码以确认。",
                regenerate: "生成新的恢复码",
                remove_intro: "关闭两步验证。请输入当前验证码以确认。",
                remove: "关闭",
                code_label: "当前 6 位验证码",
                removed: "两步验证已关闭。",
                wrong: "验证码无效：未做任何更改。",
                expired: "表单已过期，请重试。",
            },
        }
    }
}

/// One POST form of the page: hidden `csrf` and `action`, extra hidden
/// fields, a code field, a button.
fn form(
    view: &AccountView<'_>,
    action: &str,
    hidden: &[(&str, &str)],
    label: &str,
    button: &str,
) -> String {
    let extra: String = hidden
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                html_escape(k),
                html_escape(v)
            )
        })
        .collect();
    format!(
        "<form method=\"post\" action=\"{}\" accept-charset=\"utf-8\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
         <input type=\"hidden\" name=\"action\" value=\"{}\">\n{extra}{}\
         <button type=\"submit\">{}</button>\n</form>\n",
        html_escape(view.action),
        html_escape(view.csrf_token),
        html_escape(action),
        code_input(&format!("code-{action}"), label, false),
        html_escape(button),
    )
}

/// The account page.
pub fn render_account(view: &AccountView<'_>) -> String {
    let t = AccountText::of(view.lang);
    let mut main = String::with_capacity(8192);
    main.push_str("<main class=\"wide\">\n<p class=\"brand\">nbgate</p>\n");
    main.push_str(&format!("<h1>{}</h1>\n", html_escape(t.heading)));
    if let Some(n) = view.notice {
        let (class, text) = match n {
            AccountNotice::Removed => ("notice-info", t.removed.to_owned()),
            AccountNotice::WrongCode => ("notice-error", t.wrong.to_owned()),
            AccountNotice::OfferExpired => ("notice-error", t.expired.to_owned()),
            AccountNotice::LockedOut { retry_after_secs } => (
                "notice-error",
                too_many_attempts(retry_after_secs, view.lang),
            ),
        };
        main.push_str(&format!(
            "<p class=\"notice {class}\" role=\"alert\">{}</p>\n",
            html_escape(&text)
        ));
    }
    main.push_str(&format!(
        "<p>{} <strong>{}</strong></p>\n<p class=\"links\"><a href=\"{}\">{}</a> · <a href=\"{}\">{}</a> · <a href=\"{}\">{}</a></p>\n",
        html_escape(t.who),
        html_escape(view.user),
        html_escape(view.sessions_href),
        html_escape(t.sessions),
        html_escape(view.passkeys_href),
        html_escape(t.passkeys),
        html_escape(view.logout_href),
        html_escape(t.logout),
    ));
    main.push_str(&format!(
        "<section id=\"totp\">\n<h2>{}</h2>\n",
        html_escape(t.totp_heading)
    ));
    match view.totp {
        TotpSection::On {
            enrolled_at,
            recovery_left,
        } => {
            main.push_str(&format!(
                "<p><strong>{}</strong> <span class=\"muted\">({} {})</span></p>\n<p>{} <strong class=\"recovery-left\">{recovery_left}</strong></p>\n",
                html_escape(t.on),
                html_escape(t.since),
                utc_minute(enrolled_at),
                html_escape(t.left),
            ));
            // Each action a bordered item of the list style the sessions page
            // uses for one form per item: spaced and grouped on a phone.
            main.push_str(&format!(
                "<ul class=\"sessions\">\n<li>\n<p>{}</p>\n{}</li>\n<li>\n<p>{}</p>\n{}</li>\n</ul>\n",
                html_escape(t.regenerate_intro),
                form(view, "regenerate", &[], t.code_label, t.regenerate),
                html_escape(t.remove_intro),
                form(view, "remove", &[], t.code_label, t.remove),
            ));
        }
        TotpSection::Off {
            offer,
            sealed,
            required,
        } => {
            main.push_str(&format!("<p>{}</p>\n", html_escape(t.off)));
            if required {
                main.push_str(&format!(
                    "<p class=\"notice notice-info\">{}</p>\n",
                    html_escape(t.required)
                ));
            }
            main.push_str(&format!("<p>{}</p>\n", html_escape(t.enrol_intro)));
            main.push_str(&offer_html(&offer, view.lang));
            main.push_str(&form(
                view,
                "enrol",
                &[("offer", sealed)],
                t.enrol_label,
                t.enrol,
            ));
        }
    }
    main.push_str("</section>\n</main>\n");
    document(view.lang, t.title, &main)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(totp: TotpSection<'a>, lang: Lang) -> AccountView<'a> {
        AccountView {
            lang,
            user: "<alice>",
            action: "/_nbgate/account",
            csrf_token: "tok",
            sessions_href: "/_nbgate/sessions",
            passkeys_href: "/_nbgate/passkeys",
            logout_href: "/_nbgate/logout",
            totp,
            notice: None,
        }
    }

    #[test]
    fn an_enrolled_user_gets_regenerate_and_remove_forms() {
        let page = render_account(&view(
            TotpSection::On {
                enrolled_at: 1_700_000_000,
                recovery_left: 7,
            },
            Lang::En,
        ));
        assert!(page.contains("&lt;alice&gt;"));
        assert!(page.contains("name=\"action\" value=\"regenerate\""));
        assert!(page.contains("name=\"action\" value=\"remove\""));
        assert!(page.contains("<strong class=\"recovery-left\">7</strong>"));
        assert!(page.contains("href=\"/_nbgate/passkeys\""));
        assert!(page.contains("href=\"/_nbgate/sessions\""));
        assert_eq!(
            page.matches("id=\"code-").count(),
            2,
            "field ids are unique"
        );
    }

    #[test]
    fn a_user_without_totp_gets_the_enrolment_form_in_chinese() {
        let page = render_account(&view(
            TotpSection::Off {
                offer: Offer {
                    uri: "otpauth://totp/nbgate:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=nbgate",
                    secret: "GEZD GNBV",
                },
                sealed: "sealed\"value",
                required: true,
            },
            Lang::ZhHans,
        ));
        assert!(page.contains("<svg class=\"qr\""));
        assert!(page.contains("name=\"offer\" value=\"sealed&quot;value\""));
        assert!(page.contains("管理员要求开启"));
        assert!(!page.contains("style="));
    }
}
