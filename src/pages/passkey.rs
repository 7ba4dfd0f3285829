//! The passkey pieces of nbgate's pages (issue 22 §2): the "Sign in with a
//! passkey" button of the login page, the passkeys page (list, add,
//! remove), and the one small script that runs the WebAuthn ceremonies.
//!
//! The script is a constant, inline, allowed by its SHA-256 in
//! `page_csp()` (`script-src 'sha256-…'`, never 'unsafe-inline'), and it
//! reads everything it needs from `data-` attributes: the endpoints' prefix,
//! the CSRF token, the messages in the page's language. Without JavaScript
//! (or without WebAuthn) the passkey parts stay `hidden` and the password
//! form works as before; the remove buttons are plain forms.

use super::{document, html_escape, signed_in_head, utc_minute, Lang, Tone};

/// The ceremony script: `data-mode="login"` drives
/// `navigator.credentials.get` from the button, `"register"` drives
/// `navigator.credentials.create` from the add form. Binary fields travel as
/// base64url without padding, as webauthn-rs expects; requests carry the
/// CSRF token in `X-Nbgate-Csrf` (a header no other site can set without a
/// CORS preflight nbgate never grants).
pub const SCRIPT: &str = r#"
(function () {
  "use strict";
  var box = document.getElementById("nbgate-passkey");
  if (!box || !window.PublicKeyCredential || !navigator.credentials || !window.fetch) {
    return;
  }
  var text = JSON.parse(box.getAttribute("data-text") || "{}");
  var note = document.getElementById("nbgate-passkey-note");
  var nojs = document.getElementById("nbgate-passkey-nojs");
  box.hidden = false;
  if (nojs) { nojs.hidden = true; }
  function say(msg) { note.textContent = msg; note.hidden = false; }
  function hush() { note.hidden = true; }
  function enc(buf) {
    var b = new Uint8Array(buf), s = "";
    for (var i = 0; i < b.length; i++) { s += String.fromCharCode(b[i]); }
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function dec(str) {
    var s = atob(str.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((str.length + 3) % 4));
    var b = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { b[i] = s.charCodeAt(i); }
    return b.buffer;
  }
  function post(path, body) {
    return fetch(box.getAttribute("data-prefix") + path, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-Nbgate-Csrf": box.getAttribute("data-csrf")
      },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) {
          var e = new Error(j.message || "refused");
          e.nbgate = j.error || "failed";
          throw e;
        }
        return j;
      });
    });
  }
  function explain(e) {
    if (e && e.nbgate) { return text[e.nbgate] || text.failed; }
    var name = e && e.name;
    if (name === "NotAllowedError" || name === "AbortError") { return text.cancelled; }
    if (name === "SecurityError") { return text.passkey_wrong_host; }
    if (name === "InvalidStateError") { return text.already; }
    if (name === "TypeError") { return text.network; }
    return text.failed;
  }
  function options(pk) {
    pk.challenge = dec(pk.challenge);
    if (pk.user) { pk.user.id = dec(pk.user.id); }
    (pk.allowCredentials || []).forEach(function (c) { c.id = dec(c.id); });
    (pk.excludeCredentials || []).forEach(function (c) { c.id = dec(c.id); });
    return pk;
  }
  function run(button, start, body, ceremony, finish) {
    hush();
    button.disabled = true;
    post(start, body).then(function (j) {
      return ceremony({ publicKey: options(j.publicKey) }).then(function (cred) {
        return post(finish, answer(j.ceremony, cred));
      });
    }).then(function (done) {
      window.location.assign(done.next);
    }, function (e) {
      button.disabled = false;
      say(explain(e));
    });
  }
  function answer(ceremony, cred) {
    var r = cred.response, out = {
      id: cred.id,
      rawId: enc(cred.rawId),
      type: cred.type,
      extensions: cred.getClientExtensionResults()
    };
    if (r.attestationObject) {
      out.response = {
        attestationObject: enc(r.attestationObject),
        clientDataJSON: enc(r.clientDataJSON),
        transports: r.getTransports ? r.getTransports() : []
      };
      return { ceremony: ceremony, credential: out };
    }
    out.response = {
      authenticatorData: enc(r.authenticatorData),
      clientDataJSON: enc(r.clientDataJSON),
      signature: enc(r.signature),
      userHandle: r.userHandle ? enc(r.userHandle) : null
    };
    return { ceremony: ceremony, next: box.getAttribute("data-next"), credential: out };
  }
  if (box.getAttribute("data-mode") === "register") {
    var form = box.querySelector("form");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      run(form.querySelector("button"), "passkey/register/start",
        { name: form.querySelector("input[name=name]").value },
        function (o) { return navigator.credentials.create(o); }, "passkey/register/finish");
    });
  } else {
    var button = box.querySelector("button");
    button.addEventListener("click", function () {
      run(button, "passkey/login/start", {},
        function (o) { return navigator.credentials.get(o); }, "passkey/login/finish");
    });
  }
})();
"#;

