//! The single sign-on parts of nbgate's pages: the "Sign in with …" buttons
//! of the login page (plain links: no script), the notice when a provider
//! cannot be reached, and the error pages of a refused sign-in. English and
//! Chinese, like every page.

use super::{html_escape, notice_p, Lang, Tone};

/// One provider's button.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsoButton {
    /// "Sign in with <display_name>".
    pub display_name: String,
    /// `<prefix>oidc/<name>?next=…`, already URL-encoded.
    pub href: String,
}

/// Why the login page shows an SSO notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsoNotice<'a> {
    /// The provider did not answer (or its discovery document is unusable).
    Unavailable { display_name: &'a str },
}

/// The single sign-on part of the login page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsoLogin<'a> {
    pub buttons: &'a [SsoButton],
    /// Whether the password form is shown too (`auth.password`).
    pub password: bool,
    pub notice: Option<SsoNotice<'a>>,
}

/// The notice paragraph, announced before the form like the login notices.
pub(super) fn notice_html(sso: &SsoLogin<'_>, lang: Lang) -> String {
    let Some(SsoNotice::Unavailable { display_name }) = sso.notice else {
        return String::new();
    };
    let text = match (lang, sso.password) {
        (Lang::En, true) => format!(
            "Signing in with {display_name} is not possible right now: it did not answer. \
             Log in with your password, or try again in a moment."
        ),
        (Lang::En, false) => format!(
            "Signing in with {display_name} is not possible right now: it did not answer. \
             Try again in a moment."
        ),
        (Lang::ZhHans, true) => {
            format!("暂时无法使用 {display_name} 登录：它没有响应。请用密码登录，或稍后重试。")
        }
        (Lang::ZhHans, false) => {
            format!("暂时无法使用 {display_name} 登录：它没有响应。请稍后重试。")
        }
    };
    notice_p(Tone::Error, &text)
}

/// The buttons: links to each provider's start, below the password form
/// (with an "or" between) or alone.
pub(super) fn buttons_html(sso: &SsoLogin<'_>, lang: Lang) -> String {
    let mut out = String::new();
    if sso.buttons.is_empty() {
        return out;
    }
    if sso.password {
        let or = match lang {
            Lang::En => "or",
            Lang::ZhHans => "或",
        };
        out.push_str(&format!("<p class=\"or\">{or}</p>\n"));
    }
    for b in sso.buttons {
        let label = match lang {
            Lang::En => format!("Sign in with {}", b.display_name),
            Lang::ZhHans => format!("使用 {} 登录", b.display_name),
        };
        out.push_str(&format!(
            "<a class=\"button sso\" href=\"{}\">{}</a>\n",
            html_escape(&b.href),
            html_escape(&label)
        ));
    }
    out
}

