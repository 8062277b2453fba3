//! Building an object-store client from a URL and the environment, as the cloud SDKs read
//! credentials, and describing its errors in one line.

use super::url::{Scheme, StoreUrl};
use object_store::aws::AmazonS3Builder;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use std::env;
use std::sync::Arc;
use std::time::Duration;

/// Builds the client for `url`. Fails when the environment is incomplete (no account, an
/// unparsable connection string).
pub fn build(url: &StoreUrl) -> Result<Arc<dyn ObjectStore>, String> {
    // reqwest runs rustls without a built-in provider: ring, as the rest of the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let retry = RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
        ..RetryConfig::default()
    };
    let options = |allow_http: bool| {
        ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(600))
            .with_allow_http(allow_http)
    };
    let store: Arc<dyn ObjectStore> = match url.scheme {
        Scheme::Azure => {
            let (builder, allow_http) = azure_builder()?;
            Arc::new(
                builder
                    .with_container_name(&url.bucket)
                    .with_retry(retry)
                    .with_client_options(options(allow_http))
                    .build()
                    .map_err(|e| describe(&e))?,
            )
        }
        Scheme::S3 => {
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(&url.bucket);
            let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .iter()
                .find_map(|k| env::var(k).ok().filter(|v| !v.is_empty()));
            let allow_http = endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"));
            if env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                if let Some(p) = aws_profile() {
                    builder = builder
                        .with_access_key_id(p.key_id)
                        .with_secret_access_key(p.secret);
                    if let Some(t) = p.token {
                        builder = builder.with_token(t);
                    }
                }
            }
            if env::var_os("AWS_REGION").is_none() && env::var_os("AWS_DEFAULT_REGION").is_none() {
                if let Some(region) = aws_profile_region() {
                    builder = builder.with_region(region);
                }
            }
            Arc::new(
                builder
                    .with_retry(retry)
                    .with_client_options(options(allow_http))
                    .build()
                    .map_err(|e| describe(&e))?,
            )
        }
        Scheme::Gcs => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&url.bucket)
                .with_retry(retry)
                .with_client_options(options(false))
                .build()
                .map_err(|e| describe(&e))?,
        ),
    };
    Ok(store)
}

/// Azure settings from the environment: object_store's `AZURE_*` variables, plus the Azure
/// CLI's `AZURE_STORAGE_ACCOUNT`/`AZURE_STORAGE_KEY` and `AZURE_STORAGE_CONNECTION_STRING`.
/// Returns the builder and whether the endpoint is plain HTTP (Azurite).
fn azure_builder() -> Result<(MicrosoftAzureBuilder, bool), String> {
    let mut builder = MicrosoftAzureBuilder::from_env();
    let mut allow_http = false;
    if env::var_os("AZURE_STORAGE_ACCOUNT_NAME").is_none() {
        if let Ok(account) = env::var("AZURE_STORAGE_ACCOUNT") {
            builder = builder.with_account(account);
        }
    }
    if env::var_os("AZURE_STORAGE_ACCOUNT_KEY").is_none() {
        if let Ok(key) = env::var("AZURE_STORAGE_KEY") {
            builder = builder.with_access_key(key);
        }
    }
    if let Ok(text) = env::var("AZURE_STORAGE_CONNECTION_STRING") {
        let cs = parse_connection_string(&text)?;
        if cs.development {
            builder = builder.with_use_emulator(true);
            allow_http = true;
        }
        if let Some(a) = &cs.account {
            builder = builder.with_account(a);
        }
        if let Some(k) = cs.key {
            builder = builder.with_access_key(k);
        }
        if let Some(sas) = cs.sas {
            builder = builder.with_config(AzureConfigKey::SasKey, sas);
        }
        let endpoint = cs.blob_endpoint.or_else(|| {
            let suffix = cs.suffix.as_deref()?;
            let account = cs.account.as_deref()?;
            let proto = cs.protocol.as_deref().unwrap_or("https");
            Some(format!("{proto}://{account}.blob.{suffix}"))
        });
        if let Some(endpoint) = endpoint {
            allow_http |= endpoint.starts_with("http://");
            builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
        }
    }
    if env::var("AZURE_STORAGE_ENDPOINT").is_ok_and(|e| e.starts_with("http://")) {
        allow_http = true;
    }
    Ok((builder, allow_http))
}