/// The `'sha256-…'` CSP source of [`SCRIPT`] (CSP Level 3 §2.3.1).
pub fn script_hash_source() -> String {
    super::hash_source(SCRIPT)
}

/// What the login page needs for its passkey button.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasskeyLogin<'a> {
    /// `<base_url>_nbgate/`: the script posts to `passkey/login/...` under it.
    pub prefix: &'a str,
    /// The relying party id, named when the browser refuses the host.
    pub rp_id: &'a str,
}

/// The login page's passkey part: hidden until the script finds WebAuthn;
/// `csrf_token` and `next` are the password form's (the token is bound to
/// the same CSRF cookie).
pub fn login_piece(lang: Lang, pk: &PasskeyLogin<'_>, csrf_token: &str, next: &str) -> String {
    let t = Text::of(lang);
    format!(
        "<div id=\"nbgate-passkey\" class=\"links\" data-mode=\"login\" data-prefix=\"{prefix}\" \
         data-csrf=\"{csrf}\" data-next=\"{next}\" data-text=\"{text}\" hidden>\n\
         <p class=\"muted\">{or}</p>\n\
         <button type=\"button\">{button}</button>\n\
         <p id=\"nbgate-passkey-note\" class=\"notice notice-error\" role=\"alert\" hidden></p>\n\
         </div>\n<script>{SCRIPT}</script>\n",
        prefix = html_escape(pk.prefix),
        csrf = html_escape(csrf_token),
        next = html_escape(next),
        text = html_escape(&messages(lang, pk.rp_id)),
        or = html_escape(t.or),
        button = html_escape(t.sign_in),
    )
}

/// One passkey on the passkeys page. Strings are escaped on output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyRow {
    /// The credential id (base64url): what the remove form posts.
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    pub last_used: Option<u64>,
}

/// What the passkeys page says after a form was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasskeysNotice {
    Added,
    Removed,
}

/// Everything the passkeys page shows.
#[derive(Clone, Copy, Debug)]
pub struct PasskeysView<'a> {
    pub lang: Lang,
    pub user: &'a str,
    pub rows: &'a [PasskeyRow],
    /// `<base_url>_nbgate/`: the forms post to `passkeys`, the script to
    /// `passkey/register/...`.
    pub prefix: &'a str,
    /// Bound to the session id.
    pub csrf_token: &'a str,
    /// `None`: passkeys are off on this server.
    pub rp_id: Option<&'a str>,
    pub notice: Option<PasskeysNotice>,
}

