//! The customer resource as clients see it, the bodies they send, and the rules a name and
//! an email must follow.

use hotel_common::extract::non_null;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

hotel_common::text_field!(
    /// A customer's display name: free text (see `hotel_common::input`) of 1 to 200
    /// characters, kept trimmed.
    pub Name, max = 200, example = "Ada Lovelace"
);

/// Longest email accepted, in bytes (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest part before the `@`, in bytes (RFC 5321).
pub const MAX_LOCAL_LEN: usize = 64;

/// Characters allowed in the part of an email before the `@` besides letters and digits
/// (RFC 5322 `atext`); dots separate runs of them.
const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";

/// The JSON Schema `pattern` of [`Email`], stating exactly what [`Email::parse`] checks
/// (with `maxLength` 254).
pub const EMAIL_PATTERN: &str = concat!(
    r"^(?=[^@]{1,64}@)",
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*",
    r"@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
);

/// An email address, checked and kept exactly as sent. The rule is deliberately
/// practical rather than the full RFC 5322 grammar, and ASCII only (no internationalised
/// addresses): a dot-atom local part of at most 64 bytes (letters, digits and
/// `!#$%&'*+/=?^_`{|}~-`, single dots between them), `@`, and a domain of at least two
/// dot-separated labels of letters, digits and inner hyphens (1 to 63 each), 254 bytes in
/// all. No surrounding whitespace. Unique ignoring case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Checks `raw`; the message says why it is refused.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(why.to_owned());
        if raw.is_empty() {
            return bad("must not be empty");
        }
        if raw.len() > MAX_EMAIL_LEN {
            return bad("must be at most 254 bytes");
        }
        if !raw.is_ascii() {
            return bad("must be ASCII: internationalised addresses are not accepted");
        }
        let Some((local, domain)) = raw.split_once('@') else {
            return bad("must contain @");
        };
        if local.is_empty() || local.len() > MAX_LOCAL_LEN {
            return bad("the part before @ must be 1 to 64 bytes");
        }
        let atom_ok = |atom: &str| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
        };
        if !local.split('.').all(atom_ok) {
            return bad(
                "the part before @ must be letters, digits and !#$%&'*+/=?^_`{|}~- \
                 with single dots between them",
            );
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
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !label_ok {
                return bad(
                    "the domain must be dot-separated labels of letters, digits and hyphens",
                );
            }
        }
        Ok(Email(raw.to_owned()))
    }

    /// The address as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str> as Deserialize>::deserialize(d)?;
        Email::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Email {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
            .min_length(Some(5))
            .max_length(Some(MAX_EMAIL_LEN))
            .pattern(Some(EMAIL_PATTERN))
            .description(Some(
                "ASCII only, kept as sent: a dot-atom local part of at most 64 bytes, @, \
                 and at least two dot-separated labels of letters, digits and inner \
                 hyphens; unique ignoring case",
            ))
            .examples([serde_json::Value::from("ada@example.com")])
            .into()
    }
}

impl ToSchema for Email {}

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
    /// The customer's bookings by status, as the booking service's events reported
    /// them (applied within moments of each booking or cancellation).
    pub bookings: BookingCounts,
}

/// How many bookings a customer has, by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BookingCounts {
    /// Confirmed bookings.
    #[schema(minimum = 0, example = 2)]
    pub active: i64,
    /// Cancelled bookings.
    #[schema(minimum = 0, example = 1)]
    pub cancelled: i64,
}

/// Body of `POST /customers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// Display name.
    pub name: Name,
    /// Email address; unique ignoring case.
    pub email: Email,
}

/// Body of `PATCH /customers/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    /// New name, same rules as on create.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub name: Option<Name>,
    /// New email, same rules as on create.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub email: Option<Email>,
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
    /// `next_cursor` of the previous page; absent or empty means the first page.
    #[param(max_length = 512, pattern = "^[0-9a-f]*$")]
    pub cursor: Option<String>,
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
    fn ordinary_emails_pass_as_sent() {
        for ok in [
            "a@b.co",
            "first.last+tag@mail.example.org",
            "x_y@sub-domain.example.com",
            "o'neil!#$%&*/=?^`{|}~@example.com",
        ] {
            assert_eq!(Email::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn malformed_emails_fail() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            " a@b.com",
            "a@b.com ",
            "a@b..com",
            ".a@b.com",
            "a.@b.com",
            "a..b@c.com",
            "a@-b.com",
            "a@b-.com",
            "a@b_c.com",
            "a\"b@c.com",
            "a\u{7f}@b.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(Email::parse(&format!("a@{}.com", "b".repeat(250))).is_err());
    }

    #[test]
    fn non_ascii_emails_are_refused_as_the_readme_says() {
        for bad in ["jos\u{e9}@example.com", "a@\u{e9}xample.com", "a@b.\u{444}"] {
            assert!(Email::parse(bad).unwrap_err().contains("ASCII"), "{bad:?}");
        }
    }

    #[test]
    fn names_follow_the_shared_text_rule() {
        assert_eq!(Name::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"\u{e9}".repeat(200)).is_ok());
        assert!(Name::parse(&"\u{e9}".repeat(201)).is_err());
        assert!(Name::parse(&format!(" {} ", "a".repeat(199))).is_err());
        assert!(Name::parse("a\u{0}b").is_err());
        assert!(Name::parse("Ada\u{202e}nimda").is_err());
    }
}
