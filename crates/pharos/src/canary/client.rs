//! The canary's HTTP/1 client: plain HTTP, one tenant header, a timeout per request.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode, Uri,
    header::{ACCEPT, CONTENT_TYPE, HeaderValue},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("invalid url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("request to {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("request to {url} timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("reading the answer of {url}: {source}")]
    Body { url: String, source: hyper::Error },
}

/// An answer: its status and whole body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Clone)]
pub(crate) struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    tenant: Option<HeaderValue>,
    timeout: Duration,
}

/// Checks that `base` is an `http://host:port` URL and returns it without a trailing slash.
pub(crate) fn base_url(base: &str) -> Result<String, HttpError> {
    let bad = |reason: &str| HttpError::Url { url: base.to_string(), reason: reason.to_string() };
    let uri: Uri = base.parse().map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// is supported"));
    }
    if uri.authority().is_none() {
        return Err(bad("no host"));
    }
    Ok(base.trim_end_matches('/').to_string())
}

/// Percent-encodes a query parameter value.
pub(crate) fn encode_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A message with the causes of `e`, outermost first.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

impl Http {
    pub(crate) fn new(tenant: Option<&str>, timeout: Duration) -> Result<Http, HttpError> {
        let tenant = tenant
            .map(|t| {
                HeaderValue::from_str(t)
                    .map_err(|e| HttpError::Url { url: format!("tenant {t:?}"), reason: e.to_string() })
            })
            .transpose()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(Http { client, tenant, timeout })
    }

    pub(crate) async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer, HttpError> {
        self.send(Method::POST, url, Some(content_type), None, Bytes::from(body)).await
    }

    pub(crate) async fn get(&self, url: &str, accept: Option<&str>) -> Result<Answer, HttpError> {
        self.send(Method::GET, url, None, accept, Bytes::new()).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let mut builder = Request::builder().method(method).uri(url);
        if let Some(t) = &self.tenant {
            builder = builder.header("X-Scope-OrgID", t.clone());
        }
        if let Some(ct) = content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        if let Some(a) = accept {
            builder = builder.header(ACCEPT, a);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| HttpError::Url { url: url.to_string(), reason: e.to_string() })?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpError::Request { url: url.to_string(), reason: chain(&e) })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|source| HttpError::Body { url: url.to_string(), source })?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout { url: url.to_string(), timeout: self.timeout })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_takes_plain_http_only() {
        assert_eq!(base_url("http://127.0.0.1:3000/").unwrap(), "http://127.0.0.1:3000");
        assert!(base_url("https://example.invalid").is_err());
        assert!(base_url("127.0.0.1:3000").is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_param(r#"{a="b"} |= "x""#), "%7Ba%3D%22b%22%7D%20%7C%3D%20%22x%22");
    }
}
