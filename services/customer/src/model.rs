//! The customer resource as clients see it, the bodies they send, and the rules a name and
//! an email must follow.

use crate::error::Error;
use hotel_common::extract::non_null;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Longest name accepted, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest email accepted (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// A customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    /// Assigned by the service.
    pub id: Uuid,
    /// Display name, trimmed.
    #[schema(example = "Ada Lovelace")]
    pub name: String,
    /// Email as given (trimmed); unique ignoring case.
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// RFC 3339 UTC creation time.
    #[schema(format = DateTime, example = "2026-11-29T01:45:13.123456Z")]
    pub created_at: String,
}

/// Body of `POST /customers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// 1 to 200 characters after trimming.
    #[schema(example = "Ada Lovelace", min_length = 1, max_length = 200)]
    pub name: String,
    /// A deliverable-looking address; unique ignoring case.
    #[schema(example = "ada@example.com", format = Email, max_length = 254)]
    pub email: String,
}

/// Body of `PATCH /customers/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    /// New name, same rules as on create.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// New email, same rules as on create.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub email: Option<String>,
}

/// Query of `GET /customers`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the customer with this email (ignoring case).
    pub email: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A checked name: trimmed, 1..=200 characters, no control characters.
pub fn valid_name(raw: &str) -> Result<String, Error> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(Error::invalid("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// A checked email, trimmed. The check is deliberately practical rather than the full
/// RFC 5322 grammar: one `@`, a plain local part, and a dotted domain of letters, digits
/// and hyphens, which is what mail actually gets delivered to.
pub fn valid_email(raw: &str) -> Result<String, Error> {
    let email = raw.trim();
    let bad = |why: &str| Err(Error::invalid("email", why.to_owned()));
    if email.is_empty() {
        return bad("must not be empty");
    }
    if email.len() > MAX_EMAIL_LEN {
        return bad("must be at most 254 bytes");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return bad("must contain @");
    };
    if local.is_empty() || local.len() > 64 {
        return bad("the part before @ must be 1 to 64 bytes");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return bad("the part before @ must not start or end with a dot or hold two in a row");
    }
    let local_ok = local
        .chars()
        .all(|c| !c.is_whitespace() && !c.is_control() && !"\"(),:;<>@[\\]".contains(c));
    if !local_ok {
        return bad("the part before @ holds a character addresses cannot carry unquoted");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return bad("the domain must contain a dot");
    }
    for label in labels {
        let label_ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-');
        if !label_ok {
            return bad("the domain must be dot-separated labels of letters, digits and hyphens");
        }
    }
    Ok(email.to_owned())
}

/// The form of an email that uniqueness and lookups compare.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_emails_pass_and_are_trimmed() {
        for ok in [
            "a@b.co",
            "first.last+tag@mail.example.org",
            "x_y@sub-domain.example.com",
        ] {
            assert_eq!(valid_email(&format!("  {ok} ")).unwrap(), ok);
        }
    }

    #[test]
    fn malformed_emails_fail_naming_email() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            ".a@b.com",
            "a.@b.com",
            "a@-b.com",
            "a@b-.com",
            "a@b_c.com",
            "a\"b@c.com",
        ] {
            match valid_email(bad) {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, "email", "{bad:?}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(valid_email(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(valid_email(&format!("a@{}.com", "b".repeat(250))).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded_in_characters_not_bytes() {
        assert_eq!(valid_name("  Ada ").unwrap(), "Ada");
        assert!(valid_name("   ").is_err());
        assert!(valid_name(&"é".repeat(200)).is_ok());
        assert!(valid_name(&"é".repeat(201)).is_err());
        assert!(valid_name("a\u{0}b").is_err());
    }
}