/// The passkeys page: the user's passkeys with a remove form each (field
/// `remove` = the credential id, and `csrf`), and the add form the script
/// drives (a name and a button; hidden without JavaScript, which the page
/// then says it needs).
pub fn render_passkeys(view: &PasskeysView<'_>) -> String {
    let t = Text::of(view.lang);
    let notice = view.notice.map(|notice| match notice {
        PasskeysNotice::Added => (Tone::Info, t.added),
        PasskeysNotice::Removed => (Tone::Info, t.removed),
    });
    let mut main = signed_in_head(t.heading, notice, t.who, view.user);
    let action = format!("{}passkeys", view.prefix);
    if view.rows.is_empty() {
        main.push_str(&format!("<p class=\"muted\">{}</p>\n", html_escape(t.none)));
    } else {
        main.push_str("<ul class=\"sessions passkeys\">\n");
        for row in view.rows {
            let used = row.last_used.map_or_else(|| t.never.to_owned(), utc_minute);
            main.push_str(&format!(
                "<li>\n<p><strong>{}</strong></p>\n<p class=\"muted\">{} {} · {} {}</p>\n\
                 <form method=\"post\" action=\"{}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <input type=\"hidden\" name=\"remove\" value=\"{}\">\
                 <button type=\"submit\" aria-label=\"{}\">{}</button></form>\n</li>\n",
                html_escape(&row.name),
                html_escape(t.created),
                utc_minute(row.created),
                html_escape(t.last_used),
                html_escape(&used),
                html_escape(&action),
                html_escape(view.csrf_token),
                html_escape(&row.id),
                html_escape(&format!("{}: {}", t.remove, row.name)),
                html_escape(t.remove),
            ));
        }
        main.push_str("</ul>\n");
    }
    main.push_str(&format!("<h2>{}</h2>\n", html_escape(t.add_heading)));
    match view.rp_id {
        None => main.push_str(&format!("<p class=\"muted\">{}</p>\n", html_escape(t.off))),
        Some(rp_id) => {
            main.push_str(&format!(
                "<p>{}</p>\n\
                 <p id=\"nbgate-passkey-nojs\" class=\"notice notice-info\">{}</p>\n\
                 <div id=\"nbgate-passkey\" data-mode=\"register\" data-prefix=\"{}\" \
                 data-csrf=\"{}\" data-text=\"{}\" hidden>\n\
                 <form>\n<label for=\"passkey-name\">{}</label>\n\
                 <input id=\"passkey-name\" name=\"name\" type=\"text\" value=\"{}\" \
                 maxlength=\"64\" autocomplete=\"off\" required>\n\
                 <button type=\"submit\">{}</button>\n</form>\n\
                 <p id=\"nbgate-passkey-note\" class=\"notice notice-error\" role=\"alert\" hidden></p>\n\
                 </div>\n",
                html_escape(&t.works_at(rp_id)),
                html_escape(t.needs_js),
                html_escape(view.prefix),
                html_escape(view.csrf_token),
                html_escape(&messages(view.lang, rp_id)),
                html_escape(t.name),
                html_escape(t.default_name),
                html_escape(t.add),
            ));
        }
    }
    main.push_str(&format!(
        "<p class=\"links\"><a href=\"{}account\">{}</a> · <a href=\"{}sessions\">{}</a> · \
         <a href=\"{}logout\">{}</a></p>\n</main>\n",
        html_escape(view.prefix),
        html_escape(t.account),
        html_escape(view.prefix),
        html_escape(t.sessions),
        html_escape(view.prefix),
        html_escape(t.logout),
    ));
    if view.rp_id.is_some() {
        main.push_str(&format!("<script>{SCRIPT}</script>\n"));
    }
    document(view.lang, t.title, &main)
}

