//! `GET /console`: the on-call web console. One static page, its script, style and icon,
//! embedded in the binary. Loading it needs no key and the page holds no data: everything it
//! shows or does goes through the JSON API with the key the operator enters, so it is
//! authorised, tenant-scoped and audited exactly like the CLI.
//!
//! The Content-Security-Policy allows only this origin's own script and style (no inline code,
//! no other origin) and, through Trusted Types, makes any `innerHTML`-style assignment throw: the
//! page builds its DOM from text nodes, so API data can never become markup.

use poem::{
    Endpoint, EndpointExt, Response, Route, get, handler,
    http::{HeaderValue, StatusCode, header},
};

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");
const FAVICON_SVG: &str = include_str!("../console/favicon.svg");

/// Sent with every console response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                       frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = Response::builder().status(StatusCode::OK).content_type(content_type).body(body);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The assets change with the binary; a browser must not keep a stale script after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[handler]
fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

#[handler]
fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

#[handler]
fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[handler]
fn favicon() -> Response {
    asset("image/svg+xml", FAVICON_SVG)
}

/// The console's routes, to be nested at `/console`.
pub fn routes() -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/", get(index))
        .at("/app.js", get(app_js))
        .at("/app.css", get(app_css))
        .at("/favicon.svg", get(favicon))
        .map_to_response()
}

#[cfg(test)]
mod tests {
    use poem::test::TestClient;

    use super::*;

    fn app() -> impl Endpoint {
        Route::new().nest("/console", routes())
    }

    #[tokio::test]
    async fn every_asset_is_served_with_the_strict_policy() {
        let cli = TestClient::new(app());
        for (path, ty) in [
            ("/console", "text/html"),
            ("/console/", "text/html"),
            ("/console/app.js", "text/javascript"),
            ("/console/app.css", "text/css"),
            ("/console/favicon.svg", "image/svg+xml"),
        ] {
            let resp = cli.get(path).send().await;
            resp.assert_status_is_ok();
            let h = resp.0.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ty), "{path}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        assert_eq!(cli.get("/console/nope.js").send().await.0.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(!CSP.contains("unsafe") && !CSP.contains("http"), "{CSP}");
        // No inline script or style, nothing from another origin.
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("<style") && !INDEX_HTML.contains("style="));
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!text.contains("http:") && !text.contains("https:"), "no other origin");
        }
        // The script never turns strings into markup or code.
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
        // The key lives in sessionStorage only.
        assert!(!APP_JS.contains("localStorage") && !APP_JS.contains("document.cookie"));
    }
}
