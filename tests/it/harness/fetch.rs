//! One request through reqwest, with the whole answer (status, headers, raw body) kept.
//!
//! The harness's reqwest has no decompression features, so bodies arrive exactly as sent.

use bytes::Bytes;
use reqwest::header::HeaderMap;
use std::time::{Duration, Instant};

/// A complete response.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as received (no content decoding).
    pub body: Bytes,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

impl Fetched {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// `X-Cache-Status`, or `""` when absent.
    pub fn cache(&self) -> &str {
        self.header("x-cache-status").unwrap_or("")
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method url` with `headers` and reads the whole answer; panics on transport errors.
pub async fn fetch(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Fetched {
    try_fetch(client, method, url, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"))
}

/// Sends `method url` with `headers` and reads the whole answer.
pub async fn try_fetch(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Fetched, reqwest::Error> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let start = Instant::now();
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?;
    Ok(Fetched {
        status,
        headers,
        body,
        elapsed: start.elapsed(),
    })
}
