//! A real headless Chromium for the web UI's browser tests: Debian's
//! `chromium` driven through `chromedriver` (packages `chromium` and
//! `chromium-driver`, which `.ci/run` installs) with [`fantoccini`] over
//! WebDriver on loopback.
//!
//! [`Browser::start`] returns `None` after a visible skip notice when either
//! program is missing (and fails the test under `CI`, see [`crate::skip`]).
//! Screenshots go to `target/web-screenshots/` (or `WORKER_SCREENSHOT_DIR`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// Desktop window size.
pub const DESKTOP: (u32, u32) = (1280, 900);
/// A phone's width (and height) in CSS pixels.
pub const PHONE: (u32, u32) = (390, 844);

/// A chromedriver process and one browser session on it; both end on drop
/// (call [`Browser::close`] to end the session cleanly).
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: Child,
    /// Where screenshots are written.
    pub shots: PathBuf,
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.exists() {
                return Some(p.to_path_buf());
            }
        } else if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let full = dir.join(c);
                if full.exists() {
                    return Some(full);
                }
            }
        }
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or skips.
    pub async fn start() -> Option<Browser> {
        let chromium = find(&["/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"]);
        let driver = find(&["/usr/bin/chromedriver", "chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            crate::skip::skip_or_fail(
                "browser tests: chromium and chromedriver not found (Debian: apt-get install chromium chromium-driver)",
            );
            return None;
        };
        let port = free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", driver.display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions",
                         format!("--window-size={},{}", DESKTOP.0, DESKTOP.1)],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = crate::wait_for("chromedriver to accept a session", Duration::from_secs(30), || {
            let caps = caps.clone();
            let url = url.clone();
            async move {
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        let shots = std::env::var_os("WORKER_SCREENSHOT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::workspace_root().join("target/web-screenshots"));
        std::fs::create_dir_all(&shots).expect("create the screenshot directory");
        let browser = Browser {
            client,
            driver: child,
            shots,
        };
        browser.size(DESKTOP).await;
        Some(browser)
    }

    /// Sets the window to `(width, height)` CSS pixels.
    pub async fn size(&self, (w, h): (u32, u32)) {
        self.client.set_window_size(w, h).await.expect("set the window size");
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The element `css`, waited for up to 15 s.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} on the page: {e}"))
    }

    /// Whether an element `css` is on the page now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
            .is_empty()
    }

    /// Replaces the text of input `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap_or_else(|e| panic!("clear {css}: {e}"));
        el.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Clicks `css`.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Accepts the confirmation dialog that a click opened (waits up to 5 s).
    pub async fn accept_confirmation(&self) {
        crate::wait_for("a confirmation dialog", Duration::from_secs(5), || async {
            self.client.accept_alert().await.map_err(|e| e.to_string())
        })
        .await;
    }

    /// The text of `css`, waited for.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// Waits until the text of `css` contains `needle` (up to `timeout`),
    /// returning it.
    pub async fn wait_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        crate::wait_for(&format!("{css} to contain {needle:?}"), timeout, || async {
            let found = self.client.find(Locator::Css(css)).await.map_err(|e| e.to_string())?;
            let text = found.text().await.map_err(|e| e.to_string())?;
            if text.contains(needle) { Ok(text) } else { Err(text) }
        })
        .await
    }

    /// The current URL's path.
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.path().to_string())
            .unwrap_or_default()
    }

    /// Writes a PNG screenshot `name.png` of the window as it is.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("take a screenshot");
        let file = self.shots.join(format!("{name}.png"));
        std::fs::write(&file, png).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }

    /// Ends the browser session.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
