//! What the sandbox's login and consent pages share: escaped HTML answers that refuse to be
//! framed, and redirects back to a client's URL.

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use url::Url;

pub(super) fn page_response(status: StatusCode, page: String) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            // Partners ban apps that embed their authorization pages; refusing to be framed is
            // how a browser enforces that.
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        Html(page),
    )
        .into_response()
}

pub(super) fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// `redirect_uri` with the given parameters added to whatever query it already has.
/// `url` form-encodes them, as RFC 6749 Appendix B asks.
pub(super) fn redirect_to(mut target: Url, params: &[(&str, &str)]) -> Response {
    target.query_pairs_mut().extend_pairs(params);
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, target.as_str()),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response()
}

/// An absolute http(s) URL without a fragment (RFC 6749 §3.1.2), or why not.
pub(super) fn usable_redirect(uri: &str) -> Result<Url, String> {
    let url =
        Url::parse(uri).map_err(|error| format!("{uri:?} is not an absolute URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{uri:?} is not an http or https URL."));
    }
    if url.fragment().is_some() {
        return Err(format!("{uri:?} has a fragment, which RFC 6749 forbids."));
    }
    Ok(url)
}