/// (heading, sentence) of the error page of a refused sign-in, by the
/// JSON error code `proxy::error` gives it.
pub(super) fn code_text(code: &str, lang: Lang) -> Option<(&'static str, &'static str)> {
    Some(match (code, lang) {
        ("oidc_state", Lang::En) => (
            "Sign-in expired",
            "This sign-in was already used, took too long, or was started in another browser. \
             Go back to the login page and sign in again.",
        ),
        ("oidc_state", Lang::ZhHans) => (
            "登录已失效",
            "此次登录已被使用、耗时过长，或是在另一个浏览器中发起的。请返回登录页面重新登录。",
        ),
        ("oidc_not_allowed", Lang::En) => (
            "Access not granted",
            "You signed in, but your account is not on the list of accounts allowed to use \
             this server. Ask the administrator to add it.",
        ),
        ("oidc_not_allowed", Lang::ZhHans) => (
            "未获准访问",
            "您已登录，但您的账户不在允许使用此服务器的账户名单中。请联系管理员添加。",
        ),
        ("oidc_provider_error", Lang::En) => (
            "Sign-in cancelled",
            "The sign-in provider did not sign you in (perhaps the sign-in was cancelled). Go \
             back to the login page to try again.",
        ),
        ("oidc_provider_error", Lang::ZhHans) => (
            "登录已取消",
            "登录服务没有为您完成登录（可能是登录被取消了）。请返回登录页面重试。",
        ),
        ("oidc_failed", Lang::En) => (
            "Sign-in failed",
            "The sign-in provider's answer could not be verified, so nbgate did not log you \
             in. Try again; if it keeps happening, tell the administrator.",
        ),
        ("oidc_failed", Lang::ZhHans) => (
            "登录失败",
            "无法验证登录服务的应答，因此 nbgate 没有让您登录。请重试；如果反复出现，请告知管理员。",
        ),
        ("password_login_off", Lang::En) => (
            "Password login is off",
            "This server signs people in through single sign-on only: use a sign-in button on \
             the login page.",
        ),
        ("password_login_off", Lang::ZhHans) => (
            "密码登录已关闭",
            "此服务器只接受单点登录：请使用登录页面上的登录按钮。",
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buttons() -> Vec<SsoButton> {
        vec![SsoButton {
            display_name: "Corp <SSO>".into(),
            href: "/_nbgate/oidc/corp?next=%2Flab&x=\"".into(),
        }]
    }

    #[test]
    fn buttons_are_links_with_escaped_names_in_both_languages() {
        let b = buttons();
        let sso = SsoLogin {
            buttons: &b,
            password: true,
            notice: None,
        };
        let en = buttons_html(&sso, Lang::En);
        assert!(en.contains("<p class=\"or\">or</p>"), "{en}");
        assert!(
            en.contains("<a class=\"button sso\" href=\"/_nbgate/oidc/corp?next=%2Flab&amp;x=&quot;\">Sign in with Corp &lt;SSO&gt;</a>"),
            "{en}"
        );
        let zh = buttons_html(
            &SsoLogin {
                password: false,
                ..sso
            },
            Lang::ZhHans,
        );
        assert!(zh.contains("使用 Corp &lt;SSO&gt; 登录"), "{zh}");
        assert!(!zh.contains("class=\"or\""), "{zh}");
    }

    #[test]
    fn the_unavailable_notice_offers_the_password_only_when_it_is_on() {
        let b = buttons();
        let mut sso = SsoLogin {
            buttons: &b,
            password: true,
            notice: Some(SsoNotice::Unavailable {
                display_name: "Corp",
            }),
        };
        assert!(notice_html(&sso, Lang::En).contains("Log in with your password"));
        sso.password = false;
        assert!(!notice_html(&sso, Lang::En).contains("password"));
        assert!(notice_html(&sso, Lang::ZhHans).contains("role=\"alert\""));
        sso.notice = None;
        assert!(notice_html(&sso, Lang::En).is_empty());
    }

    #[test]
    fn without_the_password_form_the_login_page_has_only_the_buttons() {
        let b = buttons();
        let view = |password| super::super::LoginView {
            lang: Lang::En,
            action: "/_nbgate/login",
            csrf_token: "t",
            next: "/lab",
            username: "",
            notice: None,
            sso: Some(SsoLogin {
                buttons: &b,
                password,
                notice: None,
            }),
            passkey: None,
        };
        let page = super::super::render_login(&view(false));
        assert!(!page.contains("<form"), "{page}");
        assert!(!page.contains("name=\"password\""), "{page}");
        assert!(
            page.contains("Sign in with Corp &lt;SSO&gt;</a>\n</main>"),
            "{page}"
        );
        let both = super::super::render_login(&view(true));
        let form = both.find("</form>").expect("the form");
        let button = both.find("class=\"button sso\"").expect("the button");
        assert!(form < button, "the buttons follow the form");
    }

    #[test]
    fn every_error_code_has_both_languages() {
        for code in [
            "oidc_state",
            "oidc_not_allowed",
            "oidc_provider_error",
            "oidc_failed",
            "password_login_off",
        ] {
            assert!(code_text(code, Lang::En).is_some(), "{code}");
            assert!(code_text(code, Lang::ZhHans).is_some(), "{code}");
        }
    }
}
