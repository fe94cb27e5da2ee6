//! How settings print: secrets as a mask, URLs without their passwords (userinfo and
//! secret-looking query parameters).

use serde::Serializer;

use super::*;

pub(super) fn serialize_masked<S: Serializer>(
    secret: &SecretString,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(if secret.expose_secret().is_empty() {
        ""
    } else {
        "********"
    })
}

pub(super) fn serialize_masked_url<S: Serializer>(
    secret: &SecretString,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url_password(secret.expose_secret()))
}

/// For URL settings held as plain strings: an API or redirect URL may still carry a
/// credential (`https://user:pass@host/`, `?api_key=`).
pub(super) fn serialize_masked_url_text<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    if url.trim().is_empty() {
        return s.serialize_str(url);
    }
    s.serialize_str(&mask_url_password(url))
}

const MASK: &str = "********";
/// Query parameter names that hold a secret, matched case-insensitively anywhere in the name:
/// `password`, `sslpassword`, `pwd`, `client_secret`, `access_token`, `api_key`, `sslkey`, `auth`, ….
const SECRET_PARAMETER_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "signature",
];

fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMETER_WORDS
        .iter()
        .any(|word| name.contains(word))
}

/// Keeps a URL readable for ops (host, database, harmless options) while hiding its password,
/// in the userinfo and in any query parameter whose name looks secret
/// (`postgres://u@h/db?password=…&sslmode=require`). A URL that does not parse is hidden whole.
pub fn mask_url_password(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return MASK.to_owned();
    };
    let secret_query = url
        .query_pairs()
        .any(|(name, _)| is_secret_parameter(&name));
    if url.password().is_none() && !secret_query {
        // Nothing to hide: shown exactly as written.
        return raw.to_owned();
    }
    if url.password().is_some() {
        let _ = url.set_password(Some(MASK));
    }
    if secret_query {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_parameter(&name) {
                    MASK.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_in_userinfo_and_query() {
        let masked = mask_url_password(
            "postgres://sync:pa55@db.internal:5432/mirror?sslmode=require&password=hunter2\
             &PassWord=two&sslpassword=three&application_name=ps&api_key=k&Token=t",
        );
        for secret in ["pa55", "hunter2", "two", "three", "=k", "=t"] {
            assert!(!masked.contains(secret), "{secret} in {masked}");
        }
        assert!(masked.contains("db.internal:5432/mirror"), "{masked}");
        assert!(masked.contains("sslmode=require"), "{masked}");
        assert!(masked.contains("application_name=ps"), "{masked}");
        assert!(masked.contains("sync:********@"), "{masked}");
        assert!(masked.contains("sslpassword=********"), "{masked}");
        assert_eq!(
            mask_url_password("https://api.example/v1"),
            "https://api.example/v1"
        );
        assert_eq!(mask_url_password("not a url with pa55"), MASK);
    }
}
