//! Store URLs: `az://CONTAINER/PREFIX`, `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`.

use std::fmt;

/// Which object store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Azure,
    S3,
    Gcs,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Azure => "az",
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
        }
    }
}

/// A parsed store URL: scheme, container/bucket and an optional key prefix (without leading
/// or trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub scheme: Scheme,
    pub bucket: String,
    pub prefix: String,
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// True when `s` is written as a URL (`SCHEME://...`) rather than a local path.
pub fn looks_like_url(s: &str) -> bool {
    match s.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

impl StoreUrl {
    /// Parses `az://`, `s3://` or `gs://` URLs; anything else (another scheme, a missing or
    /// invalid container/bucket, a prefix with `.`/`..`/empty segments, a query) is an error
    /// saying what is wrong.
    pub fn parse(s: &str) -> Result<StoreUrl, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("'{s}' is not a store URL (az://CONTAINER/PREFIX, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX)"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "az" | "azure" => Scheme::Azure,
            "s3" => Scheme::S3,
            "gs" => Scheme::Gcs,
            other => {
                return Err(format!(
                    "unknown store scheme '{other}://' in '{s}' (use az://CONTAINER/PREFIX, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or a local path)"
                ))
            }
        };
        if rest.contains(['?', '#']) {
            return Err(format!(
                "'{s}': a store URL takes no query or fragment (credentials come from the environment)"
            ));
        }
        if rest.chars().any(|c| c.is_control() || c == '\\') {
            return Err(format!("'{s}': control characters or '\\' in a store URL"));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(scheme, bucket).map_err(|why| format!("'{s}': {why}"))?;
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            for segment in prefix.split('/') {
                if segment.is_empty() || segment == "." || segment == ".." {
                    return Err(format!(
                        "'{s}': the prefix has an empty, '.' or '..' segment"
                    ));
                }
            }
        }
        Ok(StoreUrl {
            scheme,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// A file-system-safe folder name for this URL's cache: scheme, bucket and a short hash
    /// of the whole URL (so prefixes never collide).
    pub fn cache_name(&self) -> String {
        use sha2::{Digest, Sha256};
        let hash = hex::encode(Sha256::digest(self.to_string().as_bytes()));
        format!("{}-{}-{}", self.scheme.as_str(), self.bucket, &hash[..12])
    }
}

fn check_bucket(scheme: Scheme, bucket: &str) -> Result<(), String> {
    let what = match scheme {
        Scheme::Azure => "container",
        _ => "bucket",
    };
    if bucket.is_empty() {
        return Err(format!("no {what} name"));
    }
    if bucket.len() < 3 || bucket.len() > 63 {
        return Err(format!("{what} name '{bucket}' must be 3 to 63 characters"));
    }
    let ok = |c: char| match scheme {
        // Azure: lowercase letters, digits and '-' (the emulator's `$root` aside).
        Scheme::Azure => c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
        // S3/GCS: lowercase letters, digits, '-', '.' and (legacy, GCS) '_'.
        _ => c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'),
    };
    if let Some(c) = bucket.chars().find(|&c| !ok(c)) {
        return Err(format!("{c:?} is not allowed in {what} name '{bucket}'"));
    }
    if !bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "{what} name '{bucket}' must start and end with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        let u = StoreUrl::parse("az://models/team/prod/").unwrap();
        assert_eq!(u.scheme, Scheme::Azure);
        assert_eq!(u.bucket, "models");
        assert_eq!(u.prefix, "team/prod");
        assert_eq!(u.to_string(), "az://models/team/prod");
        let u = StoreUrl::parse("s3://my.bucket").unwrap();
        assert_eq!((u.scheme, u.prefix.as_str()), (Scheme::S3, ""));
        assert_eq!(StoreUrl::parse("gs://b-1/x").unwrap().scheme, Scheme::Gcs);
        assert!(u.cache_name().starts_with("s3-my.bucket-"));
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "ftp://bucket/x",
            "az://",
            "az:///prefix",
            "az://Models",
            "az://ab",
            "s3://bucket/a/../b",
            "s3://bucket/a//b",
            "s3://bucket/./b",
            "s3://bucket/x?sig=1",
            "s3://-bucket",
            "s3://buc ket",
            "s3://bucket/a\u{0}b",
            "http://example.com/models",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(looks_like_url("ftp://x"));
        assert!(!looks_like_url("models"));
        assert!(!looks_like_url("./a://b"));
    }
}