#[derive(Debug, Default, PartialEq)]
struct ConnectionString {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    blob_endpoint: Option<String>,
    protocol: Option<String>,
    suffix: Option<String>,
    development: bool,
}

/// Parses an Azure Storage connection string (`Key=Value;...`).
fn parse_connection_string(text: &str) -> Result<ConnectionString, String> {
    let mut cs = ConnectionString::default();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            "AZURE_STORAGE_CONNECTION_STRING is not Key=Value;... (an Azure Storage connection string)".to_string()
        })?;
        let v = v.to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "accountname" => cs.account = Some(v),
            "accountkey" => cs.key = Some(v),
            "sharedaccesssignature" => cs.sas = Some(v),
            "blobendpoint" => cs.blob_endpoint = Some(v),
            "defaultendpointsprotocol" => cs.protocol = Some(v),
            "endpointsuffix" => cs.suffix = Some(v),
            "usedevelopmentstorage" => cs.development = v.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    Ok(cs)
}

struct AwsProfile {
    key_id: String,
    secret: String,
    token: Option<String>,
}

fn home() -> Option<std::path::PathBuf> {
    env::var_os("HOME").map(std::path::PathBuf::from)
}

/// The `[profile]` section (`AWS_PROFILE`, else `default`) of an INI file as key/values.
fn ini_section(path: &std::path::Path, section: &str) -> Option<Vec<(String, String)>> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            inside = line[1..line.len() - 1].trim() == section;
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    Some(out).filter(|o| !o.is_empty())
}

fn profile_name() -> String {
    env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into())
}

/// Static keys of the AWS profile in the shared credentials file, as the AWS SDKs read it.
fn aws_profile() -> Option<AwsProfile> {
    let path = env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/credentials")))?;
    let kv = ini_section(&path, &profile_name())?;
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    Some(AwsProfile {
        key_id: get("aws_access_key_id")?,
        secret: get("aws_secret_access_key")?,
        token: get("aws_session_token"),
    })
}

/// The profile's region from the shared config file.
fn aws_profile_region() -> Option<String> {
    let path = env::var_os("AWS_CONFIG_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/config")))?;
    let name = profile_name();
    let section = if name == "default" {
        name
    } else {
        format!("profile {name}")
    };
    ini_section(&path, &section)?
        .into_iter()
        .find(|(k, _)| k == "region")
        .map(|(_, v)| v)
}

/// One line for an object-store error: the HTTP status and the service's error code when
/// the server answered, else the innermost cause (connection refused, DNS, timeout).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut texts = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        texts.push(err.to_string());
        cur = err.source();
    }
    for t in &texts {
        let rest = t
            .strip_prefix("Server returned non-2xx status code: ")
            .or_else(|| t.strip_prefix("Server returned error response: "));
        if let Some(rest) = rest {
            let (status, body) = rest.split_once(": ").unwrap_or((rest, ""));
            let code = xml_code(body)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            return one_line(&format!("HTTP {status}{code}"));
        }
    }
    // Status errors without a recognisable text (e.g. a 404 turned into NotFound).
    let innermost = texts
        .iter()
        .rev()
        .find(|t| !t.trim().is_empty())
        .cloned()
        .unwrap_or_default();
    let first = texts.first().cloned().unwrap_or_default();
    let text = if first.len() < 200 && !first.contains("Error performing") {
        first
    } else {
        innermost
    };
    one_line(&text)
}

fn xml_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(&body[start..end]).filter(|c| c.len() < 100)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let cs = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
        )
        .unwrap();
        assert_eq!(cs.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(cs.key.as_deref(), Some("a2V5"));
        assert_eq!(
            cs.blob_endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert!(
            parse_connection_string("UseDevelopmentStorage=true")
                .unwrap()
                .development
        );
        assert!(parse_connection_string("garbage").is_err());
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            xml_code("<?xml?><Error><Code>AuthenticationFailed</Code></Error>"),
            Some("AuthenticationFailed")
        );
        assert_eq!(xml_code("no xml"), None);
    }
}
