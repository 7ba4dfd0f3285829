//! The account page: who is logged in, links to the sessions and passkeys
//! pages, and the TOTP section (enrol with a QR code and a first code, make
//! new recovery codes, remove). No script; every form posts back to the
//! page with the hidden `csrf` field (bound to the session) and an `action`.

use super::totp::{code_input, offer_html, Offer};
use std::borrow::Cow;

use super::{document, html_escape, signed_in_head, too_many_attempts, utc_minute, Lang, Tone};

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
    /// The password typed to turn TOTP on was not the user's.
    WrongPassword,
    /// Too many failed codes: wait.
    LockedOut { retry_after_secs: u64 },
    /// The enrolment offer expired (the page was open too long).
    OfferExpired,
    /// TOTP was turned on meanwhile (another tab, the administrator): the
    /// older offer did not replace it.
    AlreadyOn,
    /// The secret is the configuration's `totp_secret_file`: only the
    /// administrator can turn TOTP off.
    ManagedByConfig,
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
    password_label: &'static str,
    wrong_password: &'static str,
    enrol: &'static str,
    regenerate_intro: &'static str,
    regenerate: &'static str,
    remove_intro: &'static str,
    remove: &'static str,
    code_label: &'static str,
    removed: &'static str,
    wrong: &'static str,
    expired: &'static str,
    already_on: &'static str,
    managed: &'static str,
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
                password_label: "Your password",
                wrong_password: "That password is not right: nothing was changed.",
                enrol: "Turn on",
                regenerate_intro: "Make ten new recovery codes (the old ones stop working). Enter a current code to confirm.",
                regenerate: "Make new recovery codes",
                remove_intro: "Turn two-step verification off. Enter a current code to confirm.",
                remove: "Turn off",
                code_label: "Current 6-digit code",
                removed: "Two-step verification is off.",
                wrong: "That code is not valid: nothing was changed.",
                expired: "This form has expired. Please try again.",
                already_on: "Two-step verification is already on: nothing was changed.",
                managed: "Your two-step verification is set by the administrator's configuration: ask them to turn it off.",
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
                password_label: "您的密码",
                wrong_password: "密码不正确：未做任何更改。",
                enrol: "开启",
                regenerate_intro: "生成十个新的恢复码（旧的将失效）。请输入当前验证码以确认。",
                regenerate: "生成新的恢复码",
                remove_intro: "关闭两步验证。请输入当前验证码以确认。",
                remove: "关闭",
                code_label: "当前 6 位验证码",
                removed: "两步验证已关闭。",
                wrong: "验证码无效：未做任何更改。",
                expired: "表单已过期，请重试。",
                already_on: "两步验证已开启：未做任何更改。",
                managed: "您的两步验证由管理员的配置设置：请联系管理员关闭。",
            },
        }
    }
}

/// One POST form of the page: hidden `csrf` and `action`, extra hidden
/// fields, a password field (`password_label`), a code field, a button.
fn form(
    view: &AccountView<'_>,
    action: &str,
    hidden: &[(&str, &str)],
    password_label: Option<&str>,
    label: &str,
    button: &str,
) -> String {
    let password = password_label.map_or(String::new(), |l| {
        format!(
            "<label for=\"password-{action}\">{}</label>\n\
             <input id=\"password-{action}\" name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required>\n",
            html_escape(l)
        )
    });
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
         <input type=\"hidden\" name=\"action\" value=\"{}\">\n{extra}{password}{}\
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
    let notice = view.notice.map(|n| match n {
        AccountNotice::Removed => (Tone::Info, Cow::Borrowed(t.removed)),
        AccountNotice::WrongCode => (Tone::Error, Cow::Borrowed(t.wrong)),
        AccountNotice::WrongPassword => (Tone::Error, Cow::Borrowed(t.wrong_password)),
        AccountNotice::OfferExpired => (Tone::Error, Cow::Borrowed(t.expired)),
        AccountNotice::AlreadyOn => (Tone::Info, Cow::Borrowed(t.already_on)),
        AccountNotice::ManagedByConfig => (Tone::Error, Cow::Borrowed(t.managed)),
        AccountNotice::LockedOut { retry_after_secs } => (
            Tone::Error,
            Cow::Owned(too_many_attempts(retry_after_secs, view.lang)),
        ),
    });
    let mut main = signed_in_head(
        t.heading,
        notice.as_ref().map(|(tone, text)| (*tone, text.as_ref())),
        t.who,
        view.user,
    );
    main.push_str(&format!(
        "<p class=\"links\"><a href=\"{}\">{}</a> · <a href=\"{}\">{}</a> · <a href=\"{}\">{}</a></p>\n",
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
                form(view, "regenerate", &[], None, t.code_label, t.regenerate),
                html_escape(t.remove_intro),
                form(view, "remove", &[], None, t.code_label, t.remove),
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
                Some(t.password_label),
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
