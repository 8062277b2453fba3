use super::*;
use std::path::Path;

const PRIMARY: &str = "primary-key-0123456789abcdef";
const SECONDARY: &str = "secondary-key-0123456789abcdef";
const SCORER: &str = "score-only-key-0123456789abcdef";

fn keys() -> ApiKeys {
    let text = format!("# test keys\n{PRIMARY}\n\n{SECONDARY} admin\n{SCORER} score\n");
    ApiKeys::parse(&text, Path::new("keys.txt")).unwrap()
}

fn bearer(key: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {key}")).unwrap()
}

fn parse_err(text: &str) -> String {
    ApiKeys::parse(text, Path::new("k.txt"))
        .unwrap_err()
        .to_string()
}

#[test]
fn parses_roles_comments_and_blank_lines() {
    let k = keys();
    assert_eq!(k.len(), 3);
    assert_eq!(k.check(Some(&bearer(PRIMARY))).unwrap(), Role::Admin);
    assert_eq!(k.check(Some(&bearer(SECONDARY))).unwrap(), Role::Admin);
    assert_eq!(k.check(Some(&bearer(SCORER))).unwrap(), Role::Score);

    let k = ApiKeys::parse(
        &format!("  {SCORER}\tscore   # trailing comment\n# {PRIMARY}\n"),
        Path::new("k"),
    )
    .unwrap();
    assert_eq!(k.len(), 1);
    assert_eq!(k.check(Some(&bearer(SCORER))).unwrap(), Role::Score);
    assert!(k.check(Some(&bearer(PRIMARY))).is_err());
}

#[test]
fn rejects_bad_files_without_printing_keys() {
    let e = parse_err(&format!("# c\n{PRIMARY} root\n"));
    assert_eq!(
        e,
        "k.txt:2: unknown role after the key (expected `score` or `admin`)"
    );
    let e = parse_err("short admin\n");
    assert_eq!(e, "k.txt:1: the key is shorter than 16 characters");
    let e = parse_err(&format!("{PRIMARY}\n{SECONDARY}\n{PRIMARY} score\n"));
    assert_eq!(e, "k.txt:3: duplicate key (same as line 1)");
    let e = parse_err(&format!("{PRIMARY} admin extra\n"));
    assert!(
        e.starts_with("k.txt:1: expected `KEY [score|admin]`"),
        "{e}"
    );
    let e = parse_err("key-with-ümlaut-0123456789\n");
    assert!(e.starts_with("k.txt:1: the key has characters"), "{e}");
    assert_eq!(parse_err(""), "k.txt: the API key file has no keys");
    assert_eq!(
        parse_err("# only\n\n   \n"),
        "k.txt: the API key file has no keys"
    );
    for e in [
        parse_err(&format!("{PRIMARY} root\n")),
        parse_err(&format!("{PRIMARY}\n{PRIMARY}\n")),
    ] {
        assert!(!e.contains(PRIMARY), "{e}");
    }
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(&path, format!("{PRIMARY}\n{SCORER} score\n")).unwrap();
    assert_eq!(ApiKeys::load(&path).unwrap().len(), 2);
    let missing = dir.path().join("nope");
    let e = ApiKeys::load(&missing).unwrap_err().to_string();
    assert!(e.starts_with("cannot read API key file"), "{e}");
    assert!(e.contains("nope"), "{e}");
    assert!(!format!("{:?}", ApiKeys::load(&path).unwrap()).contains(PRIMARY));
}

#[test]
fn check_accepts_bearer_in_any_case_and_rejects_the_rest() {
    let k = keys();
    for h in [
        format!("bearer {PRIMARY}"),
        format!("BEARER {SECONDARY}"),
        format!("Bearer   {PRIMARY}  "),
    ] {
        let h = HeaderValue::from_str(&h).unwrap();
        assert_eq!(k.check(Some(&h)).unwrap(), Role::Admin);
    }
    assert!(matches!(k.check(None), Err(AuthError::MissingHeader)));
    assert!(matches!(
        k.check(Some(&bearer("not-a-key-0123456789abcdef"))),
        Err(AuthError::InvalidKey)
    ));
    // A prefix or extension of a real key is not that key.
    assert!(k.check(Some(&bearer(&PRIMARY[..20]))).is_err());
    assert!(k.check(Some(&bearer(&format!("{PRIMARY}x")))).is_err());
    for h in [
        format!("Basic {PRIMARY}"),
        PRIMARY.to_string(),
        "Bearer".into(),
        "Bearer    ".into(),
        String::new(),
    ] {
        let h = HeaderValue::from_str(&h).unwrap();
        assert!(
            matches!(k.check(Some(&h)), Err(AuthError::MalformedHeader)),
            "{h:?}"
        );
    }
    let opaque = HeaderValue::from_bytes(b"Bearer \xff\xfe-0123456789abcdef").unwrap();
    assert!(matches!(
        k.check(Some(&opaque)),
        Err(AuthError::MalformedHeader)
    ));
}
