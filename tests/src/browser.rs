//! A headless Chromium driven over the DevTools protocol (CDP): launch, one page,
//! evaluate JavaScript, send keys, take screenshots. A small synchronous client
//! over one websocket; tests fail with the reason when Chromium is missing.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use serde_json::{Value, json};
use tempfile::TempDir;
use tungstenite::{Message, WebSocket};

/// The Chromium binary: `$WARD_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
pub fn chromium_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WARD_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!("Chromium is not installed (apt-get install chromium; .ci/run installs it): the console test cannot run")
}

pub struct Browser {
    child: Child,
    _profile: TempDir,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and opens one 1280x800 page.
    pub fn launch() -> Result<Browser> {
        let exe = chromium_path()?;
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = mpsc::channel();
        // Keeps reading stderr for the browser's whole life so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(u) = line.split("DevTools listening on ").nth(1) {
                        break u.trim().to_string();
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    bail!("Chromium did not start its DevTools endpoint: {}", seen.join("\n"));
                }
            }
        };
        let addr = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| anyhow!("odd DevTools url {url}"))?;
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let (ws, _) = tungstenite::client::client(url.as_str(), stream).map_err(|e| anyhow!("websocket: {e}"))?;
        let mut b = Browser {
            child,
            _profile: profile,
            ws,
            session: String::new(),
            next_id: 1,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"].as_str().context("targetId")?.to_string();
        let attached = b.call("Target.attachToTarget", json!({"targetId": target_id, "flatten": true}))?;
        b.session = attached["sessionId"].as_str().context("sessionId")?.to_string();
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        b.call("Page.enable", json!({}))?;
        Ok(b)
    }

    /// Sends one CDP command (to the page once attached) and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = Value::String(self.session.clone());
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| anyhow!("{method}: {e}"))?;
        loop {
            let m = self.ws.read().map_err(|e| anyhow!("{method}: {e}"))?;
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(text.as_str())?;
            if v["id"].as_u64() != Some(id) {
                continue; // an event
            }
            if let Some(err) = v.get("error") {
                bail!("{method}: {err}");
            }
            return Ok(v["result"].clone());
        }
    }

    /// Sends one CDP command to the browser itself (not the page).
    pub fn call_browser(&mut self, method: &str, params: Value) -> Result<Value> {
        let session = std::mem::take(&mut self.session);
        let r = self.call(method, params);
        self.session = session;
        r
    }

    /// Saves the page's downloads into `dir` (under the names the page gives them).
    pub fn allow_downloads(&mut self, dir: &Path) -> Result<()> {
        self.call_browser(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": dir.display().to_string()}),
        )?;
        Ok(())
    }

    pub fn navigate(&mut self, url: &str) -> Result<()> {
        self.call("Page.navigate", json!({"url": url}))?;
        Ok(())
    }

    /// Evaluates `expr` in the page (promises awaited); returns its JSON value.
    pub fn eval(&mut self, expr: &str) -> Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true, "userGesture": true}),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            bail!(
                "{expr}: {}",
                ex["exception"]["description"].as_str().unwrap_or(&ex.to_string())
            );
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expr` until it is truthy; returns its value, or fails naming `what`.
    pub fn wait_for(&mut self, what: &str, expr: &str, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            // An exception (the page still loading) counts as "not yet".
            let v = self.eval(expr).unwrap_or(Value::Null);
            let truthy = !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                let text = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''")?;
                bail!(
                    "{what} did not happen within {within:?}; the page shows:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Presses one key (as a user would: keydown, char, keyup) in the focused element.
    pub fn key(&mut self, key: &str) -> Result<()> {
        let (code, text) = match key {
            "Enter" => (13, "\r"),
            "Tab" => (9, ""),
            "ArrowLeft" => (37, ""),
            "ArrowUp" => (38, ""),
            "ArrowRight" => (39, ""),
            "ArrowDown" => (40, ""),
            k if k.len() == 1 => (k.to_ascii_uppercase().as_bytes()[0] as i64, k),
            _ => bail!("unsupported key {key}"),
        };
        let mut down = json!({"type": "keyDown", "key": key, "windowsVirtualKeyCode": code});
        if !text.is_empty() {
            down["text"] = json!(text);
        } else {
            // A key without text (Tab, arrows) is a raw key press: focus moves as a user's would.
            down["type"] = json!("rawKeyDown");
            down["code"] = json!(key);
        }
        self.call("Input.dispatchKeyEvent", down)?;
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "windowsVirtualKeyCode": code}),
        )?;
        Ok(())
    }

    /// Writes a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().context("no image")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, data)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
