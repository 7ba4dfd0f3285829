//! Who may enter, and under which nbgate user name: the provider's
//! verified claims against its allow lists. Pure: claims in, a decision
//! out, so every rule is unit-tested without a provider.
//!
//! Rules (docs/sso.md says the same):
//! - an e-mail address counts only when the provider says it is verified
//!   (`email_verified = true`), unless `require_email_verified = false`:
//!   most providers let a user type any address into their profile, and an
//!   unverified `ceo@example.com` must not pass `allowed_domains`;
//! - the person enters when the verified address is in `allowed_emails`,
//!   or its domain is in `allowed_domains`, or one of their groups (the
//!   `groups_claim`, a list or a single string) is in `allowed_groups`
//!   (any one list suffices);
//! - the user name is the `user_claim`'s value: for `email` the verified
//!   address in lower case (addresses are case-insensitive in practice),
//!   for any other claim its string exactly as sent; it must be a valid
//!   nbgate user name (1-64 of `A-Z a-z 0-9 . _ - @`), else refused rather
//!   than rewritten (two different names must never map to one user).

use crate::config::{valid_user_name, OidcProvider};

/// What the ID token said about the person (already verified).
#[derive(Debug, Default, Clone)]
pub struct Person {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// The value of the provider's `user_claim`, when it is a string.
    pub user_claim: Option<String>,
    pub groups: Vec<String>,
}

/// Why a verified person is not let in; `reason()` is the audit field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    #[error("not on the provider's allow lists")]
    NotAllowed,
    #[error("the user name claim is an e-mail address the provider has not verified")]
    EmailNotVerified,
    #[error("the ID token has no user name claim")]
    NoUserName,
    #[error("the user name claim is not a valid nbgate user name")]
    BadUserName,
}

impl NotAdmitted {
    pub fn reason(self) -> &'static str {
        match self {
            NotAdmitted::NotAllowed => "not_allowed",
            NotAdmitted::EmailNotVerified => "email_not_verified",
            NotAdmitted::NoUserName => "no_user_name",
            NotAdmitted::BadUserName => "bad_user_name",
        }
    }
}

/// The nbgate user name `person` enters as, or why not.
///
/// # Errors
/// `NotAdmitted` saying which rule refused.
pub fn admit(provider: &OidcProvider, person: &Person) -> Result<String, NotAdmitted> {
    let verified_email = person
        .email
        .as_deref()
        .filter(|_| !provider.require_email_verified || person.email_verified == Some(true))
        .map(str::to_ascii_lowercase);
    let by_email = verified_email.as_deref().is_some_and(|e| {
        provider.allowed_emails.iter().any(|a| a == e)
            || e.rsplit_once('@')
                .is_some_and(|(_, d)| provider.allowed_domains.iter().any(|a| a == d))
    });
    let by_group = person
        .groups
        .iter()
        .any(|g| provider.allowed_groups.contains(g));
    if !by_email && !by_group {
        return Err(NotAdmitted::NotAllowed);
    }
    let name = if provider.user_claim == "email" {
        match (&verified_email, &person.email) {
            (Some(e), _) => e.clone(),
            (None, Some(_)) => return Err(NotAdmitted::EmailNotVerified),
            (None, None) => return Err(NotAdmitted::NoUserName),
        }
    } else {
        person.user_claim.clone().ok_or(NotAdmitted::NoUserName)?
    };
    if !valid_user_name(&name) {
        return Err(NotAdmitted::BadUserName);
    }
    Ok(name)
}

/// The groups a claim value names: a list of strings or one string.
pub fn groups_of(value: Option<&serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn provider(lists: &str, user_claim: &str) -> OidcProvider {
        let text = format!(
            "[[auth.oidc]]\nname = \"p\"\nissuer = \"https://idp.example.com\"\n\
             client_id = \"c\"\nuser_claim = \"{user_claim}\"\n{lists}\n"
        );
        Config::from_text(&text, std::path::Path::new("t.toml"))
            .expect("valid")
            .auth
            .oidc
            .remove(0)
    }

    fn person(email: &str, verified: bool, groups: &[&str]) -> Person {
        Person {
            subject: "sub-1".into(),
            email: Some(email.into()),
            email_verified: Some(verified),
            user_claim: Some("alice".into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn a_verified_address_on_a_list_enters_under_its_lower_case_form() {
        let p = provider("allowed_emails = [\"Alice@Example.com\"]", "email");
        assert_eq!(
            admit(&p, &person("ALICE@example.COM", true, &[])),
            Ok("alice@example.com".into())
        );
        let d = provider("allowed_domains = [\"example.com\"]", "email");
        assert_eq!(
            admit(&d, &person("bob@example.com", true, &[])),
            Ok("bob@example.com".into())
        );
        assert_eq!(
            admit(&d, &person("bob@example.com.evil.test", true, &[])),
            Err(NotAdmitted::NotAllowed)
        );
        assert_eq!(
            admit(&d, &person("bob@sub.example.com", true, &[])),
            Err(NotAdmitted::NotAllowed),
            "a domain matches itself, not its subdomains"
        );
    }

    #[test]
    fn an_unverified_address_counts_for_nothing() {
        let d = provider("allowed_domains = [\"example.com\"]", "email");
        assert_eq!(
            admit(&d, &person("ceo@example.com", false, &[])),
            Err(NotAdmitted::NotAllowed)
        );
        let g = provider("allowed_groups = [\"staff\"]", "email");
        assert_eq!(
            admit(&g, &person("ceo@example.com", false, &["staff"])),
            Err(NotAdmitted::EmailNotVerified)
        );
        let mut missing = person("x@example.com", true, &[]);
        missing.email_verified = None;
        assert_eq!(admit(&d, &missing), Err(NotAdmitted::NotAllowed));
    }

    #[test]
    fn a_group_lets_in_under_the_configured_claim() {
        let g = provider("allowed_groups = [\"jupyter-users\"]", "preferred_username");
        assert_eq!(
            admit(&g, &person("a@x.test", false, &["other", "jupyter-users"])),
            Ok("alice".into())
        );
        assert_eq!(
            admit(&g, &person("a@x.test", true, &["Jupyter-Users"])),
            Err(NotAdmitted::NotAllowed),
            "group names match exactly"
        );
        let mut odd = person("a@x.test", true, &["jupyter-users"]);
        odd.user_claim = Some("alice smith".into());
        assert_eq!(admit(&g, &odd), Err(NotAdmitted::BadUserName));
        odd.user_claim = None;
        assert_eq!(admit(&g, &odd), Err(NotAdmitted::NoUserName));
    }

    #[test]
    fn groups_are_read_from_a_list_or_a_string() {
        let v = serde_json::json!(["a", 1, "b"]);
        assert_eq!(groups_of(Some(&v)), ["a", "b"]);
        assert_eq!(groups_of(Some(&serde_json::json!("a"))), ["a"]);
        assert!(groups_of(Some(&serde_json::json!({"a": 1}))).is_empty());
        assert!(groups_of(None).is_empty());
    }
}
