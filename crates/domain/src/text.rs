//! Checks shared by the name and description newtypes. Lengths count Unicode
//! scalar values ("characters"), never bytes.

use crate::ValidationError;

/// Fails unless `value` has `min..=max` characters.
pub fn check_length(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    let len = value.chars().count();
    if len < min || len > max {
        let message = if min == 0 {
            format!("must be at most {max} characters")
        } else {
            format!("must be {min} to {max} characters")
        };
        return Err(ValidationError::new(field, message));
    }
    Ok(())
}

/// Fails unless every character is an ASCII letter, digit or one of `extra`.
pub fn check_charset(field: &'static str, value: &str, extra: &str) -> Result<(), ValidationError> {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("may contain only A-Z a-z 0-9 and {}", spaced(extra)),
        ))
    }
}

/// Fails on control characters, which have no place in a name or description.
pub fn check_printable(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn spaced(extra: &str) -> String {
    extra
        .chars()
        .map(String::from)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Declares a newtype over `String` that can only be built by `parse`.
macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, field = $field:literal, min = $min:expr, max = $max:expr $(, charset = $extra:literal)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The most characters a value may have.
            pub const MAX_CHARS: usize = $max;

            /// Parses client input, refusing anything that breaks the contract's rule.
            pub fn parse(value: impl Into<String>) -> Result<Self, $crate::ValidationError> {
                let value = value.into();
                $crate::text::check_length($field, &value, $min, $max)?;
                $crate::text::check_printable($field, &value)?;
                $( $crate::text::check_charset($field, &value, $extra)?; )?
                Ok(Self(value))
            }

            /// Wraps a value read back from the store, which only holds parsed values.
            pub fn from_store(value: String) -> Self {
                Self(value)
            }

            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value, owned.
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Ordered and hashed as its text: maps keyed by it are looked up by `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}
pub(crate) use text_type;
