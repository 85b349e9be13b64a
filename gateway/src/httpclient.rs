//! The outbound HTTP client for JWKS and token introspection (HTTPS with the webpki roots,
//! plain HTTP allowed for in-cluster endpoints).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Client used for auth back-channels.
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest JWKS or introspection answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// A client with the ring provider and the webpki root certificates.
pub fn https_client() -> HttpsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(crate::crypto_provider())
        .expect("ring provider supports the default protocol versions")
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

/// Send a request and read the answer (bounded, with a timeout).
pub async fn fetch(client: &HttpsClient, req: http::Request<Full<Bytes>>) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let fut = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
            .to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.map_err(|_| anyhow::anyhow!("timed out"))?
}
