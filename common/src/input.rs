//! The rules for free text and whole numbers that clients send, decided once, and the
//! building blocks of the request types that enforce them while they parse.
//!
//! A service declares a field type with [`text_field!`] or [`whole_number_field!`]: a
//! newtype whose `Deserialize` refuses what the rule refuses (so the extractor answers 422
//! naming the field, on POST and PATCH alike) and whose OpenAPI schema states exactly the
//! same rule (`minLength`, `maxLength`, `pattern`, `minimum`, `maximum`), built from the
//! same constants. Handlers never re-check.
//!
//! Text: 1 to N characters (Unicode scalar values, as JSON Schema counts them) counted
//! as sent, before trimming; no C0 or C1 control characters (U+0000-U+001F,
//! U+007F-U+009F) and no bidirectional embeddings, overrides or isolates (U+202A-U+202E,
//! U+2066-U+2069), which can make a name display as something else; at least one
//! character that is not whitespace. The value is kept trimmed.
//!
//! Whole numbers: a JSON number with no fractional part within the bounds. `7.0` is the
//! integer 7, as JSON Schema's `integer` says; `7.5`, `"7"` and `1e300` are refused.

use utoipa::openapi::{
    RefOr, Schema,
    schema::{ObjectBuilder, Type},
};

/// Characters refused anywhere in free text: C0 and C1 controls and the bidirectional
/// formatting characters.
pub fn is_forbidden_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The JSON Schema (ECMA-262) `pattern` of free text: only allowed characters, and at
/// least one that is neither forbidden nor whitespace (whitespace as Rust's `trim` sees
/// it: the Unicode `White_Space` property).
pub const TEXT_PATTERN: &str = concat!(
    r"^[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*",
    r"[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202a-\u202f\u205f\u2066-\u2069\u3000]",
    r"[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$"
);

/// Checks free text against the rule above; the trimmed text, or why it is refused.
pub fn check_text(raw: &str, max_chars: usize) -> Result<String, String> {
    let chars = raw.chars().count();
    if chars == 0 {
        return Err("must not be empty".to_owned());
    }
    if chars > max_chars {
        return Err(format!(
            "must be at most {max_chars} characters (counted as sent, before trimming)"
        ));
    }
    if raw.chars().any(is_forbidden_char) {
        return Err(
            "must not contain control characters (U+0000-U+001F, U+007F-U+009F) or \
             bidirectional formatting characters (U+202A-U+202E, U+2066-U+2069)"
                .to_owned(),
        );
    }
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("must contain a character other than whitespace".to_owned());
    }
    Ok(trimmed.to_owned())
}

/// The schema of free text of at most `max_chars` characters.
pub fn text_schema(max_chars: usize, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max_chars))
        .pattern(Some(TEXT_PATTERN))
        .description(Some(description))
        .examples([serde_json::Value::from(example)])
        .into()
}

/// The schema of a whole number in `min..=max`.
pub fn whole_number_schema(min: i64, max: i64, description: &str, example: i64) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(min))
        .maximum(Some(max))
        .description(Some(description))
        .examples([serde_json::Value::from(example)])
        .into()
}

/// Reads a JSON number with no fractional part in `min..=max`.
pub fn deserialize_whole_number<'de, D>(
    deserializer: D,
    min: i64,
    max: i64,
) -> Result<i64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor(i64, i64);
    impl Visitor {
        fn out_of_range<E: serde::de::Error>(&self) -> E {
            E::custom(format!(
                "must be a whole number between {} and {}",
                self.0, self.1
            ))
        }
        fn check<E: serde::de::Error>(&self, n: i64) -> Result<i64, E> {
            if (self.0..=self.1).contains(&n) {
                Ok(n)
            } else {
                Err(self.out_of_range())
            }
        }
    }
    impl serde::de::Visitor<'_> for Visitor {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a whole number between {} and {}", self.0, self.1)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<i64, E> {
            self.check(n)
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<i64, E> {
            i64::try_from(n)
                .map_err(|_| self.out_of_range())
                .and_then(|n| self.check(n))
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<i64, E> {
            // Within i64's range every f64 with no fraction converts exactly.
            if n.fract() == 0.0 && n >= self.0 as f64 && n <= self.1 as f64 {
                self.check(n as i64)
            } else {
                Err(self.out_of_range())
            }
        }
    }
    deserializer.deserialize_any(Visitor(min, max))
}