/// The script's messages, by the error code of nbgate's JSON refusals
/// (`proxy::error`) or the browser's exception, as a JSON object.
fn messages(lang: Lang, rp_id: &str) -> String {
    let wrong_host = match lang {
        Lang::En => format!(
            "Passkeys work only at https://{rp_id}: open nbgate by that name and try again."
        ),
        Lang::ZhHans => {
            format!("通行密钥只能在 https://{rp_id} 使用：请通过该地址打开 nbgate 后重试。")
        }
    };
    let pairs: &[(&str, &str)] = match lang {
        Lang::En => &[
            ("failed", "The passkey did not work. Try again, or log in with your password."),
            ("cancelled", "The passkey request was cancelled or timed out."),
            ("already", "This device already holds a passkey for your account."),
            ("network", "nbgate could not be reached. Check the connection and try again."),
            ("csrf", "This page has expired. Reload it and try again."),
            ("locked_out", "Too many attempts. Wait a while, then try again."),
            ("busy", "Too many attempts at once. Try again in a second."),
            ("rate_limited", "Too many requests. Wait a moment, then try again."),
            ("unauthorized", "Your session has ended. Log in again."),
            ("passkeys_off", "Passkeys are not enabled on this server."),
            ("passkey_bad_request", "The browser sent an answer nbgate cannot read."),
            ("passkey_expired", "The passkey request expired or was already used. Try again."),
            ("passkey_wrong_origin", "The browser signed for another address than this one. Open nbgate at its own address and try again."),
            ("passkey_unknown", "This passkey is not registered here (it may have been removed)."),
            ("passkey_rejected", "The passkey could not be verified."),
            ("passkey_user_not_verified", "The device did not verify you (PIN or biometrics). Use a passkey that can."),
            ("passkey_bad_name", "Give the passkey a name of 1 to 64 characters."),
            ("passkey_too_many", "You have the most passkeys allowed. Remove one first."),
            ("passkey_storage", "nbgate could not store the passkey. The administrator can check its log."),
        ],
        Lang::ZhHans => &[
            ("failed", "通行密钥未能使用。请重试，或使用密码登录。"),
            ("cancelled", "通行密钥请求已取消或超时。"),
            ("already", "此设备上已有您账户的通行密钥。"),
            ("network", "无法连接到 nbgate。请检查网络后重试。"),
            ("csrf", "此页面已过期。请重新加载后重试。"),
            ("locked_out", "尝试次数过多。请稍后再试。"),
            ("busy", "同时尝试的次数过多。请一秒后重试。"),
            ("rate_limited", "请求过多。请稍候再试。"),
            ("unauthorized", "您的会话已结束。请重新登录。"),
            ("passkeys_off", "此服务器未启用通行密钥。"),
            ("passkey_bad_request", "浏览器发送的应答 nbgate 无法读取。"),
            ("passkey_expired", "通行密钥请求已过期或已被使用。请重试。"),
            ("passkey_wrong_origin", "浏览器签名的地址与此地址不符。请通过 nbgate 自己的地址打开后重试。"),
            ("passkey_unknown", "此通行密钥未在此注册（可能已被删除）。"),
            ("passkey_rejected", "无法验证此通行密钥。"),
            ("passkey_user_not_verified", "设备未验证您的身份（PIN 或生物识别）。请使用支持验证的通行密钥。"),
            ("passkey_bad_name", "请为通行密钥起一个 1 到 64 个字符的名称。"),
            ("passkey_too_many", "您的通行密钥已达上限。请先删除一个。"),
            ("passkey_storage", "nbgate 无法保存通行密钥。管理员可以查看其日志。"),
        ],
    };
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        map.insert((*k).to_owned(), (*v).into());
    }
    map.insert("passkey_wrong_host".to_owned(), wrong_host.into());
    serde_json::Value::Object(map).to_string()
}

/// The passkey words in one language.
struct Text {
    title: &'static str,
    heading: &'static str,
    who: &'static str,
    none: &'static str,
    created: &'static str,
    last_used: &'static str,
    never: &'static str,
    remove: &'static str,
    add_heading: &'static str,
    off: &'static str,
    needs_js: &'static str,
    name: &'static str,
    default_name: &'static str,
    add: &'static str,
    added: &'static str,
    removed: &'static str,
    account: &'static str,
    sessions: &'static str,
    logout: &'static str,
    or: &'static str,
    sign_in: &'static str,
    lang: Lang,
}

impl Text {
    fn of(lang: Lang) -> Self {
        match lang {
            Lang::En => Text {
                title: "nbgate — Passkeys",
                heading: "Your passkeys",
                who: "Logged in as",
                none: "You have no passkeys yet.",
                created: "Added",
                last_used: "Last used",
                never: "never",
                remove: "Remove",
                add_heading: "Add a passkey",
                off: "Passkeys are not enabled on this server. The administrator can turn them on with [auth.passkeys] in nbgate's configuration.",
                needs_js: "Adding a passkey needs JavaScript and a browser that supports passkeys.",
                name: "Name",
                default_name: "My passkey",
                add: "Add a passkey",
                added: "The passkey was added. You can now sign in with it.",
                removed: "The passkey was removed.",
                account: "Your account",
                sessions: "Sessions",
                logout: "Log out",
                or: "or",
                sign_in: "Sign in with a passkey",
                lang,
            },
            Lang::ZhHans => Text {
                title: "nbgate — 通行密钥",
                heading: "您的通行密钥",
                who: "当前用户",
                none: "您还没有通行密钥。",
                created: "添加于",
                last_used: "最近使用",
                never: "从未",
                remove: "删除",
                add_heading: "添加通行密钥",
                off: "此服务器未启用通行密钥。管理员可以在 nbgate 配置的 [auth.passkeys] 中启用。",
                needs_js: "添加通行密钥需要 JavaScript 和支持通行密钥的浏览器。",
                name: "名称",
                default_name: "我的通行密钥",
                add: "添加通行密钥",
                added: "通行密钥已添加。现在可以用它登录。",
                removed: "通行密钥已删除。",
                account: "我的账户",
                sessions: "会话",
                logout: "退出登录",
                or: "或",
                sign_in: "使用通行密钥登录",
                lang,
            },
        }
    }

