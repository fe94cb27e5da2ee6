//! Bearer-authenticated calls: a token from the [`TokenCache`], and on 401 exactly one renewal
//! and one retry. 403 becomes an error that names the scopes we asked for.

use std::sync::Arc;

use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::token_cache::{AuthError, TokenCache};
use super::{HttpError, PartnerHttp, Replay};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(
        "{partner} refused {path} with 403: the scopes requested [{scopes}] do not allow it (set {partner}.scopes to what the partner grants this client): {detail}"
    )]
    Forbidden {
        partner: &'static str,
        path: String,
        scopes: String,
        detail: String,
    },
}

#[derive(Clone)]
pub struct AuthorizedHttp {
    http: PartnerHttp,
    tokens: Arc<TokenCache>,
    /// The scopes the tokens are requested with, for 403 messages.
    scopes: String,
}

impl AuthorizedHttp {
    pub fn new(http: PartnerHttp, tokens: Arc<TokenCache>, scopes: &[String]) -> Self {
        Self {
            http,
            tokens,
            scopes: scopes.join(" "),
        }
    }

    pub fn http(&self) -> &PartnerHttp {
        &self.http
    }

    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    pub async fn get_json<T: DeserializeOwned>(&self, url: &url::Url) -> Result<T, ApiError> {
        let response = self.send(Method::GET, url, |r| r).await?;
        Ok(self.http.json(&Method::GET, url, response).await?)
    }

    /// POSTs `body` as JSON (a GraphQL query, say) and reads a JSON answer.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: &url::Url,
        body: &B,
    ) -> Result<T, ApiError> {
        self.post_json_with(Replay::Safe, url, body).await
    }

    /// Like [`AuthorizedHttp::post_json`], with only the retries that `replay` allows (a
    /// request that must not run twice).
    pub async fn post_json_with<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        replay: Replay,
        url: &url::Url,
        body: &B,
    ) -> Result<T, ApiError> {
        let response = self
            .send_with(replay, Method::POST, url, |r| r.json(body))
            .await?;
        Ok(self.http.json(&Method::POST, url, response).await?)
    }

    /// A DELETE whose answer body is not needed.
    pub async fn delete(&self, url: &url::Url) -> Result<(), ApiError> {
        self.send(Method::DELETE, url, |r| r).await?;
        Ok(())
    }

    /// A bearer-authenticated request built by `build` (called once per attempt); returns the
    /// successful answer unread, for callers that need its headers.
    pub async fn send(
        &self,
        method: Method,
        url: &url::Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        self.send_with(Replay::Safe, method, url, build).await
    }

    /// [`AuthorizedHttp::send`] with only the retries that `replay` allows. The one retry
    /// after a 401 stays: a refused token means the partner did not act on the request.
    pub async fn send_with(
        &self,
        replay: Replay,
        method: Method,
        url: &url::Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        let token = self.tokens.token().await?;
        let first = self
            .http
            .send_success(replay, method.clone(), url, |r| {
                build(r).bearer_auth(token.secret().expose_secret())
            })
            .await;
        let result = match first {
            Err(error) if error.status() == Some(StatusCode::UNAUTHORIZED) => {
                // The token may have been revoked or expired early: renew once and retry once.
                self.tokens.invalidate(&token).await;
                let token = self.tokens.token().await?;
                self.http
                    .send_success(replay, method, url, |r| {
                        build(r).bearer_auth(token.secret().expose_secret())
                    })
                    .await
            }
            other => other,
        };
        result.map_err(|error| match error {
            HttpError::Status {
                status: StatusCode::FORBIDDEN,
                partner,
                path,
                detail,
                ..
            } => ApiError::Forbidden {
                partner,
                path,
                scopes: self.scopes.clone(),
                detail,
            },
            other => other.into(),
        })
    }
}