/// Declares a free-text field type: `text_field!(/** doc */ pub Name, max = 200, example = "Ada")`.
/// It derefs to the trimmed `str`, serialises as a string, and parses with [`check_text`].
#[macro_export]
macro_rules! text_field {
    ($(#[$meta:meta])* $vis:vis $name:ident, max = $max:expr, example = $example:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
        #[serde(transparent)]
        $vis struct $name(String);

        impl $name {
            /// The longest value accepted, in characters, before trimming.
            pub const MAX_CHARS: usize = $max;

            /// Checks `raw` against the free-text rule; the message says why it is refused.
            pub fn parse(raw: &str) -> Result<Self, String> {
                $crate::input::check_text(raw, Self::MAX_CHARS).map($name)
            }

            /// The trimmed text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The trimmed text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                $crate::input::text_schema(
                    Self::MAX_CHARS,
                    concat!(
                        "1 to ", stringify!($max), " characters counted before trimming, ",
                        "no control or bidirectional formatting characters, not only ",
                        "whitespace; stored trimmed"
                    ),
                    $example,
                )
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// Declares a bounded whole-number field type:
/// `whole_number_field!(/** doc */ pub Capacity, 1..=10, example = 2)`.
#[macro_export]
macro_rules! whole_number_field {
    ($(#[$meta:meta])* $vis:vis $name:ident, $min:literal ..= $max:literal, example = $example:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        $vis struct $name(i64);

        impl $name {
            /// The smallest value accepted.
            pub const MIN: i64 = $min;
            /// The largest value accepted.
            pub const MAX: i64 = $max;

            /// The value when it is within bounds.
            pub fn new(n: i64) -> Option<Self> {
                (Self::MIN..=Self::MAX).contains(&n).then_some($name(n))
            }

            /// The number.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::input::deserialize_whole_number(d, Self::MIN, Self::MAX).map($name)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                $crate::input::whole_number_schema(
                    Self::MIN,
                    Self::MAX,
                    concat!("A whole number from ", stringify!($min), " to ", stringify!($max)),
                    $example,
                )
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

#[cfg(test)]
#[allow(clippy::unwrap_used, dead_code)]
mod tests {
    use super::*;
    use crate::extract::parse_json;
    use serde::Deserialize;

    crate::text_field!(
        /// A test name.
        Name, max = 5, example = "Ada"
    );
    crate::whole_number_field!(
        /// A test count.
        Count, 1..=10, example = 2
    );

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: Option<Name>,
        count: Option<Count>,
    }

    fn field_of(json: &str) -> String {
        let p = parse_json::<Body>(json.as_bytes()).unwrap_err();
        assert_eq!(p.status, 422, "{p:?}");
        p.errors[0].field.clone()
    }

    #[test]
    fn text_is_trimmed_and_its_length_counted_before_trimming() {
        assert_eq!(check_text(" Ada ", 5).unwrap(), "Ada");
        assert!(check_text("  Ada ", 5).is_err());
        assert!(check_text(&"é".repeat(5), 5).is_ok());
        assert!(check_text("", 5).is_err());
    }

    #[test]
    fn whitespace_only_controls_and_bidi_overrides_are_refused() {
        for bad in [
            "   ",
            "\u{a0}",
            "\u{3000}",
            "a\u{0}b",
            "a\tb",
            "a\u{85}",
            "a\u{9f}",
            "\u{202e}ab",
            "a\u{2066}",
            "a\u{7f}",
        ] {
            assert!(check_text(bad, 5).is_err(), "{bad:?}");
        }
        assert!(check_text("a\u{200b}b", 5).is_ok());
    }

    #[test]
    fn a_refused_text_or_number_is_a_422_naming_its_field() {
        assert_eq!(field_of(r#"{"name":" \u202e "}"#), "name");
        assert_eq!(field_of(r#"{"name":"abcdef"}"#), "name");
        assert_eq!(field_of(r#"{"count":11}"#), "count");
        assert_eq!(field_of(r#"{"count":7.5}"#), "count");
        assert_eq!(field_of(r#"{"count":"7"}"#), "count");
        assert_eq!(field_of(r#"{"count":1e300}"#), "count");
        assert_eq!(field_of(r#"{"count":18446744073709551615}"#), "count");
    }

    #[test]
    fn a_whole_number_may_be_written_with_a_zero_fraction() {
        let b = parse_json::<Body>(br#"{"count":7.0,"name":" x "}"#).unwrap();
        assert_eq!(b.count.unwrap().get(), 7);
        assert_eq!(b.name.unwrap().as_str(), "x");
    }
}