    fn works_at(&self, rp_id: &str) -> String {
        match self.lang {
            Lang::En => format!("Passkeys made here work at https://{rp_id} (and names below it)."),
            Lang::ZhHans => format!("在此创建的通行密钥可在 https://{rp_id}（及其子域名）使用。"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "\"><script>alert('x')</script>";

    fn rows() -> Vec<PasskeyRow> {
        vec![PasskeyRow {
            id: HOSTILE.into(),
            name: HOSTILE.into(),
            created: 0,
            last_used: Some(60),
        }]
    }

    fn view<'a>(lang: Lang, rows: &'a [PasskeyRow], rp_id: Option<&'a str>) -> PasskeysView<'a> {
        PasskeysView {
            lang,
            user: HOSTILE,
            rows,
            prefix: "/_nbgate/",
            csrf_token: HOSTILE,
            rp_id,
            notice: Some(PasskeysNotice::Added),
        }
    }

    /// The page's script elements' contents.
    fn scripts(page: &str) -> Vec<&str> {
        page.split("<script>")
            .skip(1)
            .map(|s| s.split("</script>").next().expect("closed"))
            .collect()
    }

    #[test]
    fn passkeys_page_escapes_names_ids_user_and_token() {
        let rows = rows();
        for lang in [Lang::En, Lang::ZhHans] {
            let page = render_passkeys(&view(lang, &rows, Some("nb.example.org")));
            assert!(!page.contains(HOSTILE), "{page}");
            assert_eq!(scripts(&page), vec![SCRIPT], "only nbgate's own script");
        }
    }

    #[test]
    fn every_script_on_a_page_is_the_one_the_csp_hash_allows() {
        let rows = rows();
        let login = login_piece(
            Lang::En,
            &PasskeyLogin {
                prefix: "/_nbgate/",
                rp_id: "nb.example.org",
            },
            "t",
            "/lab",
        );
        let page = render_passkeys(&view(Lang::ZhHans, &rows, Some("nb.example.org")));
        let csp = super::super::page_csp();
        for s in scripts(&login).into_iter().chain(scripts(&page)) {
            assert_eq!(s, SCRIPT);
            assert!(csp.contains(&format!("script-src '{}'", script_hash_source())));
        }
        assert!(!csp.contains("unsafe-inline"));
    }

    #[test]
    fn passkey_parts_are_hidden_until_the_script_shows_them() {
        let login = login_piece(
            Lang::En,
            &PasskeyLogin {
                prefix: "/_nbgate/",
                rp_id: "nb.example.org",
            },
            "t",
            "/lab",
        );
        assert!(login.contains("id=\"nbgate-passkey\"") && login.contains(" hidden>"));
        let page = render_passkeys(&view(Lang::En, &[], Some("nb.example.org")));
        assert!(
            page.contains("id=\"nbgate-passkey-nojs\""),
            "says JS is needed"
        );
        assert!(page.contains("You have no passkeys yet."));
    }

    #[test]
    fn a_server_without_passkeys_offers_no_add_form_and_no_script() {
        let page = render_passkeys(&view(Lang::En, &[], None));
        assert!(!page.contains("<script"));
        assert!(!page.contains("data-mode"));
        assert!(page.contains("[auth.passkeys]"));
    }

    #[test]
    fn script_messages_cover_every_code_in_both_languages() {
        for lang in [Lang::En, Lang::ZhHans] {
            let m: serde_json::Value =
                serde_json::from_str(&messages(lang, "nb.example.org")).expect("json");
            for code in [
                "failed",
                "cancelled",
                "csrf",
                "locked_out",
                "passkey_expired",
                "passkey_wrong_origin",
                "passkey_wrong_host",
                "passkey_unknown",
                "passkey_rejected",
            ] {
                assert!(m[code].is_string(), "{lang:?} lacks {code}");
            }
            assert!(m["passkey_wrong_host"]
                .as_str()
                .is_some_and(|s| s.contains("https://nb.example.org")));
        }
    }
}
