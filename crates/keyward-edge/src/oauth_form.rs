//! Strict parsing of OAuth 2.0 requests: `application/x-www-form-urlencoded` bodies
//! (RFC 6749 §3.2, §4.4.2; repeated parameters refused, empty ones treated as absent) and
//! client authentication (RFC 6749 §2.3: HTTP Basic with form-encoded credentials, or the
//! body; RFC 7523 §2.2 client assertions). Exactly one method per request.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap};
use base64::Engine as _;

/// An OAuth error before any grant logic ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError(pub String);

/// Parsed form parameters; every name occurs at most once.
#[derive(Debug, Default)]
pub struct Form(BTreeMap<String, String>);

/// Largest form body accepted by the token, introspection and revocation endpoints.
pub const MAX_FORM: usize = 16 * 1024;

impl Form {
    pub fn parse(body: &[u8]) -> Result<Form, FormError> {
        if body.len() > MAX_FORM {
            return Err(FormError("the request body is too large".into()));
        }
        if std::str::from_utf8(body).is_err() {
            return Err(FormError("the request body is not UTF-8".into()));
        }
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            if k.is_empty() {
                continue;
            }
            if map.contains_key(k.as_ref()) {
                return Err(FormError(format!("the parameter {} is repeated", clip(&k))));
            }
            map.insert(k.into_owned(), v.into_owned());
        }
        // Parameters sent without a value are treated as omitted (RFC 6749 §3.1).
        map.retain(|_, v| !v.is_empty());
        Ok(Form(map))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn contains(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
}

fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// Checks the content type: `application/x-www-form-urlencoded` (parameters such as
/// `charset` allowed).
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
        .unwrap_or(false)
}

/// How the client authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredentials {
    None,
    /// `Authorization: Basic` (client_secret_basic).
    Basic {
        client_id: String,
        secret: String,
    },
    /// `client_id` and `client_secret` in the body (client_secret_post).
    Post {
        client_id: String,
        secret: String,
    },
    /// `client_assertion` (private_key_jwt), with an optional `client_id`.
    Assertion {
        assertion: String,
        client_id: Option<String>,
    },
    /// Only a `client_id` (a public client): never enough for keyward's grants.
    IdOnly {
        client_id: String,
    },
}

/// The RFC 7523 client assertion type.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Decodes an `Authorization: Basic` value: base64, then `id:secret` each form-urlencoded.
fn basic(value: &str) -> Result<(String, String), FormError> {
    let bad = || FormError("malformed Basic credentials".into());
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let decode = |s: &str| -> Result<String, FormError> {
        // application/x-www-form-urlencoded: '+' is a space, %XX escapes.
        let pairs: Vec<(String, String)> = form_urlencoded::parse(format!("v={s}").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        match pairs.as_slice() {
            [(k, v)] if k == "v" => Ok(v.clone()),
            _ => Err(bad()),
        }
    };
    let (id, secret) = (decode(id)?, decode(secret)?);
    if id.is_empty() {
        return Err(bad());
    }
    Ok((id, secret))
}

/// Finds the client's credentials; more than one method at once is an `invalid_request`.
pub fn client_credentials(headers: &HeaderMap, form: &Form) -> Result<ClientCredentials, FormError> {
    let mut basic_creds = None;
    let auth: Vec<_> = headers.get_all(header::AUTHORIZATION).iter().collect();
    if auth.len() > 1 {
        return Err(FormError("more than one Authorization header".into()));
    }
    if let Some(v) = auth.first() {
        let v = v
            .to_str()
            .map_err(|_| FormError("malformed Authorization header".into()))?;
        match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => basic_creds = Some(basic(rest)?),
            _ => return Err(FormError("the token endpoint accepts Basic authentication only".into())),
        }
    }
    let post_secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let methods =
        usize::from(basic_creds.is_some()) + usize::from(post_secret.is_some()) + usize::from(assertion.is_some());
    if methods > 1 {
        return Err(FormError("use exactly one client authentication method".into()));
    }
    if let Some((client_id, secret)) = basic_creds {
        if form.get("client_id").is_some_and(|id| id != client_id) {
            return Err(FormError("client_id does not match the Basic credentials".into()));
        }
        return Ok(ClientCredentials::Basic { client_id, secret });
    }
    if let Some(secret) = post_secret {
        let client_id = form
            .get("client_id")
            .ok_or_else(|| FormError("client_secret without client_id".into()))?;
        return Ok(ClientCredentials::Post {
            client_id: client_id.to_owned(),
            secret: secret.to_owned(),
        });
    }
    if let Some(a) = assertion {
        if form.get("client_assertion_type") != Some(JWT_BEARER_ASSERTION) {
            return Err(FormError(format!(
                "client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )));
        }
        return Ok(ClientCredentials::Assertion {
            assertion: a.to_owned(),
            client_id: form.get("client_id").map(str::to_owned),
        });
    }
    if form.contains("client_assertion_type") {
        return Err(FormError("client_assertion_type without client_assertion".into()));
    }
    Ok(match form.get("client_id") {
        Some(id) => ClientCredentials::IdOnly {
            client_id: id.to_owned(),
        },
        None => ClientCredentials::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(auth: Option<&str>) -> HeaderMap {
        let mut m = HeaderMap::new();
        if let Some(a) = auth {
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        m
    }

    #[test]
    fn forms_are_strict() {
        let f = Form::parse(b"grant_type=client_credentials&scope=a+b&empty=").unwrap();
        assert_eq!(f.get("scope"), Some("a b"));
        assert_eq!(f.get("empty"), None, "empty values are omitted");
        assert!(Form::parse(b"scope=a&scope=b").is_err());
        assert!(Form::parse(b"scope=a&scope=").is_err(), "repeated even when empty");
        assert!(Form::parse(&[0xff, 0xfe]).is_err());
        assert!(Form::parse(&vec![b'a'; MAX_FORM + 1]).is_err());
        assert!(
            Form::parse(b"%zz=1&a=%").is_ok(),
            "lenient percent-decoding never panics"
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
        let raw = base64::engine::general_purpose::STANDARD.encode("cl%3A1:s%2Bcret+x");
        let c = client_credentials(&h(Some(&format!("Basic {raw}"))), &Form::default()).unwrap();
        assert_eq!(
            c,
            ClientCredentials::Basic {
                client_id: "cl:1".into(),
                secret: "s+cret x".into()
            }
        );
        for bad in ["Basic !!!", "Basic Zm9v", "Bearer abc", "Basic "] {
            assert!(client_credentials(&h(Some(bad)), &Form::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_method_only() {
        let raw = base64::engine::general_purpose::STANDARD.encode("a:b");
        let basic = h(Some(&format!("Basic {raw}")));
        let post = Form::parse(b"client_id=a&client_secret=b").unwrap();
        assert!(client_credentials(&basic, &post).is_err());
        let assertion =
            Form::parse(format!("client_assertion=x&client_assertion_type={JWT_BEARER_ASSERTION}").as_bytes()).unwrap();
        assert!(matches!(
            client_credentials(&h(None), &assertion).unwrap(),
            ClientCredentials::Assertion { .. }
        ));
        assert!(client_credentials(
            &h(None),
            &Form::parse(b"client_assertion=x&client_assertion_type=other").unwrap()
        )
        .is_err());
        assert!(client_credentials(&h(None), &Form::parse(b"client_secret=x").unwrap()).is_err());
        assert_eq!(
            client_credentials(&h(None), &Form::default()).unwrap(),
            ClientCredentials::None
        );
        let mismatch = Form::parse(b"client_id=other").unwrap();
        assert!(client_credentials(&basic, &mismatch).is_err());
    }
}
