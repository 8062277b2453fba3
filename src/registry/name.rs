//! Model names and `NAME[:VERSION]` references.

use super::RegistryError;

/// Longest accepted model name.
pub const MAX_NAME_LEN: usize = 128;

/// Checks that `name` is a valid model name: 1–128 characters from `[A-Za-z0-9_.-]`, not
/// starting with `.` (so never `.`/`..`, never hidden, never a path).
pub fn validate(name: &str) -> Result<(), RegistryError> {
    let why = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("it is longer than {MAX_NAME_LEN} characters"))
    } else if name.starts_with('.') {
        Some("it starts with '.'".to_string())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .map(|c| format!("{c:?} is not allowed (use A-Z, a-z, 0-9, '_', '.', '-')"))
    };
    match why {
        None => Ok(()),
        Some(why) => Err(RegistryError::InvalidName {
            name: name.to_string(),
            why,
        }),
    }
}

/// Parses a version: a positive integer.
pub fn parse_version(s: &str) -> Option<u64> {
    let canonical = s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
    s.parse::<u64>().ok().filter(|&v| v > 0 && canonical)
}

/// Splits `NAME[:VERSION]`, validating both parts.
pub fn parse_reference(reference: &str) -> Result<(String, Option<u64>), RegistryError> {
    let (name, version) = match reference.split_once(':') {
        None => (reference, None),
        Some((name, v)) => {
            let version = parse_version(v).ok_or_else(|| RegistryError::InvalidReference {
                reference: reference.to_string(),
                why: format!("version '{v}' is not a positive integer"),
            })?;
            (name, Some(version))
        }
    };
    validate(name)?;
    Ok((name.to_string(), version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["digits", "resnet-50", "a.b_c", "A1"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "a b", "é", "a:b"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
        assert!(validate(&"x".repeat(129)).is_err());
    }

    #[test]
    fn references() {
        assert_eq!(parse_reference("digits").unwrap(), ("digits".into(), None));
        assert_eq!(
            parse_reference("digits:2").unwrap(),
            ("digits".into(), Some(2))
        );
        for bad in [
            "digits:0",
            "digits:x",
            "digits:",
            "digits:-1",
            "digits:+1",
            "digits:01",
            "../x:1",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }
}
