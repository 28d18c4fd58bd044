//! The browser-facing routes of the client port (issue 12): GraphiQL and
//! the demo page embedded in the binary, the demo's dev-mode login and
//! join, and CORS. The browser itself runs them in e2e/browser.

mod cors;
mod dev;
mod pages;

use reqwest::redirect::Policy;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}
